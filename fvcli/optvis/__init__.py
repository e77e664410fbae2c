"""Optimizing images (Lucid's optvis): the engine, objectives, parameterizations, transforms, regularizers."""
