"""What a run reports: each job's unit records and counts, a unit's status, and the exit status.

A unit is `ok`, or flagged: `dead` (a maximized objective ended at exactly 0: the unit never
fired), `flat` (the objective never moved: no gradient reached the image), or `failed` (its batch
raised). Flagged units are written and listed; only failed ones set exit status 1.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path

from fvcli.errors import EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, EXIT_SOME_FAILED, EXIT_WRITE_FAILED, WriteError
from fvcli.messages import plural
from fvcli.models.registry import LoadedModel
from fvcli.run.jobs import Job
from fvcli.run.sidecar import UnitRecord
from fvcli.specs.channels import describe_channels


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


def job_lines(report: JobReport) -> list[str]:
    """What a finished job says: where its grid is, its counts and rate, and its flagged units."""
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
