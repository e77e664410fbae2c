"""Make configs/article/dictionary.npy: a stand-in for a learned dictionary of directions in
InceptionV1's mixed4a (508 channels), so that configs/article/dictionary.yaml runs offline.

Sparse autoencoders, NMF and PCA give such dictionaries as a K x C matrix, one direction a row; fv
renders each row as a unit (`direction(mixed4a, 'dictionary.npy')`). This one has 8 rows, each a
non-negative mix of 3 channels with unit length, as an NMF or a sparse autoencoder's decoder rows
often are. Deterministic:

    python configs/make_dictionary.py

For a real dictionary, save your own matrix: `numpy.save("dirs.npy", nmf.components_)` (rows of the
layer's width), or `torch.save(sae.decoder.weight.T, "dirs.pt")`.
"""

from __future__ import annotations

from pathlib import Path

import numpy

FILE = Path(__file__).parent / "article" / "dictionary.npy"
ROWS, CHANNELS, PER_ROW = 8, 508, 3


def dictionary() -> numpy.ndarray:
    rng = numpy.random.default_rng(2017)  # the article's year: any fixed seed will do
    matrix = numpy.zeros((ROWS, CHANNELS), dtype=numpy.float32)
    for row in matrix:
        row[rng.choice(CHANNELS, PER_ROW, replace=False)] = rng.uniform(0.5, 1.0, PER_ROW)
    return matrix / numpy.linalg.norm(matrix, axis=1, keepdims=True)


if __name__ == "__main__":
    numpy.save(FILE, dictionary())
    print(f"wrote {ROWS} directions of {CHANNELS} channels to {FILE}")
