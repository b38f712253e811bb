"""devctl(4) records, read exactly as devd(8) reads them (freebsd-facts §2.2, §3.2, §3.12).

The kernel queues one line per event; devd strips the trailing newlines, looks at
the first byte and fills its variables:

``!`` notify   ``!system=S subsystem=SS type=T [k=v ...]``
``+`` attach   ``+name at [k=v ...] on parent``
``-`` detach   ``-name at [k=v ...] on parent``
``?`` nomatch  ``? at [k=v ...] on parent``

devd's ``chop_var`` rules: a key is ``[A-Za-z0-9_-]*`` (empty allowed) followed by
``=``; a value that starts with ``"`` runs to the next ``"`` not preceded by a
backslash, any other value to the next whitespace; reading stops at the first token
that is not ``k=v`` (an unterminated quoted value and everything after it stay
unset).  Every ``\\"`` in a value loses its backslash; other backslashes are kept,
so ``type=\\_SB_.VGEN`` gives ``\\_SB_.VGEN``.  For ``+``/``-`` the device name is the
text up to the first space, ``at `` is optional, and ``bus`` is the whole rest of
the line after ``on ``; ``?`` discards the word before its first space.  A later
duplicate key wins.

:func:`parse` reads a line the way devd does and raises a :class:`DevctlError`
subclass (with the offending position) for what devd would not process or the
kernel cannot send; ``strict=True`` also rejects the text devd silently ignores.
:func:`format_record` writes a record so that devd reads it back identically.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

KINDS = {"!": "notify", "+": "attach", "-": "detach", "?": "nomatch"}

#: ``DEVCTL_BUFFER`` is ``1024 - sizeof(void *)`` and the sbuf keeps one byte for
#: the NUL, so on LP64 (amd64, arm64) a record of more than 1015 bytes, newline
#: included, overflows and the kernel drops it (``sys/kern/kern_devctl.c``).
POINTER_BYTES = 8


def kernel_line_max(pointer_bytes: int = POINTER_BYTES) -> int:
    """Longest devctl record, trailing newline included, that the kernel queues."""
    return 1024 - pointer_bytes - 1


KERNEL_LINE_MAX = kernel_line_max()

#: The record vmgenc(4) sends under QEMU (and Firecracker), without its newline.
VMGENC_LINE = "!system=ACPI subsystem=VMGenerationCounter type=\\_SB_.VGEN notify=0x00"

_SPACE = " \t\n\v\f\r"  # C isspace() in the C locale
_KEY_RE = re.compile(r"[A-Za-z0-9_-]*\Z")
_ASCII_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class DevctlError(ValueError):
    """A devctl record devd would not process, or one that cannot be written."""

    def __init__(self, message: str, position: int | None = None) -> None:
        where = f" (at position {position})" if position is not None else ""
        super().__init__(message + where)
        self.position = position


class EmptyRecord(DevctlError):
    """Nothing but newlines: devd has no record type to look at."""


class UnknownKind(DevctlError):
    """The first byte is not ``!``, ``+``, ``-`` or ``?``: devd runs nothing."""


class MissingSpace(DevctlError):
    """A ``+``, ``-`` or ``?`` record without a space: devd returns before matching."""


class EmbeddedNul(DevctlError):
    """A NUL byte: the kernel never sends one, devd would stop reading there."""


class EmbeddedNewline(DevctlError):
    """A newline inside the record: the kernel sends one record per line."""


class LineTooLong(DevctlError):
    """Longer than the kernel's devctl buffer: the kernel drops such a record."""


class NotBytes(DevctlError):
    """Text with a character no byte sequence stands for (a lone surrogate)."""


class UnterminatedQuote(DevctlError):
    """(strict) A quoted value with no closing quote: devd leaves it and the rest unset."""


class IgnoredText(DevctlError):
    """(strict) Text that is not ``k=v`` where devd stops reading."""


class MissingNotifyField(DevctlError):
    """(strict) A notify record that does not start with system=, subsystem=, type=."""


class Unrepresentable(DevctlError):
    """A record no devctl line can carry so that devd reads it back unchanged."""


def fix_value(raw: str) -> str:
    """devd's ``var_list::fix_value``: every ``\\"`` becomes ``"``."""
    return raw.replace('\\"', '"')


