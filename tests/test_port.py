"""``make install`` for real into a DESTDIR, and the FreeBSD port skeleton that mirrors it.

The install runs from a copy of the source tree (pip builds in the tree it installs from),
offline (``--no-build-isolation``), with this venv's Python; ``--ignore-installed`` keeps pip
from touching the venv's own editable install.  Then: every installed file that is not the
Python package's is in ``port/pkg-plist`` (man pages compressed, as the port does) and every
plist entry was installed; the port's ``post-install`` stages the same files.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import vmgenc_tools

TOP = Path(__file__).resolve().parent.parent
PORT = TOP / "port"
SHIPPED = ("Makefile", "setup.cfg", "pyproject.toml", "README.md", "vmgenc_tools", "devd",
           "rc.d", "man")
PREFIXES = ("/usr/local", "/opt/vmgenc")

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")


def port_var(name: str) -> str:
    """A variable of the port's Makefile, continuation lines joined."""
    text = (PORT / "Makefile").read_text().replace("\\\n", " ")
    m = re.search(rf"^{name}=\s*(.*)$", text, re.M)
    assert m, f"port/Makefile has no {name}"
    return " ".join(m.group(1).split("#")[0].split()) if name != "WWW" else m.group(1).strip()


def plist() -> tuple[set[str], set[str]]:
    """(files, @dir directories) of ``port/pkg-plist``."""
    files, dirs = set(), set()
    for line in (PORT / "pkg-plist").read_text().splitlines():
        if not line.strip():
            continue
        if line.startswith("@dir "):
            dirs.add(line.split(None, 1)[1].strip())
        else:
            assert not line.startswith("@"), f"unexpected keyword in pkg-plist: {line}"
            files.add(line.strip())
    return files, dirs


def plist_name(rel: str) -> str:
    """The name the port gives an installed file: man pages are gzipped at stage time."""
    return rel + ".gz" if re.fullmatch(r"share/man/man[1-9]/[^/]+\.[1-9]", rel) else rel


def python_package_files(prefix_dir: Path) -> set[str]:
    """Files pip installed (its RECORD, relative to PREFIX): what USE_PYTHON=autoplist lists."""
    records = list(prefix_dir.glob("lib/python*/site-packages/vmgenc_tools-*.dist-info/RECORD"))
    assert len(records) == 1, records
    site = records[0].parent.parent
    out = set()
    for line in records[0].read_text().splitlines():
        path = (site / line.split(",")[0]).resolve()
        out.add(str(path.relative_to(prefix_dir.resolve())))
    return out


def venv_state() -> list[str]:
    """This venv's console scripts and vmgenc entries in site-packages (the editable install)."""
    import sysconfig

    site = Path(sysconfig.get_paths()["purelib"])
    return sorted(os.listdir(Path(sys.prefix) / "bin")) + sorted(
        p.name for p in site.iterdir() if "vmgenc" in p.name.lower())


