"""POSIX extended regular expressions, as devd compiles its ``match`` patterns, in Python's ``re``.

devd builds each pattern as ``"^" + value + "$"`` and hands it to
``regcomp(REG_EXTENDED | REG_NOSUB | REG_ICASE)``.  Python's ``re`` is not ERE: a
backslash before an ordinary character, bracket expressions, ``[[:class:]]``,
word boundaries and interval limits differ.  :func:`translate_ere` rewrites an
ERE into an equivalent ``re`` pattern, raising :class:`RegexError` where regcomp
would fail and :class:`RegexUnsupported` for FreeBSD-only forms it does not model.
"""

from __future__ import annotations

import re
from collections.abc import Callable

C_SPACE = " \t\n\v\f\r"  # C isspace()
class RegexError(Exception):
    """regcomp(3) would fail with ``code`` (REG_EPAREN, REG_BADRPT, ...)."""

    def __init__(self, code: str, position: int) -> None:
        super().__init__(f"{code} at offset {position}")
        self.code = code
        self.position = position


class RegexUnsupported(Exception):
    """A POSIX construct the model does not translate (never seen in devd files)."""


_WORD = "[A-Za-z0-9_]"
_BOW = f"(?:(?<!{_WORD})(?={_WORD}))"
_EOW = f"(?:(?<={_WORD})(?!{_WORD}))"
_DUPMAX = 255
_CLASSES: dict[str, Callable[[int], bool]] = {
    "alnum": lambda b: chr(b).isascii() and chr(b).isalnum(),
    "alpha": lambda b: chr(b).isascii() and chr(b).isalpha(),
    "blank": lambda b: b in (0x20, 0x09),
    "cntrl": lambda b: b < 0x20 or b == 0x7F,
    "digit": lambda b: 0x30 <= b <= 0x39,
    "graph": lambda b: 0x21 <= b <= 0x7E,
    "lower": lambda b: 0x61 <= b <= 0x7A,
    "print": lambda b: 0x20 <= b <= 0x7E,
    "punct": lambda b: 0x21 <= b <= 0x7E and not chr(b).isalnum(),
    "space": lambda b: chr(b) in C_SPACE,
    "upper": lambda b: 0x41 <= b <= 0x5A,
    "xdigit": lambda b: chr(b) in "0123456789ABCDEFabcdef",
}
_FREEBSD_ONLY_CLASSES = ("ideogram", "phonogram", "rune", "special")


def _isin(b: int, chars: bytes) -> bool:
    return b >= 0 and b in chars


def _is_alpha(b: int) -> bool:
    return 0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A


def _case_variants(b: int) -> set[int]:
    if _is_alpha(b):
        return {b | 0x20, b & ~0x20}
    return {b}


def _class_source(members: set[int]) -> str:
    """A Python character class (bytes pattern source) for exactly ``members``."""
    if not members:
        return "(?!)"
    parts = []
    ordered = sorted(members)
    start = prev = ordered[0]
    for b in ordered[1:] + [None]:
        if b is not None and b == prev + 1:
            prev = b
            continue
        parts.append(f"\\x{start:02x}" if start == prev else f"\\x{start:02x}-\\x{prev:02x}")
        if b is not None:
            start = prev = b
    return "[" + "".join(parts) + "]"


