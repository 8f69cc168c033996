"""Roofline performance and energy model of a decoder transformer served on accelerators.

Data flow: `TransformerSpec` (architecture) + `Deployment` (accelerator x parallelism x power limit)
+ `Efficiency` (achievable fractions, calibrated on measured H100 serving data, see
`hw/calibration.py`) -> `decode_step` / `prefill_step` -> `StepCost` (time, FLOPs, bytes per memory
level, utilisation, power, energy) -> `steady_state` (a serving engine in equilibrium at a batch
size: ITL, tokens/s, J per output token).

Everything this module returns is an estimate and says so in `provenance`.

    >>> spec = get_model_preset("llama-3.1-8b")
    >>> dep = Deployment(get_accelerator("h100-sxm"))
    >>> s = steady_state(spec, dep, batch=64, prompt_tokens=512, output_tokens=256)
    >>> 0.005 < s.itl_s < 0.05
    True
"""

from __future__ import annotations

import dataclasses
import functools
import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any

from joulepath.hw.catalog import Accelerator, Interconnect, UnknownHardwareError, get_interconnect, get_memory
from joulepath.hw.work import WorkProfile
from joulepath.units import movement_energy_j

#: Bytes per stored element. MXFP4: 4-bit values + one 8-bit scale per 32 = 4.25 bits (OCP MX spec).
DTYPE_BYTES: dict[str, float] = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
    "mxfp4": 4.25 / 8,
}
#: Tensor-core dtype a weight dtype computes in. Weight-only formats dequantize to BF16.
COMPUTE_DTYPE: dict[str, str] = {"fp8": "fp8", "int8": "int8"}
ESTIMATE = "estimated: roofline model (joulepath.hw.perf) with H100-calibrated efficiency"


