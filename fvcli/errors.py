"""The errors fv reports to users, and the exit statuses they map to."""

from __future__ import annotations

import os

# Exit statuses, documented in docs/rendering.md and `fv --help`.
EXIT_OK = 0  # every unit rendered
EXIT_SOME_FAILED = 1  # some units failed; the others were still written
EXIT_BAD_INPUT = 2  # bad input: nothing was rendered or written
EXIT_WRITE_FAILED = 3  # an output could not be written (disk full, read-only...); finished units are kept
EXIT_SIGINT = 130  # stopped by Ctrl-C (SIGINT) after a step; finished units are kept
EXIT_SIGTERM = 143  # stopped by SIGTERM after a step; finished units are kept


class FvError(Exception):
    """Bad input: the CLI prints the message as one line and exits with EXIT_BAD_INPUT.

    Messages say what is wrong, where (file and key path, or option), what was expected,
    and a suggestion when one is obvious.
    """


class WriteError(Exception):
    """A file fv writes could not be written: the CLI prints one line and exits with EXIT_WRITE_FAILED."""

    def __init__(self, path: os.PathLike | str, error: OSError):
        self.path, self.errno = path, error.errno
        errno = f" [Errno {error.errno}]" if error.errno else ""
        self.reason = (error.strerror or str(error) or type(error).__name__) + errno
        super().__init__(f"cannot write {path}: {self.reason}")


def raised(error: BaseException) -> str:
    """What user code did, in a few words: 'raised ValueError: boom', 'called sys.exit(0)'."""
    if isinstance(error, SystemExit):
        return f"called sys.exit({error.code!r})"
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    name = type(error).__name__
    if lines and lines[0].startswith("The following operation failed in the TorchScript interpreter"):
        # TorchScript's message ends with the exception the scripted code raised: builtins.ValueError: boom
        name, _, rest = lines[-1].removeprefix("builtins.").partition(": ")
        lines = [rest] if rest else []
    return f"raised {name}: {lines[0][:200]}" if lines else f"raised {name}"
