"""The VM Generation ID value: 16 raw bytes as ``dev.vmgenc.N.guid`` returns them.

The raw bytes are canonical.  The text form is the hypervisor's: QEMU writes
the GUID into guest memory with its first three fields byte-swapped
(``qemu_uuid_bswap``), so ``uuid.UUID(bytes_le=raw)`` gives back the string
passed as ``guid=`` or shown by ``query-vm-generation-id``.
"""

from __future__ import annotations

import re

GUID_BYTES = 16
_TEXT_RE = re.compile(
    r"^\{?([0-9a-fA-F]{8})-([0-9a-fA-F]{4})-([0-9a-fA-F]{4})-"
    r"([0-9a-fA-F]{4})-([0-9a-fA-F]{12})\}?\Z"
)
_HEX_RE = re.compile(r"^(?:0x)?([0-9a-fA-F]{32})\Z")


class GenerationError(ValueError):
    """A value that is not a VM Generation ID."""


def _swap_first_fields(b: bytes) -> bytes:
    """Swap time_low (4), time_mid (2), time_hi (2): big-endian text order ⇄ guest order."""
    return b[3::-1] + b[5:3:-1] + b[7:5:-1] + b[8:]


class Generation:
    """An immutable VM Generation ID, compared and hashed on its raw bytes."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raise GenerationError(f"a generation ID is 16 bytes, not {type(raw).__name__}")
        raw = bytes(raw)
        if len(raw) != GUID_BYTES:
            raise GenerationError(
                f"a generation ID is exactly {GUID_BYTES} bytes, got {len(raw)}"
            )
        object.__setattr__(self, "_raw", raw)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Generation is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Generation is immutable")

    def __reduce__(self) -> tuple[type[Generation], tuple[bytes]]:
        """Copy and pickle through the constructor (``__setattr__`` refuses)."""
        return (Generation, (self._raw,))

    @classmethod
    def from_text(cls, text: str) -> Generation:
        """Parse the hypervisor's text form (``324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87``)."""
        t = text.strip() if isinstance(text, str) else ""
        m = _TEXT_RE.match(t)
        if not m or t.startswith("{") != t.endswith("}"):  # braces only as a pair
            raise GenerationError(
                f"not a GUID: {text!r} (expected 8-4-4-4-12 hex digits, "
                "e.g. 324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87)"
            )
        return cls(_swap_first_fields(bytes.fromhex("".join(m.groups()))))

    @classmethod
    def from_hex(cls, text: str) -> Generation:
        """Parse the raw bytes as hex, as ``sysctl -x`` prints them (``0x`` optional)."""
        m = _HEX_RE.match(text.strip()) if isinstance(text, str) else None
        if not m:
            raise GenerationError(f"not 32 hex digits of raw GUID bytes: {text!r}")
        return cls(bytes.fromhex(m.group(1)))

    @classmethod
    def parse(cls, text: str) -> Generation:
        """Accept either the GUID text or the raw hex form."""
        t = text.strip() if isinstance(text, str) else text
        if isinstance(t, str) and _HEX_RE.match(t):
            return cls.from_hex(t)
        return cls.from_text(t)

    @property
    def raw(self) -> bytes:
        return self._raw

    @property
    def text(self) -> str:
        """The hypervisor's form: ``str(uuid.UUID(bytes_le=raw))``."""
        h = _swap_first_fields(self._raw).hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    @property
    def hex(self) -> str:
        """The raw bytes as ``sysctl -x`` prints them: ``0x`` + 32 lowercase digits."""
        return "0x" + self._raw.hex()

    @property
    def is_zero(self) -> bool:
        """All-zero bytes: the hypervisor set no ID; never a change in itself."""
        return not any(self._raw)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Generation):
            return self._raw == other._raw
        return NotImplemented

    def __lt__(self, other: object) -> bool:
        if isinstance(other, Generation):
            return self._raw < other._raw
        return NotImplemented

    def __le__(self, other: object) -> bool:
        if isinstance(other, Generation):
            return self._raw <= other._raw
        return NotImplemented

    def __gt__(self, other: object) -> bool:
        if isinstance(other, Generation):
            return self._raw > other._raw
        return NotImplemented

    def __ge__(self, other: object) -> bool:
        if isinstance(other, Generation):
            return self._raw >= other._raw
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._raw)

    def __str__(self) -> str:
        return "(no ID)" if self.is_zero else self.text

    def __repr__(self) -> str:
        return f"Generation.from_text({self.text!r})"