def ascii_lower(text: str) -> str:
    """Lower-case ASCII letters only (devd's REG_ICASE in the C locale)."""
    return text.translate(_ASCII_FOLD)


@dataclass(frozen=True)
class Record:
    """One devctl record as devd reads it.

    ``pairs`` keeps every ``k=v`` devd set, in order (values already unescaped);
    ``device_name`` is set for ``+``/``-``; ``bus`` is the text after ``on `` (or
    None); ``discarded`` is the word a ``?`` record has before its first space
    (devd drops it; the kernel sends none); ``tail`` is the text devd ignores.
    """

    kind: str
    pairs: tuple[tuple[str, str], ...] = ()
    device_name: str | None = None
    bus: str | None = None
    discarded: str = ""
    tail: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "pairs", tuple(tuple(p) for p in self.pairs))
        if self.kind not in KINDS:
            raise UnknownKind(f"record kind {self.kind!r} is not one of ! + - ?")
        for key, value in self.pairs:
            if not isinstance(key, str) or not isinstance(value, str):
                raise Unrepresentable("keys and values must be text")
            if not _KEY_RE.match(key):
                raise Unrepresentable(f"key {key!r} is not [A-Za-z0-9_-]*")
        if self.kind in "+-" and self.device_name is None:
            raise Unrepresentable(f"a {KINDS[self.kind]} record needs a device name")
        if self.kind not in "+-" and self.device_name is not None:
            raise Unrepresentable(f"a {KINDS[self.kind]} record has no device name")
        if self.kind == "!" and self.bus is not None:
            raise Unrepresentable("a notify record has no bus")
        if self.kind != "?" and self.discarded:
            raise Unrepresentable("only a nomatch record has a discarded word")

    @property
    def kind_name(self) -> str:
        """``notify``, ``attach``, ``detach`` or ``nomatch``."""
        return KINDS[self.kind]

    def get(self, key: str, default: str | None = None) -> str | None:
        """The value of ``key`` as devd sees it (a later duplicate wins)."""
        return self.variables().get(key, default)

    @property
    def system(self) -> str | None:
        return self.get("system")

    @property
    def subsystem(self) -> str | None:
        return self.get("subsystem")

    @property
    def type(self) -> str | None:
        return self.get("type")

    def variables(self) -> dict[str, str]:
        """The variables devd sets from the record, in its order (``device-name``,
        the pairs, ``bus``); devd also sets ``*``, ``_`` and ``timestamp`` first."""
        out: dict[str, str] = {}
        if self.device_name is not None:
            out["device-name"] = self.device_name
        for key, value in self.pairs:
            out[key] = value
        if self.bus is not None:
            out["bus"] = self.bus
        return out


@dataclass(frozen=True)
class _Reading:
    pairs: list[tuple[str, str]]
    pos: int  # where chop_var stopped
    unterminated: int | None  # position of a quoted value with no closing quote


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _SPACE:
        pos += 1
    return pos


def _chop_pairs(text: str, pos: int) -> _Reading:
    """devd's ``set_vars``/``chop_var`` from ``pos``; values unescaped by ``fix_value``."""
    pairs: list[tuple[str, str]] = []
    n = len(text)
    while pos < n:
        key_end = pos
        while key_end < n and (text[key_end].isascii() and
                               (text[key_end].isalnum() or text[key_end] in "_-")):
            key_end += 1
        if key_end >= n or text[key_end] != "=":
            break
        start = key_end + 1
        if start < n and text[start] == '"':
            walk = start + 1
            while walk < n and text[walk] != '"':
                if text[walk] == "\\" and walk + 1 < n and text[walk + 1] == '"':
                    walk += 1
                walk += 1
            if walk >= n:
                return _Reading(pairs, pos, start)
            raw = text[start + 1:walk]
            walk += 1
        else:
            walk = start
            while walk < n and text[walk] not in _SPACE:
                walk += 1
            raw = text[start:walk]
            if walk < n:
                walk += 1
        pairs.append((text[pos:key_end], fix_value(raw)))
        pos = _skip_space(text, walk)
    return _Reading(pairs, pos, None)


