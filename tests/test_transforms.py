import random

import torch

from fvcli.transforms import STANDARD, Jitter, Pad, Pipeline


def test_standard_preset_has_the_reference_values():
    pad, jitter, scale, rotate, jitter2 = STANDARD
    assert (pad.pixels, pad.fill, jitter.pixels, jitter2.pixels) == (12, 0.5, 8, 4)
    assert scale.factors == (0.9, 0.92, 0.94, 0.96, 0.98, 1.0, 1.02, 1.04, 1.06, 1.08, 1.1)
    assert len(rotate.degrees) == 26 and rotate.degrees.count(0.0) == 6  # 0 five times more likely
    assert Pipeline(STANDARD).canvas(128, 128) == (140, 140)


def test_pad_and_integer_jitter_only_move_pixels():
    image = torch.rand(1, 3, 16, 16)
    pipeline = Pipeline((Pad(4), Jitter(4)))
    rng = random.Random(3)
    out = pipeline(image, [rng])
    assert out.shape == (1, 3, 20, 20)
    # The original image appears unchanged (up to float rounding) somewhere in the output.
    shifts = [(dy, dx) for dy in range(5) for dx in range(5)
              if torch.allclose(out[:, :, dy:dy + 16, dx:dx + 16], image, atol=1e-5)]
    assert len(shifts) == 1
    dy, dx = shifts[0]
    border = torch.ones(1, 3, 20, 20, dtype=torch.bool)
    border[:, :, dy:dy + 16, dx:dx + 16] = False
    assert torch.allclose(out[border], torch.tensor(0.5), atol=1e-5)  # the pad fill


def test_each_image_draws_from_its_own_generator():
    images = torch.rand(3, 3, 24, 24)
    pipeline = Pipeline(STANDARD)
    together = pipeline(images, [random.Random(s) for s in (1, 2, 3)])
    alone = pipeline(images[1:2], [random.Random(2)])
    assert torch.allclose(together[1:2], alone, atol=1e-6)
    assert not torch.allclose(together[0], together[2])
