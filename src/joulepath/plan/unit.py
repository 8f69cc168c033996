"""One serving unit (`tensor_parallel` accelerators holding one model replica) under the hardware model:
the batch it can hold, its latencies, its throughput and its power as load varies.

Co-located serving (one pool, chunked prefill as vLLM schedules it): a decode step that carries a
prefill chunk takes the chunk's compute on top of the step, so the p99 time per output token is the
decode step plus one chunk, and a prompt's first token waits for its chunks. Phase-split serving
(Splitwise, Patel et al. ISCA 2024; DistServe, Zhong et al. OSDI 2024): prefill units compute prompts,
the KV cache moves to a decode unit, whose steps never carry a prefill chunk. Everything here is an
estimate of `joulepath.hw.perf` (`ESTIMATE`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from joulepath.hw.catalog import get_interconnect
from joulepath.hw.fleet import max_batch
from joulepath.hw.perf import Deployment, Efficiency, TransformerSpec, calibrated_efficiency, prefill_step, steady_state
from joulepath.hw.work import WorkProfile

#: Tokens of one prefill chunk per step: vLLM's default `max_num_batched_tokens` with chunked prefill (2048).
CHUNK_TOKENS = 2048.0
#: Highest mean utilisation a pool is sized for at the day's peak (assumed: queueing headroom for p99).
UTILISATION_MAX = 0.8
#: A decode-only step (phase split): no prompt tokens computed in the decode pool.
DECODE_ONLY = WorkProfile(prompt_tokens=1, computed_prompt_tokens=0, provenance="assumed: phase split, decode pool")


@dataclass(frozen=True)
class LoadCurve:
    """One unit's output tokens/s and power (W, all its devices) from idle up to its operating batch."""

    tokens_per_s: np.ndarray  # increasing, first entry 0 (idle)
    power_w: np.ndarray

    def power_at(self, tokens_per_s: np.ndarray) -> np.ndarray:
        """Power when asked for `tokens_per_s` (clipped to what the unit can serve)."""
        return np.interp(np.minimum(tokens_per_s, self.tokens_per_s[-1]), self.tokens_per_s, self.power_w)

    @property
    def capacity_tokens_per_s(self) -> float:
        return float(self.tokens_per_s[-1])


@dataclass(frozen=True)
class UnitPerformance:
    """A decode-capable unit at its operating batch. Seconds, tokens/s, watts, joules."""

    batch: float  # sequences in flight at the operating point (cap, or KV-cache limit)
    kv_limited: bool  # the KV cache, not the cap, set the batch
    itl_s: float  # decode step without prefill work
    tpot_p99_s: float
    ttft_p99_s: float
    tokens_per_s: float
    power_w: float
    energy_per_token_j: float
    curve: LoadCurve


def operating_point(
    spec: TransformerSpec, dep: Deployment, batch_cap: int, prompt: float, output: float, eff: Efficiency | None = None
) -> tuple[float, bool]:
    """(batch, KV-limited?) a unit settles at: the cap, or fewer where the KV cache fills the memory.
    Raises ValueError (from `hw.fleet.max_batch`) when the weights alone do not fit."""
    b = max_batch(spec, dep, prompt + output / 2.0, batch_cap)
    return float(b), b < batch_cap


def _chunk_s(spec: TransformerSpec, dep: Deployment, prompt: float, eff: Efficiency) -> float:
    """Compute time of one prefill chunk (at most `CHUNK_TOKENS`) riding in a decode step."""
    step = prefill_step(spec, dep, min(prompt, CHUNK_TOKENS), eff)
    return step.time_s


def load_curve(
    spec: TransformerSpec,
    dep: Deployment,
    batch: float,
    prompt: float,
    output: float,
    eff: Efficiency,
    work: WorkProfile | None = None,
) -> LoadCurve:
    """Throughput and power at batches 1 .. `batch` (geometric grid), with idle at zero load: below
    batch 1 the unit is busy part of the time (duty cycle), which the straight line to idle is."""
    batches = np.unique(np.concatenate([np.geomspace(1.0, max(batch, 1.0), 12), [batch]]))
    states = [steady_state(spec, dep, float(b), prompt, output, eff, work) for b in batches]
    idle_w = eff.idle_fraction_of_tdp * dep.tdp_w * dep.n_devices
    tps = np.array([0.0] + [s.output_tokens_per_s for s in states])
    power = np.array([idle_w] + [s.power_w for s in states])
    return LoadCurve(tps, power)


