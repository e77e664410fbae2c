"""The networks: the registry, sources and weights, layer keys, capture, pre-ReLU twins, folding, compile."""
