"""The commands behind `fv render` and `fv examples`, shared by the CLI and the Python API: options
converted as the CLI converts them, requests made from targets and specs, and a run carried out
with its workers, torchrun ranks, dataset examples, activation atlases and shard merges.

The CLI (fvcli.cli) and the API (fvcli.api) call these, so that both take the same options with the
same checks and write the same files. Torch loads only inside the functions that render.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from fvcli.run import distributed
from fvcli.errors import EXIT_BAD_INPUT, FvError, WriteError
from fvcli.files import check_output_folders
from fvcli.specs.requests import JobRequest
from fvcli.specs.limits import MAX_UNITS
from fvcli.messages import plural, sayer
from fvcli.specs.settings import ATLAS_BY_KEY, OPTIONS_BY_KEY, RenderSettings, RunSettings, default_of, split
from fvcli.specs.spec import load_examples, load_spec
from fvcli.specs.grammar import parse_target
from fvcli.specs.targets import Target

if TYPE_CHECKING:
    from torch import nn


def convert_options(values: dict[str, Any], by_key: dict | None = None) -> dict[str, Any]:
    """Option values (text from the command line, or Python values), converted by their
    settings.Option; None (and False for a flag that cannot be negated) counts as not given.
    A bad value raises FvError('--steps: expected ...'), the same line in the CLI and the API."""
    by_key = by_key or OPTIONS_BY_KEY
    given: dict[str, Any] = {}
    for key, value in values.items():
        if value is None or (by_key[key].flag and not by_key[key].negatable and value is False):
            continue
        try:
            given[key] = by_key[key].convert(value)
        except ValueError as error:
            raise FvError(f"{by_key[key].cli_name}: {error}") from None
    return given


def command_line_atlas(layer: str, given: dict[str, Any]) -> JobRequest:
    """The activation atlas job of `fv render --activation-atlas LAYER --images DIR ...`."""
    import os

    from fvcli.specs.requests import atlas_request
    from fvcli.specs.settings import AtlasSettings

    values = {key: value for key, value in given.items() if key in ATLAS_BY_KEY}
    if "images" not in values:
        raise FvError("--activation-atlas needs --images DIR: a folder of JPEG or PNG images whose activations it lays out")
    folder = Path(values["images"]).expanduser()
    if not folder.is_dir():
        raise FvError(f"--images {values['images']}: {'not a folder' if folder.exists() else 'folder not found'}")
    values["images"] = os.path.abspath(folder)
    settings = RenderSettings(**split(given)[0])
    return atlas_request(layer, AtlasSettings(**values), settings, given.get("out", default_of("out")), origin=f"--activation-atlas {layer}")


def target_requests(targets: list[tuple[str, Target]], given: dict[str, Any]) -> list[JobRequest]:
    """Targets, one job each; plain channel targets of one layer merge."""
    settings = RenderSettings(**split(given)[0])  # built whole: --lr follows --param
    out = given.get("out", default_of("out"))
    jobs: dict[str, tuple[str, Target]] = {}
    for text, target in targets:
        simple = target.channels_of_layer
        if simple is None:
            jobs[f"#{len(jobs)}"] = (text, target)
            continue
        if simple.layer in jobs:
            texts, merged = jobs[simple.layer]
            old = merged.channels_of_layer.channels
            channels = None if old is None or simple.channels is None else tuple(sorted({*old, *simple.channels}))
            if channels is not None and len(channels) > MAX_UNITS:
                raise FvError(f"target {texts} {text}: {len(channels)} channels of {simple.layer}; a job renders at most {MAX_UNITS} units (split it into several runs)")
            jobs[simple.layer] = (f"{texts} {text}", Target(((1.0, dataclasses.replace(simple, channels=channels)),)))
        else:
            jobs[simple.layer] = (text, target)
    return [
        JobRequest(target=target, settings=settings, out=out, origin=f"target {texts}", size_given="size" in given)
        for texts, target in jobs.values()
    ]


def load_spec_jobs(path: str, given: dict[str, Any], run_values: dict[str, Any]) -> list[JobRequest]:
    """A spec's jobs; its run-level settings go into `run_values`, which several specs must agree on."""
    requests, spec_run = load_spec(path, given)
    for key, value in spec_run.items():
        if key in run_values and run_values[key] != value:
            raise FvError(f"{path}: sets {key} to {value!r}, another spec to {run_values[key]!r}; pass --{key.replace('_', '-')}")
        run_values[key] = value
    return requests


