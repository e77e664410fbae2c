"""Stopping cleanly on SIGINT and SIGTERM: a long loop asks between steps whether it should stop."""

from __future__ import annotations

import signal
import threading


class StopNow(KeyboardInterrupt):
    """A second SIGINT or SIGTERM: the run stops at once (fvcli.run.writer does not wait either)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class StopOnSignals:
    """Within it, SIGINT and SIGTERM ask the run to stop after the current step (once more: at once)."""

    def __init__(self):
        self.signal: int | None = None
        self.previous: dict[int, object] = {}

    def requested(self) -> bool:
        return self.signal is not None

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:  # a second signal: stop now
            raise StopNow(signum)
        self.signal = signum

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
