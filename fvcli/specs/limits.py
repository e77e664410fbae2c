"""Limits on input: every size and number fv accepts is checked against these before anything is
built from it, so bad input fails at once in one line instead of filling memory or the sidecar.
docs/reliability.md (Limits on input) lists them; tests/test_bad_input.py checks each.
"""

from __future__ import annotations

import re

MAX_SIZE = 2048  # px; larger images do not fit a batch on any device we know of
MAX_STEPS = 100_000
MAX_UNITS = 100_000  # units a job may name (a channel range, random:K); checked before expanding
MAX_INDEX = 99_999_999  # a channel, direction or position index; no layer we know has 10**8 channels
MAX_DEPTH = 32  # parentheses and calls nested in a target
MAX_TARGET_CHARS = 65_536  # room for an inline direction of a 2,048-channel layer
MAX_SPEC_BYTES = 1 << 20  # 1 MiB of YAML
MAX_WORKERS = 256  # worker processes; also never more than the run's units
MAX_BATCH = 65_536  # images in one batch (--batch-size)
MAX_THREADS = 1024  # CPU threads (--threads)
MAX_SAVE_STEPS = 64  # --save-steps: intermediate images kept per image
MAX_IMAGE_BYTES = 1 << 30  # an image file (--init, a photo): 2^28 pixels of 4 bytes, uncompressed
MAX_ATLAS_GRID = 100  # an activation atlas of at most 100 x 100 cells: 10,000 icons, a 4,800 px image of 48 px icons
MAX_ATLAS_SAMPLES = 1024  # positions sampled per image for an activation atlas
MAX_ATLAS_POINTS = 100_000  # samples laid out by UMAP in one atlas: 50,000 took 8.5 minutes; atlas_memory bounds its memory

MAX_LR = 1000.0
MAX_WEIGHT = 1e6  # penalty weights, target weights and the entries of direction vectors, in magnitude
MIN_WEIGHT = 1e-6  # a target's weights, in magnitude: 1e-300 underflows in float32, and 0 leaves a unit flat
MAX_MEAN = 1000.0  # --normalize means, in magnitude
STD_RANGE = (1e-6, 1000.0)  # --normalize standard deviations
SCALE_RANGE = (0.1, 10.0)  # transforms: scale factors
MAX_ROTATE = 360.0  # transforms: degrees, in magnitude

# A number as text: ASCII digits only (Python's float() and int() also take other scripts' digits and
# '_' separators). nan and inf parse, so that range checks, which they fail, say what is expected.
NUMBER = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?|nan|inf|infinity)", re.IGNORECASE)
INTEGER = re.compile(r"[+-]?[0-9]+")


def show(value: float) -> str:
    """A limit as people write it: 1e6, 1000, 1e-06 -> 1e-6."""
    text = f"{value:g}"
    return re.sub(r"e([+-])0*(\d)", lambda m: "e" + ("-" if m.group(1) == "-" else "") + m.group(2), text)


def non_ascii_digit(text: str) -> str | None:
    """The first digit of another script in `text` (such as '٣' or '３'), for a hint."""
    return next((ch for ch in text if ch.isdigit() and not ch.isascii()), None)