def channel_jobs(requests: list[JobRequest]) -> list[JobRequest]:
    """The plain LAYER:CHANNELS jobs: dataset examples are per channel."""
    return [r for r in requests if r.target.channels_of_layer is not None]


def _group_examples(groups: dict, section: dict, requests: list[JobRequest]) -> None:
    """Add `requests` to the collection of these examples settings (`section`): one collection, so
    one pass over the images, for every job that asks for the same examples."""
    from fvcli.specs.settings import ExamplesSettings

    groups.setdefault(ExamplesSettings(**section), []).extend(requests)


def _collections(groups: dict, run_settings: RunSettings, modules: dict | None = None) -> list:
    """One dataset-examples Collection (validated: models, layers, image folders) a group."""
    from fvcli.atlas.dataset_examples import Collection  # torch loads here, after the cheap checks

    say = sayer(run_settings.quiet)
    return [Collection(requests, settings, run_settings, say, modules) for settings, requests in groups.items() if requests]


def _spec_examples(specs: dict[str, list[JobRequest]], run_settings: RunSettings) -> list:
    """The dataset examples that the specs' `examples:` sections ask for, given each spec's jobs,
    one collection per set of examples settings; none in a shard."""
    groups: dict = {}
    for path, requests in specs.items():
        section = load_examples(path)
        if section is not None:
            _group_examples(groups, section, channel_jobs(requests))
    if groups and run_settings.shard is not None:
        sayer(run_settings.quiet)("fv: a shard collects no dataset examples; run the command without --shard for them")
        return []
    return _collections(groups, run_settings)


def collect_examples(
    targets: list[str], given: dict[str, Any], modules: dict | None = None
) -> tuple[list, RunSettings]:
    """The collections of dataset examples that `fv examples TARGETS` makes (validated: models,
    layers, image folders; nothing written), one per set of examples settings, and the run's
    settings. `given`: converted option values of fv examples."""
    import os

    from fvcli.specs.settings import EXAMPLES_KEYS

    own = {key: value for key, value in given.items() if key in EXAMPLES_KEYS}
    shared = {key: value for key, value in given.items() if key not in EXAMPLES_KEYS}
    if "images" in own:
        folder = Path(own["images"]).expanduser()
        if not folder.exists():
            raise FvError(f"--images {own['images']}: folder not found")
        if not folder.is_dir():
            raise FvError(f"--images {own['images']}: not a folder")
        own["images"] = os.path.abspath(folder)
    groups: dict = {}
    run_values: dict[str, Any] = {}
    plain: list[tuple[str, Target]] = []
    for argument in targets:
        if argument.lower().endswith((".yaml", ".yml")):
            requests = channel_jobs(load_spec_jobs(argument, shared, run_values))
            if not requests:
                raise FvError(f"{argument}: no LAYER:CHANNELS job; dataset examples are collected per channel")
            section = {**(load_examples(argument) or {}), **own}
            if "images" not in section:
                raise FvError(f"{argument}: no 'examples:' section with 'images:'; pass --images DIR")
            _group_examples(groups, section, requests)
            continue
        try:
            target = parse_target(argument)
        except ValueError as error:
            raise FvError(f"target: {error}") from None
        if target.channels_of_layer is None:
            raise FvError(f"target {argument}: dataset examples are per channel; give LAYER or LAYER:CHANNELS, such as mixed4a:0-63")
        plain.append((argument, target))
    if plain:
        if "images" not in own:
            raise FvError("fv examples needs --images DIR: a folder of JPEG or PNG images, such as an ImageNet validation folder")
        _group_examples(groups, own, target_requests(plain, shared))
    run_settings = dataclasses.replace(RunSettings(), **{**run_values, **split(shared)[1]})
    return _collections(groups, run_settings, modules), run_settings


@dataclass
class Outcome:
    """What `run_targets` did: the exit status, and the run (None for a dry run's plan)."""

    code: int
    run: Any = None
    write_error: WriteError | None = None
    stopped_by: int | None = None


