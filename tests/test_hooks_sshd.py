"""sshd_keys: real ssh-keygen, a real sshd on 127.0.0.1, crash safety, HostKey paths, dry-run."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import stat
import subprocess
import threading
import time

import psutil
import pytest
from hooks_sandbox import ctx_for, keygen, make_trusted, read_bytes, temp_leftovers, write_rc_conf

from vmgenc_tools import log
from vmgenc_tools.hooks import runner, sshd_keys
from vmgenc_tools.hooks.base import HookResult

SSHD = "/usr/sbin/sshd"
TYPES = ("rsa", "ecdsa", "ed25519")
WIRE = {"ssh-rsa": "rsa", "ecdsa-sha2-nistp256": "ecdsa", "ecdsa-sha2-nistp384": "ecdsa",
        "ssh-ed25519": "ed25519", "ssh-dss": "dsa"}


def key_path(root: str, t: str, d: str = "etc/ssh") -> str:
    return os.path.join(root, d, f"ssh_host_{t}_key")


def pub_blobs(paths: dict[str, str]) -> dict[str, str]:
    """``{type: base64 blob}`` of the .pub files."""
    out = {}
    for t, p in paths.items():
        with open(p + ".pub") as f:
            out[t] = f.read().split()[1]
    return out


@pytest.fixture
def ssh_root(kernel_root):
    """A root with 1024-bit RSA (fast), ECDSA and Ed25519 host keys in /etc/ssh."""
    make_trusted(kernel_root, ssh_rsa_bits="1024")
    for t in TYPES:
        keygen(key_path(kernel_root, t), t, 1024 if t == "rsa" else None)
    return kernel_root


def default_keys(root: str) -> dict[str, str]:
    return {t: key_path(root, t) for t in TYPES}


def run_hook(root: str, dry_run: bool = False) -> HookResult:
    return runner.builtin("sshd_keys").run(ctx_for(root, dry_run=dry_run))


# -- a real sshd -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keyscan(port: int) -> dict[str, str]:
    r = subprocess.run(["ssh-keyscan", "-T", "5", "-t", "rsa,ecdsa,ed25519", "-p", str(port),
                        "127.0.0.1"], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    out = {}
    for line in r.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and not line.startswith("#"):
            out[WIRE.get(fields[1], fields[1])] = fields[2]
    return out


def wait_for(cond, what: str, limit: float = 30.0):  # noqa: ANN001, ANN201 - test helper
    """Poll until ``cond()`` is truthy (a readiness wait, not a timing assertion)."""
    deadline = time.monotonic() + limit
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


class Sshd:
    def __init__(self, root: str, proc: subprocess.Popen, port: int, logfile: str) -> None:
        self.root, self.proc, self.port, self.logfile = root, proc, port, logfile

    def log(self) -> str:
        with open(self.logfile, errors="replace") as f:
            return f.read()


def start_sshd(ssh_root: str, *extra: str):
    """A real sshd on 127.0.0.1 serving the sandbox's host keys (a generator: yields it)."""
    if not os.access(SSHD, os.X_OK):
        pytest.skip(f"{SSHD} not installed (make test installs openssh-server)")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # Debian's privsep directory
    conf = os.path.join(ssh_root, "etc", "ssh", "sshd_config")
    pidfile = os.path.join(ssh_root, "var", "run", "sshd.pid")
    with open(conf, "w") as f:
        for t in TYPES:
            f.write(f"HostKey {key_path(ssh_root, t)}\n")
        f.write(f"PidFile {pidfile}\nUsePAM no\nLogLevel INFO\n")
    port = free_port()
    logfile = os.path.join(os.path.dirname(ssh_root), "sshd.log")
    with open(logfile, "w") as out:
        proc = subprocess.Popen([SSHD, "-D", "-e", *extra, "-f", conf, "-o",
                                 "ListenAddress=127.0.0.1", "-p", str(port)], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = Sshd(ssh_root, proc, port, logfile)

    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited {proc.returncode}: {server.log()}")
        return os.path.exists(pidfile) and len(keyscan(port)) == 3

    try:
        wait_for(ready, "sshd to listen")
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def sshd(ssh_root):
    """sshd as it runs by default: re-executed for every connection."""
    yield from start_sshd(ssh_root)


@pytest.fixture
def sshd_no_rexec(ssh_root):
    """sshd -r: no re-execution, host keys loaded once by the listener."""
    yield from start_sshd(ssh_root, "-r")


def sshd_version() -> tuple[int, int]:
    out = subprocess.run([SSHD, "-V"], capture_output=True, text=True)
    m = re.search(r"OpenSSH_(\d+)\.(\d+)", out.stderr + out.stdout)
    assert m, out
    return int(m.group(1)), int(m.group(2))


@pytest.mark.parametrize("cmdline,version,needed", [
    (["/usr/sbin/sshd", "-D"], "OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.19", False),
    (["/usr/sbin/sshd"], "OpenSSH_9.7p1, LibreSSL 3.9", False),
    (["/usr/sbin/sshd"], "OpenSSH_9.8p1, OpenSSL 3.0.14", True),
    (["/usr/sbin/sshd"], "OpenSSH_10.0p2, OpenSSL 3.5", True),
    (["/usr/sbin/sshd", "-D", "-r"], "OpenSSH_9.2p1", True),
    (["/usr/sbin/sshd", "-Dr"], "OpenSSH_9.2p1", True),
    # FreeBSD: the listener's process title, one string
    (["sshd: /usr/sbin/sshd -r [listener] 0 of 10-100 startups"], "OpenSSH_9.6p1", True),
    (["sshd: /usr/sbin/sshd [listener] 0 of 10-100 startups"], "OpenSSH_9.6p1", False),
    (["/usr/sbin/sshd", "-f", "/etc/ssh/sshd_config", "-p", "22"], "OpenSSH_9.6p1", False),
    (["/usr/sbin/sshd"], "sshd: illegal option -- V", True),
])
def test_reload_decision(cmdline, version, needed):
    """SIGHUP only where the running sshd would otherwise keep serving the old keys."""
    assert sshd_keys.reload_decision(cmdline, version)[0] is needed


def rotate_served_keys(sshd: Sshd) -> tuple[HookResult, dict[str, str]]:
    """sshd serves the old keys; the hook replaces every type: (its result, the new keys)."""
    old_files = pub_blobs(default_keys(sshd.root))
    assert keyscan(sshd.port) == old_files
    result = run_hook(sshd.root)
    assert result.status == "ok", result.output
    new_files = pub_blobs(default_keys(sshd.root))
    assert all(new_files[t] != old_files[t] for t in TYPES)
    return result, new_files


def test_real_sshd_serves_the_new_keys_with_no_reload_when_it_reexecutes(sshd):
    """OpenSSH < 9.8 loads the host keys in every re-executed connection child."""
    if sshd_version() >= sshd_keys.KEYS_FROM_LISTENER:
        pytest.skip("this sshd hands the listener's keys to sshd-session: reloaded below")
    result, new_files = rotate_served_keys(sshd)
    assert f"sshd pid {sshd.proc.pid} not reloaded: OpenSSH" in result.output
    assert keyscan(sshd.port) == new_files  # at once: no restart to wait for
    assert "Received SIGHUP" not in sshd.log() and sshd.proc.poll() is None


def test_real_sshd_serves_old_then_new_keys_and_is_reloaded(sshd_no_rexec):
    """An sshd that loaded its keys once (-r; or OpenSSH >= 9.8) gets SIGHUP and serves the
    new keys after it restarts."""
    sshd = sshd_no_rexec
    root = sshd.root
    result, new_files = rotate_served_keys(sshd)
    assert f"reloaded sshd (SIGHUP to pid {sshd.proc.pid}: sshd runs with -r" in result.output
    # SIGHUP: sshd re-executes itself (same pid) and listens again
    wait_for(lambda: "Received SIGHUP; restarting." in sshd.log(), "the SIGHUP in sshd's log")
    wait_for(lambda: sshd.log().count("Server listening on 127.0.0.1") >= 2, "sshd to restart")
    assert sshd.proc.poll() is None
    assert wait_for(lambda: (lambda k: k if len(k) == 3 else None)(keyscan(sshd.port)),
                    "a full keyscan") == new_files
    for t, p in default_keys(root).items():
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(p + ".pub").st_mode) == 0o644
        fp = subprocess.run(["ssh-keygen", "-l", "-f", p + ".pub"], capture_output=True,
                            text=True, check=True).stdout.strip()
        assert f"new {t} host key /etc/ssh/ssh_host_{t}_key: {fp}" in result.output
    assert temp_leftovers(os.path.join(root, "etc", "ssh")) == []