@dataclass(frozen=True)
class TransformerSpec:
    """Architecture numbers of a decoder transformer (dense or MoE), as in a Hugging Face config."""

    name: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int  # FFN width of dense layers
    vocab_size: int
    tie_embeddings: bool = False
    n_experts: int = 0  # routed experts per MoE layer (0 = dense model)
    n_experts_active: int = 0  # experts each token is routed to
    d_ff_expert: int = 0
    n_shared_experts: int = 0
    moe_layer_step: int = 1  # every n-th layer after the dense prefix is MoE
    n_dense_layers: int = 0  # leading dense layers of an MoE model
    attn_params_per_layer_override: int | None = None  # MLA and other non-GQA attention
    kv_elems_per_token_layer_override: int | None = None
    sliding_window: int = 0  # tokens; 0 = all layers attend to the full context
    sliding_layer_fraction: float = 0.0
    weight_dtype: str = "bf16"
    kv_dtype: str = "bf16"
    source: str = ""

    def __post_init__(self) -> None:
        for dtype in (self.weight_dtype, self.kv_dtype):
            if dtype not in DTYPE_BYTES:
                raise ValueError(f"unknown dtype {dtype!r}; allowed: {', '.join(DTYPE_BYTES)}")
        if self.n_experts and not 0 < self.n_experts_active <= self.n_experts:
            raise ValueError(f"n_experts_active must be in 1..{self.n_experts}, got {self.n_experts_active}")

    @property
    def n_moe_layers(self) -> int:
        return 0 if self.n_experts == 0 else (self.n_layers - self.n_dense_layers) // self.moe_layer_step

    @property
    def attn_params_per_layer(self) -> int:
        if self.attn_params_per_layer_override is not None:
            return self.attn_params_per_layer_override
        q_o = 2 * self.d_model * self.n_heads * self.head_dim
        k_v = 2 * self.d_model * self.n_kv_heads * self.head_dim
        return q_o + k_v

    @property
    def expert_params(self) -> int:
        return 3 * self.d_model * self.d_ff_expert  # SwiGLU: gate, up, down

    @property
    def always_read_params(self) -> int:
        """Parameters every decode step reads regardless of routing, without the embedding table."""
        n_dense_ffn = self.n_layers - self.n_moe_layers
        shared = self.n_moe_layers * self.n_shared_experts * self.expert_params
        router = self.n_moe_layers * self.d_model * self.n_experts
        return self.n_layers * self.attn_params_per_layer + n_dense_ffn * 3 * self.d_model * self.d_ff + shared + router

    @property
    def lm_head_params(self) -> int:
        return self.vocab_size * self.d_model

    @property
    def params_total(self) -> int:
        embed = self.vocab_size * self.d_model * (1 if self.tie_embeddings else 2)
        return self.always_read_params + self.n_moe_layers * self.n_experts * self.expert_params + embed

    @property
    def params_active(self) -> int:
        """Parameters that multiply each token (routed experts counted at top-k), LM head included."""
        routed = self.n_moe_layers * self.n_experts_active * self.expert_params
        return self.always_read_params + routed + self.lm_head_params

    @property
    def kv_elems_per_token_layer(self) -> int:
        if self.kv_elems_per_token_layer_override is not None:
            return self.kv_elems_per_token_layer_override
        return 2 * self.n_kv_heads * self.head_dim

    @property
    def kv_bytes_per_token(self) -> float:
        """KV-cache bytes one token adds across all layers."""
        return self.n_layers * self.kv_elems_per_token_layer * DTYPE_BYTES[self.kv_dtype]

    def activation_bytes_per_token(self) -> float:
        """Activation reads and writes of one token through all layers (BF16): GEMM inputs and outputs,
        norms and residual adds, and the logits. Attention scores stay on chip (flash-style kernels)."""
        qkv = (self.n_heads + 2 * self.n_kv_heads) * self.head_dim
        moe_ff = (self.n_experts_active + self.n_shared_experts) * self.d_ff_expert
        n_dense = self.n_layers - self.n_moe_layers
        ff = (self.n_moe_layers * moe_ff + n_dense * self.d_ff) / self.n_layers
        per_layer = 8 * self.d_model + qkv + 2 * self.n_heads * self.head_dim + 3 * ff
        return DTYPE_BYTES["bf16"] * (self.n_layers * per_layer + self.vocab_size)

    def attended_tokens(self, context_tokens: float) -> float:
        """Context positions one query attends to, averaged over layers (sliding-window layers cap it)."""
        if self.sliding_window <= 0:
            return context_tokens
        windowed = min(context_tokens, self.sliding_window)
        return self.sliding_layer_fraction * windowed + (1 - self.sliding_layer_fraction) * context_tokens

    def attention_flops_per_token(self, context_tokens: float) -> float:
        """QK^T and AV FLOPs of one query token over its context, all layers."""
        return 4.0 * self.n_layers * self.n_heads * self.head_dim * self.attended_tokens(context_tokens)

    def expected_experts_touched(self, routed_tokens: float) -> float:
        """Distinct experts per MoE layer hit by `routed_tokens` tokens under uniform top-k routing."""
        if self.n_experts == 0:
            return 0.0
        miss = (1.0 - self.n_experts_active / self.n_experts) ** max(routed_tokens, 0.0)
        return self.n_experts * (1.0 - miss)

    def with_dtypes(self, weight_dtype: str | None = None, kv_dtype: str | None = None) -> TransformerSpec:
        return dataclasses.replace(
            self, weight_dtype=weight_dtype or self.weight_dtype, kv_dtype=kv_dtype or self.kv_dtype
        )


