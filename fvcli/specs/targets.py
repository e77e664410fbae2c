"""Targets: what to render, as text. This module is the one place that text is parsed.

A target is a weighted sum of objective atoms. The simplest is `LAYER:CHANNELS`; the grammar:

    target  := term (('+' | '-') term)*
    term    := ['-'] factor (('*' | '/') factor)*       (at most one factor that is not a number)
    factor  := NUMBER | '(' target ')' | atom
    atom    := LAYER [':' CHANNELS]                      channel: mean over positions (no CHANNELS: all)
             | 'channel' '(' LAYER ':' CHANNELS ')'
             | 'neuron' '(' LAYER ':' CHANNELS [',' 'y' '=' INT ',' 'x' '=' INT] ')'   (centre by default)
             | ('layer' | 'deepdream') '(' LAYER ')'     mean squared activation of the whole layer
             | ('logit' | 'probability') ['@' ELEMENT] ':' CLASS   CLASS: an index, a name, or a 'quoted name';
                                                 '@ELEMENT' for a model that returns a tuple or dict
             | ('direction' | 'direction_neuron') '(' LAYER ',' VECTOR [',' 'cossim_pow' '=' NUMBER] ')' ['[' ROWS ']']
             | 'caricature' '(' LAYER ',' PHOTO [',' 'cossim_pow' '=' NUMBER] ')'
             | 'inversion' '(' LAYER ',' PHOTO ')'
    whole   := 'interpolate' '(' target ',' target ',' 'frames' '=' INT ')'   (one unit of INT frames)
    LAYER   := a module path (letters, digits, '_', '.'), with '@ELEMENT' for tuple or dict outputs,
               or 'output', the model's own output (unless a module has that name);
               one that starts with a digit (an nn.Sequential's `4`) only where a number cannot
               stand: before ':' (`4:0-3`, `2*4:1`) or inside a call (`layer(4)`)
    CHANNELS:= N | A-B | a comma list of those (no spaces)
    VECTOR  := '[' NUMBER (',' NUMBER)* ']' | 'FILE.npy' | 'FILE.pt' | 'random:K' | 'random[I]'
    ROWS    := rows of a direction file of K directions (a K x C matrix), written like CHANNELS
    PHOTO   := 'FILE' (a quoted image file: JPEG, PNG...)

One atom may name several channels (or `random:K` directions, or the rows of a direction file):
the target then expands into one unit per channel, the rest of the sum shared, e.g. `-mixed4a:0-7`
is eight negative images. A direction file's rows are known only once it is read, so a file of
several rows without `[ROWS]` stands for all of them, and that is checked when the target resolves.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, replace
from typing import Any

from fvcli.specs.limits import MAX_DEPTH, MAX_INDEX, MAX_TARGET_CHARS, MAX_UNITS, MAX_WEIGHT, non_ascii_digit, show

_EXPECTED = "expected channels like 97, 0-511 or 3,7,100-107"
KINDS = ("channel", "neuron", "layer", "logit", "probability", "direction", "direction_neuron", "caricature", "inversion")
DIRECTIONS = ("direction", "direction_neuron")
PHOTOS = ("caricature", "inversion")  # objectives that compare a layer with a photo's activations there
_CALLS = {"channel", "neuron", "layer", "deepdream", *DIRECTIONS, *PHOTOS}
MAX_COSSIM_POW = 10.0
_CLASS_KINDS = {"logit", "probability"}


# ---- channel lists, shared with the `channels:` key of specs ----


def parse_channel_item(item: Any, what: str = "channel") -> list[int]:
    """One channel (int) or a text of ranges and numbers, e.g. `3,7,100-107`; ValueError if malformed.
    `what` the numbers are, for messages (direction files' rows are written like channels)."""
    if isinstance(item, bool):
        raise ValueError(f"{_EXPECTED}, got {item!r}")
    if isinstance(item, int):
        if item < 0:
            raise ValueError(f"expected a channel index of 0 or more, got {item}")
        return [_index(str(item))]
    if not isinstance(item, str) or not item.strip():
        raise ValueError(f"{_EXPECTED}, got {item!r}")
    channels: list[int] = []
    for part in item.split(","):
        match = re.fullmatch(r"\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?", part)
        if not match:
            digit = non_ascii_digit(part)
            raise ValueError(f"{_EXPECTED}, got {item!r}" + (f"; write digits as 0-9, not {digit!r}" if digit else ""))
        first = _index(match.group(1), what)
        last = _index(match.group(2), what) if match.group(2) is not None else first
        if last < first:
            raise ValueError(f"reversed range {first}-{last}; write {last}-{first}")
        if last - first + 1 > MAX_UNITS - len(channels):  # checked before the range is expanded
            raise ValueError(_too_many(f"range {first}-{last} names {last - first + 1} {what}s"))
        channels.extend(range(first, last + 1))
    return channels


def _index(digits: str, what: str = "channel") -> int:
    """An index from ASCII digits, at most MAX_INDEX (checked on the text: int() of a huge text is slow)."""
    if len(digits.lstrip("0")) > len(str(MAX_INDEX)) or int(digits) > MAX_INDEX:
        shown = digits if len(digits) <= 20 else digits[:17] + "..."
        raise ValueError(f"{what} {shown} is too large (at most {MAX_INDEX})")
    return int(digits)


def _too_many(what: str) -> str:
    return f"{what}; a job renders at most {MAX_UNITS} units (split it into several jobs)"


def parse_channels(value: Any, what: str = "channel") -> tuple[int, ...] | None:
    """A channels value (text, int, list of those, or None for all) as sorted unique indices."""
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError(f"{_EXPECTED}, got an empty list")
    channels: set[int] = set()
    for item in items:
        channels.update(parse_channel_item(item, what))
        if len(channels) > MAX_UNITS:
            raise ValueError(_too_many(f"more than {MAX_UNITS} {what}s"))
    return tuple(sorted(channels))


def describe_channels(channels: tuple[int, ...]) -> str:
    """(0, 1, 2, 3, 7) -> '0-3,7': the compact form, for messages and descriptions."""
    parts: list[str] = []
    start = prev = None
    for c in channels:
        if prev is not None and c == prev + 1:
            prev = c
            continue
        if start is not None:
            parts.append(f"{start}-{prev}" if prev != start else f"{start}")
        start = prev = c
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ",".join(parts)


# ---- the expression grammar ----



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
        if self.kind in _CLASS_KINDS:
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
        return Target(tuple((weight * factor, atom) for weight, atom in self.terms))

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


MAX_FRAMES = 64


class TargetError(ValueError):
    """A target that does not parse: the message names the column."""


_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+\.\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|\d+(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_.]*(?:@[A-Za-z0-9_]+)?)"
    r"|(?P<string>'[^']*'|\"[^\"]*\")"
    r"|(?P<punct>[-+*/(),:=\[\]]))",
    re.ASCII,  # digits are 0-9 only: \d would take other scripts' digits, which int() accepts
)
_CHANNELS = re.compile(r"\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*", re.ASCII)
# A module path that starts with a digit: the layers of an nn.Sequential are named 0, 1, 2... (and
# 4.1 when nested). Where a number could stand, it is a layer only when ':' follows (`4:0-3`).
_DIGIT_LAYER = re.compile(r"[0-9][A-Za-z0-9_.]*(?:@[A-Za-z0-9_]+)?", re.ASCII)


