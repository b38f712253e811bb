"""The shipped devd/vmgenc.conf, through the devd model, next to a stock-like devd.conf."""

from __future__ import annotations

import json
import os
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmgenc_tools import devctl, shipped
from vmgenc_tools.reference import devd as D

TS = "1700000000.000042"
SNIPPET_FILE = "/usr/local/etc/devd/vmgenc.conf"
ACTION = "/usr/local/bin/vmgenc-devd $type $timestamp"


def snippet_command(acpi_type: str, bindir: str | None = None) -> str:
    return f"{bindir or shipped.bindir()}/vmgenc-devd {D.shell_quote(acpi_type)} $'{TS}'"


@pytest.fixture(scope="module")
def stock(tmp_path_factory) -> D.Devd:
    root = str(tmp_path_factory.mktemp("vm"))
    D.install_configs(root)
    return D.load_devd(root)


def test_snippet_parses_on_its_own(tmp_path):
    devd = D.load_devd(str(tmp_path), files=[shipped.find("devd/vmgenc.conf")])
    assert devd.warnings == []
    assert all(not devd.blocks[k] for k in ("attach", "detach", "nomatch"))
    blocks = devd.blocks["notify"]
    assert [(b.priority, b.actions) for b in blocks] == [(100, [ACTION]), (100, [ACTION])]
    assert [[(t.var, t.source, t.inverted) for t in b.tests] for b in blocks] == [
        [("system", "ACPI", False), ("subsystem", "VMGenerationCounter", False)],
        [("system", "VMGENC", False), ("type", "GENERATION_CHANGED", False)],
    ]


def test_snippet_leaves_variables_bare_for_devd_to_quote():
    with open(shipped.find("devd/vmgenc.conf"), encoding="utf-8") as f:
        actions = [line.strip() for line in f if line.strip().startswith("action")]
    assert actions == [f'action "{ACTION}";'] * 2
    assert all("'$" not in a and "$'" not in a and "${" not in a for a in actions)


def test_install_configs_installs_the_snippet_for_this_installation(tmp_path):
    root = str(tmp_path / "vm")
    written = D.install_configs(root)
    assert written == [os.path.join(root, "etc/devd.conf"), os.path.join(root, SNIPPET_FILE[1:])]
    with open(written[1], encoding="utf-8") as f:
        assert f.read() == shipped.install_text("devd/vmgenc.conf")
    for d in ("etc/devd", "var/log", "var/run"):
        assert os.path.isdir(os.path.join(root, d))


def test_stock_config_is_stock_like(stock):
    assert stock.files == ["/etc/devd.conf", SNIPPET_FILE]
    assert stock.directories == ["/etc/devd", "/usr/local/etc/devd"]
    assert stock.pidfile == "/var/run/devd.pid"
    assert stock.warnings == []
    acpi = [b for b in stock.blocks["notify"] if any(
        t.var == "system" and t.source == "ACPI" for t in b.tests)]
    subsystems = {t.source for b in acpi for t in b.tests if t.var == "subsystem"}
    assert {"ACAD", "Lid", "Button", "Thermal", "CMBAT", "Suspend", "Resume",
            "VMGenerationCounter"} == subsystems
    assert stock.blocks["attach"] and stock.blocks["nomatch"] and stock.blocks["detach"]


@pytest.mark.parametrize("line, acpi_type", [
    (devctl.VMGENC_LINE, "\\_SB_.VGEN"),
    ("!system=ACPI subsystem=VMGenerationCounter type=\\_SB_.PCI0.ISA_.VGID notify=0x00",
     "\\_SB_.PCI0.ISA_.VGID"),
    ("!system=ACPI subsystem=VMGenerationCounter type=\\_SB_.GENC notify=0x00", "\\_SB_.GENC"),
    ("!system=acpi subsystem=vmgenerationcounter type=\\_SB_.VGEN notify=0x00", "\\_SB_.VGEN"),
    ("!system=VMGENC subsystem=vmgenc0 type=GENERATION_CHANGED", "GENERATION_CHANGED"),
])
def test_vmgenc_records_reach_the_snippet(stock, line, acpi_type):
    res = stock.dispatch(line, run=False, timestamp=TS)
    assert res.match is not None and res.match.file == SNIPPET_FILE
    assert res.match.priority == 100
    assert res.commands == [snippet_command(acpi_type)]


