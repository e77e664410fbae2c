"""InceptionV1 (inception5h): parameter names and shapes of the published conversion, hookable layers."""

from __future__ import annotations

import io

import pytest
import torch

from fvcli.models.inceptionv1 import ARTICLE_LAYERS, NORMALIZATION, build_inceptionv1, same_pad

# Every convolution of ProGamerGov/pytorch-old-tensorflow-models' inception5h.py, transcribed as
# (attribute, in channels, out channels, kernel size); all have biases. Each is `<name>_pre_relu_conv`.
REFERENCE_CONVS = [
    ("conv2d0", 3, 64, 7),
    ("conv2d1", 64, 64, 1),
    ("conv2d2", 64, 192, 3),
    ("mixed3a_1x1", 192, 64, 1),
    ("mixed3a_3x3_bottleneck", 192, 96, 1),
    ("mixed3a_5x5_bottleneck", 192, 16, 1),
    ("mixed3a_pool_reduce", 192, 32, 1),
    ("mixed3a_3x3", 96, 128, 3),
    ("mixed3a_5x5", 16, 32, 5),
    ("mixed3b_1x1", 256, 128, 1),
    ("mixed3b_3x3_bottleneck", 256, 128, 1),
    ("mixed3b_5x5_bottleneck", 256, 32, 1),
    ("mixed3b_pool_reduce", 256, 64, 1),
    ("mixed3b_3x3", 128, 192, 3),
    ("mixed3b_5x5", 32, 96, 5),
    ("mixed4a_1x1", 480, 192, 1),
    ("mixed4a_3x3_bottleneck", 480, 96, 1),
    ("mixed4a_5x5_bottleneck", 480, 16, 1),
    ("mixed4a_pool_reduce", 480, 64, 1),
    ("mixed4a_3x3", 96, 204, 3),
    ("mixed4a_5x5", 16, 48, 5),
    ("mixed4b_1x1", 508, 160, 1),
    ("mixed4b_3x3_bottleneck", 508, 112, 1),
    ("mixed4b_5x5_bottleneck", 508, 24, 1),
    ("mixed4b_pool_reduce", 508, 64, 1),
    ("mixed4b_3x3", 112, 224, 3),
    ("mixed4b_5x5", 24, 64, 5),
    ("mixed4c_1x1", 512, 128, 1),
    ("mixed4c_3x3_bottleneck", 512, 128, 1),
    ("mixed4c_5x5_bottleneck", 512, 24, 1),
    ("mixed4c_pool_reduce", 512, 64, 1),
    ("mixed4c_3x3", 128, 256, 3),
    ("mixed4c_5x5", 24, 64, 5),
    ("mixed4d_1x1", 512, 112, 1),
    ("mixed4d_3x3_bottleneck", 512, 144, 1),
    ("mixed4d_5x5_bottleneck", 512, 32, 1),
    ("mixed4d_pool_reduce", 512, 64, 1),
    ("mixed4d_3x3", 144, 288, 3),
    ("mixed4d_5x5", 32, 64, 5),
    ("mixed4e_1x1", 528, 256, 1),
    ("mixed4e_3x3_bottleneck", 528, 160, 1),
    ("mixed4e_5x5_bottleneck", 528, 32, 1),
    ("mixed4e_pool_reduce", 528, 128, 1),
    ("mixed4e_3x3", 160, 320, 3),
    ("mixed4e_5x5", 32, 128, 5),
    ("mixed5a_1x1", 832, 256, 1),
    ("mixed5a_3x3_bottleneck", 832, 160, 1),
    ("mixed5a_5x5_bottleneck", 832, 48, 1),
    ("mixed5a_pool_reduce", 832, 128, 1),
    ("mixed5a_3x3", 160, 320, 3),
    ("mixed5a_5x5", 48, 128, 5),
    ("mixed5b_1x1", 832, 384, 1),
    ("mixed5b_3x3_bottleneck", 832, 192, 1),
    ("mixed5b_5x5_bottleneck", 832, 48, 1),
    ("mixed5b_pool_reduce", 832, 128, 1),
    ("mixed5b_3x3", 192, 384, 3),
    ("mixed5b_5x5", 48, 128, 5),
]


