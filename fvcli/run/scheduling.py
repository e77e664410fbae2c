"""Scheduling a run: which units share a batch, how large batches are, and how they run.

Units share a batch when only their seeds differ. A batch's size is --batch-size, CPU_BATCH on a
CPU, or on a GPU a share of free memory over one short render's peak. What --dtype auto, --threads
auto and --compile auto mean is decided here, once per model, from measurements (fvcli.run.tuning),
and BatchNorms are folded into their convolutions before the first step.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from fvcli.models.fold import fold_batchnorms
from fvcli.models.compiled import compile_forward
from fvcli.models.layer_keys import probe_images
from fvcli.models.registry import LoadedModel, model_key
from fvcli.optvis.engine import Groups, render_batch
from fvcli.optvis.objectives import layers_of
from fvcli.optvis.precision import use_bf16
from fvcli.optvis.redirect import REDIRECT_STEPS
from fvcli.run import tuning
from fvcli.run.devices import device_name
from fvcli.run.jobs import Job, Unit, plan_batches
from fvcli.run.planning import Plan
from fvcli.run.shapes import forward_failed
from fvcli.specs.settings import RenderSettings, RunSettings

CPU_BATCH = 16  # on a CPU, larger batches gain little and make progress coarser
CUDA_MEMORY_SHARE = 0.7  # of free memory, for the automatic batch size
# --compile auto compiles a batch shape when the run takes at least this many steps of it past the
# ReLU redirect: on an H100, compiling GoogLeNet to mixed4a for 512 images at 140 px took 32 s and
# cut a step from 26.3 to 14.7 ms (benchmarks/BENCHMARKS.md), so it repays itself after ~2,760 steps.
COMPILE_BREAK_EVEN_STEPS = 2760
DTYPE_PROBE_UNITS = 2  # units in the step --dtype auto times both ways

Pair = tuple[Job, Unit]


class Schedule:
    """How the plan's units run: batches, arithmetic, threads, compiled forwards, folded models."""

    def __init__(self, plan: Plan, settings: RunSettings, meter: tuning.IdleMeter | None = None):
        """`meter`: the machine's idle cores since the run started (for --threads auto)."""
        self.plan, self.settings, self.device, self.meter = plan, settings, plan.device, meter
        self.dtypes: dict[tuple, dict] = {}  # model key -> {"dtype", "how"}: what --dtype resolved to
        self.threads: dict | None = None  # on the CPU, {"threads", "how"}: what --threads resolved to
        self.folded: dict[tuple, int] = {}  # model key -> BatchNorms folded
        self._compiled: dict[tuple, tuple] = {}  # (model key, layers, images) -> (forward or None, why)
        self._steps_left: dict[tuple, int] = {}  # (model key, layers, images) -> steps past the redirect
        self._probes: dict[tuple, tuple] = {}  # batch key -> (probe step, its objectives)

    # ---- batches ----

    def batch_key(self, job: Job, unit: Unit) -> tuple:
        # Units share a batch when only their seeds differ (each unit carries its own seed), and
        # when they have as many images, grouped alike, and the model sees them at one size. The last
        # entry is the images per unit.
        settings = job.request.settings
        diversity = job.diversity_layer.key if job.diversity_layer else None
        return (model_key(settings), dataclasses.replace(settings, seed=0), diversity, unit.shared, job.input_size, len(unit.objectives))

    def batches(self, pairs: list[Pair]) -> list[list[Pair]]:
        """The units to render in batches; --threads and --dtype auto are measured on them first."""
        self._choose_threads(pairs)
        self._choose_dtypes(pairs)
        batches = self._batched(pairs)
        for batch in batches:
            key = self.compile_key(batch)
            self._steps_left[key] = self._steps_left.get(key, 0) + max(0, batch[0][0].request.settings.steps - REDIRECT_STEPS)
        return batches

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
        probe_units = [(j, u) for j in self.plan.jobs for u in j.units if self.batch_key(j, u) == key][:4]
        job = probe_units[0][0]
        settings = dataclasses.replace(self.settings_for(job), steps=2)
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        objectives, seeds, groups = self.flatten(probe_units)
        render_batch(
            self.plan.model_of(job), objectives, seeds, settings, self.device, input_size=job.input_size, groups=groups,
            init=job.init_pixels, spectrum=job.spectrum,
        )
        per_image = max(1, (torch.cuda.max_memory_allocated(self.device) - before) / len(objectives))
        free, _ = torch.cuda.mem_get_info(self.device)
        return max(1, min(count, int(free * CUDA_MEMORY_SHARE / per_image)))

    def flatten(self, batch: list[Pair]) -> tuple[list, list[int], Groups | None]:
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

    # ---- arithmetic and threads ----

    def settings_for(self, job: Job) -> RenderSettings:
        """The job's settings with --dtype resolved."""
        settings = job.request.settings
        return dataclasses.replace(settings, dtype=self.dtypes[model_key(settings)]["dtype"])

    def _choose_dtypes(self, pairs: list[Pair]) -> None:
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
                cache_key = tuning.key_of("dtype", kind, self.plan.models[key].architecture, layers_of(objectives), size, len(objectives))
                self.dtypes[key] = tuning.choose_dtype(cache_key, step, self.device)

    def _probe_step(self, pairs: list[Pair], job: Job, unit: Unit) -> tuple[Callable[[str], None], list]:
        """One optimization step of DTYPE_PROBE_UNITS units like `unit`, in a given dtype, as the
        measured choices time it; and the objectives it optimizes."""
        key = self.batch_key(job, unit)
        if key in self._probes:  # --threads and --dtype auto time the same step
            return self._probes[key]
        # Always as many units, so that the choice never depends on how many are left to render.
        alike = [(j, u) for j, u in pairs if self.batch_key(j, u) == key]
        probe = (alike * DTYPE_PROBE_UNITS)[:DTYPE_PROBE_UNITS]
        objectives, seeds, groups = self.flatten(probe)
        settings, model = job.request.settings, self.plan.model_of(job)

        def step(dtype: str) -> None:
            one = dataclasses.replace(settings, steps=1, dtype=dtype)
            render_batch(model, objectives, seeds, one, self.device, input_size=job.input_size, groups=groups, init=job.init_pixels, spectrum=job.spectrum)

        self._probes[key] = step, objectives
        return step, objectives

    def _choose_threads(self, pairs: list[Pair]) -> None:
        """What --threads means on the CPU: as given, or for auto the fastest count, timed on one
        float32 step of the first units to render (fvcli.run.tuning.choose_threads)."""
        if self.device.type != "cpu" or self.threads is not None:
            return
        if self.settings.threads is not None:
            torch.set_num_threads(self.settings.threads)
            self.threads = {"threads": self.settings.threads, "how": "asked for"}
        elif pairs:
            step, _ = self._probe_step(pairs, *pairs[0])
            self.threads = tuning.choose_threads(lambda: step("float32"), torch.get_num_threads(), self.meter)

    # ---- compiled forwards ----

    def compile_key(self, batch: list[Pair]) -> tuple:
        job = batch[0][0]
        objectives = [o for _, unit in batch for o in unit.objectives]
        extra = (job.diversity_layer.key,) if job.diversity_layer and len(batch[0][1].objectives) > 1 else ()
        return (model_key(job.request.settings), (*layers_of(objectives), *extra), len(objectives))

    def compiled_for(self, batch: list[Pair]):
        """The compiled forward this batch uses, or None (see --compile and COMPILE_BREAK_EVEN_STEPS)."""
        key = self.compile_key(batch)
        if key not in self._compiled:
            mode, steps = self.settings.compile, self._steps_left.get(key, 0)
            why = self._not_compiled(steps)
            if why is not None:
                self._compiled[key] = (None, why)
            else:
                forward, why = compile_forward(self.plan.models[key[0]].module, key[1])
                self._compiled[key] = (forward, why or f"{mode}: compiled for {steps} steps")
        return self._compiled[key][0]

    def _not_compiled(self, steps: int) -> str | None:
        """Why a batch shape of `steps` steps runs uncompiled, or None when it is to be compiled."""
        mode = self.settings.compile
        if mode == "off":
            return "off"
        if mode == "auto" and self.device.type != "cuda":
            return "auto: not on a CPU, where compiled steps measured slower"
        if mode == "auto" and steps < COMPILE_BREAK_EVEN_STEPS:
            return f"auto: {steps} steps of this batch shape repay no compile (from {COMPILE_BREAK_EVEN_STEPS})"
        return None

    def settle(self, job: Job) -> None:
        """For a job whose units were all restored (a run killed after its last PNG, before its
        grid.json): what the uninterrupted run chose for it, so that its sidecar is that run's. The
        dtype as --dtype auto chose it (the tuning cache remembers a timed choice), and each batch
        shape's compile decision from the steps of the whole plan, as that run counted them."""
        mine = {self.compile_key(batch) for batch in self._batched([(job, unit) for unit in job.units])}
        if not mine or mine & set(self._compiled):
            return
        self._choose_dtypes([(job, unit) for unit in job.units])
        steps: dict[tuple, int] = {}
        for batch in self._batched([(j, u) for j in self.plan.jobs for u in j.units]):
            key = self.compile_key(batch)
            steps[key] = steps.get(key, 0) + max(0, batch[0][0].request.settings.steps - REDIRECT_STEPS)
        for key in mine:
            why = self._not_compiled(steps.get(key, 0)) or f"{self.settings.compile}: compiled for {steps.get(key, 0)} steps"
            self._compiled[key] = (None, why)

    def _batched(self, pairs: list[Pair]) -> list[list[Pair]]:
        return plan_batches(pairs, key=lambda p: self.batch_key(*p), batch_size=self._batch_size)

    def compile_record(self, job: Job) -> dict:
        """For the sidecar: whether this job's batches ran compiled, why, and the compile time."""
        entries = [(k, v) for k, v in self._compiled.items() if k[0] == model_key(job.request.settings)]
        return {
            "setting": self.settings.compile,
            "compiled": any(forward is not None for _, (forward, _) in entries),
            "why": sorted({why for _, (_, why) in entries}),
            "seconds": round(sum(forward.compile_seconds for _, (forward, _) in entries if forward is not None), 3),
        }

    # ---- BatchNorm folding ----

    def fold(self) -> None:
        """Fold BatchNorms into convolutions, keeping every layer some job reads (see fvcli.models.fold)."""
        for key, model in self.plan.models.items():
            jobs = [job for job in self.plan.jobs if model_key(job.request.settings) == key]
            layers = {layer for job in jobs for unit in job.units for o in unit.objectives for layer in o.layers}
            layers |= {job.diversity_layer.key for job in jobs if job.diversity_layer}
            # A size the whole model takes, where one of its jobs found it (a ViT's, a LeNet's)
            size = next((job.input_size for job in jobs if job.input_size), jobs[0].request.settings.size)
            try:
                self.folded[key] = self._fold_at(model, layers, size)
            except (Exception, SystemExit) as error:  # its first whole forward pass: the model's own code
                # Jobs of layers before a LeNet's Linear layer run at any size, the whole model at one
                # only. Folding is per channel, so the probe may run at any size the model takes.
                other = self.plan.shapes.whole_size(model, size)
                if other is None:
                    raise forward_failed(model, error) from None
                try:
                    self.folded[key] = self._fold_at(model, layers, other)
                except (Exception, SystemExit) as error:
                    raise forward_failed(model, error) from None

    def _fold_at(self, model: LoadedModel, layers: set[str], size: int) -> int:
        probe = probe_images(model.module, 2, size, self.device, seed=0)
        return fold_batchnorms(model.module, sorted(layers), probe.contiguous(memory_format=torch.channels_last))