OTHER_RECORDS = {
    "!system=ACPI subsystem=CMBAT type=\\_SB_.BAT0 notify=0x80": "echo battery",
    "!system=ACPI subsystem=Lid type=\\_SB_.LID0 notify=0x00": "echo lid",
    "!system=ACPI subsystem=ACAD type=\\_SB_.AC notify=0x01": "echo power_profile",
    "!system=ACPI subsystem=ACAD type=\\_SB_.AC notify=0x00": "echo power_profile",
    "!system=ACPI subsystem=Button type=\\_SB_.PWRB notify=0x00": "echo button",
    "!system=ACPI subsystem=Thermal type=\\_TZ_.TZ00 notify=0xcc": "echo thermal",
    "!system=ACPI subsystem=Suspend notify=0x03": "echo rc.suspend",
    "!system=ACPI subsystem=Resume notify=0x03": "echo rc.resume",
    "!system=ACPI subsystem=VMGenerationCounterX type=\\_SB_.VGEN notify=0x00": None,
    "!system=ACPI subsystem=PROCESSOR type=\\_PR_.CPU0 notify=0x81": None,
    ("+ukbd0 at bus=0 hubaddr=1 port=1 devaddr=2 interface=0 ugen=ugen0.2 vendor=0x046d "
     "product=0xc31c devclass=0x00 devsubclass=0x00 devproto=0x00 sernum=\"\" release=0x6400 "
     "mode=host intclass=0x03 intsubclass=0x01 intprotocol=0x01 on uhub0"): "echo syscons",
    "+umass0 at bus=0 hubaddr=1 port=2 devaddr=3 interface=0 ugen=ugen0.3 on uhub0": None,
    ("!system=USB subsystem=DEVICE type=ATTACH ugen=ugen0.2 cdev=ugen0.2 vendor=0x046d "
     "product=0xc31c devclass=0x00 port=1 parent=uhub0"): None,
    "-ukbd0 at bus=0 hubaddr=1 port=1 on uhub0": "echo syscons",
    "? at bus=0 vendor=0x1234 product=0x5678 on uhub0": "echo devmatch",
    "!system=IFNET subsystem=vtnet0 type=ATTACH": "echo pccard_ether",
    "+vmgenc0 at handle=\\_SB_.VGEN _HID=QEMUVGID _UID=0 _CID=VM_GEN_COUNTER on acpi0": None,
}


@pytest.mark.parametrize("line", sorted(OTHER_RECORDS))
def test_other_records_do_not_reach_the_snippet(stock, line):
    res = stock.dispatch(line, run=False, timestamp=TS)
    assert not devctl.is_vmgenc_change(line)
    stock_rule = OTHER_RECORDS[line]
    if stock_rule is None:
        assert res.match is None
    else:
        assert res.match is not None and res.match.file == "/etc/devd.conf"
        assert res.commands[0].startswith(stock_rule)


SYSTEMS = st.sampled_from(["ACPI", "acpi", "AcPi", "VMGENC", "vmgenc", "IFNET", "ACPI ", "", "X"])
SUBSYSTEMS = st.sampled_from(["VMGenerationCounter", "VMGENERATIONCOUNTER", "ACAD", "CMBAT",
                              "VMGenerationCounte", "Lid", ""])
TYPES = st.sampled_from(["GENERATION_CHANGED", "generation_changed", "\\_SB_.VGEN", "x", ""])


@given(SYSTEMS, SUBSYSTEMS, TYPES, st.sampled_from(["", " notify=0x00", " notify=0x80"]))
def test_snippet_runs_exactly_for_what_the_predicate_accepts(stock, system, subsystem,
                                                             type_, extra):
    line = f"!system={system} subsystem={subsystem} type={type_}{extra}"
    res = stock.dispatch(line, run=False, timestamp=TS)
    reached = res.match is not None and res.match.file == SNIPPET_FILE
    assert reached == devctl.is_vmgenc_change(line)


