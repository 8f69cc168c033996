import pytest
import torch

from joulepath.model import DenseCausalAttention, LoadedModel, load_model


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    """A float64 tiny model: exactness tests compare argmaxes, so keep rounding far from ties."""
    return load_model("dummy:tiny-llama", dtype=torch.float64, seed=1)


@pytest.fixture(scope="module")
def tiny_mistral() -> LoadedModel:
    return load_model("dummy:tiny-mistral", dtype=torch.float64, seed=2)


@torch.no_grad()
def reference_greedy(loaded: LoadedModel, ids: list[int], n: int) -> list[int]:
    """Greedy decoding by full recomputation with dense attention: no cache involved."""
    device = next(loaded.model.parameters()).device
    seq = list(ids)
    for _ in range(n):
        attend = DenseCausalAttention([len(seq)], loaded.config.sliding_window)
        tokens, positions = torch.tensor(seq, device=device), torch.arange(len(seq), device=device)
        seq.append(int(loaded.model(tokens, positions, attend)[-1].argmax()))
    return seq[len(ids) :]
