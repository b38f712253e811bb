"""The random(4) harvest queue, as far as vmgenc(4) feeds it.

``random_harvest_direct`` truncates every chunk to ``sizeof(he_entropy)``:
``HARVESTSIZE`` is 2 *words* (``uint32_t he_entropy[HARVESTSIZE]``), so 8 bytes,
and the driver's ``vmgenc_harvest_all`` hands a 16-byte GUID over as two chunks.
Every chunk is logged (source, bytes) so tests can check what the pool received.
"""

from __future__ import annotations

from collections.abc import Callable

RANDOM_PURE_VMGENID = "RANDOM_PURE_VMGENID"
RANDOM_ATTACH = "RANDOM_ATTACH"
HARVESTSIZE = 2                       # words (random_harvestq.h)
HE_ENTROPY_BYTES = HARVESTSIZE * 4    # sizeof(((struct harvest_event *)0)->he_entropy)
HARVEST_LOG_MAX = 4096


class HarvestQueue:
    """Registered sources and the harvested chunks, kept in the VM's state dict."""

    def __init__(self, state: dict, printf: Callable[[str], None]) -> None:
        state.setdefault("sources", [])
        state.setdefault("harvest", [])
        self.state = state
        self.printf = printf

    def random_source_register(self, ident: str, source: str) -> None:
        """``random_source_register(&rs)``: list the source, print the console line."""
        self.state["sources"].append({"ident": ident, "source": source})
        self.printf(f"random: registering fast source {ident}")

    def random_harvest_direct(self, data: bytes, size: int, source: str) -> None:
        """Feed at most ``HE_ENTROPY_BYTES`` of ``data[:size]`` to the pool."""
        chunk = bytes(data[:min(size, HE_ENTROPY_BYTES)])
        log = self.state["harvest"]
        log.append({"source": source, "data": chunk.hex()})
        del log[:-HARVEST_LOG_MAX]

    def chunks(self, source: str | None = None) -> list[bytes]:
        """Harvested chunks, oldest first (optionally of one source)."""
        return [bytes.fromhex(h["data"]) for h in self.state["harvest"]
                if source is None or h["source"] == source]
