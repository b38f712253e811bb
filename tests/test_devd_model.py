"""The devd model (vmgenc_tools.reference.devd) against devd(8) as the facts describe it
(§3, and §3.12: behaviour confirmed by running the real devd)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import textwrap

import pytest
from click.testing import CliRunner

from vmgenc_tools.cli.common import Ctx
from vmgenc_tools.cli.sim_devd import devd_command
from vmgenc_tools.reference import devd as D
from vmgenc_tools.reference import ere

TS = "1700000000.123456"
VMGENC = r"!system=ACPI subsystem=VMGenerationCounter type=\_SB_.VGEN notify=0x00"


def make_root(tmp_path, conf: str, extra: dict[str, str] | None = None) -> str:
    """A sandbox root with ``conf`` as /etc/devd.conf and ``extra`` files (path → text)."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "devd.conf").write_text(textwrap.dedent(conf))
    for rel, text in (extra or {}).items():
        path = root / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return str(root)


def load(tmp_path, conf: str, extra: dict[str, str] | None = None) -> D.Devd:
    return D.load_devd(make_root(tmp_path, conf, extra))


def answer(devd: D.Devd, line: str) -> tuple[int | None, list[str]]:
    """(line of the block that runs, commands) for one record, not run."""
    res = devd.dispatch(line, run=False, timestamp=TS)
    return (res.match.line if res.match else None), res.commands


# ------------------------------------------------------------------ configs × events

PRIORITIES = """\
notify 10 {
	match "system" "ACPI";
	action "echo low $subsystem";
};
notify 20 {
	match "system" "ACPI";
	match "subsystem" "ACAD";
	action "echo high $notify";
};
notify 20 {
	match "system" "ACPI";
	match "subsystem" "AC.*";
	action "echo tie-second";
};
notify 30 {
	match "system" "ACPI";
	match "subsystem" "Swallow";
};
notify 40 {
};
"""

PATTERNS = """\
options {
	set early "AC(AD|XX)";
};
notify 9 { match "subsystem" "$early"; action "echo early-var"; };
notify 8 { match "subsystem" "$late"; action "echo late-var $late"; };
options { set late "Lid"; };
notify 7 { match "subsystem" "ACAD|Lid"; action "echo bare-alternation"; };
notify 6 { match "subsystem" "(Button|Thermal)"; action "echo grouped"; };
notify 5 { match "subsystem" "!CMBAT|ACAD"; match "system" "INV"; action "echo inverted"; };
notify 4 { match "system" "acpi"; match "subsystem" "case"; action "echo folded"; };
notify 3 { match "SYSTEM" "ACPI"; action "echo names-are-case-sensitive"; };
notify 2 { match "nosuch" "x*"; match "system" "EMPTY"; action "echo unset-is-empty"; };
notify 1 { match "type" "!"; match "system" "NONEMPTY"; action "echo bang-alone"; };
"""

ESCAPES = r"""
notify 9 { match "type" "\_SB_.VGEN"; action "echo naive"; };
notify 8 { match "type" "\\_SB_\.VGEN"; action "echo escaped"; };
notify 7 { match "notify" "0x\d+"; action "echo never"; };
notify 6 { match "notify" "!0x\d+"; match "system" "BANG"; action "echo always"; };
notify 5 { match "type" "a+?"; action "echo lazy"; };
notify 4 { match "type" "(?i)x"; action "echo lookaround"; };
notify 3 { match "type" "[[:digit:]]+[^a][]x]"; action "echo bracket"; };
notify 2 { match "type" ".*[[:<:]]VGEN[[:>:]].*|\<W\>"; action "echo words"; };
notify 1 { match "type" "x{2,3}y{1}z{0}"; action "echo counted"; };
"""


