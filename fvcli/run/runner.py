"""A run: validate every job, render its units in batches, write each job's files as it completes.

Everything that can be wrong with the input (spec, model, weights, layer, channels, device, output
folder) is checked before the first image is optimized, so bad input never leaves partial output.
A batch that fails marks its units failed and the run goes on; the report sets the exit status.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.std import tqdm  # for its write; messages.progress_bar picks a notebook's bar where one shows

from fvcli.run import tuning
from fvcli.models.capture import layer_shapes
from fvcli.models.compiled import compile_forward
from fvcli.optvis.precision import use_bf16
from fvcli.run.devices import device_name, pick_device
from fvcli.optvis.engine import BatchResult, Groups, Stopped, activations, dtype_name, input_normalization, render_batch
from fvcli.errors import EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, EXIT_SOME_FAILED, EXIT_WRITE_FAILED, FvError, WriteError, raised
from fvcli.optvis.objectives import layers_of
from fvcli.optvis.redirect import REDIRECT_STEPS
from fvcli.models.fixed_size import fixed_size
from fvcli.models.fold import fold_batchnorms
from fvcli.run.jobs import Job, Unit, plan_batches
from fvcli.specs.requests import JobRequest
from fvcli.models.layer_keys import LayerError, input_channels, probe_images
from fvcli.run.resolve import Resolver, unit_name, unit_seed
from fvcli.models.registry import LoadedModel, load_model, model_key
from fvcli.run.merge import remove_manifests, write_manifest
from fvcli.messages import plural, progress_bar
from fvcli.optvis.images import Photo, load_photo
from fvcli.files import check_output_folders, remove_empty_folders
from fvcli.run.output import (
    read_record, remove_unlisted, removed_line, save_png, to_pil, with_opacity, write_grid, write_json,
)
from fvcli.specs.settings import RenderSettings, RunSettings
from fvcli.run.sidecar import UnitRecord, job_sidecar, source_files, unit_record
from fvcli.run.unit_files import UnitFiles
from fvcli.optvis.spectrum import check_fits, read_spectrum
from fvcli.run.signals import StopOnSignals
from fvcli.specs.targets import describe_channels
from fvcli.optvis.transforms import Pipeline
from fvcli.run.writer import Writer

RENDER_VERSION = 2  # raise when fv renders the same settings into different images
CPU_BATCH = 16  # on a CPU, larger batches gain little and make progress coarser
CUDA_MEMORY_SHARE = 0.7  # of free memory, for the automatic batch size
# --compile auto compiles a batch shape when the run takes at least this many steps of it past the
# ReLU redirect: on an H100, compiling GoogLeNet to mixed4a for 512 images at 140 px took 32 s and
# cut a step from 26.3 to 14.7 ms (benchmarks/BENCHMARKS.md), so it repays itself after ~2,760 steps.
COMPILE_BREAK_EVEN_STEPS = 2760
DTYPE_PROBE_UNITS = 2  # units in the step --dtype auto times both ways


# Settings added after units were first rendered, at their defaults: left out of the hash, so that
# units rendered before they existed keep their hashes.
_LATER_SETTINGS = {
    "save_steps": (), "spectrum": None, "alpha_map": False, "cppn_upscale": 1, "alpha": False, "init": None,
}


def _hashed_settings(settings: RenderSettings, init_sha256: str | None = None, spectrum_sha256: str | None = None) -> dict:
    """The settings a unit's hash covers: all of them but pre_relu, later ones only when set, and
    the --init photo and --spectrum file by their contents (sha256), not where they lie."""
    values = dataclasses.asdict(settings)
    for key, default in _LATER_SETTINGS.items():
        if values[key] == default:
            del values[key]
    if not settings.alpha:
        del values["alpha_weight"]
    if settings.init:
        values["init"] = init_sha256
    else:
        del values["init_weight"]
    if "spectrum" in values:
        values["spectrum"] = spectrum_sha256
    # What pre_relu changes is in the unit's objectives and layers, which the hash covers: units it
    # does not touch (every positive one) keep the hashes they had before it existed.
    del values["pre_relu"]
    return values


@dataclass
class JobReport:
    job: Job
    model: LoadedModel
    records: list[UnitRecord]  # in the order of job.units
    grid: Path | None = None  # set once its writing is queued
    batch_sizes: set[int] = field(default_factory=set)
    rendered: int = 0  # units rendered by this run (the others were kept from an earlier one)

    @property
    def done(self) -> bool:
        return all(r.status != "pending" for r in self.records)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.records)


@dataclass
class Report:
    jobs: list[JobReport]
    stopped_by: int | None = None  # the signal that stopped the run
    write_error: WriteError | None = None  # the write that stopped the run

    @property
    def exit_code(self) -> int:
        """3 when a write failed; 130 or 143 when a signal stopped the run; else 1 when a unit
        failed; else 0 (dead and flat units are flagged, not failed)."""
        if self.write_error is not None:
            return EXIT_WRITE_FAILED
        if self.stopped_by is not None:
            return EXIT_SIGTERM if self.stopped_by == signal.SIGTERM else EXIT_SIGINT
        return EXIT_SOME_FAILED if any(j.count("failed") for j in self.jobs) else EXIT_OK


def _maximizes(objective) -> bool:
    """Whether an objective only adds units up: then ending at exactly 0 means the units are dead.
    (A negative image that reaches 0 has suppressed its unit completely, which is its aim; an
    inversion at 0 has matched its photo.)"""
    return all(weight > 0 and term.dead_at_zero for weight, term in objective.terms())


# An objective that changed by no more than this (relative to its size) never moved: no gradient
# reached the image (a channel held at 0 by a ReLU, say). Real optimization moves it by far more.
FLAT_RELATIVE = 1e-4
FLAT_ABSOLUTE = 1e-8


def _unmoved(start: float, final: float) -> bool:
    return abs(final - start) <= FLAT_RELATIVE * max(abs(start), abs(final)) + FLAT_ABSOLUTE


def unit_status(starts: list[float], finals: list[float], objectives: list) -> tuple[str, str | None]:
    """A rendered unit's status and why: `dead` when a maximized objective ended at exactly 0 on
    every image, `flat` when the objective never moved on any, else `ok`."""
    if all(final == 0.0 and _maximizes(o) for final, o in zip(finals, objectives)):
        return "dead", "the objective ended at exactly 0: the unit never fired"
    if all(_unmoved(start, final) for start, final in zip(starts, finals)):
        start, final = starts[0] + 0.0, finals[0] + 0.0  # + 0.0: -0.0 reads as 0
        return "flat", f"the objective never moved ({start:.4g} -> {final:.4g}): no gradient reached the image"
    return "ok", None


ANY_MODEL_RUNS_AT = 224  # px: a model that fails on this size too is broken, not given too small an image


def _forward_failed(model: LoadedModel, error: BaseException) -> FvError:
    return FvError(f"model {model.name}: forward {raised(error)}")


class _TooSmall(Exception):
    """The model cannot run on an image of the requested size."""

    def __init__(self, error: Exception):
        self.error = error


class Run:
    """One invocation of `fv render`: construct (validates everything), then `execute()`."""

    def __init__(
        self, requests: list[JobRequest], settings: RunSettings, say: Callable[[str], None],
        modules: dict[str, torch.nn.Module] | None = None,
    ):
        """`modules`: model objects in memory (the Python API) by the model names the requests use."""
        self.settings, self.say = settings, say
        self.modules = modules or {}
        if settings.deterministic:
            # cuBLAS reads this before its first call; without it, deterministic mode refuses matmuls.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        self.device = pick_device(settings.device)
        self.dtypes: dict[tuple, dict] = {}  # model key -> {"dtype", "how"}: what --dtype resolved to
        self.threads: dict | None = None  # on the CPU, {"threads", "how"}: what --threads resolved to
        self._compiled: dict[tuple, tuple] = {}  # (model key, layers, images) -> (forward or None, why)
        self.models: dict[tuple, LoadedModel] = {}
        self._hashes: dict[tuple[int, int], str] = {}
        self.photos: dict[tuple[str, int, int], Photo] = {}  # (path, size, channels): each --init photo, read once
        self.load_seconds = 0.0
        self.announce_merge = True  # say how to assemble a shard's incomplete jobs (not under torchrun)
        self.jobs = [self._resolve(index, request) for index, request in enumerate(requests)]
        self._check_folders()

    # ---- validation ----

    def _model(self, settings: RenderSettings) -> LoadedModel:
        key = model_key(settings)
        if key not in self.models:
            started = time.perf_counter()
            model = load_model(
                settings.model, settings.weights, settings.seed, quiet=self.settings.quiet, module=self.modules.get(settings.model)
            )
            model.module.to(self.device, memory_format=torch.channels_last)
            self.models[key] = model
            self.load_seconds += time.perf_counter() - started
        return self.models[key]

    def _resolve(self, index: int, request: JobRequest) -> Job:
        settings = request.settings
        model = self._model(settings)
        where = f"{request.origin}: " if request.origin else ""

        canvas = Pipeline.from_setting(settings.transforms, settings.size).canvas(settings.size, settings.size)[0]

        def probe(key: str) -> tuple[tuple[int, ...], int | None]:
            try:  # a LayerError (a tuple or dict output, a missing element) is worded by the resolver
                return self._shape(model, key, settings.size, canvas)
            except _TooSmall as small:
                first = (str(small.error).strip().splitlines() or [type(small.error).__name__])[0][:200]
                what = f"layer {key}" if key else "its output"
                raise FvError(
                    f"{model.name} cannot compute {what} on a {settings.size} px image ({first}); try a larger --size"
                ) from None

        try:
            normalization = input_normalization(model, settings.normalize)  # fits the model's channels
        except FvError as error:
            raise FvError(f"{where}{error}") from None

        def forward(key: str, images: torch.Tensor, input_size: int | None) -> torch.Tensor:
            return activations(model, images.to(self.device), (key,), normalization, input_size)[key]

        resolver = Resolver(model, settings, probe, forward)
        photo = self._check_image_options(model, settings, where)
        try:
            resolved = resolver.units(request.target)
            layer = resolver.main_layer(request.target)
        except FvError as error:
            raise FvError(f"{where}{error}") from None
        diversity_layer = None
        if settings.diversity > 1:
            try:
                diversity_layer = resolver.layer(settings.diversity_layer) if settings.diversity_layer else layer
            except FvError as error:
                raise FvError(f"{where}--diversity-layer: {error}") from None
            if not settings.diversity_layer and diversity_layer is not None and diversity_layer.layout.kind == "flat":
                diversity_layer = resolver.positions_before(diversity_layer)
            if diversity_layer is None or diversity_layer.layout.kind == "flat":
                raise FvError(f"{where}--diversity needs a layer with positions for its Gram matrices; set --diversity-layer")
        width = max(4, len(str(max((r.key or 0) for r in resolved))), len(str(layer.layout.channels - 1)) if layer else 0)
        units = []
        for i, r in enumerate(resolved):
            image, label = unit_name(request.target, r.key, width)
            objectives = r.objectives if len(r.objectives) > 1 else r.objectives * settings.diversity
            images = (image,) if len(objectives) == 1 else tuple(image.replace(".png", f"_{k}.png") for k in range(len(objectives)))
            seed = unit_seed(settings.seed, r.canonical)
            units.append(Unit(index, i, r.key, seed, objectives, images, label, r.description, shared=r.shared, by_direction=r.by_direction))
        if settings.param in ("maco", "cppn") and any(unit.shared for unit in units):
            held = "a fixed magnitude spectrum" if settings.param == "maco" else "a network's output"
            raise FvError(
                f"{where}interpolate(...) aligns its frames with shared low-resolution images, which {settings.param}'s "
                f"images ({held}) cannot take in; use --param fourier, pixel, lowres or laplacian"
            )
        return Job(
            request, tuple(units), layer, resolver.input_size, diversity_layer, tuple(resolver.read_as.items()),
            photo, self._spectrum(settings, model, where),
        )

    def _check_image_options(self, model: LoadedModel, settings: RenderSettings, where: str) -> Photo | None:
        """FvError unless --alpha and --init fit the model's channels; the --init photo."""
        channels = input_channels(model.module)
        if settings.alpha and channels not in (1, 3):
            raise FvError(
                f"{where}--alpha writes RGBA or gray+alpha PNGs; {model.name} takes images of {channels} channels, "
                "and --alpha needs an RGB or grayscale model"
            )
        if not settings.init:
            return None
        key = (settings.init, settings.size, channels)
        if key not in self.photos:
            try:
                self.photos[key] = load_photo(settings.init, settings.size, channels)
            except FvError as error:
                raise FvError(f"{where}{error}") from None
        return self.photos[key]

    def _spectrum(self, settings: RenderSettings, model: LoadedModel, where: str):
        """The --spectrum file of a maco job, read and checked against the model's channels."""
        if settings.spectrum is None:
            return None
        try:
            spectrum = read_spectrum(settings.spectrum)
            check_fits(spectrum, input_channels(model.module), settings.decorrelate)
        except FvError as error:
            raise FvError(f"{where}{error}") from None
        return spectrum

    def _probe(self, model: LoadedModel, key: str, size: int) -> tuple[int, ...]:
        return layer_shapes(model.module, [key], size, self.device)[key]

    def _shape(self, model: LoadedModel, key: str, size: int, canvas: int) -> tuple[tuple[int, ...], int | None]:
        """The layer's output shape, and the input size images are resized to (None: as rendered).

        Models that take one input size only (ViTs) run at the size they were trained at. A model
        that runs at the image's size but not at the transforms' larger canvas (`canvas`), such
        as a 28 px digit classifier whose Linear layer fixes the size, is fed the transformed
        image resized back to `size`. For other models a failure means this image is too small
        (_TooSmall), unless the model fails on a large image too: then its forward is broken
        (FvError). LayerError: a tuple or dict output.
        """
        try:
            shape = self._probe(model, key, size)
        except LayerError:
            raise
        except (Exception, SystemExit) as error:
            return self._shape_elsewhere(model, key, size, error)
        if canvas != size:
            try:
                self._probe(model, key, canvas)
            except LayerError:
                raise
            except (Exception, SystemExit):
                return shape, size
        return shape, None

    def _shape_elsewhere(self, model: LoadedModel, key: str, size: int, error: BaseException) -> tuple[tuple[int, ...], int | None]:
        """The layer's shape for a model that failed (`error`) to compute it on a `size` px image.
        A model whose Linear layer fixes its input size (fvcli.models.fixed_size) takes the side that fits
        it from then on, as a ViT takes its native size."""
        if model.native_size is None:
            fixed = fixed_size(model.module, size, self.device)
            if fixed is not None and fixed.size is None:
                raise FvError(f"model {fixed.describe(model.name)}") from None
            if fixed is not None:
                model.native_size = fixed.size
                self.say(f"fv: {fixed.describe(model.name)}: images are rendered at --size and resized to {fixed.size} px for it")
        if model.native_size not in (None, size):
            try:
                return self._probe(model, key, model.native_size), model.native_size
            except LayerError:
                raise
            except (Exception, SystemExit):
                raise _TooSmall(error) from None
        try:
            self._probe(model, key, max(size, ANY_MODEL_RUNS_AT))
        except LayerError:
            raise
        except (Exception, SystemExit):
            raise _forward_failed(model, error) from None
        raise _TooSmall(error) from None

    def _check_folders(self) -> None:
        check_output_folders([(job.folder, job.request.origin) for job in self.jobs], writable=not self.settings.dry_run)

    # ---- rendering ----

    def _batch_size(self, key: tuple, count: int) -> int:
        """Units per batch for `count` units of one batch key; batch sizes count images."""
        per_unit = key[-1]
        if self.settings.batch_size:
            images = self.settings.batch_size
        elif self.device.type != "cuda":
            images = CPU_BATCH
        else:
            images = self._cuda_batch_size(key, count * per_unit)
        return max(1, min(count, images // per_unit))

    def _cuda_batch_size(self, key: tuple, count: int) -> int:
        """Measure one short render's peak memory per image, then fill a share of free memory."""
        probe_units = [(j, u) for j in self.jobs for u in j.units if self._batch_key(j, u) == key][:4]
        job = probe_units[0][0]
        settings = dataclasses.replace(self._settings_for(job), steps=2)
        model = self.models[model_key(job.request.settings)]
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        objectives, seeds, groups = self._flatten(probe_units)
        render_batch(model, objectives, seeds, settings, self.device, input_size=job.input_size, groups=groups, init=job.init_pixels, spectrum=job.spectrum)
        per_image = max(1, (torch.cuda.max_memory_allocated(self.device) - before) / len(objectives))
        free, _ = torch.cuda.mem_get_info(self.device)
        return max(1, min(count, int(free * CUDA_MEMORY_SHARE / per_image)))

    def _choose_dtypes(self, pairs: list[tuple[Job, Unit]]) -> None:
        """What each model's --dtype means: as given, or for auto the faster of bf16 autocast and
        float32, timed on one step of the model's first units (fvcli.run.tuning), where the device
        has native bf16 at all."""
        for job, unit in pairs:
            settings, key = job.request.settings, model_key(job.request.settings)
            if key in self.dtypes:
                continue
            if settings.dtype != "auto":
                self.dtypes[key] = {"dtype": settings.dtype, "how": "asked for"}
            elif not use_bf16("auto", self.device):
                self.dtypes[key] = {"dtype": "float32", "how": "this device has no native bf16"}
            else:
                step, objectives = self._probe_step(pairs, job, unit)
                size = job.input_size or settings.size
                # The device's kind, not its thread count: workers with fewer threads make the same choice.
                kind = "cpu" if self.device.type == "cpu" else device_name(self.device)
                cache_key = tuning.key_of("dtype", kind, self.models[key].architecture, layers_of(objectives), size, len(objectives))
                self.dtypes[key] = tuning.choose_dtype(cache_key, step, self.device)

    def _probe_step(self, pairs: list[tuple[Job, Unit]], job: Job, unit: Unit) -> tuple[Callable[[str], None], list]:
        """One optimization step of DTYPE_PROBE_UNITS units like `unit`, in a given dtype, as the
        measured choices time it; and the objectives it optimizes."""
        # Always as many units, so that the choice never depends on how many are left to render.
        alike = [(j, u) for j, u in pairs if self._batch_key(j, u) == self._batch_key(job, unit)]
        probe = (alike * DTYPE_PROBE_UNITS)[:DTYPE_PROBE_UNITS]
        objectives, seeds, groups = self._flatten(probe)
        settings, model = job.request.settings, self.models[model_key(job.request.settings)]

        def step(dtype: str) -> None:
            one = dataclasses.replace(settings, steps=1, dtype=dtype)
            render_batch(model, objectives, seeds, one, self.device, input_size=job.input_size, groups=groups, init=job.init_pixels, spectrum=job.spectrum)

        return step, objectives

    def _choose_threads(self, pairs: list[tuple[Job, Unit]]) -> None:
        """What --threads means on the CPU: as given, or for auto the fastest count, timed on one
        float32 step of the first units to render (fvcli.run.tuning.choose_threads)."""
        if self.device.type != "cpu" or self.threads is not None:
            return
        if self.settings.threads is not None:
            torch.set_num_threads(self.settings.threads)
            self.threads = {"threads": self.settings.threads, "how": "asked for"}
        elif pairs:
            step, _ = self._probe_step(pairs, *pairs[0])
            self.threads = tuning.choose_threads(lambda: step("float32"), torch.get_num_threads())

    def _settings_for(self, job: Job) -> RenderSettings:
        """The job's settings with --dtype resolved."""
        settings = job.request.settings
        return dataclasses.replace(settings, dtype=self.dtypes[model_key(settings)]["dtype"])

    def _compile_key(self, batch: list[tuple[Job, Unit]]) -> tuple:
        job = batch[0][0]
        objectives = [o for _, unit in batch for o in unit.objectives]
        extra = (job.diversity_layer.key,) if job.diversity_layer and len(batch[0][1].objectives) > 1 else ()
        return (model_key(job.request.settings), (*layers_of(objectives), *extra), len(objectives))

    def _compiled_for(self, batch: list[tuple[Job, Unit]]):
        """The compiled forward this batch uses, or None (see --compile and COMPILE_BREAK_EVEN_STEPS)."""
        key = self._compile_key(batch)
        if key not in self._compiled:
            mode, steps = self.settings.compile, self._steps_left.get(key, 0)
            if mode == "off":
                self._compiled[key] = (None, "off")
            elif mode == "auto" and self.device.type != "cuda":
                self._compiled[key] = (None, "auto: not on a CPU, where compiled steps measured slower")
            elif mode == "auto" and steps < COMPILE_BREAK_EVEN_STEPS:
                self._compiled[key] = (None, f"auto: {steps} steps of this batch shape repay no compile (from {COMPILE_BREAK_EVEN_STEPS})")
            else:
                forward, why = compile_forward(self.models[key[0]].module, key[1])
                self._compiled[key] = (forward, why or f"{mode}: compiled for {steps} steps")
        return self._compiled[key][0]

    def _compile_record(self, job: Job) -> dict:
        """For the sidecar: whether this job's batches ran compiled, why, and the compile time."""
        entries = [(k, v) for k, v in self._compiled.items() if k[0] == model_key(job.request.settings)]
        return {
            "setting": self.settings.compile,
            "compiled": any(forward is not None for _, (forward, _) in entries),
            "why": sorted({why for _, (_, why) in entries}),
            "seconds": round(sum(forward.compile_seconds for _, (forward, _) in entries if forward is not None), 3),
        }

    def _batch_key(self, job: Job, unit: Unit) -> tuple:
        # Units share a batch when only their seeds differ (each unit carries its own seed), and
        # when they have as many images, grouped alike, and the model sees them at one size. The last
        # entry is the images per unit.
        settings = job.request.settings
        diversity = job.diversity_layer.key if job.diversity_layer else None
        return (model_key(settings), dataclasses.replace(settings, seed=0), diversity, unit.shared, job.input_size, len(unit.objectives))

    def _flatten(self, batch: list[tuple[Job, Unit]]) -> tuple[list, list[int], Groups | None]:
        """The batch's images in order, their seeds, and how they group into units."""
        objectives, seeds, members = [], [], []
        for _, unit in batch:
            members.append(tuple(range(len(objectives), len(objectives) + len(unit.objectives))))
            objectives.extend(unit.objectives)
            seeds.extend(unit.seeds)
        job, unit = batch[0]
        if len(unit.objectives) == 1:
            return objectives, seeds, None
        diversity = None
        if job.diversity_layer is not None:
            info, weight = job.diversity_layer, job.request.settings.diversity_weight
            diversity = (info.key, info.layout, weight)
        return objectives, seeds, Groups(tuple(members), diversity=diversity, shared=unit.shared)

    def _fold(self) -> None:
        """Fold BatchNorms into convolutions, keeping every layer some job reads (see fvcli.models.fold)."""
        self.folded: dict[tuple, int] = {}
        for key, model in self.models.items():
            jobs = [job for job in self.jobs if model_key(job.request.settings) == key]
            layers = {layer for job in jobs for unit in job.units for o in unit.objectives for layer in o.layers}
            layers |= {job.diversity_layer.key for job in jobs if job.diversity_layer}
            # A size the whole model takes, where one of its jobs found it (a ViT's, a LeNet's)
            size = next((job.input_size for job in jobs if job.input_size), jobs[0].request.settings.size)
            try:
                self.folded[key] = self._fold_at(model, layers, size)
            except (Exception, SystemExit) as error:  # its first whole forward pass: the model's own code
                # Jobs of layers before a LeNet's Linear layer run at any size, the whole model at one only.
                fixed = fixed_size(model.module, size, self.device) if model.native_size is None else None
                if fixed is None or fixed.size is None:
                    raise _forward_failed(model, error) from None
                try:
                    self.folded[key] = self._fold_at(model, layers, fixed.size)
                except (Exception, SystemExit) as error:
                    raise _forward_failed(model, error) from None

    def _fold_at(self, model: LoadedModel, layers: set[str], size: int) -> int:
        probe = probe_images(model.module, 2, size, self.device, seed=0)
        return fold_batchnorms(model.module, sorted(layers), probe.contiguous(memory_format=torch.channels_last))

    def unit_hash(self, job: Job, unit: Unit) -> str:
        """What a unit's image depends on (computed once per unit)"""
        key = (unit.job, unit.index)
        if key not in self._hashes:
            self._hashes[key] = self._unit_hash(job, unit)
        return self._hashes[key]

    def _unit_hash(self, job: Job, unit: Unit) -> str:
        """What a unit's image depends on: fv's rendering version, the model and its weights, the
        unit's objectives and seed, the contents of the files they were made from (photos, direction
        files), and every setting that changes an image."""
        model = self.models[model_key(job.request.settings)]
        identity = {
            "render_version": RENDER_VERSION,
            "model": model.name,
            "weights": model.weights,
            "weights_sha256": model.weights_sha256,
            "objectives": [o.describe() for o in unit.objectives],
            "layers": sorted({layer for o in unit.objectives for layer in o.layers}),
            "seed": unit.seed,
            "settings": _hashed_settings(
                job.request.settings, job.photo.sha256 if job.photo else None, job.spectrum.sha256 if job.spectrum else None
            ),
            "input_size": job.input_size,
            "diversity_layer": job.diversity_layer.key if job.diversity_layer else None,
            "shared": unit.shared,
        }
        files = source_files(unit)
        if files:  # only then, so that the units of other objectives keep their hashes
            identity["files"] = files
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()

    def _mine(self) -> set[tuple[int, int]]:
        """(job, unit) indices this process renders: all, or with --shard I/N those whose place in
        the run's unit order is I modulo N (the same slice whatever is already done)."""
        pairs = [(unit.job, unit.index) for job in self.jobs for unit in job.units]
        if self.settings.shard is None:
            return set(pairs)
        index, count = self.settings.shard
        return {pair for k, pair in enumerate(pairs) if k % count == index}

    def _resume(self, reports: list[JobReport]) -> list[tuple[Job, Unit]]:
        """The units still to render; units whose PNGs carry this very hash are taken as done
        (those of other shards too, so the shard that completes a job writes its grid)."""
        mine, pending = self._mine(), []
        for job, report in zip(self.jobs, reports):
            for unit in job.units:
                if not self.settings.force and self._restore(job, unit, report.records[unit.index]):
                    continue
                if (unit.job, unit.index) in mine:
                    pending.append((job, unit))
        skipped = sum(r.status != "pending" for report in reports for r in report.records)
        if skipped:
            self.say(f"fv: {plural(skipped, 'unit')} already rendered with these settings {'is' if skipped == 1 else 'are'} kept (--force renders {'it' if skipped == 1 else 'them'} again)")
        return pending

    def plan(self) -> list[str]:
        """One line a job: where it goes, what it renders, and how much of it is done already."""
        lines, mine = [], self._mine()
        where = "" if self.settings.shard is None else " in shard {}/{}".format(*self.settings.shard)
        for job in self.jobs:
            done = set() if self.settings.force else {u.index for u in job.units if self._stored(job, u)}
            todo = sum(1 for unit in job.units if unit.index not in done and (unit.job, unit.index) in mine)
            images = sum(len(unit.objectives) for unit in job.units)
            what = plural(len(job.units), "unit") + (f" ({plural(images, 'image')})" if images != len(job.units) else "")
            lines.append(
                f"{job.folder}: {job.request.settings.model} {job.request.target.describe()}: {what}, "
                f"{len(done)} already rendered, {todo} to render{where}"
            )
        return lines

    def _stored(self, job: Job, unit: Unit) -> dict | None:
        """The record a unit's PNGs carry when all of them (step images too) were rendered with this unit's hash."""
        names = UnitFiles.of(unit.images, job.request.settings).names
        stored = [read_record(job.folder / name) for name in names]
        expected = self.unit_hash(job, unit)
        if all(s is not None and s.get("hash") == expected for s in stored):
            return stored[0]
        return None

    def _restore(self, job: Job, unit: Unit, record: UnitRecord) -> bool:
        """Fill `record` from the unit's PNGs when they are already rendered with its hash."""
        first = self._stored(job, unit)
        if first is None:
            return False
        single = {k: first.get(k) for k in ("image", "objective", "activation_start", "activation_final")}
        record.status, record.images = first["status"], first.get("images") or [single]
        record.reason = first.get("reason")
        record.similarity = first.get("diversity_similarity")
        record.dtype = first.get("dtype")
        record.files = UnitFiles.listed(first)
        return True

    def execute(self) -> Report:
        self._fold()
        reports = [
            JobReport(
                job,
                self.models[model_key(job.request.settings)],
                [UnitRecord(u.key, u.label, u.description, u.seed, by_direction=u.by_direction) for u in job.units],
            )
            for job in self.jobs
        ]
        pairs = self._resume(reports)
        self._choose_threads(pairs)
        self._choose_dtypes(pairs)
        batches = plan_batches(pairs, key=lambda p: self._batch_key(*p), batch_size=self._batch_size)
        self._steps_left = {}  # (model key, layers, images) -> steps past the redirect still to run
        for batch in batches:
            key = self._compile_key(batch)
            self._steps_left[key] = self._steps_left.get(key, 0) + max(0, batch[0][0].request.settings.steps - REDIRECT_STEPS)
        existed = {job.folder: next(p for p in (job.folder, *job.folder.parents) if p.exists()) for job in self.jobs}
        with Writer() as self.writer:
            try:
                return self._execute(reports, batches, len(pairs))
            except WriteError as error:
                try:
                    self.writer.drain()  # the tasks after the failed one are skipped
                except WriteError:
                    pass
                tqdm.write(
                    f"fv: error: {error}; the units written before are kept, and running the same command "
                    "again renders the rest", file=sys.stderr,
                )
                for folder, stop in existed.items():  # folders this run made and could not fill
                    remove_empty_folders(folder, stop)
                return Report(reports, write_error=error)

    def _execute(self, reports: list[JobReport], batches: list, total_units: int) -> Report:
        for report in reports:
            if report.done:  # every unit was rendered before: rebuild the grid and sidecar
                self._finish(report)
        with self._progress(total_units) as bar, StopOnSignals() as stop:
            self.stop = stop
            pending = list(batches)
            done = 0
            while pending:
                batch = pending.pop(0)
                try:
                    self.writer.check()
                    result, seconds = self._render(batch, bar, done)
                except Stopped:
                    self.writer.drain()  # every finished unit is on disk before the process ends
                    name = signal.Signals(stop.signal).name
                    self.say(
                        f"fv: stopped by {name} after {done} of {plural(total_units, 'unit')}; finished units are "
                        f"kept, and running the same command again renders the rest"
                    )
                    return Report(reports, stopped_by=stop.signal)
                except torch.OutOfMemoryError:
                    if len(batch) == 1:
                        result, seconds = self._failed(batch, "out of device memory with a batch of 1"), 0.0
                    else:  # halve and retry; finished units are already written
                        half = len(batch) // 2
                        pending[:0] = [batch[:half], batch[half:]]
                        self.say(f"fv: out of device memory with a batch of {len(batch)}; retrying with {half}")
                        torch.cuda.empty_cache()
                        continue
                done += len(batch)
                bar.n = done
                bar.refresh()
                self._record(batch, result, seconds, reports)
                for report in reports:
                    if report.done and report.grid is None:
                        self._finish(report)
            waiting = [report for report in reports if not report.done]
            if self.settings.shard is not None and waiting:
                for report in waiting:
                    self._leave_manifest(report)
            self.writer.drain()
        if self.settings.shard is not None and waiting and self.announce_merge:
            index, count = self.settings.shard
            outs = " ".join(sorted({report.job.request.out for report in waiting}))
            self.say(
                f"fv: shard {index}/{count} done; {plural(len(waiting), 'job')} {'waits' if len(waiting) == 1 else 'wait'} for other shards' units: when all "
                f"shards are done, 'fv merge {outs}' assembles their grids"
            )
        return Report(reports)

    def _leave_manifest(self, report: JobReport) -> None:
        """What `fv merge` needs to assemble a job this shard could not complete."""
        job = report.job
        units = [{"label": u.label, "images": list(u.images), "hash": self.unit_hash(job, u)} for u in job.units]
        sidecar = self._sidecar(report, report.records)
        self.writer.submit(lambda: write_manifest(job.folder, self.settings.shard, job.request.settings.size, units, sidecar))

    def _progress(self, total: int) -> tqdm:
        return progress_bar(
            self.settings.progress,
            self.settings.quiet,
            total=total,
            unit="unit",
            bar_format="{l_bar}{bar}| {n:.0f}/{total} units [{elapsed}<{remaining}, {rate_fmt}{postfix}]",
        )

    def _render(self, batch: list[tuple[Job, Unit]], bar: tqdm, done: int) -> tuple[BatchResult, float]:
        job = batch[0][0]
        settings = self._settings_for(job)
        model = self.models[model_key(settings)]
        bar.set_description(job.request.label[:40], refresh=False)

        def on_step(step: int) -> None:
            bar.n = done + len(batch) * step / settings.steps
            bar.set_postfix_str(f"step {step}/{settings.steps}", refresh=False)
            bar.update(0)

        started = time.perf_counter()
        objectives, seeds, groups = self._flatten(batch)
        try:
            result = render_batch(
                model, objectives, seeds, settings, self.device, on_step,
                input_size=job.input_size, groups=groups, should_stop=self.stop.requested,
                compiled=self._compiled_for(batch), init=job.init_pixels, spectrum=job.spectrum,
            )
        except (torch.OutOfMemoryError, Stopped):
            raise
        except (Exception, SystemExit) as error:  # the run goes on; these units are reported failed
            result = self._failed(batch, raised(error).removeprefix("raised "))
        return result, time.perf_counter() - started

    @staticmethod
    def _failed(batch: list, reason: str) -> BatchResult:
        n = sum(len(unit.objectives) for _, unit in batch)
        return BatchResult(torch.empty(n, 3, 1, 1), [float("nan")] * n, [float("nan")] * n, [reason] * n)

    def _record(self, batch, result: BatchResult, seconds: float, reports: list[JobReport]) -> None:
        """Fill the batch's records; queue its PNGs for the writer."""
        images = sum(len(unit.objectives) for _, unit in batch)
        position, writes = 0, []
        alpha = batch[0][0].request.settings.alpha  # one batch, one setting
        for index, (job, unit) in enumerate(batch):
            report = reports[unit.job]
            report.batch_sizes.add(images)
            record = report.records[unit.index]
            count = len(unit.objectives)
            span = range(position, position + count)
            position += count
            record.seconds = seconds * count / images
            report.rendered += 1
            errors = [result.errors[i] for i in span if result.errors[i] is not None]
            if errors:
                record.status, record.error = "failed", errors[0]
                continue
            record.images = [
                {
                    "image": name,
                    "objective": objective.describe(),
                    "activation_start": result.start[i],
                    "activation_final": result.final[i],
                }
                for i, name, objective in zip(span, unit.images, unit.objectives)
            ]
            if result.similarity is not None:
                record.similarity = result.similarity[index]
            record.status, record.reason = unit_status(
                [result.start[i] for i in span], [result.final[i] for i in span], list(unit.objectives)
            )
            record.dtype = dtype_name(self._settings_for(job), self.device)
            record.files = files = UnitFiles.of(unit.images, job.request.settings)
            stored = {"hash": self.unit_hash(job, unit), **unit_record(record)}
            # Step images, alpha maps and upscaled images first: a unit whose final PNG is there
            # has all of them too.
            for k, i in enumerate(span):
                steps, alpha_map, upscaled = files.per_image(k)
                for entry in steps:
                    writes.append((result.steps[entry["step"]][i], job.folder / entry["image"], stored, alpha))
                if alpha_map:
                    writes.append((with_opacity(result.images[i], result.alpha[i], alpha), job.folder / alpha_map, stored, True))
                if upscaled:
                    writes.append((result.upscaled[i], job.folder / upscaled, stored, alpha))
            writes.extend((result.images[i], job.folder / name, stored, alpha) for i, name in zip(span, unit.images))

        def write() -> None:  # in the writer thread: PNG encoding overlaps the next batch
            for image, path, stored, with_alpha in writes:
                save_png(to_pil(image, with_alpha), path, record=stored)

        self.writer.submit(write)

    def _finish(self, report: JobReport) -> None:
        """Queue the job's grid and sidecar (after its units' PNGs), then its lines."""
        job, records = report.job, report.records
        units, sidecar = [unit_record(r) for r in records], self._sidecar(report, records)
        report.grid = job.folder / "grid.png"
        lines = self._job_lines(report)

        def write() -> None:
            removed = remove_unlisted(job.folder, units)
            write_grid(job.folder, units, job.request.settings.size)
            write_json(sidecar, job.folder / "grid.json")
            remove_manifests(job.folder)  # shards that rendered part of this job earlier are assembled
            if removed:
                self.say(f"fv: {job.folder}: {removed_line(removed)}")
            for line in lines:
                self.say(line)

        self.writer.submit(write)

    def _job_lines(self, report: JobReport) -> list[str]:
        job, records = report.job, report.records
        seconds = sum(r.seconds for r in records)
        counts = ", ".join(f"{report.count(s)} {s}" for s in ("dead", "flat", "failed") if report.count(s))
        label = job.request.label
        what = f"{report.model.name} {label if len(label) <= 100 else label[:99] + '…'}"
        if report.rendered:
            kept = len(records) - report.rendered
            done = f"{plural(len(records), 'unit')} of {what} in {seconds:.1f} s ({report.rendered / max(seconds, 1e-3):.2f} units/s)"
            done += f", {kept} of them kept from before" if kept else ""
        else:  # nothing rendered now: no rate to speak of
            done = ("all " if len(records) > 1 else "") + f"{plural(len(records), 'unit')} of {what} already rendered"
        lines = [f"fv: {job.folder}: {done}" + (f"; {counts}" if counts else "") + f" -> {report.grid}"]
        whys = (
            ("dead", "the objective ended at exactly 0"),
            ("flat", "the objective never moved: no gradient reached the image"),
            ("failed", None),
        )
        for status, why in whys:
            flagged = [r for r in records if r.status == status]
            if flagged:
                keys = [r.key for r in flagged]
                listed = describe_channels(tuple(keys)) if None not in keys else ", ".join(r.label for r in flagged)
                lines.append(f"fv: {status} units in {job.folder}: {listed} ({why or flagged[0].error})")
        return lines

    def _sidecar(self, report: JobReport, records: list[UnitRecord]) -> dict:
        job = report.job
        key = model_key(job.request.settings)
        return job_sidecar(
            job, report.model, records, self.device,
            folded=self.folded.get(key, 0),
            load_seconds=self.load_seconds, batch_sizes=report.batch_sizes,
            dtype=self.dtypes.get(key), compiled=self._compile_record(job), deterministic=self.settings.deterministic,
            threads=self.threads,
        )
