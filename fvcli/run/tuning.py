"""Choices fv makes by measuring rather than by rule, each measured once and remembered.

`--threads auto` keeps torch's default (a thread a core) when the machine's cores are idle, and
else times a step with 1, 2, 4 ... CPU threads and keeps the fastest, anew each run: what is free
changes from one run to the next. On a 2-core machine where another process held one
core, a GoogLeNet step took 12 times longer with torch's default of 2 threads than with 1: each
operation's threads wait at a barrier for the one that the other process preempted.
`--dtype auto` times an optimization step of the job's model in bf16 autocast and in float32 and
keeps the faster: bf16 is about 1.6 times faster for GoogLeNet on a CPU with native bf16, but five
times slower for a ViT on the same CPU. `--compile auto` weighs the compile time against the time
it saves. Measurements are kept per device, torch version, architecture, layers and image size in
a small JSON file ($FV_CACHE_DIR, else $XDG_CACHE_HOME/fv, else ~/.cache/fv), so each is paid once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import torch

from fvcli.files import open_regular, parse_json, read_back

CACHE_FILE = "tuning.json"
BF16_MARGIN = 0.9  # bf16 is chosen only when its step takes under 90% of float32's
THREADS_MARGIN = 0.9  # more threads are chosen only when their step takes under 90% of fewer's


def cache_dir() -> Path:
    if os.environ.get("FV_CACHE_DIR"):
        return Path(os.environ["FV_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fv"


MAX_CACHE_BYTES = 1 << 24  # the tuning cache holds a few hundred bytes a model and layer


def _read() -> dict:
    try:  # a regular file, not a link, of bounded size: never a FIFO's wait, nor a sparse file read whole
        data = parse_json(read_back(cache_dir() / CACHE_FILE, MAX_CACHE_BYTES, follow=False))
    except (OSError, ValueError):
        return {}  # no cache yet, or a broken one: measure again
    return data if isinstance(data, dict) else {}


def remembered(key: str) -> dict | None:
    entry = _read().get(key)
    return entry if isinstance(entry, dict) else None


def remember(key: str, entry: dict) -> None:
    """Store one measurement (atomically; a cache that cannot be written is only a lost speed-up)."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        data = _read()
        data[key] = entry
        with tempfile.NamedTemporaryFile("w", dir=folder, prefix=".tuning-", suffix=".tmp", delete=False) as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(f.name, folder / CACHE_FILE)
    except OSError:
        pass


@contextlib.contextmanager
def _exclusive() -> Iterator[None]:
    """Held while one process measures and records: workers, shards and torchrun ranks that start
    together then wait for the first one's measurement and make the same choice."""
    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
        lock = os.fdopen(open_regular(cache_dir() / "tuning.lock", os.O_WRONLY | os.O_CREAT | os.O_APPEND), "a")
    except OSError:  # also a link, FIFO or device in the lock's place: not followed, not waited on
        yield  # no cache to share: each process measures for itself
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def key_of(*parts) -> str:
    return "|".join(str(p) for p in (torch.__version__, *parts))


def timed(step: Callable[[], None], device: torch.device) -> float:
    """Seconds of one call of `step`, after the device has finished it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def choose_dtype(key: str, step: Callable[[str], None], device: torch.device) -> dict:
    """The faster of bf16 autocast and float32 (float32 unless bf16 is 10% faster) for `step(dtype)` (one optimization step of a small
    batch), measured once per key: {"dtype", "how", "seconds": {dtype: s}, "remembered": bool}."""
    with _exclusive():
        return _choose_dtype(key, step, device)


def _choose_dtype(key: str, step: Callable[[str], None], device: torch.device) -> dict:
    entry = remembered(key)
    seconds = entry.get("seconds") if entry else None
    valid = isinstance(seconds, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seconds.values())
    if entry is None or entry.get("dtype") not in ("bfloat16", "float32") or not valid:  # damaged: measure again
        # Two steps each, alternating, and each dtype's faster one counts: the first pays for kernel
        # selection and weight casts (alike for both), and a minimum shrugs off a step that a busy
        # machine preempted, which one sample each would take for the dtype's speed.
        rounds = [{dtype: timed(lambda: step(dtype), device) for dtype in ("float32", "bfloat16")} for _ in range(2)]
        seconds = {dtype: min(times[dtype] for times in rounds) for dtype in ("float32", "bfloat16")}
        # float32 unless bf16 is clearly faster: it is the more precise, and a near tie would
        # otherwise be decided by the machine's noise.
        faster = "bfloat16" if seconds["bfloat16"] < BF16_MARGIN * seconds["float32"] else "float32"
        entry = {"dtype": faster, "seconds": {k: round(v, 5) for k, v in seconds.items()}}
        remember(key, entry)
        was_remembered = False
    else:
        was_remembered = True
    return {
        "dtype": entry["dtype"],
        "how": "timed: the faster of bf16 autocast and float32 in one step of the model",
        "seconds": entry.get("seconds"),
        "remembered": was_remembered,
    }


def thread_counts(most: int) -> list[int]:
    """The thread counts --threads auto tries: 1, 2, 4 ... below `most`, and `most`."""
    return sorted({1, most, *(2**k for k in range(1, most.bit_length()) if 2**k < most)})


IDLE_WINDOW = 0.25  # seconds over which the machine's idle cores are counted


def _proc_stat() -> tuple[int, int]:
    """The machine's idle (with iowait) and total jiffies since boot, from Linux's /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]  # user .. steal; guests are in user
    return values[3] + values[4], sum(values)