@pytest.mark.parametrize("conf, event, line, commands", [
    # only the single highest-priority matching block runs; ties go to the first parsed
    (PRIORITIES, "!system=ACPI subsystem=ACAD notify=0x01", 5, ["echo high $'0x01'"]),
    (PRIORITIES, "!system=ACPI subsystem=ACXY", 10, ["echo tie-second"]),
    (PRIORITIES, "!system=ACPI subsystem=Lid", 1, ["echo low $'Lid'"]),
    (PRIORITIES, "!system=acpi subsystem=acad", 5, ["echo high $''"]),  # values fold case
    (PRIORITIES, "!system=ACPI subsystem=Swallow", 15, []),  # matches, no action: swallowed
    (PRIORITIES, "!system=IFNET subsystem=em0", None, []),
    (PRIORITIES, "+acpi0 at system=ACPI on nexus0", None, []),  # attach list is separate
    # variables in patterns: expanded when parsed, later sets unseen, actions see them
    (PATTERNS, "!subsystem=ACAD", 4, ["echo early-var"]),
    (PATTERNS, "!subsystem=ACXX", 4, ["echo early-var"]),
    (PATTERNS, "!subsystem=", 5, ["echo late-var $'Lid'"]),  # "$late" was "" → ^$
    # anchoring by concatenation: ACAD|Lid is ^ACAD|Lid$
    (PATTERNS, "!subsystem=Lid", 7, ["echo bare-alternation"]),
    (PATTERNS, "!subsystem=ACADx", 7, ["echo bare-alternation"]),
    (PATTERNS, "!subsystem=ACADIA", 7, ["echo bare-alternation"]),
    (PATTERNS, "!subsystem=BigLid", 7, ["echo bare-alternation"]),
    (PATTERNS, "!subsystem=LidX", None, []),
    (PATTERNS, "!subsystem=Button", 8, ["echo grouped"]),
    (PATTERNS, "!subsystem=Buttons", None, []),
    # inversion applies to the whole (anchored) pattern
    (PATTERNS, "!system=INV subsystem=Lid", 7, ["echo bare-alternation"]),
    (PATTERNS, "!system=INV subsystem=Zed", 9, ["echo inverted"]),
    (PATTERNS, "!system=INV subsystem=CMBATX", None, []),
    (PATTERNS, "!system=INV subsystem=XACAD", None, []),
    # case: values fold, variable names do not
    (PATTERNS, "!system=ACPI subsystem=CASE", 10, ["echo folded"]),
    (PATTERNS, "!SYSTEM=ACPI subsystem=zz", 11, ["echo names-are-case-sensitive"]),
    # unset variables match as "" (an unset subsystem hits the "^$" block); "!" alone
    (PATTERNS, "!system=EMPTY", 5, ["echo late-var $'Lid'"]),
    (PATTERNS, "!system=EMPTY subsystem=zz", 12, ["echo unset-is-empty"]),
    (PATTERNS, "!system=NONEMPTY type=x subsystem=zz", 13, ["echo bang-alone"]),
    (PATTERNS, "!system=NONEMPTY type= subsystem=zz", None, []),
    # POSIX ERE, not Python re
    (ESCAPES, r"!type=\_SB_.VGEN", 3, ["echo escaped"]),  # \_ is _: the naive one misses
    (ESCAPES, "!type=_SB_xVGEN", 2, ["echo naive"]),
    (ESCAPES, "!type=\\_SB_xVGEN", None, []),
    (ESCAPES, "!notify=0x12", None, []),  # \d does not compile: never matches
    (ESCAPES, "!notify=0x12 system=BANG", 5, ["echo always"]),  # ... and inverted always
    (ESCAPES, "!type=aa", None, []),  # a+? is REG_BADRPT
    (ESCAPES, "!type=x", None, []),  # (?i) is REG_BADRPT
    (ESCAPES, "!type=12bX", 8, ["echo bracket"]),  # ] first is literal, icase brackets
    (ESCAPES, "!type=12a]", None, []),
    (ESCAPES, "!type=12A]", None, []),  # [^a] excludes A too under REG_ICASE
    (ESCAPES, "!type=foo.vgen", 9, ["echo words"]),
    (ESCAPES, "!type=foovgen", None, []),
    (ESCAPES, "!type=w", 9, ["echo words"]),
    (ESCAPES, "!type=XXXY", 10, ["echo counted"]),
    (ESCAPES, "!type=XXXXY", None, []),
])
def test_which_block_runs_and_the_command(tmp_path, conf, event, line, commands):
    devd = load(tmp_path, conf)
    assert answer(devd, event) == (line, commands)


SHORTHANDS = """\
attach 3 { device-name "em[0-9]+"; class "net"; action "echo net $device-name"; };
attach 2 { subdevice "x.*"; action "echo sub $subdevice"; };
attach 1 { device-name "em0"; action "echo fallback"; };
"""


@pytest.mark.parametrize("event, line, commands", [
    ("+em0 at class=net on pci0", 1, ["echo net $'em0'"]),
    ("+em1 at class=NET on pci0", 1, ["echo net $'em1'"]),
    ("+em0 at class=disk on pci0", 3, ["echo fallback"]),
    ("+em1 at class=disk on pci0", None, []),
    ("+da0 at subdevice=xyz on pci0", 2, ["echo sub $'xyz'"]),
    ("+da0 at subdevice=yz on pci0", None, []),
])
def test_device_name_class_subdevice_are_match_shorthands(tmp_path, event, line, commands):
    devd = load(tmp_path, SHORTHANDS)
    assert [[t.var for t in b.tests] for b in devd.blocks["attach"]] == [
        ["device-name", "class"], ["subdevice"], ["device-name"]]
    assert answer(devd, event) == (line, commands)


