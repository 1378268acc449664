"""Errors that the CLI turns into a clear message and exit status 2."""

from __future__ import annotations


class UsageError(Exception):
    """Bad usage or bad input. The message names the file, line, key or value at fault, in the
    library's words: a setting by its Python parameter or config key (`by`, `age_mix`, `storage`),
    never by a command-line flag.

    `option` is that setting's name when one setting is at fault. The command line maps it to its
    flag (`ordinalage.cli`): a message that starts with the option's name is printed with the flag in
    its place, and a backquoted name in the message (`` `workers` ``) becomes the flag too.
    """

    def __init__(self, message: str, *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option
