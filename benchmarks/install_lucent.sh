#!/usr/bin/env bash
# Installs Lucent (PyPI torch-lucent) for `bench.py --vs-lucent` into benchmarks/.lucent, away from
# the project's environment. Lucent 0.1.8 calls kornia.get_rotation_matrix2d and kornia.warp_affine
# at kornia's top level, which kornia 0.6 removed: 0.5.11 is the newest that works with it. Its
# objectives import `decorator`, which an environment may lack (--no-deps installs none of its needs).
set -euo pipefail
cd "$(dirname "$0")"
pip install --quiet --no-deps --target .lucent torch-lucent==0.1.8 kornia==0.5.11 decorator==5.1.1
echo "Lucent installed in $(pwd)/.lucent"
