"""The target grammar as Python objects, for the Python API.

    import fvcli
    objective = fvcli.channel("layer3", 5) - 0.5 * fvcli.neuron("layer4", 3)
    print(objective)                # layer3:5 - 0.5*neuron(layer4:3): the target text
    fvcli.render(model, objective)  # the same as fvcli.render(model, "layer3:5 - 0.5*neuron(layer4:3)")

Each function builds a `targets.Target` (or an `Interpolation`), which combine with `+ - *` and `/`
by numbers and print as the text `fv render` takes. Rendering goes through that text, parsed in
the one place targets are parsed, so an object and its text can never mean different things.
"""

from __future__ import annotations

import itertools
import math
import operator
import os
from typing import Any, Iterable

from fvcli.errors import FvError
from fvcli.specs.limits import MAX_TARGET_CHARS, MAX_UNITS
from fvcli.specs.channels import describe_channels
from fvcli.specs.grammar import TargetError, parse_target
from fvcli.specs.targets import Interpolation, Target, quoted

__all__ = [
    "channel", "neuron", "deepdream", "logit", "probability", "direction", "direction_neuron", "caricature", "inversion",
    "interpolate", "target",
]


def _index(value: Any, what: str, expected: str = "an integer") -> int:
    """An integer as given (int, numpy or 0-d torch integer), never a float cut down to one."""
    if isinstance(value, bool):
        raise FvError(f"{what}: expected {expected}, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise FvError(f"{what}: expected {expected}, got {_shown(value)}") from None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _layer(layer: Any, function: str) -> str:
    """A layer as the grammar names it: text, or an integer for a Sequential's index (`4` is "4")."""
    if isinstance(layer, str) and layer:
        return layer
    if isinstance(layer, int) and not isinstance(layer, bool):
        return str(layer)
    raise FvError(f"{function}(): layer: expected a layer name such as 'mixed4a' (fvcli.layers lists them), got {_shown(layer)}")


def _text(value: Any, what: str) -> str:
    """A file path or name: text or a path object, nothing else turned into text."""
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        if isinstance(text, str) and text:
            return text
    raise FvError(f"{what}: expected a file path, got {_shown(value)}")


def _number(value: Any, what: str) -> float:
    """A finite real number (int, float, numpy or 0-d tensor), never text or a bool."""
    if isinstance(value, bool) or isinstance(value, (str, bytes)):
        raise FvError(f"{what}: expected a number, got {_shown(value)}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise FvError(f"{what}: expected a number, got {_shown(value)}") from None
    if not math.isfinite(number):
        raise FvError(f"{what}: expected a finite number, got {_shown(value)}")
    return number


def _channels(channels: int | Iterable[int] | None) -> str:
    if channels is None:
        return ""
    if isinstance(channels, range) and channels.step == 1 and len(channels) > 0:  # its ends, not its items
        first, last = _index(channels.start, "channel"), _index(channels.stop, "channel") - 1
        if last - first + 1 > MAX_UNITS:
            raise FvError(f"target: {last - first + 1:,} channels; at most {MAX_UNITS:,} units a job")
        return f":{first}" if first == last else f":{first}-{last}"
    if not isinstance(channels, Iterable) or isinstance(channels, (str, bytes)):
        channels = [channels]
    taken = list(itertools.islice(channels, MAX_UNITS + 1))  # a generator of 10^8 is never listed whole
    if len(taken) > MAX_UNITS:
        raise FvError(f"target: more than {MAX_UNITS:,} channels; at most {MAX_UNITS:,} units a job")
    indices = sorted(set(_index(c, "channel") for c in taken))
    if not indices:
        raise FvError("target: expected at least one channel index")
    return ":" + describe_channels(tuple(indices))


def _quoted(text: str, what: str) -> str:
    """`text` in quotes as the grammar reads it back (targets.quoted)."""
    try:
        return quoted(text)
    except ValueError:
        raise FvError(f"{what} {text!r}: a name with both ' and \" cannot be written in a target; rename it") from None


def _parsed(text: str) -> Any:
    """The target of `text`, checked by the grammar itself; FvError with the CLI's line if bad."""
    try:
        return parse_target(text)
    except TargetError as error:
        raise FvError(f"target: {error}") from None


def target(text: str) -> Target | Interpolation:
    """A target from its text (`"mixed4a:97 - 0.5*mixed4b:3"`), to combine with the objects here."""
    if not isinstance(text, str):
        raise FvError(f"target(): expected the text of a target such as 'mixed4a:97', got {_shown(text)}")
    return _parsed(text)


def channel(layer: str, channels: int | Iterable[int] | None = None) -> Target:
    """The mean activation of a channel (or, for several, one unit per channel; None: every channel
    of the layer): `channel("layer3", 5)` is `layer3:5`, `channel("4", range(4))` is `4:0-3`."""
    return _parsed(f"{_layer(layer, 'channel')}{_channels(channels)}")


def neuron(layer: str, channels: int | Iterable[int], y: int | None = None, x: int | None = None) -> Target:
    """A channel at one position, (y, x), or the centre: `neuron("mixed4b", 3)`."""
    if (y is None) != (x is None):
        raise FvError("neuron(): give both y and x, or neither (the centre)")
    where = "" if y is None else f", y={_index(y, 'neuron(): y')}, x={_index(x, 'neuron(): x')}"
    return _parsed(f"neuron({_layer(layer, 'neuron')}{_channels(channels)}{where})")


def deepdream(layer: str) -> Target:
    """DeepDream: the mean squared activation of a whole layer (`layer(LAYER)` in text)."""
    return _parsed(f"layer({_layer(layer, 'deepdream')})")


def _label(label: int | str) -> str:
    if isinstance(label, str) and label:
        return _quoted(label, "class name")
    return str(_index(label, "class", "a class index or name"))


def _element(element: str | int | None) -> str:
    if element is None:
        return ""
    if isinstance(element, str) and element:
        return f"@{element}"
    return f"@{_index(element, 'element: expected the name or index of the output that holds the logits; element')}"


def logit(label: int | str, element: str | int | None = None) -> Target:
    """A class logit of the model's output, by index or class name: `logit("goldfish")`. For a model
    that returns a tuple or dict, `element` names the one that holds the logits: `logit(2, "logits")`
    is `logit@logits:2`."""
    return _parsed(f"logit{_element(element)}:{_label(label)}")


def probability(label: int | str, element: str | int | None = None) -> Target:
    """A class probability (the softmax of the logits), by index or class name; `element` as for logit."""
    return _parsed(f"probability{_element(element)}:{_label(label)}")


def _vector(vector: Any) -> str:
    """A direction as the grammar writes it: a file path, `random:K`, or inline numbers (a list,
    tuple, tensor or array; written with 6 significant digits)."""
    if isinstance(vector, str) and vector:
        return vector if vector.startswith("random") else _quoted(vector, "direction file")
    if hasattr(vector, "detach") or hasattr(vector, "tolist"):
        shape, dtype = tuple(getattr(vector, "shape", ())), str(getattr(vector, "dtype", ""))
        if len(shape) != 1:
            raise FvError(f"direction(): expected a 1-D vector, got shape {shape}; K directions (K x C) go in a .npy or .pt file")
        if "complex" in dtype:
            raise FvError(f"direction(): expected real numbers, got {dtype}")
        vector = vector.detach().cpu().tolist() if hasattr(vector, "detach") else vector.tolist()
    expected = "direction(): expected a 1-D vector of numbers, a file path, or 'random:K'"
    if isinstance(vector, os.PathLike):
        return _quoted(_text(vector, "direction file"), "direction file")
    if not isinstance(vector, Iterable) or isinstance(vector, (bytes, dict)):
        raise FvError(f"{expected}, got {_shown(vector)}")
    most = MAX_TARGET_CHARS // 2  # what a target's text can hold: a longer vector goes in a file
    numbers = list(itertools.islice(vector, most + 1))  # a generator of 10^9 is never listed whole
    if len(numbers) > most:
        raise FvError(f"direction(): more than {most:,} numbers; save a longer vector as a .npy file and give its path")
    if not numbers or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        raise FvError(expected)
    return "[" + ", ".join(f"{_number(v, 'direction()'):g}" for v in numbers) + "]"


def _power(cossim_pow: float | None, function: str) -> str:
    return "" if cossim_pow is None else f", cossim_pow={_number(cossim_pow, f'{function}(): cossim_pow'):g}"


def direction(layer: str, vector: Any, cossim_pow: float | None = None) -> Target:
    """A direction in the layer's channel space, averaged over positions: a vector (list, tensor,
    array), a .npy/.pt file path, or "random:K" for K random directions. `cossim_pow=P`: the dot
    product times max(0.1, cos)^P at each position (the activation atlas's icon objective)."""
    return _parsed(f"direction({_layer(layer, 'direction')}, {_vector(vector)}{_power(cossim_pow, 'direction')})")


def direction_neuron(layer: str, vector: Any, cossim_pow: float | None = None) -> Target:
    """A direction at the centre position only; `cossim_pow` as for direction."""
    return _parsed(f"direction_neuron({_layer(layer, 'direction_neuron')}, {_vector(vector)}{_power(cossim_pow, 'direction_neuron')})")


def caricature(layer: str, photo: str, cossim_pow: float | None = None) -> Target:
    """A caricature of a photo (a file path): what the layer sees in it, exaggerated."""
    power = _power(cossim_pow, "caricature")
    return _parsed(f"caricature({_layer(layer, 'caricature')}, {_quoted(_text(photo, 'caricature(): photo'), 'photo')}{power})")


def inversion(layer: str, photo: str) -> Target:
    """Feature inversion of a photo (a file path): an image whose activations at the layer match it."""
    return _parsed(f"inversion({_layer(layer, 'inversion')}, {_quoted(_text(photo, 'inversion(): photo'), 'photo')})")


def interpolate(start: Target | str, end: Target | str, frames: int = 8) -> Interpolation:
    """Frames from `start` to `end`, each maximizing (1 - t) start + t end, sharing a layout."""
    for end_ in (start, end):
        if not isinstance(end_, (str, Target, Interpolation)):
            raise FvError(f"interpolate(): expected targets such as fvcli.channel('mixed4a', 97) or their text, got {_shown(end_)}")
    return _parsed(f"interpolate({start}, {end}, frames={_index(frames, 'interpolate(): frames')})")
