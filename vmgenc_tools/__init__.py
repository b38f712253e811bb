"""vmgenc-tools: consume FreeBSD vmgenc(4) VM Generation ID changes.

The chain, one folder per step: ``reference/`` (kernel model) → devctl line
(``devctl.py``) → devd rules (``devd/vmgenc.conf``) → ``handler.py`` →
``history.py`` / ``hooks/``.
"""

__version__ = "0.1.0"
