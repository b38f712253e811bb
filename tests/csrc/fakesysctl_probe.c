/*
 * fakesysctl_probe.c - drives fakesysctl.c at the C level, for the tests.
 *
 * It shows what Python cannot see through the ctypes backend: the bytes
 * written into the caller's buffer (a guard zone after it is pre-filled with
 * 0xa5) and the value of *oldlenp after an error.
 *
 *   probe sysctl NAME OLDLEN|- [NEWHEX]
 *       "-" passes a NULL oldp with *oldlenp preset to 999.
 *       Prints: rc=R errno=E oldlen=N buf=HEX (OLDLEN + 4 guard bytes)
 *   probe kenv NAME LEN
 *       Prints: rc=R errno=E buf=HEX (LEN + 4 guard bytes)
 *   probe loop NAME COUNT
 *       Reads NAME COUNT times (size query, then the value); exit 0 if all
 *       succeeded.
 * Several commands may be given, separated by ";" arguments (one process
 * under valgrind runs them all).
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GUARD 4

int sysctlbyname(const char *, void *, size_t *, const void *, size_t);
int kenv(int, const char *, char *, int);

static void
print_hex(const unsigned char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		printf("%02x", p[i]);
}

static unsigned char *
parse_hex(const char *s, size_t *len)
{
	size_t n = strlen(s) / 2, i;
	unsigned char *out = malloc(n + 1);
	unsigned int byte;

	if (out == NULL)
		exit(3);
	for (i = 0; i < n; i++) {
		if (sscanf(s + 2 * i, "%2x", &byte) != 1)
			exit(2);
		out[i] = (unsigned char)byte;
	}
	*len = n;
	return (out);
}

static int
probe_sysctl(int argc, char **argv)
{
	unsigned char *buf = NULL, *newp = NULL;
	size_t oldlen = 999, cap = 0, newlen = 0;
	int rc, err;

	if (strcmp(argv[3], "-") != 0) {
		oldlen = (size_t)strtoul(argv[3], NULL, 10);
		cap = oldlen + GUARD;
		buf = malloc(cap);
		if (buf == NULL)
			return (3);
		memset(buf, 0xa5, cap);
	}
	if (argc > 4)
		newp = parse_hex(argv[4], &newlen);
	errno = 0;
	rc = sysctlbyname(argv[2], buf, &oldlen, newp, newlen);
	err = errno;
	printf("rc=%d errno=%d oldlen=%zu buf=", rc, rc == 0 ? 0 : err, oldlen);
	if (buf != NULL)
		print_hex(buf, cap);
	printf("\n");
	free(buf);
	free(newp);
	return (0);
}

static int
probe_kenv(char **argv)
{
	int len = atoi(argv[3]), rc, err;
	size_t cap = (len > 0 ? (size_t)len : 0) + GUARD;
	unsigned char *buf = malloc(cap);

	if (buf == NULL)
		return (3);
	memset(buf, 0xa5, cap);
	errno = 0;
	rc = kenv(0, argv[2], (char *)buf, len);
	err = errno;
	printf("rc=%d errno=%d buf=", rc, rc >= 0 ? 0 : err);
	print_hex(buf, cap);
	printf("\n");
	free(buf);
	return (0);
}

static int
probe_loop(char **argv)
{
	long i, count = atol(argv[3]);
	unsigned char *buf;
	size_t len;

	for (i = 0; i < count; i++) {
		len = 0;
		if (sysctlbyname(argv[2], NULL, &len, NULL, 0) != 0)
			return (1);
		buf = malloc(len + 1);
		if (buf == NULL)
			return (3);
		if (sysctlbyname(argv[2], buf, &len, NULL, 0) != 0) {
			free(buf);
			return (1);
		}
		free(buf);
	}
	return (0);
}

static int
run_one(int argc, char **argv)
{
	if (argc >= 4 && strcmp(argv[1], "sysctl") == 0 && argc <= 5)
		return (probe_sysctl(argc, argv));
	if (argc == 4 && strcmp(argv[1], "kenv") == 0)
		return (probe_kenv(argv));
	if (argc == 4 && strcmp(argv[1], "loop") == 0)
		return (probe_loop(argv));
	fprintf(stderr, "usage: probe CMD [; CMD ...] with CMD one of: "
	    "sysctl NAME OLDLEN|- [NEWHEX] | kenv NAME LEN | loop NAME COUNT\n");
	return (2);
}

/* Runs each ";"-separated command in turn; stops at the first that fails. */
int
main(int argc, char **argv)
{
	int start = 1, i, rc;

	for (i = 1; i <= argc; i++) {
		if (i < argc && strcmp(argv[i], ";") != 0)
			continue;
		/* argv[start - 1] stands in for the program name of the command */
		rc = run_one(i - start + 1, argv + start - 1);
		if (rc != 0)
			return (rc);
		start = i + 1;
	}
	return (0);
}
