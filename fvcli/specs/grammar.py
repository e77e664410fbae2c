"""The target grammar: what to render, as text, parsed into fvcli.specs.targets objects. This module
is the one place that text is parsed.

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
import re

from fvcli.specs.channels import EXPECTED_CHANNELS, channel_index, parse_channels, too_many
from fvcli.specs.limits import MAX_DEPTH, MAX_TARGET_CHARS, MAX_UNITS, MAX_WEIGHT, MIN_WEIGHT, non_ascii_digit, show
from fvcli.specs.targets import Atom, CLASS_KINDS, DIRECTIONS, Interpolation, MAX_COSSIM_POW, PHOTOS, Target

_CALLS = {"channel", "neuron", "layer", "deepdream", *DIRECTIONS, *PHOTOS}

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
            if abs(w) < MIN_WEIGHT:  # 0 * a, or 1e-300 * a, which float32 reads as 0: a flat unit
                raise self.fail(f"weight {show(w)} is too small (at least {show(MIN_WEIGHT)} in magnitude; a smaller one leaves the unit flat)", start)
        return terms

    def number(self, text: str, start: int) -> float:
        """A number token, finite and at most MAX_WEIGHT in magnitude (1e999 parses as infinity)."""
        value = float(text)
        if not abs(value) <= MAX_WEIGHT:
            raise self.fail(f"number {text} is too large (at most {show(MAX_WEIGHT)} in magnitude)", start)
        return value

    def index(self, text: str, what: str) -> int:
        try:
            return channel_index(text, what)
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
            raise self.fail(EXPECTED_CHANNELS + (f"; write digits as 0-9, not {digit!r}" if digit else ""))
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
        if kind_word in CLASS_KINDS and self.at(":"):
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
        negative = value == "-" and self.peek() is not None  # -0 is 0 (Python's f"{-0.0:g}" writes it)
        if negative:
            kind, value = self.take()
        if kind != "number" or not float(value) <= MAX_COSSIM_POW or (negative and float(value) != 0):
            raise self.fail(f"expected a power from 0 to {show(MAX_COSSIM_POW)}", position)
        return float(value) + 0.0

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
                    raise self.fail(too_many(f"random:{count} names {count} directions"), position)
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
