"""The JSON sidecar of a job (grid.json): how each image was made, and each unit's record.

A unit's record is also what its PNG carries (see output.save_png), so a sidecar can be rebuilt
from the PNGs alone: after a resumed run, and when `fv merge` assembles shards.
"""

from __future__ import annotations

import dataclasses
import platform
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torchvision

from fvcli.version import __version__
from fvcli.run.devices import device_name
from fvcli.optvis.transforms import sizing
from fvcli.optvis.engine import describe, input_normalization
from fvcli.models.calls import module_call
from fvcli.models.layer_keys import input_channels, split_key
from fvcli.run.output import SCHEMA_VERSION, grid_shape
from fvcli.optvis.param import SharedParam
from fvcli.models.prerelu import twin_base
from fvcli.run.unit_files import UnitFiles

if TYPE_CHECKING:
    from fvcli.run.jobs import Job
    from fvcli.models.registry import LoadedModel


@dataclass
class UnitRecord:
    key: int | None  # the varying channel or direction index
    label: str
    objective: str
    seed: int
    # ok; dead (rendered, but a maximized objective ends at exactly zero); flat (rendered, but the
    # objective never moved); failed
    status: str = "pending"
    images: list[dict] = field(default_factory=list)  # per image: file, objective, start and final values
    error: str | None = None
    seconds: float = 0.0  # this unit's share of its batch's time
    similarity: float | None = None  # diversity: the final mean Gram similarity of its images
    dtype: str | None = None  # the arithmetic it was rendered in (what --dtype resolved to)
    reason: str | None = None  # dead and flat: why, in one line
    by_direction: bool = False  # the key indexes directions (random:K, a direction file's rows), not channels
    # every file it wrote: its images, and step images, alpha maps and upscaled images beside them
    files: UnitFiles | None = None



def unit_record(r: UnitRecord) -> dict:
    """A unit as the sidecar lists it (and its PNG carries it)."""
    first = r.images[0] if r.images else {}
    record = {
        "channel": None if r.by_direction else r.key,
        "label": r.label,
        "objective": r.objective,
        "image": first.get("image"),
        "status": r.status,
        "activation_start": first.get("activation_start"),
        "activation_final": first.get("activation_final"),
        "seed": r.seed,
    }
    if r.by_direction:
        record["direction"] = r.key
    if len(r.images) > 1:
        record["images"] = r.images
    if r.similarity is not None:
        record["diversity_similarity"] = r.similarity
    if r.dtype is not None:
        record["dtype"] = r.dtype
    if r.files is not None:
        record.update(r.files.fields())  # step_images, alpha_maps, upscaled_images: those that are set
    if r.reason:
        record["reason"] = r.reason
    if r.error:
        record["error"] = r.error
    return record


def source_files(unit) -> list[dict]:
    """The files a unit's objectives were made from (photos, direction files): path and sha256."""
    files = dict.fromkeys(f for o in unit.objectives for f in o.files)
    return [{"path": path, "sha256": digest} for path, digest in files]


def layer_fields(job: Job) -> dict:
    layer = job.layer
    if layer is None:
        return {"layer": None, "layer_module": None, "layer_shape": None, "layer_layout": None, "model_input_size": job.input_size, "size_from": job.size_from}
    layout = layer.layout
    return {
        "layer": layer.name,
        "layer_module": layer.key,
        "layer_shape": list(layer.shape),
        "layer_layout": {"kind": layout.kind, "channels": layout.channels, "prefix_tokens": layout.prefix_tokens},
        "model_input_size": job.input_size,
        "size_from": job.size_from,
    }


_OBJECTIVE_TEXT = {
    "channel": "channel: the mean of one channel of {layer} over positions (patch tokens for transformers), maximized",
    "neuron": "neuron: one channel of {layer} at the centre position (centre patch token for transformers), maximized",
}


def layer_order(model: LoadedModel, job: Job) -> int | None:
    """The layer's place among the model's modules (forward order, as `fv layers` lists them; a
    pre-ReLU twin's is its module's), so that an atlas lists a model's layers in the order the
    network computes them."""
    if job.layer is None:
        return None
    names = [name for name, _ in model.module.named_modules()]
    path = module_call(names, twin_base(set(names), job.layer.key) or split_key(job.layer.key)[0])[0]
    return names.index(path) if path in names else None


PRE_RELU_WHY = (
    "a negative image minimizes a channel before its ReLU, as the article's do: after the ReLU, a channel "
    "already at 0 has nothing left to lower (pre_relu: off reads the layer as named)"
)


def pre_relu_fields(model: LoadedModel, job: Job) -> dict:
    """`pre_relu` when the job reads a pre-ReLU twin: the names fv read as their twins and why, and
    the module whose ReLUs the job's layer feeds (the atlas shows the job with that layer's)."""
    names = {name for name, _ in model.module.named_modules()}
    base = twin_base(names, job.layer.key) if job.layer is not None else None
    if not job.read_as and base is None:
        return {}
    fields: dict = {"read_as": dict(job.read_as)}
    if job.read_as:
        fields["why"] = PRE_RELU_WHY
    fields["of_module"] = base
    return {"pre_relu": fields}


