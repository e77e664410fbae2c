"""A run: plan every job, render its units in batches, write each job's files as it completes.

The run's concerns live beside it: planning (fvcli.run.planning: jobs resolved and checked, shapes
probed), scheduling (fvcli.run.scheduling: batches, arithmetic, compiling, folding) and the ledger
(fvcli.run.ledger: hashes, resume, sidecars). This module executes: it renders the batches, fills
the records, hands PNGs to the writer thread, and turns signals, full disks and failed batches into
the report whose exit status the CLI returns. A batch that fails marks its units failed and the
run goes on.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Callable

import torch
from tqdm.std import tqdm  # for its write; messages.progress_bar picks a notebook's bar where one shows

from fvcli.errors import WriteError, raised
from fvcli.files import remove_empty_folders
from fvcli.messages import plural, progress_bar
from fvcli.optvis.engine import BatchResult, Stopped, dtype_name, render_batch
from fvcli.run import tuning
from fvcli.run.jobs import Job, Unit
from fvcli.run.ledger import Ledger
from fvcli.run.merge import remove_manifests, write_manifest
from fvcli.run.output import remove_unlisted, removed_line, save_png, to_pil, with_opacity, write_grid, write_json
from fvcli.run.planning import Plan
from fvcli.run.reports import JobReport, Report, job_lines, unit_status
from fvcli.run.scheduling import Schedule
from fvcli.run.sidecar import unit_record
from fvcli.run.signals import StopOnSignals
from fvcli.run.unit_files import UnitFiles
from fvcli.run.writer import Writer
from fvcli.specs.requests import JobRequest
from fvcli.specs.settings import RunSettings


class Run:
    """One invocation of `fv render`: construct (plans and checks everything), then `execute()`."""

    def __init__(
        self, requests: list[JobRequest], settings: RunSettings, say: Callable[[str], None],
        modules: dict[str, torch.nn.Module] | None = None, models: dict | None = None,
    ):
        """`modules`: model objects in memory (the Python API) by the model names the requests use;
        `models`: models loaded already (see Plan)."""
        self.settings, self.say = settings, say
        if settings.deterministic:
            # cuBLAS reads this before its first call; without it, deterministic mode refuses matmuls.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        meter = tuning.IdleMeter()  # the machine's idle cores, measured over the planning
        self.planned = Plan(requests, settings, say, modules, models)
        self.schedule = Schedule(self.planned, settings, meter)
        self.ledger = Ledger(self.planned, settings, say)
        self.announce_merge = True  # say how to assemble a shard's incomplete jobs (not under torchrun)

    @property
    def jobs(self) -> list[Job]:
        return self.planned.jobs

    def plan(self) -> list[str]:
        """One line a job: where it goes, what it renders, and how much of it is done already."""
        return self.ledger.plan_lines()

    def execute(self) -> Report:
        self.schedule.fold()
        reports = self.ledger.reports()
        pairs = self.ledger.pending(reports)
        batches = self.schedule.batches(pairs)
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
        if total_units:
            for line in self.planned.normalization_hints():
                self.say(line)
        return Report(reports)

    def _leave_manifest(self, report: JobReport) -> None:
        """What `fv merge` needs to assemble a job this shard could not complete."""
        job = report.job
        units, sidecar = self.ledger.manifest_units(job), self.ledger.sidecar(report, self.schedule)
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
        settings = self.schedule.settings_for(job)
        model = self.planned.model_of(job)
        bar.set_description(job.request.label[:40], refresh=False)

        def on_step(step: int) -> None:
            bar.n = done + len(batch) * step / settings.steps
            bar.set_postfix_str(f"step {step}/{settings.steps}", refresh=False)
            bar.update(0)

        started = time.perf_counter()
        objectives, seeds, groups = self.schedule.flatten(batch)
        try:
            result = render_batch(
                model, objectives, seeds, settings, self.planned.device, on_step,
                input_size=job.input_size, groups=groups, should_stop=self.stop.requested,
                compiled=self.schedule.compiled_for(batch), init=job.init_pixels, spectrum=job.spectrum,
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
            record.dtype = dtype_name(self.schedule.settings_for(job), self.planned.device)
            record.files = files = UnitFiles.of(unit.images, job.request.settings)
            stored = {"hash": self.ledger.unit_hash(job, unit), **unit_record(record)}
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
        units, sidecar = [unit_record(r) for r in records], self.ledger.sidecar(report, self.schedule)
        report.grid = job.folder / "grid.png"
        lines = job_lines(report)

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
