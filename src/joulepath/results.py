"""The result types: what the main job, the local execution and the profiler hand to the layers that
report them (`joulepath.report`, the CLI). Plain frozen dataclasses, no torch and no engine, so a
report never imports the code that computed its numbers:

    engine  -> RequestRecord                      (one finished request: tokens, times, joules)
    execute -> ServedRequest, LocalRun, LocalStep, LocalComparison, RatioSpread   (served on this machine)
    profile -> ClassCost, DeviceLimits, Advice, Lever, HotPathProfile  (hot paths of serving)
    run     -> Summary, DataMovement, FleetOutcome, AblationStep, RunResult   (the whole run; result.json)

Every energy figure sits next to its provenance (`measured:`, `estimated:`, `assumed:`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from joulepath.meter import TIME_PROVENANCE

if TYPE_CHECKING:  # only named in annotations: the engine imports RequestRecord without loading the twin
    from joulepath.facility import TwinResult
    from joulepath.hw.fleet import FleetProjection
    from joulepath.hw.work import WorkProfile
    from joulepath.meter import Measurement, Waterfall
    from joulepath.scenario import Scenario
    from joulepath.workload import TraceStats

SCHEMA_VERSION = "1.2"  # of result.json; 1.1: baseline fleet outcome and local execution; 1.2: headline, ablation


# --- served on this machine ------------------------------------------------------------------------


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval for a proportion (better than the normal one near 0 and 1)."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference_interval(before: Sequence[bool], after: Sequence[bool], z: float = 1.96) -> tuple[float, float]:
    """95 % interval for accuracy(after) - accuracy(before) when both answered the same questions: Newcombe's
    hybrid score interval for paired proportions (Newcombe 1998, method 10), Wilson intervals of the two
    accuracies combined with the correlation of the pairs. Only the discordant pairs move the difference,
    so it is far narrower than two independent intervals would suggest when the configurations mostly agree."""
    n = len(before)
    if n != len(after):
        raise ValueError(f"paired answers need the same questions: {n} before, {len(after)} after")
    if n == 0:
        return -1.0, 1.0
    both = sum(x and y for x, y in zip(before, after, strict=True))
    lost = sum(x and not y for x, y in zip(before, after, strict=True))
    gained = sum(y and not x for x, y in zip(before, after, strict=True))
    neither = n - both - lost - gained
    p1, p2 = (both + lost) / n, (both + gained) / n
    l1, u1 = wilson_interval(both + lost, n, z)
    l2, u2 = wilson_interval(both + gained, n, z)
    margins = (both + lost) * (gained + neither) * (both + gained) * (lost + neither)
    cross = float(both * neither - lost * gained)  # Newcombe's correlation: a positive one shrunk by n/2
    cross = cross - n / 2 if cross > n / 2 else min(cross, 0.0)
    phi = cross / math.sqrt(margins) if margins else 0.0
    delta = p2 - p1
    low = delta - math.sqrt(max((p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2, 0.0))
    high = delta + math.sqrt(max((u2 - p2) ** 2 - 2 * phi * (u2 - p2) * (p1 - l1) + (p1 - l1) ** 2, 0.0))
    return max(-1.0, low), min(1.0, high)


@dataclass(frozen=True)
class RequestRecord:
    """What one finished request cost. Times in seconds; energy with its provenance."""

    request_id: str
    prompt_tokens: int
    output_tokens: int
    ttft_s: float  # arrival -> first output token
    tpot_s: float  # mean time per output token after the first
    e2e_s: float
    energy_j: float
    energy_provenance: str
    finish_reason: str
    preemptions: int
    capped_max_tokens: int | None = None  # set when prompt + max_tokens would run past the context: the cap used
    cached_prompt_tokens: int = 0  # prompt tokens whose KV came from the prefix cache (not computed)
    restored_prompt_tokens: int = 0  # of those, copied back from a KV offload tier (host memory or disk)
    decode_steps: int = 0  # steps after the first token (counted with speculative decoding on; else 0)
    draft_proposed: int = 0  # draft tokens verified (speculative decoding)
    draft_accepted: int = 0  # of those, kept
    logprob_sum: float = 0.0  # emitted tokens' natural-log probabilities, summed (0: not tracked)
    logprob_min: float = 0.0  # the least likely emitted token's log-probability (0: not tracked)


@dataclass(frozen=True)
class ServedRequest:
    """One request of the main job served here, with the golden task it carried and its verdict."""

    record: RequestRecord
    arrival_s: float  # in the replay's clock
    skill: str
    level: str
    correct: bool
    output_guard: str = "allow"  # the output filter's action
    tier: str = ""  # the model tier that answered, with tiered routing ("" without)
    route: str = ""  # why the router chose that tier


@dataclass(frozen=True)
class TierUse:
    """What one model tier served in a run with tiered routing: requests, correct answers, output tokens,
    and the joules its engine's steps were attributed (the ledger's rule; the meter's provenance)."""

    tier: str
    requests: int
    correct: int
    output_tokens: int
    energy_j: float

    @property
    def joules_per_correct(self) -> float:
        return self.energy_j / self.correct if self.correct else float("inf")


