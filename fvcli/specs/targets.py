"""Targets as objects: what to render, before any model is known. A target is a weighted sum of
atoms (a channel, a neuron, a direction, a logit, a caricature ...), or an interpolation between
two; one atom may name several channels or directions, and the target then expands into one unit
each. Text becomes these objects in fvcli.specs.grammar (the grammar is written out there); the
objects API (fvcli.specs.expressions) builds them from Python. No torch here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any

from fvcli.specs.channels import describe_channels
from fvcli.specs.limits import MAX_WEIGHT, MIN_WEIGHT

KINDS = ("channel", "neuron", "layer", "logit", "probability", "direction", "direction_neuron", "caricature", "inversion")
DIRECTIONS = ("direction", "direction_neuron")
PHOTOS = ("caricature", "inversion")  # objectives that compare a layer with a photo's activations there
MAX_COSSIM_POW = 10.0
CLASS_KINDS = {"logit", "probability"}





def quoted(text: str) -> str:
    """`text` between quotes as the grammar reads it back: it has no escapes, so as it is, between
    ' or else " (ValueError when it holds both)."""
    for quote in "'\"":
        if quote not in text:
            return f"{quote}{text}{quote}"
    raise ValueError(f"{text!r} holds both ' and \", which a target cannot quote")

@dataclass(frozen=True)
class Atom:
    """One objective of a target, before the model is known (layers are names as written)."""

    kind: str  # one of KINDS
    layer: str | None = None  # None for logit and probability (they read the model's output)
    channels: tuple[int, ...] | None = None  # channel and neuron; None: every channel
    position: tuple[int, int] | None = None  # neuron: (y, x); None: the centre
    label: str | int | None = None  # logit and probability: class index or name
    vector: tuple[float, ...] | str | None = None  # direction: numbers, a file, or "random:K" / "random[I]"
    rows: tuple[int, ...] | None = None  # direction file: the rows (directions) it names; None: as the file has
    photo: str | None = None  # caricature and inversion: the image file
    cossim_pow: float | None = None  # caricature and direction: the power of its cosine factor; None: the default
    element: str | None = None  # logit and probability: the element of the model's tuple or dict output

    @property
    def file(self) -> str | None:
        """The direction file this atom reads, if it reads one."""
        if self.kind in DIRECTIONS and isinstance(self.vector, str) and not self.vector.startswith("random"):
            return self.vector
        return None

    @property
    def multiple(self) -> bool:
        """Whether this atom stands for several units (a channel list, random:K directions, or rows of
        a direction file; a file's own row count is known only when it is read)."""
        if self.kind in ("channel", "neuron"):
            return self.channels is None or len(self.channels) > 1
        if self.rows is not None:
            return len(self.rows) > 1
        return isinstance(self.vector, str) and self.vector.startswith("random:")

    def describe(self) -> str:
        channels = "" if self.channels is None else f":{describe_channels(self.channels)}"
        if self.kind == "channel":
            return f"{self.layer}{channels}"
        if self.kind == "neuron":
            where = "" if self.position is None else f", y={self.position[0]}, x={self.position[1]}"
            return f"neuron({self.layer}{channels}{where})"
        if self.kind == "layer":
            return f"layer({self.layer})"
        if self.kind in CLASS_KINDS:
            label = self.label
            plain = isinstance(label, int) or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(label))
            element = "" if self.element is None else f"@{self.element}"
            return f"{self.kind}{element}:{label if plain else quoted(str(label))}"
        if self.kind in PHOTOS:
            power = "" if self.cossim_pow is None else f", cossim_pow={self.cossim_pow:g}"
            return f"{self.kind}({self.layer}, {quoted(self.photo)}{power})"
        if isinstance(self.vector, tuple):
            vector = "[" + ", ".join(f"{v:g}" for v in self.vector) + "]"
        elif self.vector.startswith("random"):
            vector = self.vector
        else:
            vector = quoted(self.vector)
        rows = "" if self.rows is None else f"[{describe_channels(self.rows)}]"
        power = "" if self.cossim_pow is None else f", cossim_pow={self.cossim_pow:g}"
        return f"{self.kind}({self.layer}, {vector}{power}){rows}"


