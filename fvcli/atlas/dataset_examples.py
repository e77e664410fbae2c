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
`examples.json`, which records every image path, value, position and box (example_strips). The
running state is example_state's; where positions lie in the input, receptive_fields'.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor
from tqdm import tqdm

from fvcli.models.capture import forward_to, layer_shapes
from fvcli.run.devices import pick_device
from fvcli.optvis.engine import input_normalization
from fvcli.errors import EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, FvError
from fvcli.optvis.images import list_images, load_image, to_channels
from fvcli.specs.requests import JobRequest
from fvcli.models.layer_keys import LayerError, ResolvedLayer, input_channels
from fvcli.messages import plural, progress_bar
from fvcli.models.registry import LoadedModel, load_model, model_key
from fvcli.models.normalization import Normalization
from fvcli.files import check_output_folders, parse_json, read_back, remove_empty_folders
from fvcli.owned import remove_own
from fvcli.atlas.example_state import EXAMPLES_VERSION, LayerState, spatial_extremes
from fvcli.atlas.example_strips import write_examples
from fvcli.atlas.receptive_fields import field_sides
from fvcli.run.resolve import Resolver
from fvcli.run.shapes import cannot_compute
from fvcli.specs.settings import EXAMPLES_CPU_BATCH, EXAMPLES_CUDA_BATCH, ExamplesSettings, RunSettings
from fvcli.run.signals import StopOnSignals

DEFAULT_INPUT_SIZE = 224  # px, for models that declare no input size of their own
CHECKPOINT_SECONDS = 30.0
STATE_FILE = ".state.pt"


# ---- images ----


def try_load(path: Path, size: int) -> Tensor | None:
    try:
        return load_image(path, size)
    except Exception:  # any decoder's failure: the image is skipped and counted, never fatal
        return None


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

    def layer_shape(self, key: str) -> tuple[int, ...]:
        """Layer `key`'s output shape for one image of `size` px (a CPU probe); FvError in one line
        when the model cannot compute it, LayerError (which the resolver words) for a tuple or dict
        output or a missing element."""
        try:
            return layer_shapes(self.model.module, [key], self.size, torch.device("cpu"))[key]
        except LayerError:
            raise
        except ValueError as error:
            raise FvError(str(error)) from None
        except Exception as error:
            raise cannot_compute(self.model.name, key, self.size, error) from None


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
        resolver = Resolver(model, settings, lambda layer: (group.layer_shape(layer), None))
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
            record = parse_json(read_back(job.folder / "examples.json"))
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
        if unreadable and any(job.state.seen for job in jobs):  # none readable: the one error line says it
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
            for index, image in zip(chunk, pool.map(lambda i: try_load(self.files[i], size), chunk)):
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

    def _write(self, group: ModelGroup, job: LayerJob, side: int) -> None:
        """The strips of every channel asked for, then examples.json (last: it marks the job done)."""
        state = job.state.to("cpu")
        if state.seen == 0:  # nothing to resume from: the state files and the folders made for them go
            for other in group.jobs:
                if other.folder in self._existed and other.state is not None and other.state.seen == 0:
                    remove_own(other.folder / STATE_FILE, other.folder, lambda path, data: data.startswith(b"PK"))  # torch.save's zip
                    remove_empty_folders(other.folder, self._existed[other.folder])
            raise FvError(f"none of the {len(self.files)} image files in {self.folder} could be read")
        write_examples(job, group, self.folder, self.files, self.settings, side, self.say)
