"""What the handler and the hooks agree on: the context a hook gets and the result it gives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..config import Config

STATUSES = ("ok", "failed", "timeout", "skipped", "refused")


@dataclass(frozen=True)
class HookContext:
    """One change, as every hook sees it."""

    config: Config
    new_guid: str
    old_guid: str | None
    cls: str
    source: str
    dry_run: bool = False

    @property
    def root(self) -> str:
        return self.config.root

    def env(self) -> dict[str, str]:
        """The variables a site hook receives (besides a minimal PATH)."""
        return {
            "VMGENC_OLD_GUID": self.old_guid or "",
            "VMGENC_NEW_GUID": self.new_guid,
            "VMGENC_CLASS": self.cls,
            "VMGENC_SOURCE": self.source,
            "VMGENC_ROOT": self.root,
        }


@dataclass
class HookResult:
    """How one hook run ended; ``output`` is the tail kept in history."""

    name: str
    status: str
    exit_code: int | None = None
    duration_s: float = 0.0
    output: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "status": self.status, "exit_code": self.exit_code,
                "duration_s": round(self.duration_s, 3)}


class Hook(Protocol):
    """A built-in or site hook: ``name`` is unique and stable across runs."""

    name: str

    def run(self, ctx: HookContext) -> HookResult: ...
