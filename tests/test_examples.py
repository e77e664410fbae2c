"""`fv examples`: the JSON and strips, correctness against a brute-force pass, one forward pass a batch
for every layer, resuming after a real SIGINT, skipped files, bad input, and a spec's `examples:`."""

import json
import random
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import TINY, fv
from fvcli.errors import FvError
from fvcli.atlas.example_state import LayerState
from fvcli.optvis.images import Placement, load_image
from fvcli.specs.requests import JobRequest
from fvcli.models.registry import load_model
from fvcli.specs.settings import RenderSettings
from fvcli.specs.spec import load_examples, load_spec
from fvcli.specs.grammar import parse_target

TESTS = Path(__file__).parent
SIZE = 40  # the input size tiny_model.make_with_preprocessing declares

# The tiny model with its preprocessing (mean 0.5, std 0.25, 40 px). A pre-hook logs the batch size
# of every forward pass over dataset images (not the layer probes, which feed zeros, nor the receptive
# field measurement, which needs gradients, nor random-weight calibration at 128 px), and sends this
# process a real SIGINT on the N-th such pass when FV_TEST_SIGINT_AT=N.
FACTORY = f"""
import os, signal, sys
import torch
sys.path.insert(0, {str(TESTS)!r})
import tiny_model

passes = 0


def make():
    model, preprocessing = tiny_model.make_with_preprocessing()

    def log(module, inputs):
        global passes
        x = inputs[0]
        if x.shape[-1] != {SIZE} or torch.is_grad_enabled() or bool((x == 0).all()):
            return
        passes += 1
        with open(os.environ["FV_TEST_LOG"], "a") as f:
            f.write(f"{{x.shape[0]}}\\n")
        if passes == int(os.environ.get("FV_TEST_SIGINT_AT", "0")):
            os.kill(os.getpid(), signal.SIGINT)

    model.register_forward_pre_hook(log)
    return model, preprocessing
"""


