"""The hook runner: which hooks run for a class, in which order, and which are refused.

A class's list (``vmgenc_hooks_<class>``) names built-ins and the token
``site``; ``site`` stands for the executables of the hooks directory
(``${root}${vmgenc_hooks_dir}``) in lexical order, skipping names that start
with ``.`` or end in ``~``, ``.sample``, ``.disabled`` or ``.orig``.  The
built-ins run first, in the order the list names them, then the site hooks,
wherever ``site`` stands in the list (design §4.6).

:func:`plan` returns Hook objects only; it runs nothing.  The handler runs
them one by one, records each result and applies
``vmgenc_hook_stop_on_failure`` itself.  A site hook that fails the trust
checks (:mod:`.trust`) is still in the plan, so that its refusal is recorded,
but its ``run()`` executes nothing and returns ``refused``.
"""

from __future__ import annotations

import os

from ..config import BUILTIN_HOOKS, SITE, Config
from .base import Hook, HookContext, HookResult
from .builtin import BuiltinHook
from .site import SAFE_PATH, SiteHook
from .trust import Problem, check_dir, check_hook

__all__ = ["Problem", "SKIP_PREFIXES", "SKIP_SUFFIXES", "builtin", "plan", "run_site_hook",
           "site_hooks", "site_names", "skipped", "validate"]

SKIP_PREFIXES = (".",)
SKIP_SUFFIXES = ("~", ".sample", ".disabled", ".orig")
SITE_PREFIX = "site:"


def skipped(name: str) -> bool:
    """Names in the hooks directory that are never hooks (editor backups, samples…)."""
    return name.startswith(SKIP_PREFIXES) or name.endswith(SKIP_SUFFIXES)


def hooks_dir(config: Config) -> str:
    return config.path(config.hooks_dir)


def site_names(config: Config) -> list[str]:
    """Entries of the hooks directory that count as hooks, in lexical (byte) order."""
    try:
        names = os.listdir(hooks_dir(config))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted((n for n in names if not skipped(n)), key=os.fsencode)


def site_hooks(config: Config) -> list[SiteHook]:
    """One :class:`SiteHook` per entry, with its trust problems (refused if any)."""
    d = hooks_dir(config)
    out = []
    for n in site_names(config):
        path = os.path.join(d, n)
        _, problems = check_hook(path, config.root, config.hooks_owner_uid)
        out.append(SiteHook(SITE_PREFIX + n, path, problems))
    return out


def builtin(name: str) -> BuiltinHook:
    """The built-in hook called ``name`` (one of config.BUILTIN_HOOKS)."""
    if name == "sshd_keys":
        from .sshd_keys import SshdKeysHook

        return SshdKeysHook()
    if name == "hostid":
        from .hostid import HostidHook

        return HostidHook()
    if name == "entropy":
        from .entropy import EntropyHook

        return EntropyHook()
    raise KeyError(f"unknown built-in hook {name!r} (known: {', '.join(BUILTIN_HOOKS)})")


def plan(config: Config, cls: str) -> list[Hook]:
    """The hooks for ``cls`` in run order (design §4.6): built-ins, then site hooks.

    The built-ins the class's list names run first, in the order it names them
    (each once); then, if the list contains ``site`` (wherever it stands), the
    site hooks in lexical order.  ``site sshd_keys`` therefore runs
    ``sshd_keys`` first: a site hook always sees the new identity.
    """
    tokens = config.hooks_for(cls)
    hooks: list[Hook] = []
    for name in dict.fromkeys(t for t in tokens if t != SITE):
        hooks.append(builtin(name))
    if SITE in tokens:
        hooks += site_hooks(config)
    return hooks


def run_site_hook(path: str, ctx: HookContext, timeout: float | None = None) -> HookResult:
    """Check and run one site hook file (refused without running if it is not trusted)."""
    return SiteHook(SITE_PREFIX + os.path.basename(path), path).run(ctx, timeout)


def validate(config: Config) -> list[Problem]:
    """Every reason a configured hook would not run: trust problems, missing tools."""
    problems: list[Problem] = []
    problems += check_dir(hooks_dir(config), config.root, config.hooks_owner_uid)
    for h in site_hooks(config):
        problems += h.problems
    used = {n for cls_hooks in config.hooks.values() for n in cls_hooks}
    import shutil

    if "sshd_keys" in used and not (shutil.which("ssh-keygen", path=SAFE_PATH)
                                    or shutil.which("ssh-keygen")):
        problems.append(Problem("ssh-keygen", "not found: the sshd_keys hook cannot run "
                                              "(install OpenSSH or remove sshd_keys)"))
    problems += [Problem("rc.conf", f"unknown variable {name}: not a vmgenc knob "
                                    "(misspelt? see vmgenc-hooks(5))") for name in config.unknown]
    seen: set[tuple[str, str]] = set()
    unique = []
    for p in problems:
        if (p.path, p.reason) not in seen:
            seen.add((p.path, p.reason))
            unique.append(p)
    return unique
