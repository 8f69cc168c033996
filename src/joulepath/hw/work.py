"""What a configuration's requests cost in work, as measured where they were served: the hand-off from
local execution to the fleet projection.

`WorkProfile` holds what the engine did for a set of requests (prompt tokens it actually computed,
output tokens, the batches its scheduler reached) and the knobs later optimizations will measure
(prefix-cache hits, accepted draft tokens per step, bytes per weight, activation sparsity). Its
defaults are "no optimization", so `WorkProfile()` projects exactly what the hardware model alone
would. The fleet projection (`hw.fleet.project_trace`, through `hw.perf.steady_state`) applies it:

- prompt tokens computed / prompt tokens  -> prefill FLOPs scale by it; the KV context does not (a
  prefix-cache hit still occupies and is read from the cache);
- draft tokens per step: `k` proposed,    -> each decode step verifies `1 + k` tokens per sequence and
  `a` accepted                               emits `1 + a`: weights and KV are read once for them, GEMM/
                                             attention FLOPs and activations grow by `1 + k` (rejected
                                             drafts cost compute too); the proposer's own cost is not
                                             modelled;
- bytes per weight                        -> the fleet model's weight format (`WEIGHT_DTYPE_BY_BYTES`):
  weight reads, resident weights (so KV room) and the tensor cores it computes on;
- activation sparsity `s`                 -> a token skips a share `s` of FFN neurons: FFN width (dense
  and expert) scaled by `1 - s` in the step's reads and FLOPs; resident weights are unchanged;
- small-tier share `r` (tiered routing)   -> that share of the trace's requests runs on the fleet's small
                                             model on a pool of its own (`hw.fleet.pooled`, sized by
                                             `pool_split`); the rest on the fleet's model with every other
                                             ratio above (measured on the served model's own requests).

Token counts are measured totals of the requests served locally; the fleet keeps the trace's own
request lengths and takes the *ratios* above from the profile, because the model served here (a small
zoo model) is not the fleet's model. No torch: derivation from engine results lives in `joulepath.link`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from joulepath.hw.perf import TransformerSpec

#: Weight format of the fleet model for a measured bytes per weight. 1 byte is INT8 weights and
#: activations (W8A8, on INT8 tensor cores); 0.5 byte is INT4 weight-only (dequantised to BF16).
WEIGHT_DTYPE_BY_BYTES: dict[float, str] = {4.0: "fp32", 2.0: "bf16", 1.0: "int8", 0.5: "int4"}


@dataclass(frozen=True)
class WorkProfile:
    """Work of a configuration's requests, as served and measured (defaults: no optimization).

    >>> WorkProfile(prompt_tokens=1000, computed_prompt_tokens=500).computed_prompt_fraction
    0.5
    """

    requests: int = 0
    prompt_tokens: int = 0  # tokens in the prompts as sent
    computed_prompt_tokens: int = 0  # prompt tokens the engine ran through the model (prefix-cache hits skipped)
    output_tokens: int = 0
    batch_limit: int | None = None  # the scheduler's maximum batch (None: the fleet's own limit)
    mean_batch: float = 1.0  # sequences in flight while the engine was busy (time-weighted)
    peak_batch: int = 1  # most sequences in flight at once
    accepted_draft_tokens_per_step: float = 0.0  # per sequence per decode step (speculative decoding)
    proposed_draft_tokens_per_step: float | None = None  # verified per step; None: as many as accepted
    bytes_per_weight: float | None = None  # None: the fleet model's own weight format
    activation_sparsity: float = 0.0  # share of FFN neurons a token skips
    small_tier_share: float = 0.0  # share of requests a router sent to the small model tier (tiered routing)
    provenance: str = "assumed: no optimization (nothing served here)"

    def __post_init__(self) -> None:
        if not 0 <= self.computed_prompt_tokens <= self.prompt_tokens:
            raise ValueError(f"computed_prompt_tokens must be in 0..{self.prompt_tokens}")
        if self.accepted_draft_tokens_per_step < 0:
            raise ValueError("accepted_draft_tokens_per_step must be >= 0")
        if self.proposed_draft_tokens_per_step is not None and not (
            self.proposed_draft_tokens_per_step >= self.accepted_draft_tokens_per_step
        ):
            raise ValueError("proposed_draft_tokens_per_step must be >= accepted_draft_tokens_per_step")
        if not 0 <= self.activation_sparsity < 1:
            raise ValueError("activation_sparsity must be in [0, 1)")
        if not 0 <= self.small_tier_share <= 1:
            raise ValueError("small_tier_share must be in [0, 1]")
        if self.bytes_per_weight is not None and self.bytes_per_weight not in WEIGHT_DTYPE_BY_BYTES:
            allowed = ", ".join(f"{b:g}" for b in WEIGHT_DTYPE_BY_BYTES)
            raise ValueError(f"bytes_per_weight {self.bytes_per_weight:g} has no weight format; allowed: {allowed}")
        if self.batch_limit is not None and self.batch_limit < 1:
            raise ValueError("batch_limit must be >= 1")

    @property
    def prefix_hit_tokens(self) -> int:
        """Prompt tokens served from the prefix cache (not computed)."""
        return self.prompt_tokens - self.computed_prompt_tokens

    @property
    def computed_prompt_fraction(self) -> float:
        """Share of prompt tokens that cost prefill compute (1.0 with nothing measured)."""
        return self.computed_prompt_tokens / self.prompt_tokens if self.prompt_tokens else 1.0

    @property
    def tokens_per_step(self) -> float:
        """Output tokens one decode step emits per sequence."""
        return 1.0 + self.accepted_draft_tokens_per_step

    @property
    def verified_tokens_per_step(self) -> float:
        """Query tokens one decode step runs per sequence: the next token and every proposed draft."""
        proposed = self.proposed_draft_tokens_per_step
        return 1.0 + (self.accepted_draft_tokens_per_step if proposed is None else proposed)

    def resident_spec(self, spec: TransformerSpec) -> TransformerSpec:
        """The fleet model as stored on the devices: its weight format set by `bytes_per_weight`."""
        if self.bytes_per_weight is None:
            return spec
        return spec.with_dtypes(weight_dtype=WEIGHT_DTYPE_BY_BYTES[self.bytes_per_weight])

    def step_spec(self, spec: TransformerSpec) -> TransformerSpec:
        """The fleet model as one step touches it: resident format, FFN width thinned by sparsity."""
        spec = self.resident_spec(spec)
        if self.activation_sparsity == 0:
            return spec
        keep = 1.0 - self.activation_sparsity
        return dataclasses.replace(spec, d_ff=round(spec.d_ff * keep), d_ff_expert=round(spec.d_ff_expert * keep))