def objective_text(job: Job) -> str:
    simple, settings = job.request.target.channels_of_layer, job.request.settings
    if simple is not None:
        return _OBJECTIVE_TEXT[settings.objective].format(layer=simple.layer)
    several = f" (one unit per {job.request.target.keyed_by} of its range)" if len(job.units) > 1 else ""
    return f"target: {job.request.target.describe()}, maximized{several}"


def _job_files(job: Job) -> list[dict]:
    return list({f["path"]: f for unit in job.units for f in source_files(unit)}.values())


def timing(
    seconds: float, units: int, images: int, steps: int, load_seconds: float, batch_sizes, device: str,
    compile_seconds: float = 0.0, dtype_step_seconds: dict | None = None, threads: dict | None = None,
) -> dict:
    """`dtype_step_seconds`: what --dtype auto timed, if it did; `threads`: on the CPU, what
    --threads resolved to and how (a fact of the process, like its timings: shards differ)."""
    return {
        "seconds": round(seconds, 4),
        "units_per_second": round(units / seconds, 4) if seconds else None,
        "image_steps_per_second": round(images * steps / seconds, 2) if seconds else None,
        "model_load_seconds": round(load_seconds, 4),
        "batch_sizes": sorted(batch_sizes),
        "device": device,
        "compile_seconds": round(compile_seconds, 3),
        "dtype_step_seconds": dtype_step_seconds,
        **({"threads": threads} if threads else {}),
    }


def job_sidecar(
    job: Job, model: LoadedModel, records: list[UnitRecord], device: torch.device, folded: int, load_seconds: float,
    batch_sizes, dtype: dict | None = None, compiled: dict | None = None, deterministic: bool = False,
    threads: dict | None = None,
) -> dict:
    """`dtype`: what --dtype resolved to and how ({"dtype", "how"}; None: nothing was rendered);
    `threads`: on the CPU, what --threads resolved to and how ({"threads", "how"}, and "seconds");
    it goes with the timing: each process (shard, worker) chooses its own.
    `compiled`: the --compile record of the job's model (runner.Run._compile_record)."""
    settings = job.request.settings
    images = sum(len(unit.objectives) for unit in job.units)
    rows, columns = grid_shape(len(records))
    resolved = dataclasses.replace(settings, dtype=dtype["dtype"]) if dtype else settings
    scale = sizing(model.native_size, settings.size, job.input_size)
    described = describe(resolved, device, input_normalization(model, settings.normalize), input_channels(model.module), job.spectrum, scale)
    # What the units were rendered in, as their records say: a rerun that renders nothing, or a
    # resumed one, reports the arithmetic of the images, not of this run.
    rendered_in = {r.dtype for r in records if r.dtype is not None}
    if len(rendered_in) == 1:
        described["dtype"] = rendered_in.pop()
    elif rendered_in:
        described["dtype"] = "mixed: " + ", ".join(sorted(rendered_in))
    engine = {"batchnorms_folded": folded, "deterministic": deterministic}
    if dtype:
        engine["dtype"] = {"setting": settings.dtype, "chosen": described["dtype"], "how": dtype["how"]}
    if compiled:
        engine["compile"] = compiled
    if any(unit.shared for unit in job.units):
        described["parameterization"]["shared_lowres"] = [max(1, settings.size // d) for d in SharedParam.SHARED_DIVISORS]
    if "init" in described:
        described["init"]["sha256"] = job.photo.sha256
    if job.diversity_layer is not None:
        described["diversity"] = {"images": settings.diversity, "weight": settings.diversity_weight, "layer": job.diversity_layer.name}
    seconds = sum(r.seconds for r in records)
    return {
        "schema_version": SCHEMA_VERSION,
        "fv_version": __version__,
        "job": {"name": job.request.name, "origin": job.request.origin},
        "model": {
            "name": model.name,
            "architecture": model.architecture,
            "weights": model.weights,
            "weights_sha256": model.weights_sha256,
        },
        **layer_fields(job),
        "layer_order": layer_order(model, job),
        **pre_relu_fields(model, job),
        "objective": objective_text(job),
        **({"files": files} if (files := _job_files(job)) else {}),
        "settings": described,
        "engine": engine,
        "grid": {"image": "grid.png", "rows": rows, "columns": columns},
        "units": [unit_record(r) for r in records],
        "timing": timing(
            seconds, len(records), images, settings.steps, load_seconds, batch_sizes, device_name(device),
            compiled["seconds"] if compiled else 0.0, (dtype or {}).get("seconds"), threads,
        ),
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "platform": platform.platform(),
        },
    }


def combined(sidecar: dict, timings: list[dict], records: list[dict], images: int) -> dict:
    """A job's sidecar assembled from shards: every unit's record, and the shards' timings added up."""
    seconds = sum(t["seconds"] for t in timings)
    load = max(t["model_load_seconds"] for t in timings)
    batch_sizes = {size for t in timings for size in t["batch_sizes"]}
    steps = sidecar["settings"]["steps"]
    compile_seconds = sum(t.get("compile_seconds", 0.0) for t in timings)  # sidecars of older shards lack it
    summed = timing(seconds, len(records), images, steps, load, batch_sizes, timings[0]["device"], compile_seconds, timings[0].get("dtype_step_seconds"), timings[0].get("threads"))
    return {**sidecar, "units": records, "timing": {**summed, "shards": len(timings)}}
