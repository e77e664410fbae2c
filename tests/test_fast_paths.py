"""Every fast path against its plain counterpart, on the CPU: same values within tolerance."""

import contextlib
import copy
import json
import pytest
import torch

from conftest import TINY, fv
from fvcli.models.capture import forward_to
from fvcli.optvis.engine import render_batch
from fvcli.models.fold import fold_batchnorms
from fvcli.models.registry import load_model
from fvcli.optvis.objectives import batch_values, channel
from fvcli.specs.settings import RenderSettings
from fvcli.optvis.transforms import STANDARD, Draws, Pipeline

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def googlenet():
    return load_model("googlenet", "random", seed=0)


def test_fused_transforms_match_one_resampling_per_transform(googlenet):
    # Smooth images, like rendered ones (white noise would exaggerate the extra blur of resampling).
    coarse = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    images = torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bilinear", align_corners=False)
    draws = Draws([1, 2, 3, 4])
    fused = Pipeline(STANDARD)(images, draws, step=7)
    assert fused.shape == (4, 3, 76, 76)
    sequential = one_by_one(images, STANDARD, draws, step=7)
    assert sequential.shape == fused.shape
    objectives = [channel("inception3a", c) for c in range(4)]
    values = [batch_values(objectives, forward_to(googlenet.module, x, ["inception3a"])) for x in (fused, sequential)]
    # Repeated bilinear resampling blurs a little; both see the same image, shifted, scaled and turned alike.
    assert (fused - sequential).abs().mean() < 0.03
    assert (values[0] - values[1]).abs().max() <= 0.25 * values[0].abs().max()
    pad_jitter = STANDARD[:2]
    exact = Pipeline(pad_jitter)(images, draws, step=7)
    assert torch.allclose(exact, one_by_one(images, pad_jitter, draws, step=7), atol=1e-5)  # integer shifts: no resampling error


def one_by_one(images, transforms, draws, step):
    """The pipeline's own draws, but one resampling per transform."""
    maps = Pipeline(transforms).transform_maps(draws, torch.tensor([step]))
    for transform, affine in zip(transforms, maps):
        images = Pipeline((transform,)).apply(images, affine.matrices((1, len(draws)), "cpu")[0])
    return images


def test_truncated_forward_matches_the_full_forward(googlenet):
    x = torch.rand(2, 3, 96, 96)
    seen = {}
    hook = googlenet.module.inception4a.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    try:
        with torch.no_grad():
            googlenet.module(x)  # the whole network, to the logits
    finally:
        hook.remove()
    with torch.no_grad():
        truncated = forward_to(googlenet.module, x, ["inception4a"])["inception4a"]
    assert torch.equal(truncated, seen["out"])


def test_an_image_starts_the_same_alone_as_in_a_batch(googlenet):
    settings = RenderSettings(steps=0, size=48, dtype="float32")
    objectives = [channel("inception4a", c) for c in (5, 6, 7)]
    together = render_batch(googlenet, objectives, [5, 6, 7], settings, CPU)
    for i, objective in enumerate(objectives):
        alone = render_batch(googlenet, [objective], [5 + i], settings, CPU)
        assert torch.equal(together.images[i], alone.images[0])  # from its own seed
        assert together.start[i] == pytest.approx(alone.start[0], rel=1e-4, abs=1e-6)  # forward rounding only


def test_batched_rendering_is_one_unit_at_a_time_in_float64(float64):
    """No image of a batch depends on another. In float32 the answer is a matter of rounding: the
    kernels sum a batch of 3 in another order than 1 image (1e-6 relative, measured), and Adam's
    normalized first steps and the ReLUs' thresholds amplify that: on an AVX2 CPU, unit 7 reached
    0.180 in a batch against 0.118 alone after 3 steps, and 1e-6 relative noise on the model's
    input alone spreads it over 0.093-0.162. In float64 the same runs agree."""
    googlenet = load_model("googlenet", "random", seed=0)
    settings = RenderSettings(steps=3, size=48, dtype="float32")
    objectives = [channel("inception4a", c) for c in (5, 6, 7)]
    together = render_batch(googlenet, objectives, [5, 6, 7], settings, CPU)
    assert sum(final > 0 for final in together.final) >= 2
    for i, objective in enumerate(objectives):
        alone = render_batch(googlenet, [objective], [5 + i], settings, CPU)
        assert together.final[i] == pytest.approx(alone.final[0], rel=1e-6, abs=1e-9)
        assert torch.allclose(together.images[i], alone.images[0], atol=1e-6)