class IdleMeter:
    """The cores other processes left idle since the meter started: the machine's idle cores plus
    the ones this process kept busy itself (its CPU time), so a run's own model loading and
    planning do not read as a busy machine. Started when a run starts, read when it chooses its
    threads: the planning in between is the measuring window, and no time is spent waiting."""

    def __init__(self):
        try:
            self._start = (time.perf_counter(), time.process_time(), *_proc_stat())
        except (OSError, ValueError, IndexError):
            self._start = None

    def idle_cores(self, window: float = IDLE_WINDOW) -> float | None:
        """Idle cores over at least `window` seconds since the meter started (waiting for the rest
        of it), or None where /proc/stat cannot be read."""
        if self._start is None:
            return None
        wall, own, idle, total = self._start
        time.sleep(max(0.0, window - (time.perf_counter() - wall)))
        try:
            idle_after, total_after = _proc_stat()
        except (OSError, ValueError, IndexError):
            return None
        elapsed = time.perf_counter() - wall
        if total_after <= total or elapsed <= 0:
            return None
        cores = os.cpu_count() or 1
        ours = (time.process_time() - own) / elapsed  # cores this process kept busy
        return min(cores, (idle_after - idle) / (total_after - total) * cores + ours)


def idle_cores(window: float = IDLE_WINDOW) -> float | None:
    """How many cores other processes left idle over the next `window` seconds, or None where
    that cannot be read."""
    return IdleMeter().idle_cores(window)


def choose_threads(step: Callable[[], None], most: int, meter: IdleMeter | None = None) -> dict:
    """The thread count for the model's arithmetic, up to `most`, leaving torch set to it. When
    the machine's cores are all idle, `most` (torch's default, right for an idle machine) without
    timing; else the fastest count of thread_counts(most) for `step` (one optimization step of a
    small batch on the CPU). {"threads", "how", "idle_cores", "seconds": {count: s}}."""
    counts = thread_counts(most)
    if len(counts) == 1:
        torch.set_num_threads(1)
        return {"threads": 1, "how": "one thread is all this process may use"}
    idle = (meter or IdleMeter()).idle_cores()
    if idle is not None and idle >= most - 0.25:
        torch.set_num_threads(most)
        return {"threads": most, "how": f"the machine's cores were idle ({idle:.2f} of {os.cpu_count()}, over the run's planning)", "idle_cores": round(idle, 2)}
    cpu = torch.device("cpu")
    torch.set_num_threads(most)
    step()  # kernel selection and first-touch allocations, alike for every count: not timed
    rounds = []
    for _ in range(2):  # alternating, each count's faster step counts (see _choose_dtype)
        times = {}
        for count in counts:
            torch.set_num_threads(count)
            times[count] = timed(step, cpu)
        rounds.append(times)
    seconds = {count: min(times[count] for times in rounds) for count in counts}
    chosen = counts[0]
    for count in counts[1:]:  # fewer threads unless more are clearly faster: a near tie is noise
        if seconds[count] < THREADS_MARGIN * seconds[chosen]:
            chosen = count
    torch.set_num_threads(chosen)
    return {
        "threads": chosen,
        "how": "timed: the fastest of these thread counts in one step of the run's first job",
        "idle_cores": None if idle is None else round(idle, 2),
        "seconds": {str(count): round(s, 5) for count, s in seconds.items()},
    }