@dataclass(frozen=True)
class Deployment:
    """One serving unit: `tensor_parallel x data_parallel` devices of one accelerator type.

    Attention, dense FFN and LM head are sharded over `tensor_parallel` and replicated over
    `data_parallel` (each replica holds batch/data_parallel sequences); experts are sharded over
    `expert_parallel` devices (1 = sharded with tensor parallelism instead)."""

    accelerator: Accelerator
    tensor_parallel: int = 1
    data_parallel: int = 1
    expert_parallel: int = 1
    power_limit_w: float | None = None
    assumed_tdp_w: float | None = None  # for catalog entries whose TDP is not published
    link_name: str | None = None  # defaults to the accelerator's scale-up interconnect

    def __post_init__(self) -> None:
        if self.expert_parallel not in (1, self.n_devices):
            raise ValueError(
                f"expert_parallel must be 1 or tensor_parallel x data_parallel = {self.n_devices}, "
                f"got {self.expert_parallel}"
            )

    @property
    def n_devices(self) -> int:
        return self.tensor_parallel * self.data_parallel

    @property
    def tdp_w(self) -> float:
        tdp = self.assumed_tdp_w or self.accelerator.tdp_w
        if tdp is None:
            raise ValueError(
                f"{self.accelerator.name}: TDP is not published; set fleet.assumed_tdp_w in the scenario "
                "(it is then reported as an assumption)"
            )
        return tdp

    @property
    def power_ceiling_w(self) -> float:
        return min(self.tdp_w, self.power_limit_w) if self.power_limit_w else self.tdp_w

    @property
    def link(self) -> Interconnect | None:
        name = self.link_name or self.accelerator.scale_up
        return get_interconnect(name) if name else None


@dataclass(frozen=True)
class Efficiency:
    """Achievable-efficiency factors that turn roofline times into real ones, and the power curve.

    step time = linear_time_factor * max(weight bytes / BW, GEMM FLOPs / peak)
              + attention_time_factor * max(KV bytes / BW, attention FLOPs / peak)
              + step_overhead_s + layer_overhead_s * layers + seq_overhead_s * batch
              + collectives * collective_latency_s + link_time_factor * link bytes / link BW
    device power = TDP * (power_static_fraction + power_busy_fraction * busy)
                 + hbm_pj_per_byte * bytes/s + pj_per_flop * FLOP/s, within [idle, TDP]
    where busy is the share of the step spent in GEMM/attention kernels (the rest is host-side and
    launch overhead). The static and busy parts scale with the chip (its TDP); the energy per byte
    moved and per FLOP are physical constants of a process node and memory generation, which is
    what lets an H100 calibration carry over to B200 (same TSMC 4N-class node, HBM3/3e).
    """

    linear_time_factor: float = 1.3
    attention_time_factor: float = 2.0
    step_overhead_s: float = 1e-3
    layer_overhead_s: float = 2e-5
    seq_overhead_s: float = 2e-5
    collective_latency_s: float = 1e-5
    link_time_factor: float = 1.5
    power_static_fraction: float = 0.3
    power_busy_fraction: float = 0.2
    hbm_pj_per_byte: float = 100.0
    pj_per_flop: float = 0.5
    idle_fraction_of_tdp: float = 0.1  # assumption: vendors publish no idle power
    source: str = "uncalibrated defaults"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Efficiency:
        return cls(**raw)


@functools.cache
def calibrated_efficiency() -> Efficiency:
    """The shipped calibration (`hw/data/calibration.toml`, written by benchmarks/hwmodel_validation.py)."""
    text = resources.files("joulepath.hw").joinpath("data", "calibration.toml").read_text(encoding="utf-8")
    return Efficiency.from_dict(tomllib.loads(text)["efficiency"])


@dataclass(frozen=True)
class StepCost:
    """Cost of one engine step on one serving unit (all its devices). Units in names."""

    time_s: float
    flops: float
    hbm_bytes: float
    link_bytes: float
    compute_util: float  # achieved / peak FLOP/s, per device
    memory_util: float  # achieved / peak bytes/s, per device
    kernel_fraction: float  # share of the step in GEMM/attention kernels
    device_power_w: float  # each device
    energy_j: float  # all devices of the unit over the step
    provenance: str = ESTIMATE

    def movement_energy_j(self, dep: Deployment) -> dict[str, float | None]:
        """Energy of data movement per memory level (bytes x pJ/bit); None where pJ/bit is unpublished."""
        return data_movement_energy_j(dep, self.hbm_bytes, self.link_bytes)


