"""fv on a busy machine: the same render with torch's default thread count and with --threads auto,
idle and while another process holds a core, side by side in one run.

    python benchmarks/busy.py                      # configs/quick.yaml, 2 rounds
    python benchmarks/busy.py --steps 16 --rounds 1

Each render is a real `fv render` subprocess; the busy load is a second process spinning on one
core for as long as the busy rows take. Prints one row per (machine state, threads) with the wall
time of the render (the median over rounds) and what --threads auto chose.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def spin() -> None:
    while True:
        pass


def render(config: str, threads: str, steps: int | None, out: Path) -> tuple[float, dict]:
    """Seconds of one `fv render`, and the threads record of its first job's sidecar."""
    command = [sys.executable, "-m", "fvcli", "render", config, "--out", str(out), "--threads", threads, "--force", "-q"]
    if steps:
        command += ["--steps", str(steps)]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    sidecar = json.loads(next(out.rglob("grid.json")).read_text())
    return seconds, sidecar["timing"].get("threads", {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/quick.yaml")
    parser.add_argument("--steps", type=int, default=None, help="override the config's steps")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    default = str(min(cores, os.cpu_count() or cores))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for state in ("idle", "busy"):
            load = multiprocessing.Process(target=spin, daemon=True) if state == "busy" else None
            if load:
                load.start()
            try:
                times: dict[str, list[float]] = {default: [], "auto": []}
                chosen = []
                for _ in range(args.rounds):  # alternating, so that both see the same machine
                    for threads in times:
                        seconds, record = render(args.config, threads, args.steps, Path(tmp) / threads)
                        times[threads].append(seconds)
                        if threads == "auto":
                            chosen.append(record.get("threads"))
            finally:
                if load:
                    load.terminate()
            for threads, values in times.items():
                label = f"{threads} (torch's default)" if threads == default else f"auto (chose {', '.join(map(str, chosen))})"
                rows.append((state, label, statistics.median(values)))
    print(f"{args.config}{f' --steps {args.steps}' if args.steps else ''}, {cores} cores, median of {args.rounds}")
    print("| machine | --threads | seconds |")
    print("|---|---|---|")
    for state, label, seconds in rows:
        print(f"| {state} | {label} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
