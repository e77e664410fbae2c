"""YAML run specs -> validated job requests. No torch here: a spec is checked before anything heavy runs.

A spec sets defaults for every option at its top and lists jobs; each job names a layer, its
channels, an optional folder name and any per-job overrides. Command-line options override both.
"""

from __future__ import annotations

import difflib
import os
import stat
from pathlib import Path
from typing import Any

import yaml

from fvcli.errors import FvError
from fvcli.specs.requests import JobRequest, atlas_request, check_job_name
from fvcli.specs.limits import MAX_SPEC_BYTES
from fvcli.specs.settings import ATLAS_BY_KEY, EXAMPLES_OPTIONS, OPTIONS_BY_KEY, AtlasSettings, RenderSettings, split
from fvcli.specs.channels import parse_channels
from fvcli.specs.grammar import parse_target
from fvcli.specs.targets import Atom, Target

JOB_KEYS = ("layer", "channels", "target", "name", "kind")
JOB_KINDS = ("render", "activation_atlas")  # a job renders its target's units, or makes an activation atlas
TOP_KEYS = ("jobs", "examples")
FILE_KEYS = ("init",)  # options naming a file, which a spec names relative to its own folder
EXAMPLES_BY_KEY = {option.key: option for option in EXAMPLES_OPTIONS}


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(sorted(known))}"


def _convert(where: str, key: str, value: Any, options: dict = OPTIONS_BY_KEY, spec: Path | None = None) -> Any:
    """`spec`: the spec file, whose folder relative file names (FILE_KEYS) start from."""
    if spec is not None and key in FILE_KEYS and isinstance(value, str) and value.strip().lower() not in ("", "none"):
        named = Path(value).expanduser()
        value = str(named if named.is_absolute() else spec.parent / named)
    try:
        return options[key].convert(value)
    except ValueError as error:
        raise FvError(f"{where}{key}: {error}") from None


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: the base class merges it,
                continue  # and a key of the mapping's own overrides a merged one, as YAML says
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} given twice (first on line {seen[key]})", key_node.start_mark
                    )
                seen[key] = key_node.start_mark.line + 1
            except TypeError:  # an unhashable key: the base class reports it
                continue
        return super().construct_mapping(node, deep)


