/*
 * fakesysctl.c - a test stand-in for FreeBSD's sysctlbyname(3) and kenv(2).
 *
 * The test suite builds this file into a shared library and points the
 * ``libc`` sysctl backend (vmgenc_tools/sysctl/libc.py) at it, so the real
 * ctypes marshalling runs on a machine that is not FreeBSD.  Values come from
 * a simulated VM's state, ${VMGENC_ROOT}/.vmgenc-sim/kernel.tab (format:
 * vmgenc_tools/simstate.py).  VMGENC_ROOT is read on every call; unset means "/".
 *
 * sysctlbyname() follows the FreeBSD 13+ kernel (__sysctlbyname syscall):
 *   - ENOENT: unknown name, or a name that goes on past a leaf;
 *   - EISDIR: a node without a handler (kind "node", or an unlisted prefix of
 *     a listed name, e.g. "dev.vmgenc.0");
 *   - EINVAL: an empty name (kern___sysctlbyname: namelen == 0); one trailing
 *     '.' is ignored, as name2oid() does;
 *   - EPERM:  a new value for a read-only ("rd") OID, or any new value when
 *     the simulated caller is not root (VMGENC_SIM_UID set and not "0": the
 *     priv_check(PRIV_SYSCTL_WRITE) of sysctl_root()), checked before the old
 *     value is copied out, as sysctl_root() does;
 *   - oldp NULL: *oldlenp is set to the size of the value;
 *   - short buffer: what fits is copied, errno is ENOMEM and *oldlenp is left
 *     UNCHANGED (the error returns before the copyout of the length);
 *   - EINVAL: a new integer value shorter than its kind (sizeof(int) or
 *     sizeof(long); extra bytes are ignored, as SYSCTL_IN reads only its
 *     size), or a new string of 1024 bytes or more;
 *   - a new string is stored up to its first NUL, plus a NUL.
 * A new value is written under flock(${VMGENC_ROOT}/.vmgenc-sim/lock) by
 * rewriting kernel.tab atomically (temp file, fsync, rename); every other
 * byte of the file is kept as it was.
 *
 * kenv(KENV_GET, name, value, len) follows sys_kenv(): it copies
 * min(strlen(v) + 1, len) bytes (a truncated copy has no NUL) and returns
 * that count; ENOENT when the variable is absent.  Only KENV_GET is served
 * (the project never sets kenv): other actions give EINVAL.  A negative len
 * gives EINVAL (the kernel would treat it as huge and overrun the buffer).
 *
 * vmgenc_fake_interfaces(buf, buflen) lists the simulated interfaces as
 * "ifname\tmac\n" lines with the same NULL/ENOMEM rules as sysctlbyname()
 * (left out when built with -DFAKESYSCTL_NO_INTERFACES).
 *
 * A missing, unreadable or malformed kernel.tab gives EIO.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

#define KENV_GET 0
#define KENV_MNAMELEN 128
#define MAX_STRING_NEWLEN 1024
#define MAX_TAB_BYTES (16L * 1024 * 1024)
#define SIM_DIR ".vmgenc-sim"
#define MAX_FIELDS 8

EXPORT int sysctlbyname(const char *name, void *oldp, size_t *oldlenp,
    const void *newp, size_t newlen);
EXPORT int kenv(int action, const char *name, char *value, int len);
#ifndef FAKESYSCTL_NO_INTERFACES
EXPORT int vmgenc_fake_interfaces(char *buf, size_t *buflen);
#endif

/* The whole kernel.tab, NUL-terminated. */
struct tab {
	char *data;
	size_t len;
};

/* One field of a line: a pointer into the tab and a length. */
struct field {
	const char *p;
	size_t len;
};

/* One parsed line: its type ('S', 'K', 'I' or 0 for blank/comment). */
struct rec {
	char type;
	int nfields;
	struct field f[MAX_FIELDS];
};

