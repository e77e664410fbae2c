"""fv's version: one place, read by the package, its records and the build (pyproject.toml)."""

__version__ = "0.1.0"
