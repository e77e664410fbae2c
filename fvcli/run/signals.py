"""Stopping cleanly on SIGINT and SIGTERM: a long loop asks between steps whether it should stop."""

from __future__ import annotations

import signal
import threading


class StopNow(KeyboardInterrupt):
    """A second SIGINT or SIGTERM: the run stops at once (fvcli.run.writer does not wait either)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class Terminated(KeyboardInterrupt):
    """SIGTERM where no loop asks whether to stop (loading, collecting, laying out): fv stops at
    once, as SIGINT's KeyboardInterrupt stops it there; cleanup runs and fv says so."""

    signum = signal.SIGTERM


class TerminateAsInterrupt:
    """Within it (fv's command line), SIGTERM raises Terminated in the main thread instead of
    ending the process without a word or a cleanup."""

    def __enter__(self) -> TerminateAsInterrupt:
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    @staticmethod
    def _handle(signum, frame) -> None:
        raise Terminated()

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


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