static int
sim_path(char *out, size_t outsz, const char *leaf)
{
	const char *root = getenv("VMGENC_ROOT");
	int n;

	if (root == NULL || *root == '\0')
		root = "/";
	n = snprintf(out, outsz, "%s/%s/%s", root, SIM_DIR, leaf);
	if (n < 0 || (size_t)n >= outsz)
		return (ENAMETOOLONG);
	return (0);
}

static void
tab_free(struct tab *t)
{
	free(t->data);
	t->data = NULL;
	t->len = 0;
}

static int
read_all(int fd, char *buf, size_t want, size_t *got)
{
	size_t done = 0;
	ssize_t n;

	while (done < want) {
		n = read(fd, buf + done, want - done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return (EIO);
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	*got = done;
	return (0);
}

static int
tab_load(struct tab *t)
{
	char path[4096];
	struct stat st;
	size_t got;
	int fd, err;

	t->data = NULL;
	t->len = 0;
	if (sim_path(path, sizeof(path), "kernel.tab") != 0)
		return (EIO);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return (EIO);
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 0 ||
	    st.st_size > MAX_TAB_BYTES) {
		close(fd);
		return (EIO);
	}
	t->data = malloc((size_t)st.st_size + 1);
	if (t->data == NULL) {
		close(fd);
		return (EIO);
	}
	err = read_all(fd, t->data, (size_t)st.st_size, &got);
	close(fd);
	if (err != 0) {
		tab_free(t);
		return (err);
	}
	t->data[got] = '\0';
	t->len = got;
	return (0);
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return (c - '0');
	if (c >= 'a' && c <= 'f')
		return (c - 'a' + 10);
	if (c >= 'A' && c <= 'F')
		return (c - 'A' + 10);
	return (-1);
}

static int
hex_ok(const struct field *f)
{
	size_t i;

	if (f->len % 2 != 0)
		return (0);
	for (i = 0; i < f->len; i++)
		if (hexval(f->p[i]) < 0)
			return (0);
	return (1);
}

/* Decode the first n bytes of a valid hex field into out. */
static void
hex_decode(const struct field *f, unsigned char *out, size_t n)
{
	size_t i;

	for (i = 0; i < n && 2 * i + 1 < f->len; i++)
		out[i] = (unsigned char)(hexval(f->p[2 * i]) << 4 |
		    hexval(f->p[2 * i + 1]));
}

static int
field_eq(const struct field *f, const char *s)
{
	size_t n = strlen(s);

	return (f->len == n && memcmp(f->p, s, n) == 0);
}

static int
kind_size(const struct field *kind, size_t *size)
{
	if (field_eq(kind, "int") || field_eq(kind, "uint")) {
		*size = 4;
		return (1);
	}
	if (field_eq(kind, "long") || field_eq(kind, "ulong")) {
		*size = sizeof(long);
		return (1);
	}
	*size = 0;
	return (field_eq(kind, "node") || field_eq(kind, "opaque") ||
	    field_eq(kind, "string"));
}

/*
 * Parse the line [p, p + len) into r.  Returns 0, or EIO for a line the
 * Python parser (simstate.parse) would reject too.
 */
static int
parse_line(const char *p, size_t len, struct rec *r)
{
	size_t i, start = 0, dummy;

	r->type = 0;
	r->nfields = 0;
	if (len == 0 || p[0] == '#')
		return (0);
	for (i = 0; i <= len; i++) {
		if (i == len || p[i] == '\t') {
			if (r->nfields < MAX_FIELDS) {
				r->f[r->nfields].p = p + start;
				r->f[r->nfields].len = i - start;
				r->nfields++;
			}
			start = i + 1;
		}
	}
	if (field_eq(&r->f[0], "S")) {
		if (r->nfields < 7 || !kind_size(&r->f[2], &dummy) ||
		    !(field_eq(&r->f[4], "rd") || field_eq(&r->f[4], "rw")) ||
		    !hex_ok(&r->f[5]))
			return (EIO);
		r->type = 'S';
	} else if (field_eq(&r->f[0], "K")) {
		if (r->nfields < 3 || !hex_ok(&r->f[2]))
			return (EIO);
		r->type = 'K';
	} else if (field_eq(&r->f[0], "I")) {
		if (r->nfields < 3)
			return (EIO);
		r->type = 'I';
	} else {
		return (EIO);
	}
	return (0);
}

/* Calls visit(rec, arg) for every record line; stops at the first error. */
static int
tab_scan(const struct tab *t, int (*visit)(const struct rec *, void *), void *arg)
{
	const char *p = t->data, *end = t->data + t->len, *nl;
	struct rec r;
	int err;

	while (p < end) {
		nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL)
			nl = end;
		err = parse_line(p, (size_t)(nl - p), &r);
		if (err != 0)
			return (err);
		if (r.type != 0 && (err = visit(&r, arg)) != 0)
			return (err);
		p = nl + 1;
	}
	return (0);
}

