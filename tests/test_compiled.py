"""torch.compile of the truncated network (--compile), and the choices fv makes by measuring."""

import json

import pytest
import torch

from conftest import TINY, fv
from fvcli.run import tuning
from fvcli.models.capture import forward_to
from fvcli.models.compiled import compile_forward
from fvcli.optvis.engine import render_batch
from fvcli.models.registry import load_model
from fvcli.optvis.objectives import channel
from fvcli.specs.settings import RenderSettings

CPU = torch.device("cpu")


def test_the_compiled_forward_computes_the_eager_layers_and_gradients():
    model = load_model(TINY, "default", seed=0).module
    layers = ("conv2", "relu3")
    compiled, why = compile_forward(model, layers, backend="aot_eager")  # Dynamo and AOT autograd, no codegen
    assert why is None
    x = torch.rand(3, 3, 20, 20, requires_grad=True)
    eager = forward_to(model, x, layers)
    got = compiled(x)
    for key in layers:
        assert torch.allclose(got[key], eager[key], atol=1e-5)
    (g_eager,) = torch.autograd.grad(eager["relu3"].sum(), x)
    (g_got,) = torch.autograd.grad(got["relu3"].sum(), x)
    assert torch.allclose(g_got, g_eager, atol=1e-5)
    compiled(torch.rand(3, 3, 20, 20))
    compiled(torch.rand(2, 3, 20, 20))
    assert len(compiled._shapes) == 2  # one compile per batch shape, reused after


def test_a_render_with_the_compiled_forward_matches_the_eager_render():
    model = load_model(TINY, "default", seed=0)
    objectives = [channel("conv3", c) for c in range(3)]
    settings = RenderSettings(steps=20, size=24, dtype="float32")  # 16 redirect steps eager, then 4 compiled
    compiled, _ = compile_forward(model.module, ("conv3",), backend="aot_eager")
    eager = render_batch(model, objectives, [1, 2, 3], settings, CPU)
    fast = render_batch(model, objectives, [1, 2, 3], settings, CPU, compiled=compiled)
    assert torch.allclose(fast.images, eager.images, atol=1e-4)
    assert fast.final == pytest.approx(eager.final, rel=1e-3, abs=1e-5)


def test_a_model_torch_fx_cannot_trace_stays_eager():
    class DataDependent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 1)

        def forward(self, x):
            if x.sum() > 0:  # control flow on values: torch.fx cannot trace it
                x = x * 2
            return self.conv(x)

    compiled, why = compile_forward(DataDependent(), ("conv",))
    assert compiled is None and why.startswith("torch.fx cannot trace the model")


def test_the_sidecar_says_what_dtype_and_compile_resolved_to(tmp_path, monkeypatch):
    monkeypatch.setenv("FV_CACHE_DIR", str(tmp_path / "cache"))
    fv("render", "conv2:0-1", "--model", TINY, "--steps", "4", "--size", "24", "--out", str(tmp_path / "a"))
    sidecar = json.loads(next((tmp_path / "a").rglob("grid.json")).read_text())
    engine = sidecar["engine"]
    assert engine["compile"] == {"setting": "auto", "compiled": False, "why": ["auto: not on a CPU, where compiled steps measured slower"], "seconds": 0}
    assert sidecar["timing"]["compile_seconds"] == 0
    from fvcli.optvis.precision import cpu_has_bf16

    if cpu_has_bf16():  # both timed; the sidecar's dtype is the one chosen
        assert engine["dtype"]["how"] == "timed: the faster of bf16 autocast and float32 in one step of the model"
        assert sidecar["settings"]["dtype"] == engine["dtype"]["chosen"] in ("bfloat16-autocast", "float32")
        assert set(sidecar["timing"]["dtype_step_seconds"]) == {"bfloat16", "float32"}
        cache = tmp_path / "cache" / tuning.CACHE_FILE
        measured = cache.read_text()
        fv("render", "conv2:0-1", "--model", TINY, "--steps", "4", "--size", "24", "--out", str(tmp_path / "b"))
        again = json.loads(next((tmp_path / "b").rglob("grid.json")).read_text())
        assert again["engine"]["dtype"] == engine["dtype"] and cache.read_text() == measured  # remembered, not timed again
    else:
        assert engine["dtype"] == {"setting": "auto", "chosen": "float32", "how": "this device has no native bf16"}
    fv("render", "conv2:0-1", "--model", TINY, "--steps", "4", "--size", "24", "--dtype", "float32", "--compile", "off", "--out", str(tmp_path / "c"))
    engine = json.loads(next((tmp_path / "c").rglob("grid.json")).read_text())["engine"]
    assert engine["dtype"] == {"setting": "float32", "chosen": "float32", "how": "asked for"}
    assert engine["compile"]["why"] == ["off"]


def test_dtype_auto_keeps_the_faster_and_remembers_it(tmp_path, monkeypatch):
    monkeypatch.setenv("FV_CACHE_DIR", str(tmp_path))
    calls = []
    a, b = torch.rand(96, 96), torch.rand(96, 96)

    def step(dtype):  # real work, thirty times more of it in bf16
        calls.append(dtype)
        for _ in range(30 if dtype == "bfloat16" else 1):
            for _ in range(50):
                a @ b

    chosen = tuning.choose_dtype("k", step, CPU)
    assert chosen["dtype"] == "float32" and not chosen["remembered"]
    assert calls == ["float32", "bfloat16", "float32", "bfloat16"]  # two steps each, alternating
    measured = len(calls)
    assert tuning.choose_dtype("k", step, CPU)["remembered"] and len(calls) == measured  # remembered: no steps
    (tmp_path / tuning.CACHE_FILE).write_text("{not json")  # a broken cache is measured again
    assert tuning.choose_dtype("k", step, CPU)["dtype"] == "float32" and len(calls) == measured + 4

    calls.clear()
    close = tuning.choose_dtype("close", lambda dtype: (calls.append(dtype), a @ b), CPU)
    assert calls == ["float32", "bfloat16", "float32", "bfloat16"]
    assert close["dtype"] in ("float32", "bfloat16")