class _ERE:
    """FreeBSD's ERE parser (REG_EXTENDED | REG_ICASE, no GNU extensions, strict
    escapes), emitting an equivalent Python ``re`` source for bytes."""

    def __init__(self, pattern: bytes) -> None:
        self.p = pattern
        self.i = 0

    def more(self, k: int = 0) -> bool:
        return self.i + k < len(self.p)

    def peek(self, k: int = 0) -> int:
        return self.p[self.i + k] if self.more(k) else -1

    def error(self, code: str) -> RegexError:
        return RegexError(code, self.i)

    def translate(self) -> str:
        return self.p_re(None, outer=True)

    def p_re(self, stop: int | None, outer: bool) -> str:
        branches = []
        while True:
            parts = []
            while self.more() and self.peek() != 0x7C and self.peek() != stop:
                parts.append(self.p_ere_exp())
            if not parts:
                raise self.error("REG_EMPTY")
            branches.append("".join(parts))
            ate = 0
            while self.more() and self.peek() == 0x7C:
                self.i += 1
                ate += 1
            if ate == 0:
                break
            if ate > 1 or (outer and not self.more()):
                raise self.error("REG_EMPTY")
        return "|".join(branches)

    def ordinary(self, b: int) -> str:
        return _class_source(_case_variants(b)) if _is_alpha(b) else f"\\x{b:02x}"

    def p_ere_exp(self) -> str:
        c = self.peek()
        self.i += 1
        wascaret = False
        if c == 0x28:  # (
            if not self.more():
                raise self.error("REG_EPAREN")
            inner = "" if self.peek() == 0x29 else self.p_re(0x29, outer=False)
            if self.peek() != 0x29:
                raise self.error("REG_EPAREN")
            self.i += 1
            atom = "(?:" + inner + ")"
        elif c == 0x29:
            raise self.error("REG_EPAREN")
        elif c == 0x5E:  # ^
            atom, wascaret = "\\A", True
        elif c == 0x24:  # $
            atom = "\\Z"
        elif _isin(c, b"*+?{"):
            raise self.error("REG_BADRPT")
        elif c == 0x2E:
            atom = "."
        elif c == 0x5B:
            atom = self.p_bracket()
        elif c == 0x5C:  # backslash
            if not self.more():
                raise self.error("REG_EESCAPE")
            wc = self.peek()
            self.i += 1
            if wc == 0x3C:
                atom = _BOW
            elif wc == 0x3E:
                atom = _EOW
            elif _is_alpha(wc) or _isin(wc, b"'`"):
                raise self.error("REG_EESCAPE")
            else:
                atom = self.ordinary(wc)
        else:
            atom = self.ordinary(c)
        return self.repetition(atom, wascaret)

    def repetition(self, atom: str, wascaret: bool) -> str:
        c = self.peek()
        if not _isin(c, b"*+?{"):
            return atom
        if c == 0x7B and not (self.more(1) and (0x30 <= self.peek(1) <= 0x39
                                                or self.peek(1) == 0x2C)):
            raise self.error("REG_BADRPT")
        self.i += 1
        if wascaret:
            raise self.error("REG_BADRPT")
        if c == 0x7B:
            low = self.p_count()
            if self.peek() == 0x2C:
                self.i += 1
                if 0x30 <= self.peek() <= 0x39:
                    high = self.p_count()
                    if low > high:
                        raise self.error("REG_BADBR")
                    quant = f"{{{low},{high}}}"
                else:
                    quant = f"{{{low},}}"
            else:
                quant = f"{{{low}}}"
            if self.peek() != 0x7D:
                raise self.error("REG_EBRACE" if 0x7D not in self.p[self.i:] else "REG_BADBR")
            self.i += 1
        else:
            quant = chr(c)
        nxt = self.peek()
        if _isin(nxt, b"*+?") or (nxt == 0x7B and 0x30 <= self.peek(1) <= 0x39):
            raise self.error("REG_BADRPT")
        return "(?:" + atom + ")" + quant

    def p_count(self) -> int:
        count = ndigits = 0
        while self.more() and 0x30 <= self.peek() <= 0x39 and count <= _DUPMAX:
            count = count * 10 + self.peek() - 0x30
            self.i += 1
            ndigits += 1
        if ndigits == 0 or count > _DUPMAX:
            raise self.error("REG_BADBR")
        return count

    def p_bracket(self) -> str:
        if self.p.startswith(b"[:<:]]", self.i):
            self.i += 6
            return _BOW
        if self.p.startswith(b"[:>:]]", self.i):
            self.i += 6
            return _EOW
        members: set[int] = set()
        invert = False
        if self.peek() == 0x5E:
            invert = True
            self.i += 1
        if self.peek() in (0x5D, 0x2D):
            members.add(self.peek())
            self.i += 1
        while self.more() and self.peek() != 0x5D and not (
                self.peek() == 0x2D and self.peek(1) == 0x5D):
            self.p_b_term(members)
        if self.peek() == 0x2D:
            members.add(0x2D)
            self.i += 1
        if self.peek() != 0x5D:
            raise self.error("REG_EBRACK")
        self.i += 1
        folded = set()
        for b in members:
            folded |= _case_variants(b)
        if invert:
            folded = set(range(256)) - folded
        return _class_source(folded)

    def p_b_term(self, members: set[int]) -> None:
        c = self.peek()
        if c == 0x2D:
            raise self.error("REG_ERANGE")
        c2 = self.peek(1) if c == 0x5B else -1
        if c2 == 0x3A:  # [:class:]
            self.i += 2
            if not self.more():
                raise self.error("REG_EBRACK")
            if self.peek() in (0x2D, 0x5D):
                raise self.error("REG_ECTYPE")
            start = self.i
            while self.more() and _is_alpha(self.peek()):
                self.i += 1
            name = self.p[start:self.i].decode("ascii")
            if len(name) >= 15:
                raise self.error("REG_ECTYPE")
            if name in _FREEBSD_ONLY_CLASSES:
                raise RegexUnsupported(f"character class [:{name}:]")
            if name not in _CLASSES:
                raise self.error("REG_ECTYPE")
            members.update(b for b in range(256) if _CLASSES[name](b))
            if not self.more():
                raise self.error("REG_EBRACK")
            if not self.p.startswith(b":]", self.i):
                raise self.error("REG_ECTYPE")
            self.i += 2
        elif c2 == 0x3D:  # [=x=]
            self.i += 2
            if not self.more():
                raise self.error("REG_EBRACK")
            if self.peek() in (0x2D, 0x5D):
                raise self.error("REG_ECOLLATE")
            members.add(self.coll_elem(0x3D))
            if not self.more():
                raise self.error("REG_EBRACK")
            if not self.p.startswith(b"=]", self.i):
                raise self.error("REG_ECOLLATE")
            self.i += 2
        else:
            start = self.symbol()
            finish = start
            if self.peek() == 0x2D and self.more(1) and self.peek(1) != 0x5D:
                self.i += 1
                if self.peek() == 0x2D:
                    self.i += 1
                    finish = 0x2D
                else:
                    finish = self.symbol()
            if start > finish:
                raise self.error("REG_ERANGE")
            members.update(range(start, finish + 1))

    def symbol(self) -> int:
        if not self.more():
            raise self.error("REG_EBRACK")
        if self.p.startswith(b"[.", self.i):
            self.i += 2
            value = self.coll_elem(0x2E)
            if not self.p.startswith(b".]", self.i):
                raise self.error("REG_ECOLLATE")
            self.i += 2
            return value
        value = self.peek()
        self.i += 1
        return value

    def coll_elem(self, end: int) -> int:
        start = self.i
        while self.more() and not (self.peek() == end and self.peek(1) == 0x5D):
            self.i += 1
        if not self.more():
            raise self.error("REG_EBRACK")
        name = self.p[start:self.i]
        if len(name) == 1:
            return name[0]
        raise RegexUnsupported(f"collating element name {name.decode('latin-1')!r}")


def translate_ere(pattern: bytes) -> str:
    """Python ``re`` source (for bytes, flag DOTALL) equivalent to FreeBSD's
    ``regcomp(pattern, REG_EXTENDED | REG_NOSUB | REG_ICASE)`` used with regexec.

    Raises :class:`RegexError` where regcomp fails, :class:`RegexUnsupported` for
    the few constructs the model does not translate.
    """
    return _ERE(pattern).translate()


def compile_ere(pattern: bytes) -> re.Pattern[bytes]:
    """:func:`translate_ere`, compiled."""
    return re.compile(translate_ere(pattern).encode("ascii"), re.DOTALL)
