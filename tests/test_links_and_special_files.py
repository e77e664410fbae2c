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




@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_files_fv_reads_back_are_regular_and_bounded(tmp_path):
    """A unit's PNG, a grid.json, a shard manifest, examples.json and a checkpoint are read back
    only when they are regular files of a size fv writes: a FIFO in their place stopped a resumed
    render, fv atlas, fv merge and fv examples forever; a sparse file of 20 GB was read whole."""
    out = tmp_path / "out"
    folder = out.joinpath(*FOLDER)
    fv("render", "relu3:0-1", *RUN[1:], "--out", str(out))
    (folder / "relu3_0001.png").unlink()
    os.mkfifo(folder / "relu3_0001.png")  # resume reads every unit's record
    done = fv_subprocess("render", "relu3:0-1", *RUN[1:], "--out", str(out))
    assert done.returncode == 3 and "relu3_0001.png: exists and is not a regular file" in done.stderr, done.stderr
    (folder / "relu3_0001.png").unlink()
    with open(folder / "relu3_0001.png", "wb") as sparse:
        sparse.truncate(20 << 30)  # costs no disk; a size is no hang, so in this process
    fv("render", "relu3:0-1", *RUN[1:], "--out", str(out))
    assert (folder / "relu3_0001.png").stat().st_size < 1 << 20  # rendered again

    grid = folder / "grid.json"
    kept = grid.read_bytes()
    grid.unlink()
    os.mkfifo(grid)
    done = fv_subprocess("atlas", str(out))
    assert done.returncode == 2 and "unreadable grid.json" in done.stderr and "[Errno" not in done.stderr, done.stderr
    grid.unlink()
    with open(grid, "wb") as sparse:
        sparse.truncate(20 << 30)
    said = fv("atlas", str(out), code=2)
    assert "unreadable grid.json" in said and "more than fv writes there" in said, said
    grid.unlink()
    grid.write_bytes(kept)

    shards = tmp_path / "shards"
    for shard in ("0/2", "1/2"):
        fv("render", "relu3:0-3", *RUN[1:], "--out", str(shards), "--shard", shard)
    manifest = shards.joinpath(*FOLDER, "grid.shard-0-of-2.json")
    for path in shards.joinpath(*FOLDER).glob("grid.*"):
        path.unlink()
    fv("render", "relu3:0-3", *RUN[1:], "--out", str(shards), "--shard", "1/2")  # its manifest again, not merged
    os.mkfifo(manifest)
    done = fv_subprocess("merge", str(shards))
    assert done.returncode == 2 and "grid.shard-0-of-2.json is damaged" in done.stderr + done.stdout, done.stderr

    from conftest import noise_photos

    photos = noise_photos(tmp_path / "photos", 4)
    examples = ["examples", "relu3:0-1", "--model", TINY, "--weights", "random", "--images", str(photos), "--out", str(out), "-q"]
    fv(*examples)
    record = folder / "examples" / "examples.json"
    record.unlink()
    os.mkfifo(record)
    done = fv_subprocess(*examples)
    assert done.returncode == 3 and "examples.json: exists and is not a regular file" in done.stderr, done.stderr
