"""Dataset examples: the images of a folder that most excite, and most suppress, each channel.

One pass streams the images through the model, with the model's preprocessing, in batches on the
device; hooks on every requested layer capture their outputs and the forward pass stops at the
deepest. For every channel it keeps the k images with the highest maximum over positions (the top
examples) and the k with the lowest minimum over positions (the bottom, or negative, examples: the
images that most suppress the channel), each with the position of that extreme. The bottom is read
before the layer's ReLU, from its pre-ReLU twin (`pre_relu: auto`, where the layer has one): after
a ReLU nearly every image's minimum is 0, and what suppresses the channel most does not show. The
running state is checkpointed, so a stopped run continues where it stopped.

Each job's folder (the one `fv render` writes) gets `examples/`: per channel a strip of top crops
(`NNNN.png`) and one of bottom crops (`NNNN_neg.png`), cut from the original image files, and
`examples.json`, which records every image path, value, position and box.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from fvcli.version import __version__
from fvcli.models.capture import forward_to, layer_shapes
from fvcli.run.devices import pick_device
from fvcli.optvis.engine import input_normalization
from fvcli.errors import EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, FvError
from fvcli.optvis.images import Placement, list_images, load_image, open_upright, to_channels
from fvcli.specs.requests import JobRequest
from fvcli.models.layer_keys import LayerError, Layout, ResolvedLayer, channels_first, input_channels, probe_images
from fvcli.messages import plural, progress_bar
from fvcli.models.registry import LoadedModel, load_model, model_key
from fvcli.models.normalization import Normalization
from fvcli.files import atomic_write, check_output_folders, parse_json, remove_empty_folders
from fvcli.run.output import BACKGROUND, GAP, SCHEMA_VERSION, save_png, write_json
from fvcli.run.resolve import Resolver
from fvcli.specs.settings import EXAMPLES_CPU_BATCH, EXAMPLES_CUDA_BATCH, ExamplesSettings, RunSettings
from fvcli.run.signals import StopOnSignals

EXAMPLES_VERSION = 3  # raise when the same images, model and settings give different examples
DEFAULT_INPUT_SIZE = 224  # px, for models that declare no input size of their own
FIELD_MASS = 0.9  # the share of a position's input gradient its crop holds (see field_sides)
CHECKPOINT_SECONDS = 30.0
LISTED_SKIPPED = 10  # unreadable files named in examples.json
# Why the bottom examples are read from a layer's pre-ReLU twin, for examples.json.
PRE_RELU_WHY = (
    "the images that suppress a channel most are ranked before its ReLU: after it, nearly every image's "
    "minimum is 0 (pre_relu: off ranks the layer as named)"
)
STRIPS_AT_ONCE = 64  # channels whose strips are assembled together, each image opened once for them
STATE_FILE = ".state.pt"
ENDS = ("top", "bottom")


# ---- images ----


def _try_load(path: Path, size: int) -> Tensor | None:
    try:
        return load_image(path, size)
    except Exception:  # any decoder's failure: the image is skipped and counted, never fatal
        return None


# ---- layers: positions, extremes and boxes ----


def grid_of(info: ResolvedLayer) -> tuple[int, int] | None:
    """(rows, columns) of a layer's positions when they are places in the image, else None (flat
    outputs, and tokens that form no square grid)."""
    shape, layout = info.shape, info.layout
    if layout.kind == "nchw":
        return shape[2], shape[3]
    if layout.kind == "nhwc":
        return shape[1], shape[2]
    if layout.kind == "tokens":
        patches = shape[1] - layout.prefix_tokens
        side = math.isqrt(patches)
        return (side, side) if side * side == patches else None
    return None


def spatial_extremes(output: Tensor, layout: Layout) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per image and channel (N, C): the maximum over positions and its position, the minimum and
    its position, and the mean. Positions are row-major indices into the grid (patch tokens only; 0
    when flat)."""
    values = channels_first(output, layout).float()
    values = values.reshape(values.shape[0], values.shape[1], -1)
    high, high_at = values.max(dim=2)
    low, low_at = values.min(dim=2)
    return high, high_at, low, low_at, values.mean(dim=2)