def test_keyscan_never_misses_a_key_during_rotation(sshd):
    """Rotation as the hook does it on the running sshd never leaves a scan without a key.

    sshd (before 9.8) loads its host keys for every connection, so scans during
    the renames see, per type, the old key or a new one — never nothing, never
    a refused connection: the hook sees that no SIGHUP is needed (which would
    make sshd close its listening socket and re-execute) and sends none.
    """
    if sshd_version() >= sshd_keys.KEYS_FROM_LISTENER:
        pytest.skip("this sshd needs a SIGHUP to serve new keys: its restart refuses "
                    "connections for an instant")
    root = sshd.root
    write_rc_conf(root, ssh_rsa_bits="1024")
    allowed = {t: {b} for t, b in pub_blobs(default_keys(root)).items()}
    lock = threading.Lock()
    stop = threading.Event()
    rotations: list[HookResult] = []

    def rotate() -> None:  # rotate again and again until the scans are done
        while not stop.is_set():
            result = run_hook(root)
            with lock:
                rotations.append(result)
                for k, b in pub_blobs(default_keys(root)).items():
                    allowed[k].add(b)

    rotator = threading.Thread(target=rotate)
    rotator.start()
    scans: list[tuple[dict[str, str], int, int]] = []
    try:
        wait_for(lambda: rotations, "the first rotation")
        for _ in range(30):
            n0 = len(rotations)
            scan = keyscan(sshd.port)
            scans.append((scan, n0, len(rotations)))
    finally:
        stop.set()
        rotator.join(120)
    assert all(r.status == "ok" and f"sshd pid {sshd.proc.pid} not reloaded" in r.output
               for r in rotations)
    assert any(n1 > n0 for _, n0, n1 in scans)  # renames happened while sshd was scanned
    for scan, _, _ in scans:
        assert set(scan) == set(TYPES), f"a scan missed a key type: {scan}"
        for k, b in scan.items():
            assert b in allowed[k]
    assert keyscan(sshd.port) == pub_blobs(default_keys(root))  # served without a reload
    assert "Received SIGHUP" not in sshd.log()


