"""Stopping cleanly on SIGINT and SIGTERM: a long loop asks between steps whether it should stop."""

from __future__ import annotations

import signal
import threading


class StopOnSignals:
    """Within it, SIGINT and SIGTERM ask the run to stop after the current step (once more: at once)."""

    def __init__(self):
        self.signal: int | None = None
        self.previous: dict[int, object] = {}

    def requested(self) -> bool:
        return self.signal is not None

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signal = signum

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
