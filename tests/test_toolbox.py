"""The article's toolbox on a tiny CPU model: every objective rises (a negated one lowers its unit),
and every way of naming one wrongly fails in one line."""

import json

import pytest

from conftest import QUICK, TINY, fv

TINY_QUICK = ["--model", TINY, "--weights", "random", "--steps", "12", "--size", "32", "--transforms", "none"]


def render(tmp_path, target, *extra):
    out = tmp_path / "out"
    fv("render", *TINY_QUICK, *extra, "--out", str(out), "--quiet", "--", target)
    [sidecar] = [json.loads(p.read_text()) for p in out.rglob("grid.json")]
    return sidecar


@pytest.mark.parametrize(
    "target",
    [
        "conv2:0-1",
        "-conv2:0-1",
        "neuron(conv2:3)",
        "neuron(conv2:3, y=0, x=7)",
        "layer(conv3)",
        "deepdream(relu2)",
        "logit:2",
        "probability:3",
        "conv2:1 - 0.5*conv3:4",
        "direction(conv3, [1, -1, 0.5, 0, 0, 0, 2, 0, 0, 0, 0, 1])",
        "direction_neuron(conv3, random:2)",
    ],
)
def test_every_objective_rises(tmp_path, target):
    sidecar = render(tmp_path, target)
    for unit in sidecar["units"]:
        assert unit["status"] == "ok", unit
        assert unit["activation_final"] > unit["activation_start"], unit


def test_negative_images_lower_their_unit_and_are_not_called_dead(tmp_path):
    negative = render(tmp_path / "neg", "-conv3:0-3")
    assert all(u["status"] == "ok" for u in negative["units"])  # reaching 0 is a negative image's aim
    assert [u["objective"] for u in negative["units"]] == [f"-conv3:{c}" for c in range(4)]
    assert all(u["activation_final"] >= u["activation_start"] for u in negative["units"])


def test_expression_jobs_write_units_and_describe_themselves(tmp_path):
    sidecar = render(tmp_path, "direction(conv3, random:3)")
    assert [u["objective"] for u in sidecar["units"]] == [f"direction(conv3, random[{k}])" for k in range(3)]
    assert [u["image"] for u in sidecar["units"]] == ["unit_0000.png", "unit_0001.png", "unit_0002.png"]
    assert sidecar["objective"].startswith("target: direction(conv3, random:3), maximized")
    folder = tmp_path / "out" / "tiny_model.make" / "direction_conv3_random_3"
    assert sorted(p.name for p in folder.iterdir()) == ["grid.json", "grid.png", "unit_0000.png", "unit_0001.png", "unit_0002.png"]


def test_class_names_come_from_the_weights_metadata(tmp_path):
    out = tmp_path / "out"
    fv("render", *QUICK, "--transforms", "none", "--out", str(out), "--quiet", "logit:goldfish", "probability:'great white shark'")
    logit = json.loads((out / "googlenet" / "logit_goldfish" / "grid.json").read_text())
    assert logit["units"][0]["objective"] == "logit:goldfish"
    assert logit["units"][0]["activation_final"] > logit["units"][0]["activation_start"]


ERRORS = [
    (["--", "logit:goldfsh"], "fv: error: target logit:goldfsh: googlenet has no class 'goldfsh'; did you mean goldfish"),
    (["--", "logit:1000"], "fv: error: target logit:1000: class 1000 is out of range: googlenet has 1000 classes (0-999)"),
    (["--", "direction(mixed4a, [1, 2])"], "fv: error: target direction(mixed4a, [1, 2]): direction for mixed4a has (2,) values; the layer has 512 channels"),
    (["--", "direction(mixed4a, 'nope.npy')"], "fv: error: target direction(mixed4a, 'nope.npy'): direction file nope.npy not found"),
    (["--", "neuron(mixed4a:0, y=9, x=0)"], "fv: error: target neuron(mixed4a:0, y=9, x=0): neuron position y=9, x=0 is outside layer mixed4a's 3 x 3 grid at this --size"),
    (["--", "mixed4a:1 *"], "fv: error: target: expected an objective, found the end at column 12 of 'mixed4a:1 *'"),
    (["--", "-mixed4a:0-600"], "fv: error: target -mixed4a:0-600: channel 512 is out of range for layer mixed4a, which has 512 channels (0-511)"),
    (["-mixed4a:0"], "fv: error: No such option '-m'; a target that starts with '-' goes after '--', e.g. fv render -- -mixed4a:97"),
]


