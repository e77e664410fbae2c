"""Files fv keeps beside its output (a job folder's lock, the tuning cache and its lock) are never
followed through a symbolic link and never waited on as a FIFO: a link planted in their place must
not let a run write into another file, and a FIFO must not hang it."""

import os
import subprocess
import sys

import pytest

from conftest import TINY, fv

RUN = ["relu3:0", "--model", TINY, "--weights", "random", "--size", "32", "--steps", "2", "-q"]
FOLDER = ("tiny_model.make", "relu3")


def fv_subprocess(*args, env=None, timeout=60):
    """fv in its own process, with a time limit: a hang fails the test instead of the suite."""
    return subprocess.run([sys.executable, "-m", "fvcli", *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_a_lock_that_is_a_symbolic_link_is_refused_and_its_target_untouched(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    folder = tmp_path.joinpath("out", *FOLDER)
    folder.mkdir(parents=True)
    (folder / ".fv-lock").symlink_to(victim)
    message = fv("render", *RUN, "--out", str(tmp_path / "out"), code=2)
    assert ".fv-lock is a symbolic link" in message and len(message.strip().splitlines()) == 1
    assert victim.read_text() == "precious\n"
    assert not (folder / "relu3_0000.png").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_lock_that_is_a_fifo_is_refused_at_once(tmp_path):
    folder = tmp_path.joinpath("out", *FOLDER)
    folder.mkdir(parents=True)
    os.mkfifo(folder / ".fv-lock")
    done = fv_subprocess("render", *RUN, "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "is a FIFO" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_tuning_cache_of_fifos_and_links_neither_hangs_a_run_nor_is_followed(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    os.mkfifo(cache / "tuning.lock")
    os.mkfifo(cache / "tuning.json")
    env = {**os.environ, "FV_CACHE_DIR": str(cache)}
    done = fv_subprocess("render", *RUN, "--dtype", "auto", "--out", str(tmp_path / "a"), env=env)
    assert done.returncode == 0, done.stderr
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    other = tmp_path / "cache2"
    other.mkdir()
    (other / "tuning.lock").symlink_to(victim)
    done = fv_subprocess("render", *RUN, "--dtype", "auto", "--out", str(tmp_path / "b"), env={**os.environ, "FV_CACHE_DIR": str(other)})
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "precious\n"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fv_spectrum_never_renames_over_a_fifo_or_device(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    from PIL import Image

    Image.new("RGB", (40, 40), (200, 100, 50)).save(photos / "a.png")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target in (fifo, tmp_path / "dangling"):
        if target.name == "dangling":
            target.symlink_to(tmp_path / "nowhere" / "x.pt")
        message = fv("spectrum", str(photos), "-o", str(target), code=2)
        assert "exists and is not a regular file" in message and len(message.strip().splitlines()) == 1
    assert fifo.is_fifo()
    message = fv("spectrum", str(photos), "-o", "/dev/null", code=2)
    assert "exists and is not a regular file" in message
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


