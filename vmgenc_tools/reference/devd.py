"""A model of FreeBSD's devd(8) and devd.conf(5) (freebsd-facts §3, §3.12).

Modelled on the FreeBSD 14 sources (``sbin/devd/token.l``, ``parse.y``,
``devd.cc``; ``lib/libc/regex``) and on what running the real devd showed:

* **Lexer** as FreeBSD 14's ``token.l`` under flex: longest match, keywords before
  ``ID``; ``#`` and ``//`` comments run to a newline (flex's ``$`` needs one: a comment
  on a last line without newline is *not* a comment, by flex's rules, not observed);
  ``/* */`` comments end at the first ``*/`` (older token.l copies were greedy); a
  string is ``"[^"]+"`` (no ``"`` inside, so ``""`` is no string; no escapes; newlines
  allowed; backslash-newline and the whitespace after it dropped); a character no
  rule matches is echoed by flex and otherwise ignored (see :attr:`Devd.warnings`).
* **Grammar** as ``parse.y``; a syntax error is reported at the next token,
  ``devd[PID]: line N: TOKEN: syntax error.`` then ``devd: Cannot parse FILE at
  line N``, and stops devd (:class:`DevdConfigError`).  Line numbers count the
  newlines inside strings and comments.
* **Files**: the main file (``/etc/devd.conf`` or ``-f``), then every
  ``directory`` in order, each directory's ``*.conf`` files.  Real devd reads a
  directory in readdir(3) order, which is not alphabetical; the model sorts the
  names bytewise so its answers are reproducible.  A missing directory is skipped.
  Directories are mapped under the sandbox root.
* **Matching**: ``match "var" "re"`` is POSIX ERE, anchored by concatenation
  (``"^" + re + "$"``: ``A|B`` is ``^A|B$``), case-insensitive, a leading ``!``
  inverts; ``$var`` in a pattern is expanded from ``set`` variables when the file
  is parsed.  FreeBSD's regcomp (13+) is translated, not borrowed from Python's
  ``re``: ``\\_`` is ``_`` (observed); ``\\\\`` is a backslash; ``\\d``, ``\\w`` (any
  escaped letter: REG_EESCAPE since FreeBSD 13, read in regcomp.c, not run), lazy
  ``+?`` and ``(?`` are compile errors, and devd ignores regcomp's result, so such a
  match never succeeds (inverted: always).  Those are listed in
  :attr:`Devd.warnings`.  Matching works on bytes in the C locale; ``[[:<:]]``,
  ``\\<`` and their ends are word boundaries; ranges are by byte value.
* **FreeBSD 14 ``kern`` shim** (``new_match`` in devd.cc): a ``match "kern" "…"``
  (the variable *name* ``kern``, compared case-sensitively; no shorthand names it)
  is read as ``match "kernel" "…"``, and devd logs (LOG_WARNING) ``Changing
  deprecated system='kern' to new name 'kernel' in FILE line N.``, N being the
  line of the ``;`` that ends the statement (see :attr:`Devd.warnings`).  FreeBSD
  15 makes it fatal instead; the model follows 14.
* **Dispatch**: blocks are stable-sorted by priority, highest first; only the
  first block whose matches all succeed runs (a block with matches and no action
  still swallows the event; an empty block is never registered).
* **Actions**: ``$$`` → ``$``; ``$(…)`` copied verbatim with nesting; ``$name``
  (first character ``[A-Za-z_*-]``, then ``[A-Za-z0-9_-]*``) → the value
  shell-quoted as ``$'…'`` (``'`` and ``\\`` escaped; unset → ``$''``); ``$`` before
  anything else (``{``, digit, ``#``, ``@``, ``?``, space, ``'``) is left to sh.
  Each action runs as ``sh -c`` (argv[0] ``sh``), synchronously, with a shell that
  decodes ``$'…'`` like FreeBSD's sh (:func:`detect_shell`: Debian's dash does not),
  in the caller's environment plus ``VMGENC_ROOT=<root>``, stdin ``/dev/null``,
  SIGPIPE ignored, cwd the root.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .. import devctl, shipped
from .ere import C_SPACE, RegexError, RegexUnsupported, compile_ere

CONF = "/etc/devd.conf"
READ_MAX = 8191  # devd reads at most DEVCTL_MAXBUF - 1 bytes per event
IFNAMSIZ = 16
SHELL_ENV = "VMGENC_DEVD_SHELL"

KINDS = ("attach", "detach", "nomatch", "notify")
_TYPE_TO_KIND = {"!": "notify", "+": "attach", "-": "detach", "?": "nomatch"}


class DevdError(Exception):
    """Base of the model's errors."""