@pytest.fixture
def images(tmp_path) -> Path:
    """10 readable images (noise, 32-48 px, some not square; one JPEG; two in a subfolder), one corrupt
    file, and one file that is not an image."""
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    rng = random.Random(7)
    sizes = [(40, 40), (48, 32), (32, 48), (44, 44), (40, 36), (36, 40), (48, 48), (32, 32), (40, 40), (44, 40)]
    for i, size in enumerate(sizes):
        name = f"sub/img{i}.png" if i >= 8 else f"img{i}.jpg" if i == 3 else f"img{i}.png"
        Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3)).save(folder / name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture
def factory(tmp_path, monkeypatch) -> str:
    path = tmp_path / "counted.py"
    path.write_text(FACTORY)
    monkeypatch.setenv("FV_TEST_LOG", str(tmp_path / "passes.log"))
    return f"{path}:make"


def passes(tmp_path) -> list[int]:
    """The batch sizes of the forward passes over images since the last call."""
    log = tmp_path / "passes.log"
    sizes = [int(line) for line in log.read_text().split()] if log.exists() else []
    log.unlink(missing_ok=True)
    return sizes


def collect(factory, images, out, *targets, code=0, **options):
    args = {"k": "3", "crop": "20", "batch-size": "4", **options}
    flat = [item for key, value in args.items() for item in (f"--{key}", value) if item is not None]  # None: a flag
    return fv("examples", *targets, "--model", factory, "--weights", "random", "--images", str(images), "--out", str(out), *flat, code=code)


def brute_force(factory, images, layer_index, channel):
    """Every readable image alone through the first layers of the model: (path, max, argmax, min, argmin)."""
    model = load_model(factory, "random", 0, quiet=True).module
    head = torch.nn.Sequential(*list(model.children())[: layer_index + 1])
    rows = []
    for path in sorted((p for p in images.rglob("*") if p.suffix in (".png", ".jpg")), key=lambda p: p.relative_to(images).as_posix()):
        try:
            x = load_image(path, SIZE)
        except OSError:
            continue
        with torch.no_grad():
            act = head(((x - 0.5) / 0.25)[None])[0, channel]  # the factory's normalization
        rows.append((path.relative_to(images).as_posix(), act.max().item(), int(act.argmax()), act.min().item(), int(act.argmin()), act.shape[-1], act.mean().item()))
    return rows


def test_json_strips_and_brute_force_agreement(tmp_path, images, factory):
    out = tmp_path / "out"
    output = collect(factory, images, out, "conv2:0-3", "relu3:5", "conv2:15")
    assert passes(tmp_path) == [4, 4, 2]  # one pass over 10 images serves both layers
    assert "skipped 1 unreadable image file in" in output and "broken.jpg" in output

    folder = JobRequest(target=parse_target("conv2:0-3"), settings=RenderSettings(model=factory), out=str(out)).folder / "examples"
    assert folder == out / "counted.make" / "conv2" / "examples"
    record = json.loads((folder / "examples.json").read_text())
    assert record["schema_version"] == 1 and len(record["hash"]) == 64
    assert record["model"] == {"name": factory, "weights": "random(seed=0)", "weights_sha256": None}
    assert (record["layer"], record["layer_module"], record["input_size"], record["k"], record["crop"]) == ("conv2", "conv2", SIZE, 3, 20)
    assert record["images"] == {"folder": str(images), "seen": 10, "skipped": 1, "skipped_files": ["broken.jpg"]}
    assert [u["channel"] for u in record["units"]] == [0, 1, 2, 3, 15]
    for unit in record["units"]:
        label = f"{unit['channel']:04d}"
        assert (unit["label"], unit["strip"], unit["negative_strip"]) == (label, f"{label}.png", f"{label}_neg.png")
        for name in (unit["strip"], unit["negative_strip"]):
            assert Image.open(folder / name).size == (3 * 20 + 2 * 2, 20)
        assert len(unit["top"]) == len(unit["bottom"]) == 3
        for entry in unit["top"] + unit["bottom"]:
            width, height = Image.open(images / entry["path"]).size
            left, top, right, bottom = entry["box"]
            assert 0 <= left < right <= width and 0 <= top < bottom <= height
            assert all(0 <= p < 20 for p in entry["position"])  # conv2's grid at 40 px is 20 x 20
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [".state.pt", "examples.json"] + [f"{c:04d}{end}.png" for c in (0, 1, 2, 3, 15) for end in ("", "_neg")]
    )
    assert (out / "counted.make" / "relu3" / "examples" / "0005.png").is_file()

    unit = record["units"][2]  # channel 2 of conv2 (module 2 of the Sequential)
    rows = brute_force(factory, images, 2, 2)
    top = sorted(rows, key=lambda r: (-r[1], -r[6]))[:3]
    bottom = sorted(rows, key=lambda r: (r[3], r[6]))[:3]
    assert [e["path"] for e in unit["top"]] == [r[0] for r in top]
    assert [e["value"] for e in unit["top"]] == pytest.approx([r[1] for r in top], rel=1e-4)
    assert [e["position"] for e in unit["top"]] == [list(divmod(r[2], r[5])) for r in top]
    assert [e["path"] for e in unit["bottom"]] == [r[0] for r in bottom]
    assert [e["value"] for e in unit["bottom"]] == pytest.approx([r[3] for r in bottom], rel=1e-4)
    assert [e["position"] for e in unit["bottom"]] == [list(divmod(r[4], r[5])) for r in bottom]
    assert [e["mean"] for e in unit["bottom"]] == pytest.approx([r[6] for r in bottom], rel=1e-4)

    # The bottom of a layer after a ReLU is read before it (relu3_pre_relu: conv3's output), where
    # minima differ; the top reads relu3 itself.
    relu = json.loads((out / "counted.make" / "relu3" / "examples" / "examples.json").read_text())["units"][0]
    rows = brute_force(factory, images, 5, 5)
    assert [e["path"] for e in relu["bottom"]] == [r[0] for r in sorted(rows, key=lambda r: (r[3], r[6]))[:3]]
    assert [e["value"] for e in relu["bottom"]] == pytest.approx([r[3] for r in sorted(rows, key=lambda r: (r[3], r[6]))[:3]], rel=1e-4)
    assert relu["bottom"][0]["value"] < 0
    assert [e["path"] for e in relu["top"]] == [r[0] for r in sorted(rows, key=lambda r: (-r[1], -r[6]))[:3]]

    # With pre_relu off, after a ReLU the minimum is 0 almost everywhere: the bottom is then ranked by the mean.
    collect(factory, images, out / "off", "relu3:5", **{"pre-relu": "off"})
    passes(tmp_path)
    relu = json.loads((out / "off" / "counted.make" / "relu3" / "examples" / "examples.json").read_text())["units"][0]
    rows = brute_force(factory, images, 6, 5)
    assert [e["path"] for e in relu["bottom"]] == [r[0] for r in sorted(rows, key=lambda r: (r[3], r[6]))[:3]]
    assert all(e["value"] == 0 for e in relu["bottom"]) and len({e["mean"] for e in relu["bottom"]}) > 1
    values = [e["value"] for e in unit["top"]]
    assert values == sorted(values, reverse=True) and unit["bottom"][0]["value"] < 0 < values[0]

    # Up to date: skipped without a pass; --force collects again.
    assert "already collected" in collect(factory, images, out, "conv2:0-3", "relu3:5", "conv2:15")
    assert passes(tmp_path) == []
    collect(factory, images, out, "conv2:0-3", "relu3:5", "conv2:15", force=None)
    assert passes(tmp_path) == [4, 4, 2]


