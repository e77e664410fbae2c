"""The running state of a dataset-examples collection: for every channel of a layer, the k images
of highest maximum and of lowest minimum over positions seen so far, with where each extreme lies.
It is checkpointed (examples/.state.pt), so a stopped collection continues where it stopped.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import torch
from torch import Tensor

from fvcli.files import atomic_write, read_back
from fvcli.models.layer_keys import Layout, channels_first
from fvcli.models.weights import checked_tensor

EXAMPLES_VERSION = 3  # raise when the same images, model and settings give different examples
LISTED_SKIPPED = 10  # unreadable files named in examples.json


def spatial_extremes(output: Tensor, layout: Layout) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per image and channel (N, C): the maximum over positions and its position, the minimum and
    its position, and the mean. Positions are row-major indices into the grid (patch tokens only; 0
    when flat)."""
    values = channels_first(output, layout).float()
    values = values.reshape(values.shape[0], values.shape[1], -1)
    high, high_at = values.max(dim=2)
    low, low_at = values.min(dim=2)
    return high, high_at, low, low_at, values.mean(dim=2)


class LayerState:
    """The k highest maxima and k lowest minima of every channel of a layer over the images streamed so
    far, with each one's image (an index into the sorted image list), position and mean.

    Equal extremes are ranked by the mean over positions (higher first at the top, lower first at the
    bottom), then by the earlier image. After a ReLU the minimum is 0 on almost every image, so a
    bottom read there (no pre-ReLU twin, or pre_relu: off) is really ranked by the mean: the images
    on which the channel is weakest overall."""

    def __init__(self, channels: int, k: int, device: torch.device | str = "cpu"):
        shape = (channels, k)
        self.k = k
        self.tensors: dict[str, Tensor] = {}
        for end, empty in (("top", -math.inf), ("bottom", math.inf)):
            self.tensors[f"{end}_values"] = torch.full(shape, empty, device=device)
            self.tensors[f"{end}_images"] = torch.full(shape, -1, dtype=torch.long, device=device)
            self.tensors[f"{end}_positions"] = torch.zeros(shape, dtype=torch.long, device=device)
            self.tensors[f"{end}_means"] = torch.zeros(shape, device=device)
        self.next = 0  # the index in the image list of the first image not streamed yet
        self.seen = 0  # images read and merged
        self.skipped = 0  # unreadable image files
        self.skipped_files: list[str] = []  # the first few, relative to the images folder

    def to(self, device: torch.device | str) -> LayerState:
        self.tensors = {name: t.to(device) for name, t in self.tensors.items()}
        return self

    def update(
        self, high: Tensor, high_at: Tensor, low: Tensor, low_at: Tensor, mean: Tensor, images: Tensor,
        low_mean: Tensor | None = None,
    ) -> None:
        """Merge one batch: per image and channel (B, C), the extremes over positions, where they are,
        and the mean; `images` (B,): their indices in the image list, all past those merged before.
        `low_mean`: the mean that ranks equal minima, when the bottom is read from another layer
        than the top (the pre-ReLU twin); else `mean`."""
        self.seen += len(images)
        bottom_mean = mean if low_mean is None else low_mean
        for end, values, at, mean in (("top", high, high_at, mean), ("bottom", low, low_at, bottom_mean)):
            never = -math.inf if end == "top" else math.inf  # NaN would sort first; this never ranks
            values = torch.where(torch.isnan(values), never, values).T
            merged = {
                "values": torch.cat([self.tensors[f"{end}_values"], values], 1),
                "images": torch.cat([self.tensors[f"{end}_images"], images.view(1, -1).expand_as(values)], 1),
                "positions": torch.cat([self.tensors[f"{end}_positions"], at.T], 1),
                "means": torch.cat([self.tensors[f"{end}_means"], torch.where(torch.isnan(mean), never, mean).T], 1),
            }
            # Stable sorts rather than topk: ties are common (a ReLU channel is exactly 0 on many
            # images). Sorting by the mean, then stably by the extreme, ranks by (extreme, mean), and
            # among full equals keeps the earlier image (the kept ones come first), so that every
            # batching and a resumed run keep the same images.
            top = end == "top"
            by_mean = torch.sort(merged["means"], dim=1, descending=top, stable=True).indices
            by_value = torch.sort(merged["values"].gather(1, by_mean), dim=1, descending=top, stable=True).indices
            order = by_mean.gather(1, by_value)[:, : self.k]
            for name, tensor in merged.items():
                self.tensors[f"{end}_{name}"] = tensor.gather(1, order)

    def skip(self, name: str) -> None:
        self.skipped += 1
        if len(self.skipped_files) < LISTED_SKIPPED:
            self.skipped_files.append(name)

    def entries(self, channel: int, end: str) -> list[tuple[int, float, int, float]]:
        """(image, value, position, mean) of one channel's top or bottom, best first; empty slots left out."""
        names = ("values", "images", "positions", "means")
        values, images, positions, means = (self.tensors[f"{end}_{name}"][channel].tolist() for name in names)
        return [(i, v, p, m) for v, i, p, m in zip(values, images, positions, means) if i >= 0 and math.isfinite(v)]

    def save(self, path: Path, digest: str) -> None:
        data = {
            "version": EXAMPLES_VERSION,
            "hash": digest,
            "next": self.next,
            "seen": self.seen,
            "skipped": self.skipped,
            "skipped_files": list(self.skipped_files),
            **{name: t.cpu() for name, t in self.tensors.items()},
        }
        atomic_write(path, lambda tmp: torch.save(data, tmp))

    @classmethod
    def load(cls, path: Path, digest: str, channels: int, k: int) -> LayerState | None:
        """The state saved at `path` for exactly this hash, or None (none, another hash, unreadable)."""
        try:
            data = torch.load(io.BytesIO(read_back(path)), map_location="cpu", weights_only=True)
        except Exception:
            return None
        state = cls(channels, k)
        if not isinstance(data, dict) or data.get("hash") != digest or data.get("version") != EXAMPLES_VERSION:
            return None
        try:  # every tensor dense, on the CPU, of its shape; every count an int (checked_tensor)
            tensors = {name: checked_tensor(data.get(name), t.numel(), name, real=False) for name, t in state.tensors.items()}
        except ValueError:
            return None
        counts, names = [data.get(key) for key in ("next", "seen", "skipped")], data.get("skipped_files")
        if any(tensors[name].shape != t.shape or tensors[name].dtype != t.dtype for name, t in state.tensors.items()):
            return None
        if not (all(type(n) is int and n >= 0 for n in counts) and isinstance(names, list) and all(isinstance(n, str) for n in names)):
            return None
        state.tensors = tensors
        state.next, state.seen, state.skipped = counts
        state.skipped_files = names
        return state
