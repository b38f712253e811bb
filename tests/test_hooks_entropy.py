"""entropy: /entropy and /boot/entropy refreshed like ``service random saveseed``, atomically."""

from __future__ import annotations

import errno
import os
import stat

import pytest
from hooks_sandbox import ctx_for, make_trusted, read_bytes, temp_leftovers

from vmgenc_tools.hooks import atomic, entropy, runner

OLD = b"old seed " * 455  # 4095 bytes: a short, shared seed a clone would boot from


@pytest.fixture
def root(kernel_root):
    make_trusted(kernel_root)
    for p in ("entropy", "boot/entropy"):
        with open(os.path.join(kernel_root, p), "wb") as f:
            f.write(OLD)
        os.chmod(os.path.join(kernel_root, p), 0o644)
    return kernel_root


def run(root: str, dry_run: bool = False):  # noqa: ANN201 - HookResult
    return runner.builtin("entropy").run(ctx_for(root, dry_run=dry_run))


def seeds(root: str) -> dict[str, bytes]:
    out = {}
    for p in ("entropy", "boot/entropy", "var/db/entropy-file"):
        full = os.path.join(root, p)
        if os.path.exists(full):
            out["/" + p] = read_bytes(full)
    return out


def test_sizes_modes_and_fresh_content(root):
    result = run(root)
    assert result.status == "ok", result.output
    new = seeds(root)
    assert set(new) == {"/entropy", "/boot/entropy"}
    for p, data in new.items():
        assert len(data) == entropy.SEED_BYTES == 4096
        assert data != OLD
        assert stat.S_IMODE(os.stat(os.path.join(root, p.lstrip("/"))).st_mode) == 0o600
    assert new["/entropy"] != new["/boot/entropy"]  # one draw per file, as rc.d/random does
    assert "refreshed /entropy (4096 bytes, mode 0600)" in result.output
    assert "refreshed /boot/entropy (4096 bytes, mode 0600)" in result.output
    assert temp_leftovers(root) == [] and temp_leftovers(os.path.join(root, "boot")) == []
    again = run(root)
    assert again.status == "ok" and seeds(root)["/entropy"] != new["/entropy"]


def test_entropy_created_boot_only_if_boot_exists(root):
    os.unlink(os.path.join(root, "entropy"))
    os.unlink(os.path.join(root, "boot", "entropy"))
    os.rmdir(os.path.join(root, "boot"))
    result = run(root)
    assert result.status == "ok"
    assert set(seeds(root)) == {"/entropy"}
    assert "/boot does not exist: /boot/entropy not written" in result.output
    assert not os.path.exists(os.path.join(root, "boot"))


def test_rc_conf_no_disables_a_file(root):
    with open(os.path.join(root, "etc", "rc.conf"), "a") as f:
        f.write('entropy_boot_file="NO"\n')
    result = run(root)
    assert result.status == "ok"
    assert seeds(root)["/boot/entropy"] == OLD
    assert seeds(root)["/entropy"] != OLD
    assert "entropy_boot_file=NO" in result.output


def test_replacement_is_atomic_a_reader_keeps_the_whole_old_seed(root):
    """The name moves to a new, complete file; nothing is truncated or rewritten in place."""
    held = {p: os.open(os.path.join(root, p), os.O_RDONLY) for p in ("entropy", "boot/entropy")}
    try:
        before = {p: os.fstat(fd).st_ino for p, fd in held.items()}
        assert run(root).status == "ok"
        for p, fd in held.items():
            assert os.pread(fd, 8192, 0) == OLD  # an open reader still sees all of the old seed
            st = os.stat(os.path.join(root, p))
            assert st.st_ino != before[p] and st.st_size == entropy.SEED_BYTES
    finally:
        for fd in held.values():
            os.close(fd)


def test_seed_comes_from_the_running_kernel_not_from_the_root(root, mocker):
    """``${root}/dev/random`` is a file of the tree being handled: never a source of seed."""
    os.makedirs(os.path.join(root, "dev"))
    with open(os.path.join(root, "dev", "random"), "wb") as f:
        f.write(OLD)
    opened = []
    real_open = os.open

    def spy(path, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        opened.append(path)
        return real_open(path, *a, **kw)

    mocker.patch("os.open", side_effect=spy)
    result = run(root)
    assert result.status == "ok", result.output
    assert entropy.RANDOM_DEVICE in opened
    assert os.path.join(root, "dev", "random") not in opened
    assert all(OLD[:64] not in data for data in seeds(root).values())


def test_empty_rc_conf_value_means_the_default(root):
    """rc.d/random reads ``${entropy_file:=/entropy}``: an empty value is not NO."""
    with open(os.path.join(root, "etc", "rc.conf"), "a") as f:
        f.write('entropy_file=""\nentropy_boot_file=""\n')
    result = run(root)
    assert result.status == "ok", result.output
    new = seeds(root)
    assert new["/entropy"] != OLD and new["/boot/entropy"] != OLD


def test_failed_write_keeps_the_old_seed(root, mocker):
    mocker.patch("os.fsync", side_effect=OSError(errno.ENOSPC, "No space left on device"))
    result = run(root)
    assert result.status == "failed"
    assert "No space left on device" in result.output
    assert seeds(root) == {"/entropy": OLD, "/boot/entropy": OLD}
    assert temp_leftovers(root) == [] and temp_leftovers(os.path.join(root, "boot")) == []


def test_failed_rename_keeps_the_old_seed(root, mocker):
    mocker.patch("os.replace", side_effect=OSError(errno.EIO, "Input/output error"))
    assert run(root).status == "failed"
    assert seeds(root) == {"/entropy": OLD, "/boot/entropy": OLD}
    assert temp_leftovers(root) == []


def test_read_only_root_falls_back_to_var_db(root, mocker):
    real = atomic.write_atomic
    target = os.path.join(root, "entropy")

    def ro(path, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        if path == target:
            raise OSError(errno.EROFS, "Read-only file system", path)
        return real(path, *a, **kw)

    mocker.patch.object(atomic, "write_atomic", side_effect=ro)
    result = run(root)
    assert result.status == "ok", result.output
    new = seeds(root)
    assert new["/entropy"] == OLD
    assert len(new["/var/db/entropy-file"]) == 4096
    assert "refreshed /var/db/entropy-file" in result.output


def test_stale_temp_files_are_removed(root):
    stale = os.path.join(root, "boot", ".vmgenc-tmp-entropy.deadbeef")
    with open(stale, "wb") as f:
        f.write(b"half")
    assert "would remove /boot/.vmgenc-tmp-entropy.deadbeef" in run(root, dry_run=True).output
    assert os.path.exists(stale)
    assert run(root).status == "ok"
    assert not os.path.exists(stale)


def test_dry_run_changes_nothing(root):
    result = run(root, dry_run=True)
    assert result.status == "ok"
    assert seeds(root) == {"/entropy": OLD, "/boot/entropy": OLD}
    assert result.output.splitlines() == [
        "would write 4096 bytes from /dev/random to /entropy (mode 0600), atomically",
        "would write 4096 bytes from /dev/random to /boot/entropy (mode 0600), atomically"]


def test_write_atomic_is_all_or_nothing(tmp_path, mocker):
    target = str(tmp_path / "f")
    atomic.write_atomic(target, b"one", 0o640)
    assert read_bytes(target) == b"one" and stat.S_IMODE(os.stat(target).st_mode) == 0o640
    mocker.patch("os.write", side_effect=OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(OSError):
        atomic.write_atomic(target, b"two", 0o640)
    assert read_bytes(target) == b"one"
    assert os.listdir(tmp_path) == ["f"]
