"""The memory of a run is bounded by figures the README states, checked before the work starts
(issue 29, class D): images decoded at once (optvis.images.DECODE_MEMORY), an atlas's samples and
layout (atlas.atlas_memory.ATLAS_MEMORY), and nothing read that fv's records do not list. Real
files (16-bit PNGs at the pixel limit, sparse files), real processes measured by their peak RSS."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY, fv, noise_photos

ODD = f"{Path(__file__).parent / 'odd_models.py'}"


def bomb_pngs(folder: Path, count: int) -> Path:
    """`count` 16-bit grey PNGs of 16,384 x 16,384 pixels (the pixel limit), 570 KB each."""
    import numpy as np
    from PIL import Image

    folder.mkdir()
    for i in range(count):
        Image.fromarray(np.full((16_384, 16_384), 1000 * (i + 1), dtype=np.uint16)).save(folder / f"grey{i}.png")
    return folder


@pytest.mark.slow
def test_images_decoded_at_once_stay_within_the_decode_memory(tmp_path):
    """Collection decodes images on four threads: two such PNGs took 5 GB at once, four 10.4 GB."""
    folder = bomb_pngs(tmp_path / "bombs", 2)
    script = (
        # VmHWM, this program's own peak: ru_maxrss keeps a forking pytest worker's peak across exec,
        # which would hide the decoding's peak under it.
        "import sys; from pathlib import Path; from concurrent.futures import ThreadPoolExecutor\n"
        "from fvcli.atlas.dataset_examples import try_load\n"
        "peak = lambda: next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM'))\n"
        "files = sorted(Path(sys.argv[1]).iterdir()); base = peak()\n"
        "with ThreadPoolExecutor(4) as pool: loaded = list(pool.map(lambda f: try_load(f, 224), files))\n"
        "assert all(x is not None for x in loaded)\n"
        "print((peak() - base) * 1024)"
    )
    done = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) < 5 << 29, f"{int(done.stdout) >> 20} MiB above the start"  # README: 2.5 GiB


def test_an_atlas_beyond_its_memory_bound_is_refused_before_collecting(tmp_path):
    """50 small PNGs with --samples 1000 --n-neighbors 1000 took 4.5 GB and 10 minutes; --whiten
    of a 7,000-channel layer over 2 GB and minutes of uninterruptible inversion."""
    photos = noise_photos(tmp_path / "photos", 50)
    common = ["--model", TINY, "--weights", "random", "--images", str(photos), "--grid", "2", "--out", str(tmp_path / "o")]
    said = fv("render", "--activation-atlas", "conv3", *common, "--samples", "1000", "--n-neighbors", "1000", code=2)
    assert said.count("\n") == 1 and "50,000 samples of 12 channels with n_neighbors 1000 would take about" in said, said
    assert "an atlas takes at most 2 GiB" in said
    said = fv("render", "--activation-atlas", "wide", *common, "--model", f"{ODD}:make_wide", "--samples", "4", "--whiten", code=2)
    assert said.count("\n") == 1 and "fv whitens layers of at most 4,096 channels" in said, said
    assert not (tmp_path / "o").exists()


def test_the_api_reads_back_only_the_files_fv_lists(small_atlas, tmp_path):
    """fvcli.activation_atlas(out=FOLDER) read every file under the job folder (rglob), a user's
    sparse 900 MB files too, and Atlas.save copied them."""
    import shutil

    import fvcli

    out = tmp_path / "out"
    shutil.copytree(small_atlas, out, symlinks=True)
    job = out / "tiny_model.make" / "atlas-conv3"
    with open(job / "my-video.mp4", "wb") as file:
        file.truncate(900_000_000)
    (job / "notes.txt").write_text("mine")
    atlas = fvcli.activation_atlas(TINY, "conv3", small_atlas.parent / "photos", grid=2, samples=4, steps=4, size=32,
                                   transforms="none", weights="random", out=out)
    assert atlas.folder == "tiny_model.make/atlas-conv3", atlas.folder  # the folder the CLI wrote
    assert not any(name.endswith(("my-video.mp4", "notes.txt")) for name in atlas.files)
    assert any(name.endswith("atlas.json") for name in atlas.files) and len(atlas.icons) == len(atlas.cells)
    saved = atlas.save(tmp_path / "copy")
    assert not any(path.name in ("my-video.mp4", "notes.txt") for path in saved)
    assert os.path.getsize(job / "my-video.mp4") == 900_000_000

