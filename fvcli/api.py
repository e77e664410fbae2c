"""fv as a library: `render` a model (an nn.Module in memory, or a model name) and get its images,
records and sidecar back; `layers` lists what a target can name, as data.

    import fvcli
    result = fvcli.render(model, "layer3:0-15", steps=256, size=128)
    result          # a notebook shows the grid
    result.images   # one PIL image per unit (a list for --diversity copies and interpolation frames)
    result.records  # per unit: objective, values, status, seed... as grid.json lists them
    result.save("outputs/run")   # the files `fv render --out outputs/run` writes

It is the same code path as `fv render` (the CLI's render command calls `run_targets` in
fvcli.commands too): the
same options with the same names, defaults and checks (fvcli.specs.settings.OPTIONS), the same target
grammar, the same runner and the same files. Bad input raises FvError with the one line the CLI
prints. Torch loads only when a function here is called, so `import fvcli` stays light.
"""

from __future__ import annotations

import difflib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fvcli.commands import collect_examples, convert_options, run_targets
from fvcli.errors import FvError
from fvcli.results import Atlas, Examples, JobResult, LayerExamples, Result
from fvcli.specs.settings import ATLAS_BY_KEY, EXAMPLES_BY_KEY, OPTIONS, OPTIONS_BY_KEY, default_of
from fvcli.specs.targets import Interpolation, Target

if TYPE_CHECKING:
    from torch import nn

__all__ = ["render", "layers", "examples", "activation_atlas", "Atlas", "Result", "JobResult", "Examples", "LayerExamples", "FvError"]


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
        return None if tensor.is_meta else str(tensor.device)  # meta: no device; load_model says why
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
