"""The one exception type a user should ever see: a short message naming the bad value."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input from the user (config, names, files): reported as one paragraph, no traceback."""


class NotOurFolder(UserError):
    """A refusal because the output folder belongs to another run (made with other settings, or being written
    into right now): the refused run must leave that folder's records exactly as they are."""


def closest(value: str, choices: Iterable[str], n: int = 3) -> str:
    """A 'did you mean' hint listing the closest valid names, or an empty string."""
    matches = difflib.get_close_matches(str(value), list(choices), n=n, cutoff=0.5)
    return f" Closest valid: {', '.join(matches)}." if matches else ""
