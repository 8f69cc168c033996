"""The hot-path profiler: where an engine run's time and energy go, by operator class, and what to do.

Every step of the run is timed by light named scopes: the engine's own phases (scheduler, KV-cache
planning and writes, attention kernels, sampling, the meter) and the model's modules (embedding,
norms, QKV and output projections, MLP, LM head: their `forward` is wrapped while profiling; forward
hooks were tried first and cost ~5 % of a jp-large run), exclusive of nested scopes. A short
window of steps also runs under `torch.profiler`, which attributes operators (aten::mm, aten::index,
...) to those classes. Recording every step under torch.profiler was tried first: on a small model on
CPU it cost ~60 % of the run (per-operator callbacks), and a per-step schedule cost more in profiler
start/stop. Each class gets:

- time: exclusive wall time of its scopes (on CUDA each boundary synchronizes), measured;
- energy: the run's metered energy split by time share (estimated: time-proportional split);
- FLOPs and bytes from the model's shapes and the tokens each forward processed (estimated: analytic),
  and from them the roofline class against this device's measured peak FLOP/s and bandwidth.

Idle time is the wall time outside engine steps. The overhead of profiling is measured by running the
same requests with and without the profiler.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from joulepath.engine import Engine, EngineConfig, SamplingParams
from joulepath.engine.scopes import STEP, ScopeTimer, recording, scope
from joulepath.hw.perf import operator_work
from joulepath.link import TORCH_DTYPES, transformer_spec
from joulepath.meter import Meter, auto_meter
from joulepath.model import LoadedModel
from joulepath.model.transformer import MLP, Attention, RMSNorm
from joulepath.profile.advice import HOST, advise, levers_on
from joulepath.profile.limits import measure_limits
from joulepath.results import ClassCost, DeviceLimits, HotPathProfile
from joulepath.serving.frontend import Arrival, Frontend, Request

HOST_CLASSES = (*HOST, "idle")  # host work between kernels (advice.HOST), and time outside engine steps
MODEL_CLASSES = (
    "embedding",
    "norm",
    "attention.qkv_proj",
    "attention.rope+other",
    "kv_cache.write",
    "attention.kernel",
    "attention.out_proj",
    "mlp",
    "lm_head",
)
ROOT = STEP  # one serving step of the frontend (engine step, detokenizing)
FORWARD = "model.forward"
# torch.profiler's backend (kineto) prints "USDT: ... profiler_start" / "profiler_stop" to stderr on every
# start and stop: torch lowers its log level to ERROR (3), and those lines are level USDT (5). Kineto reads
# KINETO_LOG_LEVEL once, when the first profiler in the process starts; above USDT silences its logger.
KINETO_QUIET_LEVEL = "6"


@dataclass
class _Work:
    """FLOPs and bytes per class, accumulated from each forward's shapes."""

    flops: dict[str, float] = field(default_factory=dict)
    bytes: dict[str, float] = field(default_factory=dict)
    prefill_tokens: int = 0
    decode_tokens: int = 0

    def add(self, name: str, flops: float, nbytes: float) -> None:
        self.flops[name] = self.flops.get(name, 0.0) + flops
        self.bytes[name] = self.bytes.get(name, 0.0) + nbytes


def forward_work(loaded: LoadedModel, work: _Work) -> Callable[..., None]:
    """A forward pre-hook on the Transformer that books analytic FLOPs/bytes for the call's tokens: the
    hardware model's per-operator counts (`hw.perf.operator_work`) of the model's own description
    (`link.transformer_spec`), so the profiler and the fleet projection count the same model."""
    spec = transformer_spec(loaded.config, TORCH_DTYPES[str(next(loaded.model.parameters()).dtype)])

    def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        positions = args[1]
        t = positions.numel()
        rows = kwargs.get("logit_rows")
        r = t if rows is None else rows.numel()
        ctx = float(positions.sum().item()) + t  # keys each token attends to, summed (FLOPs)
        ends = torch.cat([positions[1:] != positions[:-1] + 1, positions.new_ones(1, dtype=torch.bool)])
        keys_read = float((positions[ends] + 1).sum().item())  # each chunk reads its keys once (bytes)
        work.decode_tokens += r if t == r else 0
        work.prefill_tokens += t - r if t != r else 0
        for name, (flops, nbytes) in operator_work(spec, t, r, ctx, keys_read).items():
            work.add(name, flops, nbytes)

    return hook


def _module_scopes(model: nn.Module) -> list[tuple[nn.Module, str]]:
    named: list[tuple[nn.Module, str]] = []
    for module in model.modules():
        if isinstance(module, RMSNorm):
            named.append((module, "norm"))
        elif isinstance(module, Attention):
            named += [(module, "attention.rope+other"), (module.wqkv, "attention.qkv_proj")]
            named.append((module.wo, "attention.out_proj"))
        elif isinstance(module, MLP):
            named.append((module, "mlp"))
    output = getattr(model, "output", None)
    if isinstance(output, nn.Module):
        named.append((output, "lm_head"))
    return named


