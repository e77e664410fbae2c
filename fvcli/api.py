"""fv as a library: `render` a model (an nn.Module in memory, or a model name) and get its images,
records and sidecar back; `layers` lists what a target can name, as data.

    import fvcli
    result = fvcli.render(model, "layer3:0-15", steps=256, size=128)
    result          # a notebook shows the grid
    result.images   # one PIL image per unit (a list for --diversity copies and interpolation frames)
    result.records  # per unit: objective, values, status, seed... as grid.json lists them
    result.save("outputs/run")   # the files `fv render --out outputs/run` writes

It is the same code path as `fv render` (the CLI's render command calls `run_targets` below): the
same options with the same names, defaults and checks (fvcli.specs.settings.OPTIONS), the same target
grammar, the same runner and the same files. Bad input raises FvError with the one line the CLI
prints. Torch loads only when a function here is called, so `import fvcli` stays light.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from fvcli.run import distributed
from fvcli.errors import EXIT_BAD_INPUT, FvError, WriteError
from fvcli.specs.requests import JobRequest
from fvcli.specs.limits import MAX_UNITS
from fvcli.messages import plural, sayer
from fvcli.results import Atlas, Examples, JobResult, LayerExamples, Result
from fvcli.specs.settings import ATLAS_BY_KEY, EXAMPLES_BY_KEY, OPTIONS, OPTIONS_BY_KEY, RenderSettings, RunSettings, default_of, split
from fvcli.specs.spec import load_examples, load_spec
from fvcli.specs.targets import Interpolation, Target, parse_target

if TYPE_CHECKING:
    from torch import nn

__all__ = ["render", "layers", "examples", "activation_atlas", "Atlas", "Result", "JobResult", "Examples", "LayerExamples", "FvError"]


# ---- what the CLI and the API share ----


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
        JobRequest(target=target, settings=settings, out=out, origin=f"target {texts}")
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
    atlases = _atlas_jobs(requests, checked, say, modules)  # checked before anything is collected
    if run_settings.dry_run:
        lines = [job.plan() for job in atlases]
        ready = {job.request for job in atlases if job.ready(job.digest()) is not None}
        requests = [r for r in requests if r.atlas is None or r in ready]  # the others' cells are not made yet
        if not requests:
            for line in lines:
                echo(line)
            return Outcome(0)
    else:
        lines = []
        for job in atlases:
            job.prepare()  # collect and lay out, or reuse the layout written for the same digest
    run = Run(requests, checked, say, modules=modules)
    # No more workers than units: a worker without units would only load the model.
    devices = devices[: max(1, sum(len(job.units) for job in run.jobs))]
    if run_settings.dry_run:
        for line in [*lines, *run.plan(), *(line for collection in examples for line in collection.plan())]:
            echo(line)
        return Outcome(0)

    def assemble_atlases() -> None:
        """Activation atlases whose icons are all rendered: atlas.png and atlas.json."""
        if atlases:
            from fvcli.atlas.activation_atlas import assemble_folder

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

    # One run at a time a job folder; the shards of a run share it (fvcli.run.locks).
    with FolderLocks([job.folder for job in run.jobs], run_settings.shard):
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


def _atlas_jobs(requests: list[JobRequest], run_settings: RunSettings, say, modules: dict | None) -> list:
    """The activation atlas jobs among the requests, validated (model, layer, images, counts) before
    any of them collects anything."""
    wanted = [r for r in requests if r.atlas is not None]
    if not wanted:
        return []
    from fvcli.atlas.activation_atlas import AtlasJob

    models: dict = {}
    jobs = [AtlasJob(r, run_settings, say, modules, models) for r in wanted]
    folders = [job.request.folder for job in jobs]
    if len(set(folders)) < len(folders):
        twice = next(f for f in folders if folders.count(f) > 1)
        raise FvError(f"two activation atlas jobs write into {twice}; give one of them a name: of its own")
    for job in jobs:
        if not run_settings.dry_run and job.ready(job.digest()) is None:
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


# ---- the API ----


def _type_of(value: Any) -> str:
    """A wrong argument in a message: short values as written, others by their type."""
    text = repr(value)
    return text if len(text) <= 40 and isinstance(value, (int, float, str, bytes, type(None))) else f"a {type(value).__name__}"


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    try:
        return shell is not None and type(shell.get_ipython()).__name__ == "ZMQInteractiveShell"
    except Exception:
        return False


def _module_device(module: nn.Module) -> str | None:
    for tensor in (*module.parameters(), *module.buffers()):
        return str(tensor.device)
    return None


def _texts(targets: tuple) -> tuple:
    """Targets as text: objectives built in Python (fvcli.channel(...) ...) print as theirs."""
    return tuple(str(t) if isinstance(t, (Target, Interpolation)) else t for t in targets)


def _call_options(
    function: str, model: Any, targets: tuple, out: Any, quiet: bool, progress: bool | None, options: dict, by_key: dict
) -> tuple[dict[str, Any], dict | None, str | None]:
    """What `render` and `examples` do with their arguments: check the options' names and values
    as the CLI does, take a model object as it is (on its own device unless `device=`), and pick a
    temporary output folder when `out` is None. Returns (converted options, model objects by name,
    the temporary folder to remove afterwards or None)."""
    model_name = options.pop("model_name", None)
    unknown = [key for key in options if key not in by_key or key == "model"]
    if unknown:
        close = difflib.get_close_matches(unknown[0], [key for key in by_key if key != "model"], n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        command = "fv render" if function == "render" else "fv examples"
        raise FvError(f"{function}() got an unknown option {unknown[0]!r}{hint} (the options of {command}, with '_' for '-')")
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise FvError(f"{function}(): out: expected a folder path, got {_type_of(out)}")
    if not targets:
        raise FvError(f"{function}() needs a target, such as 'mixed4a:0-15' or '4:0-3'")
    for target in targets:
        if not isinstance(target, str):
            raise FvError(f"target: expected text such as 'mixed4a:0-15' or an objective such as fvcli.channel('mixed4a', 97), got {target!r}")
    modules = None
    if isinstance(model, str):
        name = model
    else:
        from torch import nn

        if not isinstance(model, nn.Module):
            raise FvError(f"--model: expected an nn.Module or a model name, got {type(model).__name__}")
        name = model_name or type(model).__name__
        modules = {name: model}
        if options.get("device") is None:  # its own device
            options["device"] = _module_device(model)
    if progress is None:
        progress = _in_notebook() or sys.stderr.isatty()
    given = convert_options({**options, "model": name, "quiet": quiet, "progress": progress}, by_key)
    temporary = None
    if out is None:
        temporary = tempfile.mkdtemp(prefix="fv-")
        given["out"] = temporary
    else:
        given["out"] = convert_options({"out": str(out)}, by_key)["out"]
    return given, modules, temporary


def render(
    model: nn.Module | str = "googlenet",
    *targets: str,
    out: str | Path | None = None,
    quiet: bool = True,
    progress: bool | None = None,
    **options: Any,
) -> Result:
    """Render feature visualizations of `targets` (the target grammar of `fv render`, or spec
    files) of `model`: an nn.Module in memory, or a model name as `--model` takes it.

    A model object is rendered as it is, on its own device (or `device=`): fv works on a copy of
    it, in eval mode, so the module comes back unchanged (mode, device, dtype, memory format,
    parameters, hooks). Its normalization is `normalize=` (default: none, as for a factory);
    `weights=random` re-initializes the copy. It is named `model_name=` in folders and sidecars
    (default: its class name).

    Keyword arguments are the options of `fv render` with the same names and defaults (listed
    below), checked by the same converters: `steps=256`, `size=128`, `normalize="imagenet"`,
    `transforms="none"`, `device="cuda"`... Differences: `quiet=True` by default (no messages;
    `quiet=False` prints what `fv render` prints); the progress bar shows in a notebook or a
    terminal (`progress=False` hides it); `out=None` renders into a temporary folder that is
    removed afterwards (`result.save(folder)` writes the files), while `out=FOLDER` writes there
    as `fv render --out FOLDER` does, resuming what is already rendered. Torchrun and SLURM
    environments are not read: the API renders in this process (`shard=` still works).

    Returns a Result; bad input raises FvError with the line `fv render` prints. A render stopped
    by Ctrl-C raises KeyboardInterrupt (finished units are kept under `out`); a failed write raises
    WriteError. Units that fail are reported in their records (status `failed`), as in the CLI.
    """
    targets = _texts(targets)
    given, modules, temporary = _call_options("render", model, targets, out, quiet, progress, options, OPTIONS_BY_KEY)
    try:
        outcome = run_targets(list(targets), given, modules=modules, launched=False)
        if outcome.write_error is not None:
            raise outcome.write_error
        if outcome.stopped_by is not None:
            raise KeyboardInterrupt
        if outcome.run is None:  # a dry run renders nothing
            return Result([], 0)
        root = Path(given["out"])
        jobs = [JobResult.read(root, job.folder) for job in outcome.run.jobs]
        return Result([job for job in jobs if job is not None], outcome.code, out=root if temporary is None else None)
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


render.__doc__ += "\n    Options (as `fv render --help` lists them):\n\n" + "\n".join(
    f"    {option.key} = {default_of(option.key)!r}: {option.help}" + (f" (default: {option.default_text})" if option.key == "lr" else "")
    for option in OPTIONS if option.key != "model"
)


def examples(
    model: nn.Module | str = "googlenet",
    *targets: str,
    images: str | Path | None = None,
    out: str | Path | None = None,
    quiet: bool = True,
    progress: bool | None = None,
    **options: Any,
) -> Examples:
    """Dataset examples of `targets` (LAYER or LAYER:CHANNELS, or spec files), as `fv examples`
    collects them: per channel, the images of the folder `images` that excite it most (`top`) and
    suppress it most (`bottom`), each with its value, position and crop box.

        ex = fvcli.examples(model, "layer3:0-15", images="photos/", k=8)
        ex.records[0]["top"][0]   # {"path": ..., "value": ..., "position": [y, x], "box": [...]}
        ex.strip(5)               # channel 5's top strip (PIL); ex.strip(5, bottom=True)
        ex.crops(5)               # its top images, each cropped around where it fired most
        ex.save("outputs/run")    # the files `fv examples --out outputs/run` writes

    `model` is taken as `render` takes it (an nn.Module, left unchanged, or a model name).
    Keyword arguments are the options of `fv examples` (`k`, `crop`, `weights`, `normalize`,
    `device`, `batch_size`, `force`...). `out=None` collects into a temporary folder that is
    removed afterwards; `out=FOLDER` writes there and reuses what is already collected.
    Bad input raises FvError with the line `fv examples` prints.
    """
    if images is not None:
        if not isinstance(images, (str, os.PathLike)):
            raise FvError(f"examples(): images: expected a folder path, got {_type_of(images)}")
        options["images"] = os.fspath(images)
    targets = _texts(targets)
    given, modules, temporary = _call_options("examples", model, targets, out, quiet, progress, options, EXAMPLES_BY_KEY)
    try:
        collections, run_settings = collect_examples(list(targets), given, modules)
        if run_settings.dry_run:
            return Examples([])
        for collection in collections:
            code = collection.execute()
            if code:  # only a signal stops a collection: as render does
                raise KeyboardInterrupt
        root = Path(given["out"])
        layers = [LayerExamples.read(root, job.folder) for c in collections for job in c.jobs]
        return Examples(layers, out=root if temporary is None else None)
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


def activation_atlas(
    model: nn.Module | str,
    layer: str,
    images: str | Path,
    out: str | Path | None = None,
    quiet: bool = True,
    progress: bool | None = None,
    **options: Any,
) -> Atlas:
    """An activation atlas of `layer` from the images of the folder `images`, as `fv render
    --activation-atlas LAYER --images DIR` makes it, returned as data: the picture, the cells
    (position, count, top channels, samples, objective, average vector), the icons and the layout.

        atlas = fvcli.activation_atlas(model, "conv3", "photos/", grid=10, samples=8, steps=128)
        atlas.image              # PIL: each icon in its cell
        atlas.cells[0]["count"]  # samples in the first kept cell; ["vector"]: their average
        atlas.layout             # (N, 2): every sample's place in [0, 1]^2

    Keyword arguments: the options of `fv render` (for the icons: steps, size, transforms, seed...)
    and of the atlas (grid, samples, min_count, whiten, cossim_pow, n_neighbors, min_dist,
    class_target, class_share). `model` and `out` as for `render`: out=None works in a temporary
    folder; out=FOLDER writes there and reuses the layout and icons already made.
    """
    by_key = {**OPTIONS_BY_KEY, **ATLAS_BY_KEY}
    options["images"] = str(images)
    given, modules, temporary = _call_options("render", model, (layer,), out, quiet, progress, options, by_key)
    try:
        outcome = run_targets([], given, modules=modules, launched=False, atlas_layer=layer)
        if outcome.write_error is not None:
            raise outcome.write_error
        if outcome.stopped_by is not None:
            raise KeyboardInterrupt
        if outcome.run is None:
            raise FvError("activation_atlas(): a dry run makes no atlas")
        root = Path(given["out"])
        folder = next(job.folder for job in outcome.run.jobs if job.request.atlas is not None)
        atlas = Atlas.read(root, folder)
        if atlas is None:
            raise FvError(f"{folder}: the atlas was not assembled (some icons failed; see grid.json)")
        atlas.out = root if temporary is None else None
        return atlas
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


def layers(
    model: nn.Module | str = "googlenet",
    pattern: str | None = None,
    weights: str | None = None,
    size: int = 128,
) -> list[dict]:
    """Every layer a target can name, in forward order, as `fv layers --json` lists them: dicts of
    name, alias, shape, layout, channels and pre_relu_of (for a pre-ReLU twin, `LAYER_pre_relu`,
    the layer whose ReLUs it feeds; else None). `pattern` filters by glob on the name or alias.

    `model`: an nn.Module (left unchanged: fv probes a copy) or a model name. `weights`: for a
    name, random by default (shapes do not depend on weights); a model object keeps its own.
    """
    return layer_listing(model, pattern, weights, size)[1]


def layer_listing(model: Any, pattern: str | None, weights: str | None, size: Any) -> tuple[int, list[dict]]:
    """(the probe size used, the rows) for `fv layers` and `layers`."""
    import fnmatch

    from fvcli.errors import raised
    from fvcli.models.fixed_size import fixed_size
    from fvcli.models.layer_keys import list_layers
    from fvcli.models.registry import load_model

    size = convert_options({"size": size})["size"]  # the bounds of fv render's --size
    for what, value in (("pattern", pattern), ("weights", weights)):
        if value is not None and not isinstance(value, str):
            raise FvError(f"layers(): {what}: expected text, got {_type_of(value)}")
    from torch import nn

    modules = None
    if isinstance(model, str):
        name = model
    elif isinstance(model, nn.Module):
        name, modules = type(model).__name__, model
    else:
        raise FvError(f"--model: expected an nn.Module or a model name, got {_type_of(model)}")
    loaded = load_model(name, weights or ("random" if modules is None else "default"), 0, quiet=True, module=modules)
    device = _module_device(loaded.module) or "cpu"
    try:
        infos = list_layers(loaded.module, size, device)
    except (Exception, SystemExit) as error:  # the model's own code: one line, whatever it does
        fixed = fixed_size(loaded.module, size, device) if loaded.native_size is None else None
        if fixed is not None and fixed.size is not None:  # a LeNet: list it at the side it takes
            loaded.native_size = fixed.size
        elif fixed is not None:
            raise FvError(f"model {fixed.describe(name)}") from None
        if loaded.native_size is None or loaded.native_size == size:
            raise FvError(f"{name} cannot run on a {size} px image (it {raised(error)}); try a larger --size") from None
        size = loaded.native_size
        try:
            infos = list_layers(loaded.module, size, device)
        except (Exception, SystemExit) as error:
            raise FvError(f"model {name}: forward {raised(error)}") from None
    alias_of = {path: alias for alias, path in loaded.aliases.items()}
    rows = []
    for info in infos:
        alias = alias_of.get(info.key)
        if info.pre_relu_of is not None and info.pre_relu_of in alias_of:  # mixed4a_pre_relu for inception4a_pre_relu
            alias = alias_of[info.pre_relu_of] + info.key[len(info.pre_relu_of):]
        if pattern is not None and not (fnmatch.fnmatch(info.key, pattern) or (alias and fnmatch.fnmatch(alias, pattern))):
            continue
        layout = info.layout
        rows.append({
            "name": info.key,
            "alias": alias,
            "shape": info.output,
            "layout": layout.kind if layout else None,
            "channels": layout.channels if layout else None,
            "pre_relu_of": info.pre_relu_of,
        })
    return size, rows