@dataclass(frozen=True)
class _Work:
    """Per-device work of one step before efficiency factors are applied."""

    weight_bytes: float
    activation_bytes: float
    kv_bytes: float
    linear_flops: float
    attention_flops: float
    n_collectives: float
    link_bytes: float


def _weight_bytes_per_device(spec: TransformerSpec, dep: Deployment, tokens_per_replica: float) -> float:
    wb = DTYPE_BYTES[spec.weight_dtype]
    dense = spec.always_read_params * wb + spec.lm_head_params * DTYPE_BYTES["bf16"]
    dense_per_device = dense / dep.tensor_parallel
    routed_tokens = tokens_per_replica * dep.data_parallel if dep.expert_parallel > 1 else tokens_per_replica
    touched = spec.expected_experts_touched(routed_tokens)
    experts = spec.n_moe_layers * touched * spec.expert_params * wb
    experts_per_device = experts / (dep.expert_parallel if dep.expert_parallel > 1 else dep.tensor_parallel)
    return dense_per_device + experts_per_device


def _collectives(spec: TransformerSpec, dep: Deployment, tokens_per_replica: float) -> tuple[float, float]:
    """(number of collectives, bytes each device sends) for TP all-reduces and EP all-to-alls."""
    act = tokens_per_replica * spec.d_model * DTYPE_BYTES["bf16"]
    n, sent = 0.0, 0.0
    tp = dep.tensor_parallel
    if tp > 1:  # ring all-reduce after attention and after the FFN of every layer
        n += 2 * spec.n_layers
        sent += 2 * spec.n_layers * 2 * (tp - 1) / tp * act
    ep = dep.expert_parallel
    if ep > 1:  # dispatch + combine all-to-all per MoE layer
        n += 2 * spec.n_moe_layers
        sent += 2 * spec.n_moe_layers * spec.n_experts_active * act * (ep - 1) / ep
    return n, sent


KV_MEMORY_FRACTION = 0.9  # device memory share for weights + KV cache (vLLM default gpu_memory_utilization)


def kv_capacity_tokens(spec: TransformerSpec, dep: Deployment) -> float | None:
    """KV-cache capacity of one replica, in tokens of full-attention cache (`kv_bytes_per_token`), in
    `KV_MEMORY_FRACTION` of device memory next to the weights; None when the accelerator publishes no
    capacity, <= 0 when the weights do not fit. Experts sharded over all devices (expert_parallel > 1)
    are stored once per unit, every other weight once per replica."""
    mem_b = dep.accelerator.memory_capacity_bytes  # the catalog's GiB (vendors' "GB") x 2^30
    if mem_b is None:
        return None
    wb = DTYPE_BYTES[spec.weight_dtype]
    experts_b = spec.n_moe_layers * spec.n_experts * spec.expert_params * wb
    replicated_b = spec.params_total * wb - experts_b
    weights_b = replicated_b * dep.data_parallel + experts_b * (1 if dep.expert_parallel > 1 else dep.data_parallel)
    free_b = mem_b * dep.n_devices * KV_MEMORY_FRACTION - weights_b
    return free_b / dep.data_parallel / spec.kv_bytes_per_token


def _decode_work(
    spec: TransformerSpec, dep: Deployment, batch: float, context_tokens: float, tokens_per_seq: float = 1.0
) -> _Work:
    """Per-device work of a decode step; `tokens_per_seq` > 1 verifies draft tokens in the same step
    (weights and each sequence's KV are read once; GEMM/attention FLOPs and activations scale)."""
    per_replica = batch / dep.data_parallel
    tokens = per_replica * tokens_per_seq
    attended = spec.attended_tokens(context_tokens)
    # the running batch's cache cannot outgrow the memory next to the weights: vLLM admits (and
    # preempts) by free cache blocks, so at a batch that would not fit the sequences are shorter
    capacity = kv_capacity_tokens(spec, dep)
    fit = 1.0
    if capacity is not None and per_replica * attended > capacity > 0:
        fit = capacity / (per_replica * attended)
    kv = per_replica * spec.kv_bytes_per_token * (fit * attended + tokens_per_seq) / dep.tensor_parallel
    linear = 2.0 * spec.params_active * tokens / dep.tensor_parallel
    attn = fit * tokens * spec.attention_flops_per_token(context_tokens) / dep.tensor_parallel
    n_coll, link = _collectives(spec, dep, tokens)
    act = tokens * spec.activation_bytes_per_token() / dep.tensor_parallel
    return _Work(_weight_bytes_per_device(spec, dep, tokens), act, kv, linear, attn, n_coll, link)