def devd_variables(content: str) -> list[tuple[str, str]] | None:
    """The variables devd's ``process_event`` sets from a record after ``*``, ``_``
    and ``timestamp``, in order (later ones win).

    ``content`` is the line as devd holds it (trailing newlines stripped, nothing
    after a NUL).  None means devd returns without looking for a block (``+``,
    ``-`` or ``?`` with no space); an unknown first byte gives ``[]`` (devd has no
    block list for it).  Never raises.
    """
    if not content or content[0] not in KINDS:
        return []
    kind = content[0]
    if kind == "!":
        return _chop_pairs(content, 1).pairs
    space = content.find(" ", 1)
    if space < 0:
        return None
    out: list[tuple[str, str]] = []
    if kind in "+-":
        out.append(("device-name", fix_value(content[1:space])))
    pos = _skip_space(content, space + 1)
    if content.startswith("at ", pos):
        pos += 3
    reading = _chop_pairs(content, pos)
    out += reading.pairs
    pos = _skip_space(content, reading.pos)
    if content.startswith("on ", pos):
        out.append(("bus", fix_value(content[pos + 3:])))
    return out


def _as_text(line: str | bytes) -> str:
    if isinstance(line, bytes):
        return line.decode("utf-8", "surrogateescape")
    if isinstance(line, str):
        return line
    raise TypeError(f"a devctl record is text or bytes, not {type(line).__name__}")