def colocated(
    spec: TransformerSpec, dep: Deployment, batch_cap: int, prompt: float, output: float, prompt_p99: float,
    eff: Efficiency | None = None,
) -> UnitPerformance:  # fmt: skip
    """A unit serving prefill and decode together (chunked prefill)."""
    eff = eff or calibrated_efficiency()
    batch, kv_limited = operating_point(spec, dep, batch_cap, prompt, output)
    s = steady_state(spec, dep, batch, prompt, output, eff)
    chunk_s = _chunk_s(spec, dep, prompt_p99, eff)
    n_chunks = math.ceil(prompt_p99 / CHUNK_TOKENS)
    ttft = n_chunks * (s.itl_s + chunk_s)  # every chunk of the prompt rides in one decode step
    curve = load_curve(spec, dep, batch, prompt, output, eff)
    return UnitPerformance(
        batch, kv_limited, s.itl_s, s.itl_s + chunk_s, ttft, s.output_tokens_per_s, s.power_w,
        s.energy_per_output_token_j, curve,
    )  # fmt: skip


def decode_only(
    spec: TransformerSpec, dep: Deployment, batch_cap: int, prompt: float, output: float, eff: Efficiency | None = None
) -> UnitPerformance:
    """A decode unit of a phase-split fleet: its steps never carry prefill (TTFT is the prefill pool's)."""
    eff = eff or calibrated_efficiency()
    batch, kv_limited = operating_point(spec, dep, batch_cap, prompt, output)
    s = steady_state(spec, dep, batch, prompt, output, eff, DECODE_ONLY)
    curve = load_curve(spec, dep, batch, prompt, output, eff, DECODE_ONLY)
    return UnitPerformance(
        batch, kv_limited, s.itl_s, s.itl_s, s.itl_s, s.output_tokens_per_s, s.power_w,
        s.energy_per_output_token_j, curve,
    )  # fmt: skip


@dataclass(frozen=True)
class PrefillPool:
    """A prefill unit of a phase-split fleet. Prompt tokens/s and watts (all its devices)."""

    prompt_tokens_per_s: float  # at full load, mean prompt
    busy_power_w: float
    idle_power_w: float
    prefill_p99_s: float  # compute time of a p99 prompt


def prefill_pool(
    spec: TransformerSpec, dep: Deployment, prompt: float, prompt_p99: float, eff: Efficiency | None = None
) -> PrefillPool:
    """A unit that only runs prompts, one after another (no batching of prompts: compute-bound already)."""
    eff = eff or calibrated_efficiency()
    mean, p99 = prefill_step(spec, dep, prompt, eff), prefill_step(spec, dep, prompt_p99, eff)
    idle = eff.idle_fraction_of_tdp * dep.tdp_w * dep.n_devices
    return PrefillPool(prompt / mean.time_s, mean.device_power_w * dep.n_devices, idle, p99.time_s)


@dataclass(frozen=True)
class KvTransfer:
    """Moving one request's KV cache from a prefill to a decode unit."""

    bytes_per_request: float
    time_p99_s: float  # for the p99 prompt
    energy_per_request_j: float
    link: str
    provenance: str


#: Energy per bit where the link's own figure is unpublished (`hw/data/interconnects.toml`): inside an
#: NVLink domain NVLink-C2C's published 1.3 pJ/bit stands in; across nodes, two pluggable 1.6 Tb/s
#: transceivers (one per end, 18.75 pJ/bit each, derived from NVIDIA's 30 W figure); switches not counted.
def kv_transfer(
    spec: TransformerSpec, dep: Deployment, prompt: float, prompt_p99: float, in_domain: bool
) -> KvTransfer:
    """KV bytes x the catalog's bandwidth and energy per bit. `in_domain`: prefill and decode units share
    a scale-up domain (an NVL72 rack); otherwise the KV crosses the scale-out network, one NIC per device."""
    per_token = spec.kv_bytes_per_token
    if in_domain:
        link = dep.link
        assert link is not None and link.bandwidth_gb_s is not None
        pj = get_interconnect("nvlink-c2c").energy_pj_per_bit or 0.0
        name, how = link.name, "estimated: NVLink-C2C's 1.3 pJ/bit for NVLink (unpublished)"
        bw_b_s = link.bandwidth_gb_s * 1e9 * dep.n_devices
    else:
        nic = get_interconnect(
            "infiniband-xdr" if dep.accelerator.tdp_w and dep.accelerator.tdp_w >= 1000 else "infiniband-ndr"
        )
        pj = 2 * (get_interconnect("optics-pluggable-1.6t").energy_pj_per_bit or 0.0)
        name, how = nic.name, "estimated: two pluggable transceivers' pJ/bit (IB's own unpublished)"
        bw_b_s = (nic.bandwidth_gb_s or 0.0) * 1e9 * dep.n_devices
    mean_b = prompt * per_token
    return KvTransfer(mean_b, prompt_p99 * per_token / bw_b_s, mean_b * 8 * pj * 1e-12, name, how)
