"""The record of what is done: each unit's hash, what resumes, and what each job's sidecar says.

A unit's PNGs carry its record and a hash of everything its image depends on (fv's rendering
version, the model and weights, its objectives and seed, the files they were read from, and every
setting that changes an image). A unit whose files all carry its hash is done: a rerun keeps it, a
shard counts it as another shard's, and `fv merge` assembles it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Callable

from fvcli.messages import plural
from fvcli.models.registry import model_key
from fvcli.run.jobs import Job, Unit
from fvcli.run.output import read_record
from fvcli.run.planning import Plan
from fvcli.run.reports import JobReport
from fvcli.run.sidecar import UnitRecord, job_sidecar, source_files
from fvcli.run.unit_files import UnitFiles
from fvcli.specs.settings import RenderSettings, RunSettings

RENDER_VERSION = 3  # raise when fv renders the same settings into different images (3: transforms sized by the network)

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


class Ledger:
    """Hashes, resume and sidecars for the plan's jobs; `say` tells what is kept."""

    def __init__(self, plan: Plan, settings: RunSettings, say: Callable[[str], None]):
        self.plan, self.settings, self.say = plan, settings, say
        self._hashes: dict[tuple[int, int], str] = {}

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
        model = self.plan.model_of(job)
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

    def reports(self) -> list[JobReport]:
        """A report per job, every unit pending."""
        return [
            JobReport(job, self.plan.model_of(job), [UnitRecord(u.key, u.label, u.description, u.seed, by_direction=u.by_direction) for u in job.units])
            for job in self.plan.jobs
        ]

    def _mine(self) -> set[tuple[int, int]]:
        """(job, unit) indices this process renders: all, or with --shard I/N those whose place in
        the run's unit order is I modulo N (the same slice whatever is already done)."""
        pairs = [(unit.job, unit.index) for job in self.plan.jobs for unit in job.units]
        if self.settings.shard is None:
            return set(pairs)
        index, count = self.settings.shard
        return {pair for k, pair in enumerate(pairs) if k % count == index}

    def pending(self, reports: list[JobReport]) -> list[tuple[Job, Unit]]:
        """The units still to render; units whose PNGs carry this very hash are taken as done
        (those of other shards too, so the shard that completes a job writes its grid)."""
        mine, pending = self._mine(), []
        for job, report in zip(self.plan.jobs, reports):
            for unit in job.units:
                if not self.settings.force and self._restore(job, unit, report.records[unit.index]):
                    continue
                if (unit.job, unit.index) in mine:
                    pending.append((job, unit))
        skipped = sum(r.status != "pending" for report in reports for r in report.records)
        if skipped:
            self.say(f"fv: {plural(skipped, 'unit')} already rendered with these settings {'is' if skipped == 1 else 'are'} kept (--force renders {'it' if skipped == 1 else 'them'} again)")
        return pending

    def plan_lines(self) -> list[str]:
        """One line a job: where it goes, what it renders, and how much of it is done already."""
        lines, mine = [], self._mine()
        where = "" if self.settings.shard is None else " in shard {}/{}".format(*self.settings.shard)
        for job in self.plan.jobs:
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
        stored = [read_record(job.folder / name) for name in UnitFiles.of(unit.images, job.request.settings).names]
        expected = self.unit_hash(job, unit)
        if all(s is not None and s.get("hash") == expected for s in stored):
            return stored[-1]
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

    def manifest_units(self, job: Job) -> list[dict]:
        """What `fv merge` checks of each unit of a job this shard could not complete."""
        return [{"label": u.label, "images": list(u.images), "hash": self.unit_hash(job, u)} for u in job.units]

    def sidecar(self, report: JobReport, schedule) -> dict:
        """The job's grid.json: its records, and how they were made (`schedule`: the run's Schedule)."""
        job = report.job
        key = model_key(job.request.settings)
        schedule.settle(job)
        return job_sidecar(
            job, report.model, report.records, self.plan.device,
            folded=schedule.folded.get(key, 0),
            load_seconds=self.plan.load_seconds, batch_sizes=report.batch_sizes,
            dtype=schedule.dtypes.get(key), compiled=schedule.compile_record(job), deterministic=self.settings.deterministic,
            threads=schedule.threads,
        )
