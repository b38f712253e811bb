"""Guest physical memory, sparse, in 4 KiB pages (unwritten bytes read as zero).

The hypervisor writes the 16 GUID bytes at the address its ``ADDR`` object
reports; the driver maps that address (``AcpiOsMapMemory``) and reads it.
"""

from __future__ import annotations

PAGE_SIZE = 4096


class GuestMemory:
    """Sparse guest-physical memory that persists as ``{page number: hex}``."""

    def __init__(self, pages: dict[int, bytearray] | None = None) -> None:
        self.pages: dict[int, bytearray] = pages or {}

    def read(self, addr: int, size: int) -> bytes:
        out = bytearray()
        while size > 0:
            page, off = divmod(addr, PAGE_SIZE)
            n = min(size, PAGE_SIZE - off)
            data = self.pages.get(page)
            out += data[off:off + n] if data is not None else bytes(n)
            addr, size = addr + n, size - n
        return bytes(out)

    def write(self, addr: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            page, off = divmod(addr + pos, PAGE_SIZE)
            n = min(len(data) - pos, PAGE_SIZE - off)
            buf = self.pages.setdefault(page, bytearray(PAGE_SIZE))
            buf[off:off + n] = data[pos:pos + n]
            pos += n

    def to_json(self) -> dict[str, str]:
        return {f"{p:#x}": bytes(b).hex() for p, b in sorted(self.pages.items())}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> GuestMemory:
        return cls({int(p, 16): bytearray.fromhex(h) for p, h in data.items()})


class Mapping:
    """What ``AcpiOsMapMemory(physaddr, len)`` returns: a live window, read on every access."""

    def __init__(self, memory: GuestMemory, physaddr: int, length: int) -> None:
        self.memory, self.physaddr, self.length = memory, physaddr, length

    def read(self) -> bytes:
        return self.memory.read(self.physaddr, self.length)


def AcpiOsMapMemory(memory: GuestMemory, physaddr: int, length: int) -> Mapping:  # noqa: N802
    """Map ``length`` bytes of guest memory at ``physaddr`` (the result is never NULL here)."""
    return Mapping(memory, physaddr, length)
