"""Jobs and units: what a run renders, where it goes, and how units are grouped into batches.

A job is one target under one set of settings (a JobRequest, fvcli.specs.requests) resolved against
its model; a unit is one image (one channel, say). Each unit's random state (its initial image and
its transforms) derives from the seed and the unit alone, never from its batch, so batch size and
batch company do not change what a unit is optimized from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Hashable, Iterable, TypeVar

from fvcli.specs.requests import JobRequest

if TYPE_CHECKING:  # torch-free at run time: specs are checked before torch loads
    from torch import Tensor

    from fvcli.optvis.images import Photo
    from fvcli.models.layer_keys import ResolvedLayer
    from fvcli.optvis.objectives import Objective
    from fvcli.optvis.spectrum import Spectrum

T = TypeVar("T")


@dataclass(frozen=True)
class Unit:
    """One cell of a job's grid: one image, or several (diversity copies, interpolation frames)."""

    job: int
    index: int  # its place in the job
    key: int | None  # the varying channel (or random-direction index); None for a one-unit target
    seed: int
    objectives: tuple[Objective, ...]  # one per image
    images: tuple[str, ...]  # PNG file names, one per image
    label: str
    description: str  # the unit's objective as text
    shared: bool = False  # its images share a low-resolution image (interpolation frames)
    by_direction: bool = False  # `key` indexes directions (random:K, a direction file's rows), not channels

    @property
    def seeds(self) -> tuple[int, ...]:
        """The first image uses the unit's seed; the others derive from it."""
        return (self.seed, *(derive_seed(self.seed, i) for i in range(1, len(self.objectives))))


def stable_seed(text: str) -> int:
    """A 63-bit seed from a text: the same on every run, machine and Python version."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def derive_seed(seed: int, index: int) -> int:
    return stable_seed(f"fv-image/{seed}/{index}")


@dataclass(frozen=True)
class Job:
    """A job resolved against its model."""

    request: JobRequest
    units: tuple[Unit, ...]
    layer: ResolvedLayer | None  # the layer the job is about (for the sidecar)
    input_size: int | None = None  # set when the model takes only this size: images are resized to it
    diversity_layer: ResolvedLayer | None = None  # where --diversity measures style
    read_as: tuple[tuple[str, str], ...] = ()  # (layer name, its pre-ReLU twin's) that minimized terms read
    photo: Photo | None = None  # --init, read (its pixels and its file's sha256)
    spectrum: Spectrum | None = None  # --spectrum, read
    size_from: str = "--size"  # where the image size came from: --size, model (its declared size) or default

    @property
    def folder(self) -> Path:
        return self.request.folder

    @property
    def init_pixels(self) -> Tensor | None:
        """What each image starts as (--init), or None: a random start."""
        return self.photo.pixels if self.photo is not None else None


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
