"""fv: batch-render feature visualizations of vision models.

The Python API (fvcli.api) loads on first use, so that `import fvcli` stays light:

    import fvcli
    result = fvcli.render(model, "layer3:0-15", steps=256, size=128)
    fvcli.layers(model)
"""

import sys
import types

from fvcli.version import __version__

__all__ = ["__version__", "render", "layers", "Result", "JobResult", "FvError"]


def __getattr__(name: str):
    if name in ("render", "layers", "Result", "JobResult"):
        from fvcli import api

        return getattr(api, name)
    if name == "FvError":
        from fvcli.errors import FvError

        return FvError
    raise AttributeError(f"module 'fvcli' has no attribute {name!r}")


class _Package(types.ModuleType):
    """`fvcli.layers` is the API's function, though `fvcli.layers` is also a submodule (layer keys
    and listing): importing the submodule sets this attribute, which keeps the module aside.
    `from fvcli.layers import ...` reads the submodule from sys.modules, as ever."""

    @property
    def layers(self):
        from fvcli.api import layers

        return layers

    @layers.setter
    def layers(self, module) -> None:
        self.__dict__["_layers_module"] = module


sys.modules[__name__].__class__ = _Package
