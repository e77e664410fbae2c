"""Binding a target to a model: one objective per unit, with every name checked against the model.

Layer names become module paths and layouts (from a probe forward pass), class names become
indices, direction vectors become tensors of the layer's width. Problems are FvErrors that say what
the model has instead. With `pre_relu: auto`, a channel or neuron a target minimizes reads its
layer's pre-ReLU twin where there is one (`-mixed4a:97` reads mixed4a_pre_relu), as the article's
negative images do: after a ReLU, a channel at 0 has nothing left to lower.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from fvcli.errors import FvError
from fvcli.jobs import safe_component, stable_seed
from fvcli.layer_keys import ResolvedLayer, infer_layout, split_key
from fvcli.prerelu import SUFFIX, twin_base
from fvcli.limits import MAX_UNITS, MAX_WEIGHT, show
from fvcli.messages import plural
from fvcli.models import LoadedModel
from fvcli.weights import safe_load
from fvcli.objectives import OUTPUT, Direction, LayerEnergy, Logit, Objective, channel, neuron
from fvcli.settings import RenderSettings
from fvcli.targets import Atom, Interpolation, Target

# A layer probe: layer key -> (output shape for one image, input size the model needs or None).
Probe = Callable[[str], tuple[tuple[int, ...], int | None]]


@dataclass(frozen=True)
class ResolvedUnit:
    key: int | None  # the varying channel or random-direction index; None for a one-unit target
    objectives: tuple[Objective, ...]  # one per image: one, or an interpolation's frames
    canonical: str  # the unit's target with module paths: what its seed derives from
    description: str
    shared: bool = False  # the images share a low-resolution image (interpolation frames)


class Resolver:
    """Resolves the targets of one job (one model, one image size, one set of settings)."""

    def __init__(self, model: LoadedModel, settings: RenderSettings, probe: Probe):
        self.model, self.settings, self.probe = model, settings, probe
        self.input_size: int | None = None
        self.layers: dict[str, ResolvedLayer] = {}
        self.read_as: dict[str, str] = {}  # layer names read as their pre-ReLU twins' (pre_relu: auto)
        self._twins: dict[str, str | None] = {}

    # ---- names ----

    def layer(self, name: str) -> ResolvedLayer:
        if name not in self.layers:
            path, element = split_key(name)
            key = self.model.resolve_layer(path) + (f"@{element}" if element is not None else "")
            shape, self.input_size = self.probe(key)
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

    def output(self) -> ResolvedLayer:
        """The model's own output, for logits and probabilities."""
        if OUTPUT not in self.layers:
            shape, self.input_size = self.probe(OUTPUT)
            if len(shape) != 2:
                raise FvError(f"logit and probability need a model whose output is (N, classes); {self.model.name} gives {tuple(shape)}")
            self.layers[OUTPUT] = ResolvedLayer("output", OUTPUT, tuple(shape), infer_layout(shape))
        return self.layers[OUTPUT]

    def class_index(self, label: str | int) -> int:
        classes = self.output().layout.channels
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
            vector = _load_vector(spec)
        if vector.dim() != 1 or vector.numel() != width:
            raise FvError(f"direction for {info.name} has {tuple(vector.shape)} values; the layer has {plural(width, 'channel')}")
        return vector

    # ---- targets ----

    def units(self, target: Target | Interpolation) -> list[ResolvedUnit]:
        """The units of `target`, in order, each with one objective per image."""
        if isinstance(target, Interpolation):
            return [self._interpolation(target)]
        units = []
        for key, unit_target in self._expand(self._with_setting(target)):  # channels checked as named
            unit_target = self._pre_relu(unit_target)
            objective = self._objective(unit_target)
            units.append(ResolvedUnit(key, (objective,), self._canonical(unit_target), objective.describe()))
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
            self._expand(end)  # checks channel ranges
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
        return self.output() if atoms else None

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

    def _expand(self, target: Target) -> list[tuple[int | None, Target]]:
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
        return Target(tuple(terms)).expand()

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
            return Logit(self.class_index(atom.label), atom.label, probability=atom.kind == "probability")
        info = self.layer(atom.layer)
        return Direction(info.key, self.vector(atom, info), atom.describe(), info.layout, neuron=atom.kind == "direction_neuron")

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


def _plain(name: str) -> str:
    return re.sub(r"[\s_-]+", " ", name.strip().lower())


def unit_seed(seed: int, canonical: str) -> int:
    """A 63-bit seed for one unit, stable across runs, batches, shards and machines."""
    return stable_seed(f"fv-unit/{seed}/{canonical}")


def _load_vector(path: str) -> torch.Tensor:
    """A direction from a .npy or .pt file: finite, not all zero, entries at most MAX_WEIGHT in magnitude
    (like an inline vector's). Pickled objects are refused, in one line."""
    file = Path(path)
    if not file.is_file():
        raise FvError(f"direction file {path} not found (expected a .npy or .pt file of one vector)")
    refused = "not a tensor file fv can load safely (only tensors saved with torch.save are read; pickled objects are refused)"
    if file.suffix == ".npy":
        import numpy

        try:
            array = numpy.load(file, allow_pickle=False)
            vector = torch.as_tensor(array, dtype=torch.float32).flatten()
        except ValueError as error:
            reason = "it holds Python objects, which fv does not load" if "allow_pickle" in str(error) else str(error).splitlines()[0][:200]
            raise FvError(f"direction file {path}: not an array of numbers fv can read ({reason})") from None
        except Exception as error:
            raise FvError(f"direction file {path} cannot be read ({str(error).splitlines()[0][:200]})") from None
    else:
        try:
            loaded = safe_load(file)
        except ValueError as error:
            damaged = str(error) == "it is truncated or damaged"
            raise FvError(f"direction file {path}: {error if damaged else refused}") from None
        if not isinstance(loaded, torch.Tensor):
            raise FvError(f"direction file {path}: it holds a {type(loaded).__name__}, not a tensor")
        vector = loaded.float().flatten()
    if not bool(torch.all(vector.abs() <= MAX_WEIGHT)):  # NaN fails too
        bad = vector[~(vector.abs() <= MAX_WEIGHT)][0].item()
        raise FvError(f"direction file {path}: holds {bad:g}; expected finite numbers of magnitude at most {show(MAX_WEIGHT)}")
    if not bool(vector.any()):
        raise FvError(f"direction file {path}: all zeros, which point nowhere; expected a vector with a non-zero entry")
    return vector


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

