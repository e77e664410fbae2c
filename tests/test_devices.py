"""What fv promises on each device, checked on the CPU here and on CUDA where there is a GPU.

On the CPU the same command writes the same bytes. A unit rendered in a batch of another size (the
rest of a resumed run, a shard) starts from the same image and draws the same transforms, but the
batch's size changes the kernels' rounding, and the optimization carries that into visibly
different details; with --batch-size 1, the files are the same bit for bit. On CUDA kernels are
not bit-deterministic either; with --deterministic the same command on the same GPU writes the
same bytes.
"""

import json

import pytest
import torch

from conftest import QUICK, TINY, fv

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def units(folder):
    return {p.name: p for p in sorted(folder.rglob("*.png")) if p.name != "grid.png"}


@pytest.mark.parametrize("device", DEVICES)
def test_deterministic_runs_write_the_same_bytes(tmp_path, device):
    args = ("render", "conv3:0-3", "--model", TINY, "--weights", "random", "--steps", "12", "--size", "24", "--device", device, "--deterministic")
    fv(*args, "--out", str(tmp_path / "a"))
    fv(*args, "--out", str(tmp_path / "b"))
    a, b = units(tmp_path / "a"), units(tmp_path / "b")
    assert len(a) == 4 and a.keys() == b.keys()
    assert all(a[name].read_bytes() == b[name].read_bytes() for name in a)
    engine = json.loads(next((tmp_path / "a").rglob("grid.json")).read_text())["engine"]
    assert engine["deterministic"] is True


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch_size", ["auto", "1"])
def test_a_resumed_run_matches_an_uninterrupted_one(tmp_path, device, batch_size):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    args = ("mixed3a:0-5", *QUICK, "--device", device, "--batch-size", batch_size)
    fv("render", *args, "--out", str(whole))
    fv("render", *args, "--out", str(resumed), "--shard", "0/2")  # as if stopped halfway
    fv("render", *args, "--out", str(resumed))  # the rest, in a smaller batch
    a, b = units(whole), units(resumed)
    assert len(a) == 6 and a.keys() == b.keys()
    if device == "cpu" and batch_size == "1":
        assert all(a[name].read_bytes() == b[name].read_bytes() for name in a)
    left, right = (json.loads(next(f.rglob("grid.json")).read_text())["units"] for f in (whole, resumed))
    assert [u["status"] for u in right] == [u["status"] for u in left]
    finals = [(u["activation_final"], v["activation_final"]) for u, v in zip(left, right)]
    mean_left, mean_right = (sum(x) / len(x) for x in zip(*finals))
    assert mean_right == pytest.approx(mean_left, rel=0.2)  # as far as the run reaches, batch or not


@needs_cuda
def test_batchnorms_fold_and_the_batch_fills_the_gpu(tmp_path):
    fv("render", "mixed4a:0-7", *QUICK, "--device", "cuda", "--out", str(tmp_path))
    sidecar = json.loads(next(tmp_path.rglob("grid.json")).read_text())
    assert sidecar["engine"]["batchnorms_folded"] == 57  # the fold check runs in IEEE float32, not TF32
    assert sidecar["timing"]["batch_sizes"] == [8]  # the memory probe fits all 8 units in one batch
    assert sidecar["settings"]["dtype"] == sidecar["engine"]["dtype"]["chosen"]
    assert all(u["status"] == "ok" and u["activation_final"] > u["activation_start"] for u in sidecar["units"])


@needs_cuda
def test_the_compiled_forward_renders_on_cuda(tmp_path):
    fv("render", "conv3:0-3", "--model", TINY, "--steps", "24", "--size", "32", "--device", "cuda", "--compile", "on", "--out", str(tmp_path))
    sidecar = json.loads(next(tmp_path.rglob("grid.json")).read_text())
    assert sidecar["engine"]["compile"]["compiled"] is True and sidecar["timing"]["compile_seconds"] > 0
    assert all(u["status"] in ("ok", "dead") for u in sidecar["units"])


def test_fv_device_says_what_auto_means(tmp_path, monkeypatch):
    monkeypatch.setenv("FV_DEVICE", "tpu")
    output = fv("render", "conv3:0", "--model", TINY, "--out", str(tmp_path), code=2)
    assert output == "fv: error: --device auto (FV_DEVICE=tpu): expected cpu, cuda, cuda:N or mps\n"
    assert not any(tmp_path.iterdir())
    if not torch.cuda.is_available():
        monkeypatch.setenv("FV_DEVICE", "cuda")
        output = fv("render", "conv3:0", "--model", TINY, "--out", str(tmp_path), code=2)
        assert output == "fv: error: --device auto (FV_DEVICE=cuda): torch sees no CUDA GPU on this machine; unset FV_DEVICE or set it to cpu\n"
    monkeypatch.setenv("FV_DEVICE", "cpu")
    fv("render", "conv3:0", "--model", TINY, "--weights", "random", "--steps", "2", "--size", "24", "--out", str(tmp_path))
    assert json.loads(next(tmp_path.rglob("grid.json")).read_text())["timing"]["device"].startswith("cpu")
