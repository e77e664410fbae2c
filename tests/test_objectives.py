import torch

from fvcli.objectives import batch_values, channel


def test_arithmetic_describes_itself_in_target_syntax():
    a, b = channel("inception4a", 97, "mixed4a"), channel("inception4b", 3, "mixed4b")
    assert str(a) == "mixed4a:97"
    assert str(a - 0.5 * b) == "mixed4a:97 - 0.5*mixed4b:3"
    assert str(-a + b / 4) == "-mixed4a:97 + 0.25*mixed4b:3"
    assert (a + b).layers == ("inception4a", "inception4b")


def test_arithmetic_computes_what_it_says():
    acts = {"l": torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)}
    a, b = channel("l", 0), channel("l", 2)
    assert torch.allclose((a - 0.5 * b)(acts), a(acts) - 0.5 * b(acts))
    assert torch.allclose(a(acts), acts["l"][:, 0].mean(dim=(1, 2)))


def test_batch_values_scores_each_image_by_its_own_objective():
    acts = {"l": torch.randn(3, 5, 4, 4), "m": torch.randn(3, 7)}
    same_layer = [channel("l", 4), channel("l", 0), channel("l", 2)]
    expected = torch.stack([o(acts)[i] for i, o in enumerate(same_layer)])
    assert torch.allclose(batch_values(same_layer, acts), expected)  # the one-gather fast path
    mixed = [channel("l", 1), channel("m", 6), channel("l", 1) + channel("m", 0)]
    expected = torch.stack([o(acts)[i] for i, o in enumerate(mixed)])
    assert torch.allclose(batch_values(mixed, acts), expected)  # flat (N, C) layers too
