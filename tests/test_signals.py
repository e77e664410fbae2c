"""SIGINT and SIGTERM stop a run after the current step, keep every finished unit, and exit 130 / 143;
the same command then renders the rest. Real processes and real signals."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

COMMAND = ["render", "mixed3a:0-11", "--weights", "random", "--steps", "40", "--size", "48", "--batch-size", "2", "--dtype", "float32"]


def start(out):
    return subprocess.Popen(
        [sys.executable, "-m", "fvcli", *COMMAND, "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for_units(folder, count, process, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if folder.exists() and len(list(folder.glob("mixed3a_*.png"))) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {count} units in {timeout} s")


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_after_the_step_and_keeps_finished_units(tmp_path, signum, code):
    folder = tmp_path / "googlenet" / "mixed3a"
    process = start(tmp_path)
    wait_for_units(folder, 2, process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    assert f"stopped by {signal.Signals(signum).name} after" in stderr
    kept = sorted(p.name for p in folder.glob("mixed3a_*.png"))
    assert 2 <= len(kept) < 12
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no half-written files
    if signum == signal.SIGINT:
        done = subprocess.run([sys.executable, "-m", "fvcli", *COMMAND, "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert f"{len(kept)} units already rendered" in done.stderr
        assert len(list(folder.glob("mixed3a_*.png"))) == 12 and (folder / "grid.json").exists()


def test_dry_run_writes_nothing(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "fvcli", *COMMAND, "--out", str(tmp_path / "o"), "--dry-run"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{tmp_path / 'o' / 'googlenet' / 'mixed3a'}: googlenet mixed3a:0-11: 12 units, 0 already rendered, 12 to render"
    assert not (tmp_path / "o").exists()


def test_sigterm_to_the_parent_of_worker_processes_stops_them_all(tmp_path):
    folder = tmp_path / "googlenet" / "mixed3a"
    process = subprocess.Popen(
        [sys.executable, "-m", "fvcli", *COMMAND, "--workers", "2", "--out", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_for_units(folder, 2, process)
    process.send_signal(signal.SIGTERM)  # to the parent alone: it passes the signal on
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    # A worker still loading its model ends at once (it has nothing to lose); one rendering stops after its step.
    assert stderr.count("stopped by SIGTERM after") >= 1
    assert 2 <= len(list(folder.glob("mixed3a_*.png"))) < 12 and not (folder / "grid.png").exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_a_second_signal_stops_at_once_while_the_writer_is_busy(tmp_path):
    """Every step of every image saved (--save-steps) at 256 px: the writer lags a batch behind the
    rendering, so after the first SIGTERM the run would wait for a batch of PNGs; the second stops it
    at once, without waiting for the writer, and leaves no file half-written."""
    from fvcli.run.output import png_is_whole

    folder = tmp_path / "tiny_model.make" / "conv1"
    steps = 33
    process = subprocess.Popen(
        [
            sys.executable, "-m", "fvcli", "render", "conv1:0-7", "--model", f"{Path(__file__).parent / 'tiny_model.py'}:make",
            "--weights", "random", "--steps", str(steps), "--save-steps", ",".join(map(str, range(1, steps))), "--size", "256",
            "--batch-size", "4", "--dtype", "float32", "--out", str(tmp_path),
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while not (folder.exists() and any(folder.glob("*.png"))):  # the first batch is being written
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1]
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert "fv: stopped by a second SIGTERM at once" in stderr and "Traceback" not in stderr
    written = list(folder.glob("*.png"))
    assert len(written) < 4 * steps  # the first batch's images were not all waited for
    assert all(png_is_whole(path.read_bytes()) for path in written)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary file left
