"""The errors fv reports to users, and the exit statuses they map to."""

# Exit statuses, documented in README.md and `fv --help`.
EXIT_OK = 0  # every unit rendered
EXIT_SOME_FAILED = 1  # some units failed; the others were still written
EXIT_BAD_INPUT = 2  # bad input: nothing was rendered or written
EXIT_SIGINT = 130  # stopped by Ctrl-C (SIGINT) after a step; finished units are kept
EXIT_SIGTERM = 143  # stopped by SIGTERM after a step; finished units are kept


class FvError(Exception):
    """Bad input: the CLI prints the message as one line and exits with EXIT_BAD_INPUT.

    Messages say what is wrong, where (file and key path, or option), what was expected,
    and a suggestion when one is obvious.
    """
