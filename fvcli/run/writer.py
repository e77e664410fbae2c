"""Writing files in the background, so that the device never waits for PNG encoding or the disk.

One thread runs write tasks in the order they were submitted (a job's grid after its units' PNGs),
and a bounded queue keeps at most a few batches of images in memory: submitting blocks while it is
full. The first error stops the writing: later tasks are skipped, and the error is raised in the
rendering thread at its next submit, check or drain.

A KeyboardInterrupt through the writer (a second SIGINT or SIGTERM, fvcli.run.signals) abandons it:
the tasks not started are dropped, the file being written is removed and never put in place, and
the process does not wait for the thread (which may be deep in encoding a large PNG) to end.
"""

from __future__ import annotations

import collections
import threading
from typing import Callable

from fvcli.files import Cancel

DEPTH = 2  # tasks waiting (about a batch each): the next batch renders while the last one is written


class Writer:
    def __init__(self, depth: int = DEPTH):
        self._depth = depth
        self._tasks: collections.deque[Callable[[], None]] = collections.deque()
        self._busy = threading.Condition()
        self._closed = False
        self.error: BaseException | None = None
        self._cancel = Cancel()
        # A daemon, so that a process stopped at once does not wait for it; otherwise __exit__ waits
        # until what is queued is written. Either way no file is left half-written (atomic_write).
        self._thread = threading.Thread(target=self._loop, name="fv-writer", daemon=True)
        self._thread.start()

    def submit(self, task: Callable[[], None]) -> None:
        """Queue `task`, waiting while the queue is full; raises an earlier task's error."""
        with self._busy:
            while len(self._tasks) >= self._depth and self.error is None:
                self._busy.wait()
            self.check()
            self._tasks.append(task)
            self._busy.notify_all()

    def check(self) -> None:
        """Raise the error that stopped the writing, if any."""
        if self.error is not None:
            raise self.error

    def drain(self) -> None:
        """Wait until every queued task has run (or been skipped after an error); raise the error."""
        with self._busy:
            while self._tasks:
                self._busy.wait()
        self.check()

    def close(self) -> None:
        """The thread ends once the queue is empty. Never blocks, so it is safe in `finally`."""
        with self._busy:
            self._closed = True
            self._busy.notify_all()

    def abandon(self) -> None:
        """Stop at once: drop the tasks not started, and cancel the file being written (removed,
        never renamed into place). Never blocks on the thread."""
        self._cancel.cancel()
        with self._busy:
            while len(self._tasks) > 1:  # the first is running (or about to): it sees the cancel
                self._tasks.pop()
            self._closed = True
            self._busy.notify_all()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None and issubclass(kind, KeyboardInterrupt):  # a second signal: stop now
            self.abandon()
            return
        self.close()
        self._thread.join()

    def _loop(self) -> None:
        self._cancel.watch()
        while True:
            with self._busy:
                while not self._tasks and not self._closed:
                    self._busy.wait()
                if not self._tasks:
                    return
                task = self._tasks[0]
            if self.error is None and not self._cancel.cancelled:
                try:
                    task()
                except BaseException as error:  # raised in the rendering thread
                    self.error = error
            with self._busy:
                self._tasks.popleft()
                self._busy.notify_all()