# -- parallel generation, fingerprints ---------------------------------------------------------


def test_key_pairs_are_generated_in_parallel(ssh_root):
    """Every ssh-keygen is started before the first pair is taken.

    When the first pair is handed over, the other ssh-keygen processes are
    still our children (running, or exited and not yet reaped): a one-by-one
    generation would have none.
    """
    keys = [sshd_keys.KeyFile(p, t) for t, p in default_keys(ssh_root).items()]
    handed: list[tuple[str, str, bool, bool]] = []
    others_at_first: list[set[int]] = []

    def ready(k: sshd_keys.KeyFile, tmp: str) -> None:
        if not others_at_first:
            others_at_first.append({c.pid for c in psutil.Process().children()
                                    if c.name() == "ssh-keygen"})
        handed.append((k.ktype, tmp, os.path.isfile(tmp), os.path.isfile(tmp + ".pub")))

    errors = sshd_keys.generate("/usr/bin/ssh-keygen", keys, ctx_for(ssh_root), ready)
    assert errors == []
    assert sorted(t for t, *_ in handed) == sorted(TYPES)
    assert len(others_at_first[0]) == len(TYPES) - 1
    for _, tmp, private, public in handed:
        assert private and public  # a whole pair, in the key's own directory
        assert os.path.dirname(tmp) == os.path.join(ssh_root, "etc", "ssh")
    assert temp_leftovers(os.path.join(ssh_root, "etc", "ssh")) == []  # none outlive generate


