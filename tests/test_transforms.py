import pytest
import torch

from fvcli.optvis.transforms import CHUNK_STEPS, STANDARD, Draws, Jitter, Pad, Pipeline, sizing


def test_standard_preset_has_the_reference_values():
    pad, jitter, scale, rotate, jitter2 = STANDARD
    assert (pad.pixels, pad.fill, jitter.pixels, jitter2.pixels) == (12, 0.5, 8, 4)
    assert scale.factors == (0.9, 0.92, 0.94, 0.96, 0.98, 1.0, 1.02, 1.04, 1.06, 1.08, 1.1)
    assert len(rotate.degrees) == 26 and rotate.degrees.count(0.0) == 6  # 0 five times more likely
    assert Pipeline(STANDARD).canvas(128, 128) == (140, 140)


def test_pad_and_integer_jitter_only_move_pixels():
    image = torch.rand(1, 3, 16, 16)
    pipeline = Pipeline((Pad(4), Jitter(4)))
    out = pipeline(image, Draws([3]), step=0)
    assert out.shape == (1, 3, 20, 20)
    # The original image appears unchanged (up to float rounding) somewhere in the output.
    shifts = [(dy, dx) for dy in range(5) for dx in range(5)
              if torch.allclose(out[:, :, dy:dy + 16, dx:dx + 16], image, atol=1e-5)]
    assert len(shifts) == 1
    dy, dx = shifts[0]
    border = torch.ones(1, 3, 20, 20, dtype=torch.bool)
    border[:, :, dy:dy + 16, dx:dx + 16] = False
    assert torch.allclose(out[border], torch.tensor(0.5), atol=1e-5)  # the pad fill


@pytest.mark.parametrize("step", [0, 5, CHUNK_STEPS + 3])
def test_each_image_draws_from_its_own_seed_whatever_its_batch(step):
    images = torch.rand(3, 3, 24, 24)
    pipeline = Pipeline(STANDARD)
    together = pipeline(images, Draws([1, 2, 3]), step)
    alone = Pipeline(STANDARD)(images[1:2], Draws([2]), step)
    assert torch.equal(together[1:2], alone)
    assert not torch.allclose(together[0], together[2])


def test_draws_depend_on_seed_step_and_slot_alone():
    steps = torch.arange(200)
    seeds = [0, 1, 2**62 + 5, 2**63 - 1]
    draws = Draws(seeds)
    # The same numbers for a seed in any company, and in any chunk of steps asked for.
    assert torch.equal(draws.integers(steps, 2, 26)[:, 2], Draws([seeds[2]]).integers(steps, 2, 26)[:, 0])
    assert torch.equal(draws.integers(steps[100:], 2, 26), draws.integers(steps, 2, 26)[100:])
    # Different slots and steps give different numbers.
    assert not torch.equal(draws.integers(steps, 0, 26), draws.integers(steps, 1, 26))


def test_draws_are_uniform_and_uncorrelated():
    draws = Draws(range(8192))
    counts = torch.bincount(draws.integers(torch.arange(4), 0, 11).flatten(), minlength=11).float()
    expected = 4 * 8192 / 11
    chi_square = ((counts - expected) ** 2 / expected).sum().item()
    assert chi_square < 30  # 10 degrees of freedom: p < 0.001 above 29.6
    a, b = draws.integers(torch.arange(2), 3, 26).float()
    neighbours = Draws(range(1, 8193)).integers(torch.arange(1), 3, 26).float()[0]
    assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1]) < 0.05  # consecutive steps
    assert abs(torch.corrcoef(torch.stack([a, neighbours]))[0, 1]) < 0.05  # consecutive seeds


def test_each_rotation_and_scale_is_drawn_at_its_published_frequency():
    _, _, scale, rotate, _ = STANDARD
    draws = Draws(range(4096))
    angles = torch.tensor(rotate.degrees)[draws.integers(torch.arange(8), 4, len(rotate.degrees))]
    assert abs((angles == 0).float().mean().item() - 6 / 26) < 0.01  # 0 five times more likely than others
    assert abs((angles == 10).float().mean().item() - 1 / 26) < 0.005


def test_the_deterministic_resampling_computes_what_grid_sample_computes():
    """--deterministic on CUDA resamples with gathers (grid_sample's CUDA backward is not
    deterministic): the same values and the same gradients, here on the CPU."""
    from fvcli.optvis.transforms import bilinear_gather

    images = torch.rand(3, 3, 20, 20, requires_grad=True)
    pipeline = Pipeline(STANDARD)
    maps = pipeline.maps(Draws([4, 5, 6]), step=2)
    source = torch.einsum("hwk,njk->nhwj", pipeline._base_grid(*pipeline.canvas(20, 20), "cpu"), maps)
    expected = pipeline.apply(images, maps)
    got = bilinear_gather(images - 0.5, source) + 0.5
    assert torch.allclose(got, expected, atol=1e-5)
    weights = torch.rand_like(expected)
    (grad_expected,) = torch.autograd.grad((expected * weights).sum(), images)
    (grad_got,) = torch.autograd.grad((got * weights).sum(), images)
    assert torch.allclose(grad_got, grad_expected, atol=1e-5)


def test_the_standard_transforms_follow_the_network_not_the_picture():
    """Lucid's pixel amounts are for a network of ImageNet scale, whatever --size is; a network that
    declares a smaller input gets them in proportion to declared / 128 (at least 1 px); one that
    declares none, in proportion to --size below 128; resized images, in rendered pixels."""
    amounts = lambda *args: [t.pixels for t in Pipeline.from_setting("standard", sizing(*args)).transforms if hasattr(t, "pixels")]
    # GoogLeNet and EfficientNet declare 224: Lucid's amounts at any size.
    assert amounts(224, 48) == amounts(224, 128) == amounts(224, 512) == [12, 8, 4]
    # MTCNN's ONet (48 px) and RNet (24 px), rendered at their size: as before networks declared one.
    assert amounts(48, 48) == [5, 3, 2]
    assert amounts(24, 24) == [2, 2, 1]
    # ONet rendered at 128 px and resized to 48 for it: the same motion in its input's pixels.
    assert amounts(48, 128, 48) == [12, 8, 4]
    # No declared size: scaled with --size below 128.
    assert amounts(None, 128) == amounts(None, 512) == [12, 8, 4]
    assert amounts(None, 64) == [6, 4, 2]
    assert amounts(None, 4) == [1, 1, 1]
    assert sizing(48, 48).rule == "the network declares 48 px: the preset's amounts x 48/128"
    # auto: robust for networks of ImageNet scale, standard for small ones (MTCNN's).
    names = lambda *args: [type(t).__name__ for t in Pipeline.from_setting("auto", sizing(*args)).transforms]  # noqa: E731
    assert Pipeline.from_setting("auto", sizing(224, 128)).transforms == Pipeline.from_setting("robust", sizing(224, 128)).transforms
    assert Pipeline.from_setting("auto", sizing(48, 48)).transforms == Pipeline.from_setting("standard", sizing(48, 48)).transforms
    assert Pipeline.from_setting("auto", sizing(None, 48)).transforms == Pipeline.from_setting("standard", sizing(None, 48)).transforms
    assert Pipeline.from_setting("auto", sizing(None, 128)).transforms[1] == Jitter(24)
    assert names(224, 128) == ["Pad", "Jitter", "Scale", "Rotate", "Jitter"]
    assert Pipeline.from_setting((("pad", 12), ("jitter", 8)), sizing(24, 24)).describe() == [{"name": "pad", "pixels": 12, "fill": 0.5}, {"name": "jitter", "pixels": 8}]
