"""Pre-ReLU twins (LAYER_pre_relu): listed, equal to what the ReLUs receive, read by negative images
and bottom dataset examples, and flat units flagged."""

import json

import pytest
import torch
from torch import nn

import fvcli
from conftest import TINY, fv, noise_photos
from fvcli.models.capture import forward_to
from fvcli.models.registry import load_model
from fvcli.optvis.objectives import channel
from fvcli.run.runner import unit_status

GOOGLENET = ["--weights", "random", "--size", "48", "--transforms", "none"]
TINY_QUICK = ["--model", TINY, "--weights", "random", "--steps", "6", "--size", "32", "--transforms", "none"]
BROKEN = TINY.replace(":make", ":make_broken")  # channel 0 is 0 whatever the image


def test_twins_are_listed_after_their_layer_with_aliases():
    googlenet = {row["name"]: row for row in json.loads(fv("layers", "--size", "64", "--json"))["layers"]}
    twin = googlenet["inception4a_pre_relu"]
    assert twin["alias"] == "mixed4a_pre_relu" and twin["pre_relu_of"] == "inception4a"
    assert (twin["shape"], twin["channels"]) == (googlenet["inception4a"]["shape"], 512)
    assert googlenet["conv1_pre_relu"]["alias"] == "conv2d0_pre_relu"
    assert "inception4a.branch2.1_pre_relu" in googlenet  # every BasicConv2d ends in F.relu
    assert "inception4a.branch1.conv_pre_relu" not in googlenet and "fc_pre_relu" not in googlenet
    names = list(googlenet)
    assert names.index("inception4a_pre_relu") == names.index("inception4a") + 1

    inception = [row["name"] for row in json.loads(fv("layers", "--model", "inceptionv1", "--size", "64", "--json"))["layers"]]
    assert {"conv2d0_pre_relu", "conv2d2_pre_relu", "mixed4a_pre_relu", "mixed4a_3x3_pre_relu", "mixed5b_pre_relu"} <= set(inception)

    table = fv("layers", "--model", TINY, "relu*").splitlines()
    assert [line.split()[0] for line in table[1:]] == ["relu1", "relu1_pre_relu", "relu2", "relu2_pre_relu", "relu3", "relu3_pre_relu"]
    listed = fvcli.layers(TINY, "*_pre_relu")
    assert [(row["name"], row["pre_relu_of"]) for row in listed] == [("relu1_pre_relu", "relu1"), ("relu2_pre_relu", "relu2"), ("relu3_pre_relu", "relu3")]


def test_tiny_twins_are_the_relu_inputs_even_in_place():
    model = load_model(TINY, "random", 0, quiet=True).module
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        acts = forward_to(model, x, ["relu1_pre_relu", "relu1", "relu2_pre_relu", "relu2"])
        first = model.conv1(x)  # relu1 works in place: the twin must be a copy taken before it
        second = model.bn2(model.conv2(first.relu()))
    assert torch.equal(acts["relu1_pre_relu"], first) and bool((first < 0).any())
    assert torch.equal(acts["relu2_pre_relu"], second)
    for name in ("relu1", "relu2"):
        assert torch.equal(acts[f"{name}_pre_relu"].relu(), acts[name])