KERN_SHIM = """\
notify 10 {
	match "system" "kernel";
	match "kern"
		"pow(er)?";
	action "echo renamed $type";
};
notify 5 { match "Kern" "power"; action "echo case-sensitive"; };
notify 1 { match "system" "kern"; action "echo value-untouched"; };
"""


def test_freebsd14_renames_a_kern_match_to_kernel_with_devds_warning(tmp_path):
    devd = load(tmp_path, KERN_SHIM)
    # new_match compares the variable name with strcmp: only "kern" itself is renamed,
    # and a "kern" pattern (the value) is left alone.
    assert [[t.var for t in b.tests] for b in devd.blocks["notify"]] == [
        ["system", "kernel"], ["Kern"], ["system"]]
    # LOG_WARNING at the line yacc reduces the rule on: the ";" of the statement
    assert devd.warnings == ["Changing deprecated system='kern' to new name 'kernel' in "
                             "/etc/devd.conf line 4."]
    assert answer(devd, "!system=kernel kernel=power type=RESUME") == (
        1, ["echo renamed $'RESUME'"])
    # the event's own "kern" variable is no longer looked at
    assert answer(devd, "!system=kernel kern=power type=RESUME") == (None, [])
    assert answer(devd, "!system=kern Kern=power") == (7, ["echo case-sensitive"])
    assert answer(devd, "!system=kern") == (8, ["echo value-untouched"])


def test_regcomp_failures_are_warned(tmp_path):
    devd = load(tmp_path, ESCAPES)
    text = "\n".join(devd.warnings)
    assert "(REG_EESCAPE): this match never succeeds" in text
    assert "(REG_EESCAPE): this match always succeeds" in text
    assert text.count("REG_BADRPT") == 2


@pytest.mark.parametrize("pattern, code", [
    ("a||b", "REG_EMPTY"), ("(a|)", "REG_EMPTY"), ("(", "REG_EPAREN"), ("a)", "REG_EPAREN"),
    ("*a", "REG_BADRPT"), ("a**", "REG_BADRPT"), ("a{1", "REG_EBRACE"), ("a{,2}", "REG_BADBR"),
    ("a{3,2}", "REG_BADBR"), ("a{256}", "REG_BADBR"), ("[a", "REG_EBRACK"),
    ("[z-a]", "REG_ERANGE"), ("[--/]", "REG_ERANGE"), ("[[:nope:]]", "REG_ECTYPE"),
    ("\\", "REG_EESCAPE"),
    ("\\w", "REG_EESCAPE"), ("{", "REG_BADRPT"), ("a{x", "REG_BADRPT"), ("^*", "REG_BADRPT"),
])
def test_ere_compile_errors(pattern, code):
    with pytest.raises(ere.RegexError) as e:
        ere.translate_ere(pattern.encode())
    assert e.value.code == code


@pytest.mark.parametrize("pattern, subject, hit", [
    ("^a|b$", "ab", True), ("^a|b$", "xb", True), ("^(a|b)$", "ab", False),
    ("^\\\\_SB_$", "\\_SB_", True), ("^\\_SB_$", "\\_SB_", False), ("^\\.$", "x", False),
    ("^[a-c]+$", "AbC", True), ("^[[:upper:]]$", "q", True), ("^.$", "\n", True),
    ("^.$", "é", False),  # bytes in the C locale: é is two
    ("^x$", "x\n", False),  # $ is the end, not "before a final newline"
    ("^()$", "", True), ("^a{0}$", "", True), ("^[.-.]$", "-", False),
("^[[.a.]-c]$", "b", True), ("^[[=e=]]$", "E", True),
    ("^$*a$", "a", True), ("^\\<a\\>$", "a", True), ("^\\1$", "1", True),
])
def test_ere_semantics(pattern, subject, hit):
    compiled = ere.compile_ere(pattern.encode())
    assert (compiled.search(subject.encode()) is not None) == hit


def test_ere_unsupported_constructs_stop_the_model_not_silently(tmp_path):
    with pytest.raises(D.DevdModelLimit, match="does not reproduce"):
        load(tmp_path, 'notify 1 { match "a" "[[:rune:]]"; action "x"; };\n')
    with pytest.raises(ere.RegexUnsupported):
        ere.translate_ere(b"[[.hyphen.]]")


# ------------------------------------------------------------------ action expansion