/* sysctl name lookup */

struct lookup {
	const char *name;
	size_t namelen;
	int found;		/* an S line names it exactly (the last one wins) */
	int prefix;		/* it is a proper prefix of a listed name */
	struct rec rec;
};

static int
lookup_visit(const struct rec *r, void *arg)
{
	struct lookup *l = arg;
	const struct field *n = &r->f[1];

	if (r->type != 'S')
		return (0);
	if (n->len == l->namelen && memcmp(n->p, l->name, l->namelen) == 0) {
		l->found = 1;
		l->rec = *r;
	} else if (n->len > l->namelen && memcmp(n->p, l->name, l->namelen) == 0 &&
	    n->p[l->namelen] == '.') {
		l->prefix = 1;
	}
	return (0);
}

/* 0 and l->rec for a leaf; ENOENT, EISDIR or EIO otherwise. */
static int
lookup_oid(const struct tab *t, const char *name, struct lookup *l)
{
	int err;

	memset(l, 0, sizeof(*l));
	l->name = name;
	l->namelen = strlen(name);
	if (l->namelen == 0)		/* kern___sysctlbyname: namelen == 0 */
		return (EINVAL);
	/* name2oid ignores one trailing '.' ("dev.vmgenc.0." is dev.vmgenc.0). */
	if (l->namelen > 1 && name[l->namelen - 1] == '.' &&
	    name[l->namelen - 2] != '.')
		l->namelen--;
	err = tab_scan(t, lookup_visit, l);
	if (err != 0)
		return (err);
	if (l->found)
		return (field_eq(&l->rec.f[2], "node") ? EISDIR : 0);
	return (l->prefix ? EISDIR : ENOENT);
}

/* writes */

static int
lock_sim(int *fdp)
{
	char path[4096];
	int fd;

	*fdp = -1;
	if (sim_path(path, sizeof(path), "lock") != 0)
		return (EIO);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return (EIO);
	while (flock(fd, LOCK_EX) != 0) {
		if (errno != EINTR) {
			close(fd);
			return (EIO);
		}
	}
	*fdp = fd;
	return (0);
}

static int
write_all(int fd, const char *p, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return (EIO);
		}
		p += n;
		len -= (size_t)n;
	}
	return (0);
}

/*
 * Replace the hex field of the OID line whose hex field is `hex` (a pointer
 * into t) by the encoding of val[0..vlen), and rename the result over
 * kernel.tab.  Every other byte is copied unchanged.
 */
