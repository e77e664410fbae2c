"""Models of several families, random weights, small inputs: layers, shapes, rendering and errors."""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import fv
from fvcli.errors import FvError
from fvcli.models.layer_keys import infer_layout
from fvcli.models.registry import load_model
from fvcli.run.runner import Run
from fvcli.specs.requests import JobRequest
from fvcli.specs.settings import RenderSettings, RunSettings
from fvcli.specs.grammar import parse_target

# model, layer, expected (layout, channels) at 64 px (ViTs run at their 224 px)
FAMILIES = [
    ("resnet18", "layer3", ("nchw", 256)),
    ("resnet18", "fc", ("flat", 1000)),
    ("convnext_tiny", "features.3", ("nchw", 192)),
    ("convnext_tiny", "features.1.0.block.3", ("nhwc", 384)),
    ("vit_b_16", "encoder.layers.encoder_layer_3", ("tokens", 768)),
    ("inceptionv1", "mixed4a", ("nchw", 508)),
    ("googlenet", "mixed4a", ("nchw", 512)),
]


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = load_model(name, "random", seed=0)
        return cache[name]

    return get


@pytest.mark.parametrize("model, layer, expected", FAMILIES)
def test_layer_shapes_layouts_and_rendering(models, tmp_path, model, layer, expected):
    settings = RenderSettings(model=model, weights="random", steps=4, size=64, transforms="none")
    request = JobRequest(parse_target(f"{layer}:0-1"), settings, str(tmp_path))
    run = Run([request], RunSettings(out=str(tmp_path), quiet=True), say=lambda _: None)
    job = run.jobs[0]
    assert (job.layer.layout.kind, job.layer.layout.channels) == expected
    if model == "vit_b_16":
        assert job.input_size == 224 and job.layer.layout.prefix_tokens == 1  # resized; class token left out
    report = run.execute()
    assert report.exit_code == 0
    sidecar = json.loads((job.folder / "grid.json").read_text())
    assert sidecar["layer_layout"]["kind"] == expected[0]
    gains = [u["activation_final"] - u["activation_start"] for u in sidecar["units"]]
    assert all(g > 0 for g in gains), gains


def test_layers_json_lists_every_layer_in_forward_order():
    data = json.loads(fv("layers", "--model", "resnet18", "--size", "64", "--json"))
    names = [row["name"] for row in data["layers"]]
    assert names.index("conv1") < names.index("layer1") < names.index("layer1.0.conv1") < names.index("fc")
    fc = next(row for row in data["layers"] if row["name"] == "fc")
    assert fc == {"name": "fc", "alias": None, "shape": "(1, 1000)", "layout": "flat", "channels": 1000, "pre_relu_of": None}
    assert names.index("layer1.0") < names.index("layer1.0_pre_relu") < names.index("layer1.1")  # its residual sum, before the ReLU


def test_layers_of_a_fixed_size_model_use_its_size():
    data = json.loads(fv("layers", "--model", "vit_b_16", "--json", "encoder.layers.encoder_layer_0"))
    assert data["size"] == 224
    assert data["layers"] == [
        {"name": "encoder.layers.encoder_layer_0", "alias": None, "shape": "(1, 197, 768)", "layout": "tokens", "channels": 768, "pre_relu_of": None}
    ]  # no twin: a transformer block ends in a sum, not a ReLU


def test_tuple_outputs_are_listed_by_element_and_need_one_named(tmp_path):
    listing = fv("layers", "--model", "vit_b_16", "encoder.layers.encoder_layer_0.self_attention*")
    assert "encoder.layers.encoder_layer_0.self_attention@0" in listing
    message = fv("render", "encoder.layers.encoder_layer_0.self_attention:0", "--model", "vit_b_16",
                 "--weights", "random", "--out", str(tmp_path), code=2).strip()
    assert "layer encoder.layers.encoder_layer_0.self_attention returns a tuple of @0 (1, 197, 768), @1 NoneType" in message
    assert message.endswith("name one element as encoder.layers.encoder_layer_0.self_attention@ELEMENT")
    fv("render", "encoder.layers.encoder_layer_0.self_attention:0@0", "--model", "vit_b_16", "--weights", "random",
       "--steps", "1", "--out", str(tmp_path), "--quiet")
    assert (tmp_path / "vit_b_16" / "encoder.layers.encoder_layer_0.self_attention_0" / "grid.png").exists()


def test_infer_layout():
    assert infer_layout((1, 64, 8, 8)).kind == "nchw"
    assert infer_layout((1, 8, 8, 96)).kind == "nhwc"
    assert infer_layout((1, 197, 768)) == infer_layout((1, 197, 768)) and infer_layout((1, 197, 768)).prefix_tokens == 1
    assert infer_layout((1, 49, 768)).prefix_tokens == 0  # a 7x7 grid, no class token
    assert infer_layout((1, 10)).kind == "flat"
    with pytest.raises(ValueError):
        infer_layout((1, 2, 3, 4, 5))