@pytest.mark.parametrize("template, expected", [
    ("$$", "$"),
    ("$$type", "$type"),
    ("a $(echo $type) b", "a $(echo $type) b"),
    ("$(a (b) $c) $type", "$(a (b) $c) $'\\\\_SB_.VGEN'"),
    ("$(unbalanced", "$(unbalanced"),
    ("$type-x $type.x $type/x $type,x", "$'' $'\\\\_SB_.VGEN'.x $'\\\\_SB_.VGEN'/x "
                                         "$'\\\\_SB_.VGEN',x"),
    ("${type} $1 $# $@ $? $ x $'q'", "${type} $1 $# $@ $? $ x $'q'"),
    ("$TYPE $nosuch", "$'' $''"),
    ("$quote", "$'it\\'s \\\\ back'"),
    ("$*", "$'!system=ACPI subsystem=VMGenerationCounter type=\\\\_SB_.VGEN notify=0x00 "
           "quote=\"it\\'s \\\\ back\"'"),
    ("$_", "$'system=ACPI subsystem=VMGenerationCounter type=\\\\_SB_.VGEN notify=0x00 "
           "quote=\"it\\'s \\\\ back\"'"),
    ("$-", "$''"),
    ("$timestamp", f"$'{TS}'"),
    ("echo $", "echo $"),
    ("$.x", "$.x"),
])
def test_action_expansion(tmp_path, template, expected):
    devd = load(tmp_path, f'notify 1 {{ match "system" "ACPI"; action "{template}"; }};\n')
    line = VMGENC + ' quote="it\'s \\ back"'
    assert answer(devd, line)[1] == [expected]


def test_pattern_expansion_inserts_raw_values():
    assert D.expand("$v+", {"v": "a'b\\"}.get, quote=False, prefix="^", suffix="$") \
        == "^a'b\\+$"
    assert D.expand("x$", lambda _: "", quote=False, prefix="^", suffix="$") == "^x$"


# ------------------------------------------------------------------ event variables

EVENTS = """\
notify 1 { action "echo notify"; };
attach 1 { action "echo attach"; };
detach 1 { action "echo detach"; };
nomatch 1 { action "echo nomatch"; };
"""


@pytest.mark.parametrize("event, expected, absent", [
    ("!system=X _=over timestamp=T2", {"_": "over", "timestamp": "T2", "system": "X"}, []),
    ('!system=A v="a\\"b" w=c\\"d', {"v": 'a"b', "w": 'c"d', "*": '!system=A v="a"b" w=c"d'},
     []),
    ('!system=A v="abc x=1', {"system": "A", "timestamp": TS}, ["v", "x"]),
    ("!a=1 junk b=2", {"a": "1"}, ["b", "junk"]),
    ("!=empty k=v=w", {"": "empty", "k": "v=w"}, []),
    ("+ at a=1 on b", {"device-name": "", "a": "1", "bus": "b"}, []),
    ("+ums0 bus=1 on uhub0 extra", {"device-name": "ums0", "bus": "uhub0 extra"}, []),
    ('-da0   at k="v w"   on  x', {"device-name": "da0", "k": "v w", "bus": " x"}, []),
    ("-da0 at  k=v on x", {"device-name": "da0", "_": "da0 at  k=v on x"}, ["k", "bus"]),
    ("?pci0:1 at slot=1 on pci0", {"slot": "1", "bus": "pci0", "_": "pci0:1 at slot=1 on pci0"},
     ["device-name"]),
])
def test_event_variables(tmp_path, event, expected, absent):
    res = load(tmp_path, EVENTS).dispatch(event + "\n", run=False, timestamp=TS)
    assert res.match is not None
    assert res.variables["*"] == expected.get("*", event)
    for key, value in expected.items():
        assert res.variables[key] == value
    for key in absent:
        assert key not in res.variables


@pytest.mark.parametrize("event, why", [
    ("+x", "no space"), ("+", "no space"), ("?", "no space"), ("?x", "no space"),
    ("=x y", "starting with '='"), ("", "empty"), ("\n", "empty"), ("\0!a=b", "empty"),
])
def test_records_devd_ignores(tmp_path, event, why):
    res = load(tmp_path, EVENTS).dispatch(event, run=False)
    assert res.match is None and res.commands == [] and why in res.ignored


def test_kernel_drops_long_records(tmp_path):
    devd = load(tmp_path, EVENTS)
    ok = "!k=" + "v" * 1011  # 1014 bytes + newline = 1015
    assert devd.dispatch(ok, run=False).match is not None
    res = devd.dispatch(ok + "v", run=False)
    assert res.match is None and "kernel drops" in res.ignored
    assert devd.dispatch(ok + "v", run=False, kernel_limit=None).match is not None


def test_timestamp_format(tmp_path):
    res = load(tmp_path, EVENTS).dispatch("!a=b", run=False)
    assert re.fullmatch(r"\d+\.\d{6}", res.variables["timestamp"])