@dataclass(frozen=True)
class TierPolicy:
    """One way of spreading the served requests over the model tiers, on the same requests: accuracy, the
    share the small tier answered, and the joules the ledger gave those answers (an escalated request pays
    both tiers; energy labelled as the meter labelled it)."""

    policy: str
    accuracy: float
    small_tier_share: float
    correct: int
    energy_j: float
    how: str  # measured as served, or composed from served answers (which)

    @property
    def joules_per_correct(self) -> float:
        return self.energy_j / self.correct if self.correct else float("inf")


@dataclass(frozen=True)
class SkillDrop:
    """One skill's golden accuracy without and with a lever."""

    skill: str
    n: int
    baseline: float
    lever: float
    ci95: tuple[float, float]  # Wilson 95 % interval of the lever's accuracy

    @property
    def drop_points(self) -> float:
        return 100 * (self.baseline - self.lever)


@dataclass(frozen=True)
class LeverGate:
    """One lever's quality gate on one model (measured): the verdict, what it was decided on, the bytes."""

    model: str
    lever: str
    passed: bool
    examples: int
    baseline_accuracy: float
    lever_accuracy: float
    lever_ci95: tuple[float, float]
    skills: tuple[SkillDrop, ...]
    greedy_agreement: float  # share of answers identical to the unoptimized model's
    mean_kl: float  # nats, next-token distributions, unoptimized || lever
    bytes_per_weight: float
    max_drop_points: float
    report: str  # readable
    provenance: ClassVar[str] = "measured: golden test-split answers served here with and without the lever"

    @property
    def drop_points(self) -> float:
        return 100 * (self.baseline_accuracy - self.lever_accuracy)


@dataclass(frozen=True)
class KVTierUse:
    """One KV offload tier of a configuration served here (measured)."""

    tier: str  # host | disk
    capacity_blocks: int
    stored_blocks: int
    restored_blocks: int
    restore_s_per_block: float  # measured copy back into the pool


@dataclass(frozen=True)
class ModelledTierEffect:
    """A modelled KV tier (CXL memory, PIM) on the served requests: the blocks it would have served (counted
    on the real sequence), the time and energy to copy them back (estimated, catalog), and the time their
    prefill took here instead (measured cost per token x their tokens)."""

    tier: str
    capacity_blocks: int
    hit_blocks: int
    hit_tokens: int
    copy_s: float
    copy_j: float
    recompute_s: float | None
    estimate_provenance: str  # of copy_s and copy_j
    count_provenance: ClassVar[str] = "measured: counted on the served request sequence (the hashes it would hold)"
    recompute_provenance: ClassVar[str] = "measured: the engine's prefill seconds per token here x the tokens"


@dataclass(frozen=True)
class KVOffloadUse:
    """What the prefix cache's pool and its offload tiers did in one configuration (measured), and the blocks
    a modelled tier (CXL memory, PIM) of the configured size would have served on the same requests."""

    block_bytes: int
    block_tokens: int
    pool_blocks: int
    evicted_blocks: int  # left the pool (to a tier, or gone)
    declined_blocks: int  # offloaded blocks recomputed because that was measured cheaper
    prefill_s_per_token: float | None  # measured in the engine's steps (None: never measured)
    tiers: tuple[KVTierUse, ...] = ()
    modelled: ModelledTierEffect | None = None


