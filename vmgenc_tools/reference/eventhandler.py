"""EVENTHANDLER(9) lists, e.g. ``acpi_vmgenc_event`` (declared in ``vmgenc_acpi.h``).

Subscribers are functions of this process (kernel code cannot persist a
function pointer either); how many times each list was invoked is part of the
simulated VM's saved state, so another process can still see that it fired.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

Handler = Callable[[object], None]

_LISTS: dict[str, dict[int, tuple[Handler, object]]] = {}
_TAGS = itertools.count(1)


def EVENTHANDLER_REGISTER(name: str, func: Handler, arg: object = None) -> int:  # noqa: N802
    """Subscribe ``func(arg)`` to list ``name``; returns the tag to deregister with."""
    tag = next(_TAGS)
    _LISTS.setdefault(name, {})[tag] = (func, arg)
    return tag


def EVENTHANDLER_DEREGISTER(name: str, tag: int) -> None:  # noqa: N802
    _LISTS.get(name, {}).pop(tag, None)


def EVENTHANDLER_INVOKE(name: str, counts: dict[str, int]) -> None:  # noqa: N802
    """Call every subscriber of ``name`` in registration order; count the invocation."""
    counts[name] = counts.get(name, 0) + 1
    for func, arg in list(_LISTS.get(name, {}).values()):
        func(arg)
