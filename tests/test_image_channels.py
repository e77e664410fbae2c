"""Models of other imagery: grayscale (1 channel), 4-band (RGB + infrared) and small (28, 32 px)
inputs render from the API and from factories; the image has the model's channels."""

import json
import random
import re

import pytest
import torch
from PIL import Image
from torch import nn

import fvcli
from conftest import fv, noise_photos
from fvcli.optvis.images import load_image
from test_api import assert_unchanged, snapshot

STEPS = {"steps": 24, "dtype": "float32", "lr": 0.1}


def mnist_like(channels: int = 1, size: int = 28) -> nn.Module:
    """A LeNet-style classifier of 28 px digits (the commonest grayscale notebook model); its
    Linear layer fixes the input size."""
    torch.manual_seed(0)
    side = ((size - 4) // 2 - 4) // 2
    return nn.Sequential(
        nn.Conv2d(channels, 8, 5), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * side * side, 10),
    )


@pytest.mark.parametrize("channels, size, mode", [(1, 28, "L"), (4, 32, "RGB"), (3, 32, "RGB")])
def test_models_of_any_channel_count_render_and_come_back_unchanged(channels, size, mode):
    model = mnist_like(channels, size).train()
    before = snapshot(model)
    result = fvcli.render(model, "4:0-3", "logit:7", size=size, **STEPS)
    assert_unchanged(model, before)
    assert [image.mode for image in result.images] == [mode] * 4
    assert result.images[0].size == (size, size)
    described = result.sidecar["settings"]["parameterization"]
    assert described.get("channels", 3) == channels
    assert described["decorrelate"] == (channels == 3)  # ImageNet's colour correlation is RGB's
    for record in result.records + result.jobs[1].records:
        assert record["status"] in ("ok", "dead")
        if record["status"] == "ok":
            assert record["activation_final"] > record["activation_start"]
    assert result.jobs[1].records[0]["activation_final"] > result.jobs[1].records[0]["activation_start"]


def test_a_grayscale_png_is_written_as_grayscale(tmp_path):
    fvcli.render(mnist_like(), "4:0-1", size=28, out=tmp_path, **STEPS)
    written = Image.open(tmp_path / "Sequential" / "4" / "4_0000.png")
    assert written.mode == "L" and written.size == (28, 28)
    low, high = written.getextrema()
    assert high - low > 30  # an image, not a flat grey
    grid = json.loads((tmp_path / "Sequential" / "4" / "grid.json").read_text())
    assert grid["settings"]["parameterization"]["channels"] == 1


def test_normalization_must_fit_the_channels():
    with pytest.raises(fvcli.FvError, match=r"--normalize imagenet does not fit Sequential, whose images have 1 channel; give one, or none"):
        fvcli.render(mnist_like(), "4:0", size=28, normalize="imagenet", **STEPS)
    with pytest.raises(fvcli.FvError, match=r"2 means and standard deviations does not fit Sequential, whose images have 4 channels; give 1 or 4"):
        fvcli.render(mnist_like(4, 32), "4:0", size=32, normalize="0.5,0.5/0.2,0.2", **STEPS)
    # One mean and std per channel, or one for all: MNIST's own statistics.
    result = fvcli.render(mnist_like(), "4:0", size=28, normalize="0.1307/0.3081", **STEPS)
    assert result.sidecar["settings"]["normalization"] == {"mean": [0.1307], "std": [0.3081]}


FACTORY = """
from torch import nn

def make():
    return nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.Conv2d(6, 8, 3, stride=2), nn.ReLU())
"""


def test_a_grayscale_factory_renders_and_lists_from_the_cli(tmp_path):
    (tmp_path / "gray.py").write_text(FACTORY)
    model = f"{tmp_path / 'gray.py'}:make"
    listed = json.loads(fv("layers", "--model", model, "--json"))
    assert [row["name"] for row in listed["layers"]][:2] == ["0", "1"]
    fv("render", "2:0-2", "--model", model, "--size", "28", "--steps", "8", "--out", str(tmp_path / "out"), "-q")
    images = sorted((tmp_path / "out").rglob("2_*.png"))
    assert len(images) == 3 and all(Image.open(p).mode == "L" for p in images)
    assert Image.open(images[0].parent / "grid.png").mode == "RGB"  # grayscale cells on the grid's background