def test_media_type(tmp_path):
    conf = """\
    notify 2 { match "type" "LINK_UP"; media-type "ethernet"; action "echo eth $subsystem"; };
    notify 1 { match "type" "LINK_UP"; media-type "unknown"; action "echo unknown"; };
    attach 1 { media-type "802.11"; action "echo wifi $device-name"; };
    """
    devd = D.load_devd(make_root(tmp_path, conf), media={"em0": "Ethernet", "iwm0": "802.11"})
    assert answer(devd, "!system=IFNET subsystem=em0 type=LINK_UP") == (1, ["echo eth $'em0'"])
    assert answer(devd, "!system=IFNET subsystem=xx0 type=LINK_UP") == (2, ["echo unknown"])
    assert answer(devd, "!system=IFNET subsystem=iwm0 type=LINK_UP") == (None, [])
    assert answer(devd, "+iwm0 at slot=1 on pci0") == (3, ["echo wifi $'iwm0'"])


# ------------------------------------------------------------------ parse errors

@pytest.mark.parametrize("conf, token, line", [
    ('notify 10 {\n\tmatch "system" "ACPI"\n};\n', "}", 3),
    ('notify 10 { action "x"; }\n', "", 2),
    ('notify 10 { action "echo \\"hi\\""; };\n', "hi", 1),
    ("notfy 10 { };\n", "notfy", 1),
    ("options {\n};\n", "}", 2),
    ('options { set match "x"; };\n', "match", 1),
    ("notify { };\n", "{", 1),
    ('notify 1 {\n\taction "one\ntwo";\n\tbogus;\n};\n', "bogus", 4),
    ('notify 1 {\n\taction "one\ntwo" "x";\n};\n', '"x"', 3),
    ("/* a\n b\n */ oops\n", "oops", 3),
    ('notify 1 { action "x"; };\n# comment without newline at the end', "comment", 2),
    ('notify 1 {\n\taction "";\n};\n', ";", 2),
    ('notify 1 { match "a"; };\n', ";", 1),
    ('attach 1 { media-type "x" "y"; };\n', '"y"', 1),
    ('options { pid-file "/p" };\n', "}", 1),
    ("// fine\nnotify 1 { };\n} ;\n", "}", 3),
    ("/* unterminated\nnotify 1 { };\n", "unterminated", 1),
])
def test_parse_errors_are_reported_like_devd(tmp_path, conf, token, line):
    with pytest.raises(D.DevdConfigError) as e:
        load(tmp_path, conf)
    first, second = e.value.lines
    assert re.fullmatch(rf"devd\[\d+\]: line {line}: {re.escape(token)}: syntax error\.", first)
    assert second == f"devd: Cannot parse /etc/devd.conf at line {line}"
    assert (e.value.file, e.value.line, e.value.token) == ("/etc/devd.conf", line, token)


def test_an_error_in_any_directory_file_stops_devd(tmp_path):
    conf = 'options { directory "/usr/local/etc/devd"; };\nnotify 1 { action "ok"; };\n'
    root = make_root(tmp_path, conf, {"/usr/local/etc/devd/a.conf": 'notify 2 { action "a"; };\n',
                                      "/usr/local/etc/devd/b.conf": "notify 3 {\n};\nbad\n"})
    with pytest.raises(D.DevdConfigError) as e:
        D.load_devd(root)
    assert e.value.lines[1] == "devd: Cannot parse /usr/local/etc/devd/b.conf at line 3"


def test_missing_main_file(tmp_path):
    with pytest.raises(D.DevdConfigError) as e:
        D.load_devd(str(tmp_path))
    assert e.value.lines == ["devd: Cannot open config file /etc/devd.conf: "
                             "No such file or directory"]


def test_lexer_details(tmp_path):
    conf = """\
    options {
        set long "(a|\\
            b)";
        set hash "x#y";
    };
    /* block comment */ notify 007 { @ action "echo $long $hash"; };  // trailing
    notify 4294967297 { action "echo wraps"; };
    notify 9""" + "9" * 5000 + """ { action "echo clamps to -1"; };
    """
    devd = load(tmp_path, conf)
    assert devd.variables == {"long": "(a|b)", "hash": "x#y"}
    assert [b.priority for b in devd.blocks["notify"]] == [7, 1, -1]  # atoi wraps to int
    assert answer(devd, "!a=b") == (6, ["echo $'(a|b)' $'x#y'"])
    assert devd.warnings == ["/etc/devd.conf:6: stray '@' ignored (flex echoes it)"]
    tokens, echoed = D.tokenize('"a\\\n   b" "c\\\n"')
    assert [t.value for t in tokens[:2]] == ["ab", 'c"']


def test_empty_config_and_empty_blocks_register_nothing(tmp_path):
    devd = load(tmp_path, "# nothing\nnotify 0 {\n# commented out\n};\n")
    assert devd.blocks == {k: [] for k in D.KINDS}
    assert answer(devd, "!a=b") == (None, [])