def time_features(work: _Work, spec: TransformerSpec, dep: Deployment, batch: float) -> list[float]:
    """The terms of the step-time model, in `Efficiency` coefficient order (seconds or counts)."""
    acc = dep.accelerator
    peak = acc.peak_flops(COMPUTE_DTYPE.get(spec.weight_dtype, "bf16"))
    bw = acc.memory_bandwidth_b_s
    link = dep.link
    t_link = work.link_bytes / (link.bandwidth_gb_s * 1e9) if link and link.bandwidth_gb_s else 0.0
    return [
        max((work.weight_bytes + work.activation_bytes) / bw, work.linear_flops / peak),  # GEMMs: roofline
        max(work.kv_bytes / bw, work.attention_flops / acc.peak_flops("bf16")),  # attention: roofline
        1.0,  # fixed per-step cost (scheduler, launch, sampling setup)
        float(spec.n_layers),  # per-layer launch cost
        batch / dep.data_parallel,  # per-sequence host work (sampling, detokenising, bookkeeping)
        work.n_collectives,  # latency of each collective
        t_link,  # collective bytes over the scale-up link
    ]


TIME_COEFFICIENTS = (
    "linear_time_factor",
    "attention_time_factor",
    "step_overhead_s",
    "layer_overhead_s",
    "seq_overhead_s",
    "collective_latency_s",
    "link_time_factor",
)


def _step_time_s(
    work: _Work, spec: TransformerSpec, dep: Deployment, batch: float, eff: Efficiency
) -> tuple[float, float]:
    """(step time, time in GEMM and attention kernels), seconds."""
    features = time_features(work, spec, dep, batch)
    total = sum(getattr(eff, name) * x for name, x in zip(TIME_COEFFICIENTS, features, strict=True))
    kernels = eff.linear_time_factor * features[0] + eff.attention_time_factor * features[1]
    return total, kernels


def power_features(tdp_w: float, kernel_fraction: float, bytes_per_s: float, flops_per_s: float) -> list[float]:
    """Terms of the power model (W per unit coefficient), in `POWER_COEFFICIENTS` order."""
    return [tdp_w, tdp_w * kernel_fraction, bytes_per_s * 1e-12, flops_per_s * 1e-12]


POWER_COEFFICIENTS = ("power_static_fraction", "power_busy_fraction", "hbm_pj_per_byte", "pj_per_flop")


def device_power_w(
    dep: Deployment, kernel_fraction: float, bytes_per_s: float, flops_per_s: float, eff: Efficiency
) -> float:
    """Device power (W) from activity: static + busy shares of TDP plus energy per byte and per FLOP,
    within [idle, TDP]. The power limit is applied by the caller, which also stretches time."""
    features = power_features(dep.tdp_w, kernel_fraction, bytes_per_s, flops_per_s)
    power = sum(getattr(eff, n) * x for n, x in zip(POWER_COEFFICIENTS, features, strict=True))
    return min(max(power, eff.idle_fraction_of_tdp * dep.tdp_w), dep.tdp_w)


