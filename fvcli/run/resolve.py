"""Binding a target to a model: one objective per unit, with every name checked against the model.

Layer names become module paths and layouts (from a probe forward pass), class names become
indices, direction vectors become tensors of the layer's width (a file of K directions, one unit
each), and a caricature's or inversion's photo becomes its activations at the layer (one forward
pass, without gradients). Problems are FvErrors that say what the model has instead.
With `pre_relu: auto`, a channel or neuron a target minimizes reads its layer's pre-ReLU twin where
there is one (`-mixed4a:97` reads mixed4a_pre_relu), as the article's negative images do: after a
ReLU, a channel at 0 has nothing left to lower.

The files targets read (direction files, photos) are fvcli.run.target_files': taken as written
(relative to the working directory), read once per job, their sha256 kept with the objectives.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from fvcli.errors import FvError
from fvcli.run.jobs import stable_seed
from fvcli.run.target_files import DirectionFiles, Forward, Photos
from fvcli.specs.requests import safe_component
from fvcli.models.layer_keys import OUTPUT_NAME, LayerError, ResolvedLayer, infer_layout, input_channels, list_layers, split_key
from fvcli.models.prerelu import SUFFIX, twin_base
from fvcli.specs.limits import MAX_UNITS
from fvcli.messages import plural
from fvcli.models.registry import LoadedModel
from fvcli.optvis.objectives import CARICATURE_COSSIM_POW, OUTPUT, Caricature, Direction, Inversion, LayerEnergy, Logit, Objective, channel, neuron
from fvcli.specs.settings import RenderSettings
from fvcli.specs.targets import Atom, Interpolation, Target

# A layer probe: layer key -> (output shape for one image, input size the model needs or None).
Probe = Callable[[str], tuple[tuple[int, ...], int | None]]


@dataclass(frozen=True)
class ResolvedUnit:
    key: int | None  # the varying channel or random-direction index; None for a one-unit target
    objectives: tuple[Objective, ...]  # one per image: one, or an interpolation's frames
    canonical: str  # the unit's target with module paths: what its seed derives from
    description: str
    shared: bool = False  # the images share a low-resolution image (interpolation frames)
    by_direction: bool = False  # `key` indexes directions (random:K, a direction file's rows), not channels


class Resolver:
    """Resolves the targets of one job (one model, one image size, one set of settings).

    `forward` runs the model on photos, for caricatures and inversions (not needed otherwise).
    `files_in`: the folder relative direction files lie in, when not the working folder."""

    def __init__(
        self, model: LoadedModel, settings: RenderSettings, probe: Probe, forward: Forward | None = None,
        files_in: Path | None = None,
    ):
        self.model, self.settings, self.probe, self.forward = model, settings, probe, forward
        self.input_size: int | None = None
        self.layers: dict[str, ResolvedLayer] = {}
        self.read_as: dict[str, str] = {}  # layer names read as their pre-ReLU twins' (pre_relu: auto)
        self._twins: dict[str, str | None] = {}
        self.directions = DirectionFiles(files_in)
        self.photos = Photos(settings.size, input_channels(model.module), forward)

    def _fixed(self, size: int | None) -> None:
        """Keep the one input size a probed layer needs: a layer that takes any size (a diversity
        layer read after a fixed-size model's logits) must not undo what the logits need."""
        if size is not None:
            self.input_size = size

    def positions_before(self, layer: ResolvedLayer) -> ResolvedLayer | None:
        """The last layer with positions that the forward pass enters before `layer`: where
        --diversity compares styles when the job's layer is flat (a classifier's logits), as the
        article compares them in a lower layer. None when there is none."""
        path = split_key(layer.key)[0]
        last = None
        for info in list_layers(self.model.module, self.input_size or self.settings.size):
            if info.key == path or info.key.startswith(f"{path}@") or (path == "" and info.key.startswith(f"{OUTPUT_NAME}@")):
                break
            if info.layout is not None and info.layout.kind != "flat" and info.pre_relu_of is None and "@" not in info.key:
                last = info.key
        return None if last is None else self.layer(last)

    # ---- names ----

    def layer(self, name: str) -> ResolvedLayer:
        if name not in self.layers:
            path, element = split_key(name)
            key = self.model.resolve_layer(path) + (f"@{element}" if element is not None else "")
            try:
                shape, fixed = self.probe(key)
            except LayerError as error:  # a tuple or dict output, or a missing element
                raise FvError(str(error)) from None
            self._fixed(fixed)
            try:
                layout = infer_layout(shape)
            except ValueError as error:
                raise FvError(f"layer {name}: {error}") from None
            self.layers[name] = ResolvedLayer(name, key, tuple(shape), layout)
        return self.layers[name]

    def twin(self, name: str) -> str | None:
        """The name of a layer's pre-ReLU twin (`mixed4a` -> `mixed4a_pre_relu`), or None when the
        layer has none: its output is not a ReLU's, it is an element of a tuple, or a twin itself."""
        if name not in self._twins:
            key = self.layer(name).key  # what is wrong with the name itself is said here
            modules = set(self.model.layer_names())
            twin = None
            if split_key(name)[1] is None and twin_base(modules, key) is None:
                try:
                    candidate = self.layer(name + SUFFIX)
                except FvError:  # the probe found no ReLU at the layer's output
                    candidate = None
                if candidate is not None and twin_base(modules, candidate.key) is not None:  # not a module of that name
                    twin = name + SUFFIX
            self._twins[name] = twin
        return self._twins[name]

    def output(self, atom: Atom | None = None) -> ResolvedLayer:
        """The model's own output, or the element of it that `atom` (a logit or probability) names."""
        element = atom.element if atom is not None else None
        key = OUTPUT if element is None else f"{OUTPUT}@{element}"
        if key not in self.layers:
            try:
                shape, fixed = self.probe(key)
            except LayerError as error:
                raise FvError(_output_hint(error, atom)) from None
            self._fixed(fixed)
            if len(shape) != 2:
                what = self.model.name if element is None else f"{self.model.name}'s element @{element}"
                raise FvError(f"logit and probability need a model whose output is (N, classes); {what} gives {tuple(shape)}")
            name = OUTPUT_NAME if element is None else f"{OUTPUT_NAME}@{element}"
            self.layers[key] = ResolvedLayer(name, key, tuple(shape), infer_layout(shape))
        return self.layers[key]

    def class_index(self, atom: Atom) -> int:
        """The class index of a logit or probability atom's label, checked against the model's output."""
        label = atom.label
        classes = self.output(atom).layout.channels
        if isinstance(label, int):
            if label >= classes:
                raise FvError(f"class {label} is out of range: {self.model.name} has {classes} classes (0-{classes - 1})")
            return label
        names = self.model.categories
        if not names or len(names) != classes:
            raise FvError(f"{self.model.name} has no class names fv knows; name the class by its index (0-{classes - 1})")
        wanted = _plain(label)
        matches = [i for i, name in enumerate(names) if _plain(name) == wanted]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            listed = ", ".join(f"{i} ({names[i]})" for i in matches)
            raise FvError(f"class name '{label}' is ambiguous in {self.model.name}: {listed}; use the index")
        close = difflib.get_close_matches(wanted, [_plain(n) for n in names], n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise FvError(f"{self.model.name} has no class '{label}'{hint}")

    def vector(self, atom: Atom, info: ResolvedLayer) -> torch.Tensor:
        width = info.layout.channels
        spec = atom.vector
        if isinstance(spec, tuple):
            vector = torch.tensor(spec, dtype=torch.float32)
        elif spec.startswith("random["):
            index = int(spec[len("random[") : -1])
            seed = stable_seed(f"fv-direction/{self.settings.seed}/{info.key}/{index}")
            vector = torch.randn(width, generator=torch.Generator().manual_seed(seed))
            vector = vector / vector.norm()
        else:
            vector = self.directions.row(atom)
        if vector.dim() != 1 or vector.numel() != width:
            raise FvError(f"direction for {info.name} has {tuple(vector.shape)} values; the layer has {plural(width, 'channel')}")
        return vector

    # ---- targets ----

    def units(self, target: Target | Interpolation) -> list[ResolvedUnit]:
        """The units of `target`, in order, each with one objective per image."""
        if isinstance(target, Interpolation):
            return [self._interpolation(target)]
        target = self._filled(self._with_setting(target))  # channels checked as named
        units = []
        for key, unit_target in target.expand():
            unit_target = self._pre_relu(unit_target)
            objective = self._objective(unit_target)
            units.append(
                ResolvedUnit(
                    key, (objective,), self._canonical(unit_target), objective.describe(),
                    by_direction=key is not None and target.keyed_by == "direction",
                )
            )
        return units

    def _objective(self, target: Target) -> Objective:
        objective = None
        for weight, atom in target.terms:
            term = weight * self._atom(atom) if weight != 1 else self._atom(atom)
            objective = term if objective is None else objective + term
        return objective

    def _interpolation(self, target: Interpolation) -> ResolvedUnit:
        ends = [self._with_setting(t) for t in (target.start, target.end)]
        for end in ends:
            self._filled(end)  # checks channel ranges and files
        ends = [self._pre_relu(end) for end in ends]
        start, end = (self._objective(t) for t in ends)
        frames = []
        for k in range(target.frames):
            t = k / (target.frames - 1)
            frames.append(start if t == 0 else end if t == 1 else (1 - t) * start + t * end)
        canonical = f"interpolate({self._canonical(ends[0])}, {self._canonical(ends[1])}, frames={target.frames})"
        return ResolvedUnit(None, tuple(frames), canonical, target.describe(), shared=True)

    def main_layer(self, target: Target | Interpolation) -> ResolvedLayer | None:
        """The layer a job is about (as read): that of its varying atom, or its first atom with a layer."""
        if isinstance(target, Interpolation):
            target = Interpolation(*(self._pre_relu(self._with_setting(t)) for t in (target.start, target.end)), target.frames)
        else:
            target = self._pre_relu(self._with_setting(target))
        atoms = sorted(target.atoms, key=lambda a: not a.multiple)
        for atom in atoms:
            if atom.layer is not None:
                return self.layer(atom.layer)
        return self.output(atoms[0]) if atoms else None

    def _with_setting(self, target: Target) -> Target:
        # `--objective neuron` turns the channel atoms of a target into neurons at the centre.
        if self.settings.objective != "neuron":
            return target
        return Target(tuple((w, replace(a, kind="neuron") if a.kind == "channel" else a) for w, a in target.terms))

    def _pre_relu(self, target: Target) -> Target:
        """With pre_relu auto, a channel or neuron with a negative weight reads its layer's pre-ReLU
        twin, where the layer has one (recorded in `read_as`)."""
        if self.settings.pre_relu != "auto":
            return target
        terms = []
        for weight, atom in target.terms:
            if weight < 0 and atom.kind in ("channel", "neuron"):
                twin = self.twin(atom.layer)
                if twin is not None:
                    self.read_as[atom.layer] = twin
                    atom = replace(atom, layer=twin)
            terms.append((weight, atom))
        return Target(tuple(terms))

    def _filled(self, target: Target) -> Target:
        """The target with every channel range and direction file's rows checked and made explicit."""
        terms = list(target.terms)
        for i, (weight, atom) in enumerate(terms):
            if atom.kind in ("channel", "neuron"):
                info = self.layer(atom.layer)
                count = info.layout.channels
                if atom.channels is None and count > MAX_UNITS:  # every channel of a very wide layer
                    raise FvError(f"layer {atom.layer} has {count} channels; a job renders at most {MAX_UNITS} units (name a range, such as {atom.layer}:0-999)")
                channels = atom.channels if atom.channels is not None else tuple(range(count))
                bad = [c for c in channels if c >= count]
                if bad:
                    raise FvError(
                        f"channel {bad[0]} is out of range for layer {atom.layer}, which has {plural(count, 'channel')} (0-{count - 1})"
                    )
                terms[i] = (weight, replace(atom, channels=channels))
            elif atom.file is not None:
                terms[i] = (weight, replace(atom, rows=self.directions.rows(atom, self.layer(atom.layer).layout.channels)))
        several = [atom for _, atom in terms if atom.multiple]
        if len(several) > 1:  # known only now when a direction file holds several directions
            raise FvError(f"only one atom of a target may name several units, and {several[0].describe()} and {several[1].describe()} both do")
        return Target(tuple(terms))

    def _atom(self, atom: Atom) -> Objective:
        all_tokens = self.settings.tokens == "all"
        if atom.kind in ("channel", "neuron"):
            info = self.layer(atom.layer)
            (index,) = atom.channels
            if atom.kind == "channel":
                return channel(info.key, index, atom.layer, info.layout, all_tokens)
            if atom.position is not None:
                self._check_position(info, atom.position)
            return neuron(info.key, index, atom.layer, info.layout, all_tokens, position=atom.position)
        if atom.kind == "layer":
            return LayerEnergy(self.layer(atom.layer).key, atom.layer)
        if atom.kind in ("logit", "probability"):
            return Logit(self.class_index(atom), atom.label, probability=atom.kind == "probability", element=atom.element)
        info = self.layer(atom.layer)
        if atom.kind in ("caricature", "inversion"):
            target = self.photos.activations(atom, info, self.input_size)
            files = ((atom.photo, self.photos.photo(atom.photo)[1]),)
            photo = self.photos.photo(atom.photo)[0]
            if atom.kind == "inversion":
                return Inversion(info.key, target, atom.describe(), info.layout, files=files, photo=photo)
            power = CARICATURE_COSSIM_POW if atom.cossim_pow is None else atom.cossim_pow
            return Caricature(info.key, target, atom.describe(), info.layout, files=files, cossim_pow=power, photo=photo)
        files = ((atom.file, self.directions.matrix(atom.file)[1]),) if atom.file is not None else ()
        return Direction(
            info.key, self.vector(atom, info), atom.describe(), info.layout, neuron=atom.kind == "direction_neuron", files=files,
            cossim_pow=atom.cossim_pow or 0.0,
        )

    def _check_position(self, info: ResolvedLayer, position: tuple[int, int]) -> None:
        shape, kind = info.shape, info.layout.kind
        if kind == "flat":
            raise FvError(f"layer {info.name} is flat {tuple(shape)}: its neurons have no position")
        grid = (shape[2], shape[3]) if kind == "nchw" else (shape[1], shape[2]) if kind == "nhwc" else None
        if grid is None:
            side = int((shape[1] - info.layout.prefix_tokens) ** 0.5)
            grid = (side, side)
        y, x = position
        if not (0 <= y < grid[0] and 0 <= x < grid[1]):
            raise FvError(f"neuron position y={y}, x={x} is outside layer {info.name}'s {grid[0]} x {grid[1]} grid at this --size")

    def _canonical(self, target: Target) -> str:
        terms = []
        for weight, atom in target.terms:
            if atom.layer is not None:
                atom = replace(atom, layer=self.layer(atom.layer).key)
            terms.append((weight, atom))
        return Target(tuple(terms)).describe()


def _output_hint(error: LayerError, atom: Atom | None) -> str:
    """What to write for a logit or probability of a model that returns a tuple or dict: its
    element of classes (the first flat one), as in `logit@logits:2`."""
    if atom is None or not error.elements:
        return str(error)
    flat = [name for name, shape in error.elements if shape is not None and len(shape) == 2]
    if not flat:
        return f"logit and probability need an output of shape (N, classes); the model returns a {error.returns}"
    return f"the model returns a {error.returns}; name one element as {replace(atom, element=flat[0]).describe()}"


def _plain(name: str) -> str:
    return re.sub(r"[\s_-]+", " ", name.strip().lower())


def unit_seed(seed: int, canonical: str) -> int:
    """A 63-bit seed for one unit, stable across runs, batches, shards and machines."""
    return stable_seed(f"fv-unit/{seed}/{canonical}")


def unit_name(target: Target, key: int | None, width: int) -> tuple[str, str]:
    """(PNG file name, grid label) of one unit of a job with `target`."""
    if isinstance(target, Interpolation):
        return "frame.png", target.describe()
    if key is None:
        return "unit.png", target.describe()
    simple = target.simple
    if simple is not None and simple.kind in ("channel", "neuron"):  # LAYER_NNNN.png, as for mixed4a:0-511
        return f"{safe_component(simple.layer)}_{key:0{width}d}.png", str(key)
    return f"unit_{key:0{width}d}.png", str(key)