def test_directories_order_and_stable_priorities(tmp_path):
    conf = """\
    options { directory "/etc/devd"; directory "/usr/local/etc/devd"; directory "/nonexistent"; };
    notify 5 { match "system" "S"; action "echo main"; };
    """
    root = make_root(tmp_path, conf, {
        "/etc/devd/z.conf": 'notify 5 { match "system" "S"; action "echo etc-z"; };\n',
        "/etc/devd/a.conf": 'notify 6 { match "system" "S"; action "echo etc-a"; };\n',
        "/etc/devd/ignored.txt": "not parsed at all {",
        "/usr/local/etc/devd/a.conf": 'notify 6 { match "system" "S"; action "echo local"; };\n',
        "/usr/local/etc/devd/sub.conf/keep": "",
    })
    os.remove(os.path.join(root, "usr/local/etc/devd/sub.conf/keep"))
    os.rmdir(os.path.join(root, "usr/local/etc/devd/sub.conf"))
    devd = D.load_devd(root)
    assert devd.files == ["/etc/devd.conf", "/etc/devd/a.conf", "/etc/devd/z.conf",
                          "/usr/local/etc/devd/a.conf"]
    order = [(b.file, b.priority) for b in devd.blocks["notify"]]
    assert order == [("/etc/devd/a.conf", 6), ("/usr/local/etc/devd/a.conf", 6),
                     ("/etc/devd.conf", 5), ("/etc/devd/z.conf", 5)]
    assert answer(devd, "!system=S") == (1, ["echo etc-a"])


def test_files_override_like_devd_f(tmp_path):
    root = make_root(tmp_path, 'notify 1 { action "echo stock"; };\n')
    mine = tmp_path / "mine.conf"
    mine.write_text('notify 1 { action "echo mine"; };\n')
    devd = D.load_devd(root, files=[str(mine)])
    assert devd.files == [str(mine)]
    assert answer(devd, "!a=b") == (1, ["echo mine"])


# ------------------------------------------------------------------ running actions

ARGV_SCRIPT = """\
#!{python}
import json, os, sys
with open(os.environ["ARGV_OUT"], "a") as f:
    f.write(json.dumps({{"argv": sys.argv[1:], "root": os.environ.get("VMGENC_ROOT"),
                        "cwd": os.getcwd()}}) + "\\n")
"""


@pytest.fixture
def argv_script(tmp_path):
    script = tmp_path / "record-argv"
    script.write_text(ARGV_SCRIPT.format(python=sys.executable))
    script.chmod(0o755)
    out = tmp_path / "argv.jsonl"

    def calls() -> list[dict]:
        if not out.exists():
            return []
        return [json.loads(line) for line in out.read_text().splitlines()]

    return str(script), {"ARGV_OUT": str(out)}, calls


def test_acpi_path_reaches_the_program_as_one_argument(tmp_path, argv_script):
    script, env, calls = argv_script
    devd = load(tmp_path, f'notify 100 {{ match "system" "ACPI"; action "{script} $type '
                          f'$timestamp $nosuch"; }};\n')
    res = devd.dispatch(VMGENC, timestamp=TS, env=env)
    assert res.commands == [f"{script} $'\\\\_SB_.VGEN' $'{TS}' $''"]
    assert res.statuses == [0]
    assert calls() == [{"argv": ["\\_SB_.VGEN", TS, ""], "root": devd.root, "cwd": devd.root}]


@pytest.mark.parametrize("value", [
    "x;touch${IFS}{pwn}", "$(touch {pwn})", "`touch {pwn}`", "x'$(touch {pwn})'",
    "x\\';touch {pwn};'", "x\"$(touch {pwn})\"",
])
def test_hostile_values_stay_one_literal_argument(tmp_path, argv_script, value):
    script, env, calls = argv_script
    pwn = tmp_path / "pwn"
    value = value.replace("{pwn}", str(pwn))
    devd = load(tmp_path, f'notify 100 {{ match "system" "ACPI"; action "{script} $type"; }};\n')
    res = devd.dispatch(f"!system=ACPI subsystem=X type={value.replace(' ', '${IFS}')}",
                        env=env)
    assert res.statuses == [0]
    assert calls()[0]["argv"] == [value.replace(" ", "${IFS}").replace('\\"', '"')]
    assert not pwn.exists()


def test_single_quoting_a_variable_breaks_devds_quoting(tmp_path):
    """§3.12: '$type' in an action lets the event value inject commands (seen on devd)."""
    pwn = tmp_path / "pwn"
    devd = load(tmp_path, "notify 100 { match \"system\" \"ACPI\"; action \"echo '$type'\"; };\n")
    res = devd.dispatch(f"!system=ACPI type=x;touch${{IFS}}{pwn}", stdout=-3)
    assert res.commands == [f"echo '$'x;touch${{IFS}}{pwn}''"]
    assert pwn.exists()


