"""Converters: a raw option value (a string from the command line, or a YAML value) into its typed
form, or ValueError("expected ..., got ...") naming what was wrong. Callers add where the value came
from. Every bound is a named limit (fvcli.specs.limits); the vocabularies below are the words an
option takes.
"""

from __future__ import annotations

import difflib
import operator
import os
import re
import stat
from typing import Any, Callable

from fvcli.specs.limits import (
    INTEGER, MAX_LR, MAX_MEAN, MAX_ROTATE, MAX_SAVE_STEPS, MAX_SIZE, MAX_STEPS, MAX_WEIGHT, NUMBER, SCALE_RANGE, STD_RANGE,
    non_ascii_digit, show,
)

PARAMETERIZATIONS = ("fourier", "pixel", "lowres", "laplacian", "maco", "cppn")
TRANSFORM_PRESETS = ("auto", "robust", "standard", "none")
NORMALIZE_NAMES = ("model", "imagenet", "none")


def _got(value: Any) -> str:
    digit = non_ascii_digit(value) if isinstance(value, str) else None
    hint = f"; write digits as 0-9, not {digit!r}" if digit else ""
    shown = repr(value)
    if len(shown) > 100:  # a message stays one readable line
        shown = shown[:96] + "...'"[: 4 if isinstance(value, str) else 3]
    return f"got {shown}{hint}"


def int_in(value: Any, minimum: int, maximum: int | None, what: str) -> int:
    if isinstance(value, str) and INTEGER.fullmatch(value.strip()) and len(value.strip()) <= 40:
        value = int(value)
    if not isinstance(value, (int, str, float)) and hasattr(value, "__index__"):
        value = operator.index(value)  # numpy's and torch's integers (not their floats: no __index__)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected {what}, {_got(value)}")
    if value < minimum or (maximum is not None and value > maximum):
        limit = f" (at most {maximum})" if maximum is not None and value > maximum else ""
        raise ValueError(f"expected {what}{limit}, {_got(value)}")
    return value


def positive_int(maximum: int | None = None) -> Callable[[Any], int]:
    return lambda value: int_in(value, 1, maximum, "a positive integer")


def seed_int(value: Any) -> int:
    return int_in(value, 0, 2**63 - 1, "a non-negative integer")


def number(value: Any) -> float:
    """A number from YAML, or from text of ASCII digits; ValueError for other text ('٣', '1_000').

    It may be infinite ('inf', '1e999') or NaN ('nan', YAML's .nan): callers check ranges with
    comparisons that NaN fails.
    """
    if isinstance(value, str):
        if not NUMBER.fullmatch(value.strip()):
            raise ValueError(f"not a number: {value!r}")
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"not a number: {value!r}")
    try:
        return float(value)
    except OverflowError:  # a YAML integer beyond floats
        return float("inf") if value > 0 else float("-inf")


def float_in(value: Any, what: str, accept: Callable[[float], bool], maximum: float) -> float:
    try:
        converted = number(value)
    except ValueError:
        raise ValueError(f"expected {what}, {_got(value)}") from None
    if not accept(converted):  # NaN too
        raise ValueError(f"expected {what}, {_got(value)}")
    if converted > maximum:
        raise ValueError(f"expected {what} (at most {show(maximum)}), {_got(value)}")
    return converted


def learning_rate(value: Any) -> float:
    return float_in(value, "a positive number", lambda x: x > 0, MAX_LR)


def weight(value: Any) -> float:
    return float_in(value, "a number of 0 or more", lambda x: x >= 0, MAX_WEIGHT)


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return value.lower() in ("true", "yes", "on", "1")
    raise ValueError(f"expected true or false, {_got(value)}")


