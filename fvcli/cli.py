"""The command line: parse, validate, call the runner, and turn errors into one line and an exit status.

Options come from fvcli.settings.OPTIONS, the same table the spec files are checked against.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import sys
from typing import Any

import click

from fvcli import __version__
from fvcli.errors import EXIT_BAD_INPUT, FvError
from fvcli.jobs import JobRequest
from fvcli.spec import load_spec
from fvcli.settings import OPTIONS, OPTIONS_BY_KEY, RenderSettings, RunSettings, default_of, split
from fvcli.targets import Target, parse_target

EXIT_INTERRUPTED = 130

MAIN_HELP = """\
fv renders feature visualizations: images optimized to excite a unit (a channel) of a vision
model, after the Distill article "Feature Visualization" (Olah, Mordvintsev, Schubert, 2017).

\b
  fv render mixed4a:0-511                  every channel 0..511 of GoogLeNet's mixed4a
  fv render mixed4a:3,7,100-107 --steps 256 --size 160 --out outputs/try
  fv render configs/quick.yaml             a YAML run spec with one or more jobs
  fv render mixed4a:0-3 --weights random   offline: randomly initialized weights

\b
Exit statuses:
  0    every unit rendered (units that end dead are flagged in the sidecar)
  1    some units failed; the others were still written
  2    bad input; nothing was rendered
  130  stopped by Ctrl-C (SIGINT) after a step; finished units are kept
  143  stopped by SIGTERM after a step; finished units are kept
Running the same command again renders only what is missing (--force: all).
"""


def _option_decorator(option) -> Any:
    """A click option for a settings.Option; every default is None, so that only given values count."""
    name = option.cli_name
    if option.flag and option.negatable:
        return click.option(f"{name}/--no-{name[2:]}", option.key, default=None, help=option.help)
    if option.flag:
        return click.option(name, f"-{option.key[0]}", option.key, is_flag=True, default=None, help=option.help)
    default = default_of(option.key)
    help_text = f"{option.help}  [default: {'auto' if default is None else default}]"
    return click.option(name, option.key, default=None, metavar=option.metavar, help=help_text)


def _with_options(command):
    for option in reversed(OPTIONS):
        command = _option_decorator(option)(command)
    return command


def _converted(values: dict[str, Any]) -> dict[str, Any]:
    """The options given on the command line, converted; defaults are left to the spec and settings."""
    given: dict[str, Any] = {}
    for key, value in values.items():
        if value is None or (OPTIONS_BY_KEY[key].flag and not OPTIONS_BY_KEY[key].negatable and value is False):
            continue
        try:
            given[key] = OPTIONS_BY_KEY[key].convert(value)
        except ValueError as error:
            raise FvError(f"{OPTIONS_BY_KEY[key].cli_name}: {error}") from None
    return given


def _target_requests(targets: list[tuple[str, Target]], cli: dict[str, Any]) -> list[JobRequest]:
    """Targets of the command line, one job each; plain channel targets of one layer merge."""
    settings = dataclasses.replace(RenderSettings(), **split(cli)[0])
    out = cli.get("out", default_of("out"))
    jobs: dict[str, tuple[str, Target]] = {}
    for text, target in targets:
        simple = target.simple
        if simple is None or simple.kind != "channel":
            jobs[f"#{len(jobs)}"] = (text, target)
            continue
        if simple.layer in jobs:
            texts, merged = jobs[simple.layer]
            old = merged.simple.channels
            channels = None if old is None or simple.channels is None else tuple(sorted({*old, *simple.channels}))
            jobs[simple.layer] = (f"{texts} {text}", Target(((1.0, dataclasses.replace(simple, channels=channels)),)))
        else:
            jobs[simple.layer] = (text, target)
    return [
        JobRequest(target=target, settings=settings, out=out, origin=f"target {texts}")
        for texts, target in jobs.values()
    ]


def _slurm_shard() -> tuple[int, int]:
    """Under a SLURM job array, this task's slice: its place among the array's tasks."""
    try:
        task = int(os.environ["SLURM_ARRAY_TASK_ID"]) - int(os.environ.get("SLURM_ARRAY_TASK_MIN", "0"))
        count = int(os.environ["SLURM_ARRAY_TASK_COUNT"])
    except (KeyError, ValueError):
        raise FvError("SLURM_ARRAY_TASK_ID is set, but SLURM_ARRAY_TASK_COUNT is missing or not a number; pass --shard I/N") from None
    if not 0 <= task < count:
        raise FvError(f"SLURM array task {task} is outside the array's {count} tasks; pass --shard I/N")
    return task, count


def _say(quiet: bool):
    def say(message: str) -> None:
        if not quiet:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stderr)

    return say


class FvGroup(click.Group):
    """A click group whose every error is one line on stderr with a documented exit status."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except FvError as error:
            click.echo(f"fv: error: {error}", err=True)
            code = EXIT_BAD_INPUT
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
        except (KeyboardInterrupt, click.Abort):
            click.echo("fv: interrupted", err=True)
            code = EXIT_INTERRUPTED
        if standalone_mode:
            sys.exit(code or 0)
        return code or 0