def test_hash_in_a_string_is_text_and_may_become_a_shell_comment(tmp_path):
    """§3.12: devd keeps ``#`` inside a string; sh then reads `` # …`` as a comment."""
    word, comment = tmp_path / "word", tmp_path / "comment"
    devd = load(tmp_path, f'notify 1 {{ action "echo a#b > {word}; echo c # d > {comment}"; }};\n')
    res = devd.dispatch("!a=b", stdout=-3)
    assert res.commands == [f"echo a#b > {word}; echo c # d > {comment}"]
    assert res.statuses == [0]
    assert word.read_text() == "a#b\n" and not comment.exists()


def test_each_action_is_its_own_sh_and_failures_do_not_stop_the_next(tmp_path):
    out = tmp_path / "out"
    conf = f"""\
    notify 1 {{
        action "X=set; exit 3";
        action "echo ${{X:-unset}} $$$$ > {out}";
        action "kill -9 $$$$";
    }};
    """
    devd = load(tmp_path, conf)
    res = devd.dispatch("!a=b")
    assert res.statuses == [3, 0, -9]
    assert out.read_text().split()[0] == "unset"


def test_actions_are_synchronous_and_get_the_callers_environment(tmp_path, monkeypatch):
    out = tmp_path / "env"
    monkeypatch.setenv("FROM_CALLER", "caller-value")
    devd = load(tmp_path, f'notify 1 {{ action "sleep 0.2; echo $${{FROM_CALLER}} '
                          f'$${{VMGENC_ROOT}} > {out}"; }};\n')
    devd.dispatch("!a=b")
    assert out.read_text().split() == ["caller-value", devd.root]


def test_run_false_runs_nothing(tmp_path):
    out = tmp_path / "out"
    devd = load(tmp_path, f'notify 1 {{ action "touch {out}"; }};\n')
    res = devd.dispatch("!a=b", run=False)
    assert res.statuses is None and not out.exists()


# ------------------------------------------------------------------ the shell

@pytest.fixture
def fake_shells(tmp_path):
    """(a shell that decodes $'...': a wrapper around the detected one, a fake one
    that runs the probe but does not decode $'...', a path that is no executable)."""
    real = D.detect_shell()
    good = tmp_path / "good-sh"
    good.write_text(f'#!/bin/sh\nexec "{real}" "$@"\n')
    bad = tmp_path / "bad-sh"  # prints what a shell without $'...' would: $a\b'c
    bad.write_text("#!/bin/sh\nprintf '3|$a\\\\b|$'\n")
    for path in (good, bad):
        path.chmod(0o755)
    plain = tmp_path / "not-executable"
    plain.write_text(good.read_text())
    return str(good), str(bad), str(plain)


def test_probe_tells_the_fake_shells_apart(fake_shells):
    good, bad, plain = fake_shells
    assert D.shell_decodes_dollar_quotes(good)
    assert not D.shell_decodes_dollar_quotes(bad)
    assert not D.shell_decodes_dollar_quotes(plain)


def test_detect_shell_skips_a_candidate_that_does_not_decode(fake_shells, monkeypatch):
    good, bad, plain = fake_shells
    monkeypatch.delenv(D.SHELL_ENV, raising=False)
    monkeypatch.setattr(D, "_shell_candidates", lambda: [bad, plain, good, bad])
    D._detect_shell.cache_clear()
    try:
        assert D.detect_shell() == good
    finally:
        D._detect_shell.cache_clear()
    assert D.pick_shell([plain, bad, good]) == good


def test_detect_shell_fails_when_no_candidate_decodes(fake_shells, monkeypatch):
    _good, bad, plain = fake_shells
    monkeypatch.delenv(D.SHELL_ENV, raising=False)
    monkeypatch.setattr(D, "_shell_candidates", lambda: [bad, plain])
    D._detect_shell.cache_clear()
    try:
        with pytest.raises(D.DevdShellError) as e:
            D.detect_shell()
    finally:
        D._detect_shell.cache_clear()
    # the executable candidate was tried; the non-executable one was not run
    assert str(e.value) == ("no shell here decodes $'...' as FreeBSD's sh does "
                            f"(tried {bad}): install bash")
    with pytest.raises(D.DevdShellError, match=r"tried nothing executable"):
        D.pick_shell([plain])


@pytest.mark.skipif(not shutil.which("dash"), reason="dash not installed")
def test_dash_is_not_accepted(monkeypatch):
    dash = shutil.which("dash")
    assert not D.shell_decodes_dollar_quotes(dash)
    monkeypatch.setenv(D.SHELL_ENV, dash)
    with pytest.raises(D.DevdShellError, match="does not decode"):
        D.detect_shell()


