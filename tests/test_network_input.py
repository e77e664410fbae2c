"""What a picture is of: a layer per call of a module, transforms sized by the network, and a
model's declared input size and normalization (or their absence) used and said."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
import torchvision
from PIL import Image

from conftest import QUICK, TINY, fv, noise_photos
from fvcli.models.capture import forward_to
from fvcli.models.registry import load_model

TESTS = Path(__file__).resolve().parent


# ---- a module called more than once ----


def test_every_call_of_a_resnet_relu_is_its_own_layer():
    listing = fv("layers", "--model", "resnet18", "--weights", "random", "layer1.0.relu*")
    names = [line.split()[0] for line in listing.splitlines()[1:-1]]
    assert names == ["layer1.0.relu", "layer1.0.relu_pre_relu", "layer1.0.relu_call2", "layer1.0.relu_call2_pre_relu"]
    assert "its bare name is its first call" in listing.splitlines()[-1]
    assert "relu_call3" not in fv("layers", "--model", "resnet18", "--weights", "random")  # called twice a block, not three times


def test_a_later_call_reads_what_a_hook_on_that_call_sees():
    model = load_model("resnet18", "random", 0, quiet=True).module
    seen = []
    handle = model.layer2[1].relu.register_forward_hook(lambda m, i, o: seen.append(o.clone()))
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    try:
        with torch.no_grad():
            got = forward_to(model, x, ["layer2.1.relu", "layer2.1.relu_call2", "layer2.1.relu_call2_pre_relu"])
    finally:
        handle.remove()
    assert len(seen) == 2 and not torch.equal(seen[0], seen[1])
    assert torch.equal(got["layer2.1.relu"], seen[0]) and torch.equal(got["layer2.1.relu_call2"], seen[1])
    assert torch.equal(got["layer2.1.relu_call2_pre_relu"].clamp(min=0), seen[1])  # the residual sum, before its ReLU


def test_a_later_calls_images_and_examples_differ_from_the_first_calls(tmp_path):
    for layer in ("layer1.0.relu", "layer1.0.relu_call2"):
        fv("render", f"{layer}:0-1", "--model", "resnet18", *QUICK, "--out", str(tmp_path))
    first, second = (tmp_path / "resnet18" / layer for layer in ("layer1.0.relu", "layer1.0.relu_call2"))
    assert (first / "layer1.0.relu_0000.png").read_bytes() != (second / "layer1.0.relu_call2_0000.png").read_bytes()
    assert json.loads((second / "grid.json").read_text())["layer"] == "layer1.0.relu_call2"
    photos = noise_photos(tmp_path / "photos", 6, (48, 48))
    fv("examples", "layer1.0.relu:0", "layer1.0.relu_call2:0", "--model", "resnet18", "--weights", "random", "--images", str(photos), "--k", "2", "--out", str(tmp_path / "ex"))
    values = [
        [e["value"] for e in json.loads((tmp_path / "ex" / "resnet18" / layer / "examples" / "examples.json").read_text())["units"][0]["top"]]
        for layer in ("layer1.0.relu", "layer1.0.relu_call2")
    ]
    assert values[0] != values[1]


def test_a_later_calls_negative_image_reads_its_own_pre_relu_twin(tmp_path):
    fv("render", "--model", "resnet18", *QUICK, "--steps", "2", "--out", str(tmp_path), "--", "-layer1.0.relu_call2:0", "layer1.0.relu_call2_pre_relu:1")
    negative = json.loads((tmp_path / "resnet18" / "neg_layer1.0.relu_call2_0" / "grid.json").read_text())
    assert negative["units"][0]["objective"] == "-layer1.0.relu_call2_pre_relu:0"
    assert negative["pre_relu"]["of_module"] == "layer1.0.relu_call2"
    twin = json.loads((tmp_path / "resnet18" / "layer1.0.relu_call2_pre_relu" / "grid.json").read_text())
    assert twin["layer"] == "layer1.0.relu_call2_pre_relu"


def test_a_call_a_module_never_makes_is_an_unknown_layer():
    out = fv("render", "layer1.0.relu_call3:0", "--model", "resnet18", *QUICK, "--dry-run", code=2)
    assert "layer1.0.relu_call3" in out and len(out.strip().splitlines()) == 1


# ---- transforms sized by the network ----


def test_googlenet_at_48_px_gets_the_networks_transforms_and_its_channels_rise(tmp_path):
    """The issue's case: random GoogLeNet at 48 px. Transforms shrunk with the picture (pad 5,
    jitter 3 and 2) moved its features by less than their size; GoogLeNet declares 224 px, so it
    gets the full amounts whatever --size is (and, being of ImageNet scale, the robust preset). (Its
    random-weight logit is too flat an objective to judge by: float32 and bf16 runs of 24 steps end
    on either side of the start.)"""
    fv("render", "mixed4a:0-3", "--weights", "random", "--steps", "24", "--size", "48", "--out", str(tmp_path))
    sidecar = json.loads((tmp_path / "googlenet" / "mixed4a" / "grid.json").read_text())
    assert sidecar["settings"]["transforms_preset"] == "robust"
    assert [t.get("pixels") for t in sidecar["settings"]["transforms"]] == [24, 24, None, None, 12]
    assert sidecar["settings"]["transforms_sized_by"] == {"share": 1.0, "rule": "the network declares 224 px: the preset's amounts"}
    assert all(u["activation_final"] > u["activation_start"] for u in sidecar["units"])


def test_a_factorys_declared_size_sizes_its_transforms(tmp_path):
    fv("render", "conv3:0", "--model", f"{TESTS / 'tiny_model.py'}:make_with_preprocessing", "--weights", "random", "--steps", "2", "--out", str(tmp_path))
    settings = json.loads((tmp_path / "tiny_model.make_with_preprocessing" / "conv3" / "grid.json").read_text())["settings"]
    assert [t.get("pixels") for t in settings["transforms"]] == [4, 3, None, None, 1]  # 40/128 of 12, 8, 4, rounded


# ---- a model's declared size and normalization ----


def test_a_declared_size_is_the_default_size_and_the_sidecar_says_so(tmp_path):
    factory = f"{TESTS / 'tiny_model.py'}:make_with_preprocessing"
    fv("render", "conv3:0", "--model", factory, "--weights", "random", "--steps", "2", "--out", str(tmp_path / "a"))
    folder = tmp_path / "a" / "tiny_model.make_with_preprocessing" / "conv3"
    assert Image.open(folder / "conv3_0000.png").size == (40, 40)
    assert json.loads((folder / "grid.json").read_text())["size_from"] == "model"
    fv("render", "conv3:0", "--model", factory, "--weights", "random", "--steps", "2", "--size", "24", "--out", str(tmp_path / "b"))
    folder = tmp_path / "b" / "tiny_model.make_with_preprocessing" / "conv3"
    assert Image.open(folder / "conv3_0000.png").size == (24, 24)
    assert json.loads((folder / "grid.json").read_text())["size_from"] == "--size"
    fv("render", "conv3:0", "--model", TINY, "--weights", "random", "--steps", "2", "--out", str(tmp_path / "c"))
    folder = tmp_path / "c" / "tiny_model.make" / "conv3"
    assert Image.open(folder / "conv3_0000.png").size == (128, 128)  # it declares none: fv's default
    assert json.loads((folder / "grid.json").read_text())["size_from"] == "default"


def test_no_declared_normalization_is_said_in_one_line_not_an_error(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "fvcli", "render", "conv3:0", "--model", TINY, "--weights", "random", "--steps", "2", "--size", "16", "--out", str(tmp_path)],
        capture_output=True, text=True,
    )
    assert done.returncode == 0
    hints = [line for line in done.stderr.splitlines() if "declares no input normalization" in line]
    assert len(hints) == 1 and "--normalize imagenet" in hints[0]
    quiet = subprocess.run(
        [sys.executable, "-m", "fvcli", "render", "conv3:0", "--model", f"{TESTS / 'tiny_model.py'}:make_with_preprocessing", "--weights", "random", "--steps", "2", "--size", "16", "--out", str(tmp_path)],
        capture_output=True, text=True,
    )
    assert quiet.returncode == 0 and "declares no input normalization" not in quiet.stderr


def test_a_factory_that_prints_does_not_corrupt_machine_readable_output(tmp_path):
    factory = tmp_path / "chatty.py"
    factory.write_text(
        "import torch\nprint('Loaded pretrained weights for chatty')\n"
        "def make():\n    print('building')\n    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())\n"
    )
    done = subprocess.run([sys.executable, "-m", "fvcli", "layers", "--model", f"{factory}:make", "--json"], capture_output=True, text=True)
    assert done.returncode == 0
    listing = json.loads(done.stdout)
    assert [layer["name"] for layer in listing["layers"]][:2] == ["0", "0_pre_relu"] or listing["layers"][0]["name"] == "0"
    assert "Loaded pretrained weights" in done.stderr and "building" in done.stderr