@dataclass(frozen=True)
class LocalRun:
    """One configuration served on this machine (measured, except energy where the meter estimates)."""

    name: str
    max_batch: int
    requests: tuple[ServedRequest, ...]
    wall_s: float
    energy_j: float
    energy_provenance: str
    accuracy: float
    blocked: tuple[str, ...] = ()  # request ids the input guard refused (never reached the engine)
    guard_s: float = 0.0  # time spent in the guardrails, measured
    kv: KVOffloadUse | None = None  # prefix cache pool and offload tiers (None: no prefix cache)
    lever: str | None = None  # the weight lever applied (None: the model as loaded)
    bytes_per_weight: float | None = None  # of the served model's projections (None: as loaded, unquantized)
    activation_sparsity: float = 0.0  # share of projection inputs the served model zeroed (TEAL), measured
    torch_threads: int = 0  # CPU threads the engine ran at (0: not recorded)
    small_tier: str | None = None  # tiered routing: the cheaper tier's model (None: one model served all)
    accuracy_provenance: ClassVar[str] = "measured: each served answer checked against its golden dev-set answer"

    @property
    def output_tokens(self) -> int:
        return sum(r.record.output_tokens for r in self.requests)

    @property
    def j_per_token(self) -> float:
        return self.energy_j / max(self.output_tokens, 1)

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.wall_s if self.wall_s else 0.0

    def tier_mix(self) -> tuple[TierUse, ...]:
        """Per model tier (tiered routing), what it served: () without routing."""
        if self.small_tier is None:
            return ()
        tiers = sorted({r.tier for r in self.requests}, key=lambda t: (t != self.small_tier, t))
        return tuple(
            TierUse(
                t, len(mine := [r for r in self.requests if r.tier == t]), sum(r.correct for r in mine),
                sum(r.record.output_tokens for r in mine), sum(r.record.energy_j for r in mine),
            )
            for t in tiers
        )  # fmt: skip

    @property
    def small_tier_share(self) -> float:
        """Share of the served requests the router sent to the small tier (0 without tiered routing)."""
        if self.small_tier is None or not self.requests:
            return 0.0
        return sum(r.tier == self.small_tier for r in self.requests) / len(self.requests)

    def percentile(self, field: str, q: float) -> float:
        """The `q`-th percentile of a RequestRecord field (`ttft_s`, `tpot_s`, ...); NaN with no requests."""
        values = [getattr(r.record, field) for r in self.requests]
        return float(np.percentile(values, q)) if values else float("nan")


@dataclass(frozen=True)
class EndpointRun:
    """An OpenAI-compatible endpoint measured by `joulepath bench serve` from outside: what it served (as a
    LocalRun: request records timed at the client, tokens from the endpoint's usage, energy as the
    `energy_source` gave it, accuracy against the golden answers the requests carried) and what failed."""

    url: str
    model: str
    run: LocalRun
    sent: int
    errors: tuple[str, ...]  # one line per failed request ("HTTP 429: ...", "ReadTimeout: ...")
    connections: int
    time_scale: float  # the trace's inter-arrival times were multiplied by this
    energy_source: str  # how the run's joules were obtained (meter on this host, given, endpoint metrics)

    @property
    def error_rate(self) -> float:
        return len(self.errors) / max(self.sent, 1)


@dataclass(frozen=True)
class RatioSpread:
    """One local ratio, optimized / baseline, over interleaved repetitions: repetition i's optimized
    over repetition i's baseline (paired: both ran under the same load), with its median and min-max.

    `metric` names the LocalRun property; `provenance` is its label (for energy: the meter's, or
    `mixed: baseline's, optimized's` where the two differ)."""

    metric: str
    values: tuple[float, ...]
    provenance: str

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def low(self) -> float:
        return min(self.values, default=float("nan"))

    @property
    def high(self) -> float:
        return max(self.values, default=float("nan"))

    @property
    def spread_known(self) -> bool:
        """At least two repetitions: a spread to judge the difference by."""
        return len(self.values) >= 2

    @property
    def includes_one(self) -> bool:
        """The min-max spread includes 1.0: no significant difference measured."""
        return self.low <= 1.0 <= self.high

    def inverted(self, metric: str) -> RatioSpread:
        """1 / each value (e.g. tokens per joule from a J-per-token ratio); zeros and negatives dropped."""
        return RatioSpread(metric, tuple(1 / v for v in self.values if v > 0), self.provenance)


LOCAL_RATIOS = ("j_per_token", "tokens_per_s", "ttft_p99_s")


