"""``vmgenctl sim …``: drive the simulated VM (the reference model of vmgenc(4)).

Only this module (and ``sim_devd``) imports ``vmgenc_tools.reference``, and only
inside the commands, so the rest of the CLI never loads the model.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

import click

from .. import exitcodes
from .common import Ctx, Fail, finish, guid_option

if TYPE_CHECKING:
    from ..reference.vm import ChangeResult, SimulatedVM

HYPERVISORS = ("qemu", "bhyve", "xen", "hyperv", "firecracker")


def _vm(ctx: Ctx) -> SimulatedVM:
    from ..reference.vm import SimulatedVM

    return SimulatedVM(ctx.root)


def _call(fn, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 - thin wrapper
    """Run a model operation; its expected errors become one-line CLI failures."""
    from ..reference.vm import SimError

    try:
        return fn(*args, **kwargs)
    except SimError as e:
        raise Fail(str(e), e.code) from None


def _deliver(vm: SimulatedVM) -> None:
    """Hand the queued devctl records to the devd model, as devd reads /dev/devctl."""
    for record, answer in _call(vm.deliver):
        click.echo(f"devd <- {record.rstrip()}")
        where = f"{answer.match.file}:{answer.match.line}: " if answer.match else ""
        for cmd, status in zip(answer.commands, answer.statuses or []):
            click.echo(f"devd: {where}Executing '{cmd}' -> exit {status}")


def _print_change(res: ChangeResult) -> None:
    for unit, (old, new) in enumerate(zip(res.old, res.new)):
        arrow = "->" if old != new else "=="
        click.echo(f"vmgenc{unit}: {old.text} {arrow} {new.text}  ({new.hex})")
    for line in res.console:
        click.echo(f"console: {line}")
    for rec in res.records:
        click.echo(f"devctl: {rec.rstrip()}")


NOT_ENABLED = "vmgenc_enable is NO: rc.d/vmgenc does not run; no boot check"


def _boot_check(root: str) -> int:
    """What rc.d/vmgenc does at boot (it runs before devd: ``# BEFORE: devd``).

    Not at all when ``vmgenc_enable`` is off, as rc.subr's ``run_rc_command`` skips a
    disabled service at boot.  A knob that cannot be read is the check's to report.
    """
    from ..fastcheck import load_config, run_check

    try:
        enabled = load_config(root).enable
    except Exception:  # noqa: BLE001 - the check reports it with the contract's code
        enabled = True
    if not enabled:
        click.echo(NOT_ENABLED)
        return exitcodes.OK
    return run_check(root, ["--source", "boot"])


@click.group("sim")
@click.pass_context
def sim(ctx: click.Context) -> None:
    """A simulated FreeBSD VM with vmgenc(4), under --root."""
    obj: Ctx = ctx.obj
    if ctx.invoked_subcommand == "init":
        return  # it creates its root
    from ..fastcheck import missing_root
    from ..simstate import is_simulated

    if not os.path.isdir(obj.root):
        # A mistyped --root is a usage error, as for status/check/history (vmgenctl(8)).
        raise Fail(missing_root(obj.root), exitcodes.USAGE)
    if ctx.invoked_subcommand != "devd" and not (_vm(obj).exists() or is_simulated(obj.root)):
        raise Fail(f"no simulated VM under {obj.root}: run "
                   f"'vmgenctl --root {obj.root} sim init' first", exitcodes.STATE)


@sim.command("init")
@click.option("--hypervisor", type=click.Choice(HYPERVISORS), default="qemu", show_default=True)
@click.option("--guid", help="The first GUID (QEMU: a fixed guid= instead of auto).")
@click.option("--smbios-uuid", help="SMBIOS system UUID (default: random).")
@click.option("--units", type=click.IntRange(1, 8), default=1, show_default=True, hidden=True,
              help="vmgenc devices (more than one is a test aid; no hypervisor offers it).")
@click.pass_obj
def init_cmd(ctx: Ctx, hypervisor: str, guid: str | None, smbios_uuid: str | None,
             units: int) -> None:
    """Create the VM: sandbox tree, host keys, configs, first boot (driver attached)."""
    _check_guid(guid)
    vm = _vm(ctx)
    _call(vm.init, hypervisor, guid=guid, smbios_uuid=smbios_uuid, units=units)
    info = vm.info()
    click.echo(f"simulated VM under {info['root']}: {info['description']}")
    for path, text, raw in zip(info["device_paths"], info["cached_guids"], info["cached_raw"]):
        click.echo(f"  {path}: {text}  ({raw})")
    click.echo(f"  SMBIOS UUID {info['smbios_uuid']}")
    _deliver(vm)


def _power_cycle(ctx: Ctx, op: str) -> int:
    """``vm.boot`` or ``vm.reboot``, then the boot check, then devd takes the queued records."""
    vm = _vm(ctx)
    _print_change(_call(getattr(vm, op)))
    rc = _boot_check(ctx.root)
    _deliver(vm)
    return rc


@sim.command("boot")
@click.pass_obj
def boot_cmd(ctx: Ctx) -> None:
    """Power cycle with the hypervisor's start semantics, then the boot check."""
    finish(_power_cycle(ctx, "boot"))


@sim.command("reboot", hidden=True)
@click.pass_obj
def reboot_cmd(ctx: Ctx) -> None:
    """A guest reboot with the hypervisor's reboot semantics, then the boot check."""
    finish(_power_cycle(ctx, "reboot"))


def _check_guid(guid: str | None) -> None:
    """``--guid`` must parse (an empty one too), and the message names the option."""
    if guid is not None:
        guid_option("--guid", guid)


def _runtime(ctx: Ctx, op: str, guid: str | None) -> None:
    _check_guid(guid)
    vm = _vm(ctx)
    res = _call(getattr(vm, op), guid)
    _print_change(res)
    _deliver(vm)


@sim.command("clone")
@click.option("--guid", hidden=True, help="The clone's GUID (default: random).")
@click.pass_obj
def clone_cmd(ctx: Ctx, guid: str | None) -> None:
    """Run-time clone: new GUID, Notify 0x80, devctl line, devd action."""
    _runtime(ctx, "clone", guid)


@sim.command("restore")
@click.option("--guid", hidden=True,
              help="The GUID the restoring hypervisor writes (default: random).")
@click.pass_obj
def restore_cmd(ctx: Ctx, guid: str | None) -> None:
    """Snapshot restore into the running VM: new GUID, Notify 0x80, devd action."""
    _runtime(ctx, "restore", guid)


@sim.command("cold-clone")
@click.option("--guid", hidden=True, help="The copy's GUID (default: random).")
@click.option("--smbios-uuid", hidden=True, help="The copy's SMBIOS UUID (default: random).")
@click.pass_obj
def cold_clone_cmd(ctx: Ctx, guid: str | None, smbios_uuid: str | None) -> None:
    """Offline copy: new GUID, SMBIOS UUID and MACs; no event; the VM stays off."""
    _check_guid(guid)
    vm = _vm(ctx)
    res = _call(vm.cold_clone, guid, smbios_uuid)
    info = vm.info()
    for unit, new in enumerate(res.live):
        old = res.old[unit].text if unit < len(res.old) else "-"
        click.echo(f"vmgenc{unit}: {old} -> {new.text} at next boot")
    click.echo(f"SMBIOS UUID {info['smbios_uuid']}; MACs "
               + ", ".join(f"{k} {v}" for k, v in info["macs"].items()))
    click.echo("powered off, no event sent: run 'vmgenctl sim boot'")


def _int_value(_ctx: click.Context, _param: click.Parameter, value: str) -> int:
    try:
        return int(value, 0)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number (e.g. 0x80)") from None


@sim.command("notify")
@click.option("--value", default="0x80", show_default=True, callback=_int_value,
              help="Notify value (0x80 with no GUID change is spurious).")
@click.pass_obj
def notify_cmd(ctx: Ctx, value: int) -> None:
    """Notify the vmgenc device(s) without changing the GUID."""
    vm = _vm(ctx)
    res = _call(vm.notify, value)
    _print_change(res)
    if not res.records and not res.console:
        click.echo(f"notify {value:#04x}: no change, no event")
    _deliver(vm)


@sim.command("sysctl", context_settings={"ignore_unknown_options": False})
@click.option("-x", "xflag", is_flag=True, help="Hex dump every byte.")
@click.option("-o", "oflag", is_flag=True, hidden=True,
              help="Dump opaque values (at most 16 bytes).")
@click.option("-b", "bflag", is_flag=True, help="Raw bytes, no name, no newline.")
@click.option("-n", "nflag", is_flag=True, hidden=True, help="Value only.")
@click.option("-e", "eflag", is_flag=True, hidden=True, help="name=value.")
@click.option("-d", "dflag", is_flag=True, hidden=True, help="Descriptions.")
@click.option("-t", "tflag", is_flag=True, hidden=True, help="Types.")
@click.option("-q", "qflag", is_flag=True, hidden=True, help="No unknown-oid warnings.")
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def sysctl_cmd(ctx: Ctx, names: tuple[str, ...], **flags: bool) -> None:
    """Print OIDs the way sysctl(8) does (exit 1 for an unknown oid)."""
    from ..reference.sysctl import Sysctl8
    from ..simstate import SimStateError

    letters = "".join(name[0] for name, on in flags.items() if on)
    try:
        res = Sysctl8(ctx.root, letters).run(list(names))
    except SimStateError as e:
        raise Fail(str(e), exitcodes.STATE) from None
    sys.stdout.flush()
    sys.stdout.buffer.write(res.stdout)
    sys.stdout.buffer.flush()
    sys.stderr.write(res.stderr)
    finish(res.status)


@sim.command("dmesg", hidden=True)
@click.pass_obj
def dmesg_cmd(ctx: Ctx) -> None:
    """Console messages since the last boot."""
    click.echo(_call(_vm(ctx).dmesg), nl=False)


@sim.command("info", hidden=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def info_cmd(ctx: Ctx, as_json: bool) -> None:
    """The simulated VM: hypervisor, power, GUIDs (cached and live), SMBIOS, MACs."""
    info = _call(_vm(ctx).info)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        click.echo(f"{key}: {value}")


COMMANDS = [sim]
