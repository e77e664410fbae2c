"""fv: batch-render feature visualizations of vision models.

The Python API (fvcli.api) loads on first use, so that `import fvcli` stays light:

    import fvcli
    result = fvcli.render(model, "layer3:0-15", steps=256, size=128)
    fvcli.layers(model)
    fvcli.examples(model, "layer3:0-15", images="photos/")
    fvcli.render(model, fvcli.channel("layer3", 5) - 0.5 * fvcli.neuron("layer4", 3))
"""

from fvcli.version import __version__

_API = ("render", "layers", "examples", "activation_atlas", "Atlas", "Result", "JobResult", "Examples", "LayerExamples")
# The target grammar as Python objects (fvcli.specs.expressions): channel("layer3", 5) - 0.5 * neuron(...)
_EXPRESSIONS = (
    "channel", "neuron", "deepdream", "logit", "probability", "direction", "direction_neuron", "caricature", "inversion",
    "interpolate", "target",
)

__all__ = ["__version__", *_API, *_EXPRESSIONS, "FvError"]


def __getattr__(name: str):
    if name in _API:
        from fvcli import api

        return getattr(api, name)
    if name in _EXPRESSIONS:
        from fvcli.specs import expressions

        return getattr(expressions, name)
    if name == "FvError":
        from fvcli.errors import FvError

        return FvError
    raise AttributeError(f"module 'fvcli' has no attribute {name!r}")
