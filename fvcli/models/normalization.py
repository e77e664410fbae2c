"""Input normalization: a model's (mean, std) per input channel, shared by the model sources.

Kept apart from `models` so that `sources` and `weights`, which `models` builds on, can name it
without importing `models` back.
"""

from __future__ import annotations

Normalization = tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std) per input channel
IMAGENET: Normalization = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
