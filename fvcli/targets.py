"""Targets: `LAYER:CHANNELS` on the command line, `channels:` in a spec. Parsed here and nowhere else.

CHANNELS is `N`, `A-B` (inclusive), a comma list of those, or nothing (every channel of the layer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_RANGE = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")
_EXPECTED = "expected channels like 97, 0-511 or 3,7,100-107"


@dataclass(frozen=True)
class Target:
    """A layer and the channels to render; channels None means every channel of the layer."""

    layer: str
    channels: tuple[int, ...] | None


def parse_channel_item(item: Any) -> list[int]:
    """One channel (int) or a text of ranges and numbers, e.g. `3,7,100-107`; ValueError if malformed."""
    if isinstance(item, bool):
        raise ValueError(f"{_EXPECTED}, got {item!r}")
    if isinstance(item, int):
        if item < 0:
            raise ValueError(f"expected a channel index of 0 or more, got {item}")
        return [item]
    if not isinstance(item, str) or not item.strip():
        raise ValueError(f"{_EXPECTED}, got {item!r}")
    channels: list[int] = []
    for part in item.split(","):
        match = _RANGE.fullmatch(part)
        if not match:
            raise ValueError(f"{_EXPECTED}, got {item!r}")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise ValueError(f"reversed range {first}-{last}; write {last}-{first}")
        channels.extend(range(first, last + 1))
    return channels


def parse_channels(value: Any) -> tuple[int, ...] | None:
    """A channels value (text, int, list of those, or None for all) as sorted unique indices."""
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError(f"{_EXPECTED}, got an empty list")
    channels: set[int] = set()
    for item in items:
        channels.update(parse_channel_item(item))
    return tuple(sorted(channels))


def parse_target(text: str) -> Target:
    """`mixed4a:0-3,7` -> Target("mixed4a", (0, 1, 2, 3, 7)); `mixed4a` -> every channel.

    A trailing `@ELEMENT` picks one element of a layer that returns a tuple or dict:
    `blocks.3:0-9@1` -> Target("blocks.3@1", (0, ..., 9)).
    """
    body, at, element = text.partition("@")
    if at and not element.strip():
        raise ValueError(f"no element after '@' in {text!r}; write e.g. {body}@0")
    layer, sep, channels = body.partition(":")
    layer = layer.strip() + (f"@{element.strip()}" if at else "")
    if not layer:
        raise ValueError(f"expected LAYER:CHANNELS like mixed4a:0-511, got {text!r}")
    if sep and not channels.strip():
        raise ValueError(f"no channels after ':' in {text!r}; write {layer} alone for every channel")
    return Target(layer, parse_channels(channels) if sep else None)


def describe_channels(channels: tuple[int, ...]) -> str:
    """(0, 1, 2, 3, 7) -> '0-3,7': the compact form, for messages and logs."""
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
