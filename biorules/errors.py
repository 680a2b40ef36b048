"""Errors the toolkit raises for bad input: the CLI turns them into one line and exit 2."""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input (a value, a file, a store): a one-line message naming the culprit."""
