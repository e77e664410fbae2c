"""The memory bound of an activation atlas: what collecting, laying out and whitening its samples
may take beyond fv itself (Python, torch and the model), estimated from the settings and the
layer's width before anything is collected, and refused in one line when it exceeds ATLAS_MEMORY.

The figures are upper bounds measured on this code (peak RSS, numpy and umap-learn 0.5):

    UMAP_FIXED      importing umap-learn and numba, and a fit's fixed part (283 MB at 1,000 samples)
    NEIGHBOUR_ROWS  the exact neighbour search's blocks of distances (activation_layout.exact_neighbours)
    per value       16 bytes a sample a channel: the samples in float32 as collected, kept, and
                    laid out, and the search's float64 copy
    per neighbour   48 bytes a sample a neighbour: UMAP's graph and its symmetrized copies
    whitening       32 bytes a channel squared: the covariance, its ridge, its inverse (float64)
"""

from __future__ import annotations

from fvcli.errors import FvError

ATLAS_MEMORY = 2 << 30  # bytes: what an atlas's samples and layout may take (README: Limits on input)
UMAP_FIXED = 400 << 20
NEIGHBOUR_ROWS = 1 << 23  # values in one block of the neighbour search (64 MiB of float64)
SEARCH_BLOCKS = 3 * 8 * NEIGHBOUR_ROWS  # a block of distances, its ranks and their order
PER_VALUE, PER_NEIGHBOUR, PER_WHITENED = 16, 48, 32
MAX_WHITEN_CHANNELS = 4096  # whitening inverts a channels x channels matrix: time grows with channels^3


def atlas_bytes(samples: int, channels: int, n_neighbors: int, whiten: bool) -> int:
    """The most an atlas of `samples` samples of a `channels`-wide layer may take (see above)."""
    whitening = PER_WHITENED * channels * channels if whiten else 0
    return UMAP_FIXED + SEARCH_BLOCKS + samples * (PER_VALUE * channels + PER_NEIGHBOUR * n_neighbors) + whitening


def check_atlas_memory(where: str, samples: int, channels: int, n_neighbors: int, whiten: bool) -> None:
    """FvError unless the atlas fits ATLAS_MEMORY (and whitening MAX_WHITEN_CHANNELS), before collecting."""
    if whiten and channels > MAX_WHITEN_CHANNELS:
        raise FvError(
            f"{where}--whiten inverts a {channels:,} x {channels:,} covariance (memory grows with channels^2, time with "
            f"channels^3); fv whitens layers of at most {MAX_WHITEN_CHANNELS:,} channels: leave --whiten off"
        )
    need = atlas_bytes(samples, channels, n_neighbors, whiten)
    if need > ATLAS_MEMORY:
        raise FvError(
            f"{where}{samples:,} samples of {channels:,} channels with n_neighbors {n_neighbors} would take about "
            f"{need / (1 << 30):.1f} GiB; an atlas takes at most {ATLAS_MEMORY / (1 << 30):g} GiB: lower --samples or "
            "--n-neighbors, or use fewer images"
        )
