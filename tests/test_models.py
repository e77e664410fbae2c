"""Models: random init keeps units alive, weights load from files or fail in one line, factories work."""

import os
import subprocess
import sys

import pytest
import torch

from fvcli.models.capture import forward_to
from fvcli.errors import FvError
from fvcli.models.registry import load_model
from fvcli.models.weights import sha256_of


def test_random_googlenet_has_live_units_at_every_depth():
    model = load_model("googlenet", "random", seed=0)
    layers = ["conv1", "inception3a", "inception4a", "inception4e", "inception5b"]
    images = (torch.rand(4, 3, 128, 128, generator=torch.Generator().manual_seed(1)) - 0.45) / 0.225
    with torch.no_grad():
        acts = forward_to(model.module, images, layers)
    for name in layers:
        per_channel = acts[name].amax(dim=(0, 2, 3))
        assert (per_channel > 0).float().mean() > 0.99, name  # (torchvision's init: a quarter dead)
        assert acts[name].mean() > 0.05, name  # (torchvision's init: about 1e-6 at mixed4a)


def test_random_weights_follow_the_seed():
    a, b, c = (load_model("googlenet", "random", seed=s).module.conv1.conv.weight for s in (0, 0, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_model_is_frozen_and_in_eval_mode():
    model = load_model("googlenet", "random", seed=0).module
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


def test_aliases_resolve_to_torchvision_names():
    model = load_model("googlenet", "random", seed=0)
    assert model.resolve_layer("mixed4a") == "inception4a"
    assert model.resolve_layer("conv2d0") == "conv1"
    assert model.resolve_layer("inception4a.branch2") == "inception4a.branch2"
    with pytest.raises(FvError, match=r"unknown layer 'mixed4z' for model googlenet; did you mean mixed4e"):
        model.resolve_layer("mixed4z")


def test_state_dict_file_loads_and_is_identified_by_sha256(tmp_path):
    source = load_model("googlenet", "random", seed=4)
    path = tmp_path / "weights.pt"
    torch.save(source.module.state_dict(), path)
    loaded = load_model("googlenet", str(path), seed=0)
    assert torch.equal(loaded.module.conv1.conv.weight, source.module.conv1.conv.weight)
    assert loaded.weights_sha256 == sha256_of(path) and len(loaded.weights_sha256) == 64


def test_weights_of_another_model_fail_in_one_line(tmp_path, tiny):
    path = tmp_path / "tiny.pt"
    torch.save(load_model(tiny, "random", seed=0).module.state_dict(), path)
    with pytest.raises(FvError) as error:
        load_model("googlenet", str(path), seed=0)
    assert str(error.value).startswith(f"--weights {path}: weights do not fit the model: ")
    assert "missing (conv1.conv.weight" in str(error.value) and "unexpected (conv1.weight" in str(error.value)


def test_corrupt_weights_fail_in_one_line(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(FvError, match=rf"--weights {path}: cannot read a state dict from this file"):
        load_model("googlenet", str(path), seed=0)


def test_factories_from_files_and_modules(tiny):
    model = load_model(tiny, "default", seed=0)
    assert model.normalization is None  # custom models take [0, 1] RGB
    assert "conv2" in model.layer_names()
    module_model = load_model("tests.tiny_model:make", "default", seed=0)
    assert module_model.layer_names() == model.layer_names()
    with pytest.raises(FvError, match="has no function 'nope'"):
        load_model(tiny.replace(":make", ":nope"), "default", seed=0)
    with pytest.raises(FvError, match=r"the factory returned int, expected an nn.Module or \(nn.Module, preprocessing\)"):
        load_model(tiny.replace(":make", ":not_a_module"), "default", seed=0)


def test_unknown_model_suggests_close_names():
    with pytest.raises(FvError, match=r"unknown model 'googlenett'; did you mean googlenet, "):
        load_model("googlenett", "random", seed=0)


def test_default_weights_offline_fail_in_one_line_naming_file_and_folder(tmp_path):
    # A real download attempt through an unreachable proxy: the offline failure path, not a mock.
    env = {**os.environ, "TORCH_HOME": str(tmp_path), "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    done = subprocess.run(
        [sys.executable, "-m", "fvcli", "render", "mixed4a:0", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and done.stdout == ""
    folder = tmp_path / "hub" / "checkpoints"
    assert lines[0].startswith("fv: error: cannot download googlenet weights GoogLeNet_Weights.IMAGENET1K_V1")
    assert f"put googlenet-1378be20.pth in {folder}/ or use --weights random" in lines[0]
    assert not (tmp_path / "out").exists()


def test_normalization_comes_from_the_weights_metadata():
    from torchvision.models import GoogLeNet_Weights

    model = load_model("googlenet", "random", seed=0)
    preprocess = GoogLeNet_Weights.DEFAULT.transforms()
    assert model.normalization == (tuple(preprocess.mean), tuple(preprocess.std))