class _Parser:
    def __init__(self, text: str):
        self.text, self.pos = text, 0
        self.depth = 0  # parentheses open around the current position

    # -- low level --
    def fail(self, message: str, pos: int | None = None) -> TargetError:
        column = (self.pos if pos is None else pos) + 1
        shown = repr(self.text) if len(self.text) <= 200 else f"{self.text[:200]!r}..."  # one readable line
        return TargetError(f"{message} at column {column} of {shown}")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> tuple[str, str] | None:
        self.skip_space()
        if self.pos >= len(self.text):
            return None
        match = _TOKEN.match(self.text, self.pos)
        if not match or match.end() == self.pos:
            char = self.text[self.pos]
            hint = f"; write digits as 0-9, not {char!r}" if non_ascii_digit(char) else ""
            raise self.fail(f"unexpected {char!r}{hint}")
        kind = match.lastgroup
        return kind, match.group(kind)

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise self.fail("unexpected end")
        self.pos = _TOKEN.match(self.text, self.pos).end()
        return token

    def expect(self, value: str) -> None:
        start = self.pos
        token = self.peek()
        if token is None or token[1] != value:
            self.skip_space()
            found = "the end" if token is None else repr(token[1])
            raise self.fail(f"expected '{value}', found {found}", max(start, self.pos))
        self.take()

    def at(self, value: str) -> bool:
        token = self.peek()
        return token is not None and token[1] == value

    # -- grammar --
    def target(self) -> list[tuple[float, Atom]]:
        terms = self.term()
        while self.at("+") or self.at("-"):
            sign = -1.0 if self.take()[1] == "-" else 1.0
            terms += [(sign * w, a) for w, a in self.term()]
        return terms

    def term(self) -> list[tuple[float, Atom]]:
        scale = 1.0
        while self.at("-"):
            self.take()
            scale = -scale
        start = self.pos
        factor, atoms = self.factor()
        scale *= factor
        while self.at("*") or self.at("/"):
            operator = self.take()[1]
            position = self.pos
            number, more = self.factor()
            if operator == "/":
                if more is not None:
                    raise self.fail("can only divide by a number", position)
                if number == 0:
                    raise self.fail("division by zero", position)
                number = 1.0 / number
            elif more is not None:
                if atoms is not None:
                    raise self.fail("cannot multiply two objectives", position)
                atoms = more
            scale *= number
        if atoms is None:
            raise self.fail("a number alone is not an objective", start)
        terms = [(scale * w, a) for w, a in atoms]
        for w, _ in terms:
            if not abs(w) <= MAX_WEIGHT:  # products and quotients of numbers that passed one by one
                raise self.fail(f"weight {show(w)} is too large (at most {show(MAX_WEIGHT)} in magnitude)", start)
        return terms

    def number(self, text: str, start: int) -> float:
        """A number token, finite and at most MAX_WEIGHT in magnitude (1e999 parses as infinity)."""
        value = float(text)
        if not abs(value) <= MAX_WEIGHT:
            raise self.fail(f"number {text} is too large (at most {show(MAX_WEIGHT)} in magnitude)", start)
        return value

    def index(self, text: str, what: str) -> int:
        try:
            return _index(text, what)
        except ValueError as error:
            raise self.fail(str(error)) from None

    def factor(self) -> tuple[float, list[tuple[float, Atom]] | None]:
        """A number (value, None) or objectives (1, terms)."""
        self.skip_space()
        start = self.pos
        token = self.peek()
        if token is None:
            raise self.fail("expected an objective, found the end")
        kind, value = token
        if kind == "number" and self.digit_layer(before_colon=True):
            layer = self.digit_layer(before_colon=True)
            self.pos += len(layer)
            self.expect(":")
            channels = self.channels_after_colon()
            return 1.0, [(1.0, Atom("channel", self.element_after_channels(layer), channels))]
        if kind == "number":
            self.take()
            return self.number(value, start), None
        if value == "(":
            if self.depth >= MAX_DEPTH:  # the parser recurses once a level
                raise self.fail(f"parentheses nested more than {MAX_DEPTH} deep", start)
            self.take()
            self.depth += 1
            terms = self.target()
            self.expect(")")
            self.depth -= 1
            return 1.0, terms
        if kind == "name":
            return 1.0, [(1.0, self.atom())]
        raise self.fail(f"expected an objective, found {value!r}", start)

    def channels_after_colon(self) -> tuple[int, ...]:
        self.skip_space()
        match = _CHANNELS.match(self.text, self.pos)
        if not match:
            digit = non_ascii_digit(self.text[self.pos : self.pos + 1])
            raise self.fail(_EXPECTED + (f"; write digits as 0-9, not {digit!r}" if digit else ""))
        try:
            channels = parse_channels(match.group(0))
        except ValueError as error:
            raise self.fail(str(error)) from None
        self.pos = match.end()
        return channels  # type: ignore[return-value]

    def element_after_channels(self, layer: str) -> str:
        """`layer:0-9@1` is `layer@1:0-9`: the element may also follow the channels."""
        match = re.compile(r"@([A-Za-z0-9_]+)").match(self.text, self.pos)
        if not match:
            return layer
        if "@" in layer:
            raise self.fail("the layer names its element twice")
        self.pos = match.end()
        return f"{layer}@{match.group(1)}"

    def digit_layer(self, before_colon: bool) -> str | None:
        """A layer name that starts with a digit at the current position (`4`, `4.1`), or None;
        with `before_colon`, only when ':' follows it (else it is a number)."""
        self.skip_space()
        match = _DIGIT_LAYER.match(self.text, self.pos)
        if not match:
            return None
        if before_colon and not self.text[match.end() :].lstrip().startswith(":"):
            return None
        return match.group(0)

    def layer_name(self) -> str:
        """A layer name where one must stand (in `layer(...)`, `neuron(...)`...): digits too."""
        digits = self.digit_layer(before_colon=False)
        if digits is not None:
            self.pos += len(digits)
            return digits
        kind, layer = self.take()
        if kind != "name":
            raise self.fail(f"expected a layer name, found {layer!r}")
        return layer

    def layer_and_channels(self, need_channels: bool) -> tuple[str, tuple[int, ...] | None]:
        layer = self.layer_name()
        if self.at(":"):
            self.take()
            channels = self.channels_after_colon()
            return self.element_after_channels(layer), channels
        if need_channels:
            raise self.fail(f"expected ':' and channels after {layer}")
        return layer, None

    def atom(self) -> Atom:
        start = self.pos
        _, name = self.take()
        word = name.lower()
        if word not in _CALLS and self.at("("):
            known = sorted(_CALLS | {"interpolate"})
            close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}()? " if close else ""
            listed = ", ".join(f"{k}()" for k in known)
            raise self.fail(f"unknown objective {name}(); {hint}(known: {listed}, logit:, probability:)", start)
        if word in _CALLS and self.at("("):
            self.take()
            if word in ("channel", "neuron"):
                layer, channels = self.layer_and_channels(need_channels=True)
                position = None
                if word == "neuron" and self.at(","):
                    self.take()
                    position = self.position()
                self.expect(")")
                return Atom(word, layer, channels, position=position)
            if word in ("layer", "deepdream"):
                layer = self.layer_name()
                self.expect(")")
                return Atom("layer", layer)
            layer = self.layer_name()
            self.expect(",")
            if word in PHOTOS:
                return self.photo_atom(word, layer)
            vector = self.vector()
            power = self.cossim_pow() if self.at(",") else None
            self.expect(")")
            rows = self.rows(vector) if self.at("[") else None
            return Atom(word, layer, vector=vector, rows=rows, cossim_pow=power)
        kind_word = word.partition("@")[0]  # `logit@logits:2`: a logit of the element logits of the output
        if kind_word in _CLASS_KINDS and self.at(":"):
            self.take()
            kind, label = self.take()
            element = name.partition("@")[2] or None  # as written: dict keys are case-sensitive
            if kind == "number" and label.isdigit():
                return Atom(kind_word, label=self.index(label, "class"), element=element)
            if kind == "name":
                return Atom(kind_word, label=label, element=element)
            if kind == "string":
                return Atom(kind_word, label=label[1:-1], element=element)
            raise self.fail("expected a class index or name", start)
        if self.at(":"):
            self.take()
            channels = self.channels_after_colon()
            return Atom("channel", self.element_after_channels(name), channels)
        return Atom("channel", name, None)

    def photo_atom(self, word: str, layer: str) -> Atom:
        """The rest of `caricature(LAYER, 'FILE'[, cossim_pow=P])` or `inversion(LAYER, 'FILE')`."""
        self.skip_space()
        start = self.pos
        kind, photo = self.take()
        if kind != "string" or not photo[1:-1].strip():
            raise self.fail(f"expected the photo's file name in quotes, such as {word}({layer}, 'photo.jpg')", start)
        power = self.cossim_pow() if word == "caricature" and self.at(",") else None
        self.expect(")")
        return Atom(word, layer, photo=photo[1:-1], cossim_pow=power)

    def cossim_pow(self) -> float:
        """`, cossim_pow=P` after a caricature's photo or a direction's vector: P from 0 to 10."""
        self.take()  # ,
        self.expect("cossim_pow")
        self.expect("=")
        self.skip_space()
        position = self.pos
        kind, value = self.take()
        if kind != "number" or not float(value) <= MAX_COSSIM_POW:
            raise self.fail(f"expected a power from 0 to {show(MAX_COSSIM_POW)}", position)
        return float(value)

    def rows(self, vector: tuple[float, ...] | str) -> tuple[int, ...]:
        """`[ROWS]` after a direction: which rows (directions) of its file to render."""
        start = self.pos
        self.take()  # [
        if not isinstance(vector, str) or vector.startswith("random"):
            raise self.fail("rows ([...]) select directions of a file; this direction is not read from a file", start)
        self.skip_space()
        match = _CHANNELS.match(self.text, self.pos)
        if not match:
            raise self.fail("expected rows like 3, 0-63 or 0,5,9-12")
        try:
            rows = parse_channels(match.group(0), "row")
        except ValueError as error:
            raise self.fail(str(error)) from None
        self.pos = match.end()
        self.expect("]")
        return rows  # type: ignore[return-value]

    def interpolation(self) -> Interpolation:
        self.take()  # interpolate
        self.expect("(")
        start = _checked(self, self.target(), single=True)
        self.expect(",")
        end = _checked(self, self.target(), single=True)
        self.expect(",")
        self.expect("frames")
        self.expect("=")
        kind, value = self.take()
        if kind != "number" or not value.isdigit() or len(value) > 4 or not 2 <= int(value) <= MAX_FRAMES:
            raise self.fail(f"expected a number of frames from 2 to {MAX_FRAMES}")
        self.expect(")")
        return Interpolation(start, end, int(value))

    def position(self) -> tuple[int, int]:
        values = {}
        for axis in ("y", "x"):
            if axis == "x":
                self.expect(",")
            self.expect(axis)
            self.expect("=")
            kind, value = self.take()
            if kind != "number" or not value.isdigit():
                raise self.fail(f"expected a position index for {axis}")
            values[axis] = self.index(value, "position")
        return values["y"], values["x"]

    def vector(self) -> tuple[float, ...] | str:
        kind, value = self.take()
        if kind == "string":
            return value[1:-1]
        if kind == "name" and value == "random":
            if self.at(":"):
                self.take()
                self.skip_space()
                position = self.pos
                kind, count = self.take()
                if kind != "number" or not count.isdigit() or not count.strip("0"):
                    raise self.fail("expected the number of random directions")
                if len(count.lstrip("0")) > len(str(MAX_UNITS)) or int(count) > MAX_UNITS:
                    raise self.fail(_too_many(f"random:{count} names {count} directions"), position)
                return f"random:{int(count)}"
            self.expect("[")
            kind, index = self.take()
            if kind != "number" or not index.isdigit():
                raise self.fail("expected the index of a random direction")
            index = self.index(index, "direction")
            self.expect("]")
            return f"random[{index}]"
        if value == "[":
            start, numbers = self.pos - 1, []
            while True:
                sign = 1.0
                if self.at("-"):
                    self.take()
                    sign = -1.0
                self.skip_space()
                position = self.pos
                kind, number = self.take()
                if kind != "number":
                    raise self.fail(f"expected a number, found {number!r}")
                numbers.append(sign * self.number(number, position))
                if self.at("]"):
                    self.take()
                    if not any(numbers):
                        raise self.fail("a direction of all zeros points nowhere; give a vector with a non-zero entry", start)
                    return tuple(numbers)
                self.expect(",")
        raise self.fail("expected a vector: [numbers], 'FILE.npy', 'FILE.pt' or random:K")


def parse_target(text: str) -> Target | Interpolation:
    """Parse a target; TargetError (a ValueError) names the column of the first problem."""
    if not text.strip():
        raise TargetError("empty target; expected e.g. mixed4a:0-511")
    if len(text) > MAX_TARGET_CHARS:  # the text itself is not quoted: it is too long for one line
        raise TargetError(
            f"{len(text)} characters, too long (at most {MAX_TARGET_CHARS}); put a long direction vector in a .npy file"
        )
    parser = _Parser(text)
    if re.match(r"\s*interpolate\s*\(", text):
        result = parser.interpolation()
    else:
        result = _checked(parser, parser.target(), single=False)
    parser.skip_space()
    if parser.pos < len(text):
        raise parser.fail(f"unexpected {text[parser.pos]!r}")
    return result


def _checked(parser: _Parser, terms: list[tuple[float, Atom]], single: bool) -> Target:
    multiple = [atom for _, atom in terms if atom.multiple]
    if len(multiple) > (0 if single else 1):
        what = "the ends of an interpolation name one unit each" if single else "only one atom of a target may name several units"
        raise TargetError(f"{multiple[-1].describe()} in {parser.text!r}: {what}")
    return Target(tuple(terms))
