"""Several worker processes on one machine, each rendering a shard of the units: one per GPU when
more than one is visible, or as many as `--workers N` asks for. The parent waits for them, passes
SIGINT and SIGTERM on, and assembles the grids the way `fv merge` does.
"""

from __future__ import annotations

import ctypes
import dataclasses
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Callable

from fvcli.errors import EXIT_BAD_INPUT, EXIT_WRITE_FAILED, FvError, WriteError
from fvcli.specs.requests import JobRequest
from fvcli.specs.settings import RunSettings


def worker_devices(requested: str, workers: int | None) -> list[str]:
    """The device of each worker; a single entry means: render in this process."""
    import torch

    from fvcli.run.devices import auto_device

    if requested == "auto":
        requested = auto_device()
    gpus = torch.cuda.device_count() if requested == "cuda" else 0
    count = workers if workers is not None else max(1, gpus)
    if gpus:
        return [f"cuda:{i % gpus}" for i in range(count)]
    return [requested] * count


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent(parent: int) -> None:
    """A worker gets SIGTERM when its parent dies, even by kill -9, so none outlives the run (it
    stops after its step, keeping its finished units). On Linux the kernel sends it (prctl); where
    there is no prctl, a thread watches the parent's PID."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        watched = libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0
    except (OSError, AttributeError):
        watched = True
    if watched:

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="fv-parent-watch", daemon=True).start()
    elif os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _work(requests: list[JobRequest], settings: RunSettings, threads: int, parent: int) -> None:
    """A worker: its own session, so that a terminal's Ctrl-C reaches the parent alone, which passes
    it on once (a second SIGINT would stop a worker at once, mid-step)."""
    os.setsid()
    _die_with_parent(parent)
    import torch

    from fvcli.messages import sayer
    from fvcli.run.runner import Run

    torch.set_num_threads(threads)
    try:
        run = Run(requests, settings, sayer(settings.quiet))
    except FvError as error:  # checked by the parent already, but a GPU may have gone since
        print(f"fv: error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    run.announce_merge = False
    try:
        sys.exit(run.execute().exit_code)
    except FvError as error:  # the model's own code failed (fvcli.run.runner)
        print(f"fv: error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except WriteError as error:
        print(f"fv: error: {error}", file=sys.stderr)
        sys.exit(EXIT_WRITE_FAILED)
    except KeyboardInterrupt as error:  # a second signal: stopped at once (fvcli.run.signals.StopNow)
        sys.exit(128 + getattr(error, "signum", signal.SIGINT))


def run_workers(requests: list[JobRequest], settings: RunSettings, devices: list[str], say: Callable[[str], None]) -> tuple[int, list]:
    """Render in len(devices) processes; the worst exit status and the merges of incomplete jobs."""
    from fvcli.run.merge import manifests, merge_folder

    threads = max(1, (os.cpu_count() or 1) // len(devices))
    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in forked children
    processes = []
    for index, device in enumerate(devices):
        shard_settings = dataclasses.replace(settings, shard=(index, len(devices)), device=device, progress=False)
        processes.append(context.Process(target=_work, args=(requests, shard_settings, threads, os.getpid()), name=f"fv-worker-{index}"))
    say(f"fv: {len(devices)} worker processes on {', '.join(sorted(set(devices)))}")

    def forward(signum, frame) -> None:
        for process in processes:
            if process.pid is not None and process.exitcode is None:
                os.kill(process.pid, signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.join()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    codes = [process.exitcode for process in processes]
    # A worker killed by a signal has a negative exitcode; report it as the shell would (128 + N).
    code = max(c if c >= 0 else 128 - c for c in codes)
    folders = sorted({request.folder for request in requests})
    return code, [merge_folder(folder) for folder in folders if folder.is_dir() and manifests(folder)]