def test_a_sigint_keeps_the_state_and_the_next_run_continues(tmp_path, images, factory, monkeypatch):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    collect(factory, images, whole, "conv2:0-5", **{"batch-size": "2"})
    assert passes(tmp_path) == [2] * 5

    monkeypatch.setenv("FV_TEST_SIGINT_AT", "2")
    output = collect(factory, images, parts, "conv2:0-5", code=130, **{"batch-size": "2"})
    assert "stopped by SIGINT after" in output
    folder = parts / "counted.make" / "conv2" / "examples"
    assert sorted(p.name for p in folder.iterdir()) == [".state.pt"]  # the state, and nothing half-written
    assert passes(tmp_path) == [2, 2]

    monkeypatch.delenv("FV_TEST_SIGINT_AT")
    assert "continuing after image" in collect(factory, images, parts, "conv2:0-5", **{"batch-size": "2"})
    assert passes(tmp_path) == [2, 2, 2]  # the remaining six images only
    expected = whole / "counted.make" / "conv2" / "examples"
    assert json.loads((folder / "examples.json").read_text()) == json.loads((expected / "examples.json").read_text())
    for strip in expected.glob("*.png"):
        assert (folder / strip.name).read_bytes() == strip.read_bytes(), strip.name


def test_preprocessing_cuts_the_centred_square_and_boxes_map_back(tmp_path):
    image = Image.new("RGB", (80, 40), (0, 255, 0))
    image.paste((255, 0, 0), (0, 0, 20, 40))
    image.paste((0, 0, 255), (60, 0, 80, 40))
    image.save(tmp_path / "wide.png")
    x = load_image(tmp_path / "wide.png", SIZE)
    assert x.shape == (3, SIZE, SIZE) and torch.equal(x[1], torch.ones(SIZE, SIZE)) and x[0].max() == 0 and x[2].max() == 0
    placement = Placement(160, 80, SIZE)  # resized to 80 x 40; the square starts 20 px in
    assert placement.to_original((0, 0, SIZE, SIZE)) == [40, 0, 120, 80]
    assert placement.to_original((10, 5, 20, 15)) == [60, 10, 80, 30]