class DevdConfigError(DevdError):
    """What stops the real devd at start: its message lines, as devd prints them."""

    def __init__(self, lines: list[str], *, file: str | None = None,
                 line: int | None = None, token: str | None = None) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines
        self.file = file
        self.line = line
        self.token = token


class DevdModelLimit(DevdConfigError):
    """A construct devd accepts that this model does not reproduce."""


class DevdShellError(DevdError):
    """No shell here decodes ``$'…'`` as FreeBSD's sh does."""


# --------------------------------------------------------------------------- lexer

_KEYWORDS = {
    "options": "OPTIONS", "set": "SET", "directory": "DIRECTORY", "pid-file": "PID_FILE",
    "attach": "ATTACH", "detach": "DETACH", "device-name": "DEVICE_NAME",
    "media-type": "MEDIA_TYPE", "class": "CLASS", "subdevice": "SUBDEVICE",
    "action": "ACTION", "match": "MATCH", "nomatch": "NOMATCH", "notify": "NOTIFY",
}
_LINE_COMMENT = re.compile(r"(?:#|//)[^\n]*(?=\n)")
_STRING = re.compile(r'"[^"]+"')
_NUMBER = re.compile(r"[0-9]+")
_IDENT = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class Token:
    """One token: ``kind`` (bison's name), ``text`` (flex's yytext), ``value``, and
    ``line`` (the line counter after reading it, which is what devd reports)."""

    kind: str
    text: str
    value: str | int
    line: int


def _c_newlines(text: str) -> int:
    """Newlines counted by token.l's update_lineno (it stops at a NUL)."""
    return text.split("\0", 1)[0].count("\n")


def _string_value(yytext: str) -> str:
    """token.l's STRING action: drop the quotes and each backslash-newline together
    with the whitespace after it; nothing else is unescaped."""
    length = len(yytext.split("\0", 1)[0]) - 2
    out = []
    i = 1
    while i <= length:
        if yytext[i] == "\\" and yytext[i + 1] == "\n":
            i += 2
            while yytext[i] in C_SPACE:
                i += 1
        out.append(yytext[i])
        i += 1
    return "".join(out)


def _atoi(digits: str) -> int:
    """atoi(3) on FreeBSD (strtol clamped to LONG_MAX, then truncated to int)."""
    digits = digits.lstrip("0") or "0"
    value = 2**63 - 1 if len(digits) > 19 else min(int(digits), 2**63 - 1)
    return (value + 2**31) % 2**32 - 2**31


def tokenize(text: str) -> tuple[list[Token], list[tuple[int, str]]]:
    """Tokens of a devd.conf text (ending with EOF) and the characters flex echoes."""
    tokens: list[Token] = []
    echoed: list[tuple[int, str]] = []
    line = 1
    i = 0
    n = len(text)

    def emit(kind: str, yytext: str, value: str | int) -> None:
        tokens.append(Token(kind, yytext, value, line))

    while i < n:
        c = text[i]
        if c in " \t":
            i += 1
        elif c == "\n":
            line += 1
            i += 1
        elif c == ";":
            emit("SEMICOLON", c, c)
            i += 1
        elif c == "{":
            emit("BEGINBLOCK", c, c)
            i += 1
        elif c == "}":
            emit("ENDBLOCK", c, c)
            i += 1
        elif c in "#/" and (m := _LINE_COMMENT.match(text, i)):
            i = m.end()
        elif text.startswith("/*", i) and (end := text.find("*/", i + 2)) >= 0:
            line += _c_newlines(text[i:end + 2])
            i = end + 2
        elif "0" <= c <= "9":
            m = _NUMBER.match(text, i)
            emit("NUMBER", m.group(), _atoi(m.group()))
            i = m.end()
        elif c == '"' and (m := _STRING.match(text, i)):
            line += _c_newlines(m.group())
            emit("STRING", m.group(), _string_value(m.group()))
            i = m.end()
        elif c.isascii() and c.isalpha():
            m = _IDENT.match(text, i)
            word = m.group()
            emit(_KEYWORDS.get(word, "ID"), word, word)
            i = m.end()
        else:
            echoed.append((line, c))
            i += 1
    tokens.append(Token("EOF", "", "", line))
    return tokens, echoed