def choice(*names: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in names:
            close = difflib.get_close_matches(str(value), names, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ValueError(f"expected one of {', '.join(names)}, {_got(value)}{hint}")
        return value

    return convert


def text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, {_got(value)}")
    if "\x00" in value:  # no file name or model name holds one; the OS refuses it ("embedded null byte")
        raise ValueError(f"expected text without a NUL character (\\0), got {value!r:.60}")
    return value


def parameterization(value: Any) -> str:
    """A parameterization's name; `fft` is another name for `fourier`."""
    return choice(*PARAMETERIZATIONS)("fourier" if value == "fft" else value)


def step_list(value: Any) -> tuple[int, ...]:
    """`64,128,256` (or a YAML list, or one number): steps in strictly increasing order; none: ()."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return ()
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
    expected = "expected steps in increasing order, such as 64,128,256"
    if len(items) > MAX_SAVE_STEPS:
        raise ValueError(f"{expected} (at most {MAX_SAVE_STEPS} of them), got {len(items)} steps")
    steps = []
    for item in items:
        try:
            steps.append(int_in(item.strip() if isinstance(item, str) else item, 1, MAX_STEPS, "a positive integer"))
        except ValueError:
            raise ValueError(f"{expected}, {_got(value)}") from None
    if any(a >= b for a, b in zip(steps, steps[1:])):
        raise ValueError(f"{expected}, {_got(value)}")
    return tuple(steps)


def photo(value: Any) -> str | None:
    """A photo file (`--init`): its absolute path, relative to the working folder; none: None.
    Only what the file system says is checked here; reading it as an image comes later."""
    if isinstance(value, os.PathLike):  # the Python API may pass a Path
        value = os.fspath(value)
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    path = os.path.abspath(os.path.expanduser(text(value)))
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file; expected a photo (JPEG, PNG)") from None
    except OSError as error:
        raise ValueError(f"{path}: cannot read it ({error.strerror or error})") from None
    if stat.S_ISDIR(mode):
        raise ValueError(f"{path}: a folder; expected a photo file (JPEG, PNG)")
    if not stat.S_ISREG(mode):
        raise ValueError(f"{path}: not a regular file; expected a photo (JPEG, PNG)")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{path}: cannot read it (permission denied)")
    return path


def non_negative_int(value: Any) -> int:
    return int_in(value, 0, MAX_STEPS, "an integer of 0 or more")


_TRANSFORM_ITEMS = ("pad", "jitter", "scale", "rotate")
_TRANSFORMS_EXPECTED = (
    "expected auto, robust, standard, none, or items like pad=12,jitter=8,scale=0.9/1/1.1,rotate=-10/0/10,jitter=4 "
    "(a list of {pad: N}, {jitter: N}, {scale: [...]}, {rotate: [...]} in a spec)"
)


def transforms(value: Any) -> Any:
    """A preset name, `pad=12,jitter=8,scale=0.9/1/1.1,...` text, or a YAML list of one-key mappings.

    Item by item, the result is a tuple of (name, value) pairs: pad and jitter take pixels, scale
    takes factors and rotate degrees, each drawn uniformly from its list at every step.
    """
    if value in TRANSFORM_PRESETS:
        return value
    if isinstance(value, str):
        items = []
        for part in value.split(","):
            name, sep, raw = part.strip().partition("=")
            if not sep:
                raise ValueError(f"{_TRANSFORMS_EXPECTED}, {_got(value)}")
            items.append((name.strip(), raw.split("/") if name.strip() in ("scale", "rotate") else raw))
    elif isinstance(value, list):
        items = []
        for item in value:
            if not isinstance(item, dict) or len(item) != 1:
                raise ValueError(f"{_TRANSFORMS_EXPECTED}, {_got(item)}")
            items.extend(item.items())
    else:
        raise ValueError(f"{_TRANSFORMS_EXPECTED}, {_got(value)}")
    checked = []
    for name, raw in items:
        if name not in _TRANSFORM_ITEMS:
            raise ValueError(f"unknown transform {name!r}; expected one of {', '.join(_TRANSFORM_ITEMS)}")
        if name in ("pad", "jitter"):
            checked.append((name, int_in(raw, 0, MAX_SIZE, f"{name}: a number of pixels")))
            continue
        values = raw if isinstance(raw, (list, tuple)) else [raw]
        try:
            numbers = tuple(number(v) for v in values)
        except ValueError:
            raise ValueError(f"{name}: expected a list of numbers, {_got(raw)}") from None
        low, high = SCALE_RANGE if name == "scale" else (-MAX_ROTATE, MAX_ROTATE)
        if not numbers or not all(low <= v <= high for v in numbers):  # NaN fails too
            what = "factors" if name == "scale" else "degrees"
            raise ValueError(f"{name}: expected a non-empty list of {what} from {show(low)} to {show(high)}, {_got(raw)}")
        checked.append((name, numbers))
    return tuple(checked)


def shard(value: Any) -> tuple[int, int] | None:
    """`I/N`: the I-th of N disjoint slices of a run's units, 0 <= I < N."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*([0-9]{1,9})\s*/\s*([0-9]{1,9})\s*", str(value))
    if not match or not int(match.group(1)) < int(match.group(2)):
        raise ValueError(f"expected I/N with 0 <= I < N, such as 0/4, {_got(value)}")
    return int(match.group(1)), int(match.group(2))


def weights(value: Any) -> str:
    """`default`, `random`, or a path to a state dict."""
    return text(value)


def device(value: Any) -> str:
    if isinstance(value, str) and re.fullmatch(r"auto|cpu|cuda(:[0-9]{1,4})?|mps", value):
        return value
    raise ValueError(f"expected auto, cpu, cuda, cuda:N or mps, {_got(value)}")


def count_or_auto(maximum: int) -> Callable[[Any], int | None]:
    def convert(value: Any) -> int | None:
        if value is None or value == "auto":
            return None
        return int_in(value, 1, maximum, "a positive integer or auto")

    return convert


MAX_IMAGE_CHANNELS = 16  # more than any imaging model we know of takes (RGB, infrared, depth ...)


def _per_channel(value: Any) -> tuple[float, ...]:
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= MAX_IMAGE_CHANNELS:
        raise ValueError
    return tuple(number(v) for v in value)


def normalize(value: Any) -> Any:
    """`model`, `imagenet`, `none`, `M,M,M/S,S,S` (text) or {mean: [...], std: [...]} (YAML): one
    mean and one standard deviation per image channel (3 for RGB, 1 for grayscale)."""
    expected = "expected model, imagenet, none, MEAN,MEAN,MEAN/STD,STD,STD (one per image channel) or {mean: [...], std: [...]}"
    if value in NORMALIZE_NAMES:
        return value
    try:
        if isinstance(value, dict) and set(value) == {"mean", "std"}:
            mean, std = _per_channel(value["mean"]), _per_channel(value["std"])
        elif isinstance(value, str) and value.count("/") == 1:
            mean, std = (_per_channel(part) for part in value.split("/"))
        else:
            raise ValueError
        if len(mean) != len(std):
            raise ValueError
    except (ValueError, TypeError):
        raise ValueError(f"{expected}, {_got(value)}") from None
    low, high = STD_RANGE
    if not all(-MAX_MEAN <= m <= MAX_MEAN for m in mean) or not all(low <= s <= high for s in std):  # NaN fails
        raise ValueError(
            f"expected means from -{show(MAX_MEAN)} to {show(MAX_MEAN)} and standard deviations from {show(low)} "
            f"to {show(high)}, {_got(value)}"
        )
    return (mean, std)