@pytest.mark.parametrize("args, line", ERRORS)
def test_objective_errors_exit_2_in_one_line(tmp_path, args, line):
    output = fv("render", *QUICK, "--out", str(tmp_path / "out"), *args, code=2)
    assert output.startswith(line) and output.count("\n") == 1, output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "options",
    [
        ["--param", "pixel"],
        ["--param", "fourier", "--no-decorrelate"],
        ["--param", "lowres"],
        ["--param", "laplacian"],
        ["--optimizer", "sgd", "--lr", "2"],
        ["--schedule", "cosine"],
        ["--transforms", "pad=2,jitter=2,scale=0.95/1.05,rotate=-5/5,jitter=1"],
        ["--l1", "0.1", "--tv", "0.1", "--blur", "0.1", "--blur-every", "4"],
    ],
)
def test_each_parameterization_optimizer_and_regularizer_raises_the_objective(tmp_path, options):
    sidecar = render(tmp_path, "conv3:0-2", *options)
    assert all(u["activation_final"] > u["activation_start"] for u in sidecar["units"]), sidecar["units"]


def _image_stats(path):
    import numpy
    import torch
    from PIL import Image

    image = torch.from_numpy(numpy.asarray(Image.open(path), dtype=numpy.float32)).permute(2, 0, 1)[None] / 255
    from fvcli.optvis.regularizers import gaussian_blur, l1, total_variation

    return {"tv": total_variation(image).item(), "l1": l1(image).item(), "sharp": (image - gaussian_blur(image)).pow(2).mean().item()}


@pytest.mark.parametrize("option, stat", [("--tv", "tv"), ("--l1", "l1"), ("--blur", "sharp"), ("--blur-every", "sharp")])
def test_each_penalty_lowers_what_it_penalizes(tmp_path, option, stat):
    weight = "2" if option == "--blur-every" else "5"
    render(tmp_path / "plain", "conv3:0", "--param", "pixel", "--lr", "0.2")
    penalized = render(tmp_path / "pen", "conv3:0", "--param", "pixel", "--lr", "0.2", option, weight)
    [a] = (tmp_path / "plain").rglob("conv3_0000.png")
    [b] = (tmp_path / "pen").rglob("conv3_0000.png")
    assert _image_stats(b)[stat] < _image_stats(a)[stat]
    assert penalized["settings"]["penalties" if option != "--blur-every" else "blur_every"]


def test_custom_transforms_in_a_spec_are_recorded(tmp_path):
    spec = tmp_path / "t.yaml"
    spec.write_text(
        f"model: {TINY}\nweights: random\nsteps: 4\nsize: 32\nout: {tmp_path / 'o'}\n"
        "transforms: [{pad: 4}, {jitter: 2}, {rotate: [-5, 0, 5]}]\njobs: [{layer: conv2, channels: 0}]\n"
    )
    fv("render", str(spec), "--quiet")
    [path] = (tmp_path / "o").rglob("grid.json")
    settings = json.loads(path.read_text())["settings"]
    assert settings["transforms_preset"] == "custom"
    assert settings["transforms"] == [
        {"name": "pad", "pixels": 4, "fill": 0.5},
        {"name": "jitter", "pixels": 2},
        {"name": "rotate", "degrees": [-5.0, 0.0, 5.0]},
    ]