def run_targets(
    arguments: list[str],
    given: dict[str, Any],
    modules: dict[str, nn.Module] | None = None,
    launched: bool = True,
    echo: Callable[[str], None] = print,
    atlas_layer: str | None = None,
) -> Outcome:
    """`fv render ARGUMENTS` with converted option values `given`: targets and spec files.

    `modules`: model objects in memory by the model name the options give them. `launched`: take
    the shard from torchrun or a SLURM job array in the environment, as the CLI does. `echo`
    prints a dry run's plan. `atlas_layer`: also an activation atlas of this layer (`fv render
    --activation-atlas LAYER`), its options (ATLAS_OPTIONS) in `given`.
    """
    requests: list[JobRequest] = []
    specs: dict[str, list[JobRequest]] = {}  # each spec file's jobs, for its examples: section
    run_values: dict[str, Any] = {}
    plain: list[tuple[str, Target]] = []
    for argument in arguments:
        if argument.lower().endswith((".yaml", ".yml")):
            specs[argument] = load_spec_jobs(argument, given, run_values)
            requests.extend(specs[argument])
        else:
            try:
                plain.append((argument, parse_target(argument)))
            except ValueError as error:
                raise FvError(f"target: {error}") from None
    requests.extend(target_requests(plain, given))
    if atlas_layer is not None:
        requests.append(command_line_atlas(atlas_layer, given))
    elif any(key in ATLAS_BY_KEY for key in given) and not any(r.atlas is not None for r in requests):
        option = ATLAS_BY_KEY[next(key for key in given if key in ATLAS_BY_KEY)].cli_name
        raise FvError(f"{option} is an activation atlas option; add --activation-atlas LAYER (or a spec job of kind: activation_atlas)")
    run_settings = dataclasses.replace(RunSettings(), **{**run_values, **split(given)[1]})
    launch = distributed.from_environment() if launched and run_settings.shard is None else None
    if launch is not None:
        run_settings = dataclasses.replace(run_settings, shard=launch.shard)
    if launch is not None and launch.kind == "torchrun":
        run_settings = dataclasses.replace(run_settings, device=distributed.rank_device(run_settings.device, launch.local_rank))

    from fvcli.run.runner import Run  # torch loads here, after the cheap checks
    from fvcli.run.workers import run_workers, worker_devices

    say = sayer(run_settings.quiet)
    devices = [run_settings.device]
    if launch is None and run_settings.shard is None and not run_settings.dry_run:
        devices = worker_devices(run_settings.device, run_settings.workers)
    if modules and len(devices) > 1:
        if run_settings.workers is not None:
            raise FvError("--workers: worker processes load the model by name; a model object renders in this process")
        devices = devices[:1]  # auto: the model object's own process and device
    # With workers, this process only checks the input (on the CPU, leaving the GPUs to them).
    parallel = len(devices) > 1
    checked = dataclasses.replace(run_settings, device="cpu") if parallel else run_settings
    examples = _spec_examples(specs, run_settings)  # checked before anything renders
    models: dict = {}  # loaded once for the atlases' checks and collecting, and the render
    # Two jobs of one folder, an unwritable folder: refused alike by a dry run and a real one
    check_output_folders([(request.folder, request.origin) for request in requests], writable=not run_settings.dry_run)
    atlases = _atlas_jobs(requests, checked, say, modules, models)  # checked before anything is collected
    if run_settings.dry_run:
        lines = [job.plan() for job in atlases]
        ready = {job.request for job in atlases if job.ready(job.digest()) is not None}
        requests = [r for r in requests if r.atlas is None or r in ready]  # the others' cells are not made yet
        if not requests:
            for line in lines:
                echo(line)
            return Outcome(0)
        run = Run(requests, checked, say, modules=modules, models=models)
        for line in [*lines, *run.plan(), *(line for collection in examples for line in collection.plan())]:
            echo(line)
        return Outcome(0)

    def assemble_atlases() -> None:
        """Activation atlases whose icons are all rendered: atlas.png and atlas.json."""
        if atlases:
            from fvcli.atlas.activation_image import assemble_folder

            for job in atlases:
                assemble_folder(job.request.folder, say)

    def assemble(code: int) -> int:
        """After every unit of the run is rendered: activation atlases, dataset examples, then the web atlas."""
        if code in (0, 1):
            assemble_atlases()
        for collection in examples if code in (0, 1) else []:  # not after a signal stopped the render
            code = collection.execute() or code
            if code not in (0, 1):
                break
        if run_settings.atlas and code in (0, 1):
            from fvcli.atlas.site import build_atlas

            build_atlas(Path(run_settings.out), say)
        return code

    from fvcli.run.locks import FolderLocks

    # One run at a time a job folder; the shards of a run share it (fvcli.run.locks). An atlas's
    # layout is made under its lock, so a second run waits for it instead of computing it again.
    with FolderLocks([request.folder for request in requests], run_settings.shard):
        for job in atlases:
            job.prepare()  # collect and lay out, or reuse the layout written for the same digest
        run = Run(requests, checked, say, modules=modules, models=models)
        # No more workers than units: a worker without units would only load the model.
        devices = devices[: max(1, sum(len(job.units) for job in run.jobs))]
        if launch is not None and launch.kind == "torchrun":
            return Outcome(_render_torchrun(run, launch.shard[0] == 0, say, assemble), run)
        if len(devices) > 1 or (parallel and devices[0] != checked.device):  # one GPU worker left for a one-unit run
            code, merges = run_workers(requests, run_settings, devices, say)
            return Outcome(assemble(max(code, report_merges(merges, say))), run)
        report = run.execute()
        outcome = Outcome(report.exit_code, run, report.write_error, report.stopped_by)
        if run_settings.shard is None:
            outcome.code = assemble(outcome.code)
        elif outcome.code in (0, 1):
            assemble_atlases()  # the shard that completed an atlas's icons assembles it
        if run_settings.shard is not None and run_settings.atlas:
            say("fv: a shard builds no atlas; run fv atlas OUT once every shard is done")
        return outcome


