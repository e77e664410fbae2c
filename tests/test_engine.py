"""The engine on real models: objectives rise, units start dead and still move, batches are independent."""

import dataclasses

import pytest
import torch

from fvcli.optvis.engine import render_batch
from fvcli.models.registry import load_model
from fvcli.optvis.objectives import channel
from fvcli.optvis.redirect import RedirectReLU
from fvcli.specs.settings import RenderSettings

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def googlenet():
    return load_model("googlenet", "random", seed=0)


def test_every_units_objective_rises(googlenet):
    objectives = [channel("inception4a", c, "mixed4a") for c in (0, 1, 2, 3, 97, 511)]
    settings = RenderSettings(steps=16, size=48, transforms="standard")  # Lucid's standard transforms: what these thresholds were measured with (auto picks robust for GoogLeNet, which a random network's small image rises more slowly under)
    result = render_batch(googlenet, objectives, list(range(6)), settings, CPU)
    assert result.errors == [None] * 6
    for start, final in zip(result.start, result.final):
        assert final > start + 0.02
    assert sum(result.final) - sum(result.start) > 6 * 0.3
    assert result.images.shape == (6, 3, 48, 48)
    assert 0 <= result.images.min() and result.images.max() <= 1


@pytest.mark.parametrize("param, transforms", [("pixel", "none"), ("fourier", "none"), ("pixel", "standard")])
def test_objective_rises_with_each_parameterization(param, transforms, googlenet):
    settings = RenderSettings(steps=12, size=48, param=param, transforms=transforms, lr=0.05)
    result = render_batch(googlenet, [channel("inception3a", 5)], [7], settings, CPU)
    assert result.final[0] > result.start[0] + 0.1


def test_a_units_random_state_does_not_depend_on_its_batch(googlenet):
    # Initial image and starting value are the same alone or in company. (Later steps agree only up
    # to float rounding: the CPU convolution kernels differ slightly with the batch size.)
    objectives = [channel("inception4a", c) for c in (10, 11, 12)]
    settings = RenderSettings(steps=1, size=48)
    together = render_batch(googlenet, objectives, [5, 6, 7], dataclasses.replace(settings, steps=0), CPU)
    alone = render_batch(googlenet, objectives[1:2], [6], dataclasses.replace(settings, steps=0), CPU)
    assert torch.equal(together.images[1], alone.images[0])
    assert together.start[1] == pytest.approx(alone.start[0], rel=1e-4, abs=1e-6)


def test_relu_redirect_moves_units_that_start_dead():
    # A layer whose unit is closed for every input: without the redirect no gradient reaches the image.
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 1, 1), torch.nn.ReLU(), torch.nn.Conv2d(1, 1, 1))
    with torch.no_grad():
        model[0].weight.fill_(0.1)
        model[0].bias.fill_(-1.0)  # pre-activation in [-1, -0.7] for images in [0, 1]
        model[2].weight.fill_(1.0)
        model[2].bias.zero_()
    x = torch.rand(1, 3, 4, 4, requires_grad=True)
    model(x).sum().backward()
    assert x.grad.abs().max() == 0
    x.grad = None
    with RedirectReLU():
        y = model(x).sum()
    (-y).backward()
    assert x.grad.abs().max() > 0 and (x.grad <= 0).all()  # pushed towards opening the unit


def test_cpu_rendering_is_deterministic(googlenet):
    settings = dataclasses.replace(RenderSettings(steps=5, size=48), seed=3)
    runs = [render_batch(googlenet, [channel("inception4a", 9)], [42], settings, CPU) for _ in range(2)]
    assert torch.equal(runs[0].images, runs[1].images)


def test_forward_stops_at_the_deepest_needed_layer_and_leaves_no_hooks(googlenet):
    module = googlenet.module
    reached = []
    probe = module.inception4b.register_forward_hook(lambda *_: reached.append("inception4b"))
    try:
        render_batch(googlenet, [channel("inception4a", 0)], [1], RenderSettings(steps=2, size=48), CPU)
    finally:
        probe.remove()
    assert reached == []  # nothing past inception4a ran
    assert all(not m._forward_hooks for m in module.modules())
