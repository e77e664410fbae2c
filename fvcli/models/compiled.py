"""torch.compile of a model's forward pass up to the layers a job reads.

fv's eager forward stops at the deepest layer with a hook that raises (fvcli.models.capture), which
Dynamo cannot trace. The compiled path traces the model with torch.fx instead, keeps only the
nodes the requested layers need (torchvision's feature extraction), and compiles that. A model
that torch.fx cannot trace stays eager, and the sidecar says why. So do forwards that read a
pre-ReLU twin: fv finds those by watching ReLU calls (fvcli.models.prerelu), which a traced graph does not make.

Compiled forwards are kept per model and layer set and reused by every batch; Dynamo compiles
each batch shape once (dynamic=False), so a run's last, smaller batch costs one more compile.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch import Tensor, nn

from fvcli.models.calls import module_call
from fvcli.models.layer_keys import select, split_key
from fvcli.models.prerelu import twin_base

MODE = "default"  # inductor's mode; max-autotune is measured by benchmarks/bench.py --compile-probe


class CompiledForward:
    """Callable like capture.forward_to for one set of layers: x -> {layer key: output}."""

    def __init__(self, module: nn.Module, layers: tuple[str, ...], mode: str | None = MODE, backend: str = "inductor"):
        from torchvision.models.feature_extraction import create_feature_extractor

        self.layers = layers
        paths = list(dict.fromkeys(split_key(key)[0] for key in layers))
        if "" in paths:
            raise ValueError("the model's own output is read; fv compiles truncated networks only")
        # Raises when torch.fx cannot trace the model (data-dependent control flow, say).
        extractor = create_feature_extractor(module, return_nodes={path: path for path in paths})
        self.function = torch.compile(extractor, mode=mode if backend == "inductor" else None, backend=backend, dynamic=False)
        self.compile_seconds = 0.0  # the calls that compiled (the first of each batch shape)
        self._shapes: set[tuple] = set()

    def __call__(self, x: Tensor) -> dict[str, Tensor]:
        shape = (tuple(x.shape), x.dtype, torch.is_autocast_enabled(x.device.type))
        first = shape not in self._shapes
        started = time.perf_counter()
        outputs = self.function(x)
        if first:
            if x.is_cuda:
                torch.cuda.synchronize(x.device)
            self.compile_seconds += time.perf_counter() - started
            self._shapes.add(shape)
        return {key: select(outputs[split_key(key)[0]], key) for key in self.layers}


def compile_forward(module: nn.Module, layers: tuple[str, ...], mode: str = MODE, backend: str = "inductor") -> tuple[Callable | None, str | None]:
    """A compiled forward for `layers`, or (None, why not). `backend`: torch.compile's (the tests
    use aot_eager: Dynamo's tracing and AOT autograd without inductor's slow code generation)."""
    names = {name for name, _ in module.named_modules()}
    twins = [key for key in layers if twin_base(names, key)]
    later = [key for key in layers if module_call(names, split_key(key)[0])[1] > 1]
    if later:
        return None, f"later calls of a module run eager ({', '.join(later)}): a traced graph names a module's first call only"
    if twins:
        return None, f"pre-ReLU layers run eager ({', '.join(twins)}): fv finds them by watching ReLU calls, which a compiled graph does not make"
    try:
        return CompiledForward(module, layers, mode, backend), None
    except Exception as error:  # noqa: BLE001 - any tracing failure means: stay eager
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        return None, f"torch.fx cannot trace the model ({type(error).__name__}: {first})"