# --------------------------------------------------------------------------- expansion

def _is_id_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c in "_-")


def shell_quote(value: str) -> str:
    """devd's ``shell_quote``: ``$'`` + value with ``'`` and ``\\`` escaped + ``'``."""
    value = value.split("\0", 1)[0]
    return "$'" + "".join("\\" + c if c in "'\\" else c for c in value) + "'"


def expand(template: str, lookup: Callable[[str], str], *, quote: bool,
           prefix: str = "", suffix: str = "") -> str:
    """devd's ``expand_string``: actions (``quote=True``) shell-quote each ``$name``;
    patterns (``quote=False``, with ``^``/``$`` around) insert values raw.

    A ``$`` that ends the template is copied and ends the string (devd copies the
    NUL after it, which ends the C string it hands on, suffix included).
    """
    out = [prefix]
    i, n = 0, len(template)
    while True:
        j = template.find("$", i)
        if j < 0:
            out.append(template[i:])
            break
        out.append(template[i:j])
        i = j + 1
        if i >= n:
            out.append("$")
            return "".join(out)
        c = template[i]
        if c == "$":
            out.append("$")
            i += 1
        elif c == "(":
            out.append("$")
            depth = 0
            while True:
                ch = template[i]
                if ch == ")":
                    depth -= 1
                elif ch == "(":
                    depth += 1
                out.append(ch)
                i += 1
                if not (depth > 0 and i < n):
                    break
        elif not ((c.isascii() and c.isalpha()) or c in "_-*"):
            out.append("$" + c)
            i += 1
        else:
            k = i + 1
            while k < n and _is_id_char(template[k]):
                k += 1
            value = lookup(template[i:k])
            out.append(shell_quote(value) if quote else value)
            i = k
    out.append(suffix)
    return "".join(out)


# --------------------------------------------------------------------------- config model

@dataclass
class Match:
    """``match "var" "re"`` (and the device-name/class/subdevice shorthands)."""

    var: str
    source: str  # the devd string as written
    inverted: bool
    regex: str  # what devd hands to regcomp: ^ + expanded + $
    compiled: re.Pattern[bytes] | None
    error: str | None  # why regcomp fails (then the match never succeeds)

    def test(self, lookup: Callable[[str], str], media: Mapping[str, str]) -> bool:
        value = lookup(self.var).split("\0", 1)[0]
        hit = self.compiled is not None and self.compiled.search(_bytes(value)) is not None
        return hit != self.inverted


_MEDIA_TYPES = {"ethernet": "ethernet", "802.11": "802.11", "atm": "atm", "unknown": None}


@dataclass
class Media:
    """``media-type "type"``: SIOCGIFMEDIA on device-name (else subsystem)."""

    source: str

    @property
    def wanted(self) -> str | None:
        return _MEDIA_TYPES.get(self.source.lower())

    def test(self, lookup: Callable[[str], str], media: Mapping[str, str]) -> bool:
        name = (lookup("device-name") or lookup("subsystem"))[:IFNAMSIZ - 1]
        if name in media:
            have = media[name].lower()
            return _MEDIA_TYPES.get(have, have) == self.wanted
        return self.wanted is None  # no such interface: only "unknown" matches