static int
tab_replace_value(const struct tab *t, const struct field *hex,
    const unsigned char *val, size_t vlen)
{
	static const char digits[] = "0123456789abcdef";
	char path[4096], tmp[4200];
	size_t head = (size_t)(hex->p - t->data);
	size_t tail = t->len - head - hex->len;
	size_t i, outlen;
	char *out;
	int fd, err, n;

	if (sim_path(path, sizeof(path), "kernel.tab") != 0)
		return (EIO);
	n = snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
	if (n < 0 || (size_t)n >= sizeof(tmp))
		return (EIO);
	outlen = head + 2 * vlen + tail;
	out = malloc(outlen + 1);
	if (out == NULL)
		return (EIO);
	memcpy(out, t->data, head);
	for (i = 0; i < vlen; i++) {
		out[head + 2 * i] = digits[val[i] >> 4];
		out[head + 2 * i + 1] = digits[val[i] & 0xf];
	}
	memcpy(out + head + 2 * vlen, hex->p + hex->len, tail);

	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		free(out);
		return (EIO);
	}
	err = write_all(fd, out, outlen);
	free(out);
	if (err == 0 && fsync(fd) != 0)
		err = EIO;
	if (close(fd) != 0 && err == 0)
		err = EIO;
	if (err == 0 && rename(tmp, path) != 0)
		err = EIO;
	if (err != 0)
		unlink(tmp);
	return (err);
}

/* Check and store a new value for the leaf l (the caller holds the lock). */
static int
store_new(const struct tab *t, const struct lookup *l, const void *newp,
    size_t newlen)
{
	const struct field *kind = &l->rec.f[2];
	size_t size, slen;
	unsigned char *val;
	int err;

	(void)kind_size(kind, &size);
	if (size != 0) {
		/* sysctl_handle_int/long: SYSCTL_IN of size bytes; more are ignored */
		if (newlen < size)
			return (EINVAL);
		return (tab_replace_value(t, &l->rec.f[5], newp, size));
	}
	if (field_eq(kind, "string")) {
		if (newlen >= MAX_STRING_NEWLEN)
			return (EINVAL);
		slen = strnlen(newp, newlen);
		val = malloc(slen + 1);
		if (val == NULL)
			return (EIO);
		memcpy(val, newp, slen);
		val[slen] = '\0';
		err = tab_replace_value(t, &l->rec.f[5], val, slen + 1);
		free(val);
		return (err);
	}
	return (tab_replace_value(t, &l->rec.f[5], newp, newlen));
}

/* The simulated caller's credential: root unless VMGENC_SIM_UID says otherwise. */
static int
sim_root(void)
{
	const char *uid = getenv("VMGENC_SIM_UID");

	return (uid == NULL || *uid == '\0' || strcmp(uid, "0") == 0);
}

static int
do_sysctl(const char *name, void *oldp, size_t *oldlenp, const void *newp,
    size_t newlen)
{
	struct tab t = { NULL, 0 };
	struct lookup l;
	size_t oldlen, size, n;
	int lockfd = -1, err;

	if (name == NULL)
		return (EFAULT);
	oldlen = oldlenp != NULL ? *oldlenp : 0;
	if (newp != NULL && (err = lock_sim(&lockfd)) != 0)
		return (err);
	err = tab_load(&t);
	if (err != 0)
		goto out;
	err = lookup_oid(&t, name, &l);
	if (err != 0)
		goto out;
	if (newp != NULL && (!field_eq(&l.rec.f[4], "rw") || !sim_root())) {
		err = EPERM;
		goto out;
	}
	size = l.rec.f[5].len / 2;
	if (oldp != NULL) {
		n = size < oldlen ? size : oldlen;
		hex_decode(&l.rec.f[5], oldp, n);
		if (n < size) {
			err = ENOMEM;	/* *oldlenp stays as it was */
			goto out;
		}
	}
	if (newp != NULL) {
		err = store_new(&t, &l, newp, newlen);
		if (err != 0)
			goto out;
	}
	if (oldlenp != NULL)
		*oldlenp = size;
out:
	tab_free(&t);
	if (lockfd >= 0)
		close(lockfd);
	return (err);
}

EXPORT int
sysctlbyname(const char *name, void *oldp, size_t *oldlenp, const void *newp,
    size_t newlen)
{
	int err = do_sysctl(name, oldp, oldlenp, newp, newlen);

	if (err != 0) {
		errno = err;
		return (-1);
	}
	return (0);
}

