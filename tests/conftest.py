"""Shared fixtures.  Everything runs under a temp-dir root; nothing touches /etc, /var, /boot."""

from __future__ import annotations

import os
import struct
import time

import pytest

from vmgenc_tools import simstate
from vmgenc_tools.generation import Generation

QEMU_GUID = "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87"
GUID_DESCR = "latest cached VM generation counter (128-bit UUID)"


def write_kernel(root: str, guids: list[str] | None = None, *, vm_guest: str = "kvm",
                 smbios_uuid: str | None = "8a5d2c1e-4b7f-4c3a-9e21-7d6b5a4f3e2d",
                 macs: dict[str, str] | None = None) -> None:
    """A minimal kernel.tab (the format of vmgenc_tools.simstate), without the full model.

    Unit tests use it; end-to-end tests use the reference model's SimulatedVM.
    """
    guids = [QEMU_GUID] if guids is None else guids
    with simstate.transaction(root) as st:
        st.nodes.clear()
        for unit, g in enumerate(guids):
            base = f"dev.vmgenc.{unit}"
            st.set(base, "node")
            st.set(f"{base}.guid", "opaque", Generation.parse(g).raw, descr=GUID_DESCR)
            st.set(f"{base}.%driver", "string", simstate.encode_string("vmgenc"))
        st.set("kern.vm_guest", "string", simstate.encode_string(vm_guest))
        st.set("kern.hostuuid", "string", simstate.encode_string(
            "00000000-0000-0000-0000-000000000000"), access="rw")
        st.set("kern.hostid", "ulong", simstate.encode_int("ulong", 0), access="rw")
        st.set("kern.boottime", "opaque", struct.pack("=qq", int(time.time()) - 60, 0),
               fmt="S,timeval")
        st.kenv.clear()
        if smbios_uuid:
            st.kenv["smbios.system.uuid"] = smbios_uuid
        st.ifaces.clear()
        st.ifaces.update(macs or {"vtnet0": "52:54:00:12:34:56"})


def set_guid(root: str, text: str, unit: int = 0) -> None:
    """Change a unit's cached GUID as the driver would after a run-time change."""
    with simstate.transaction(root) as st:
        st.nodes[f"dev.vmgenc.{unit}.guid"].value = Generation.parse(text).raw


@pytest.fixture
def kernel_root(tmp_path):
    """A sandbox root with a minimal simulated kernel (one QEMU-like vmgenc unit)."""
    root = str(tmp_path / "root")
    os.makedirs(root)
    write_kernel(root)
    return root


@pytest.fixture
def trusted_rc_conf():
    """Write rc.conf so hooks owned by the uid running the tests are trusted."""

    def _write(root: str, **knobs: str) -> str:
        os.makedirs(os.path.join(root, "etc"), exist_ok=True)
        lines = [f'vmgenc_hooks_owner_uid="{os.getuid()}"']
        lines += [f'{k}="{v}"' for k, v in knobs.items()]
        path = os.path.join(root, "etc", "rc.conf")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    return _write
