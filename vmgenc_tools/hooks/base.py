"""What the handler and the hooks agree on: the context a hook gets and the result it gives."""

from __future__ import annotations

from ..plain import Frozen, Plain

TYPE_CHECKING = False  # not typing's: importing typing costs the devd action 4 ms
if TYPE_CHECKING:
    from typing import Protocol

    from ..config import Config
else:
    Protocol = object

STATUSES = ("ok", "failed", "timeout", "skipped", "refused")


class HookContext(Frozen):
    """One change, as every hook sees it."""

    config: Config
    new_guid: str
    old_guid: str | None
    cls: str
    source: str
    dry_run: bool

    def __init__(self, config: Config, new_guid: str, old_guid: str | None, cls: str,
                 source: str, dry_run: bool = False) -> None:
        self._set(locals())

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


class HookResult(Plain):
    """How one hook run ended; ``output`` is the tail kept in history."""

    name: str
    status: str
    exit_code: int | None
    duration_s: float
    output: str

    def __init__(self, name: str, status: str, exit_code: int | None = None,
                 duration_s: float = 0.0, output: str = "") -> None:
        self.name = name
        self.status = status
        self.exit_code = exit_code
        self.duration_s = duration_s
        self.output = output

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "status": self.status, "exit_code": self.exit_code,
                "duration_s": round(self.duration_s, 3)}


class Hook(Protocol):
    """A built-in or site hook: ``name`` is unique and stable across runs."""

    name: str

    def run(self, ctx: HookContext) -> HookResult: ...