ERRORS = [
    (["render", "mixed4a:0", "--model", "resnet5"], "fv: error: unknown model 'resnet5'; did you mean resnet50, resnet152, resnet34? (`fv models` lists them, or use a factory FILE.py:FUNC)"),
    (["render", "layer5:0", "--model", "resnet18"], "fv: error: target layer5:0: unknown layer 'layer5' for model resnet18; did you mean layer4, layer3, layer2? (`fv layers --model resnet18` lists them)"),
    (["render", "layer3:256", "--model", "resnet18"], "fv: error: target layer3:256: channel 256 is out of range for layer layer3, which has 256 channels (0-255)"),
    (["render", "fc:0", "--model", "resnet18", "--weights", "IMAGENET1K_V3"], "fv: error: --weights IMAGENET1K_V3: resnet18 has no such weights; it has IMAGENET1K_V1, DEFAULT, random, or a state-dict file"),
    (["render", "fc:0", "--model", "resnet18", "--weights", "ResNet50_Weights.IMAGENET1K_V2"], "fv: error: --weights ResNet50_Weights.IMAGENET1K_V2: these are not weights of resnet18, whose weights are ResNet18_Weights.*"),
]


@pytest.mark.parametrize("args, line", ERRORS)
def test_model_errors_exit_2_with_their_exact_line(tmp_path, args, line):
    weights = [] if "--weights" in args else ["--weights", "random"]
    assert fv(*args, *weights, "--out", str(tmp_path / "out"), code=2) == line + "\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "model, weights, identity, filename",
    [
        ("resnet50", "IMAGENET1K_V2", "ResNet50_Weights.IMAGENET1K_V2", "resnet50-11ad3fa6.pth"),
        ("inceptionv1", "default", "inception5h.pth", "inception5h.pth"),
    ],
)
def test_published_weights_offline_name_the_file_and_the_cache_folder(tmp_path, model, weights, identity, filename):
    # A real download attempt through an unreachable proxy: the offline path, not a mock.
    env = {**os.environ, "TORCH_HOME": str(tmp_path), "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    done = subprocess.run(
        [sys.executable, "-m", "fvcli", "render", "fc:0", "--model", model, "--weights", weights, "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"fv: error: cannot download {model} weights {identity} (")
    assert line.endswith(f"put {filename} in {tmp_path / 'hub' / 'checkpoints'}/ or use --weights random")


def test_models_lists_torchvision_and_own_models():
    names = fv("models").splitlines()
    assert {"googlenet", "inceptionv1", "resnet50", "vit_b_16", "convnext_tiny"} <= set(names)
    assert fv("models", "vit_b_*").split() == ["vit_b_16", "vit_b_32"]


def test_weights_enum_names_resolve_without_download():
    from fvcli.models.registry import find_entry

    entry = find_entry("resnet50")
    assert entry.published("IMAGENET1K_V1").identity == "ResNet50_Weights.IMAGENET1K_V1"
    assert entry.published("ResNet50_Weights.IMAGENET1K_V2").native_size == 224
    assert entry.published("DEFAULT").normalization == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    with pytest.raises(FvError):
        entry.published("IMAGENET22K")


def test_factory_may_return_its_preprocessing(tmp_path, tiny):
    model = load_model(tiny.replace(":make", ":make_with_preprocessing"), "default", seed=0)
    assert model.normalization == ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)) and model.native_size == 40


def test_torchscript_models_render_their_output(tmp_path, tiny):
    import warnings

    scripted_path = tmp_path / "tiny.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(load_model(tiny, "random", seed=0).module).save(str(scripted_path))
    data = json.loads(fv("layers", "--model", str(scripted_path), "--weights", "default", "--size", "32", "--json"))
    # TorchScript runs its own code, so no ReLU call is seen either: no pre-ReLU twins.
    assert data["layers"] == [{"name": "output", "alias": None, "shape": "(1, 5)", "layout": "flat", "channels": 5, "pre_relu_of": None}]
    fv("render", "output:0-2", "--model", str(scripted_path), "--steps", "6", "--size", "32", "--transforms", "none",
       "--out", str(tmp_path / "o"), "--quiet")
    sidecar = json.loads((tmp_path / "o" / "tiny" / "output" / "grid.json").read_text())
    assert sidecar["model"]["weights"] == f"torchscript:{scripted_path}" and len(sidecar["model"]["weights_sha256"]) == 64
    assert all(u["activation_final"] > u["activation_start"] for u in sidecar["units"])
    line = fv("render", "output:0", "--model", str(scripted_path), "--weights", "random", "--out", str(tmp_path / "o2"), code=2)
    assert line.startswith("fv: error: --weights random: a TorchScript model's modules are opaque to fv")


@pytest.mark.parametrize("model, layer", [("resnet18", "layer3"), ("vit_b_16", "encoder.layers.encoder_layer_1")])
def test_neuron_objective_rises(tmp_path, model, layer):
    fv("render", f"{layer}:0-1", "--model", model, "--objective", "neuron", "--weights", "random", "--steps", "4",
       "--size", "48", "--transforms", "none", "--out", str(tmp_path), "--quiet")
    sidecar = json.loads((tmp_path / model / layer / "grid.json").read_text())
    assert sidecar["settings"]["objective"] == "neuron"
    assert [u["objective"] for u in sidecar["units"]] == [f"neuron({layer}:0)", f"neuron({layer}:1)"]
    assert all(u["activation_final"] > u["activation_start"] for u in sidecar["units"])
