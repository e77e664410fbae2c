import pytest

from fvcli.targets import Target, describe_channels, parse_channels, parse_target


@pytest.mark.parametrize(
    "text, expected",
    [
        ("mixed4a:97", Target("mixed4a", (97,))),
        ("mixed4a:0-3", Target("mixed4a", (0, 1, 2, 3))),
        ("mixed4a:3,7,100-102", Target("mixed4a", (3, 7, 100, 101, 102))),
        ("mixed4a: 5 - 6 , 1", Target("mixed4a", (1, 5, 6))),
        ("mixed4a:2,2,1-2", Target("mixed4a", (1, 2))),  # duplicates merge, order is sorted
        ("mixed4a", Target("mixed4a", None)),  # every channel
        ("inception4a.branch1.conv:0", Target("inception4a.branch1.conv", (0,))),
    ],
)
def test_parse_target(text, expected):
    assert parse_target(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("mixed4a:5-2", "reversed range 5-2; write 2-5"),
        ("mixed4a:abc", "expected channels like 97, 0-511 or 3,7,100-107, got 'abc'"),
        ("mixed4a:1,,2", "got '1,,2'"),
        ("mixed4a:-3", "got '-3'"),
        ("mixed4a:", "no channels after ':'"),
        (":5", "expected LAYER:CHANNELS"),
    ],
)
def test_parse_target_rejects(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_target(text)


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