/* kenv(2) */

struct kenv_find {
	const char *name;
	int found;
	struct field value;
};

static int
kenv_visit(const struct rec *r, void *arg)
{
	struct kenv_find *k = arg;

	if (r->type == 'K' && field_eq(&r->f[1], k->name)) {
		k->found = 1;
		k->value = r->f[2];
	}
	return (0);
}

static int
do_kenv(int action, const char *name, char *value, int len, int *ret)
{
	struct kenv_find k;
	struct tab t;
	unsigned char *v;
	size_t vlen, slen, n;
	int err;

	if (action != KENV_GET)
		return (EINVAL);
	if (name == NULL)
		return (EFAULT);
	if (strnlen(name, KENV_MNAMELEN + 1) > KENV_MNAMELEN)
		return (ENAMETOOLONG);
	if (len < 0)
		return (EINVAL);
	err = tab_load(&t);
	if (err != 0)
		return (err);
	memset(&k, 0, sizeof(k));
	k.name = name;
	err = tab_scan(&t, kenv_visit, &k);
	if (err == 0 && !k.found)
		err = ENOENT;
	if (err != 0) {
		tab_free(&t);
		return (err);
	}
	vlen = k.value.len / 2;
	v = malloc(vlen + 1);
	if (v == NULL) {
		tab_free(&t);
		return (EIO);
	}
	hex_decode(&k.value, v, vlen);
	v[vlen] = '\0';
	tab_free(&t);
	slen = strlen((char *)v);
	n = slen + 1;
	if (n > (size_t)len)
		n = (size_t)len;
	if (n > 0 && value == NULL) {
		free(v);
		return (EFAULT);
	}
	if (n > 0)
		memcpy(value, v, n);
	free(v);
	*ret = (int)n;
	return (0);
}

EXPORT int
kenv(int action, const char *name, char *value, int len)
{
	int ret = 0, err = do_kenv(action, name, value, len, &ret);

	if (err != 0) {
		errno = err;
		return (-1);
	}
	return (ret);
}

/*
 * The interface list (a test-only export).  Built with
 * -DFAKESYSCTL_NO_INTERFACES the library lacks it, like FreeBSD's libc, and
 * the backend falls back to psutil.
 */
#ifndef FAKESYSCTL_NO_INTERFACES

struct iflist {
	char *out;		/* NULL: only count */
	size_t cap;
	size_t need;
};

static void
iflist_put(struct iflist *l, const char *p, size_t len)
{
	if (l->out != NULL && l->need < l->cap) {
		size_t room = l->cap - l->need;

		memcpy(l->out + l->need, p, len < room ? len : room);
	}
	l->need += len;
}

static int
iflist_visit(const struct rec *r, void *arg)
{
	struct iflist *l = arg;

	if (r->type != 'I')
		return (0);
	iflist_put(l, r->f[1].p, r->f[1].len);
	iflist_put(l, "\t", 1);
	iflist_put(l, r->f[2].p, r->f[2].len);
	iflist_put(l, "\n", 1);
	return (0);
}

EXPORT int
vmgenc_fake_interfaces(char *buf, size_t *buflen)
{
	struct iflist l;
	struct tab t;
	int err;

	if (buflen == NULL) {
		errno = EFAULT;
		return (-1);
	}
	err = tab_load(&t);
	if (err == 0) {
		l.out = buf;
		l.cap = buf != NULL ? *buflen : 0;
		l.need = 0;
		err = tab_scan(&t, iflist_visit, &l);
		tab_free(&t);
	}
	if (err == 0 && buf != NULL && l.need > l.cap)
		err = ENOMEM;
	if (err != 0) {
		errno = err;
		return (-1);
	}
	*buflen = l.need;
	return (0);
}
#endif /* !FAKESYSCTL_NO_INTERFACES */
