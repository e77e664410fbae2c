"""What fv tells the user on the way: progress lines on stderr, and counts in words.

Below every command and runner, so that worker processes and the CLI share it without importing
the CLI.
"""

from __future__ import annotations

import sys
from typing import Callable


def sayer(quiet: bool) -> Callable[[str], None]:
    """A function that prints a line on stderr (above a progress bar, if one shows), or nothing when quiet."""

    def say(message: str) -> None:
        if not quiet:
            from tqdm.auto import tqdm  # in a notebook, above its progress widget

            tqdm.write(message, file=sys.stderr)

    return say


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """`1 unit`, `2 units`, `0 units`: a count and its noun, in the right number."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"