def _atlas_jobs(requests: list[JobRequest], run_settings: RunSettings, say, modules: dict | None, models: dict) -> list:
    """The activation atlas jobs among the requests, validated (model, layer, images, counts, the
    icons' render options) before any of them collects anything."""
    wanted = [r for r in requests if r.atlas is not None]
    if not wanted:
        return []
    from fvcli.atlas.activation_atlas import AtlasJob
    from fvcli.run.planning import Plan

    jobs = [AtlasJob(r, run_settings, say, modules, models) for r in wanted]
    folders = [job.request.folder for job in jobs]
    if len(set(folders)) < len(folders):
        twice = next(f for f in folders if folders.count(f) > 1)
        raise FvError(f"two activation atlas jobs write into {twice}; give one of them its own name:")
    unmade = [job for job in jobs if job.ready(job.digest()) is None]
    Plan([job.stand_in() for job in unmade], dataclasses.replace(run_settings, dry_run=True), say, modules, models)
    for job in unmade if not run_settings.dry_run else []:
        job.check_readable()
    return jobs


def _render_torchrun(run, rank_0: bool, say, assemble) -> int:
    """Every rank renders its shard; once all have finished, rank 0 assembles the grids."""
    from fvcli.run.merge import manifests, merge_folder

    run.announce_merge = False
    with distributed.ProcessGroup() as group:
        code = group.worst(run.execute().exit_code)
        if rank_0:
            merges = [merge_folder(job.folder) for job in run.jobs if manifests(job.folder)]
            code = assemble(max(code, report_merges(merges, say)))
        group.barrier()  # no rank exits (which ends the others under torchrun) before rank 0 is done
    return code


def report_merges(merges: list, say) -> int:
    """Say what merging did; 1 when a job still misses units or has failed ones, else 0."""
    from fvcli.run.output import removed_line

    code = 0
    for merge in merges:
        shards = ", ".join(merge.shards)
        if merge.problem:
            say(f"fv: {merge.folder}: not merged: {merge.problem}")
            code = max(code, EXIT_BAD_INPUT if merge.damaged else 1)
        elif merge.missing:
            listed = ", ".join(merge.missing[:8]) + (f" and {len(merge.missing) - 8} more" if len(merge.missing) > 8 else "")
            say(f"fv: {merge.folder}: not merged yet: {plural(len(merge.missing), 'unit')} missing ({listed}); shards seen: {shards}")
            code = 1
        else:
            failed = f"; {merge.failed} failed" if merge.failed else ""
            if merge.removed:
                say(f"fv: {merge.folder}: {removed_line(merge.removed)}")
            say(f"fv: {merge.folder}: merged shards {shards}{failed} -> {merge.folder / 'grid.png'}")
            code = max(code, 1 if merge.failed else 0)
    return code
