"""fv: batch-render feature visualizations of vision models."""

__version__ = "0.1.0"