def median_run(runs: Sequence[LocalRun]) -> LocalRun:
    """The repetition with the median energy per token (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r.j_per_token)
    return ordered[(len(ordered) - 1) // 2]


def answers(runs: Sequence[LocalRun]) -> tuple[ServedRequest, ...]:
    """Every distinct request the repetitions served, in the order served: each repetition's own slice
    (`serve.repeat_over = "slices"`); where repetitions served the same request ("same"), the median
    repetition's answer to it."""
    if not runs:
        return ()
    median = {r.record.request_id: r for r in median_run(runs).requests}
    out: dict[str, ServedRequest] = {}
    for run in runs:
        for r in run.requests:
            out.setdefault(r.record.request_id, median.get(r.record.request_id, r))
    return tuple(out.values())


def accuracy_of(served: Sequence[ServedRequest]) -> float:
    """Share of `served` answered right (0 for none)."""
    return sum(r.correct for r in served) / max(len(served), 1)


@dataclass(frozen=True)
class LocalStep:
    """One rung of the ablation ladder served here: the brute-force configuration with every lever up to
    and including `lever` switched on, served `len(runs)` times interleaved with the other rungs."""

    lever: str  # what this rung adds ("brute force" for the first)
    description: str  # the whole configuration, in words
    runs: tuple[LocalRun, ...]

    @property
    def median(self) -> LocalRun:
        return median_run(self.runs)

    @property
    def answers(self) -> tuple[ServedRequest, ...]:
        """Every distinct request this rung served over its repetitions (see `answers`)."""
        return answers(self.runs)

    @property
    def accuracy(self) -> float:
        return accuracy_of(self.answers)

    @property
    def accuracy_interval(self) -> tuple[float, float]:
        served = self.answers
        return wilson_interval(sum(r.correct for r in served), len(served))

    def ratio_to(self, before: LocalStep, metric: str = "j_per_token") -> RatioSpread:
        """This rung over the one before, paired by repetition (both served back to back)."""
        return paired_ratio(before.runs, self.runs, metric)


@dataclass(frozen=True)
class LocalComparison:
    """Baseline vs optimized served here. `baseline` / `optimized` are each configuration's median
    repetition (by energy per token); `*_runs` hold every repetition in the order served."""

    model: str
    device: str
    baseline: LocalRun
    optimized: LocalRun
    profile: HotPathProfile | None
    baseline_runs: tuple[LocalRun, ...] = ()
    optimized_runs: tuple[LocalRun, ...] = ()
    gates: tuple[LeverGate, ...] = ()  # quality gates of the weight levers tried for the optimized model
    ladder: tuple[LocalStep, ...] = ()  # brute force, then one lever more per rung; the last is `optimized`
    profile_brute: HotPathProfile | None = None  # the brute-force configuration's hot paths (`profile`: optimized)
    tier_policies: tuple[TierPolicy, ...] = ()  # tiered routing: always-large, always-small, router, cascade, oracle

    @property
    def repeats(self) -> int:
        return len(self.baseline_runs) or 1

    def pairs(self) -> list[tuple[LocalRun, LocalRun]]:
        """(baseline, optimized) per repetition, in the order served."""
        if self.baseline_runs and self.optimized_runs:
            return list(zip(self.baseline_runs, self.optimized_runs, strict=True))
        return [(self.baseline, self.optimized)]

    def ratio(self, metric: str) -> RatioSpread:
        """optimized / baseline of a LocalRun property (`j_per_token`, `tokens_per_s`, `ttft_p99_s`)."""
        pairs = self.pairs()
        return paired_ratio([b for b, _ in pairs], [o for _, o in pairs], metric)

    def ratios(self) -> tuple[RatioSpread, ...]:
        """Every local ratio: energy per token, throughput, p99 time to first token."""
        return tuple(self.ratio(m) for m in LOCAL_RATIOS)

    @property
    def baseline_answers(self) -> tuple[ServedRequest, ...]:
        """Every distinct request the baseline served over its repetitions (see `answers`)."""
        return answers(self.baseline_runs or (self.baseline,))

    @property
    def optimized_answers(self) -> tuple[ServedRequest, ...]:
        return answers(self.optimized_runs or (self.optimized,))

    @property
    def accuracy_baseline(self) -> float:
        """Golden accuracy over every distinct request the baseline served (all repetitions' slices)."""
        return accuracy_of(self.baseline_answers)

    @property
    def accuracy_optimized(self) -> float:
        return accuracy_of(self.optimized_answers)

    def accuracy_delta_interval(self) -> tuple[float, float] | None:
        """Paired 95 % interval of optimized - baseline accuracy over the requests both answered (every
        distinct request, whose accuracies are the ones reported); None when they share none."""
        before = {r.record.request_id: r.correct for r in self.baseline_answers}
        after = {r.record.request_id: r.correct for r in self.optimized_answers}
        shared = [rid for rid in before if rid in after]
        if not shared:
            return None
        return paired_difference_interval([before[r] for r in shared], [after[r] for r in shared])


