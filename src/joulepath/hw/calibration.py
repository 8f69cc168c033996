"""Calibrate the hardware model's efficiency factors on measured serving data and validate it.

Data: the ML.ENERGY Leaderboard v3 configuration table (`mlenergy_v3_llm_configs.csv`: vLLM steady
state on H100 SXM and B200; GPU energy from NVML via Zeus). Protocol: fit on H100 rows only, report
mean absolute percentage error (MAPE) on B200 rows, which the fit never sees.

Fitting, step by step:
1. The step-time model is linear in its coefficients (`perf.TIME_COEFFICIENTS`), so they are a
   non-negative least-squares fit of relative error on the median inter-token latency, the GEMM
   factor held at or above 1 (no kernel beats its roofline).
2. The data set gives no prompt lengths; each task's mean prompt length is a latent parameter chosen
   from a grid by coordinate descent on the H100 rows (held-out B200 rows use the same values). A
   batch whose cache would not fit at that length runs shorter sequences (`perf.kv_capacity_tokens`).
3. The power curve is linear in (1, memory util, compute util) of the fitted time model, fitted by
   non-negative least squares on measured average power as a fraction of the TDP's dynamic range.
Mamba-Transformer hybrids are outside the transformer model and are excluded (counted, not hidden).
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from joulepath.hw.catalog import get_accelerator
from joulepath.hw.perf import (
    COMPUTE_DTYPE,
    POWER_COEFFICIENTS,
    TIME_COEFFICIENTS,
    Deployment,
    Efficiency,
    TransformerSpec,
    _decode_work,
    get_model_preset,
    power_features,
    steady_state,
    time_features,
)

#: ML.ENERGY model ids -> architecture preset (substring match on the lower-cased id, first wins).
MODEL_MAP: tuple[tuple[str, str], ...] = (
    ("qwen3-coder-480b-a35b", "qwen3-coder-480b-a35b"),
    ("qwen3-coder-30b-a3b", "qwen3-30b-a3b"),
    ("qwen3-235b-a22b", "qwen3-235b-a22b"),
    ("qwen3-30b-a3b", "qwen3-30b-a3b"),
    ("qwen3-32b", "qwen3-32b"),
    ("qwen3-14b", "qwen3-14b"),
    ("qwen3-8b", "qwen3-8b"),
    ("deepseek-r1", "deepseek-v3"),
    ("deepseek-v3", "deepseek-v3"),
    ("gemma-3-12b", "gemma-3-12b"),
    ("gemma-3-27b", "gemma-3-27b"),
    ("llama-3.1-405b", "llama-3.1-405b"),
    ("llama-3.1-70b", "llama-3.1-70b"),
    ("llama-3.3-70b", "llama-3.1-70b"),
    ("llama-3.1-8b", "llama-3.1-8b"),
    ("llama-4-maverick", "llama-4-maverick"),
    ("llama-4-scout", "llama-4-scout"),
    ("gpt-oss-120b", "gpt-oss-120b"),
    ("gpt-oss-20b", "gpt-oss-20b"),
)
PRECISION = {"bfloat16": "bf16", "fp8": "fp8", "mxfp4": "mxfp4"}
GPU = {"H100": "h100-sxm", "B200": "b200"}
PROMPT_GRID = (64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)


@dataclass(frozen=True)
class MeasuredConfig:
    """One measured serving configuration (a row of the ML.ENERGY table), units in names."""

    model_id: str
    task: str
    architecture: str  # "Dense Transformer" | "MoE" | "Mamba-Transformer Hybrid"
    gpu: str
    spec: TransformerSpec | None  # None: not a pure transformer (excluded)
    deployment: Deployment
    batch: float
    output_tokens: float
    power_w: float  # all GPUs of the configuration
    energy_per_token_j: float
    median_itl_s: float

    @property
    def group(self) -> str:
        return "moe" if self.architecture == "MoE" else "dense" if self.spec else "hybrid"


def _preset_for(model_id: str) -> str | None:
    key = model_id.lower()
    return next((preset for sub, preset in MODEL_MAP if sub in key), None)


def load_mlenergy(path: Path) -> list[MeasuredConfig]:
    """Read the ML.ENERGY configuration CSV; raises ValueError naming the row on malformed input."""
    rows = []
    with path.open(newline="") as fh:
        for i, raw in enumerate(csv.DictReader(fh), start=2):
            try:
                rows.append(_parse_row(raw))
            except (KeyError, ValueError) as exc:
                raise ValueError(f"{path}:{i}: cannot read ML.ENERGY row: {exc}") from exc
    return rows


def _parse_row(raw: dict[str, str]) -> MeasuredConfig:
    n_gpus, dp = int(raw["num_gpus"]), int(raw["data_parallel"])
    ep = n_gpus if int(raw["expert_parallel"]) > 1 else 1
    preset = _preset_for(raw["model_id"])
    is_transformer = raw["architecture"] in ("Dense Transformer", "MoE")
    spec = None
    if is_transformer and preset is not None:
        spec = get_model_preset(preset).with_dtypes(PRECISION[raw["weight_precision"]])
    # tensor_parallel x data_parallel must cover the GPUs: ML.ENERGY lists tp=1 for pure-EP runs,
    # where vLLM shards attention over the same GPUs as the experts.
    dep = Deployment(get_accelerator(GPU[raw["gpu_model"]]), n_gpus // dp, dp, ep)
    return MeasuredConfig(
        model_id=raw["model_id"],
        task=raw["task"],
        architecture=raw["architecture"],
        gpu=raw["gpu_model"],
        spec=spec,
        deployment=dep,
        batch=float(raw["avg_batch_size"]),
        output_tokens=float(raw["avg_output_len"]),
        power_w=float(raw["avg_power_w"]),
        energy_per_token_j=float(raw["energy_per_token_j"]),
        median_itl_s=float(raw["median_itl_ms"]) / 1e3,
    )


def nnls(a: np.ndarray, b: np.ndarray, iters: int = 20000, tol: float = 1e-12) -> np.ndarray:
    """Non-negative least squares min ||a x - b|| s.t. x >= 0, by cyclic coordinate descent on the
    normal equations (columns scaled to unit norm first; small problems only)."""
    scale = np.linalg.norm(a, axis=0)
    scale[scale == 0] = 1.0
    a_s = a / scale
    ata, atb = a_s.T @ a_s, a_s.T @ b
    x = np.zeros(a.shape[1])
    for _ in range(iters):
        moved = 0.0
        for j in range(len(x)):
            if ata[j, j] <= 0:
                continue
            new = max(0.0, x[j] + (atb[j] - ata[j] @ x) / ata[j, j])
            moved = max(moved, abs(new - x[j]))
            x[j] = new
        if moved < tol:
            break
    result: np.ndarray = x / scale
    return result


def _context(row: MeasuredConfig, prompts: dict[str, float]) -> float:
    return prompts[row.task] + row.output_tokens / 2.0


#: Lower bounds of the time coefficients (`TIME_COEFFICIENTS` order): a GEMM never beats its roofline.
#: The attention factor stays free: its context is a fitted latent (task prompt lengths), not a measurement.
TIME_FLOOR = np.array([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])


def fit_time(rows: list[MeasuredConfig], prompts: dict[str, float], base: Efficiency) -> Efficiency:
    """Fit the step-time coefficients on measured median ITL (relative-error NNLS above `TIME_FLOOR`)."""
    feats, target = [], []
    for r in rows:
        assert r.spec is not None
        work = _decode_work(r.spec, r.deployment, r.batch, _context(r, prompts))
        x = np.array(time_features(work, r.spec, r.deployment, r.batch)) / r.median_itl_s
        feats.append(x)
        target.append(1.0 - TIME_FLOOR @ x)  # fit the excess over the floor, which NNLS keeps >= 0
    coef = TIME_FLOOR + nnls(np.array(feats), np.array(target))
    return dataclasses.replace(base, **dict(zip(TIME_COEFFICIENTS, map(float, coef), strict=True)))  # type: ignore[arg-type]


def fit_power(rows: list[MeasuredConfig], prompts: dict[str, float], eff: Efficiency) -> Efficiency:
    """Fit the power model on measured average power per GPU, given fitted times (relative NNLS)."""
    feats, target = [], []
    for r in rows:
        assert r.spec is not None
        dep = r.deployment
        ss = steady_state(r.spec, dep, r.batch, prompts[r.task], r.output_tokens, eff)
        measured_w = r.power_w / dep.n_devices
        bytes_s = ss.memory_util * dep.accelerator.memory_bandwidth_b_s
        flops_s = ss.compute_util * dep.accelerator.peak_flops(COMPUTE_DTYPE.get(r.spec.weight_dtype, "bf16"))
        feats.append(np.array(power_features(dep.tdp_w, ss.kernel_fraction, bytes_s, flops_s)) / measured_w)
        target.append(1.0)
    coef = nnls(np.array(feats), np.array(target))
    return dataclasses.replace(eff, **dict(zip(POWER_COEFFICIENTS, map(float, coef), strict=True)))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Prediction:
    row: MeasuredConfig
    itl_s: float
    power_w: float
    energy_per_token_j: float


@dataclass(frozen=True)
class Calibration:
    """Fitted efficiency factors (one set for dense and MoE alike) and task prompt lengths."""

    efficiency: Efficiency
    prompt_tokens_by_task: dict[str, float]


def predict(rows: list[MeasuredConfig], cal: Calibration, eff: Efficiency | None = None) -> list[Prediction]:
    """Model predictions for measured rows (with `eff` in place of the calibration's, if given)."""
    eff = eff or cal.efficiency
    out = []
    for r in rows:
        assert r.spec is not None
        ss = steady_state(r.spec, r.deployment, r.batch, cal.prompt_tokens_by_task[r.task], r.output_tokens, eff)
        out.append(Prediction(r, ss.itl_s, ss.power_w, ss.energy_per_output_token_j))
    return out


def mape(preds: list[Prediction], metric: str) -> float:
    """Mean absolute percentage error (%) of `itl`, `power` or `energy` over predictions."""
    if not preds:
        return float("nan")
    measured = {"itl": "median_itl_s", "power": "power_w", "energy": "energy_per_token_j"}[metric]
    predicted = {"itl": "itl_s", "power": "power_w", "energy": "energy_per_token_j"}[metric]
    errs = [abs(getattr(p, predicted) / getattr(p.row, measured) - 1.0) for p in preds]
    return 100.0 * float(np.mean(errs))


def _fit(rows: list[MeasuredConfig], prompts: dict[str, float]) -> Calibration:
    return Calibration(fit_power(rows, prompts, fit_time(rows, prompts, Efficiency(source=""))), prompts)


def _score(rows: list[MeasuredConfig], cal: Calibration) -> float:
    preds = predict(rows, cal)
    return mape(preds, "itl") + mape(preds, "energy")


def calibrate(train: list[MeasuredConfig], sweeps: int = 2) -> Calibration:
    """Fit efficiency factors and per-task prompt lengths on `train` (transformer rows only).

    The factors are closed-form NNLS fits; the prompt lengths are chosen by coordinate descent over
    `PROMPT_GRID`, minimising ITL MAPE + energy MAPE over the training rows. One set of factors
    serves dense and MoE models: per-class sets fit H100 better but carried over to B200 worse."""
    rows = [r for r in train if r.spec is not None]
    if not rows:
        raise ValueError("no transformer rows to calibrate on")
    tasks = sorted({r.task for r in rows})
    cal = _fit(rows, dict.fromkeys(tasks, 512.0))
    best = _score(rows, cal)
    for _ in range(sweeps):
        for task in tasks:
            for value in PROMPT_GRID:
                trial = _fit(rows, {**cal.prompt_tokens_by_task, task: float(value)})
                score = _score(rows, trial)
                if score < best:
                    best, cal = score, trial
    gpus = ", ".join(sorted({r.gpu for r in rows}))
    source = f"calibrated on {len(rows)} ML.ENERGY v3 rows ({gpus})"
    return Calibration(dataclasses.replace(cal.efficiency, source=source), cal.prompt_tokens_by_task)
