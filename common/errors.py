"""User-facing errors: each says what was wrong and what is valid.

Entry points (``common.train`` and friends) catch :class:`UserError`, print the message without a
traceback and exit with status 2, before anything is written to ``results/``.
"""
from __future__ import annotations

from typing import Iterable


class UserError(Exception):
    """Bad input from the user (config value, missing file, malformed data)."""


def unknown(kind: str, value: object, valid: Iterable[str], hint: str = "") -> UserError:
    """`unknown task 'foo'; valid: a, b, c` — lists at most 40 names, then a count."""
    names = sorted(valid)
    shown = ", ".join(names[:40]) + (f", ... ({len(names) - 40} more)" if len(names) > 40 else "")
    msg = f"unknown {kind} {value!r}; valid {kind}s: {shown}"
    return UserError(msg + (f". {hint}" if hint else ""))