def paired_ratio(before: Sequence[LocalRun], after: Sequence[LocalRun], metric: str) -> RatioSpread:
    """after / before of a LocalRun property, repetition by repetition (served interleaved), labelled with
    the energy provenance of both sides (`mixed: ...` where they differ) or, for times, as measured."""
    values = tuple(_ratio(_metric(o, metric), _metric(b, metric)) for b, o in zip(before, after, strict=True))
    finite = tuple(v for v in values if np.isfinite(v))
    provenance = TIME_PROVENANCE
    if metric == "j_per_token":
        b, o = median_run(before).energy_provenance, median_run(after).energy_provenance
        provenance = o if b == o else f"mixed: {b}, {o}"
    return RatioSpread(metric, finite, provenance)


def _metric(run: LocalRun, metric: str) -> float:
    return run.percentile("ttft_s", 99) if metric == "ttft_p99_s" else float(getattr(run, metric))


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator; NaN where undefined (a zero or non-finite side)."""
    if not (np.isfinite(numerator) and np.isfinite(denominator)) or denominator == 0:
        return float("nan")
    return numerator / denominator


# --- hot paths of serving ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceLimits:
    """This device's two roofs of the roofline, measured by quick probes (`profile.limits`)."""

    device: str
    peak_flops: float  # FLOP/s, measured: a square matmul in the model's usual dtype
    bandwidth_bytes_s: float  # measured: a full reduction over a buffer much larger than the caches
    provenance: str = "measured: matmul and reduction probes"

    @property
    def ridge_flops_per_byte(self) -> float:
        """Arithmetic intensity above which work is compute-bound."""
        return self.peak_flops / self.bandwidth_bytes_s


@dataclass(frozen=True)
class ClassCost:
    """Time, energy and roofline position of one operator class (attention kernel, MLP, scheduler, ...)."""

    name: str
    time_s: float
    share: float  # of the served work's measured time (profiler start/stop excluded)
    energy_j: float
    flops: float
    bytes: float
    bound: str  # "compute-bound", "memory-bound" or "host" (Python/CPU overhead, no roofline)
    roofline_efficiency: float | None  # roofline time / measured time (1 = at the roofline)


@dataclass(frozen=True)
class Lever:
    """An optimization that cuts a hot class, and whether joulepath has it."""

    name: str
    built: bool
    where: str  # the module that has it, or the plan for it


@dataclass(frozen=True)
class Advice:
    """One finding of the profiler and the lever for it, with its estimated gain."""

    target: str  # the class (or group of classes) this is about
    share: float  # of measured time
    finding: str
    lever: Lever
    expected_gain: float  # fraction of total time/energy it would save (estimated)
    basis: str  # how the gain was estimated

    def line(self) -> str:
        return (
            f"{self.finding} -> {self.lever.name} ({self.lever.where}): "
            f"about {100 * self.expected_gain:.0f} % less energy (estimated: {self.basis})"
        )


@dataclass(frozen=True)
class HotPathProfile:
    """Where an engine run's time and energy went, by operator class, and what to do about it."""

    model: str
    device: str
    classes: tuple[ClassCost, ...]  # hottest first
    wall_s: float
    energy_j: float
    energy_provenance: str
    attributed_fraction: float  # of measured time, to named classes (idle included)
    overhead_fraction: float  # profiled run vs plain run, same requests
    steps: int
    limits: DeviceLimits
    advice: tuple[Advice, ...]
    operators: dict[str, dict[str, float]] = field(default_factory=dict)  # class -> top ops' shares (window)
    # How each column of `classes` was obtained (energy_provenance is the meter's label for the whole run).
    time_provenance: str = "measured: named scopes timed by time.perf_counter"
    energy_split_provenance: str = "estimated: the run's metered energy split by each class's share of time"
    roofline_provenance: str = (
        "estimated: analytic FLOPs and bytes of the model's shapes against measured device limits"
    )