def test_fingerprints_go_to_syslog_and_the_console(ssh_root):
    console = os.path.join(ssh_root, "dev", "console")
    os.makedirs(os.path.dirname(console))
    os.mkfifo(console, 0o600)  # stands in for the console device: we read what is written
    reader = os.open(console, os.O_RDONLY | os.O_NONBLOCK)
    sink = log.capture()
    try:
        result = run_hook(ssh_root)
        with os.fdopen(reader, "rb") as f:
            shown_on_console = f.read().decode()
    finally:
        log.stop_capture(sink)
    assert result.status == "ok", result.output
    prints = {}
    for t, p in default_keys(ssh_root).items():
        prints[t] = subprocess.run(["ssh-keygen", "-l", "-f", p + ".pub"], capture_output=True,
                                   text=True, check=True).stdout.strip()
        assert ("notice", f"sshd_keys: new {t} host key /etc/ssh/ssh_host_{t}_key: "
                          f"{prints[t]}") in sink
    lines = shown_on_console.splitlines()
    assert lines[0] == sshd_keys.CONSOLE_BEGIN and lines[-1] == sshd_keys.CONSOLE_END
    assert sorted(lines[1:-1]) == sorted(f"{prints[t]} /etc/ssh/ssh_host_{t}_key" for t in TYPES)
    assert "new fingerprints written to the console" in result.output


def test_no_console_no_console_output(ssh_root):
    os.makedirs(os.path.join(ssh_root, "dev"))
    os.mkfifo(os.path.join(ssh_root, "dev", "console"), 0o600)  # nobody reading: never blocks
    result = run_hook(ssh_root)
    assert result.status == "ok", result.output
    assert "console" not in result.output


# -- crash safety ----------------------------------------------------------------------------