def position_of(index: int, info: ResolvedLayer) -> tuple[int, int]:
    grid = grid_of(info)
    return divmod(index, grid[1]) if grid else (0, index)


def input_box(index: int, info: ResolvedLayer, size: int, side: int) -> tuple[float, float, float, float]:
    """The square of `side` input pixels centred on a position, moved inside the input where it would
    stick out; the whole input for layers without a grid."""
    grid = grid_of(info)
    if grid is None:
        return (0.0, 0.0, float(size), float(size))
    rows, columns = grid
    y, x = divmod(index, columns)
    cy, cx = (y + 0.5) * size / rows, (x + 0.5) * size / columns
    left = min(max(cx - side / 2, 0.0), size - side)
    top = min(max(cy - side / 2, 0.0), size - side)
    return (left, top, left + side, top + side)


def field_sides(module: torch.nn.Module, infos: list[ResolvedLayer], size: int, prepare: Callable[[Tensor], Tensor], device: torch.device) -> dict[str, int]:
    """Per layer key: the side, in input pixels, of the square a crop shows around a position.

    It is measured on the model itself: the gradient of the centre position (all channels summed) with
    respect to 2 random images, and the smallest square centred there that holds FIELD_MASS of the
    gradient's magnitude. That is the effective receptive field; the theoretical one of a deep layer
    covers most of the image, though its edges hardly matter. At least a grid cell, at most the input.
    """
    sides = {info.key: size for info in infos}
    gridded = [info for info in infos if grid_of(info)]
    if not gridded:
        return sides
    pixels = probe_images(module, 2, size, device, seed=0).requires_grad_()
    coords = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    with torch.enable_grad():
        acts = forward_to(module, prepare(pixels), [info.key for info in gridded])
        for info in gridded:
            rows, columns = grid_of(info)
            y, x = rows // 2, columns // 2
            out = channels_first(acts[info.key], info.layout)
            out = out.reshape(out.shape[0], out.shape[1], rows, columns)
            (grad,) = torch.autograd.grad(out[:, :, y, x].sum(), pixels, retain_graph=True)
            mass = grad.abs().sum(dim=(0, 1)).flatten()
            cy, cx = (y + 0.5) * size / rows, (x + 0.5) * size / columns
            distance = torch.maximum((coords - cy).abs().view(-1, 1), (coords - cx).abs().view(1, -1)).flatten()
            order = distance.argsort()
            cumulative = mass[order].cumsum(0)
            total = cumulative[-1].item()
            side = size
            if math.isfinite(total) and total > 0:
                at = min(int(torch.searchsorted(cumulative, FIELD_MASS * total)), len(order) - 1)
                side = math.ceil(2 * distance[order[at]].item())
            cell = math.ceil(size / min(rows, columns))
            sides[info.key] = int(min(size, max(side, cell)))
    return sides


# ---- the running state of one layer ----


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
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            return None
        state = cls(channels, k)
        if not isinstance(data, dict) or data.get("hash") != digest or data.get("version") != EXAMPLES_VERSION:
            return None
        if any(not isinstance(data.get(name), Tensor) or data[name].shape != t.shape for name, t in state.tensors.items()):
            return None
        state.tensors = {name: data[name] for name in state.tensors}
        state.next, state.seen, state.skipped = int(data["next"]), int(data["seen"]), int(data["skipped"])
        state.skipped_files = [str(name) for name in data["skipped_files"]]
        return state


# ---- a run ----


@dataclass
class LayerJob:
    """The examples of one job folder: a layer of a model and the channels asked for."""

    request: JobRequest
    info: ResolvedLayer  # the layer as named: the top examples
    bottom: ResolvedLayer  # the bottom examples: its pre-ReLU twin where it has one (pre_relu: auto), else itself
    channels: tuple[int, ...]
    digest: str  # what the collected state depends on: model, weights, layers, k, preprocessing, images
    state: LayerState | None = None

    @property
    def folder(self) -> Path:
        return self.request.folder / "examples"


