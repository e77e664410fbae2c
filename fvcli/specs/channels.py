"""Channel lists, as a target's `LAYER:CHANNELS` and a spec's `channels:` write them: `97`, `0-511`,
`3,7,100-107`. Ranges are bounded before they are expanded (specs.limits.MAX_UNITS), indices before
int() reads them (MAX_INDEX), and a digit of another script is named, not read.
"""

from __future__ import annotations

import re
from typing import Any

from fvcli.specs.limits import MAX_INDEX, MAX_UNITS, non_ascii_digit

EXPECTED_CHANNELS = "expected channels like 97, 0-511 or 3,7,100-107"


def parse_channel_item(item: Any, what: str = "channel") -> list[int]:
    """One channel (int) or a text of ranges and numbers, e.g. `3,7,100-107`; ValueError if malformed.
    `what` the numbers are, for messages (direction files' rows are written like channels)."""
    if isinstance(item, bool):
        raise ValueError(f"{EXPECTED_CHANNELS}, got {item!r}")
    if isinstance(item, int):
        if item < 0:
            raise ValueError(f"expected a channel index of 0 or more, got {item}")
        return [channel_index(str(item))]
    if not isinstance(item, str) or not item.strip():
        raise ValueError(f"{EXPECTED_CHANNELS}, got {item!r}")
    channels: list[int] = []
    for part in item.split(","):
        match = re.fullmatch(r"\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?", part)
        if not match:
            digit = non_ascii_digit(part)
            raise ValueError(f"{EXPECTED_CHANNELS}, got {item!r}" + (f"; write digits as 0-9, not {digit!r}" if digit else ""))
        first = channel_index(match.group(1), what)
        last = channel_index(match.group(2), what) if match.group(2) is not None else first
        if last < first:
            raise ValueError(f"reversed range {first}-{last}; write {last}-{first}")
        if last - first + 1 > MAX_UNITS - len(channels):  # checked before the range is expanded
            raise ValueError(too_many(f"range {first}-{last} names {last - first + 1} {what}s"))
        channels.extend(range(first, last + 1))
    return channels


def channel_index(digits: str, what: str = "channel") -> int:
    """An index from ASCII digits, at most MAX_INDEX (checked on the text: int() of a huge text is slow)."""
    if len(digits.lstrip("0")) > len(str(MAX_INDEX)) or int(digits) > MAX_INDEX:
        shown = digits if len(digits) <= 20 else digits[:17] + "..."
        raise ValueError(f"{what} {shown} is too large (at most {MAX_INDEX})")
    return int(digits)


def too_many(what: str) -> str:
    return f"{what}; a job renders at most {MAX_UNITS} units (split it into several jobs)"


def parse_channels(value: Any, what: str = "channel") -> tuple[int, ...] | None:
    """A channels value (text, int, list of those, or None for all) as sorted unique indices."""
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError(f"{EXPECTED_CHANNELS}, got an empty list")
    channels: set[int] = set()
    for item in items:
        channels.update(parse_channel_item(item, what))
        if len(channels) > MAX_UNITS:
            raise ValueError(too_many(f"more than {MAX_UNITS} {what}s"))
    return tuple(sorted(channels))


def describe_channels(channels: tuple[int, ...]) -> str:
    """(0, 1, 2, 3, 7) -> '0-3,7': the compact form, for messages and descriptions."""
    parts: list[str] = []
    start = prev = None
    for c in channels:
        if prev is not None and c == prev + 1:
            prev = c
            continue
        if start is not None:
            parts.append(f"{start}-{prev}" if prev != start else f"{start}")
        start = prev = c
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ",".join(parts)
