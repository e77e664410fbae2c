"""Diversity: several images of one unit, pushed apart in style (the article's diversity term).

Each image's style is the Gram matrix of a layer's activations (channel by channel correlations
over positions). The penalty of a group is the mean cosine similarity between the Gram matrices of
its images, over all ordered pairs: 0 for orthogonal styles, 1 for identical ones.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fvcli.models.layer_keys import Layout, channels_first


def gram_similarity(acts: Tensor, layout: Layout | None) -> Tensor:
    """Mean pairwise cosine similarity of the images' Gram matrices; acts of one group (n >= 2)."""
    a = channels_first(acts, layout).float()
    n, c = a.shape[0], a.shape[1]
    flat = a.reshape(n, c, -1)
    grams = flat @ flat.transpose(1, 2) / flat.shape[-1]  # (n, C, C)
    grams = torch.nn.functional.normalize(grams.reshape(n, -1), dim=1, eps=1e-10)
    similarity = grams @ grams.T  # (n, n), 1 on the diagonal
    return (similarity.sum() - similarity.diagonal().sum()) / (n * (n - 1))