@dataclass
class ModelGroup:
    """Jobs that one pass over the images serves: one model with one preprocessing."""

    model: LoadedModel
    size: int  # input side in pixels
    normalization: Normalization | None
    jobs: list[LayerJob]

    def prepare(self, pixels: Tensor) -> Tensor:
        """Images in [0, 1] as the model's input: normalized as the render engine does, channels_last.
        A grayscale model sees the photos' luma (ITU-R BT.601 weights, as PIL's "L" mode)."""
        if pixels.shape[1] == 3:
            pixels = to_channels(pixels, input_channels(self.model.module))
        if self.normalization is not None:
            mean, std = (torch.tensor(v, device=pixels.device).view(1, -1, 1, 1) for v in self.normalization)
            pixels = (pixels - mean) / std
        return pixels.contiguous(memory_format=torch.channels_last)


def _rounded(value: float) -> float:
    return float(f"{value:.5g}")


class Collection:
    """One invocation of `fv examples` (or a spec's `examples:` section): construct (validates
    everything, writes nothing), then `execute()`."""

    def __init__(
        self,
        requests: list[JobRequest],
        settings: ExamplesSettings,
        run: RunSettings,
        say: Callable[[str], None],
        modules: dict[str, torch.nn.Module] | None = None,
    ):
        """`modules`: model objects in memory (the Python API) by the model names the requests use."""
        assert settings.images is not None
        self.settings, self.run, self.say, self.modules = settings, run, say, modules or {}
        self.folder = Path(settings.images)
        self.files = list_images(self.folder)
        if not self.files:
            raise FvError(f"{self.folder}: no images in this folder (JPEG or PNG files, searched recursively)")
        listing = [(p.relative_to(self.folder).as_posix(), p.stat().st_size) for p in self.files]
        self.listing_digest = hashlib.sha256(json.dumps(listing).encode()).hexdigest()
        self.device = pick_device(run.device)
        self.models: dict[tuple, LoadedModel] = {}
        self.groups: dict[tuple, ModelGroup] = {}
        self.jobs = [self._resolve(request) for request in requests]
        check_output_folders([(job.folder, job.request.origin) for job in self.jobs], writable=not run.dry_run)

    # ---- validation ----

    def _resolve(self, request: JobRequest) -> LayerJob:
        settings = request.settings
        key = model_key(settings)
        if key not in self.models:
            self.models[key] = load_model(
                settings.model, settings.weights, settings.seed, quiet=self.run.quiet, module=self.modules.get(settings.model)
            )
        model = self.models[key]
        where = f"{request.origin}: " if request.origin else ""
        if input_channels(model.module) not in (1, 3):
            raise FvError(
                f"{where}dataset examples need a model that takes RGB or grayscale images; "
                f"{settings.model} takes {input_channels(model.module)} channels"
            )
        normalization = input_normalization(model, settings.normalize)
        group = self.groups.setdefault(
            (key, repr(normalization)), ModelGroup(model, model.native_size or DEFAULT_INPUT_SIZE, normalization, [])
        )
        resolver = Resolver(model, settings, lambda layer: (self._probe(group, layer), None))
        try:
            channels = tuple(unit.key for unit in resolver.units(request.target))
            info = resolver.layer(request.target.channels_of_layer.layer)
            twin = resolver.twin(info.name) if settings.pre_relu == "auto" else None
            bottom = resolver.layer(twin) if twin is not None else info
        except FvError as error:
            raise FvError(f"{where}{error}") from None
        job = LayerJob(request, info, bottom, channels, self._digest(group, info, bottom))
        group.jobs.append(job)
        return job

    def _probe(self, group: ModelGroup, key: str) -> tuple[int, ...]:
        try:
            return layer_shapes(group.model.module, [key], group.size, torch.device("cpu"))[key]
        except LayerError:  # a tuple or dict output, or a missing element: the resolver words it
            raise
        except ValueError as error:
            raise FvError(str(error)) from None
        except Exception as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            raise FvError(f"{group.model.name} cannot compute layer {key} on a {group.size} px image ({first})") from None

    def _digest(self, group: ModelGroup, info: ResolvedLayer, bottom: ResolvedLayer) -> str:
        identity = {
            "examples_version": EXAMPLES_VERSION,
            "model": group.model.name,
            "weights": group.model.weights,
            "weights_sha256": group.model.weights_sha256,
            "layer": info.key,
            "bottom_layer": bottom.key,
            "k": self.settings.k,
            "input_size": group.size,
            "normalization": group.normalization,
            "images": str(self.folder),
            "listing": self.listing_digest,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def plan(self) -> list[str]:
        """One line a job: where its examples go and whether they are collected already."""
        return [
            f"{job.folder}: {job.request.settings.model} {job.request.label}: top and bottom {self.settings.k} "
            f"of {plural(len(self.files), 'image')} in {self.folder} for {plural(len(job.channels), 'channel')}"
            + (", already collected" if self._up_to_date(job) and not self.run.force else "")
            for job in self.jobs
        ]

    def _up_to_date(self, job: LayerJob) -> bool:
        try:
            record = parse_json((job.folder / "examples.json").read_text(encoding="utf-8"))
            return (
                record["hash"] == job.digest
                and record["crop"] == self.settings.crop
                and [unit["channel"] for unit in record["units"]] == list(job.channels)
            )
        except (OSError, ValueError, KeyError, TypeError):
            return False

    # ---- collecting ----

    def execute(self) -> int:
        """Collect every job's examples; the exit status (0, or 130 / 143 when a signal stopped it)."""
        with StopOnSignals() as stop:
            for group in self.groups.values():
                if stop.requested() or not self._collect(group, stop):
                    return EXIT_SIGTERM if stop.signal == signal.SIGTERM else EXIT_SIGINT
        return EXIT_OK

    def _collect(self, group: ModelGroup, stop: StopOnSignals) -> bool:
        """Stream the images for the group's jobs that need it, then write their files; False when a
        signal stopped it (the states are saved)."""
        todo = []
        for job in group.jobs:
            if not self.run.force and self._up_to_date(job):
                self.say(f"fv: {job.folder}: already collected with these settings (--force collects again)")
                continue
            channels = job.info.layout.channels
            state = None if self.run.force else LayerState.load(job.folder / STATE_FILE, job.digest, channels, self.settings.k)
            if state is not None and 0 < state.next < len(self.files):
                self.say(f"fv: {job.folder}: continuing after image {state.next} of {len(self.files)} (--force starts over)")
            job.state = state or LayerState(channels, self.settings.k)
            todo.append(job)
        if not todo:
            return True
        group.model.module.to(self.device, memory_format=torch.channels_last)
        # The deepest folder of each that exists before anything is written: what a job that finds no
        # readable image made is removed up to it (_write).
        self._existed = {job.folder: next(p for p in (job.folder, *job.folder.parents) if p.exists()) for job in todo}
        streaming = [job for job in todo if job.state.next < len(self.files)]
        if streaming and not self._stream(group, streaming, stop):
            return False
        infos = list({job.info.key: job.info for job in todo}.values())
        sides = field_sides(group.model.module, infos, group.size, group.prepare, self.device)
        for job in todo:
            self._write(group, job, sides[job.info.key])
        return True

    def _batch_size(self) -> int:
        if self.run.batch_size:
            return self.run.batch_size
        return EXAMPLES_CUDA_BATCH if self.device.type == "cuda" else EXAMPLES_CPU_BATCH

    def _stream(self, group: ModelGroup, jobs: list[LayerJob], stop: StopOnSignals) -> bool:
        count = len(self.files)
        position = min(job.state.next for job in jobs)
        for job in jobs:
            job.state.to(self.device)
        infos = {layer.key: layer for job in jobs for layer in (job.info, job.bottom)}
        self.batch = self._batch_size()
        unreadable: list[int] = []
        last_save = time.monotonic()
        workers = min(8, os.cpu_count() or 1)  # decoding releases the GIL: threads read in parallel
        with self._progress(count - position, group.model.name) as bar, ThreadPoolExecutor(workers) as pool:
            while position < count:
                images, indices, failed, end = self._read(pool, position, group.size)
                unreadable.extend(failed)
                for index in failed:
                    for job in jobs:
                        if job.state.next <= index:
                            job.state.skip(self.files[index].relative_to(self.folder).as_posix())
                active = [job for job in jobs if job.state.next < end]
                if images and active:
                    pixels = torch.stack(images).to(self.device, non_blocking=True)
                    keys = list(dict.fromkeys(layer.key for job in active for layer in (job.info, job.bottom)))
                    extremes = self._extremes(group, group.prepare(pixels), [infos[k] for k in keys])
                    where = torch.tensor(indices, device=self.device)
                    for job in active:
                        keep = where >= job.state.next  # a job resumed further on skips what it has
                        high, high_at, _, _, mean = (t[keep] for t in extremes[job.info.key])
                        _, _, low, low_at, low_mean = (t[keep] for t in extremes[job.bottom.key])
                        job.state.update(high, high_at, low, low_at, mean, where[keep], low_mean=low_mean)
                for job in jobs:
                    job.state.next = max(job.state.next, end)
                bar.update(end - position)
                position = end
                if stop.requested():
                    self._save(jobs)
                    self.say(
                        f"fv: stopped by {signal.Signals(stop.signal).name} after {position} of {count} images; the "
                        f"state is kept in examples/{STATE_FILE}, and running the same command again continues from it"
                    )
                    return False
                if time.monotonic() - last_save > CHECKPOINT_SECONDS:
                    self._save(jobs)
                    last_save = time.monotonic()
        self._save(jobs)
        if unreadable:
            names = ", ".join(self.files[i].relative_to(self.folder).as_posix() for i in unreadable[:3])
            files = "file" if len(unreadable) == 1 else "files"
            self.say(f"fv: skipped {len(unreadable)} unreadable image {files} in {self.folder} (first: {names})")
        return True

    def _read(self, pool: ThreadPoolExecutor, start: int, size: int) -> tuple[list[Tensor], list[int], list[int], int]:
        """Images from file `start` on, until a batch is read or the files end: (images, their file
        indices, indices of unreadable files, the index after the last file read)."""
        images, indices, failed = [], [], []
        position = start
        while len(images) < self.batch and position < len(self.files):
            chunk = range(position, min(len(self.files), position + self.batch - len(images)))
            for index, image in zip(chunk, pool.map(lambda i: _try_load(self.files[i], size), chunk)):
                if image is None:
                    failed.append(index)
                else:
                    images.append(image)
                    indices.append(index)
            position = chunk.stop
        return images, indices, failed, position

    def _extremes(self, group: ModelGroup, x: Tensor, infos: list[ResolvedLayer]) -> dict[str, tuple[Tensor, ...]]:
        """One forward pass to the deepest of the layers; each layer's extremes over positions."""
        try:
            with torch.no_grad():
                acts = forward_to(group.model.module, x, [info.key for info in infos])
                return {info.key: spatial_extremes(acts[info.key], info.layout) for info in infos}
        except torch.OutOfMemoryError:
            if len(x) == 1:
                raise
            half = len(x) // 2
            self.batch = min(self.batch, half)
            self.say(f"fv: out of device memory with a batch of {len(x)}; continuing with {half}")
            torch.cuda.empty_cache()
            parts = [self._extremes(group, x[:half], infos), self._extremes(group, x[half:], infos)]
            return {key: tuple(torch.cat(pair) for pair in zip(parts[0][key], parts[1][key])) for key in parts[0]}

    def _save(self, jobs: list[LayerJob]) -> None:
        for job in jobs:
            job.state.save(job.folder / STATE_FILE, job.digest)

    def _progress(self, total: int, name: str) -> tqdm:
        return progress_bar(self.run.progress, self.run.quiet, total=total, unit="img", desc=f"{name} examples"[:40])

    # ---- writing ----

    def _write(self, group: ModelGroup, job: LayerJob, side: int) -> None:
        """The strips of every channel asked for, then examples.json (last: it marks the job done)."""
        state, info, crop = job.state.to("cpu"), job.info, self.settings.crop
        if state.seen == 0:  # nothing to resume from: the state files and the folders made for them go
            for other in group.jobs:
                if other.folder in self._existed and other.state is not None and other.state.seen == 0:
                    (other.folder / STATE_FILE).unlink(missing_ok=True)
                    remove_empty_folders(other.folder, self._existed[other.folder])
            raise FvError(f"none of the {len(self.files)} image files in {self.folder} could be read")
        width = max(4, len(str(info.layout.channels - 1)))  # as the render's file names
        units = []
        for start in range(0, len(job.channels), STRIPS_AT_ONCE):
            chunk = job.channels[start : start + STRIPS_AT_ONCE]
            records: dict[tuple[int, str], list[dict]] = {}
            uses: dict[int, list[tuple[tuple[int, str], int, int]]] = {}
            for channel in chunk:
                for end in ENDS:
                    entries = state.entries(channel, end)
                    records[(channel, end)] = [
                        {
                            "path": self.files[image].relative_to(self.folder).as_posix(),
                            "value": _rounded(value),
                            "mean": _rounded(mean),
                            "position": list(position_of(index, info)),
                            "box": None,
                        }
                        for image, value, index, mean in entries
                    ]
                    for slot, (image, _, index, _) in enumerate(entries):
                        uses.setdefault(image, []).append(((channel, end), slot, index))
            strips = {
                key: Image.new("RGB", (max(1, len(r)) * (crop + GAP) - GAP, crop), BACKGROUND) for key, r in records.items()
            }
            for image, wanted in sorted(uses.items()):
                try:
                    original = open_upright(self.files[image])
                except Exception:  # gone or broken since it was read: a dark cell, and no box
                    continue
                placement = Placement(*original.size, group.size)
                for key, slot, index in wanted:
                    box = placement.to_original(input_box(index, info, group.size, side))
                    records[key][slot]["box"] = box
                    piece = original.crop(tuple(box)).resize((crop, crop), Image.Resampling.LANCZOS)
                    strips[key].paste(piece, (slot * (crop + GAP), 0))
            for channel in chunk:
                label = f"{channel:0{width}d}"
                save_png(strips[(channel, "top")], job.folder / f"{label}.png")
                save_png(strips[(channel, "bottom")], job.folder / f"{label}_neg.png")
                units.append({
                    "channel": channel,
                    "label": label,
                    "strip": f"{label}.png",
                    "negative_strip": f"{label}_neg.png",
                    "top": records[(channel, "top")],
                    "bottom": records[(channel, "bottom")],
                })
        model, grid = group.model, grid_of(info)
        record = {
            "schema_version": SCHEMA_VERSION,
            "fv_version": __version__,
            "hash": job.digest,
            "model": {"name": model.name, "weights": model.weights, "weights_sha256": model.weights_sha256},
            "layer": info.name,
            "layer_module": info.key,
            "bottom_layer": job.bottom.name,
            "bottom_layer_module": job.bottom.key,
            **({"pre_relu": {"read_as": {info.name: job.bottom.name}, "why": PRE_RELU_WHY}} if job.bottom is not info else {}),
            "input_size": group.size,
            "normalization": None if group.normalization is None else {"mean": group.normalization[0], "std": group.normalization[1]},
            "grid": list(grid) if grid else None,
            "box_side": side,
            "ranking": (
                f"top: the channel's maximum over positions in {info.name}, highest first; bottom: its minimum over "
                f"positions in {job.bottom.name}, lowest first; equal extremes by the mean over positions (higher first "
                "at the top, lower at the bottom)"
            ),
            "images": {
                "folder": str(self.folder),
                "seen": state.seen,
                "skipped": state.skipped,
                "skipped_files": state.skipped_files,
            },
            "k": self.settings.k,
            "crop": crop,
            "units": units,
        }
        write_json(record, job.folder / "examples.json")
        self.say(
            f"fv: {job.folder}: top and bottom {self.settings.k} of {plural(state.seen, 'image')} for "
            f"{plural(len(job.channels), 'channel')} of {model.name} {info.name}"
            + (f" (the bottom before its ReLU, from {job.bottom.name})" if job.bottom is not info else "")
            + " -> examples.json"
        )