@pytest.mark.skipif(not shutil.which("bash"), reason="bash not installed")
def test_shell_override(monkeypatch):
    monkeypatch.setenv(D.SHELL_ENV, shutil.which("bash"))
    assert D.detect_shell() == shutil.which("bash")


def test_missing_shell_is_not_decoding(tmp_path):
    assert not D.shell_decodes_dollar_quotes(str(tmp_path / "no-such-shell"))


# ------------------------------------------------------------------ vmgenctl sim devd

def run_cli(root: str, *args: str, input: str | None = None):
    return CliRunner().invoke(devd_command, list(args), obj=Ctx(root=root), input=input)


@pytest.fixture
def stock_root(tmp_path):
    root = str(tmp_path / "vm")
    D.install_configs(root)
    return root


def test_cli_prints_block_and_command(stock_root):
    res = run_cli(stock_root, "--timestamp", TS, VMGENC, "!system=ACPI subsystem=Lid notify=0x00",
                  "--", "-ukbd0 at bus=0 on uhub0", "+x")
    assert res.exit_code == 0, res.output
    blocks = res.stdout.split("\n\n")
    assert blocks[0].splitlines() == [
        f"event: {VMGENC}",
        "block: /usr/local/etc/devd/vmgenc.conf line 38 (notify 100)",
        f"command: {D.shipped.bindir()}/vmgenc-devd $'\\\\_SB_.VGEN' $'{TS}'"]
    assert "block: /etc/devd.conf" in blocks[1] and "echo lid $'0x00'" in blocks[1]
    assert "(detach 100)" in blocks[2]
    assert blocks[3].splitlines()[1].startswith("ignored: devd ignores")


def test_cli_json_and_stdin(stock_root):
    res = run_cli(stock_root, "--json", "--timestamp", TS, "-",
                  input=f"{VMGENC}\n\n!system=IFNET subsystem=lo0 type=LINK_UP\n")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc == [
        {"event": VMGENC,
         "match": {"file": "/usr/local/etc/devd/vmgenc.conf", "line": 38, "priority": 100},
         "commands": [f"{D.shipped.bindir()}/vmgenc-devd $'\\\\_SB_.VGEN' $'{TS}'"]},
        {"event": "!system=IFNET subsystem=lo0 type=LINK_UP", "match": None, "commands": []},
    ]


def test_cli_run(stock_root, tmp_path):
    out = tmp_path / "ran"
    conf = tmp_path / "x.conf"
    conf.write_text(f'notify 1 {{ action "echo $type > {out}"; }};\n')
    res = run_cli(stock_root, "-f", str(conf), "--run", "--json", r"!type=\_SB_.VGEN")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc[0]["exit_statuses"] == [0]
    assert doc[0]["match"] == {"file": str(conf), "line": 1, "priority": 1}
    assert out.read_text() == "\\_SB_.VGEN\n"


def test_cli_config_error_exits_1_with_devds_message(stock_root):
    with open(os.path.join(stock_root, "usr/local/etc/devd/broken.conf"), "w") as f:
        f.write('notify 1 {\n\taction "x"\n};\n')
    res = run_cli(stock_root, VMGENC)
    assert res.exit_code == 1
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert re.fullmatch(r"devd\[\d+\]: line 3: \}: syntax error\.", lines[0])
    assert lines[1] == "devd: Cannot parse /usr/local/etc/devd/broken.conf at line 3"


def test_cli_model_limit_exits_1_saying_it_is_not_a_devd_error(stock_root):
    with open(os.path.join(stock_root, "usr/local/etc/devd/rune.conf"), "w") as f:
        f.write('notify 1 {\n\tmatch "a" "[[:rune:]]";\n\taction "x";\n};\n')
    res = run_cli(stock_root, VMGENC)
    assert res.exit_code == 1
    assert res.stdout == ""
    assert res.stderr.splitlines() == [
        "vmgenctl: model limit: /usr/local/etc/devd/rune.conf:2: the devd model does not "
        "reproduce character class [:rune:] in pattern '[[:rune:]]' (a limit of this devd "
        "model, not a devd error: real devd may accept this configuration)"]
    assert "Cannot parse" not in res.stderr and "syntax error" not in res.stderr


def test_cli_without_records_checks_the_configuration(stock_root):
    res = run_cli(stock_root)
    assert res.exit_code == 0
    assert res.stdout.startswith("parsed 2 file(s), ")


def test_cli_through_the_app(stock_root):
    from vmgenc_tools.cli import app

    if "sim" not in app.commands:
        pytest.skip("the sim group (cli/sim.py) is not there")
    res = CliRunner().invoke(app, ["--root", stock_root, "sim", "devd", "--json", VMGENC])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[0]["match"]["file"] == "/usr/local/etc/devd/vmgenc.conf"