def test_dataset_examples_of_a_grayscale_model_see_the_photos_luma(tmp_path):
    folder = noise_photos(tmp_path / "photos", 6, size=(36, 40), seed=3)
    model = mnist_like()
    before = snapshot(model)
    examples = fvcli.examples(model, "4:0-3", images=folder, k=2, crop=16)
    assert_unchanged(model, before)
    assert [record["channel"] for record in examples.records] == [0, 1, 2, 3]
    assert all(len(record["top"]) == 2 for record in examples.records)
    # The values are those of the photos in grayscale (BT.601 luma), as the model was trained to see.
    size = examples.layers[0].sidecar["input_size"]
    with torch.no_grad():
        for record in examples.records:
            best = record["top"][0]
            rgb = load_image(folder / best["path"], size)
            luma = (rgb * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)
            out = model.eval()[:5](luma[None])[0, record["channel"]]
            assert out.max().item() == pytest.approx(best["value"], rel=1e-3, abs=1e-5)
    with pytest.raises(fvcli.FvError, match="dataset examples need a model that takes RGB or grayscale images; Sequential takes 4 channels"):
        fvcli.examples(mnist_like(4), "4:0", images=folder)


def test_a_grayscale_models_caricature_reads_the_photos_luma(tmp_path):
    photo = tmp_path / "photo.png"
    rng = random.Random(5)
    Image.frombytes("RGB", (40, 40), rng.randbytes(40 * 40 * 3)).save(photo)
    result = fvcli.render(mnist_like(), f"caricature(4, '{photo}')", size=28, **STEPS)
    record = result.records[0]
    assert result.images[0].mode == "L"
    assert record["activation_final"] > record["activation_start"]
    with pytest.raises(fvcli.FvError, match=r"photo .*photo.png: a photo has 3 channels \(RGB\) and the model's images 4"):
        fvcli.render(mnist_like(4, 32), f"inversion(4, '{photo}')", size=32, **STEPS)


def test_a_model_with_lazy_layers_fails_in_one_line_until_it_has_run_once(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))
    message = r"its layer 3 \(LazyLinear\) has uninitialized lazy parameters; run one forward pass"
    with pytest.raises(fvcli.FvError, match=message):
        fvcli.render(model, "3:0", size=28, **STEPS)
    (tmp_path / "lazy.py").write_text(
        "from torch import nn\n\ndef make():\n    return nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))\n"
    )
    output = fv("render", "3:0", "--model", f"{tmp_path / 'lazy.py'}:make", "--out", str(tmp_path / "out"), code=2)
    assert "has uninitialized lazy parameters" in output and not (tmp_path / "out").exists()
    model(torch.zeros(1, 1, 28, 28))  # shaped: now it renders
    assert fvcli.render(model, "3:0-1", size=28, **STEPS).records[0]["status"] == "ok"


class LeNet(nn.Module):
    """The classic 28 px digit classifier, as a notebook writes it: its first Linear layer takes
    the 16 x 4 x 4 features of a 28 px image, so 64 px gives it 16 x 13 x 13 = 2704."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(256, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x.flatten(1))))))


def test_a_model_whose_linear_layer_fixes_its_size_renders_at_any_size_resized_to_the_one_it_takes(capsys):
    lenet = LeNet()
    for target in ("fc1:0-1", "logit:3"):  # at and past the Linear layer: seen at 28 px
        result = fvcli.render(lenet, target, size=64, quiet=False, progress=False, **STEPS)
        assert result.sidecar["model_input_size"] == 28 and result.images[0].size == (64, 64)
        assert all(r["activation_final"] > r["activation_start"] for r in result.records)
        said = capsys.readouterr().err
        assert "fv: LeNet takes 28x28 images only (its Linear layer fc1 expects 256 features, and a 64 px image gives it 2704): " in said
    # Layers before it take the whole 64 px image, whatever the rest of the model takes.
    conv = fvcli.render(lenet, "conv2:0", size=64, **STEPS)
    assert conv.sidecar["model_input_size"] is None and conv.sidecar["layer_shape"] == [1, 16, 26, 26]
    assert [(row["name"], row["shape"]) for row in fvcli.layers(lenet)][-3:] == [("fc1", "(1, 120)"), ("fc2", "(1, 84)"), ("fc3", "(1, 10)")]


def test_a_linear_layer_that_no_image_size_fits_is_one_line():
    odd = nn.Sequential(nn.Conv2d(1, 16, 3), nn.Flatten(), nn.Linear(16 * 7 * 7 + 1, 10))  # 16 x side² never makes 785
    message = (
        "model Sequential takes images of one size only (its Linear layer 2 expects 785 features, and a 64 px image "
        "gives it 61504); no side up to 2048 px gives it 785"
    )
    with pytest.raises(fvcli.FvError, match=re.escape(f"target logit:1: {message}")):
        fvcli.render(odd, "logit:1", size=64, **STEPS)
    with pytest.raises(fvcli.FvError, match=re.escape(message.replace("64 px image gives it 61504", "128 px image gives it 254016"))):
        fvcli.layers(odd)