def _cost(work: _Work, times: tuple[float, float], spec: TransformerSpec, dep: Deployment, eff: Efficiency) -> StepCost:
    time_s, kernel_s = times
    acc = dep.accelerator
    peak = acc.peak_flops(COMPUTE_DTYPE.get(spec.weight_dtype, "bf16"))
    hbm = work.weight_bytes + work.activation_bytes + work.kv_bytes
    flops = work.linear_flops + work.attention_flops
    u_mem = min(hbm / (time_s * acc.memory_bandwidth_b_s), 1.0)
    u_comp = min(flops / (time_s * peak), 1.0)
    busy = kernel_s / time_s
    power = device_power_w(dep, busy, hbm / time_s, flops / time_s, eff)
    if power > dep.power_ceiling_w:  # power cap: clocks drop, compute-bound share of the step stretches
        time_s, power = _apply_power_cap(time_s, power, u_comp, u_mem, dep, eff)
        u_mem, u_comp = hbm / (time_s * acc.memory_bandwidth_b_s), flops / (time_s * peak)
    n = dep.n_devices
    return StepCost(time_s, flops * n, hbm * n, work.link_bytes * n, u_comp, u_mem, busy, power, power * n * time_s)


def _apply_power_cap(
    time_s: float, power_w: float, u_comp: float, u_mem: float, dep: Deployment, eff: Efficiency
) -> tuple[float, float]:
    """Estimate of DVFS under a cap: dynamic power ~ f^3 (V scales with f), so the core clock ratio is
    ((cap - idle) / (P - idle))^(1/3); the compute-bound share of the step slows by 1/f, the
    memory-bound share does not (HBM clock is independent of the core clock)."""
    idle = eff.idle_fraction_of_tdp * dep.tdp_w
    cap = dep.power_ceiling_w
    f = ((cap - idle) / max(power_w - idle, 1e-9)) ** (1.0 / 3.0)
    compute_share = u_comp / max(u_comp + u_mem, 1e-9)
    return time_s * (compute_share / f + (1.0 - compute_share)), cap


def decode_step(
    spec: TransformerSpec,
    dep: Deployment,
    batch: float,
    context_tokens: float,
    eff: Efficiency | None = None,
    tokens_per_seq: float = 1.0,
) -> StepCost:
    """One decode step: `batch` sequences (over the whole unit) with mean `context_tokens` each, each
    running `tokens_per_seq` query tokens (1 + draft tokens verified under speculative decoding)."""
    eff = eff or calibrated_efficiency()
    work = _decode_work(spec, dep, batch, context_tokens, tokens_per_seq)
    return _cost(work, _step_time_s(work, spec, dep, batch, eff), spec, dep, eff)


def prefill_step(
    spec: TransformerSpec, dep: Deployment, prompt_tokens: float, eff: Efficiency | None = None
) -> StepCost:
    """Prefill of one prompt of `prompt_tokens` tokens (causal attention: mean context = half)."""
    eff = eff or calibrated_efficiency()
    tokens_per_replica = prompt_tokens  # one prompt runs on one replica
    n_coll, link = _collectives(spec, dep, tokens_per_replica)
    work = _Work(
        weight_bytes=_weight_bytes_per_device(spec, dep, tokens_per_replica),
        activation_bytes=prompt_tokens * spec.activation_bytes_per_token() / dep.tensor_parallel,
        kv_bytes=prompt_tokens * spec.kv_bytes_per_token / dep.tensor_parallel,
        linear_flops=2.0 * spec.params_active * prompt_tokens / dep.tensor_parallel,
        attention_flops=prompt_tokens * spec.attention_flops_per_token(prompt_tokens / 2) / dep.tensor_parallel,
        n_collectives=n_coll,
        link_bytes=link,
    )
    return _cost(work, _step_time_s(work, spec, dep, 1, eff), spec, dep, eff)


@dataclass(frozen=True)
class SteadyState:
    """A serving unit in equilibrium at `batch` running sequences, chunked prefill mixed in."""

    batch: float
    itl_s: float  # a decode step without prefill work (the median inter-token latency)
    time_per_output_token_s: float  # unit time per generated token, prefill amortised
    output_tokens_per_s: float
    compute_util: float  # time-averaged, per device
    memory_util: float
    kernel_fraction: float
    power_w: float  # all devices of the unit, time-averaged
    energy_per_output_token_j: float
    decode: StepCost
    provenance: str = ESTIMATE