def reference_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for name, c_in, c_out, k in REFERENCE_CONVS:
        shapes[f"{name}_pre_relu_conv.weight"] = (c_out, c_in, k, k)
        shapes[f"{name}_pre_relu_conv.bias"] = (c_out,)
    shapes["softmax2_pre_activation_matmul.weight"] = (1008, 1024)
    shapes["softmax2_pre_activation_matmul.bias"] = (1008,)
    return shapes


@pytest.fixture(scope="module")
def model():
    return build_inceptionv1().eval()


def test_state_dict_matches_the_published_conversion(model):
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == reference_shapes()
    assert sum(v.numel() for v in model.state_dict().values()) == 7_066_380
    # spot checks, written out: the conv after the first LRN, a mixed4a branch, the classifier
    assert ours["conv2d1_pre_relu_conv.weight"] == (64, 64, 1, 1)
    assert ours["mixed4a_3x3_pre_relu_conv.weight"] == (204, 96, 3, 3)
    assert ours["softmax2_pre_activation_matmul.weight"] == (1008, 1024)


def test_article_layers_are_hookable_with_their_channels(model):
    modules = dict(model.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    handles = [
        modules[name].register_forward_hook(lambda m, i, o, name=name: outputs.setdefault(name, o))
        for name, _ in ARTICLE_LAYERS
    ]
    try:
        with torch.no_grad():
            logits = model(torch.rand(1, 3, 128, 128))  # the whole forward runs at 128 px
    finally:
        for h in handles:
            h.remove()
    assert logits.shape == (1, 1008)
    assert list(outputs) == [name for name, _ in ARTICLE_LAYERS]  # forward order
    assert all(bool((out >= 0).all()) for out in outputs.values())  # post-ReLU, as in Lucid
    seen = {name: tuple(out.shape) for name, out in outputs.items()}
    for name, channels in ARTICLE_LAYERS:
        assert seen[name][:2] == (1, channels), name
    assert seen["conv2d0"] == (1, 64, 64, 64)
    assert seen["mixed3a"] == (1, 256, 16, 16)
    assert seen["mixed4a"] == (1, 508, 8, 8)
    assert seen["mixed5b"] == (1, 1024, 4, 4)


def test_full_forward_at_224(model):
    with torch.no_grad():
        assert model(torch.rand(1, 3, 224, 224)).shape == (1, 1008)


def test_state_dict_round_trip():
    buffer = io.BytesIO()
    torch.save(build_inceptionv1().state_dict(), buffer)
    buffer.seek(0)
    other = build_inceptionv1()
    other.load_state_dict(torch.load(buffer, weights_only=True), strict=True)


def test_normalization_is_x255_minus_117():
    mean, std = (torch.tensor(v) for v in NORMALIZATION)
    x = torch.tensor([0.0, 0.5, 1.0])
    assert torch.allclose((x[:, None] - mean) / std, x[:, None] * 255 - 117, atol=1e-3)


def test_same_padding_matches_the_reference_pads_at_even_sizes():
    # The reference pads 224 px input by (2, 3) for conv2d0 and by (0, 1) before stride-2 pools.
    assert same_pad(torch.zeros(1, 1, 224, 224), 7, 2).shape[-2:] == (229, 229)
    padded = same_pad(torch.ones(1, 1, 112, 112), 3, 2)
    assert padded.shape[-2:] == (113, 113) and padded[0, 0, 0, 0] == 1 and padded[0, 0, -1, -1] == 0
    assert same_pad(torch.zeros(1, 1, 28, 28), 5, 1).shape[-2:] == (32, 32)