@pytest.mark.parametrize("name, layers", [("googlenet", ["inception4a", "inception3a.branch2.1"]), ("resnet18", ["layer3", "fc"])])
def test_folded_batchnorms_keep_every_requested_layer(name, layers):
    model = load_model(name, "random", seed=0)
    reference = copy.deepcopy(model.module)
    keys = [model.resolve_layer(layer) for layer in layers]
    probe = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    folded = fold_batchnorms(model.module, keys, probe)
    assert folded > 10
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        a, b = forward_to(reference, x, keys), forward_to(model.module, x, keys)
    for key in keys:
        assert torch.allclose(a[key], b[key], rtol=1e-3, atol=1e-4), key


def test_a_requested_convolution_is_not_folded():
    model = load_model("googlenet", "random", seed=0)
    conv = "inception4a.branch1.conv"  # a convolution's own output, before its BatchNorm
    reference = copy.deepcopy(model.module)
    fold_batchnorms(model.module, [conv], torch.rand(2, 3, 64, 64))
    assert isinstance(model.module.get_submodule("inception4a.branch1.bn"), torch.nn.BatchNorm2d)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():  # equal up to the rounding of the folded convolutions before it
        assert torch.allclose(forward_to(reference, x, [conv])[conv], forward_to(model.module, x, [conv])[conv], rtol=1e-3, atol=1e-4)


def test_out_of_memory_halves_the_batch_and_keeps_going(tmp_path):
    small = TINY.replace(":make", ":make_small_memory")
    output = fv("render", "inner.conv3:0-7", "--model", small, "--steps", "2", "--size", "32",
                "--batch-size", "8", "--out", str(tmp_path))
    assert "out of device memory with a batch of 8; retrying with 4" in output
    assert "out of device memory with a batch of 4; retrying with 2" in output
    sidecar = json.loads(next(tmp_path.rglob("grid.json")).read_text())
    assert sidecar["timing"]["batch_sizes"] == [2]
    assert all(u["image"] for u in sidecar["units"]) and len(sidecar["units"]) == 8  # nothing lost