def steady_state(
    spec: TransformerSpec,
    dep: Deployment,
    batch: float,
    prompt_tokens: float,
    output_tokens: float,
    eff: Efficiency | None = None,
    work: WorkProfile | None = None,
) -> SteadyState:
    """Throughput, power and J/token of a unit serving requests of mean `prompt_tokens` in and
    `output_tokens` out with `batch` sequences in flight.

    Each request's prefill is amortised over its output tokens. Prefill runs as chunks inside decode
    steps whose weights already stream (chunked prefill, as vLLM and SGLang schedule it), so only its
    compute-side time is added: the GEMM and attention FLOPs at the calibrated efficiency.

    `work` (default: no optimization) is the work profile measured where the configuration was served;
    how each of its fields changes the step is documented in `hw.work`."""
    eff = eff or calibrated_efficiency()
    work = work or WorkProfile()
    spec = work.step_spec(spec)
    tps = work.tokens_per_step  # emitted per sequence per step; verified: work.verified_tokens_per_step
    decode = decode_step(spec, dep, batch, prompt_tokens + output_tokens / 2.0, eff, work.verified_tokens_per_step)
    acc = dep.accelerator
    peak = acc.peak_flops(COMPUTE_DTYPE.get(spec.weight_dtype, "bf16"))
    computed = prompt_tokens * work.computed_prompt_fraction  # prefix-cache hits cost no prefill compute
    linear = 2.0 * spec.params_active * computed
    # a computed prompt suffix attends to the cached prefix as well: mean context prompt - computed / 2
    attn = computed * spec.attention_flops_per_token(prompt_tokens - computed / 2)
    # prefill FLOPs of one request, spread over the unit's devices, amortised over its output tokens
    prefill_s = eff.linear_time_factor * linear / peak + eff.attention_time_factor * attn / acc.peak_flops("bf16")
    prefill_per_token_s = prefill_s / dep.n_devices / max(output_tokens, 1.0)
    decode_per_token_s = decode.time_s / (batch * tps)
    t_tok = decode_per_token_s + prefill_per_token_s
    w_dec, w_pre = decode_per_token_s / t_tok, prefill_per_token_s / t_tok
    u_comp = w_dec * decode.compute_util + w_pre / eff.linear_time_factor
    u_mem = w_dec * decode.memory_util
    busy = w_dec * decode.kernel_fraction + w_pre
    bytes_s, flops_s = u_mem * acc.memory_bandwidth_b_s, u_comp * peak
    power = min(device_power_w(dep, busy, bytes_s, flops_s, eff), dep.power_ceiling_w) * dep.n_devices
    return SteadyState(batch, decode.time_s, t_tok, 1.0 / t_tok, u_comp, u_mem, busy, power, power * t_tok, decode)


def data_movement_energy_j(dep: Deployment, hbm_bytes: float, link_bytes: float) -> dict[str, float | None]:
    """Energy to move bytes through each level: device memory and the scale-up link.

    HBM3/HBM3e have no published pJ/bit; HBM2's 3.9 pJ/bit (O'Connor et al. 2017) is used as an
    upper-bound estimate, keyed `hbm (estimated: HBM2 pJ/bit)`."""
    out: dict[str, float | None] = {}
    mem = (dep.accelerator.memory_type or "").lower()
    try:
        tier = get_memory(mem)
    except UnknownHardwareError:
        tier = None
    if tier is not None and tier.energy_pj_per_bit is not None:
        out[f"memory:{tier.name}"] = movement_energy_j(hbm_bytes, tier.energy_pj_per_bit)
    elif mem.startswith("hbm"):
        out["memory:hbm (estimated: HBM2 pJ/bit)"] = movement_energy_j(
            hbm_bytes, get_memory("hbm2").energy_pj_per_bit or 0
        )
    else:
        out[f"memory:{mem or 'unknown'}"] = None
    link = dep.link
    out[f"link:{link.name}" if link else "link:none"] = (
        movement_energy_j(link_bytes, link.energy_pj_per_bit) if link and link.energy_pj_per_bit else None
    )
    return out