@dataclass(frozen=True)
class Target:
    """A weighted sum of atoms, as parsed from text."""

    terms: tuple[tuple[float, Atom], ...]

    @property
    def atoms(self) -> tuple[Atom, ...]:
        return tuple(atom for _, atom in self.terms)

    @property
    def simple(self) -> Atom | None:
        """The atom when the target is one atom with weight 1 (such as `mixed4a:0-511`), else None."""
        if len(self.terms) == 1 and self.terms[0][0] == 1.0:
            return self.terms[0][1]
        return None

    @property
    def channels_of_layer(self) -> Atom | None:
        """The atom of a plain `LAYER[:CHANNELS]` target (one channel objective per channel, the
        everyday job), else None."""
        simple = self.simple
        return simple if simple is not None and simple.kind == "channel" else None

    @property
    def keyed_by(self) -> str:
        """What its units' keys index: 'direction' when a direction varies (random:K, a direction
        file's rows), else 'channel'."""
        varying = next((atom for atom in self.atoms if atom.multiple), self.simple)
        return "direction" if varying is not None and varying.kind in DIRECTIONS else "channel"

    # Targets compose as Python objects (fvcli.specs.expressions): `a - 0.5 * b` is the target whose
    # text is `A - 0.5*B`; the text is what renders, parsed again, so both ways mean the same.
    # What the grammar refuses (a product of objectives...) is an FvError here too, not a TypeError.

    def __add__(self, other: Target) -> Target:
        if not isinstance(other, Target):
            raise _refused(f"cannot add {_shown(other)} to objective {self.describe()}")
        combined = Target(self.terms + other.terms)
        multiple = [atom for atom in combined.atoms if atom.multiple]
        if len(multiple) > 1:
            from fvcli.errors import FvError

            raise FvError(f"target {combined.describe()!r}: only one atom of a target may name several channels")
        return combined

    def __radd__(self, other: Any) -> Target:
        raise _refused(f"cannot add objective {self.describe()} to {_shown(other)}")

    def __sub__(self, other: Target) -> Target:
        if not isinstance(other, Target):
            raise _refused(f"cannot subtract {_shown(other)} from objective {self.describe()}")
        return self + (-other)

    def __rsub__(self, other: Any) -> Target:
        raise _refused(f"cannot subtract objective {self.describe()} from {_shown(other)}")

    def __neg__(self) -> Target:
        return self * -1

    def __mul__(self, factor: float) -> Target:
        if isinstance(factor, (Target, Interpolation)):
            raise _refused(f"cannot multiply two objectives ({self.describe()} * {factor.describe()})")
        if not _is_number(factor):
            raise _refused(f"cannot multiply objective {self.describe()} by {_shown(factor)}")
        if not _finite(factor) or factor == 0:
            from fvcli.errors import FvError

            raise FvError(f"cannot multiply objective {self.describe()} by {_shown(factor)}: expected a finite number other than 0")
        terms = tuple((weight * factor, atom) for weight, atom in self.terms)
        for weight, _ in terms:  # 1e-200 * (1e-200 * a) underflows to 0, 1e200 * (1e200 * a) overflows
            if not MIN_WEIGHT <= abs(weight) <= MAX_WEIGHT:
                from fvcli.errors import FvError

                flat = " (a smaller one leaves the unit flat)" if abs(weight) < MIN_WEIGHT else ""
                raise FvError(f"{_shown(factor)} * {self.describe()}: a weight of {weight:g}; weights are {MIN_WEIGHT:g} to {MAX_WEIGHT:g} in magnitude{flat}")
        return Target(terms)

    __rmul__ = __mul__

    def __truediv__(self, divisor: float) -> Target:
        if isinstance(divisor, (Target, Interpolation)):
            raise _refused(f"cannot divide by an objective ({self.describe()} / {divisor.describe()})")
        if not _is_number(divisor):
            raise _refused(f"cannot divide objective {self.describe()} by {_shown(divisor)}")
        if not divisor or not _finite(divisor):
            from fvcli.errors import FvError

            raise FvError(f"cannot divide objective {self.describe()} by {_shown(divisor)}: expected a finite number other than 0")
        return self * (1.0 / divisor)

    def __rtruediv__(self, dividend: Any) -> Target:
        raise _refused(f"cannot divide by an objective ({_shown(dividend)} / {self.describe()})")

    def __str__(self) -> str:
        return self.describe()

    def __repr__(self) -> str:
        return f"Target({self.describe()!r})"

    def describe(self) -> str:
        text = ""
        for i, (w, atom) in enumerate(self.terms):
            sign = "-" if w < 0 else ("+" if i else "")
            body = atom.describe() if abs(w) == 1 else f"{abs(w):g}*{atom.describe()}"
            text += (f" {sign} " if i else sign) + body
        return text

    def expand(self) -> list[tuple[int | None, Target]]:
        """One target per unit: (the varying channel or direction index, or None; the unit's target).

        Every channel of an atom with several needs the model to know: those are expanded later, so
        here `channels=None` stays as it is.
        """
        multiple = [i for i, atom in enumerate(self.atoms) if atom.multiple]
        if not multiple:
            simple = self.simple
            if simple is not None and simple.kind in ("channel", "neuron"):
                return [(simple.channels[0], self)]  # `mixed4a:97` is channel 97's unit
            if simple is not None and simple.rows is not None:
                return [(simple.rows[0], self)]  # `direction(L, 'd.npy')[3]` is row 3's unit
            return [(None, self)]
        index = multiple[0]
        weight, atom = self.terms[index]
        if atom.kind in ("channel", "neuron"):
            if atom.channels is None:
                return [(None, self)]  # resolved against the layer's channel count later
            singles = [(c, replace(atom, channels=(c,))) for c in atom.channels]
        elif atom.rows is not None:
            singles = [(r, replace(atom, rows=(r,))) for r in atom.rows]
        else:
            count = int(atom.vector.split(":")[1])
            singles = [(k, replace(atom, vector=f"random[{k}]")) for k in range(count)]
        units = []
        for key, single in singles:
            terms = list(self.terms)
            terms[index] = (weight, single)
            units.append((key, Target(tuple(terms))))
        return units


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: int | float) -> bool:
    """Finite as a float: an integer beyond float's range (10**400) is not (math.isfinite raises)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _shown(value: Any) -> str:
    """A value in a message: an objective or number as written, anything else by its type."""
    if isinstance(value, (Target, Interpolation)):
        return f"objective {value.describe()}"
    text = repr(value)
    return (text if len(text) <= 40 else text[:37] + "...") if _is_number(value) else f"a {type(value).__name__}"


def _refused(what: str) -> Exception:
    from fvcli.errors import FvError

    return FvError(
        f"{what}: a number times an objective scales it (0.5 * a), an objective divides by a number "
        "(a / 2), and objectives add and subtract (a - 0.5 * b)"
    )


@dataclass(frozen=True)
class Interpolation:
    """`interpolate(A, B, frames=K)`: K frames from A to B, frame k maximizing (1 - t) A + t B with
    t = k / (K - 1). The frames share a low-resolution image, so they keep one layout."""

    start: Target
    end: Target
    frames: int

    @property
    def atoms(self) -> tuple[Atom, ...]:
        return self.start.atoms + self.end.atoms

    @property
    def simple(self) -> None:
        return None

    @property
    def channels_of_layer(self) -> None:
        return None

    keyed_by = "channel"  # its one unit has no key

    def describe(self) -> str:
        return f"interpolate({self.start.describe()}, {self.end.describe()}, frames={self.frames})"

    def __str__(self) -> str:
        return self.describe()

    def __repr__(self) -> str:
        return f"Interpolation({self.describe()!r})"

    def expand(self) -> list[tuple[int | None, Interpolation]]:
        return [(None, self)]

    def _not_an_objective(self, *_: Any) -> Target:
        from fvcli.errors import FvError

        raise FvError(f"{self.describe()} is a sequence of frames, not one objective: scale or add its two ends instead")

    __neg__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = __add__ = __radd__ = __sub__ = __rsub__ = _not_an_objective