def _read_spec_text(path: Path) -> str:
    """The spec's text: a regular file of at most MAX_SPEC_BYTES (a spec named /dev/zero, a FIFO or
    a huge file would otherwise be read without end)."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise FvError(f"{path}: not a regular file; expected a YAML spec file")
        with open(path, "rb") as file:
            data = file.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise FvError(f"{path}: spec file not found") from None
    except OSError as error:
        raise FvError(f"{path}: cannot read spec file ({error.strerror or error})") from None
    if len(data) > MAX_SPEC_BYTES:
        raise FvError(f"{path}: spec file larger than {MAX_SPEC_BYTES} bytes (1 MiB); split it into several specs")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise FvError(f"{path}: cannot read spec file (not UTF-8 text: {error.reason} at byte {error.start})") from None


# Values a spec may hold once its aliases are expanded. A 1 KB spec whose aliases nest 9 deep holds
# billions: whatever walks it (a message quoting it, a sidecar) runs out of time and memory.
MAX_SPEC_VALUES = 100_000


def _expanded_size(value: Any, sizes: dict[int, int]) -> int:
    """How many values `value` holds with every alias expanded, each shared object counted once
    (memoized by identity), so that an alias bomb is measured without being expanded."""
    known = sizes.get(id(value))
    if known is not None:
        return known
    if isinstance(value, dict):
        size = 1 + sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in value.items())
    elif isinstance(value, list):
        size = 1 + sum(_expanded_size(v, sizes) for v in value)
    else:
        size = 1
    sizes[id(value)] = size
    return size


def read_yaml(path: Path) -> Any:
    """Parse a YAML file safely; syntax errors become one line with the line and column. A document
    that expands (through aliases) to more than MAX_SPEC_VALUES values is refused."""
    source = _read_spec_text(path)
    try:
        document = yaml.load(source, Loader=_Loader)
        if _expanded_size(document, {}) > MAX_SPEC_VALUES:
            raise FvError(f"{path}: its aliases (*name) expand to more than {MAX_SPEC_VALUES:,} values; write the repeated parts out, or use fewer aliases")
        return document
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        place = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise FvError(f"{path}: {place}invalid YAML: {error.problem or error.context}") from None
    except yaml.YAMLError as error:
        raise FvError(f"{path}: invalid YAML: {error}") from None
    except (ValueError, OverflowError, RecursionError) as error:  # an integer of thousands of digits, deep nesting
        reason = str(error).split(";")[0].splitlines()[0][:200]  # not Python's advice on raising its limit
        raise FvError(f"{path}: invalid YAML: {reason}") from None


def load_spec(path: str | Path, cli: dict[str, Any]) -> tuple[list[JobRequest], dict[str, Any]]:
    """Read a spec into job requests and its whole-run settings, command-line values `cli` winning.

    `cli` holds only the options given on the command line, already converted.
    """
    path = Path(path)
    data = read_yaml(path)
    where = f"{path}: "
    if data is None:
        raise FvError(f"{path}: the spec is empty; expected a mapping with a 'jobs:' list")
    if not isinstance(data, dict):
        raise FvError(f"{path}: expected a mapping of settings and a 'jobs:' list, got {type(data).__name__}")

    known_top = [*OPTIONS_BY_KEY, *TOP_KEYS]
    top: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(key, str) and key.startswith("x-"):  # a place for anchors (`x-defaults: &d`), as compose files have
            continue
        if key not in known_top:
            raise FvError(f"{where}unknown key '{key}'{_suggest(str(key), known_top)}")
        if key == "examples":
            examples_section(path, value)  # checked now, so that `fv render` fails before rendering
        elif key != "jobs":
            top[key] = _convert(where, key, value, spec=path)
    render_top, run = split(top)
    run.update(split(cli)[1])

    jobs = data.get("jobs")
    if jobs is None:
        raise FvError(f"{where}no 'jobs:' list; expected at least one job with a 'layer:'")
    if not isinstance(jobs, list) or not jobs:
        raise FvError(f"{where}jobs: expected a non-empty list of jobs, got {jobs!r}")
    out = run.get("out", cli.get("out", "outputs"))
    atlas_cli = {key: value for key, value in cli.items() if key in ATLAS_BY_KEY}
    requests = [
        _job(path, index, job, render_top, split(cli)[0], out, atlas_cli) for index, job in enumerate(jobs)
    ]
    return requests, run


def _job_target(job: dict, where: str) -> Target:
    """A job names `layer:` (with optional `channels:`) or a `target:` expression, not both."""
    if "target" in job:
        if "layer" in job or "channels" in job:
            raise FvError(f"{where[:-1]}: give either 'target:' or 'layer:' and 'channels:', not both")
        text = job["target"]
        if not isinstance(text, str):
            raise FvError(f"{where}target: expected a target like 'mixed4a:97 - 0.5*mixed4b:3', got {text!r}")
        try:
            return parse_target(text)
        except ValueError as error:
            raise FvError(f"{where}target: {error}") from None
    layer = job.get("layer")
    if layer is None:
        raise FvError(f"{where[:-1]}: missing 'layer:' (the layer to visualize, e.g. mixed4a) or 'target:'")
    if not isinstance(layer, str) or not layer.strip():
        raise FvError(f"{where}layer: expected a layer name like mixed4a, got {layer!r}")
    try:
        channels = parse_channels(job.get("channels"))
    except ValueError as error:
        raise FvError(f"{where}channels: {error}") from None
    return Target(((1.0, Atom("channel", layer.strip(), channels)),))


def _job(
    path: Path, index: int, job: Any, render_top: dict, render_cli: dict, out: str, atlas_cli: dict | None = None
) -> JobRequest:
    where = f"{path}: jobs[{index}]."
    if not isinstance(job, dict):
        raise FvError(f"{path}: jobs[{index}]: expected a mapping with a 'layer:', got {job!r}")
    kind = job.get("kind", "render")
    if kind not in JOB_KINDS:
        close = difflib.get_close_matches(str(kind), JOB_KINDS, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise FvError(f"{where}kind: expected one of {', '.join(JOB_KINDS)}, got {kind!r}{hint}")
    if kind == "activation_atlas":
        return _atlas_job(path, index, job, render_top, render_cli, out, atlas_cli or {})
    unknown_atlas = next((key for key in job if key in ATLAS_BY_KEY), None)
    if unknown_atlas is not None:
        raise FvError(f"{where}{unknown_atlas}: an activation atlas option; add 'kind: activation_atlas' to this job to make one")
    job_keys = [*JOB_KEYS, *(o.key for o in OPTIONS_BY_KEY.values() if o.job)]
    overrides: dict[str, Any] = {}
    for key, value in job.items():
        if key in OPTIONS_BY_KEY and not OPTIONS_BY_KEY[key].job:
            raise FvError(f"{where}{key}: '{key}' applies to the whole run; set it at the top of the spec")
        if key not in job_keys:
            raise FvError(f"{where[:-1]}: unknown key '{key}'{_suggest(str(key), job_keys)}")
        if key not in JOB_KEYS:
            overrides[key] = _convert(where, key, value, spec=path)

    target = _job_target(job, where)
    name = _job_name(job, where)

    values = {**render_top, **overrides, **render_cli}
    settings = RenderSettings(**values)  # built whole: --lr follows --param
    return JobRequest(
        target=target,
        settings=settings,
        out=out,
        name=name,
        origin=f"{path}: jobs[{index}]",
        size_given="size" in values,
    )


ATLAS_JOB_KEYS = ("kind", "layer", "name")


def _atlas_job(path: Path, index: int, job: dict, render_top: dict, render_cli: dict, out: str, atlas_cli: dict) -> JobRequest:
    """A job of `kind: activation_atlas`: a layer, a folder of images and the atlas's options
    (AtlasSettings), with any render option for its icons; `atlas_cli`: atlas options given on the
    command line (converted; `images` already absolute), which win."""
    where = f"{path}: jobs[{index}]."
    known = [*ATLAS_JOB_KEYS, *ATLAS_BY_KEY, *(o.key for o in OPTIONS_BY_KEY.values() if o.job)]
    overrides: dict[str, Any] = {}
    atlas: dict[str, Any] = {}
    for key, value in job.items():
        if key in OPTIONS_BY_KEY and not OPTIONS_BY_KEY[key].job:
            raise FvError(f"{where}{key}: '{key}' applies to the whole run; set it at the top of the spec")
        if key not in known:
            hint = "; an activation atlas names its 'layer:', not channels or a target" if key in ("channels", "target") else _suggest(str(key), known)
            raise FvError(f"{where[:-1]}: unknown key '{key}'{hint}")
        if key in ATLAS_BY_KEY:
            atlas[key] = _convert(where, key, value, ATLAS_BY_KEY)
        elif key not in ATLAS_JOB_KEYS:
            overrides[key] = _convert(where, key, value, spec=path)
    layer = job.get("layer")
    if not isinstance(layer, str) or not layer.strip():
        raise FvError(f"{where}layer: expected the layer to lay out, like conv3, got {layer!r}")
    if "images" not in atlas and "images" not in atlas_cli:
        raise FvError(f"{where[:-1]}: missing 'images:' (a folder of JPEG or PNG images, relative to the spec's folder)")
    if "images" in atlas:
        atlas["images"] = str(_folder(f"{where}images", path.parent, atlas["images"]))
    atlas.update(atlas_cli)
    if "images" in atlas_cli:  # given on the command line: relative to the working folder
        atlas["images"] = str(_folder("--images", Path.cwd(), atlas_cli["images"]))
    name = _job_name(job, where)
    settings = RenderSettings(**{**render_top, **overrides, **render_cli})
    return atlas_request(layer, AtlasSettings(**atlas), settings, out, name, f"{path}: jobs[{index}]")


def _job_name(job: dict, where: str) -> str | None:
    """The job's `name:` (its folder under --out), checked; None when it has none."""
    try:
        return None if job.get("name") is None else check_job_name(job["name"])
    except ValueError as error:
        raise FvError(f"{where}name: {error}") from None


