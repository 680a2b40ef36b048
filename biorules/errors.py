"""Errors the toolkit raises with a message meant for the user: the CLI prints it as one line.

:class:`InputError` is bad input (a value, a file, a store): exit 2, nothing written.
:class:`RunError` is a run that failed for a reason the user can act on (a lost scheduler, a
diverged training, no worker left): exit 1. :func:`one_line` turns any exception into one line
without its class name, for messages stored with a failed cell or printed by the CLI.
"""

from __future__ import annotations

import re


class InputError(ValueError):
    """Bad user input (a value, a file, a store): a one-line message naming the culprit."""


class RunError(RuntimeError):
    """A run that failed inside (not because of its input): a one-line message saying what to do."""


class DivergedError(RunError):
    """A training run whose loss or weights stopped being finite."""


_CLASS_PREFIX = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Warning|Interrupt|Exit)\s*:\s*")

MAX_MESSAGE = 300
"""The longest message :func:`one_line` returns (characters)."""


def one_line(e: BaseException | str, limit: int = MAX_MESSAGE) -> str:
    """``e``'s message on one line, without leading exception class names, at most ``limit`` chars.

    An OSError reads ``PATH: reason``; an exception without a message gives a generic phrase
    (never the bare class name).
    """
    if isinstance(e, OSError) and e.strerror:
        text = f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    else:
        text = str(e)
    text = " ".join(text.split())
    while True:
        stripped = _CLASS_PREFIX.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    if not text:
        text = "failed without a message (--debug shows the traceback)"
    return text if len(text) <= limit else text[: limit - 1] + "…"
