"""Shared helpers: the tiny model's factory string and a CLI runner that checks exit statuses."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from fvcli.cli import cli

TINY = f"{Path(__file__).parent / 'tiny_model.py'}:make"
# GoogLeNet with random weights at a size and step count that run in about a second on 2 cores.
QUICK = ["--weights", "random", "--steps", "8", "--size", "48"]

# Under pytest-xdist each worker process takes one core: two threads apiece would make the workers
# wait on each other's preempted threads (fvcli.run.tuning explains the collapse); their fv subprocesses
# inherit the count. Run alone, the suite uses two.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(2)
# `--device auto` means the CPU in this suite, in its subprocesses too: what these tests check
# (byte-identical resumes, shards and workers) is what fv promises on the CPU. On a machine with a
# GPU, tests/test_cuda.py checks what fv promises there.
os.environ["FV_DEVICE"] = "cpu"
# What --dtype auto measures is remembered in a cache of the suite's own, not the user's.
os.environ["FV_CACHE_DIR"] = tempfile.mkdtemp(prefix="fv-test-cache-")


def fv(*args: str, code: int = 0) -> str:
    """Run `fv ARGS` through click's runner and fv's own error handling; check the exit status."""
    result = CliRunner().invoke(cli, list(args), prog_name="fv")
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == code, f"exit {result.exit_code}, expected {code}:\n{result.output}"
    return result.output


import pytest  # noqa: E402


def noise_photos(folder: Path, count: int, size: tuple[int, int] = (40, 40), seed: int = 0) -> Path:
    """A folder of `count` PNG pictures of uniform noise (width, height), for dataset examples."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    for i in range(count):
        pixels = (torch.rand(size[1], size[0], 3, generator=generator) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"p{i}.png")
    return folder


SMALL_ATLAS = ["--activation-atlas", "conv3", "--model", TINY, "--weights", "random", "--samples", "4", "--grid", "2",
               "--size", "32", "--steps", "4", "--transforms", "none", "-q"]


@pytest.fixture(scope="session")
def small_atlas(tmp_path_factory) -> Path:
    """An OUT with an activation atlas of 2x2 cells, a plain job, and their web atlas, made once
    (about 15 s); tests copy it before they change it."""
    root = tmp_path_factory.mktemp("small-atlas")
    photos = noise_photos(root / "photos", 12)
    fv("render", *SMALL_ATLAS, "--images", str(photos), "--out", str(root / "out"))
    fv("render", "conv3:0-1", "--model", TINY, "--weights", "random", "--size", "32", "--steps", "4", "-q", "--out", str(root / "out"))
    fv("atlas", str(root / "out"))
    return root / "out"


@pytest.fixture
def atlas_out(small_atlas, tmp_path) -> Path:
    """A copy of small_atlas's OUT, the test's own to change."""
    shutil.copytree(small_atlas, tmp_path / "out", symlinks=True)
    return tmp_path / "out"


def atlas_job(out: Path) -> Path:
    """The activation atlas's job folder in a copy of small_atlas."""
    return out / "tiny_model.make" / "atlas-conv3"


@pytest.fixture
def tiny() -> str:
    return TINY


@pytest.fixture(scope="session")
def atlas_site(tmp_path_factory):
    """A small real atlas (tests/atlas_site.py), built once for the atlas tests, which only read it."""
    from atlas_site import build_site

    return build_site(tmp_path_factory.mktemp("atlas"))


@pytest.fixture
def float64():
    """Tensors made in the test default to float64, then back to float32. In float64 the rounding
    of kernels that block a batch differently (AVX2 against AVX-512, one image against three) is
    too small for a few optimizer steps to amplify, so what remains is the arithmetic itself."""
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(torch.float32)


def pytest_report_header(config):
    """What this run tests, at the top of its log: the versions a new user's pip gave, and the CPU."""
    import platform

    import torchvision

    capability = torch.backends.cpu.get_cpu_capability()
    return [
        f"fv tested with: Python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"CPU {platform.machine()} {capability} ({os.cpu_count()} cores), CUDA {'yes' if torch.cuda.is_available() else 'no'}"
    ]
