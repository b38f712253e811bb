"""Small value classes without :mod:`dataclasses`.

``dataclasses`` imports ``inspect`` (and with it ``ast``, ``dis``, ``tokenize``…)
and generates each class's methods with ``exec``: some 20 ms before the first
line of work, on the devd action whose whole budget is 100 ms (design §4.4)
and in the worker before the first new SSH key.  The classes on those paths
derive from :class:`Plain` or :class:`Frozen` instead and write their
``__init__`` by hand; the fields are its parameters, in order, so equality,
``repr`` and :meth:`Plain.fields` behave as a dataclass's would.
"""

from __future__ import annotations


class Plain:
    """Fields = the parameters of ``__init__``; ``==`` and ``repr`` compare and show them."""

    _fields: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            code = cls.__init__.__code__
            cls._fields = code.co_varnames[1:code.co_argcount + code.co_kwonlyargcount]

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, f) for f in self._fields)

    def fields(self) -> dict[str, object]:
        """``{field: value}`` (shallow, like ``dataclasses.asdict`` for flat records)."""
        return {f: getattr(self, f) for f in self._fields}

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # mutable: unhashable, as a dataclass

    def __repr__(self) -> str:
        inner = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__qualname__}({inner})"


class Frozen(Plain):
    """A :class:`Plain` whose fields cannot be assigned after ``__init__``; hashable."""

    def _set(self, values: dict[str, object]) -> None:
        """Set every field from ``values`` (``locals()`` of ``__init__``)."""
        for f in self._fields:
            object.__setattr__(self, f, values[f])

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of a frozen "
                             f"{type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of a frozen {type(self).__name__}")

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(self._values())
