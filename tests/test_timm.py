"""timm:NAME models (timm is an optional extra; the test extra installs it)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import fv

pytest.importorskip("timm")


def test_timm_cnn_renders_with_random_weights(tmp_path):
    fv("render", "layer3:0-2", "--model", "timm:resnet18", "--weights", "random", "--steps", "6", "--size", "48",
       "--transforms", "none", "--out", str(tmp_path), "--quiet")
    sidecar = json.loads((tmp_path / "timm.resnet18" / "layer3" / "grid.json").read_text())
    assert sidecar["settings"]["normalization"]["mean"] == [0.485, 0.456, 0.406]  # timm's pretrained config
    assert all(u["activation_final"] > u["activation_start"] for u in sidecar["units"])


def test_timm_vit_tokens_and_fixed_input_size(tmp_path):
    fv("render", "blocks.2:0-1", "--model", "timm:vit_tiny_patch16_224", "--weights", "random", "--steps", "3",
       "--size", "48", "--out", str(tmp_path), "--quiet")
    sidecar = json.loads((tmp_path / "timm.vit_tiny_patch16_224" / "blocks.2" / "grid.json").read_text())
    assert sidecar["layer_layout"] == {"kind": "tokens", "channels": 192, "prefix_tokens": 1}
    assert sidecar["model_input_size"] == 224


def test_unknown_timm_model_suggests_names(tmp_path):
    line = fv("render", "x:0", "--model", "timm:resnet19", "--out", str(tmp_path), code=2)
    assert line.startswith("fv: error: unknown timm model 'resnet19'; did you mean timm:resnet18")


def test_timm_weights_offline_fail_in_one_line(tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run(
        [sys.executable, "-m", "fvcli", "render", "layer3:0", "--model", "timm:resnet18", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("fv: error: cannot download timm weights timm/resnet18.a1_in1k (")
    assert line.endswith(f"put them in the Hugging Face cache {tmp_path / 'hf' / 'hub'}/ or use --weights random")