#: Operator classes of one forward pass, as the hot-path profiler names its scopes.
OPERATOR_CLASSES = (
    "embedding",
    "norm",
    "attention.qkv_proj",
    "attention.kernel",
    "kv_cache.write",
    "attention.out_proj",
    "mlp",
    "lm_head",
)


def operator_work(
    spec: TransformerSpec, tokens: float, logit_rows: float, attended_keys: float, keys_read: float
) -> dict[str, tuple[float, float]]:
    """(FLOPs, bytes) per operator class of one forward pass over `tokens` tokens of a dense model, every
    tensor in the weight dtype (as an engine runs an unquantised model): `logit_rows` tokens go through
    the LM head, `attended_keys` is the sum over tokens of the keys each attends to (attention FLOPs),
    `keys_read` the cached keys read once per sequence chunk (attention bytes). GEMM FLOPs add up to
    `2 * params_active` per token, the step model's linear FLOPs; bytes count weights once per pass plus
    each GEMM's inputs and outputs. Used by the hot-path profiler, so it and the fleet projection share
    one description of the model.

    >>> w = operator_work(get_model_preset("llama-3.1-8b"), 1, 1, 100, 100)
    >>> sum(w[k][0] for k in ("attention.qkv_proj", "attention.out_proj", "mlp", "lm_head")) / 2 / 1e9
    7.504658432
    """
    el, n_layers, d = DTYPE_BYTES[spec.weight_dtype], spec.n_layers, spec.d_model
    t, r = tokens, logit_rows
    qkv, out, ff = (spec.n_heads + 2 * spec.n_kv_heads) * spec.head_dim, spec.n_heads * spec.head_dim, spec.d_ff
    n_norms = 2 * n_layers + 1  # before attention and the FFN in every layer, and the final one
    return {
        "attention.qkv_proj": (2 * t * d * qkv * n_layers, el * (d * qkv + t * (d + qkv)) * n_layers),
        "attention.out_proj": (2 * t * d * out * n_layers, el * (d * out + t * (d + out)) * n_layers),
        "mlp": (6 * t * d * ff * n_layers, el * (3 * d * ff + t * (d + 3 * ff)) * n_layers),
        "attention.kernel": (spec.attention_flops_per_token(1.0) * attended_keys, keys_read * spec.kv_bytes_per_token),
        "kv_cache.write": (0.0, 2 * t * spec.kv_bytes_per_token),  # read K and V, write them into the cache
        "lm_head": (2 * r * spec.lm_head_params, el * (spec.lm_head_params + r * (d + spec.vocab_size))),
        "norm": (4 * t * d * n_norms, el * 2 * t * d * n_norms),
        "embedding": (0.0, el * 2 * t * d),
    }


@functools.cache
def model_presets() -> dict[str, TransformerSpec]:
    """Architecture presets of public models (`hw/data/models.toml`) by name."""
    text = resources.files("joulepath.hw").joinpath("data", "models.toml").read_text(encoding="utf-8")
    out = {}
    for name, raw in tomllib.loads(text).items():
        raw = dict(raw)
        for key in ("attn_params_per_layer", "kv_elems_per_token_layer"):
            if key in raw:
                raw[key + "_override"] = raw.pop(key)
        out[name] = TransformerSpec(name=name, **raw)
    return out


def get_model_preset(name: str) -> TransformerSpec:
    """Look up an architecture preset; the error lists the known names."""
    presets = model_presets()
    key = name.strip().lower()
    if key not in presets:
        raise UnknownHardwareError(f"unknown model preset {name!r}; known: {', '.join(sorted(presets))}")
    return presets[key]