def test_snippet_action_runs_through_the_shell_with_one_argument(tmp_path):
    """The chain's last step: the shipped action, run by sh, gets the path intact."""
    root = str(tmp_path / "vm")
    D.install_configs(root)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    stub = bindir / "vmgenc-devd"
    out = tmp_path / "calls.jsonl"
    stub.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    f"with open({str(out)!r}, 'a') as f:\n"
                    "    f.write(json.dumps([sys.argv[1:], os.environ['VMGENC_ROOT']]) + '\\n')\n")
    stub.chmod(0o755)
    snippet = os.path.join(root, SNIPPET_FILE[1:])
    with open(snippet, "w", encoding="utf-8") as f:
        f.write(shipped.install_text("devd/vmgenc.conf", str(bindir)))
    devd = D.load_devd(root)

    res = devd.dispatch(devctl.VMGENC_LINE + "\n", timestamp=TS)
    assert res.commands == [snippet_command("\\_SB_.VGEN", str(bindir))]
    assert res.statuses == [0]
    hostile = f"x;touch${{IFS}}{tmp_path}/pwn"
    res = devd.dispatch("!system=VMGENC type=GENERATION_CHANGED", timestamp=TS)
    assert res.statuses == [0]
    res = devd.dispatch(f"!system=ACPI subsystem=VMGenerationCounter type={hostile}",
                        timestamp=TS)
    assert res.statuses == [0]
    res = devd.dispatch("!system=ACPI subsystem=CMBAT type=\\_SB_.BAT0 notify=0x80")
    assert res.statuses == [0]

    calls = [json.loads(line) for line in out.read_text().splitlines()]
    assert calls == [[["\\_SB_.VGEN", TS], devd.root],
                     [["GENERATION_CHANGED", TS], devd.root],
                     [[hostile, TS], devd.root]]
    assert not (tmp_path / "pwn").exists()
    with open(os.path.join(root, "var/log/devd-stock.log"), encoding="utf-8") as f:
        assert f.read() == "battery \\_SB_.BAT0 0x80\n"


def test_why_the_snippet_matches_the_subsystem(tmp_path):
    """§3.12: a site rule matching only system=ACPI at priority 100 in /etc/devd (read
    before /usr/local/etc/devd) takes the vmgenc event; one below 100 does not."""
    root = str(tmp_path / "vm")
    D.install_configs(root)
    site = os.path.join(root, "etc/devd/site.conf")
    with open(site, "w", encoding="utf-8") as f:
        f.write('notify 100 { match "system" "ACPI"; action "echo site"; };\n')
    res = D.load_devd(root).dispatch(devctl.VMGENC_LINE, run=False)
    assert res.match.file == "/etc/devd/site.conf"
    with open(site, "w", encoding="utf-8") as f:
        f.write('notify 99 { match "system" "ACPI"; action "echo site"; };\n')
    res = D.load_devd(root).dispatch(devctl.VMGENC_LINE, run=False)
    assert res.match.file == SNIPPET_FILE


def test_a_project_rule_on_system_acpi_alone_shadows_the_stock_ac_adapter_rule(tmp_path):
    """§3.12: match subsystem too, or the stock AC-adapter rule (priority 10) never runs."""
    root = str(tmp_path / "vm")
    D.install_configs(root)
    ac = "!system=ACPI subsystem=ACAD type=\\_SB_.AC notify=0x01"
    assert D.load_devd(root).dispatch(ac, run=False).commands[0].startswith(
        "echo power_profile")
    greedy = os.path.join(root, "usr/local/etc/devd/greedy.conf")
    with open(greedy, "w", encoding="utf-8") as f:
        f.write('notify 100 { match "system" "ACPI"; action "echo greedy"; };\n')
    res = D.load_devd(root).dispatch(ac, run=False)
    assert res.match.file == "/usr/local/etc/devd/greedy.conf"
    assert res.commands == ["echo greedy"]
    # the shipped snippet, which also matches the subsystem, leaves it alone
    os.remove(greedy)
    assert D.load_devd(root).dispatch(ac, run=False).match.file == "/etc/devd.conf"


def test_a_project_nomatch_100_never_runs_behind_devmatch(tmp_path):
    """§3.12: stock devmatch's match-less ``nomatch 100`` is parsed first and takes
    every nomatch record, so a project ``nomatch 100`` never runs (101 would)."""
    root = str(tmp_path / "vm")
    D.install_configs(root)
    mine = os.path.join(root, "usr/local/etc/devd/mine.conf")
    record = "? at bus=0 vendor=0x1234 product=0x5678 on uhub0"
    with open(mine, "w", encoding="utf-8") as f:
        f.write('nomatch 100 { match "vendor" "0x1234"; action "echo mine"; };\n')
    res = D.load_devd(root).dispatch(record, run=False)
    assert res.match.file == "/etc/devd.conf" and res.commands[0].startswith("echo devmatch")
    with open(mine, "w", encoding="utf-8") as f:
        f.write('nomatch 101 { match "vendor" "0x1234"; action "echo mine"; };\n')
    res = D.load_devd(root).dispatch(record, run=False)
    assert res.match.file == "/usr/local/etc/devd/mine.conf" and res.commands == ["echo mine"]