@dataclass
class Block:
    """One registered ``attach``/``detach``/``nomatch``/``notify`` block."""

    kind: str
    priority: int
    file: str
    line: int
    tests: list[Match | Media] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)

    def ref(self) -> BlockRef:
        return BlockRef(self.file, self.line, self.priority, self.kind)


@dataclass(frozen=True)
class BlockRef:
    """Where the block that runs was written."""

    file: str
    line: int
    priority: int
    kind: str

    def to_json(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "priority": self.priority}


@dataclass
class Dispatch:
    """What devd does with one record."""

    event: str
    variables: dict[str, str]
    match: BlockRef | None
    commands: list[str]
    statuses: list[int] | None = None
    ignored: str | None = None  # why no block was looked for

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "event": self.event,
            "match": self.match.to_json() if self.match else None,
            "commands": list(self.commands),
        }
        if self.statuses is not None:
            out["exit_statuses"] = list(self.statuses)
        if self.ignored:
            out["ignored"] = self.ignored
        return out


class _Parser:
    """parse.y as recursive descent: errors at exactly the token bison rejects."""

    def __init__(self, devd: Devd, tokens: list[Token], shown: str) -> None:
        self.devd = devd
        self.tokens = tokens
        self.pos = 0
        self.shown = shown

    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def take(self, *kinds: str) -> Token:
        tok = self.tok
        if tok.kind not in kinds:
            raise syntax_error(self.shown, tok)
        self.pos += 1
        return tok

    def parse(self) -> None:
        while self.tok.kind != "EOF":
            if self.tok.kind == "OPTIONS":
                self.options()
            elif self.tok.kind in ("ATTACH", "DETACH", "NOMATCH", "NOTIFY"):
                self.block()
            else:
                raise syntax_error(self.shown, self.tok)

    def options(self) -> None:
        self.take("OPTIONS")
        self.take("BEGINBLOCK")
        first = True
        while first or self.tok.kind != "ENDBLOCK":
            first = False
            kind = self.take("DIRECTORY", "PID_FILE", "SET").kind
            if kind == "SET":
                name = self.take("ID").value
                value = self.take("STRING").value
                self.take("SEMICOLON")
                self.devd.variables[str(name)] = devctl.fix_value(str(value))
            else:
                value = str(self.take("STRING").value)
                self.take("SEMICOLON")
                if kind == "DIRECTORY":
                    self.devd.directories.append(value)
                else:
                    self.devd.pidfile = value
        self.take("ENDBLOCK")
        self.take("SEMICOLON")

    def block(self) -> None:
        head = self.take("ATTACH", "DETACH", "NOMATCH", "NOTIFY")
        priority = self.take("NUMBER").value
        self.take("BEGINBLOCK")
        block = Block(head.kind.lower(), int(priority), self.shown, head.line)
        while self.tok.kind != "ENDBLOCK":
            self.statement(block)
        self.take("ENDBLOCK")
        self.take("SEMICOLON")
        if block.tests or block.actions:
            self.devd.blocks[block.kind].append(block)

    def statement(self, block: Block) -> None:
        tok = self.take("MATCH", "DEVICE_NAME", "MEDIA_TYPE", "CLASS", "SUBDEVICE", "ACTION")
        if tok.kind == "MATCH":
            var = str(self.take("STRING").value)
            pattern = str(self.take("STRING").value)
            end = self.take("SEMICOLON")
            block.tests.append(self.devd.make_match(var, pattern, self.shown, tok.line,
                                                    end_line=end.line))
            return
        value = str(self.take("STRING").value)
        self.take("SEMICOLON")
        if tok.kind == "ACTION":
            block.actions.append(value)
        elif tok.kind == "MEDIA_TYPE":
            media = Media(value)
            if value.lower() not in _MEDIA_TYPES:
                self.devd.warnings.append(
                    f"{self.shown}:{tok.line}: media-type {value!r} is not Ethernet, 802.11, "
                    "ATM or unknown: devd treats it as unknown")
            block.tests.append(media)
        else:
            block.tests.append(self.devd.make_match(tok.text, value, self.shown, tok.line))


