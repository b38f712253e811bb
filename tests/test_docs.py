"""The manual pages and the README say what the code does.

Every page is ``mandoc -Tlint`` clean but for references to pages Debian lacks; every command
and option of the contract (design §3), every rc.conf knob with its default, every exit code,
class, hook status, history field and hook environment variable is documented; the README and
``.ci/run`` name the same test command.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from vmgenc_tools import exitcodes
from vmgenc_tools.config import BUILTIN_HOOKS, CLASSES, KNOBS, SITE, Config
from vmgenc_tools.history import RUN_STATUSES, Change, HookRun
from vmgenc_tools.hooks.base import STATUSES, HookContext

TOP = Path(__file__).resolve().parent.parent
MAN = TOP / "man"
PAGES = sorted(p for p in MAN.iterdir() if re.fullmatch(r"[a-z0-9-]+\.[1-9]", p.name))
CTL = MAN / "vmgenctl.8"
HOOKS = MAN / "vmgenc-hooks.5"
README = TOP / "README.md"

# design §3: command → the options the contract gives it.
CONTRACT: dict[str, tuple[str, ...]] = {
    "status": ("--json",),
    "history": ("-n", "--since", "--json", "--csv"),
    "check": ("--source", "--expect", "--dry-run"),
    "retry": (),
    "wait": ("--since", "--timeout"),
    "hooks list": ("--json",),
    "hooks validate": (),
    "watch": ("--json",),
    "sim init": ("--hypervisor", "--guid", "--smbios-uuid"),
    "sim boot": (),
    "sim clone": (),
    "sim restore": (),
    "sim cold-clone": (),
    "sim notify": ("--value",),
    "sim sysctl": ("-x", "-b"),
    "sim devd": ("-f", "--run", "--json"),
}
HYPERVISORS = ("qemu", "bhyve", "xen", "hyperv", "firecracker")
HISTORY_FIELDS = ("id", "detected_at", "source", "old_guid", "new_guid", "class", "status",
                  "hooks", "warning", "name", "exit_code", "duration_s", "attempt", "output")
# mandoc -Tlint also looks up every .Xr page in the host's manual tree: FreeBSD's are not on
# Debian ("referenced manual not found"), and a stale mandoc.db there says so while it looks
# (on stderr, about the host, not the page).  Nothing else is tolerated.
LINT_ALLOWED = re.compile(
    r"^mandoc: (?:[^:]+:\d+:\d+: STYLE: referenced manual not found: Xr "
    r"|outdated mandoc\.db lacks \S+ entry, run makewhatis )")

mandoc = pytest.mark.skipif(shutil.which("mandoc") is None, reason="mandoc not installed "
                            "(make test installs it: tools/ensure-deps)")


def render(page: Path) -> str:
    """The page as plain text, one paragraph line per source paragraph (no wrapping)."""
    out = subprocess.run(["mandoc", "-Tascii", "-O", "width=1000", str(page)],
                         capture_output=True, check=True, text=True).stdout
    return re.sub(r".\x08", "", out)


def section(text: str, name: str) -> str:
    """The body of one ``.Sh`` section of a rendered page."""
    m = re.search(rf"^{re.escape(name)}\n(.*?)(?=^[A-Z][A-Z .]+\n|\Z)", text, re.M | re.S)
    assert m, f"no {name} section"
    return m.group(1)


def synopsis_lines(text: str) -> list[str]:
    return [ln.strip() for ln in section(text, "SYNOPSIS").splitlines() if ln.strip()]


def test_there_are_two_pages():
    assert [p.name for p in PAGES] == ["vmgenc-hooks.5", "vmgenctl.8"]


@mandoc
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_mandoc_lint_clean(page):
    """Plain ``-Tlint``: no message, style ones included, but references to absent pages."""
    r = subprocess.run(["mandoc", "-Tlint", str(page)], capture_output=True, text=True)
    messages = (r.stdout + r.stderr).splitlines()
    assert [m for m in messages if not LINT_ALLOWED.match(m)] == []
    assert r.returncode == (1 if messages else 0), messages  # 1: style messages only


@mandoc
def test_mandoc_lint_check_catches_style_messages(tmp_path):
    """The filter lets a STYLE message through (``-W warning`` used to hide them)."""
    page = tmp_path / "vmgenctl.8"
    long_line = " ".join(["word"] * 20)  # 99 bytes
    page.write_text(CTL.read_text().replace(".Sh DESCRIPTION\n",
                                            f".Sh DESCRIPTION\n{long_line}\n", 1))
    r = subprocess.run(["mandoc", "-Tlint", str(page)], capture_output=True, text=True)
    bad = [m for m in (r.stdout + r.stderr).splitlines() if not LINT_ALLOWED.match(m)]
    assert [m.split(": ", 2)[2] for m in bad] == [
        "STYLE: input text line longer than 80 bytes: word word word word ..."], bad


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_header_matches_file_name(page):
    src = page.read_text()
    name, sect = page.name.rsplit(".", 1)
    assert f"\n.Dt {name.upper()} {sect}\n" in src
    assert f"\n.Nm {name}\n" in src
    assert re.search(r"^\.Dd [A-Z][a-z]+ \d{1,2}, \d{4}$", src, re.M)


@mandoc
@pytest.mark.parametrize("command", CONTRACT)
def test_every_contract_command_and_option_in_synopsis(command):
    lines = synopsis_lines(render(CTL))
    mine = [ln for ln in lines if re.match(rf"vmgenctl \[--root dir\] {command}( |$)", ln)]
    assert len(mine) == 1, f"{command!r} not in SYNOPSIS (or twice): {lines}"
    words = set(re.findall(r"-{1,2}[a-z][a-z-]*|(?<=\[)-(?= |\])|(?<= )-(?=\])", mine[0]))
    for opt in CONTRACT[command]:
        assert opt in words, f"{command}: {opt} missing in {mine[0]!r}"


@mandoc
def test_synopsis_has_version_and_hypervisors():
    text = render(CTL)
    lines = synopsis_lines(text)
    assert "vmgenctl --version" in lines
    init = next(ln for ln in lines if " sim init" in ln)
    assert all(h in init for h in HYPERVISORS)
    check = next(ln for ln in lines if " check " in ln)
    assert "[--source boot | devd | manual]" in check


@mandoc
@pytest.mark.parametrize("command", CONTRACT)
def test_every_command_described(command):
    body = section(render(CTL), "DESCRIPTION")
    item = rf"^\s+(?:[a-z -]+, )?{re.escape(command)}\b"  # ".It Cm a , Cm b" → "a, b"
    assert re.search(item, body, re.M), f"{command} not described"


def _click_commands():
    """(path, command) for every visible command of the real click app."""
    import click

    from vmgenc_tools.cli import app

    def walk(group: click.Group, prefix: str):
        for name, cmd in sorted(group.commands.items()):
            if getattr(cmd, "hidden", False):
                continue
            path = f"{prefix}{name}"
            if isinstance(cmd, click.Group):
                yield from walk(cmd, path + " ")
            else:
                yield path, cmd

    return list(walk(app, ""))


@mandoc
def test_every_implemented_command_and_option_documented():
    """What the click app really offers is in the SYNOPSIS, with every option it takes."""
    lines = synopsis_lines(render(CTL))
    for path, cmd in _click_commands():
        mine = [ln for ln in lines if re.match(rf"vmgenctl \[--root dir\] {path}( |$)", ln)]
        assert mine, f"vmgenctl {path} is implemented but not in vmgenctl(8) SYNOPSIS"
        for param in cmd.params:
            opts = [o for o in getattr(param, "opts", []) if o.startswith("-")]
            if not opts or "--help" in opts or getattr(param, "hidden", False):
                continue
            words = set(re.findall(r"(?<![\w-])-{1,2}[A-Za-z][\w-]*", mine[0]))
            assert words & set(opts), (
                f"vmgenctl {path}: option {opts} not in {mine[0]!r}")


def test_every_knob_with_its_default_in_the_hooks_page():
    src = HOOKS.read_text()
    for name, (default, _meaning) in KNOBS.items():
        shown = default if default else "\\&"
        assert f"\n.It Va {name} Pq Dq {shown}\n" in src, f"{name} (default {default!r})"


def test_every_knob_with_its_default_in_readme():
    text = README.read_text()
    for name, (default, _meaning) in KNOBS.items():
        shown = f"`{default}`" if default else "(empty)"
        assert re.search(rf"^\| `{name}` \| {re.escape(shown)} \|", text, re.M), (
            f"README knob table: {name} (default {default!r})")


def test_knob_tables_list_nothing_else():
    documented = set(re.findall(r"^\.It Va (vmgenc_\w+) Pq", HOOKS.read_text(), re.M))
    assert documented == set(KNOBS)
    rows = set(re.findall(r"^\| `(vmgenc_\w+)` \|", README.read_text(), re.M))
    assert rows == set(KNOBS)


@mandoc
def test_every_exit_code_documented():
    body = section(render(CTL), "EXIT STATUS")
    documented = {int(n) for n in re.findall(r"^\s{5}(\d+)\s", body, re.M)}
    codes = {v for k, v in vars(exitcodes).items() if k.isupper() and isinstance(v, int)}
    assert codes <= documented, f"undocumented exit codes: {sorted(codes - documented)}"


@mandoc
def test_classes_documented_everywhere():
    ctl, hooks, readme = render(CTL), render(HOOKS), README.read_text()
    for cls in (*CLASSES, "no-id"):
        assert re.search(rf"^\s+{cls}\s", section(ctl, "DESCRIPTION"), re.M), cls
        assert re.search(rf"^\s+{cls}\s", section(hooks, "DESCRIPTION"), re.M), cls
        assert f"| `{cls}` |" in readme, cls


@mandoc
def test_history_json_fields_and_hook_statuses_documented():
    body = section(render(CTL), "DESCRIPTION")
    for field in HISTORY_FIELDS:
        assert re.search(rf"\b{field}\b", body), field
    assert set(STATUSES) < set(RUN_STATUSES)
    for status in RUN_STATUSES:
        assert re.search(rf"\b{status}\b", body), status


def _sample_record() -> dict:
    """A JSON record as ``history --json`` prints it, with one hook attempt."""
    ch = Change("2026-01-01T00:00:00+00:00", "manual", "clone", "failed", b"\1" * 16,
                "01010101-0101-0101-0101-010101010101", "0x" + "01" * 16, id=1,
                hooks=[HookRun(1, "site:10-x", 1, "failed", 3, 0.5, "boom\n")])
    return ch.as_dict()


def _history_item(src: str) -> str:
    m = re.search(r"^\.It Cm history .*?(?=^\.It Cm check )", src, re.M | re.S)
    assert m, "vmgenctl(8): no history item"
    return m.group(0)


def _va_words(src: str) -> set[str]:
    """The names an mdoc source marks ``.Va`` (``.Brq Va a , b`` gives both a and b)."""
    words: set[str] = set()
    for line in src.splitlines():
        on = False
        for tok in line[1:].split() if line.startswith(".") else ():
            if tok == "Va":
                on = True
            elif re.fullmatch(r"[A-Z][a-z]{1,2}", tok):  # the next macro ends it
                on = False
            elif on and re.fullmatch(r"[a-z_]+", tok):
                words.add(tok)
    return words


def test_every_record_and_hook_field_in_the_history_description():
    """What history.py really puts in a record and in each hook is in vmgenctl(8)."""
    item = _history_item(CTL.read_text())
    documented = _va_words(item)
    rec = _sample_record()
    assert set(rec) - documented == set(), "record fields not in vmgenctl(8) history"
    assert set(rec["hooks"][0]) - documented == set(), "hook fields not in vmgenctl(8)"
    for status in RUN_STATUSES:
        assert re.search(rf"^\.It Cm {status}$", item, re.M), f"hook status {status}"


def test_readme_json_record_paragraph_names_every_hook_field_and_status():
    text = README.read_text()
    para = re.search(r"^A JSON record has .*?(?=\n\n)", text, re.M | re.S).group(0)
    rec = _sample_record()
    for field in (*HISTORY_FIELDS[:9], *rec["hooks"][0]):
        assert re.search(rf"\b{field}\b", para), field
    for status in RUN_STATUSES:
        assert f"`{status}`" in para, status


@mandoc
def test_hook_environment_and_builtins_documented():
    body = section(render(HOOKS), "DESCRIPTION")
    ctx = HookContext(Config(), new_guid="x", old_guid=None, cls="clone", source="boot")
    for var in ctx.env():
        assert re.search(rf"^\s+{var}\s", body, re.M), var
    for name in (*BUILTIN_HOOKS, SITE):
        assert re.search(rf"\b{name}\b", body), name
    for skipped in ("~", ".sample", ".disabled", ".orig"):
        assert f"`{skipped}'" in body


def test_files_under_prefix_are_in_the_port_plist():
    plist = (TOP / "port" / "pkg-plist").read_text().split("\n")
    entries = {ln.split()[-1] for ln in plist if ln.strip()}
    for page in (CTL, HOOKS):
        for path in re.findall(r"^\.It Pa /usr/local/(\S+)", page.read_text(), re.M):
            assert path.rstrip("/") in entries, f"{page.name}: /usr/local/{path} not in pkg-plist"


def test_readme_keeps_its_first_sections_and_names_both_commands():
    text = README.read_text()
    heads = re.findall(r"^## (.+)$", text, re.M)
    assert heads[:2] == ["Two commands", "Install on FreeBSD"]
    for cmd in ("make demo", "make test"):
        assert re.search(rf"^{cmd}\s", text, re.M), cmd
    for section_name in ("Configure", "Write a hook", "Read the history",
                         "Classes and what each triggers", "Troubleshooting", "How it is built"):
        assert section_name in heads


def test_ci_runs_the_readme_test_command():
    readme = README.read_text()
    block = re.search(r"^## Two commands\n+```sh\n(.*?)```", readme, re.M | re.S).group(1)
    test_cmd = next(ln.split("#")[0].strip() for ln in block.splitlines() if "test" in ln)
    ci = (TOP / ".ci" / "run").read_text().splitlines()
    runs = [ln.strip().removeprefix("exec ").strip() for ln in ci
            if ln.strip() and not ln.lstrip().startswith("#")]
    assert test_cmd in runs, f".ci/run does not run {test_cmd!r}: {runs}"


def test_readme_install_steps():
    text = README.read_text()
    for step in ("pkg install", "make install", 'vmgenc_load="YES"', "kldload vmgenc",
                 "sysrc vmgenc_enable=YES", "service devd restart", "service vmgenc start"):
        assert step in text, step


def _literal_blocks(page: Path) -> list[str]:
    """The ``.Bd -literal`` blocks of a page, with mdoc escapes undone."""
    blocks = re.findall(r"^\.Bd -literal[^\n]*\n(.*?)^\.Ed$", page.read_text(), re.M | re.S)
    return [b.replace("\\e", "\\").replace("\\&", "") for b in blocks]


def _example_hooks() -> list[tuple[str, str]]:
    man = [b for b in _literal_blocks(HOOKS) if b.startswith("#!/bin/sh")]
    readme = re.findall(r"^```sh\n(#!/bin/sh\n.*?)^```", README.read_text(), re.M | re.S)
    assert len(man) == 1 and len(readme) == 1, "one example hook in the page and in README"
    return [("vmgenc-hooks.5", man[0]), ("README.md", readme[0])]


@pytest.mark.parametrize("where,script", _example_hooks(), ids=lambda v: v[:14])
def test_example_hook_runs_as_documented(tmp_path, trusted_rc_conf, where, script):
    """The example hook really runs under the runner: no-op unless clone, not run in a dry run,
    then a clone."""
    from vmgenc_tools.config import load
    from vmgenc_tools.hooks.runner import plan

    root = tmp_path / "root"
    hooks = root / "usr/local/etc/vmgenc/hooks.d"
    hooks.mkdir(parents=True)
    for d in [root, *hooks.relative_to(root).parents, hooks.relative_to(root)]:
        os.chmod(root / d, 0o755)
    trusted_rc_conf(str(root))
    hook = hooks / "50-salt-minion"
    hook.write_text(script)
    hook.chmod(0o755)
    keys = root / "usr/local/etc/salt/pki/minion"
    keys.mkdir(parents=True)
    for name in ("minion.pem", "minion.pub"):
        (keys / name).write_text("key\n")
    cfg = load(str(root))

    def run(cls: str, dry: bool = False):
        ctx = HookContext(cfg, new_guid="9f0c5b8e-3a1d-4e6f-8b2a-1c4d5e6f7a8b",
                          old_guid="324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87", cls=cls,
                          source="devd", dry_run=dry)
        (hook_obj,) = [h for h in plan(cfg, "clone") if h.name == "site:50-salt-minion"]
        return hook_obj.run(ctx)

    r = run("restore")
    assert (r.status, r.exit_code) == ("ok", 0)
    r = run("clone", dry=True)
    assert r.status == "skipped" and "would run" in r.output
    assert (keys / "minion.pem").exists()
    r = run("clone")
    assert (r.status, r.exit_code) == ("ok", 0), r.output
    assert not (keys / "minion.pem").exists() and not (keys / "minion.pub").exists()
    assert "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87 -> 9f0c5b8e" in r.output


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
@pytest.mark.parametrize("where,script", _example_hooks(), ids=lambda v: v[:14])
def test_example_hook_is_shellcheck_clean(tmp_path, where, script):
    path = tmp_path / "hook"
    path.write_text(script)
    r = subprocess.run(["shellcheck", "-s", "sh", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


# -- what the pages show is what the program does -------------------------------------------


def _command_lines() -> list[tuple[str, str]]:
    """(where, line) for every vmgenctl command line shown in README and vmgenctl(8)."""
    out = []
    readme = README.read_text()
    for block in re.findall(r"^```sh\n(.*?)^```", readme, re.M | re.S):
        out += [("README.md", ln) for ln in block.splitlines() if ln.startswith("vmgenctl ")]
    out += [("README.md", m) for m in re.findall(r"`(vmgenctl [^`]+)`", readme)]
    for block in _literal_blocks(CTL) + _literal_blocks(HOOKS):
        text = block.replace("\\\n", " ")
        out += [("man", ln.strip()) for ln in text.splitlines()
                if ln.strip().startswith("vmgenctl ")]
    return out


def _parse_command_line(line: str) -> None:
    """Resolve ``line`` against the real click app and parse its options (UsageError if not)."""
    import shlex

    import click

    from vmgenc_tools.cli import app

    words = shlex.split(line, comments=True)
    for i, w in enumerate(words):
        if w in ("|", "||", "&&", ";"):
            words = words[:i]
            break
    args = words[1:]
    app.make_context("vmgenctl", list(args))  # the global options
    while args and args[0].startswith("-"):
        args = args[2:] if args[0] == "--root" else args[1:]
    cmd: click.Command = app
    path = "vmgenctl"
    while isinstance(cmd, click.Group) and args:
        name, args = args[0], args[1:]
        assert name in cmd.commands, f"{line!r}: no command {name!r} under {path!r}"
        cmd, path = cmd.commands[name], f"{path} {name}"
    if not isinstance(cmd, click.Group):
        cmd.make_context(path, list(args))


def test_every_command_line_shown_in_the_docs_parses():
    lines = _command_lines()
    assert len(lines) >= 25, lines
    shown = {ln.split()[1] for _, ln in lines}
    assert {"status", "history", "check", "wait", "hooks", "sim", "watch", "retry"} <= shown | {
        ln.split()[3] for _, ln in lines if ln.startswith("vmgenctl --root")}
    for where, line in lines:
        try:
            _parse_command_line(line)
        except Exception as e:  # noqa: BLE001 - report which line
            pytest.fail(f"{where}: {line!r} does not parse: {e}")


def test_a_wrong_command_line_is_caught_by_the_parser_check():
    for bad in ("vmgenctl history --tail 5", "vmgenctl sim explode",
                "vmgenctl check --source cron"):
        with pytest.raises(Exception):  # noqa: B017 - click's UsageError or our assertion
            _parse_command_line(bad)


def _man_status_fields() -> set[str]:
    src = CTL.read_text()
    m = re.search(r"the output is one JSON object with the fields\n(.*?)and times are UTC", src,
                  re.S)
    assert m, "vmgenctl(8): status --json fields not found"
    return set(re.findall(r"^\.Va (\w+)", m.group(1), re.M))


def test_status_json_fields_are_the_documented_ones(kernel_root):
    from click.testing import CliRunner

    from vmgenc_tools.cli import app

    for step in (["check"], ["status", "--json"]):
        r = CliRunner().invoke(app, ["--root", kernel_root, *step])
    assert r.exit_code == 0, r.output
    import json

    doc = json.loads(r.stdout)
    assert set(doc) == _man_status_fields()


@mandoc
def test_shell_completion_documented():
    env = section(render(CTL), "ENVIRONMENT")
    assert re.search(r"^\s+_VMGENCTL_COMPLETE\s", env, re.M)
    for shell in ("bash_source", "zsh_source", "fish_source", "sh_source"):
        assert shell in env, shell
    readme = README.read_text()
    assert "## Shell completion" in readme
    for text in (CTL.read_text(), readme):
        for shell in ("bash", "zsh"):
            assert f'eval "$(_VMGENCTL_COMPLETE={shell}_source vmgenctl)"' in text, shell


def test_documented_completion_lines_work():
    """Each documented ``_VMGENCTL_COMPLETE=X_source`` prints a script for that shell."""
    import sys

    vmgenctl = os.path.join(os.path.dirname(sys.executable), "vmgenctl")
    values = set(re.findall(r"_VMGENCTL_COMPLETE=(\w+_source)", README.read_text() +
                            CTL.read_text()))
    assert {"bash_source", "zsh_source"} <= values
    for value in values:
        p = subprocess.run([vmgenctl], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, _VMGENCTL_COMPLETE=value))
        if value == "sh_source":
            assert p.returncode == exitcodes.USAGE and "no completion for sh" in p.stderr
        else:
            assert p.returncode == 0 and "vmgenctl" in p.stdout, value


def test_readme_metrics_names_match_the_code():
    from vmgenc_tools import metrics

    text = metrics.render({}, None, 0, 0, False)
    names = {ln.split()[0].split("{")[0] for ln in text.splitlines() if not ln.startswith("#")}
    readme = README.read_text()
    for name in names:
        assert f"`{name}" in readme, name
    assert "vmgenc_metrics_file" in readme and "atomically" in readme