@pytest.fixture(scope="module", params=PREFIXES)
def installed(request, tmp_path_factory):
    """``make install DESTDIR=… PREFIX=…`` from a copy of the tree; returns (destdir, prefix)."""
    prefix = request.param
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    work = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "*.pyc")
    for name in SHIPPED:
        src = TOP / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, work / name, **(
            {"ignore": ignore} if src.is_dir() else {}))
    dest = tmp_path_factory.mktemp("destdir")
    venv_before = venv_state()
    r = subprocess.run(
        ["make", "-s", "install", f"DESTDIR={dest}", f"PREFIX={prefix}", f"PYTHON={sys.executable}",
         "PIP_INSTALL_FLAGS=--no-build-isolation --no-index --disable-pip-version-check -q"],
        cwd=work, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert venv_state() == venv_before, "make install changed this venv's own installation"
    return dest, prefix


def non_python(dest: Path, prefix: str) -> tuple[set[str], set[str]]:
    """(files, empty directories) installed under PREFIX that are not the Python package's."""
    root = dest / prefix.lstrip("/")
    py = python_package_files(root)
    files, empty = set(), set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if "__pycache__" in dirnames:
            dirnames.remove("__pycache__")
        for f in filenames:
            rel = os.path.normpath(os.path.join(rel_dir, f))
            if rel not in py:
                files.add(rel)
        if not dirnames and not filenames:
            empty.add(os.path.normpath(rel_dir))
    return files, empty


def test_nothing_is_installed_outside_prefix(installed):
    dest, prefix = installed
    top = {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}
    assert top and all(t.startswith(prefix.lstrip("/") + "/") for t in top)


def test_every_installed_file_is_in_the_plist_and_back(installed):
    dest, prefix = installed
    files, empty = non_python(dest, prefix)
    listed, listed_dirs = plist()
    assert {plist_name(f) for f in files} == listed
    assert empty == listed_dirs


def test_python_part_is_the_package_and_its_console_scripts(installed):
    dest, prefix = installed
    py = python_package_files(dest / prefix.lstrip("/"))
    assert {"bin/vmgenctl", "bin/vmgenc-devd"} <= py
    assert any(p.endswith("vmgenc_tools/__init__.py") for p in py)


def test_every_man_page_is_installed(installed):
    dest, prefix = installed
    for page in (TOP / "man").iterdir():
        sect = page.suffix.lstrip(".")
        assert (dest / prefix.lstrip("/") / "share/man" / f"man{sect}" / page.name).is_file()


def test_rc_script_mode_and_prefix(installed):
    dest, prefix = installed
    root = dest / prefix.lstrip("/")
    rc = root / "etc/rc.d/vmgenc"
    assert stat.S_IMODE(rc.stat().st_mode) == 0o555
    for shipped, installed_path in (("rc.d/vmgenc", rc), ("devd/vmgenc.conf",
                                                          root / "etc/devd/vmgenc.conf")):
        text = installed_path.read_text()
        assert text == (TOP / shipped).read_text().replace("/usr/local", prefix)
        if prefix != "/usr/local":
            assert "/usr/local" not in text
        for prog in re.findall(rf"{re.escape(prefix)}/bin/([\w-]+)", text):
            assert (root / "bin" / prog).is_file(), f"{shipped} runs {prefix}/bin/{prog}: missing"
    conf = (root / "etc/devd/vmgenc.conf").read_text()
    assert f"{prefix}/bin/vmgenc-devd" in conf
    # the modes the port's INSTALL_DATA / INSTALL_MAN give (SHAREMODE 0444), as base devd.conf
    assert stat.S_IMODE((root / "etc/devd/vmgenc.conf").stat().st_mode) == 0o444
    for page in (root / "share/man").glob("man*/*"):
        assert stat.S_IMODE(page.stat().st_mode) == 0o444, page


def test_port_post_install_stages_the_plist():
    """The port's post-install installs exactly the files pkg-plist lists (no Python files)."""
    text = (PORT / "Makefile").read_text().replace("\\\n", " ")
    body = re.search(r"^post-install:\n((?:\t.*\n)+)", text, re.M).group(1)
    staged, made = set(), set()
    for line in body.splitlines():
        words = line.split()
        if words[0] == "${MKDIR}":
            made |= {w.removeprefix("${STAGEDIR}${PREFIX}/") for w in words[1:]}
            continue
        assert words[0] in ("${INSTALL_DATA}", "${INSTALL_SCRIPT}", "${INSTALL_MAN}"), line
        src = words[1].removeprefix("${WRKSRC}/")
        dst = words[2].removeprefix("${STAGEDIR}${PREFIX}/")
        assert (TOP / src).is_file(), f"port installs {src}, which the tree lacks"
        target = dst + Path(src).name if dst.endswith("/") else dst
        assert str(Path(target).parent) in made, f"{target}: directory not made"
        staged.add(plist_name(target))
        if src.startswith("rc.d/"):
            assert words[0] == "${INSTALL_SCRIPT}", "rc.d scripts are installed 555"
    files, dirs = plist()
    assert staged == files
    assert dirs <= made


def test_port_substitutes_prefix_like_make_install():
    top_make = (TOP / "Makefile").read_text()
    port_make = (PORT / "Makefile").read_text().replace("\\\n", " ")
    assert "s|/usr/local|$(PREFIX)|g" in top_make
    m = re.search(r"^post-patch:\n\t\$\{REINPLACE_CMD\} -e 's\|/usr/local\|\$\{PREFIX\}\|g'(.*)$",
                  port_make, re.M)
    assert m, "post-patch must substitute /usr/local with ${PREFIX}"
    patched = {w.removeprefix("${WRKSRC}/") for w in m.group(1).split()}
    substituted = set(re.findall(r"sed 's\|/usr/local\|\$\(PREFIX\)\|g' (\S+)", top_make))
    assert patched == substituted == {"devd/vmgenc.conf", "rc.d/vmgenc"}


def test_port_metadata():
    assert port_var("PORTNAME") == "vmgenc-tools"
    assert port_var("DISTVERSION") == vmgenc_tools.__version__
    assert port_var("CATEGORIES").split()[0] == "sysutils"
    assert port_var("LICENSE") == "BSD2CLAUSE"
    assert port_var("USES").startswith("python")
    assert {"autoplist", "pep517"} <= set(port_var("USE_PYTHON").split())
    assert re.fullmatch(r"\S+@\S+", port_var("MAINTAINER"))
    assert port_var("COMMENT") and len(port_var("COMMENT")) <= 70
    assert port_var("WWW").startswith("https://")
    descr = (PORT / "pkg-descr").read_text()
    assert max(len(ln) for ln in descr.splitlines()) <= 80


def test_port_run_depends_cover_install_requires():
    cfg = configparser.ConfigParser()
    cfg.read(TOP / "setup.cfg")
    requires = [r.strip() for r in cfg["options"]["install_requires"].splitlines() if r.strip()]
    deps = port_var("RUN_DEPENDS").split()
    origins = {"click": "devel/py-click", "psutil": "sysutils/py-psutil"}
    assert len(requires) == len(deps)
    for req in requires:
        name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)>=(\S+)", req).groups()
        want = f"${{PYTHON_PKGNAMEPREFIX}}{name}>={version}:{origins[name]}@${{PY_FLAVOR}}"
        assert want in deps, f"RUN_DEPENDS lacks {want}"


def test_pkg_message_names_the_setup_steps():
    assert "pkg-message" in port_var("SUB_FILES").split()
    msg = (PORT / "files" / "pkg-message.in").read_text()
    for step in ('vmgenc_load="YES"', "sysrc vmgenc_enable=YES", "service devd restart",
                 "service vmgenc start", "%%PREFIX%%/etc/vmgenc/hooks.d"):
        assert step in msg, step