def test_a_picture_a_camera_stored_sideways_is_read_upright(tmp_path):
    picture = Image.new("RGB", (60, 40))
    picture.paste((255, 0, 0), (0, 0, 30, 40))  # red left half, as the camera stored it
    exif = Image.Exif()
    exif[0x0112] = 6  # "turn 90 degrees clockwise to view"
    picture.save(tmp_path / "sideways.jpg", exif=exif, quality=95)
    picture.transpose(Image.Transpose.ROTATE_270).save(tmp_path / "upright.png")  # as a viewer shows it
    seen, expected = load_image(tmp_path / "sideways.jpg", 32), load_image(tmp_path / "upright.png", 32)
    assert seen.shape == (3, 32, 32)
    assert (seen - expected).abs().mean() < 0.03  # JPEG noise only; unturned, half the image differs


def test_the_kept_images_do_not_depend_on_batching_even_with_ties():
    """Values with many exact ties (as after a ReLU) and a NaN, merged in batches of 3 and of 16: the
    same images, ranked by (extreme, mean), earlier ones first among full equals."""
    g = torch.Generator().manual_seed(0)
    high = torch.randint(0, 3, (40, 5), generator=g).float()
    low = -torch.randint(0, 3, (40, 5), generator=g).float()
    mean = torch.randint(0, 2, (40, 5), generator=g).float()
    high[4, 0] = float("nan")
    at = torch.randint(0, 9, (40, 5), generator=g)
    states = []
    for batch in (3, 16):
        state = LayerState(5, 4)
        for start in range(0, 40, batch):
            rows = slice(start, start + batch)
            state.update(high[rows], at[rows], low[rows], at[rows], mean[rows], torch.arange(40)[rows])
        states.append(state)
    for name, tensor in states[0].tensors.items():
        assert torch.equal(tensor, states[1].tensors[name]), name
    best = sorted(range(40), key=lambda i: (-(high[i, 0].nan_to_num(-1).item()), -mean[i, 0].item(), i))[:4]
    assert [entry[0] for entry in states[0].entries(0, "top")] == best
    worst = sorted(range(40), key=lambda i: (low[i, 0].item(), mean[i, 0].item(), i))[:4]
    assert [entry[0] for entry in states[0].entries(0, "bottom")] == worst
    assert states[0].seen == 40


BAD_INPUT = [
    (["conv2:0", "--images", "MISSING"], "--images {tmp}/missing: folder not found"),
    (["conv2:0", "--images", "FILE"], "--images {tmp}/file.txt: not a folder"),
    (["conv2:0", "--images", "EMPTY"], "{tmp}/empty: no images in this folder (JPEG or PNG files, searched recursively)"),
    (["conv2:0", "--images", "IMAGES", "--k", "0"], "--k: expected a positive integer, got 0"),
    (["conv2:0 - conv3:1", "--images", "IMAGES"], "target conv2:0 - conv3:1: dataset examples are per channel; give LAYER or LAYER:CHANNELS"),
    (["neuron(conv2:0)", "--images", "IMAGES"], "target neuron(conv2:0): dataset examples are per channel"),
    (["conv9:0", "--images", "IMAGES"], "target conv9:0: unknown layer 'conv9' for model"),
    (["conv2:16", "--images", "IMAGES"], "channel 16 is out of range for layer conv2, which has 16 channels (0-15)"),
    (["conv2:0"], "fv examples needs --images DIR"),
    (["conv2:0", "--images", "IMAGES", "--out", "FILE"], "cannot write to output folder {tmp}/file.txt/tiny_model.make/conv2/examples: {tmp}/file.txt is a file, not a folder"),
]


@pytest.mark.parametrize("args, message", BAD_INPUT)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, images, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    (tmp_path / "file.txt").write_text("a file")
    where = {"MISSING": tmp_path / "missing", "FILE": tmp_path / "file.txt", "EMPTY": tmp_path / "empty", "IMAGES": images}
    args = [str(where.get(a, a)) for a in args]
    out = tmp_path / "out"
    output = fv("examples", "--model", TINY, "--weights", "random", "--out", str(out), *args, code=2)  # a later --out wins
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fv: error: "), output
    assert message.format(tmp=tmp_path) in lines[0]
    assert not out.exists()