def syntax_error(shown: str, tok: Token) -> DevdConfigError:
    """devd's two lines for a syntax error at ``tok`` in file ``shown``."""
    return DevdConfigError(
        [f"devd[{os.getpid()}]: line {tok.line}: {tok.text}: syntax error.",
         f"devd: Cannot parse {shown} at line {tok.line}"],
        file=shown, line=tok.line, token=tok.text)


# --------------------------------------------------------------------------- the daemon

class Devd:
    """A parsed devd configuration under a sandbox root (use :func:`load_devd`)."""

    def __init__(self, root: str, media: Mapping[str, str] | None = None) -> None:
        self.root = os.path.abspath(root)
        self.files: list[str] = []
        self.directories: list[str] = []
        self.pidfile: str | None = None
        self.variables: dict[str, str] = {}
        self.blocks: dict[str, list[Block]] = {k: [] for k in KINDS}
        self.warnings: list[str] = []
        self.media: dict[str, str] = dict(media) if media is not None else _sim_media(root)

    # -- parsing
    def parse_file(self, shown: str, real: str) -> None:
        """devd's ``parse_one_file``: fatal on any error."""
        try:
            with open(real, "rb") as f:
                data = f.read()
        except IsADirectoryError:
            raise DevdConfigError(["input in flex scanner failed"], file=shown) from None
        except OSError as e:
            raise DevdConfigError(
                [f"devd: Cannot open config file {shown}: {e.strerror}"], file=shown) from None
        text = data.decode("utf-8", "surrogateescape")
        tokens, echoed = tokenize(text)
        for line, char in echoed:
            self.warnings.append(f"{shown}:{line}: stray {char!r} ignored (flex echoes it)")
        self.files.append(shown)
        _Parser(self, tokens, shown).parse()

    def make_match(self, var: str, source: str, shown: str, line: int,
                   end_line: int | None = None) -> Match:
        """devd's ``new_match`` and ``match`` constructor: FreeBSD 14's ``kern`` →
        ``kernel`` rename (warned at ``end_line``, where yacc reduces the rule), then
        expand ``$vars`` now, regcomp (failures kept)."""
        if var == "kern":
            self.warnings.append(
                "Changing deprecated system='kern' to new name 'kernel' in "
                f"{shown} line {line if end_line is None else end_line}.")
            var = "kernel"
        inverted = source.startswith("!")
        regex = expand(source[1:] if inverted else source, self._global, quote=False,
                       prefix="^", suffix="$")
        try:
            compiled = compile_ere(_bytes(regex.split("\0", 1)[0]))
            error = None
        except RegexError as e:
            compiled, error = None, e.code
            outcome = "always succeeds" if inverted else "never succeeds"
            self.warnings.append(f"{shown}:{line}: pattern {source!r} does not compile "
                                 f"({e.code}): this match {outcome}")
        except RegexUnsupported as e:
            raise DevdModelLimit([f"{shown}:{line}: the devd model does not reproduce {e} "
                                  f"in pattern {source!r}"], file=shown, line=line) from None
        return Match(var, source, inverted, regex, compiled, error)

    def _global(self, name: str) -> str:
        return self.variables.get(name, "")

    def sort(self) -> None:
        """Stable sort of every list, highest priority first (devd's stable_sort)."""
        for kind in KINDS:
            self.blocks[kind].sort(key=lambda b: -b.priority)

    # -- events
    def dispatch(self, line: str | bytes, run: bool = True, *, timestamp: str | None = None,
                 kernel_limit: int | None = devctl.KERNEL_LINE_MAX,
                 env: Mapping[str, str] | None = None, stdout: int | None = None) -> Dispatch:
        """Process one devctl record as devd does; with ``run`` execute the actions.

        ``timestamp`` replaces devd's ``$timestamp`` (default: now, ``sec.usec``).
        ``kernel_limit`` (bytes, newline included): a longer record is one the kernel
        drops, so nothing is done (None: process it as devd would if it got it).
        ``env`` adds to the actions' environment; ``stdout`` redirects their output.
        """
        text = line.decode("utf-8", "surrogateescape") if isinstance(line, bytes) else line
        shown = text.rstrip("\n")
        raw = _bytes(text)
        if kernel_limit is not None and len(_bytes(shown)) + 1 > kernel_limit:
            return Dispatch(shown, {}, None, [], ignored=(
                f"the kernel drops devctl records longer than {kernel_limit} bytes"))
        content = raw[:READ_MAX].decode("utf-8", "surrogateescape").rstrip("\n")
        content = content.split("\0", 1)[0]
        if timestamp is None:
            usec = time.time_ns() // 1000
            timestamp = f"{usec // 1_000_000}.{usec % 1_000_000:06d}"
        event = {"*": devctl.fix_value(content), "_": devctl.fix_value(content[1:]),
                 "timestamp": timestamp}
        if not content:
            return Dispatch(shown, event, None, [], ignored="empty record: devd runs nothing")
        found = devctl.devd_variables(content)
        kind = _TYPE_TO_KIND.get(content[:1])
        if found is None:
            return Dispatch(shown, event, None, [], ignored=(
                f"devd ignores a {content[:1]!r} record with no space after its first word"))
        event.update(found)
        if kind is None:
            return Dispatch(shown, event, None, [], ignored=(
                f"devd ignores records starting with {content[:1]!r}"))

        def lookup(name: str) -> str:
            if name in event:
                return event[name]
            return self.variables.get(name, "")

        for block in self.blocks[kind]:
            if all(t.test(lookup, self.media) for t in block.tests):
                commands = [expand(a, lookup, quote=True) for a in block.actions]
                result = Dispatch(shown, event, block.ref(), commands)
                if run:
                    result.statuses = [self.run_command(c, env, stdout) for c in commands]
                return result
        return Dispatch(shown, event, None, [])

    def run_command(self, command: str, env: Mapping[str, str] | None = None,
                    stdout: int | None = None) -> int:
        """``sh -c command`` as devd's my_system() runs it; waits; returns the status."""
        full = dict(os.environ)
        if env:
            full.update(env)
        full["VMGENC_ROOT"] = self.root
        proc = subprocess.run(["sh", "-c", command.split("\0", 1)[0]], executable=detect_shell(),
                              env=full, cwd=self.root, stdin=subprocess.DEVNULL, stdout=stdout,
                              close_fds=True, restore_signals=False, check=False)
        return proc.returncode