def _branch_before_relu(branch: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A GoogLeNet branch up to its last BasicConv2d's batch norm (which F.relu follows)."""
    *head, last = branch if isinstance(branch, nn.Sequential) else [branch]
    for module in head:
        x = module(x)
    return last.bn(last.conv(x))


def test_googlenet_twins_concatenate_the_branches_before_their_relus():
    model = load_model("googlenet", "random", 0, quiet=True).module
    inputs = {}
    handles = [
        getattr(model, name).register_forward_pre_hook(lambda m, i, name=name: inputs.setdefault(name, i[0].clone()))
        for name in ("conv1", "inception4a")
    ]
    with torch.no_grad():
        acts = forward_to(model, torch.rand(2, 3, 64, 64), ["conv1_pre_relu", "conv1", "inception4a_pre_relu", "inception4a"])
        for handle in handles:
            handle.remove()
        block = model.inception4a
        branches = (block.branch1, block.branch2, block.branch3, block.branch4)
        expected = torch.cat([_branch_before_relu(b, inputs["inception4a"]) for b in branches], 1)
        stem = _branch_before_relu(model.conv1, inputs["conv1"])
    pre = acts["inception4a_pre_relu"]
    assert pre.shape == acts["inception4a"].shape == (2, 512, 4, 4)
    assert torch.allclose(pre, expected, atol=1e-5) and torch.allclose(acts["conv1_pre_relu"], stem, atol=1e-5)
    assert torch.equal(pre.relu(), acts["inception4a"]) and torch.equal(acts["conv1_pre_relu"].relu(), acts["conv1"])
    assert bool((pre < 0).any())


def test_inceptionv1_twins_are_lucids_pre_relu_layers():
    model = load_model("inceptionv1", "random", 0, quiet=True).module
    convs = [f"mixed4a_{branch}_pre_relu_conv" for branch in ("1x1", "3x3", "5x5", "pool_reduce")]
    with torch.no_grad():
        acts = forward_to(model, torch.rand(1, 3, 64, 64), ["conv2d0_pre_relu", "conv2d0_pre_relu_conv", "mixed4a_pre_relu", "mixed4a", *convs])
    assert torch.equal(acts["conv2d0_pre_relu"], acts["conv2d0_pre_relu_conv"])
    assert torch.equal(acts["mixed4a_pre_relu"], torch.cat([acts[c] for c in convs], 1))
    assert acts["mixed4a_pre_relu"].shape[1] == 508 and torch.equal(acts["mixed4a_pre_relu"].relu(), acts["mixed4a"])


def _sidecar(out) -> dict:
    [path] = list(out.rglob("grid.json"))
    return json.loads(path.read_text())


def test_negative_images_read_the_twin_and_lower_units_dead_after_the_relu(tmp_path):
    # As named, after the ReLU, most of these units sit at 0 on every image: nothing to lower.
    output = fv("render", *GOOGLENET, "--steps", "6", "--pre-relu", "off", "--out", str(tmp_path / "off"), "--", "-mixed4a:0-7")
    after = _sidecar(tmp_path / "off")
    flat = [u for u in after["units"] if u["status"] == "flat"]
    assert len(flat) >= 2 and all(u["activation_start"] == u["activation_final"] == 0 for u in flat)
    assert flat[0]["reason"] == "the objective never moved (0 -> 0): no gradient reached the image"
    assert f"{len(flat)} flat" in output and "flat units in" in output  # exit 0: flat is flagged, not failed
    assert after["layer_module"] == "inception4a" and "pre_relu" not in after and after["settings"]["pre_relu"] == "off"

    fv("render", *GOOGLENET, "--steps", "12", "--out", str(tmp_path / "auto"), "--quiet", "--", "-mixed4a:0-7")
    before = _sidecar(tmp_path / "auto")
    assert (before["layer"], before["layer_module"]) == ("mixed4a_pre_relu", "inception4a_pre_relu")
    assert before["pre_relu"]["read_as"] == {"mixed4a": "mixed4a_pre_relu"} and before["pre_relu"]["of_module"] == "inception4a"
    assert "before its ReLU" in before["pre_relu"]["why"]
    assert [u["objective"] for u in before["units"]] == [f"-mixed4a_pre_relu:{c}" for c in range(8)]
    for unit in before["units"]:  # every unit lowered (the objective, its negation, rose), the dead ones too
        assert unit["status"] == "ok" and unit["activation_final"] > unit["activation_start"], unit
    for unit in flat:
        assert before["units"][unit["channel"]]["activation_final"] > 0  # its channel below 0, before the ReLU


def test_a_unit_whose_objective_cannot_move_is_flat_and_stays_done(tmp_path):
    out = str(tmp_path / "out")
    output = fv("render", "--model", BROKEN, "--steps", "4", "--size", "16", "--out", out, "--", "-broken:0,2")
    units = _sidecar(tmp_path / "out")["units"]
    assert [u["status"] for u in units] == ["flat", "ok"] and "reason" not in units[1]
    assert "1 flat" in output and "flat units in" in output
    again = fv("render", "--model", BROKEN, "--steps", "4", "--size", "16", "--out", out, "--", "-broken:0,2")
    assert "2 units already rendered with these settings are kept" in again  # a flat unit is done, not retried
    assert [u["status"] for u in _sidecar(tmp_path / "out")["units"]] == ["flat", "ok"]
    # A maximized unit stuck at 0 is still called dead; a change within rounding is no move.
    up, down = 1.0 * channel("x", 0), -1.0 * channel("x", 0)
    assert unit_status([0.0], [0.0], [up]) == ("dead", "the objective ended at exactly 0: the unit never fired")
    assert unit_status([0.0], [0.0], [down])[0] == "flat"
    assert unit_status([2.0], [2.0 + 1e-6], [up])[0] == "flat"
    assert unit_status([2.0], [2.01], [up]) == ("ok", None)


def test_a_layer_without_a_relu_has_no_twin_in_one_line(tmp_path):
    output = fv("render", *TINY_QUICK, "--out", str(tmp_path), "conv3_pre_relu:0", code=2)
    assert output.strip().splitlines() == [
        "fv: error: target conv3_pre_relu:0: layer conv3 has no pre-ReLU twin: its output is not a ReLU's output, "
        "nor a concatenation of ReLU outputs (`fv layers` lists the twins there are)"
    ]
    output = fv("render", "--weights", "random", "--out", str(tmp_path), "mixed4a_prerelu:0", code=2)
    assert "unknown layer 'mixed4a_prerelu' for model googlenet; did you mean mixed4a_pre_relu" in output
    # A negative image of a layer without a twin reads the layer as named.
    fv("render", *TINY_QUICK, "--out", str(tmp_path / "neg"), "--quiet", "--", "-conv3:0")
    assert _sidecar(tmp_path / "neg")["layer_module"] == "conv3"


def test_compiled_runs_read_twins_eagerly_and_say_so(tmp_path):
    fv("render", *TINY_QUICK, "--compile", "on", "--out", str(tmp_path), "--quiet", "--", "-relu3:0-1")
    sidecar = _sidecar(tmp_path)
    assert sidecar["layer_module"] == "relu3_pre_relu"
    compile_record = sidecar["engine"]["compile"]
    assert compile_record["compiled"] is False
    assert compile_record["why"] == ["pre-ReLU layers run eager (relu3_pre_relu): fv finds them by watching ReLU calls, which a compiled graph does not make"]


def test_the_atlas_shows_a_negative_twin_job_with_its_layer(tmp_path):
    out = tmp_path / "out"
    fv("render", *TINY_QUICK, "--out", str(out), "--quiet", "relu3:0-2")
    fv("render", *TINY_QUICK, "--out", str(out), "--quiet", "--atlas", "--", "-relu3:0-2")
    page = (out / "tiny_model.make" / "relu3" / "units" / "1.html").read_text()
    assert "../../neg_relu3_0-2/units/1.html" in page and "-relu3_pre_relu:1" in page


@pytest.fixture
def photos(tmp_path):
    return noise_photos(tmp_path / "photos", 6, seed=3)


def test_bottom_examples_are_read_before_the_relu(tmp_path, photos):
    common = ["--model", TINY, "--weights", "random", "--images", str(photos), "--k", "3", "--crop", "16"]
    output = fv("examples", "relu3:0-1", *common, "--out", str(tmp_path / "auto"))
    assert "(the bottom before its ReLU, from relu3_pre_relu)" in output
    record = json.loads((tmp_path / "auto" / "tiny_model.make" / "relu3" / "examples" / "examples.json").read_text())
    assert (record["bottom_layer"], record["bottom_layer_module"]) == ("relu3_pre_relu", "relu3_pre_relu")
    assert record["pre_relu"]["read_as"] == {"relu3": "relu3_pre_relu"}

    # Brute force: each photo alone, as fv prepares it (224 px, no normalization for a factory).
    from fvcli.optvis.images import list_images, load_image

    model = load_model(TINY, "random", 0, quiet=True).module
    head = nn.Sequential(*list(model.children())[:6])  # up to conv3: relu3's input
    files = list_images(photos)
    with torch.no_grad():
        pre = torch.stack([head(load_image(path, 224)[None])[0] for path in files])
    for unit in record["units"]:
        c = unit["channel"]
        lows = pre[:, c].flatten(1).min(dim=1).values
        order = sorted(range(len(files)), key=lambda i: lows[i].item())[:3]
        assert [e["path"] for e in unit["bottom"]] == [files[i].name for i in order]
        assert [e["value"] for e in unit["bottom"]] == pytest.approx([lows[i].item() for i in order], rel=1e-4)
        assert unit["bottom"][0]["value"] < 0  # below what a ReLU lets out
        highs = pre[:, c].flatten(1).max(dim=1).values.relu()  # the top reads relu3 itself
        assert unit["top"][0]["value"] == pytest.approx(highs.max().item(), rel=1e-4)

    fv("examples", "relu3:0-1", *common, "--pre-relu", "off", "--out", str(tmp_path / "off"), "--quiet")
    named = json.loads((tmp_path / "off" / "tiny_model.make" / "relu3" / "examples" / "examples.json").read_text())
    assert named["bottom_layer"] == "relu3" and "pre_relu" not in named
    assert all(e["value"] >= 0 for u in named["units"] for e in u["bottom"])