def _instrument(stack: ExitStack, loaded: LoadedModel, timer: ScopeTimer, work: _Work) -> None:
    """Timed scopes around modules and the embedding, undone when `stack` closes."""
    model = loaded.model
    for module, name in _module_scopes(model):
        # Wrapping the instance's forward costs less than forward hooks (which take nn.Module's slow path).
        module.forward = _timed_forward(timer, name, module.forward)
        stack.callback(delattr, module, "forward")
    stack.callback(model.register_forward_pre_hook(forward_work(loaded, work), with_kwargs=True).remove)
    embed = model.embed

    def scoped_embed(tokens: torch.Tensor) -> torch.Tensor:
        with scope("embedding"):
            return embed(tokens)

    model.embed = scoped_embed  # type: ignore[method-assign]
    stack.callback(lambda: delattr(model, "embed"))


def _timed_forward(timer: ScopeTimer, name: str, forward: Callable[..., Any]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        timer.enter(name)
        try:
            return forward(*args, **kwargs)
        finally:
            timer.exit()

    return timed


def operator_breakdown(events: Any) -> dict[str, dict[str, float]]:
    """Self seconds of each operator, grouped under the nearest enclosing named scope."""
    names = {ROOT, *HOST_CLASSES, *MODEL_CLASSES, FORWARD}
    out: dict[str, dict[str, float]] = {}
    for evt in events:
        if evt.name in names:
            continue
        parent = evt.cpu_parent
        while parent is not None and parent.name not in names:
            parent = parent.cpu_parent
        if parent is None:
            continue
        owner = "model.other" if parent.name == FORWARD else parent.name
        ops = out.setdefault(owner, {})
        ops[evt.name] = ops.get(evt.name, 0.0) + evt.self_cpu_time_total / 1e6
    return out


@dataclass(frozen=True)
class _Served:
    wall_s: float
    busy_s: float  # inside engine steps
    tooling_s: float  # starting and stopping torch.profiler (overhead, not idle)
    energy_j: float
    steps: int
    provenance: str


def _serve(
    loaded: LoadedModel,
    prompts: list[str],
    params: SamplingParams,
    config: EngineConfig,
    meter: Meter,
    timer: ScopeTimer | None = None,
    window: tuple[int, int] = (0, 0),
) -> tuple[_Served, Any]:
    """Serve all prompts (all arriving at once) through the serving frontend; with a timer, steps
    [window) also run under torch.profiler (returned)."""
    frontend = Frontend(Engine(loaded, config, meter))
    device = next(loaded.model.parameters()).device
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    torch_window = _TorchWindow(timer, window, activities)
    result = frontend.replay([Arrival(0.0, Request(p, params)) for p in prompts], torch_window.before_step)
    torch_window.close()
    served = _Served(
        result.wall_s, result.busy_s, torch_window.tooling_s, result.energy_j, result.steps, result.energy_provenance
    )
    return served, torch_window.prof


class _TorchWindow:
    """torch.profiler over serving steps [window): started before the first, stopped before the step after
    the last (or by `close`). Its start/stop time is tooling, not the served work's."""

    def __init__(self, timer: ScopeTimer | None, window: tuple[int, int], activities: list[ProfilerActivity]) -> None:
        self.timer, self.window, self.activities = timer, window, activities
        self.prof: Any = None
        self.tooling_s = 0.0

    def before_step(self, step: int) -> None:
        if self.timer is None:
            return
        if step == self.window[0] < self.window[1]:
            t0 = time.perf_counter()
            self.prof = profile(activities=self.activities)
            self.prof.__enter__()
            self.timer.torch_marks = True
            self.tooling_s += time.perf_counter() - t0
        elif step == self.window[1] and self.timer.torch_marks:
            t0 = time.perf_counter()
            self._stop()
            self.tooling_s += time.perf_counter() - t0

    def close(self) -> None:
        """Stop a window the run ended inside (after the replay: neither its wall time nor tooling)."""
        if self.timer is not None and self.timer.torch_marks:
            self._stop()

    def _stop(self) -> None:
        assert self.timer is not None and self.prof is not None
        self.timer.torch_marks = False
        self.prof.__exit__(None, None, None)


def profile_engine(
    loaded: LoadedModel,
    prompts: list[str],
    params: SamplingParams | None = None,
    config: EngineConfig | None = None,
    meter: Meter | None = None,
    window_steps: int = 2,
    repeats: int = 1,
    weight_lever: str | None = None,
) -> HotPathProfile:
    """Serve `prompts` (a warm-up on a quarter of them, then `repeats` pairs of a plain and a profiled
    run of all) and attribute the last profiled run; the plain runs measure the profiler's overhead. The
    advice leaves out the levers the configuration already runs (`config`, and `weight_lever` applied to
    `loaded`)."""
    quiet_kineto()
    params = params or SamplingParams(max_tokens=48, stop=("<|end|>",))
    config = config or EngineConfig()
    meter = meter or auto_meter()
    on_device = next(loaded.model.parameters()).device.type == "cuda"
    _serve(loaded, prompts[: max(1, len(prompts) // 4)], params, config, meter)  # warm-up: allocator, threads
    with profile(activities=[ProfilerActivity.CPU]):  # torch.profiler's one-time start-up, outside the timing
        torch.zeros(1).add_(1)
    plain_s, profiled_s = [], []
    for _ in range(repeats):  # alternate, and keep each side's fastest: robust to other load on the machine
        plain_s.append(_serve(loaded, prompts, params, config, meter)[0].wall_s)
        work, timer = _Work(), ScopeTimer(sync_cuda=on_device)
        with ExitStack() as stack:
            _instrument(stack, loaded, timer, work)
            stack.enter_context(recording(timer))
            run, prof = _serve(loaded, prompts, params, config, meter, timer, (2, 2 + window_steps))
        profiled_s.append(run.wall_s)
    operators = operator_breakdown(prof.events()) if prof is not None else {}
    limits = measure_limits(next(loaded.model.parameters()).device)
    classes, attributed = attribute_classes(timer.exclusive, work, run, limits)
    el = next(loaded.model.parameters()).element_size()
    return HotPathProfile(
        model=loaded.source,
        device=limits.device,
        classes=classes,
        wall_s=run.wall_s,
        energy_j=run.energy_j,
        energy_provenance=run.provenance,
        attributed_fraction=attributed,
        overhead_fraction=min(profiled_s) / min(plain_s) - 1.0,
        steps=run.steps,
        limits=limits,
        advice=tuple(
            advise(
                classes,
                work.prefill_tokens,
                work.decode_tokens,
                prompts,
                loaded,
                el,
                on=levers_on(config, weight_lever),
            )
        ),
        operators={k: _top(v) for k, v in operators.items()},
    )


def quiet_kineto() -> None:
    """Keep torch.profiler's start/stop lines off the user's terminal (before its first start in the
    process); a KINETO_LOG_LEVEL the user set is kept, so its logs can still be asked for (an empty one
    counts as unset, as kineto itself treats it)."""
    if not os.environ.get("KINETO_LOG_LEVEL"):
        os.environ["KINETO_LOG_LEVEL"] = KINETO_QUIET_LEVEL


def _top(ops: dict[str, float], n: int = 4) -> dict[str, float]:
    """The `n` largest operators of a class as shares of the class's recorded operator time."""
    total = sum(ops.values()) or 1.0
    return {k: v / total for k, v in sorted(ops.items(), key=lambda kv: -kv[1])[:n]}


def attribute_classes(
    per_scope: dict[str, float], work: _Work, run: _Served, limits: DeviceLimits
) -> tuple[tuple[ClassCost, ...], float]:
    """Classes hottest first, and the fraction of wall time attributed to named classes.

    The recorded steps' exclusive times give each class's share of step time; applied to the run's
    measured busy time (inside steps) they give seconds; idle is wall time outside steps, less the
    profiler's own start/stop. Shares and the attributed fraction are of the served work's time (wall
    less that start/stop, which the overhead figure counts). Energy is split by time (estimated)."""
    per_scope = {("model.other" if k == FORWARD else k): v for k, v in per_scope.items()}  # the forward's own time
    recorded_s = sum(per_scope.values())  # every scope nests in an engine step
    share = {n: per_scope.get(n, 0.0) / recorded_s if recorded_s else 0.0 for n in (*MODEL_CLASSES, *HOST_CLASSES)}
    seconds = {n: share[n] * run.busy_s for n in share}
    seconds["idle"] = max(0.0, run.wall_s - run.busy_s - run.tooling_s)
    workload_s = run.wall_s - run.tooling_s  # the served work; starting/stopping torch.profiler is overhead
    classes = []
    for name, t in seconds.items():
        flops, nbytes = work.flops.get(name, 0.0), work.bytes.get(name, 0.0)
        bound, eff = "host", None
        if name in MODEL_CLASSES and nbytes > 0:
            bound = "compute-bound" if flops / nbytes > limits.ridge_flops_per_byte else "memory-bound"
            roof = max(flops / limits.peak_flops, nbytes / limits.bandwidth_bytes_s)
            eff = roof / t if t > 0 else None
        energy = run.energy_j * t / run.wall_s if run.wall_s else 0.0
        classes.append(ClassCost(name, t, t / workload_s if workload_s else 0.0, energy, flops, nbytes, bound, eff))
    classes.sort(key=lambda c: -c.time_s)
    unattributed_s = (per_scope.get(ROOT, 0.0) / recorded_s if recorded_s else 1.0) * run.busy_s
    return tuple(classes), 1.0 - unattributed_s / workload_s if workload_s else 0.0