def test_failed_rename_leaves_the_old_key_and_no_temp_file(ssh_root, mocker):
    keys = default_keys(ssh_root)
    before = {t: (read_bytes(p), read_bytes(p + ".pub")) for t, p in keys.items()}
    real_replace = os.replace
    calls = []

    def flaky(src, dst, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(dst)
        if len(calls) == 1:
            raise OSError(errno.EIO, "Input/output error", dst)
        return real_replace(src, dst, *a, **kw)

    mocker.patch("os.replace", side_effect=flaky)
    result = run_hook(ssh_root)
    assert result.status == "failed"
    assert "Input/output error" in result.output
    failed_key = calls[0]
    t = next(t for t, p in keys.items() if p == failed_key)
    assert (read_bytes(failed_key), read_bytes(failed_key + ".pub")) == before[t]
    assert temp_leftovers(os.path.join(ssh_root, "etc", "ssh")) == []
    mocker.stopall()
    assert run_hook(ssh_root).status == "ok"
    assert all(read_bytes(p) != before[t][0] for t, p in keys.items())
    assert temp_leftovers(os.path.join(ssh_root, "etc", "ssh")) == []


def test_crash_between_temp_write_and_rename(ssh_root):
    """A real crash (the process dies at its first rename): old keys whole, temps cleaned next.

    Each pair goes live as soon as its own ssh-keygen finishes, so the first
    rename can come while slower types still generate; the crash waits for
    them, so that every pair is on disk and none renamed.
    """
    keys = default_keys(ssh_root)
    before = {t: (read_bytes(p), read_bytes(p + ".pub")) for t, p in keys.items()}

    def crash(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        with contextlib.suppress(ChildProcessError):
            while True:
                os.wait()  # the other ssh-keygen processes
        os._exit(9)

    pid = os.fork()
    if pid == 0:  # child: die exactly where a power cut would hurt most
        try:
            os.replace = crash  # type: ignore[assignment]
            run_hook(ssh_root)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 9
    for t, p in keys.items():
        assert (read_bytes(p), read_bytes(p + ".pub")) == before[t]
    ssh_dir = os.path.join(ssh_root, "etc", "ssh")
    left = temp_leftovers(ssh_dir)
    assert len(left) == 2 * len(TYPES)  # every generated pair, never renamed
    result = run_hook(ssh_root)
    assert result.status == "ok", result.output
    assert temp_leftovers(ssh_dir) == []
    assert all(read_bytes(p) != before[t][0] for t, p in keys.items())


def test_only_our_stale_temp_files_are_removed(ssh_root):
    ssh_dir = os.path.join(ssh_root, "etc", "ssh")
    ours = [".vmgenc-tmp-ssh_host_ed25519_key.0123abcd", ".vmgenc-tmp-ssh_host_ed25519_key."
            "0123abcd.pub"]
    foreign = [".vmgenc-tmp-notes", "ssh_host_ed25519_key.bak"]
    for n in ours + foreign:
        with open(os.path.join(ssh_dir, n), "w") as f:
            f.write("x")
    dry = run_hook(ssh_root, dry_run=True)
    assert "would remove /etc/ssh/.vmgenc-tmp-ssh_host_ed25519_key.0123abcd" in dry.output
    assert run_hook(ssh_root).status == "ok"
    left = set(os.listdir(ssh_dir))
    assert not left & set(ours)
    assert set(foreign) <= left


# -- which keys ------------------------------------------------------------------------------


def test_hostkey_lines_and_include_name_other_paths(ssh_root):
    ssh_dir = os.path.join(ssh_root, "etc", "ssh")
    os.makedirs(os.path.join(ssh_dir, "keys"), mode=0o755)
    os.makedirs(os.path.join(ssh_dir, "sshd_config.d"), mode=0o755)
    custom = os.path.join(ssh_dir, "keys", "host-ed")  # type known only from its .pub
    keygen(custom, "ed25519")
    included = os.path.join(ssh_dir, "keys", "ssh_host_ecdsa_key")
    keygen(included, "ecdsa", 384)
    with open(os.path.join(ssh_dir, "sshd_config"), "w") as f:
        f.write('# host keys\nInclude sshd_config.d/*.conf\nHostKey "/etc/ssh/keys/host-ed"\n'
                "Match User nobody\n  HostKey /etc/ssh/never\n")
    with open(os.path.join(ssh_dir, "sshd_config.d", "10-keys.conf"), "w") as f:
        f.write("hostkey=/etc/ssh/keys/ssh_host_ecdsa_key\n")
    old = {p: read_bytes(p) for p in (custom, included, *default_keys(ssh_root).values())}
    result = run_hook(ssh_root)
    assert result.status == "ok", result.output
    assert all(read_bytes(p) != b for p, b in old.items())  # listed and default copies
    assert "/etc/ssh/keys/host-ed:" in result.output
    assert "384 SHA256:" in result.output  # the ECDSA curve size was kept
    assert not os.path.exists(os.path.join(ssh_dir, "never"))


def test_hostkey_lines_only_no_default_keys_created(ssh_root):
    ssh_dir = os.path.join(ssh_root, "etc", "ssh")
    for t in ("rsa", "ecdsa"):
        for f in (key_path(ssh_root, t), key_path(ssh_root, t) + ".pub"):
            os.unlink(f)
    with open(os.path.join(ssh_dir, "sshd_config"), "w") as f:
        f.write("HostKey /etc/ssh/ssh_host_ed25519_key\n")
    result = run_hook(ssh_root)
    assert result.status == "ok", result.output
    assert not os.path.exists(key_path(ssh_root, "rsa"))
    assert "no rsa key: sshd_config names no rsa HostKey, none created" in result.output


def test_no_keys_yet_creates_sshds_defaults(ssh_root):
    for t in TYPES:
        for f in (key_path(ssh_root, t), key_path(ssh_root, t) + ".pub"):
            os.unlink(f)
    assert run_hook(ssh_root).status == "ok"
    assert set(pub_blobs(default_keys(ssh_root))) == set(TYPES)


def test_types_not_configured_are_left_alone_unless_told(ssh_root):
    write_rc_conf(ssh_root, ssh_keytypes="ed25519")
    keys = default_keys(ssh_root)
    rsa_before = read_bytes(keys["rsa"])
    ed_before = read_bytes(keys["ed25519"])
    result = run_hook(ssh_root)
    assert result.status == "ok"
    assert read_bytes(keys["rsa"]) == rsa_before and read_bytes(keys["ed25519"]) != ed_before
    assert "left alone (vmgenc_ssh_remove_other=NO)" in result.output
    write_rc_conf(ssh_root, ssh_keytypes="ed25519", ssh_remove_other="YES")
    result = run_hook(ssh_root)
    assert result.status == "ok"
    for t in ("rsa", "ecdsa"):
        assert not os.path.exists(keys[t]) and not os.path.exists(keys[t] + ".pub")
        assert f"removed /etc/ssh/ssh_host_{t}_key" in result.output
    assert os.path.exists(keys["ed25519"])


def test_remove_other_keeps_a_key_that_a_hostkey_line_names(ssh_root):
    """WAA-353: removing a key sshd_config still names leaves sshd failing to load it.

    Only the key no ``HostKey`` line names goes; the named one stays, with a
    warning that says which line keeps it, and the dry run says the same.
    The ``./`` spelling (in an included file) still names the default file.
    """
    ssh_dir = os.path.join(ssh_root, "etc", "ssh")
    os.makedirs(os.path.join(ssh_dir, "sshd_config.d"), mode=0o755)
    with open(os.path.join(ssh_dir, "sshd_config"), "w") as f:
        f.write("# keys\nHostKey /etc/ssh/ssh_host_ed25519_key\nInclude sshd_config.d/*.conf\n")
    with open(os.path.join(ssh_dir, "sshd_config.d", "10-rsa.conf"), "w") as f:
        f.write("\nHostKey /etc/ssh/./ssh_host_rsa_key\n")
    write_rc_conf(ssh_root, ssh_keytypes="ed25519", ssh_remove_other="YES")
    keys = default_keys(ssh_root)
    before = {t: (read_bytes(p), read_bytes(p + ".pub")) for t, p in keys.items()}
    kept = ('warning: /etc/ssh/ssh_host_rsa_key (rsa, not in vmgenc_ssh_keytypes) is kept '
            'despite vmgenc_ssh_remove_other=YES: named by "HostKey /etc/ssh/./ssh_host_rsa_key"'
            " (/etc/ssh/sshd_config.d/10-rsa.conf line 2), and sshd fails to load a named key"
            " that is gone")

    dry = run_hook(ssh_root, dry_run=True)
    assert dry.status == "ok", dry.output
    assert kept in dry.output
    lines = dry.output.splitlines()
    assert ("would remove /etc/ssh/ssh_host_ecdsa_key(.pub) (ecdsa not configured, named by no"
            " HostKey line)") in lines
    assert not [line for line in lines if line.startswith("would remove /etc/ssh/ssh_host_rsa")]
    assert {t: (read_bytes(p), read_bytes(p + ".pub")) for t, p in keys.items()} == before

    sink = log.capture()
    try:
        result = run_hook(ssh_root)
    finally:
        log.stop_capture(sink)
    assert result.status == "ok", result.output
    assert (read_bytes(keys["rsa"]), read_bytes(keys["rsa"] + ".pub")) == before["rsa"]
    assert kept in result.output
    assert any(lvl == "warning" and m.startswith("sshd_keys: " + kept[len("warning: "):])
               for lvl, m in sink)
    assert "removed /etc/ssh/ssh_host_rsa_key" not in result.output
    assert not os.path.exists(keys["ecdsa"]) and not os.path.exists(keys["ecdsa"] + ".pub")
    assert "removed /etc/ssh/ssh_host_ecdsa_key" in result.output
    assert read_bytes(keys["ed25519"]) != before["ed25519"][0]


def test_real_sshd_still_loads_every_named_key_after_remove_other(sshd_no_rexec):
    """sshd names all three keys; with only ed25519 configured it keeps serving all three,
    after a reload too (sshd -r: the restart loads every named key again)."""
    sshd = sshd_no_rexec
    root = sshd.root
    write_rc_conf(root, ssh_keytypes="ed25519", ssh_remove_other="YES")
    old = pub_blobs(default_keys(root))
    result = run_hook(root)
    assert result.status == "ok", result.output
    assert f"reloaded sshd (SIGHUP to pid {sshd.proc.pid}" in result.output
    assert "removed " not in result.output
    for t in ("rsa", "ecdsa"):
        assert f"/etc/ssh/ssh_host_{t}_key ({t}, not in vmgenc_ssh_keytypes) is kept" \
            in result.output
    wait_for(lambda: sshd.log().count("Server listening on 127.0.0.1") >= 2, "sshd to restart")
    scan = wait_for(lambda: (lambda k: k if len(k) == 3 else None)(keyscan(sshd.port)),
                    "a full keyscan")
    assert scan == {**old, "ed25519": pub_blobs(default_keys(root))["ed25519"]}
    assert scan["ed25519"] != old["ed25519"]
    assert "Unable to load host key" not in sshd.log()


def test_rsa_bits_and_comment(ssh_root):
    write_rc_conf(ssh_root, ssh_keytypes="rsa", ssh_rsa_bits="2048")
    assert run_hook(ssh_root).status == "ok"
    out = subprocess.run(["ssh-keygen", "-l", "-f", key_path(ssh_root, "rsa") + ".pub"],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("2048 SHA256:")
    assert f"root@{socket.gethostname()}" in out


def test_hostcertificate_warning(ssh_root):
    with open(os.path.join(ssh_root, "etc", "ssh", "sshd_config"), "w") as f:
        f.write("HostCertificate /etc/ssh/ssh_host_ed25519_key-cert.pub\n")
    result = run_hook(ssh_root)
    assert "warning: HostCertificate /etc/ssh/ssh_host_ed25519_key-cert.pub" in result.output


# -- reload decisions and dry-run ------------------------------------------------------------


def test_no_reload_without_a_running_sshd(ssh_root):
    assert "sshd not running (no /var/run/sshd.pid): not reloaded" in run_hook(ssh_root).output
    dead = subprocess.Popen(["true"])
    dead.wait()
    with open(os.path.join(ssh_root, "var", "run", "sshd.pid"), "w") as f:
        f.write(f"{dead.pid}\n")
    assert "stale /var/run/sshd.pid" in run_hook(ssh_root).output


def test_a_pidfile_naming_another_program_is_not_signalled(ssh_root):
    # our own pid: a SIGHUP would end this test run
    with open(os.path.join(ssh_root, "var", "run", "sshd.pid"), "w") as f:
        f.write(f"{os.getpid()}\n")
    result = run_hook(ssh_root)
    assert result.status == "ok"
    assert re.search(rf"pid {os.getpid()} in /var/run/sshd.pid is '[^']+', not sshd",
                     result.output)


def test_dry_run_changes_nothing(ssh_root):
    keys = default_keys(ssh_root)
    before = {p: read_bytes(p) for p in keys.values()}
    result = run_hook(ssh_root, dry_run=True)
    assert result.status == "ok"
    assert {p: read_bytes(p) for p in keys.values()} == before
    lines = result.output.splitlines()
    assert "would replace /etc/ssh/ssh_host_rsa_key(.pub) with a new 1024-bit rsa key" in lines
    assert "would not reload sshd: sshd not running (no /var/run/sshd.pid)" in lines


def test_timeout_stops_keygen_keeps_the_old_key_and_reports_the_rest(ssh_root):
    """Past the hook timeout the slow ssh-keygen is stopped and the hook recorded ``timeout``.

    A 16384-bit RSA key takes far longer than the 1 s allowed; the Ed25519
    key, made meanwhile, is live and reported all the same.
    """
    write_rc_conf(ssh_root, ssh_keytypes="rsa ed25519", ssh_rsa_bits="16384", hook_timeout="1")
    keys = default_keys(ssh_root)
    rsa_before = (read_bytes(keys["rsa"]), read_bytes(keys["rsa"] + ".pub"))
    ed_before = read_bytes(keys["ed25519"])
    result = run_hook(ssh_root)
    assert result.status == "timeout" and result.exit_code is None, result.output
    assert "timeout: ssh-keygen did not finish within 1 s" in result.output
    assert (read_bytes(keys["rsa"]), read_bytes(keys["rsa"] + ".pub")) == rsa_before
    assert read_bytes(keys["ed25519"]) != ed_before
    assert "new ed25519 host key /etc/ssh/ssh_host_ed25519_key: " in result.output
    assert temp_leftovers(os.path.join(ssh_root, "etc", "ssh")) == []
    assert [c for c in psutil.Process().children(recursive=True)
            if c.name() == "ssh-keygen"] == []  # the slow one is gone, and reaped


def test_keygen_failure_is_reported_and_keys_kept(ssh_root, mocker):
    keys = default_keys(ssh_root)
    before = {p: read_bytes(p) for p in keys.values()}
    mocker.patch.object(sshd_keys, "keygen_command",
                        side_effect=lambda kg, k, tmp, ctx: [kg, "-t", "nosuchtype", "-f", tmp])
    result = run_hook(ssh_root)
    assert result.status == "failed"
    assert "ssh-keygen -t" in result.output
    assert {p: read_bytes(p) for p in keys.values()} == before
    assert temp_leftovers(os.path.join(ssh_root, "etc", "ssh")) == []