@click.group(cls=FvGroup, help=MAIN_HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", "-V", prog_name="fv", message="%(prog)s %(version)s")
def cli() -> None:
    pass


@cli.command(context_settings={"max_content_width": 100})
@click.argument("targets", nargs=-1, required=True, metavar="TARGET|SPEC.yaml...")
@_with_options
def render(targets: tuple[str, ...], **values: Any) -> int:
    """Render feature visualizations of TARGETs and of the jobs of SPEC files.

    \b
    A TARGET is LAYER:CHANNELS, CHANNELS being N, A-B, a comma list of those, or
    nothing for every channel (mixed4a:0-511, mixed4a:3,7,100-107, mixed4a), or an
    objective expression (quoted; after -- when it starts with '-'):
      'mixed4a:97 - 0.5*mixed4b:3'   'neuron(mixed4a:0-15)'   'layer(mixed4c)'
      'logit:goldfish'   'direction(mixed4a, random:8)'   -- -mixed4a:97
      'interpolate(mixed4a:97, mixed4a:143, frames=6)'
    README.md gives the grammar. Options given here override the spec files. Each
    job writes one PNG per unit, grid.png and grid.json into OUT/MODEL/LAYER/ (or
    OUT/NAME/ for a named spec job).
    """
    cli_values = _converted(values)
    requests: list[JobRequest] = []
    run_values: dict[str, Any] = {}
    plain: list[tuple[str, Target]] = []
    for argument in targets:
        if argument.lower().endswith((".yaml", ".yml")):
            spec_requests, spec_run = load_spec(argument, cli_values)
            for key, value in spec_run.items():
                if key in run_values and run_values[key] != value:
                    raise FvError(f"{argument}: sets {key} to {value!r}, another spec to {run_values[key]!r}; pass --{key.replace('_', '-')}")
                run_values[key] = value
            requests.extend(spec_requests)
        else:
            try:
                plain.append((argument, parse_target(argument)))
            except ValueError as error:
                raise FvError(f"target: {error}") from None
    requests.extend(_target_requests(plain, cli_values))
    run_settings = dataclasses.replace(RunSettings(), **{**run_values, **split(cli_values)[1]})
    if run_settings.shard is None and "SLURM_ARRAY_TASK_ID" in os.environ:
        run_settings = dataclasses.replace(run_settings, shard=_slurm_shard())

    from fvcli.runner import Run  # torch loads here, after the cheap checks

    run = Run(requests, run_settings, _say(run_settings.quiet))
    if run_settings.dry_run:
        for line in run.plan():
            click.echo(line)
        return 0
    return run.execute().exit_code


@cli.command()
@click.argument("pattern", required=False)
def models(pattern: str | None) -> int:
    """List the model names fv knows, optionally filtered by a glob (e.g. 'resnet*').

    \b
    Also usable: timm:NAME (with timm installed), and factories FILE.py:FUNC or
    package.module:FUNC returning an nn.Module.
    """
    from fvcli.models import known_models, timm_models

    for name in [*known_models(), *timm_models()]:
        if pattern is None or fnmatch.fnmatch(name, pattern):
            click.echo(name)
    return 0


@cli.command()
@click.option("--model", "model", default=default_of("model"), show_default=True, metavar="NAME", help=OPTIONS_BY_KEY["model"].help)
@click.option("--weights", default="random", show_default=True, metavar="W", help="Weights to load; shapes do not depend on them, so random works offline.")
@click.option("--size", default=128, show_default=True, metavar="PX", help="Side of the probe image (models that take one size only use theirs).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.argument("pattern", required=False)
def layers(model: str, weights: str, size: int, as_json: bool, pattern: str | None) -> int:
    """List every layer a target can name, in forward order, with its output shape and channels.

    One forward pass on a random image; PATTERN filters by glob on the name or its alias.
    """
    import json

    from fvcli.layers import list_layers
    from fvcli.models import load_model

    loaded = load_model(model, weights, 0, quiet=True)
    try:
        infos = list_layers(loaded.module, size)
    except Exception as error:
        if loaded.native_size is None or loaded.native_size == size:
            raise FvError(f"{model} cannot run on a {size} px image ({str(error).splitlines()[0][:200]}); try a larger --size") from None
        size = loaded.native_size
        infos = list_layers(loaded.module, size)
    alias_of = {path: alias for alias, path in loaded.aliases.items()}
    rows = []
    for info in infos:
        alias = alias_of.get(info.key)
        if pattern is not None and not (fnmatch.fnmatch(info.key, pattern) or (alias and fnmatch.fnmatch(alias, pattern))):
            continue
        layout = info.layout
        rows.append({
            "name": info.key,
            "alias": alias,
            "shape": info.output,
            "layout": layout.kind if layout else None,
            "channels": layout.channels if layout else None,
        })
    if as_json:
        click.echo(json.dumps({"model": model, "size": size, "layers": rows}, indent=2))
        return 0
    width = max([len(r["name"]) for r in rows] + [5])
    alias_width = max([len(r["alias"] or "") for r in rows] + [5])
    click.echo(f"{'layer':<{width}}  {'alias':<{alias_width}}  {'channels':>8}  {'layout':<6}  shape ({size} px)")
    for r in rows:
        channels = "-" if r["channels"] is None else r["channels"]
        click.echo(f"{r['name']:<{width}}  {r['alias'] or '':<{alias_width}}  {channels:>8}  {r['layout'] or '-':<6}  {r['shape']}")
    return 0


def main() -> None:
    """Entry point of the `fv` script and `python -m fvcli`."""
    cli.main(prog_name="fv")