def to_bytes(text: str) -> bytes:
    """The bytes of a record (``surrogateescape`` undoes the decoding of raw bytes)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as e:
        raise NotBytes("character that is no byte sequence in a devctl record",
                       e.start) from None


def _byte_len(text: str) -> int:
    return len(to_bytes(text))


def _check_kernel_length(content: str, limit: int) -> None:
    size = _byte_len(content) + 1  # the kernel's record ends with one newline
    if size > limit:
        # the first character that does not fit whole before the newline
        pos, used = 0, 0
        for ch in content:
            used += _byte_len(ch)
            if used > limit - 1:
                break
            pos += 1
        raise LineTooLong(f"devctl record of {size} bytes (newline included) is longer "
                          f"than the kernel's {limit}-byte buffer: the kernel drops it",
                          pos)


def parse(line: str | bytes, *, strict: bool = False,
          kernel_limit: int | None = KERNEL_LINE_MAX) -> Record:
    """Read one devctl record as devd does.

    Raises a :class:`DevctlError` subclass for an empty line, an unknown first
    byte, a ``+``/``-``/``?`` record without a space, a NUL or inner newline, or a
    record longer than ``kernel_limit`` bytes (None: no limit).  With
    ``strict`` it also rejects unterminated quotes, text devd ignores, and a
    notify record that does not start with ``system=``, ``subsystem=``, ``type=``.
    """
    text = _as_text(line)
    content = text.rstrip("\n")
    if not content:
        raise EmptyRecord("empty devctl record", 0)
    nul = content.find("\0")
    if nul >= 0:
        raise EmbeddedNul("NUL byte in a devctl record", nul)
    newline = content.find("\n")
    if newline >= 0:
        raise EmbeddedNewline("newline inside a devctl record (one record per line)",
                              newline)
    to_bytes(content)
    if kernel_limit is not None:
        _check_kernel_length(content, kernel_limit)
    kind = content[0]
    if kind not in KINDS:
        raise UnknownKind(f"devctl record starts with {kind!r}, not one of ! + - ?", 0)
    if kind == "!":
        reading = _chop_pairs(content, 1)
        record = Record("!", tuple(reading.pairs), tail=content[reading.pos:])
        tail_pos = reading.pos
    else:
        space = content.find(" ", 1)
        if space < 0:
            raise MissingSpace(f"{KINDS[kind]} record has no space after its first word: "
                               "devd ignores it", len(content))
        word = content[1:space]
        pos = _skip_space(content, space + 1)
        if content.startswith("at ", pos):
            pos += 3
        reading = _chop_pairs(content, pos)
        tail_pos = _skip_space(content, reading.pos)
        bus = None
        tail = ""
        if content.startswith("on ", tail_pos):
            bus = fix_value(content[tail_pos + 3:])
            tail_pos = len(content)
        else:
            tail = content[tail_pos:]
        record = Record(kind, tuple(reading.pairs),
                        device_name=fix_value(word) if kind in "+-" else None,
                        bus=bus, discarded=word if kind == "?" else "", tail=tail)
    if strict:
        _strict_checks(record, reading, tail_pos)
    return record


def _strict_checks(record: Record, reading: _Reading, tail_pos: int) -> None:
    if reading.unterminated is not None:
        raise UnterminatedQuote("quoted value has no closing quote", reading.unterminated)
    if record.tail:
        raise IgnoredText(f"devd stops reading at {record.tail[:20]!r} (not k=v)", tail_pos)
    if record.kind == "!":
        keys = [k for k, _ in record.pairs[:3]]
        if keys != ["system", "subsystem", "type"]:
            raise MissingNotifyField("a notify record starts with system=, subsystem=, "
                                     "type= (the kernel always sends them)", 1)


def _escape_quotes(value: str) -> str:
    return value.replace('"', '\\"')


def _encode_value(key: str, value: str) -> str:
    """The raw text devd reads back as ``value`` (kernel style: bare when possible)."""
    if any(c in _SPACE for c in value):
        if value.endswith("\\"):
            raise Unrepresentable(f"value of {key!r} has whitespace and ends with a "
                                  "backslash: no devctl quoting carries it")
        return '"' + _escape_quotes(value) + '"'
    if value.startswith('"') or '\\"' in value:
        return _escape_quotes(value)
    return value


def _encode_plain(what: str, value: str, *, allow_space: bool) -> str:
    if not allow_space and " " in value:
        raise Unrepresentable(f"{what} {value!r} contains a space")
    return _escape_quotes(value) if '\\"' in value else value


def format_record(record: Record, *, newline: bool = False,
                  kernel_limit: int | None = KERNEL_LINE_MAX) -> str:
    """The devctl line for ``record``, such that :func:`parse` gives it back.

    Raises :class:`Unrepresentable` if no line does that, :class:`LineTooLong` if
    the line (with its newline) is longer than ``kernel_limit`` bytes.
    """
    for text in (record.device_name or "", record.bus or "", record.discarded, record.tail,
                 *(v for _, v in record.pairs)):
        if "\0" in text or "\n" in text:
            raise Unrepresentable("a devctl record cannot carry NUL or newline")
        to_bytes(text)
    pairs = " ".join(f"{k}={_encode_value(k, v)}" for k, v in record.pairs)
    if record.kind == "!":
        line = "!" + pairs + (" " + record.tail if pairs and record.tail else record.tail)
    else:
        if record.bus is not None and record.tail:
            raise Unrepresentable("a record with a bus has no ignored tail")
        if record.kind == "?":
            if " " in record.discarded:
                raise Unrepresentable(f"discarded word {record.discarded!r} contains a space")
            head = "?" + record.discarded  # devd drops this word without unescaping it
        else:
            head = record.kind + _encode_plain("device name", record.device_name or "",
                                               allow_space=False)
        line = head + " at " + pairs
        if record.bus is not None:
            line += " on " + _encode_plain("bus", record.bus, allow_space=True)
        elif record.tail:
            line += " " + record.tail
    if parse(line, kernel_limit=None) != record:
        raise Unrepresentable(f"devd would not read {line!r} back as this record")
    if kernel_limit is not None:
        _check_kernel_length(line, kernel_limit)
    return line + "\n" if newline else line


def notify_record(system: str, subsystem: str, type_: str,
                  extra: Iterable[tuple[str, str]] = ()) -> Record:
    """A notify record as ``devctl_notify(system, subsystem, type, data)`` queues it."""
    return Record("!", (("system", system), ("subsystem", subsystem), ("type", type_),
                        *tuple(extra)))


def vmgenc_record(acpi_path: str = "\\_SB_.VGEN") -> Record:
    """The record vmgenc(4) sends after a change (``acpi_UserNotify(..., 0)``)."""
    return notify_record("ACPI", "VMGenerationCounter", acpi_path, [("notify", "0x00")])


def is_vmgenc_change(record: Record | str | bytes) -> bool:
    """True for the vmgenc change record (``system=ACPI subsystem=VMGenerationCounter``)
    and the forward-compatible alias (``system=VMGENC type=GENERATION_CHANGED``).

    Compared case-insensitively, as devd's patterns in ``devd/vmgenc.conf`` do.
    Text is parsed first (and may raise :class:`DevctlError`).
    """
    if not isinstance(record, Record):
        record = parse(record)
    if record.kind != "!":
        return False
    system = ascii_lower(record.system or "")
    if system == "acpi":
        return ascii_lower(record.subsystem or "") == "vmgenerationcounter"
    if system == "vmgenc":
        return ascii_lower(record.type or "") == "generation_changed"
    return False
