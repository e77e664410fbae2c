"""Jobs and units: what a run renders, where it goes, and how units are grouped into batches.

A job is one layer's channels under one set of settings; a unit is one image of one channel. Each
unit's random state (its initial image and its transforms) derives from the seed and the unit alone,
never from its batch, so batch size and batch company do not change what a unit is optimized from.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable, Iterable, TypeVar

from fvcli.layers import Layout
from fvcli.settings import RenderSettings

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
T = TypeVar("T")


def check_job_name(name: object) -> str:
    """A job name becomes a folder under --out, so it must be one plain path component."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(
            f"expected a folder name of letters, digits, '.', '_' and '-' (no '/' or '..'), got {name!r}"
        )
    return name


def safe_component(text: str) -> str:
    """Any text as one safe path component: runs of other characters become '_'."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "_"
    return cleaned


def model_slug(model: str) -> str:
    """The folder name of a model: `googlenet`, `FILE.FUNC` for a factory `path/FILE.py:FUNC`,
    `timm.NAME` for `timm:NAME`, and `FILE` for a model file `path/FILE.pt`."""
    if ":" in model:
        source, _, func = model.rpartition(":")
        stem = Path(source).stem if source.endswith(".py") else source.rsplit(".", 1)[-1]
        return safe_component(f"{stem}.{func}")
    if "/" in model or "\\" in model or "." in model:
        return safe_component(Path(model).stem)
    return safe_component(model)


@dataclass(frozen=True)
class JobRequest:
    """A job as the user asked for it, before the model is loaded and the layer resolved."""

    layer: str
    channels: tuple[int, ...] | None  # None: every channel of the layer
    settings: RenderSettings
    out: str
    name: str | None = None
    origin: str = ""  # where the job came from, for messages

    @property
    def folder(self) -> Path:
        if self.name:
            return Path(self.out) / self.name
        return Path(self.out) / model_slug(self.settings.model) / safe_component(self.layer)


@dataclass(frozen=True)
class Unit:
    """One image to render: channel `channel` of job number `job`."""

    job: int
    channel: int
    seed: int


@dataclass(frozen=True)
class Job:
    """A job resolved against its model: the module path of its layer and its channels."""

    request: JobRequest
    layer_path: str  # the layer key: a module path, with @ELEMENT for tuple or dict outputs
    layer_shape: tuple[int, ...]  # the layer's output for one image at the job's size
    layout: Layout
    units: tuple[Unit, ...]
    input_size: int | None = None  # set when the model takes only this size: images are resized to it

    @property
    def channel_count(self) -> int:
        return self.layout.channels

    @property
    def folder(self) -> Path:
        return self.request.folder

    def image_name(self, channel: int) -> str:
        width = max(4, len(str(self.channel_count - 1)))
        return f"{safe_component(self.request.layer)}_{channel:0{width}d}.png"


def unit_seed(seed: int, layer_path: str, channel: int) -> int:
    """A 63-bit seed for one unit, stable across runs, batches, shards and machines."""
    digest = hashlib.sha256(f"fv-unit/{seed}/{layer_path}/{channel}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def make_units(job_index: int, seed: int, layer_path: str, channels: Iterable[int]) -> tuple[Unit, ...]:
    return tuple(Unit(job_index, c, unit_seed(seed, layer_path, c)) for c in channels)


def plan_batches(
    items: Iterable[T], key: Callable[[T], Hashable], batch_size: Callable[[Hashable, int], int]
) -> list[list[T]]:
    """Group items that can share a batch (same key), in first-seen order, then chunk each group.

    `batch_size(key, count)` says how many of a group of `count` go into one batch.
    """
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    batches: list[list[T]] = []
    for group_key, group in groups.items():
        size = max(1, batch_size(group_key, len(group)))
        batches.extend(group[i : i + size] for i in range(0, len(group), size))
    return batches
