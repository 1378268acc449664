"""Errors that the CLI turns into a clear message and exit status 2."""

from __future__ import annotations


class UsageError(Exception):
    """Bad usage or bad input. The message names the file, line or key at fault."""