# --- the main job -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """Headline numbers of a run. Every field is an estimate of the target fleet (see `provenance`)."""

    capacity_tokens_per_s: float
    utilisation: float
    served_output_tokens: float
    unserved_output_tokens: float  # still queued at the end of the horizon
    device_j_per_token: float
    wall_j_per_token: float
    avg_it_power_w: float
    peak_it_power_w: float
    device_energy_j: float
    it_energy_j: float
    wall_energy_j: float
    horizon_s: float
    pue: float  # from the facility twin over its horizon
    wue_l_per_kwh: float
    water_l: float  # for this run's energy
    carbon_g: float
    cost_usd: float
    provenance: str


@dataclass(frozen=True)
class DataMovement:
    """Bytes moved per output token at the run's typical batch, and their energy per memory level
    (None where the level's pJ/bit is not published). Estimates from the hardware model."""

    batch: float
    hbm_bytes_per_token: float
    link_bytes_per_token: float
    energy_j_per_token: dict[str, float | None]
    provenance: str


@dataclass(frozen=True)
class ControlOutcome:
    """The optimized configuration's facility horizon with the scenario's `[control]` controller setting
    the cooling setpoints, against the same IT load at the facility's fixed setpoints, both from the same
    run (estimated: the twin's models)."""

    controller: str  # mpc | g36 | fixed
    cooling_j_fixed: float
    cooling_j_controlled: float
    facility_j_fixed: float
    facility_j_controlled: float
    inlet_violation_steps: int  # steps with a rack inlet above the recommended 27 C, controlled
    cooling_w_fixed_daily: tuple[float, ...]  # daily mean cooling power, W
    cooling_w_controlled_daily: tuple[float, ...]
    provenance: str

    @property
    def cooling_saving_frac(self) -> float:
        return 1 - self.cooling_j_controlled / self.cooling_j_fixed if self.cooling_j_fixed else 0.0

    @property
    def facility_saving_frac(self) -> float:
        return 1 - self.facility_j_controlled / self.facility_j_fixed if self.facility_j_fixed else 0.0


@dataclass(frozen=True)
class PowerCapChoice:
    """The optimized fleet's power limit chosen by `[control] power_cap = "auto"` (estimated: hardware model)."""

    tdp_w: float
    cap_w: float  # == tdp_w: no cap paid within the latency bound
    j_saving_pct: float  # device J per output token, against uncapped
    p99_slowdown_pct: float
    latency_bound_pct: float
    static_power_scales: bool  # which reading of the model chose it (see ControlSection)
    curve: tuple[tuple[float, float, float, bool], ...]  # (cap W, J saving %, p99 slowdown %, counted) per cap
    provenance: str

    @property
    def applied(self) -> bool:
        """A limit below TDP was chosen (at TDP the fleet runs uncapped)."""
        return self.cap_w < self.tdp_w


@dataclass(frozen=True)
class ShiftChoice:
    """The optimized facility's year with its deferrable work shifted against grid carbon and price and a
    battery dispatched (`[control] shifting = "auto"`), against run-now with the battery idle and the
    perfect-foresight optimum of the same problem (estimated: the twin's series and joulepath.control.shift)."""

    deferrable_share: float
    deadline_h: int
    battery_hours: float
    co2_kg: tuple[float, float, float | None]  # run-now, policy, oracle
    cost_usd: tuple[float, float, float | None]
    grid_energy_j: tuple[float, float]  # run-now, policy (the battery's losses show here)
    missed_deadlines: int
    oracle_fraction: float  # the policy's share of the oracle's saving (objective); NaN without the oracle
    grid_w_daily: tuple[tuple[float, ...], tuple[float, ...]]  # daily mean grid import: run-now, policy
    soc_wh_daily: tuple[float, ...]  # daily mean battery state of charge, policy
    provenance: str

    @property
    def co2_cut_frac(self) -> float:
        return 1 - self.co2_kg[1] / self.co2_kg[0] if self.co2_kg[0] else 0.0

    @property
    def cost_cut_frac(self) -> float:
        return 1 - self.cost_usd[1] / self.cost_usd[0] if self.cost_usd[0] else 0.0


