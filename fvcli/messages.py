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
            # tqdm's own write clears and redraws a terminal bar around the line (a notebook's
            # widget needs neither); tqdm.std, because importing tqdm.auto in a notebook without
            # ipywidgets warns "IProgress not found" even where no bar is shown.
            from tqdm.std import tqdm

            tqdm.write(message, file=sys.stderr)

    return say


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """`1 unit`, `2 units`, `0 units`: a count and its noun, in the right number."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def progress_bar(show: bool | None, quiet: bool, **options):
    """A tqdm bar on stderr: a notebook's widget in a notebook, the terminal's elsewhere. `show`
    None: shown when stderr is a terminal and the run is not quiet. A bar not shown is tqdm's
    disabled text bar, which draws nothing: no notebook widget is made, nor asked for."""
    from tqdm.std import tqdm as text_bar

    if show is None:
        show = not quiet and sys.stderr.isatty()
    options = {"disable": not show, "file": sys.stderr, "dynamic_ncols": True, **options}
    if not show:
        return text_bar(**options)
    from tqdm.auto import tqdm

    try:
        return tqdm(**options)
    except ImportError:  # a notebook without ipywidgets, which its bar needs: the text bar
        return text_bar(**options)