class _SharedConvOutput(torch.nn.Module):
    """conv -> BatchNorm, but the convolution's output is also read past the BatchNorm: folding
    changes the layer, so the check must refuse it."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.out = torch.nn.Identity()
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)

    def forward(self, x):
        c = self.conv(x)
        return self.out(self.bn(c) + c)


@pytest.mark.parametrize("device", ["cpu", *(["cuda"] if torch.cuda.is_available() else [])])
def test_the_fold_check_is_not_fooled_by_reduced_precision(device):
    """bf16 autocast here, like TF32 convolutions on CUDA (on by default there), rounds by more
    than the fold check's tolerance: the check must run in full float32 to fold what is foldable
    and to refuse what is not."""
    googlenet = load_model("googlenet", "random", seed=0).module.to(device)
    probe = torch.rand(2, 3, 64, 64, device=device)
    shared = _SharedConvOutput().eval().to(device)
    before = torch.backends.cudnn.conv.fp32_precision if hasattr(torch.backends.cudnn, "conv") else None
    with torch.autocast(device, dtype=torch.bfloat16):
        with torch.no_grad():  # the reduced precision is real: the layer moves by more than 1e-3
            a = forward_to(googlenet, probe, ["inception4a"])["inception4a"].float()
            b = forward_to(copy.deepcopy(googlenet).double(), probe.double(), ["inception4a"])["inception4a"].float()
        assert (a - b).abs().max() / b.abs().max() > 1e-3
        assert fold_batchnorms(googlenet, ["inception4a"], probe) == 57
        assert fold_batchnorms(shared, ["out"], probe[:, :, :8, :8]) == 0
    assert isinstance(shared.bn, torch.nn.BatchNorm2d)  # restored
    if before is not None:
        assert torch.backends.cudnn.conv.fp32_precision == before  # the precision flags are restored


PRELU_CASES = [  # (shape, PReLU weights, channels_last, dtype, bf16 autocast)
    ((4, 6, 9, 9), 6, False, torch.float32, False),
    ((4, 6, 9, 9), 6, True, torch.float32, False),
    ((4, 6, 9, 9), 1, True, torch.float32, False),
    ((4, 6, 9, 9), 6, True, torch.float32, True),
    ((4, 6, 9, 9), 6, False, torch.float64, False),
    ((4, 6), 6, False, torch.float32, False),
    ((4, 6), 6, False, torch.float32, True),
]


@pytest.mark.parametrize("shape, weights, channels_last, dtype, bf16", PRELU_CASES)
def test_the_frozen_prelu_backward_gives_torchs_gradients_bit_for_bit(shape, weights, channels_last, dtype, bf16):
    from fvcli.optvis.prelu import FrozenPReLU

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, dtype=dtype, generator=generator)
    x.view(-1)[:3] = torch.tensor([0.0, -0.0, float("nan")], dtype=dtype)  # the edges of the comparison
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.rand(weights, dtype=dtype, generator=generator) - 0.3  # negative slopes too
    mixing = torch.randn(shape[1], shape[1], dtype=dtype, generator=generator)  # a layer before it (bf16 under autocast)
    outward = torch.randn(shape, generator=generator)
    results = []
    for fast in (False, True):
        image = x.detach().clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), FrozenPReLU() if fast else contextlib.nullcontext():
            h = torch.nn.functional.linear(image.movedim(1, -1), mixing).movedim(-1, 1)  # bf16 under autocast
            y = torch.nn.functional.prelu(h, weight)
        (y.float() * outward).sum().backward()
        results.append((y.detach(), image.grad))
    (y0, grad0), (y1, grad1) = results
    assert torch.equal(y0.nan_to_num(7.0), y1.nan_to_num(7.0))
    assert grad0.dtype == grad1.dtype and torch.equal(grad0.nan_to_num(7.0), grad1.nan_to_num(7.0))


def test_a_prelu_network_renders_the_same_images_with_the_frozen_prelu(monkeypatch):
    import fvcli.optvis.engine
    import fvcli.optvis.prelu

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.PReLU(8), torch.nn.MaxPool2d(2), torch.nn.Conv2d(8, 8, 3), torch.nn.PReLU(),
    )
    with torch.no_grad():
        net[1].weight.uniform_(-0.5, 0.5)
    model = load_model("prelu_net", "default", seed=0, module=net)
    model.module.to(memory_format=torch.channels_last)
    settings = RenderSettings(steps=20, size=24, dtype="float32")  # past the ReLU redirect's 16 steps
    objectives = [channel("4", c) for c in (0, 1, 2)]
    calls = []
    frozen_apply = fvcli.optvis.prelu._FrozenPReLU.apply
    monkeypatch.setattr(fvcli.optvis.prelu._FrozenPReLU, "apply", lambda *a: calls.append(1) or frozen_apply(*a))
    fast = render_batch(model, objectives, [1, 2, 3], settings, CPU)
    assert len(calls) == 2 * settings.steps  # both PReLUs of every step's forward pass
    monkeypatch.setattr(fvcli.optvis.engine, "has_prelu", lambda module: False)
    plain = render_batch(model, objectives, [1, 2, 3], settings, CPU)
    assert len(calls) == 2 * settings.steps
    assert torch.equal(fast.images, plain.images) and fast.final == plain.final
