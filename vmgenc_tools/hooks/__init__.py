"""Hooks: what runs after a change (built-ins, one module each, then site hooks)."""