def _folder(where: str, base: Path, value: str) -> Path:
    """An existing folder named relative to `base` (or absolute), made absolute."""
    folder = Path(value).expanduser()
    folder = Path(os.path.abspath(folder if folder.is_absolute() else base / folder))
    if not folder.exists():
        raise FvError(f"{where}: folder not found: {folder}")
    if not folder.is_dir():
        raise FvError(f"{where}: not a folder: {folder}")
    return folder


def load_examples(path: str | Path) -> dict[str, Any] | None:
    """A spec's `examples:` section as converted ExamplesSettings values, or None when it has none."""
    path = Path(path)
    data = read_yaml(path)
    if not isinstance(data, dict) or "examples" not in data:
        return None
    return examples_section(path, data["examples"])


def examples_section(path: Path, value: Any) -> dict[str, Any]:
    """`examples: {images: DIR, k: N, crop: PX}`: dataset examples for the spec's channel jobs.

    `images` is relative to the spec file's folder (or absolute) and must be an existing folder.
    """
    where = f"{path}: examples."
    if not isinstance(value, dict):
        raise FvError(f"{path}: examples: expected a mapping with 'images:' (a folder of images) and maybe 'k:' and 'crop:', got {value!r}")
    known = list(EXAMPLES_BY_KEY)
    converted: dict[str, Any] = {}
    for key, raw in value.items():
        if key not in EXAMPLES_BY_KEY:
            raise FvError(f"{path}: examples: unknown key '{key}'{_suggest(str(key), known)}")
        converted[key] = _convert(where, key, raw, EXAMPLES_BY_KEY)
    if "images" not in converted:
        raise FvError(f"{path}: examples: missing 'images:' (a folder of JPEG or PNG images, relative to the spec's folder)")
    folder = Path(converted["images"]).expanduser()
    folder = Path(os.path.abspath(folder if folder.is_absolute() else path.parent / folder))
    if not folder.exists():
        raise FvError(f"{where}images: folder not found: {folder}")
    if not folder.is_dir():
        raise FvError(f"{where}images: not a folder: {folder}")
    converted["images"] = str(folder)
    return converted
