"""Job requests: a job as the user asked for it (a target under one set of settings, and where it
goes), checked before any model loads, and the folder names made from it. No torch: specs and the
command line make these before torch loads; fvcli.run.jobs resolves them against a model.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from fvcli.errors import FvError
from fvcli.specs.limits import MAX_SIZE
from fvcli.specs.settings import AtlasSettings, RenderSettings
from fvcli.specs.grammar import parse_target
from fvcli.specs.targets import Target, quoted

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_job_name(name: object) -> str:
    """A job name becomes a folder under --out, so it must be one plain path component."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(
            f"expected a folder name of letters, digits, '.', '_' and '-' (no '/' or '..'), got {name!r}"
        )
    return name


MAX_NAME = 80  # characters of a name made from a target; file systems allow 255 bytes a component


def safe_component(text: str) -> str:
    """Any text as one safe path component: runs of other characters become '_'. A long one (a
    direction of 512 values, a sum of 40 terms) keeps a readable prefix and a hash of the whole, so
    that names stay distinct and within every file system's limit; short names are unchanged."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "_"
    if len(cleaned) <= MAX_NAME:
        return cleaned
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"{cleaned[: MAX_NAME - len(digest) - 1].rstrip('._-')}-{digest}"


def model_slug(model: str) -> str:
    """The folder name of a model: `googlenet`, `FILE.FUNC` for a factory `path/FILE.py:FUNC`,
    `timm.NAME` for `timm:NAME`, and `FILE` for a model file `path/FILE.pt`."""
    if ":" in model:
        source, _, func = model.rpartition(":")
        stem = Path(source).stem if source.endswith(".py") else source.rsplit(".", 1)[-1]
        return safe_component(f"{stem}.{func}")
    if "/" in model or "\\" in model or "." in model:
        return safe_component(Path(model).stem)
    return safe_component(model)


@dataclass(frozen=True)
class JobRequest:
    """A job as the user asked for it, before the model is loaded and its names resolved."""

    target: Target
    settings: RenderSettings
    out: str
    name: str | None = None
    origin: str = ""  # where the job came from, for messages
    # An activation atlas job: its target is the icons' objective, one unit per kept cell, read from
    # the cells file that collecting and laying out the samples writes into the job's folder.
    atlas: AtlasSettings | None = None
    # False: no --size was given (nor `size:` in the spec); the model's declared input size, where it
    # declares one, replaces the default once the model is loaded (fvcli.run.planning).
    size_given: bool = True

    def __post_init__(self) -> None:
        # The checks that need two settings; here, where both the command line and specs pass,
        # before any model loads.
        settings = self.settings
        where = f"{self.origin}: " if self.origin else ""
        if settings.save_steps and settings.save_steps[-1] >= settings.steps:
            shown = ",".join(map(str, settings.save_steps))
            raise FvError(
                f"{where}--save-steps {shown}: every step must be below --steps ({settings.steps}), "
                f"and {settings.save_steps[-1]} is not"
            )
        if settings.spectrum is not None and settings.param != "maco":
            raise FvError(f"{where}--spectrum is the fixed magnitude of --param maco; this job's --param is {settings.param}")
        if settings.cppn_upscale > 1 and settings.param != "cppn":
            raise FvError(f"{where}--cppn-upscale renders a CPPN at a larger size; this job's --param is {settings.param}, not cppn")
        if settings.cppn_upscale * settings.size > MAX_SIZE:
            raise FvError(
                f"{where}--cppn-upscale {settings.cppn_upscale}: {settings.cppn_upscale} x {settings.size} px is more "
                f"than {MAX_SIZE} px; at most {MAX_SIZE // settings.size} at --size {settings.size}"
            )
        if not isinstance(settings.transforms, str):  # items as given (a preset scales with --size)
            side = settings.size
            for name, value in settings.transforms:
                if name == "pad":
                    side += 2 * value
                elif name == "jitter" and value >= side:  # it would crop the whole canvas away: every unit fails
                    raise FvError(
                        f"{where}--transforms: jitter={value} crops {value} px from a canvas of {side} px (--size "
                        f"{settings.size} and the pads before it); a jitter must be below {side} px"
                    )
                elif name == "jitter":
                    side -= value
        if settings.alpha and settings.param == "maco":
            raise FvError(f"{where}--alpha: maco holds a fixed magnitude spectrum, which an opacity plane would not have; use --param fourier, pixel, lowres, laplacian or cppn")
        if settings.init and settings.param in ("maco", "cppn"):
            raise FvError(f"{where}--init: the {settings.param} parameterization cannot start from a photo; use fourier, pixel, lowres, laplacian")
        if settings.blur_every and settings.param in ("maco", "cppn"):
            why = "keeps its magnitude spectrum fixed" if settings.param == "maco" else "makes its image with a network, not pixels"
            raise FvError(f"{where}--blur-every: {settings.param} {why}, so it cannot be blurred; use the --blur penalty instead")

    @property
    def label(self) -> str:
        """The layer of a plain `LAYER:CHANNELS` job, else the target as text."""
        simple = self.target.channels_of_layer
        return simple.layer if simple is not None else self.target.describe()

    @property
    def atlas_layer(self) -> str | None:
        """The layer of an activation atlas job, else None."""
        return self.target.atoms[0].layer if self.atlas is not None else None

    @property
    def folder(self) -> Path:
        if self.name:
            return Path(self.out) / self.name
        if self.atlas is not None:
            return Path(self.out) / model_slug(self.settings.model) / f"atlas-{safe_component(self.atlas_layer)}"
        label = safe_component(self.label)
        if self.label.startswith("-"):
            label = "neg_" + label.lstrip("-_")  # a folder named -x reads as an option in a shell
        return Path(self.out) / model_slug(self.settings.model) / label


CELLS_FILE = "atlas-cells.npy"  # an activation atlas's icon directions, one row a kept cell


def atlas_request(
    layer: str, atlas: AtlasSettings, settings: RenderSettings, out: str, name: str | None = None, origin: str = ""
) -> JobRequest:
    """An activation atlas job: the icons of the cells of `layer`'s layout, as the ordinary units of
    `direction_neuron(LAYER, 'atlas-cells.npy', cossim_pow=P)`, one unit a row of the cells file
    (written into the job's folder before the render, and read from there: shards with --out
    written differently, ./out and /abs/out, render the same units)."""
    where = f"{origin}: " if origin else ""
    if not isinstance(layer, str) or not layer.strip():
        raise FvError(f"{where}layer: expected a layer name like conv3, got {layer!r}")
    try:
        target = parse_target(f"direction_neuron({layer.strip()}, {quoted(CELLS_FILE)}, cossim_pow={atlas.cossim_pow:g})")
    except ValueError as error:
        raise FvError(f"{where}layer: {error}") from None
    return JobRequest(target, settings, out, name, origin, atlas)
