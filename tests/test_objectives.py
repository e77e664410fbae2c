import torch

from fvcli.optvis.objectives import batch_values, channel


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


def test_neuron_reads_the_centre_of_every_layout():
    from fvcli.models.layer_keys import infer_layout
    from fvcli.optvis.objectives import neuron

    nchw = torch.randn(2, 4, 5, 5)
    assert torch.equal(neuron("l", 3, layout=infer_layout(nchw.shape))({"l": nchw}), nchw[:, 3, 2, 2])
    nhwc = torch.randn(2, 5, 5, 7)
    assert torch.equal(neuron("l", 6, layout=infer_layout(nhwc.shape))({"l": nhwc}), nhwc[:, 2, 2, 6])
    tokens = torch.randn(2, 1 + 9, 8)  # a class token, then a 3 x 3 patch grid: the centre is patch 4
    assert torch.equal(neuron("l", 5, layout=infer_layout(tokens.shape))({"l": tokens}), tokens[:, 1 + 4, 5])
    flat = torch.randn(2, 10)
    assert torch.equal(neuron("l", 9, layout=infer_layout(flat.shape))({"l": flat}), flat[:, 9])
    assert str(neuron("inception4a", 97, "mixed4a")) == "neuron(mixed4a:97)"


def test_token_channels_leave_out_the_class_token_unless_asked():
    from fvcli.models.layer_keys import infer_layout

    tokens = torch.randn(2, 1 + 4, 3)
    layout = infer_layout(tokens.shape)
    assert torch.allclose(channel("l", 1, layout=layout)({"l": tokens}), tokens[:, 1:, 1].mean(dim=1))
    assert torch.allclose(channel("l", 1, layout=layout, all_tokens=True)({"l": tokens}), tokens[:, :, 1].mean(dim=1))
    mixed = [channel("l", 0, layout=layout), channel("l", 2, layout=layout)]
    assert torch.allclose(batch_values(mixed, {"l": tokens}), torch.stack([tokens[0, 1:, 0].mean(), tokens[1, 1:, 2].mean()]))


def test_a_batch_of_directions_is_scored_in_one_product_as_one_at_a_time():
    from fvcli.models.layer_keys import infer_layout
    from fvcli.optvis.objectives import Direction, batch_plan

    for shape in [(4, 6, 3, 3), (4, 1 + 9, 6), (4, 6)]:  # channels first, tokens, flat
        acts = {"l": torch.randn(*shape, requires_grad=True)}
        layout = infer_layout(shape)
        for neuron in (False, True):
            directions = [Direction("l", torch.randn(6), f"d{i}", layout, neuron=neuron) for i in range(4)]
            assert batch_plan(directions, torch.device("cpu")).shape == (4, 6)
            one_by_one = torch.stack([o(acts)[i] for i, o in enumerate(directions)])
            assert torch.allclose(batch_values(directions, acts), one_by_one, atol=1e-5)
    mixed = [Direction("l", torch.randn(6), "d", layout), channel("l", 1, layout=layout)]
    assert batch_plan(mixed, torch.device("cpu")) is None  # mixed kinds: one at a time