def _bytes(text: str) -> bytes:
    """Text back to the bytes it was decoded from (lone surrogates kept as UTF-8)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _sim_media(root: str) -> dict[str, str]:
    """Interfaces of a simulated VM (all virtual Ethernet); none elsewhere."""
    from .. import simstate

    try:
        if simstate.is_simulated(root):
            return {name: "Ethernet" for name in simstate.load(root).ifaces}
    except simstate.SimStateError:
        pass
    return {}


def under_root(root: str, path: str) -> str:
    """``path`` as seen inside the sandbox ``root``."""
    return os.path.join(root, path.lstrip("/"))


def load_devd(root: str, files: list[str] | None = None, *,
              media: Mapping[str, str] | None = None) -> Devd:
    """Parse the configuration devd would read under ``root``.

    Default: ``${root}/etc/devd.conf``; ``files`` replaces it (like ``devd -f``,
    paths taken as given).  Then each ``directory`` (mapped under ``root``), its
    ``*.conf`` files in bytewise name order.  Raises :class:`DevdConfigError`.
    """
    devd = Devd(root, media)
    if files is None:
        devd.parse_file(CONF, under_root(devd.root, CONF))
    else:
        for path in files:
            devd.parse_file(path, path)
    done = 0
    while done < len(devd.directories):  # a directory file may add directories
        dirname = devd.directories[done]
        done += 1
        real = under_root(devd.root, dirname)
        try:
            names = sorted(os.listdir(real), key=os.fsencode)
        except OSError:
            continue
        for name in names:
            if name.endswith(".conf"):
                devd.parse_file(f"{dirname}/{name}", os.path.join(real, name))
    devd.sort()
    return devd


# --------------------------------------------------------------------------- the shell

_PROBE = "set -- $'a\\\\b\\'c' $''; printf '%s|%s|%s' \"$#\" \"$1\" \"$2\""
_PROBE_WANT = b"2|a\\b'c|"


def shell_decodes_dollar_quotes(path: str) -> bool:
    """Does ``path``, run as ``sh -c``, decode ``$'a\\\\b\\'c'`` to ``a\\b'c`` and
    ``$''`` to an empty argument, as FreeBSD's sh does?"""
    try:
        proc = subprocess.run(["sh", "-c", _PROBE], executable=path, capture_output=True,
                              stdin=subprocess.DEVNULL, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0 and proc.stdout == _PROBE_WANT


def detect_shell() -> str:
    """The shell actions run with: ``$VMGENC_DEVD_SHELL`` if set (it must pass the
    probe), else the first of /bin/sh, bash that decodes ``$'…'``."""
    return _detect_shell(os.environ.get(SHELL_ENV) or None)


@functools.cache
def _detect_shell(override: str | None) -> str:
    if override:
        if shell_decodes_dollar_quotes(override):
            return override
        raise DevdShellError(f"{SHELL_ENV}={override} does not decode $'...' as FreeBSD's "
                             "sh does: point it at FreeBSD sh or bash")
    return pick_shell(_shell_candidates())


def _shell_candidates() -> list[str]:
    """Where :func:`detect_shell` looks, in order: /bin/sh, bash in PATH, the usual bash."""
    candidates = ["/bin/sh"]
    for name in ("bash",):
        found = shutil.which(name)
        if found:
            candidates.append(found)
    return candidates + ["/bin/bash", "/usr/local/bin/bash"]


def pick_shell(candidates: list[str]) -> str:
    """The first executable of ``candidates`` that passes the ``$'…'`` probe."""
    tried = []
    for path in dict.fromkeys(candidates):
        if os.access(path, os.X_OK):
            tried.append(path)
            if shell_decodes_dollar_quotes(path):
                return path
    raise DevdShellError("no shell here decodes $'...' as FreeBSD's sh does (tried "
                         f"{', '.join(tried) or 'nothing executable'}): install bash")


# --------------------------------------------------------------------------- sandbox files

STOCK_LOG = "/var/log/devd-stock.log"

#: A stock-like /etc/devd.conf for the simulated VM (own words, same layout and
#: rule shapes as FreeBSD's).  Its actions only log what the real rule would run.
STOCK_DEVD_CONF = r"""#
# /etc/devd.conf of the simulated VM: shaped like FreeBSD's stock file (options,
# device rules, ACPI rules; see devd.conf(5)) so the vmgenc snippet is tested
# among the rules a real system has.  Each action only appends what the real
# rule would run to ${VMGENC_ROOT}/var/log/devd-stock.log: nothing here touches
# the machine that runs the simulation.
#
# Patterns are anchored (an implicit ^ and $) and case-insensitive; only the
# highest-priority block that matches an event runs.
#

options {
	# Files in these directories are read after this one, in readdir order.
	directory "/etc/devd";
	directory "/usr/local/etc/devd";
	pid-file "/var/run/devd.pid";

	# Wireless drivers, for the attach/detach rules below.
	set wifi-driver-regex
		"(ath|bwi|bwn|iwlwifi|iwm|iwn|malo|mwl|otus|ral|rsu|rtwn|rum|\
		run|uath|upgt|ural|urtw|wpi|wtap|zyd)[0-9]+";
};

# A new network interface (not a USB bus or wlan clone) is configured.
notify 0 {
	match "system"		"IFNET";
	match "subsystem"	"!(usbus|wlan)[0-9]+";
	match "type"		"ATTACH";
	action "echo pccard_ether $subsystem start >> ${VMGENC_ROOT}/var/log/devd-stock.log";
};

# Wireless cards get their wlan children created and destroyed.
attach 0 {
	device-name "$wifi-driver-regex";
	action "echo pccard_ether $device-name startchildren >> ${VMGENC_ROOT}/var/log/devd-stock.log";
};
detach 0 {
	device-name "$wifi-driver-regex";
	action "echo pccard_ether $device-name stopchildren >> ${VMGENC_ROOT}/var/log/devd-stock.log";
};

# The first USB keyboard becomes the console keyboard, and back on removal.
attach 100 {
	device-name "ukbd0";
	action "echo syscons setkeyboard /dev/ukbd0 >> ${VMGENC_ROOT}/var/log/devd-stock.log";
};
detach 100 {
	device-name "ukbd0";
	action "echo syscons setkeyboard /dev/kbd0 >> ${VMGENC_ROOT}/var/log/devd-stock.log";
};

# Bluetooth dongles.
attach 100 {
	device-name "ubt[0-9]+";
	action "echo bluetooth quietstart $device-name >> ${VMGENC_ROOT}/var/log/devd-stock.log";
};

# Devices no driver claimed: devmatch(8) looks for a module to load.  (On a
# real system this block lives in /etc/devd/devmatch.conf.)  It has no match,
# so at priority 100 it takes every nomatch event.
nomatch 100 {
	action "echo devmatch $_ >> ${VMGENC_ROOT}/var/log/devd-stock.log";
};

# Unknown USB devices are logged (shadowed by the devmatch rule above).
nomatch 10 {
	match "bus" "uhub[0-9]+";
	action "echo unknown USB device vendor $vendor product $product on $bus \
		>> ${VMGENC_ROOT}/var/log/devd-stock.log";
};

# AC adapter plugged in (0x01) or out (0x00): switch the power profile.
notify 10 {
	match "system"		"ACPI";
	match "subsystem"	"ACAD";
	action "echo power_profile $notify >> ${VMGENC_ROOT}/var/log/devd-stock.log";
};

# Lid closed (0x00) or opened (0x01).
notify 10 {
	match "system"		"ACPI";
	match "subsystem"	"Lid";
	action "echo lid $notify >> ${VMGENC_ROOT}/var/log/devd-stock.log";
};

# Power (0x00) or sleep (0x01) button.
notify 10 {
	match "system"		"ACPI";
	match "subsystem"	"Button";
	action "echo button $notify >> ${VMGENC_ROOT}/var/log/devd-stock.log";
};

# A thermal zone reached _CRT/_HOT: warn everybody before the shutdown.
notify 10 {
	match "system"		"ACPI";
	match "subsystem"	"Thermal";
	match "notify"		"0xcc";
	action "echo thermal emergency $type >> ${VMGENC_ROOT}/var/log/devd-stock.log";
};

# Control-method battery status changed.
notify 10 {
	match "system"		"ACPI";
	match "subsystem"	"CMBAT";
	action "echo battery $type $notify >> ${VMGENC_ROOT}/var/log/devd-stock.log";
};

# Suspend requested, and the matching resume.
notify 10 {
	match "system"		"ACPI";
	match "subsystem"	"Suspend";
	action "echo rc.suspend acpi $notify >> ${VMGENC_ROOT}/var/log/devd-stock.log";
};
notify 10 {
	match "system"		"ACPI";
	match "subsystem"	"Resume";
	action "echo rc.resume acpi $notify >> ${VMGENC_ROOT}/var/log/devd-stock.log";
};

/* Examples, not active:

notify 0 {
	match "system"		"RCTL";
	action			"logger $rule";
};
*/
"""


def install_configs(root: str) -> list[str]:
    """Write the stock-like ``${root}/etc/devd.conf`` and install the shipped snippet
    as ``${root}/usr/local/etc/devd/vmgenc.conf``; returns the paths written."""
    root = os.path.abspath(root)
    for d in ("etc/devd", "usr/local/etc/devd", "var/log", "var/run"):
        os.makedirs(under_root(root, d), exist_ok=True)
    written = []
    for rel, text in ((CONF, STOCK_DEVD_CONF),
                      ("/usr/local/etc/devd/vmgenc.conf",
                       shipped.install_text("devd/vmgenc.conf"))):
        path = under_root(root, rel)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
        written.append(path)
    return written