def test_diversity_renders_several_different_images_per_unit(tmp_path):
    common = ["conv3:0-1", "--diversity", "3", "--param", "pixel", "--lr", "0.1", "--steps", "20"]
    diverse = render(tmp_path / "d", *common[:1], *common[1:])
    plain = render(tmp_path / "p", *common[:1], *common[1:], "--diversity-weight", "0")
    for unit in diverse["units"]:
        assert [i["image"] for i in unit["images"]] == [f"conv3_000{unit['channel']}_{k}.png" for k in range(3)]
        assert unit["image"] == unit["images"][0]["image"]
    penalized = [u["diversity_similarity"] for u in diverse["units"]]
    unpenalized = [u["diversity_similarity"] for u in plain["units"]]
    assert all(p < q for p, q in zip(penalized, unpenalized)), (penalized, unpenalized)
    assert diverse["timing"]["batch_sizes"] == [6]  # a unit's three images share one batch
    folder = tmp_path / "d" / "out" / "tiny_model.make" / "conv3"
    grid = __import__("PIL.Image", fromlist=["Image"]).open(folder / "grid.png")
    assert grid.width > 2 * 3 * 32  # two cells side by side, each three images wide
    import numpy

    pixels = [numpy.asarray(__import__("PIL.Image", fromlist=["Image"]).open(folder / f"conv3_0000_{k}.png"), dtype=float) / 255 for k in range(3)]
    differences = [numpy.abs(pixels[a] - pixels[b]).mean() for a, b in ((0, 1), (0, 2), (1, 2))]
    assert min(differences) > 0.02, differences  # measurably different images of one unit


def test_interpolation_frames_move_from_one_objective_to_the_other(tmp_path):
    sidecar = render(tmp_path / "i", "interpolate(conv3:0, conv3:1, frames=4)", "--param", "pixel", "--lr", "0.1", "--steps", "16")
    [unit] = sidecar["units"]
    assert [i["objective"] for i in unit["images"]] == [
        "conv3:0", "0.666667*conv3:0 + 0.333333*conv3:1", "0.333333*conv3:0 + 0.666667*conv3:1", "conv3:1"
    ]
    assert [i["image"] for i in unit["images"]] == [f"frame_{k}.png" for k in range(4)]
    assert all(i["activation_final"] > i["activation_start"] for i in unit["images"])
    assert sidecar["settings"]["parameterization"]["shared_lowres"] == [16, 8, 4, 2]


def test_shared_low_resolution_images_keep_frames_aligned():
    # Same objectives, same seeds; the only difference is the shared images.
    import torch

    from fvcli.optvis.engine import Groups, render_batch
    from fvcli.models.registry import load_model
    from fvcli.optvis.objectives import channel
    from fvcli.specs.settings import RenderSettings

    model = load_model(TINY, "random", seed=0)
    objectives = [channel("conv3", 0), channel("conv3", 0) * 0.5 + channel("conv3", 1) * 0.5, channel("conv3", 1)]
    settings = RenderSettings(steps=24, size=32, transforms="none")
    seeds = [11, 12, 13]
    shared = render_batch(model, objectives, seeds, settings, torch.device("cpu"), groups=Groups(((0, 1, 2),), shared=True))
    alone = render_batch(model, objectives, seeds, settings, torch.device("cpu"))

    def spread(images):
        coarse = torch.nn.functional.avg_pool2d(images, 8)  # the layout, without the details
        return (coarse - coarse.mean(dim=0, keepdim=True)).abs().mean().item()

    assert spread(shared.images) < spread(alone.images)


def test_interpolation_grammar():
    from fvcli.specs.grammar import TargetError, parse_target
    from fvcli.specs.targets import Interpolation

    target = parse_target("interpolate(mixed4a:97, -0.5*mixed4b:3 + layer(mixed3a), frames=8)")
    assert isinstance(target, Interpolation) and target.frames == 8
    assert parse_target(target.describe()) == target
    for bad, message in [
        ("interpolate(mixed4a:0-3, mixed4a:5, frames=4)", "the ends of an interpolation name one unit each"),
        ("interpolate(mixed4a:1, mixed4a:5, frames=1)", "expected a number of frames from 2 to 64"),
        ("interpolate(mixed4a:1, mixed4a:5)", "expected ','"),
    ]:
        with pytest.raises(TargetError, match=message):
            parse_target(bad)