def spec(tmp_path, factory, examples="examples: {images: images, k: 2, crop: 16}"):
    path = tmp_path / "run.yaml"
    path.write_text(textwrap.dedent(f"""
        model: {factory}
        weights: random
        out: {tmp_path / 'out'}
        steps: 2
        size: 32
        jobs:
          - layer: conv2
            channels: 0-2
          - name: named
            layer: relu3
            channels: [1]
          - target: conv2:0 - conv3:1
    """) + examples + "\n")
    return path


def test_a_spec_examples_section_follows_render_and_fv_examples(tmp_path, images, factory):
    path = spec(tmp_path, factory)
    fv("render", str(path))
    assert passes(tmp_path) == [10]  # --batch-size auto: 16 on a CPU
    out = tmp_path / "out"
    first = json.loads((out / "counted.make" / "conv2" / "examples" / "examples.json").read_text())
    named = json.loads((out / "named" / "examples" / "examples.json").read_text())
    assert [u["channel"] for u in first["units"]] == [0, 1, 2] and [u["channel"] for u in named["units"]] == [1]
    assert (first["k"], first["crop"], first["images"]["folder"]) == (2, 16, str(images))
    assert Image.open(out / "named" / "examples" / "0001_neg.png").size == (2 * 16 + 2, 16)
    assert (out / "counted.make" / "conv2" / "grid.png").is_file()  # rendered first
    examples = sorted(p.relative_to(out).as_posix() for p in out.rglob("examples"))
    assert examples == ["counted.make/conv2/examples", "named/examples"]  # none for the target job

    assert fv("examples", str(path)).count("already collected") == 2
    assert passes(tmp_path) == []
    fv("examples", str(path), "--k", "3")  # the command line overrides the section
    assert passes(tmp_path) == [10]
    assert json.loads((out / "named" / "examples" / "examples.json").read_text())["k"] == 3


@pytest.mark.parametrize(
    "section, message",
    [
        ("examples: {images: images, kk: 2}", "run.yaml: examples: unknown key 'kk'; did you mean 'k'?"),
        ("examples: {k: 2}", "run.yaml: examples: missing 'images:'"),
        ("examples: {images: nowhere}", "run.yaml: examples.images: folder not found: {tmp}/nowhere"),
        ("examples: {images: images, k: 0}", "run.yaml: examples.k: expected a positive integer, got 0"),
        ("examples: images", "run.yaml: examples: expected a mapping with 'images:'"),
    ],
)
def test_bad_examples_sections_fail_in_one_line(tmp_path, images, section, message):
    path = spec(tmp_path, "tiny.py:make", section)
    for load in (load_examples, lambda p: load_spec(p, {})):
        with pytest.raises(FvError) as error:
            load(path)
        assert message.format(tmp=tmp_path) in str(error.value)


def test_examples_section_paths_are_relative_to_the_spec(tmp_path, images):
    path = spec(tmp_path, "tiny.py:make")
    assert load_examples(path) == {"images": str(images), "k": 2, "crop": 16}
    assert load_examples(spec(tmp_path, "tiny.py:make", "")) is None


def test_render_checks_the_examples_before_rendering(tmp_path, factory):
    (tmp_path / "images").mkdir()  # a folder without images
    output = fv("render", str(spec(tmp_path, factory)), code=2)
    assert output.strip() == f"fv: error: {tmp_path / 'images'}: no images in this folder (JPEG or PNG files, searched recursively)"
    assert not (tmp_path / "out").exists()


def test_dry_run_reads_no_image_and_says_what_is_collected_already(tmp_path, images, factory):
    out = tmp_path / "out"
    lines = collect(factory, images, out, "conv2:0-3", **{"dry-run": None}).splitlines()
    folder = out / "counted.make" / "conv2" / "examples"
    assert lines == [f"{folder}: {factory} conv2: top and bottom 3 of 11 images in {images} for 4 channels"]
    assert passes(tmp_path) == [] and not out.exists()
    collect(factory, images, out, "conv2:0-3")
    passes(tmp_path)
    assert collect(factory, images, out, "conv2:0-3", **{"dry-run": None}).splitlines()[-1].endswith(", already collected")
    assert passes(tmp_path) == []
