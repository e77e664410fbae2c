"""Collecting an activation atlas's samples: the layer's activation vectors at random positions
of every image, read as fv examples reads images (the model's preprocessing, in batches).

Each image's positions come from the seed and the image's name alone, so a sample is the same
whatever its batch. A class atlas also takes each sample's attribution to a class output
(activation x gradient, summed over channels, as the article does) and keeps the samples of
highest attribution.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fvcli.atlas.dataset_examples import ModelGroup, try_load
from fvcli.errors import FvError
from fvcli.messages import progress_bar
from fvcli.models.capture import forward_to
from fvcli.models.layer_keys import ResolvedLayer, channels_first
from fvcli.models.registry import LoadedModel
from fvcli.run.jobs import stable_seed
from fvcli.specs.settings import EXAMPLES_CPU_BATCH, EXAMPLES_CUDA_BATCH, RunSettings


@dataclass
class Sampler:
    """Where the samples come from (the images and the layer) and how many an image."""

    model: LoadedModel
    group: ModelGroup  # the model with its preprocessing
    info: ResolvedLayer  # the layer sampled
    positions: tuple[int, int]  # the layer's grid of positions (1, 1 for a flat layer)
    size: int  # px: the model's input
    folder: Path  # the images' folder
    files: list[Path]  # the images, sorted
    samples: int  # positions an image
    seed: int
    run: RunSettings
    device: torch.device
    job_folder: Path  # for messages
    say: Callable[[str], None]
    class_layer: ResolvedLayer | None = None  # a class atlas: the output attributed to
    class_index: int | None = None
    class_target: str | None = None
    class_share: float = 1.0

    def batch_size(self) -> int:
        """Not --batch-size (the icons'): in float32 a layer's values differ by ~1e-6 from one batch
        size to another, and UMAP spreads that into another layout under the same digest."""
        return EXAMPLES_CUDA_BATCH if self.device.type == "cuda" else EXAMPLES_CPU_BATCH

    def _positions(self, index: int) -> np.ndarray:
        """The positions sampled in image `index`: random, distinct, from the seed and the image's
        name alone (the same whatever the batch)."""
        rows, columns = self.positions
        name = self.files[index].relative_to(self.folder).as_posix()
        rng = np.random.default_rng(stable_seed(f"fv-atlas/{self.seed}/{name}"))
        return rng.choice(rows * columns, size=self.samples, replace=False)

    def collect(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """Stream the images through the model to the layer (and on to the class output for a class
        atlas): (activations (N, C), image index (N,), position [y, x] (N, 2), attribution or None).
        Samples whose activation vector is all zeros or not finite are left out."""
        module = self.model.module.to(self.device, memory_format=torch.channels_last)
        batch = self.batch_size()
        acts, images, positions, attributions = [], [], [], []
        skipped = 0
        layers = [self.info.key] + ([self.class_layer.key] if self.class_layer is not None else [])
        bar = progress_bar(self.run.progress, self.run.quiet, total=len(self.files), unit="img", desc=f"{self.info.name} atlas: collect"[:40])
        with bar, ThreadPoolExecutor(4) as pool:
            for start in range(0, len(self.files), batch):
                chunk = list(range(start, min(len(self.files), start + batch)))
                loaded = list(pool.map(lambda i: try_load(self.files[i], self.size), chunk))
                kept = [(i, image) for i, image in zip(chunk, loaded) if image is not None]
                skipped += len(chunk) - len(kept)
                bar.update(len(chunk))
                if not kept:
                    continue
                x = self.group.prepare(torch.stack([image for _, image in kept]).to(self.device))
                values, attribution = self._forward(module, x, layers)
                flat = values.reshape(values.shape[0], values.shape[1], -1)  # (B, C, P)
                for row, (index, _) in enumerate(kept):
                    chosen = self._positions(index)
                    acts.append(flat[row][:, chosen].T.numpy())
                    images.append(np.full(len(chosen), index))
                    positions.append(np.stack(np.divmod(chosen, self.positions[1]), axis=1))
                    if attribution is not None:
                        attributions.append(attribution[row].reshape(-1)[chosen].numpy())
        if skipped:
            self.say(f"fv: skipped {skipped} unreadable image file{'s' if skipped != 1 else ''} in {self.folder}")
        acts_all = np.concatenate(acts).astype(np.float32)
        image_all, position_all = np.concatenate(images), np.concatenate(positions)
        attribution_all = np.concatenate(attributions).astype(np.float32) if attributions else None
        # All zeros: a cosine cannot place them. Not finite (NaN, or float32 overflowed to infinity):
        # UMAP refuses the whole layout ("Input contains infinity").
        finite = np.isfinite(acts_all).all(axis=1) & (attribution_all is None or np.isfinite(attribution_all))
        alive = finite & (np.abs(np.where(finite[:, None], acts_all, 0)).max(axis=1) > 0)
        if (~finite).any():
            self.say(f"fv: {self.job_folder}: left out {int((~finite).sum())} samples whose activations are not finite (NaN or infinity)")
        keep = lambda a: None if a is None else a[alive]  # noqa: E731
        return acts_all[alive], image_all[alive], position_all[alive], keep(attribution_all)

    def _forward(self, module: torch.nn.Module, x: torch.Tensor, layers: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The layer's activations (B, C, positions...) on the CPU and, for a class atlas, the
        attribution of the class output to each position: activation x gradient, summed over channels."""
        if self.class_layer is None:
            with torch.no_grad():
                out = forward_to(module, x, layers)[self.info.key]
            return channels_first(out, self.info.layout).float().cpu(), None
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            out = forward_to(module, x, layers)
            a = out[self.info.key]
            c = channels_first(out[self.class_layer.key], self.class_layer.layout).float()
            score = c.reshape(c.shape[0], c.shape[1], -1)[:, self.class_index].mean(dim=1)
            (grad,) = torch.autograd.grad(score.sum(), a, allow_unused=True)
        if grad is None:  # the class output is computed before the layer, or beside it
            raise FvError(
                f"class_target {self.class_target}: not computed from layer {self.info.name}, so nothing there is "
                "attributed to it; name an output after the layer, such as the model's logit"
            )
        a, grad = channels_first(a.detach(), self.info.layout).float(), channels_first(grad, self.info.layout).float()
        return a.cpu(), (a * grad).sum(dim=1).cpu()

    def check_class_output(self) -> None:
        """FvError unless the class output is computed from the layer (one random image through)."""
        from fvcli.models.layer_keys import input_channels

        module = self.model.module.to(self.device)
        generator = torch.Generator().manual_seed(0)
        x = torch.rand(1, input_channels(module), self.size, self.size, generator=generator)
        self._forward(module, self.group.prepare(x.to(self.device)), [self.info.key, self.class_layer.key])

    def class_filter(self, acts, image, position, attribution):
        """A class atlas keeps the share of samples of highest attribution (and above 0)."""
        count = max(1, math.floor(len(acts) * self.class_share))
        order = np.argsort(-attribution, kind="stable")[:count]
        order = np.sort(order[attribution[order] > 0])
        self.say(
            f"fv: {self.job_folder}: class atlas of {self.class_target}: keeping {len(order)} of "
            f"{len(acts)} samples, those of highest attribution"
        )
        return acts[order], image[order], position[order], attribution[order]
