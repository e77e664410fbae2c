"""The target grammar: every form parses, describes itself back, expands into units, and bad text
fails with the column of the problem."""

import pytest

from fvcli.specs.channels import describe_channels, parse_channels
from fvcli.specs.grammar import TargetError, parse_target
from fvcli.specs.targets import Atom, Target


def channel(layer, *channels):
    return Atom("channel", layer, tuple(channels) if channels else None)


@pytest.mark.parametrize(
    "text, terms",
    [
        ("mixed4a:97", [(1.0, channel("mixed4a", 97))]),
        ("mixed4a:0-3", [(1.0, channel("mixed4a", 0, 1, 2, 3))]),
        ("mixed4a:3,7,100-102", [(1.0, channel("mixed4a", 3, 7, 100, 101, 102))]),
        ("mixed4a:2,2,1-2", [(1.0, channel("mixed4a", 1, 2))]),
        ("mixed4a", [(1.0, channel("mixed4a"))]),  # every channel
        ("inception4a.branch1.conv:0", [(1.0, channel("inception4a.branch1.conv", 0))]),
        ("-mixed4a:97", [(-1.0, channel("mixed4a", 97))]),
        ("mixed4a:97 + 0.5*mixed4a:143", [(1.0, channel("mixed4a", 97)), (0.5, channel("mixed4a", 143))]),
        ("2*(mixed4a:1 - mixed4b:2)/4", [(0.5, channel("mixed4a", 1)), (-0.5, channel("mixed4b", 2))]),
        ("neuron(mixed4a:3, y=1, x=2)", [(1.0, Atom("neuron", "mixed4a", (3,), position=(1, 2)))]),
        ("layer(mixed4a)", [(1.0, Atom("layer", "mixed4a"))]),
        ("deepdream(mixed4a)", [(1.0, Atom("layer", "mixed4a"))]),
        ("logit:goldfish", [(1.0, Atom("logit", label="goldfish"))]),
        ("probability:'great white shark'", [(1.0, Atom("probability", label="great white shark"))]),
        ("logit:1", [(1.0, Atom("logit", label=1))]),
        # A model that returns a tuple or dict: its logits are an element of its output.
        ("logit@logits:2", [(1.0, Atom("logit", label=2, element="logits"))]),
        ("probability@0:'tabby cat'", [(1.0, Atom("probability", label="tabby cat", element="0"))]),
        ("output@feat:0-1", [(1.0, channel("output@feat", 0, 1))]),
        ("direction(mixed4a, [1, -0.5, 2e-1])", [(1.0, Atom("direction", "mixed4a", vector=(1.0, -0.5, 0.2)))]),
        ("direction_neuron(mixed4a, 'v.npy')", [(1.0, Atom("direction_neuron", "mixed4a", vector="v.npy"))]),
        ("direction(mixed4a, random:4)", [(1.0, Atom("direction", "mixed4a", vector="random:4"))]),
        ("attn:0-1@1", [(1.0, channel("attn@1", 0, 1))]),
        ("attn@1:0-1", [(1.0, channel("attn@1", 0, 1))]),
        # An nn.Sequential's layers are named by digits: a layer before ':' or inside a call.
        ("4:0-3", [(1.0, channel("4", 0, 1, 2, 3))]),
        ("4.1:2", [(1.0, channel("4.1", 2))]),
        ("2*4:1", [(2.0, channel("4", 1))]),
        ("-0.5*4:1 + 3:0", [(-0.5, channel("4", 1)), (1.0, channel("3", 0))]),
        ("2*mixed4a:0", [(2.0, channel("mixed4a", 0))]),
        ("4:0-1@1", [(1.0, channel("4@1", 0, 1))]),
        ("layer(4)", [(1.0, Atom("layer", "4"))]),
        ("neuron(4:1, y=0, x=1)", [(1.0, Atom("neuron", "4", (1,), position=(0, 1)))]),
        ("channel(12:3)", [(1.0, channel("12", 3))]),
        ("direction(4, [1, 2])", [(1.0, Atom("direction", "4", vector=(1.0, 2.0)))]),
    ],
)
def test_parse_and_round_trip(text, terms):
    target = parse_target(text)
    assert target == Target(tuple(terms))
    assert parse_target(target.describe()) == target  # the description is valid target text


def test_ranges_expand_into_units_sharing_the_rest():
    units = parse_target("-mixed4a:0-2 + 0.1*layer(mixed3a)").expand()
    assert [key for key, _ in units] == [0, 1, 2]
    assert units[1][1].describe() == "-mixed4a:1 + 0.1*layer(mixed3a)"
    directions = parse_target("direction(mixed4a, random:3)").expand()
    assert [t.describe() for _, t in directions] == [f"direction(mixed4a, random[{k}])" for k in range(3)]
    assert parse_target("mixed4a:97 + mixed4b:3").expand() == [(None, parse_target("mixed4a:97 + mixed4b:3"))]


@pytest.mark.parametrize(
    "text, message",
    [
        ("mixed4a:97 +", "expected an objective, found the end at column 13 of 'mixed4a:97 +'"),
        ("mixed4a:5-2", "reversed range 5-2; write 2-5 at column 9"),
        ("mixed4a:abc", "expected channels like 97, 0-511 or 3,7,100-107 at column 9"),
        ("3*4", "a number alone is not an objective at column 1"),
        ("4", "a number alone is not an objective at column 1"),
        ("2.5*4", "a number alone is not an objective at column 1"),
        ("mixed4a:1 * mixed4b:2", "cannot multiply two objectives at column 12"),
        ("mixed4a:1 / mixed4b:2", "can only divide by a number at column 12"),
        ("mixed4a:0-3 + mixed4b:0-3", "only one atom of a target may name several units"),
        ("neuron(mixed4a)", "expected ':' and channels after mixed4a at column 15"),
        ("mixed4a:97 ^ 2", "unexpected '^' at column 12"),
        ("(mixed4a:1", "expected ')', found the end at column 11"),
        ("mixed4a:1/0", "division by zero at column 11"),
        ("direction(mixed4a, 5)", "expected a vector"),
        ("", "empty target"),
    ],
)
def test_bad_targets_name_the_column(text, message):
    with pytest.raises(TargetError) as error:
        parse_target(text)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_parse_channels_from_yaml_values():
    assert parse_channels("0-3") == (0, 1, 2, 3)
    assert parse_channels(7) == (7,)
    assert parse_channels([3, 7, "10-12"]) == (3, 7, 10, 11, 12)
    assert parse_channels(None) is None
    for bad in ([], True, -1, 1.5, {"a": 1}):
        with pytest.raises(ValueError):
            parse_channels(bad)


def test_describe_channels_is_compact():
    assert describe_channels((0, 1, 2, 3, 7, 9, 10)) == "0-3,7,9-10"
    assert describe_channels((5,)) == "5"
