"""Helpers shared by the optimize tests."""

import torch

from joulepath.model.transformer import Linear


def random_linear(k: int, n: int, bias: bool, seed: int = 0) -> Linear:
    """A seeded (k, n) projection with small weights, in the model's (in, out) layout."""
    gen = torch.Generator().manual_seed(seed)
    layer = Linear(k, n, bias=bias)
    layer.weight.data = torch.randn(k, n, generator=gen) * 0.05  # (in, out)
    if layer.bias is not None:
        layer.bias.data = torch.randn(n, generator=gen)
    return layer