@dataclass(frozen=True)
class FleetOutcome:
    """One configuration projected onto the fleet and run through the facility twin (estimated)."""

    max_batch: int
    projection: FleetProjection
    waterfall: Waterfall
    summary: Summary
    facility: TwinResult
    work: WorkProfile | None = None  # the work profile the projection applied (measured where served)
    control: ControlOutcome | None = None  # the facility with the [control] controller (optimized only)


@dataclass(frozen=True)
class AblationStep:
    """One step of the headline waterfall: brute force with the levers up to this one, served here where
    the lever acts on this machine (`local` set) and projected onto the fleet and facility in every case."""

    lever: str
    description: str
    acts_on: str  # "served here" (engine, model, weights) or "fleet and facility" (caps, cooling, scheduling)
    wall_j_per_token: float  # projected: wall energy per served output token (estimated)
    carbon_g_per_token: float  # projected (estimated)
    local: LocalStep | None = None  # the rung as served here (None: a fleet/facility lever, nothing to serve)
    local_ratio: RatioSpread | None = None  # J/token here over the previous served rung, paired (measured)
    provenance: str = ""

    @property
    def accuracy(self) -> float | None:
        return self.local.accuracy if self.local else None

    @property
    def accuracy_interval(self) -> tuple[float, float] | None:
        return self.local.accuracy_interval if self.local else None


@dataclass(frozen=True)
class RunResult:
    """Everything a run produced; `report.write_result` serialises it (schema `SCHEMA_VERSION`)."""

    scenario: Scenario
    trace: TraceStats
    trace_source: str
    projection: FleetProjection
    waterfall: Waterfall
    summary: Summary
    facility: TwinResult
    data_movement: DataMovement
    efficiency_source: str
    meter_notes: list[str]
    analysis_energy: Measurement  # what this analysis itself cost on this machine
    baseline: FleetOutcome | None = None  # the same trace with no batching (the brute-force baseline)
    local: LocalComparison | None = None  # real execution on this machine (None when serve.enabled is false)
    work: WorkProfile | None = None  # the work profile the optimized projection applied (measured where served)
    endpoint: EndpointRun | None = None  # `joulepath bench serve`: the measured endpoint is the optimized side
    control: ControlOutcome | None = None  # the optimized facility under the [control] controller vs fixed setpoints
    power_cap: PowerCapChoice | None = None  # the optimized fleet's power limit ([control] power_cap = "auto")
    ablation: tuple[AblationStep, ...] = ()  # brute force -> optimized, one lever at a time (the headline)
    shift: ShiftChoice | None = None  # the optimized facility's deferrable work shifted, battery dispatched

    def headline(self) -> Headline | None:
        """Brute force vs every lever, for this machine (served: brute force vs the optimized rung) and at
        the wall (the waterfall's first step vs its last, shifting with its battery included when on);
        None: no ablation."""
        if not self.ablation:
            return None
        first, last = self.ablation[0], self.ablation[-1]
        # optimized / brute J per token over paired repetitions, as tokens per joule
        local = self.local.ratio("j_per_token").inverted("tokens_per_joule") if self.local is not None else None
        wall = first.wall_j_per_token / last.wall_j_per_token
        if self.local is None:
            return Headline(local, wall, None, None)
        served = self.local
        return Headline(
            local, wall, served.accuracy_baseline, served.accuracy_optimized, served.accuracy_delta_interval()
        )


@dataclass(frozen=True)
class Headline:
    """Optimized over brute force: tokens per joule here (measured repetitions, paired) and at the wall
    (projected, estimated), and golden accuracy of both (measured on the answers each served)."""

    local_tokens_per_joule: RatioSpread | None  # None: nothing served here
    wall_tokens_per_joule_ratio: float
    accuracy_brute: float | None
    accuracy_optimized: float | None
    accuracy_delta_ci95: tuple[float, float] | None = None  # paired, as fractions (paired_difference_interval)

    @property
    def accuracy_delta_ci95_pts(self) -> tuple[float, float] | None:
        return (
            None
            if self.accuracy_delta_ci95 is None
            else (100 * self.accuracy_delta_ci95[0], 100 * self.accuracy_delta_ci95[1])
        )

    @property
    def accuracy_delta_pts(self) -> float | None:
        if self.accuracy_brute is None or self.accuracy_optimized is None:
            return None
        return 100 * (self.accuracy_optimized - self.accuracy_brute)
