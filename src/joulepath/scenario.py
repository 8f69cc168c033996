"""Scenarios: one TOML file (validated by pydantic) describes model, workload, fleet, facility and
output. `Scenario()` is the built-in default; `load_scenario(path)` reads a file and turns every
validation failure into a `ScenarioError` that names the field, the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from joulepath.facility.grid import GRID_PROFILES, read_eia_csv
from joulepath.facility.power_chain import TOPOLOGIES
from joulepath.facility.presets import PRESETS as FACILITY_PRESETS
from joulepath.facility.supply import SmrConfig, SolarConfig, StorageConfig, WindConfig
from joulepath.facility.twin import FacilityConfig
from joulepath.facility.weather import CLIMATES, read_epw
from joulepath.hw import accelerators, get_model_preset, model_presets
from joulepath.hw.perf import DTYPE_BYTES, TransformerSpec
from joulepath.workload import read_azure_csv

Dtype = Literal["fp32", "bf16", "fp16", "fp8", "int8", "int4", "mxfp4"]
ARCH_FIELDS = ("n_layers", "d_model", "n_heads", "n_kv_heads", "head_dim", "d_ff", "vocab_size")


class ScenarioError(ValueError):
    """A scenario that cannot be used; the message is meant for the user, field by field."""


class _Section(BaseModel):
    # allow_inf_nan=False: TOML can spell `inf` and `nan`, and neither is a physical quantity
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelSection(_Section):
    """A named architecture preset, or the architecture numbers themselves (any of them override the preset)."""

    preset: str | None = "llama-3.1-8b"
    n_layers: int | None = Field(None, gt=0)
    d_model: int | None = Field(None, gt=0)
    n_heads: int | None = Field(None, gt=0)
    n_kv_heads: int | None = Field(None, gt=0)
    head_dim: int | None = Field(None, gt=0)
    d_ff: int | None = Field(None, gt=0)
    vocab_size: int | None = Field(None, gt=0)
    n_experts: int | None = Field(None, ge=0)
    n_experts_active: int | None = Field(None, ge=0)
    d_ff_expert: int | None = Field(None, ge=0)
    weight_dtype: Dtype = "bf16"
    kv_dtype: Dtype = "bf16"
    small_preset: str = Field(
        "llama-3.2-1b",
        description="the fleet's small tier: where the requests the router sends to serve.small_tier run in the "
        "projection (a preset; its weights and KV in weight_dtype and kv_dtype)",
    )

    @field_validator("preset", "small_preset")
    @classmethod
    def _known_preset(cls, v: str | None) -> str | None:
        if v is not None and v.lower() not in model_presets():
            raise ValueError(f"unknown preset; allowed: {', '.join(sorted(model_presets()))}")
        return v

    @model_validator(mode="after")
    def _complete(self) -> ModelSection:
        if self.preset is None:
            missing = [f for f in ARCH_FIELDS if getattr(self, f) is None]
            if missing:
                raise ValueError(f"without a preset, give every architecture field; missing: {', '.join(missing)}")
        return self

    @model_validator(mode="after")
    def _consistent(self) -> ModelSection:
        """The architecture the fields describe must exist: GQA groups divide the heads, experts add up."""
        spec = self.spec()
        if spec.n_kv_heads > spec.n_heads or spec.n_heads % spec.n_kv_heads:
            raise ValueError(f"n_heads ({spec.n_heads}) must be a multiple of n_kv_heads ({spec.n_kv_heads})")
        return self

    def spec(self) -> TransformerSpec:
        if self.preset is not None:
            base = get_model_preset(self.preset)
            values = {k: v for k, v in base.__dict__.items()}
        else:
            values = {"name": "custom"}
        for key in (*ARCH_FIELDS, "n_experts", "n_experts_active", "d_ff_expert"):
            if getattr(self, key) is not None:
                values[key] = getattr(self, key)
        values["weight_dtype"], values["kv_dtype"] = self.weight_dtype, self.kv_dtype
        return TransformerSpec(**values)  # its ValueErrors surface through `_consistent` as field errors

    def small_spec(self) -> TransformerSpec:
        """The fleet's small tier (tiered routing), stored like the main model."""
        return get_model_preset(self.small_preset).with_dtypes(self.weight_dtype, self.kv_dtype)


class WorkloadSection(_Section):
    """A trace file (Azure CSV) or the synthetic generator (defaults fitted to the Azure trace)."""

    kind: Literal["synthetic", "azure_csv"] = "synthetic"
    path: Path | None = None
    duration_s: float = Field(600.0, gt=0, description="horizon of the trace to use, seconds")
    time_scale: float = Field(1.0, gt=0, description="2.0 = arrivals twice as fast")
    seed: int = Field(0, ge=0)
    interactive_fraction: float = Field(0.8, ge=0, le=1)
    arrival_rate_per_s: float | None = Field(None, gt=0)
    interarrival_cv: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _path_for_files(self) -> WorkloadSection:
        if self.kind == "azure_csv" and self.path is None:
            raise ValueError(
                "kind = 'azure_csv' needs path = '<file>.csv' (columns TIMESTAMP,ContextTokens,GeneratedTokens)"
            )
        return self


class FleetSection(_Section):
    """The target fleet the measured work is projected onto."""

    accelerator: str = "h100-sxm"
    count: int = Field(4, ge=1, description="accelerators in the fleet")
    tensor_parallel: int = Field(1, ge=1)
    data_parallel: int = Field(1, ge=1)
    expert_parallel: int = Field(1, ge=1)
    power_limit_w: float | None = Field(None, gt=0)
    assumed_tdp_w: float | None = Field(None, gt=0, description="only for accelerators without a published TDP")
    max_batch: int = Field(256, ge=1, description="scheduler's maximum running sequences per serving unit")
    small_tier_accelerator: str | None = Field(
        None,
        description="tiered routing: the accelerator the fleet's small tier runs on, one device per serving unit "
        "carved from the fleet (e.g. cloud-ai100-ultra, an NPU); None: the fleet's own accelerator",
    )

    @field_validator("accelerator")
    @classmethod
    def _known_accelerator(cls, v: str) -> str:
        usable = sorted(k for k, a in accelerators().items() if a.bf16_dense_tflops and a.memory_bandwidth_tb_s)
        if v.lower() not in usable:
            raise ValueError(f"unknown or non-serving accelerator; allowed: {', '.join(usable)}")
        return v.lower()

    @field_validator("small_tier_accelerator")
    @classmethod
    def _serves_a_tier(cls, v: str | None) -> str | None:
        if v is None:
            return v
        usable = sorted(
            k for k, a in accelerators().items()
            if a.bf16_dense_tflops and a.memory_bandwidth_tb_s and a.memory_capacity_gib and a.tdp_w
        )  # fmt: skip
        if v.lower() not in usable:
            raise ValueError(
                f"a small-tier accelerator needs published compute, memory bandwidth and capacity and TDP; allowed: "
                f"{', '.join(usable)}"
            )
        return v.lower()

    @model_validator(mode="after")
    def _tdp_only_where_unpublished(self) -> FleetSection:
        published = accelerators()[self.accelerator].tdp_w
        if self.assumed_tdp_w is not None and published is not None:
            raise ValueError(
                f"assumed_tdp_w is only for accelerators without a published TDP; {self.accelerator} publishes "
                f"{published:g} W (use power_limit_w to cap it)"
            )
        return self

    @model_validator(mode="after")
    def _divides(self) -> FleetSection:
        unit = self.tensor_parallel * self.data_parallel
        if self.count % unit:
            raise ValueError(f"count ({self.count}) must be a multiple of tensor_parallel x data_parallel ({unit})")
        if self.expert_parallel not in (1, unit):
            raise ValueError(f"expert_parallel must be 1 or tensor_parallel x data_parallel ({unit})")
        return self


class FacilitySection(_Section):
    """The facility the fleet runs in, simulated by the twin (see `joulepath twin`)."""

    preset: str = "modern-air"
    topology: str | None = Field(None, description="override the preset's power chain")
    liquid_fraction: float | None = Field(None, ge=0, le=1, description="override: heat share to cold plates")
    climate: str = "temperate"
    weather_file: Path | None = None
    grid_region: str = "pjm"
    grid_file: Path | None = None
    solar_mw: float = Field(0.0, ge=0)
    wind_mw: float = Field(0.0, ge=0)
    smr_mw: float = Field(0.0, ge=0)
    storage_mwh: float = Field(0.0, ge=0)
    storage_mw: float = Field(0.0, ge=0)
    rack_kw: float = Field(40.0, gt=0, description="IT power per rack, for the cooling feasibility check")
    horizon_days: float = Field(365.0, gt=0, le=366)
    step_s: float = Field(3600.0, ge=60, le=86400)
    load_shape: Literal["repeat", "daily"] = Field(
        "repeat",
        description="how the trace's IT power series fills the horizon: repeat it back to back at its own time "
        "scale, or stretch it to one day (a daily load curve) and repeat that; energy is conserved either way",
    )
    host_w_per_device: float = Field(300.0, ge=0, description="host CPU, DRAM, NICs, storage per accelerator, W")
    host_source: str = "about half of DGX H100's non-GPU budget ((10.2 kW max - 8 x 700 W) / 8 = 575 W)"

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        if v not in FACILITY_PRESETS:
            raise ValueError(f"unknown facility preset; allowed: {', '.join(sorted(FACILITY_PRESETS))}")
        return v

    @field_validator("topology")
    @classmethod
    def _known_topology(cls, v: str | None) -> str | None:
        if v is not None and v not in TOPOLOGIES:
            raise ValueError(f"unknown power topology; allowed: {', '.join(TOPOLOGIES)}")
        return v

    @field_validator("climate")
    @classmethod
    def _known_climate(cls, v: str) -> str:
        if v not in CLIMATES:
            raise ValueError(f"unknown climate; allowed: {', '.join(sorted(CLIMATES))} (or set weather_file)")
        return v

    @field_validator("grid_region")
    @classmethod
    def _known_region(cls, v: str) -> str:
        if v not in GRID_PROFILES:
            raise ValueError(f"unknown grid region; allowed: {', '.join(sorted(GRID_PROFILES))} (or set grid_file)")
        return v

    def config(self) -> FacilityConfig:
        """The twin configuration this section describes."""
        base = FACILITY_PRESETS[self.preset]
        cooling = base.cooling
        if self.liquid_fraction is not None:
            kind = cooling.kind if cooling.kind != "air" or self.liquid_fraction == 0 else "liquid"
            cooling = dataclasses.replace(cooling, kind=kind, liquid_fraction=self.liquid_fraction)
        storage = StorageConfig(energy_wh=self.storage_mwh * 1e6, power_w=self.storage_mw * 1e6)
        return base.replace(
            cooling=cooling,
            topology=self.topology or base.topology,
            climate=self.climate,
            weather_file=self.weather_file,
            grid_region=self.grid_region,
            grid_file=self.grid_file,
            solar=SolarConfig(capacity_w=self.solar_mw * 1e6),
            wind=WindConfig(capacity_w=self.wind_mw * 1e6),
            smr=SmrConfig(capacity_w=self.smr_mw * 1e6),
            storage=storage,
            rack_kw=self.rack_kw,
        )


ZOO_MODELS = ("jp-small", "jp-large")  # = joulepath.model.checkpoint.ZOO_MODELS (kept torch-free here; tested)
# the files `speculative = mtp / eagle` load (model.mtp.HEADS_FILE, model.eagle.EAGLE_FILE; torch-free here; tested)
DRAFTER_FILES = {"mtp": "mtp_heads.safetensors", "eagle": "eagle_draft.safetensors"}


def model_folder(spec: str) -> Path | None:
    """The folder a served-model name stands for (the zoo's or a path), or None (dummy: models)."""
    if spec in ZOO_MODELS:
        return Path(__file__).parent / "model" / "zoo" / spec
    return Path(spec) if Path(spec).is_dir() else None


class ServeSection(_Section):
    """Real execution on this machine: the trace's first requests served by the engine, baseline (one
    at a time) and optimized (continuous batching + prefix cache), then profiled."""

    enabled: bool = True
    model: str = Field(
        "jp-large",
        description="zoo model (jp-small, jp-large), a model folder or dummy:PRESET; jp-large is the default: "
        "the more accurate of the two (golden test 89.7 / 79.4 / 71.6 % easy / medium / hard, jp-small "
        "88.4 / 69.4 / 57.2 %)",
    )
    requests: int = Field(
        144,
        ge=1,
        le=2000,
        description="distinct requests served and scored here, per configuration: the trace's first ones' "
        "arrival times, golden dev tasks as their content. With repeat_over = 'slices' each repetition serves "
        "its own requests / repeats of them, accuracy scored on all (144 = 3 x 48: the default run took 126-153 s "
        "on a 2-core AVX2 VM, the weight lever's first quality gate included; 3 x 64 took 174 s)",
    )
    max_batch: int = Field(16, ge=1, description="optimized configuration's running sequences per step")
    max_tokens: int = Field(40, ge=1, le=4096, description="longest answer, tokens")
    replay_s: float = Field(0.5, ge=0, description="the served requests' arrivals are compressed into this span")
    repeats: int = Field(
        3,
        ge=1,
        le=20,
        description="times each configuration is served, interleaved (baseline, each ablation rung, optimized, "
        "baseline, ...); "
        "local ratios are reported as the median and min-max over the repetitions",
    )
    repeat_over: Literal["slices", "same"] = Field(
        "slices",
        description="what each repetition serves: 'slices' gives repetition k its own slice of the requests "
        "(the same arrival times, other golden tasks; every rung serves that slice in that repetition, so each "
        "ratio stays paired), accuracy scored on every slice; 'same' serves all the requests in every "
        "repetition (repetitions then only re-measure the machine's noise, at repeats times the cost)",
    )
    ablation: bool = Field(
        True,
        description="also serve the rungs between brute force and optimized, one lever more each (continuous "
        "batching, prefix cache, the gated weight/KV lever, speculative decoding), interleaved with them: the "
        "headline waterfall's measured steps; false serves only the two ends (faster)",
    )
    prefix_cache: bool = Field(
        True,
        description="the optimized configuration reuses the KV of shared prompt prefixes (engine/prefix_cache.py); "
        "the baseline never does",
    )
    speculative: Literal["off", "prompt_lookup", "draft", "mtp", "eagle"] = Field(
        "off",
        description="speculative decoding in the optimized configuration (engine/speculative.py): prompt_lookup "
        "(n-grams of the prompt and output), draft (serve.draft_model proposes), mtp (the model's multi-token "
        "heads); k adapts to measured acceptance and step cost, so it switches itself off where it does not pay",
    )
    draft_model: str = Field("jp-small", description="the draft model for speculative = 'draft' (same tokenizer)")
    attention: Literal["auto", "sdpa", "row_invariant"] = Field(
        "auto",
        description="the engine's attention kernel in every served configuration (engine/row_attention.py): "
        "row_invariant gives each token the same bits whatever batch, chunking or drafts surround it (greedy "
        "speculative decoding token-identical to plain); auto uses it where it is also faster (fp32 on an "
        "AVX-512 CPU at 1 torch thread), sdpa is torch's",
    )
    routing: Literal["auto", "off"] = Field(
        "auto",
        description="tiered routing in the optimized configuration: auto sends each request to small_tier or "
        "to model as the router shipped for that pair decides (only if it was fitted on these weights and kept "
        "99 % of model's golden test accuracy); off: every request on model",
    )
    small_tier: str = Field("jp-small", description="the cheaper model tier the router can choose")
    quantize: Literal[
        "off", "auto", "int8_vnni", "int8_dynamic", "int8_weight_only", "int4_weight_only", "int4_vnni", "fp8_dynamic"
    ] = Field(
        "auto",
        description="weight quantization of the optimized configuration's model (joulepath.optimize), used only "
        "if it passes its quality gate (golden accuracy -1 point at most, overall and per skill); auto tries "
        "int8_vnni (where the CPU has AVX512-VNNI or AVX2 with FMA and a C compiler), int8_dynamic, "
        "int4_weight_only, int8_weight_only in that order (int8_vnni last past 2 threads, unmeasured there; "
        "each with gate-chosen opt-outs); fp8_dynamic needs a CUDA GPU of compute "
        "capability 8.9+: where the model runs on a CPU the run says so and serves the weights as loaded",
    )
    sparsity: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="TEAL activation sparsity target for the optimized model (0 = off, the default: on this CPU it "
        "pays only at >= 0.5, where jp-large fails its gate); gated like quantization and tried after it, "
        "instead of it (sparse projections are not quantized)",
    )
    kv_int8: bool = Field(
        False,
        description="int8 KV cache (per-token, per-head scales) in the optimized configuration, used only if it "
        "passes its own quality gate (gated alone, against the model as loaded); replaces the KV offload tiers",
    )
    gate_per_cell: int = Field(
        10,
        ge=1,
        le=40,
        description="golden test-split examples per skill and level the quality gate serves (cached per model)",
    )
    kv_offload_host_mib: int = Field(
        0,
        ge=0,
        description="KV offload tier under the prefix cache: MiB of evicted blocks kept in host memory (pinned "
        "under a GPU; on a CPU the pool is host memory already, so this only adds a copy); needs prefix_cache",
    )
    kv_offload_disk_mib: int = Field(
        256,
        ge=0,
        description="KV offload tier: MiB of evicted blocks kept in a memory-mapped file on local disk, restored "
        "when that is measured cheaper than recomputing them; needs prefix_cache",
    )
    kv_modelled_tier: Literal["none", "cxl-memory", "hbm-pim"] = Field(
        "cxl-memory",
        description="a KV tier this machine does not have, modelled from the catalog (estimated): the blocks it "
        "would have served on the same requests are counted, its copy time and energy estimated",
    )
    kv_modelled_tier_gib: float = Field(64.0, gt=0, description="size of the modelled KV tier, GiB")
    profile: bool = True
    profile_requests: int = Field(
        16,
        ge=1,
        description="the hot-path profile replays this many of the served requests (the first ones) at the "
        "optimized batch size: under the torch profiler 200 took ~40 s here; 16 took 11 s on a 2-core AVX2 VM "
        "(brute force and optimized), 32 took 17-18 s",
    )

    @model_validator(mode="after")
    def _a_slice_per_repetition(self) -> ServeSection:
        if self.repeat_over == "slices" and self.requests < self.repeats:
            raise ValueError(
                f"serve.requests ({self.requests}) is fewer than serve.repeats ({self.repeats}): with repeat_over = "
                f"'slices' each repetition serves its own slice of the requests; raise requests to at least "
                f"{self.repeats}, or set repeat_over = 'same'"
            )
        return self

    @property
    def per_repetition(self) -> int:
        """Requests each repetition serves: its slice (requests // repeats; the remainder is not served) or all."""
        return self.requests // self.repeats if self.repeat_over == "slices" else self.requests

    @model_validator(mode="after")
    def _offload_needs_prefix_cache(self) -> ServeSection:
        if self.attention == "row_invariant" and self.kv_int8:
            raise ValueError(
                "attention = row_invariant reads a full-precision KV cache: set kv_int8 = false, or attention = auto"
            )
        asked = {"kv_offload_host_mib", "kv_offload_disk_mib"} & self.model_fields_set  # defaults just go unused
        if any(getattr(self, f) for f in asked) and self.kv_int8:
            raise ValueError(
                "KV offload tiers hold full-precision blocks: set kv_int8 = false, or kv_offload_host_mib and "
                "kv_offload_disk_mib to 0"
            )
        if any(getattr(self, f) for f in asked) and not self.prefix_cache:
            raise ValueError(
                "KV offload tiers hold the prefix cache's evicted blocks: set prefix_cache = true, or set "
                "kv_offload_host_mib and kv_offload_disk_mib to 0"
            )
        return self

    @model_validator(mode="after")
    def _drafter_shipped(self) -> ServeSection:
        """speculative = mtp / eagle reads files shipped beside the served model: refuse the scenario now, not
        after the ablation's earlier rungs were served."""
        wanted = DRAFTER_FILES.get(self.speculative)
        if wanted is None:
            return self
        folder = model_folder(self.model)
        if folder is None or not (folder / wanted).is_file():
            raise ValueError(
                f"speculative = '{self.speculative}': {self.model} ships no {wanted}; use prompt_lookup or draft, "
                + ("or train a draft block with benchmarks/mtp_distill.py --write" if self.speculative == "eagle" else
                   "or a model with multi-token heads")
            )  # fmt: skip
        return self

    @field_validator("model", "draft_model", "small_tier")
    @classmethod
    def _known_model(cls, v: str) -> str:
        if v in ZOO_MODELS or v.startswith("dummy:") or Path(v).is_dir():
            return v
        raise ValueError(f"unknown model; use {', '.join(ZOO_MODELS)}, a Hugging Face model folder or dummy:PRESET")


class ControlSection(_Section):
    """Adaptive infrastructure (joulepath.control), in the optimized configuration only: a controller sets
    the facility's cooling setpoints each interval (the baseline keeps the fixed setpoints); power caps;
    batch work shifted in time with a battery against carbon and price (the baseline runs it at once)."""

    enabled: bool = True
    controller: Literal["mpc", "g36", "fixed"] = Field(
        "mpc",
        description="mpc: model-predictive over the twin's cooling model with load and weather forecasts; g36: "
        "ASHRAE Guideline 36-style trim and respond; fixed: 18 C supply air",
    )
    interval_s: float = Field(900.0, gt=0, description="seconds between decisions (at least one facility step)")
    horizon_intervals: int = Field(4, ge=1, le=96, description="the MPC's look-ahead, in intervals")
    inlet_margin_k: float = Field(0.3, ge=0, le=5, description="the MPC keeps rack inlets this far below 27 C")
    power_cap: Literal["off", "auto"] = Field(
        "auto",
        description="auto: the optimized fleet runs at the power limit with the least J/token whose p99 TPOT is at "
        "most latency_bound_pct worse than uncapped (Zeus-style, hardware model, estimated); ignored when "
        "fleet.power_limit_w is set",
    )
    latency_bound_pct: float = Field(5.0, ge=0, le=100, description="the slowdown a power cap may cost, p99 TPOT")
    cap_static_power_scales: bool = Field(
        False,
        description="false (conservative): a cap counts only where it pays even if static power does not fall with "
        "the clock; true: the hardware model's own reading, where all power above idle scales (larger savings)",
    )
    shifting: Literal["off", "auto"] = Field(
        "off",
        description="auto: the optimized configuration moves its deferrable (batch) work in time against the grid's "
        "hourly carbon intensity and price and dispatches a battery with it (control.shift, linear program on "
        "forecasts, estimated); interactive work never moves; the baseline runs everything at once, battery idle. "
        "Off by default: on the default site (PJM) it cut energy cost 7.0 % but raised CO2 0.25 % and wall energy "
        "0.43 % (battery losses), so its headline step is not positive (benchmarks/RESULTS.md, headline)",
    )
    deferrable_share: float | None = Field(
        None,
        ge=0,
        le=1,
        description="share of each hour's load that is batch work and may be deferred; none: the workload's batch "
        "class share (1 - workload.interactive_fraction)",
    )
    deadline_h: int = Field(
        24, ge=1, le=168, description="each batch job must finish within this many hours of its arrival"
    )
    battery_hours: float = Field(
        4.0, ge=0, le=24, description="battery energy / power rating (rated at 25 % of the mean load), h; 0 = none"
    )
    replan_h: int = Field(
        24,
        ge=1,
        le=48,
        description="hours between the shifting plans (each over max(48, deadline_h + replan_h) hours ahead); 1 "
        "re-plans hourly (the benchmark's policy, ~25x slower: about a minute per facility year)",
    )

    def shift_deferrable_share(self, workload: WorkloadSection) -> float:
        """The deferrable share shifting uses: `deferrable_share`, or the workload's batch class share."""
        if self.deferrable_share is not None:
            return self.deferrable_share
        return 1.0 - workload.interactive_fraction


class GuardSection(_Section):
    """Guardrails in front of the engine for the requests served here (joulepath.serving.guard)."""

    enabled: bool = True
    max_input_chars: int = Field(8000, gt=0)
    max_output_chars: int = Field(4000, gt=0)
    pii: Literal["redact", "block", "off"] = "redact"
    injection: bool = True
    forbidden: bool = True
    semantic: bool = Field(
        False, description="the embedding classifier (loads a 90 MB model and fits once per process, ~30 s)"
    )
    semantic_threshold: float | None = Field(
        None, gt=0, lt=1, description="p(unsafe) at which the classifier blocks; none: its cross-validated threshold"
    )
    output_filter: bool = True


class OutputSection(_Section):
    dir: Path = Path("runs")


SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # no separators, no leading dot: stays in output.dir


class Scenario(_Section):
    """A whole scenario. `Scenario()` is the built-in default."""

    name: str = Field("default", description="names the run folder: letters, digits, '.', '_', '-'")
    description: str = "Llama-3.1-8B shape on 4 x H100 SXM, Azure-conversation-like load at 8x its rate"
    model: ModelSection = ModelSection()
    workload: WorkloadSection = WorkloadSection(time_scale=8.0)
    fleet: FleetSection = FleetSection()
    facility: FacilitySection = FacilitySection()
    serve: ServeSection = ServeSection()
    guard: GuardSection = GuardSection()
    control: ControlSection = ControlSection()
    output: OutputSection = OutputSection()

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not SAFE_NAME.fullmatch(v):
            raise ValueError(
                "the name becomes the run folder's name: use 1-64 letters, digits, '.', '_' or '-', starting with "
                "a letter or digit (no '/', no leading '.')"
            )
        return v

    def to_toml(self) -> str:
        data = self.model_dump(mode="json", exclude_none=True)
        return tomli_w.dumps(data)


def _describe(err: Any) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        hint = "check its spelling against `joulepath scenario show-default`"
        return f"{loc}: unknown field (value {err['input']!r}); {hint}"
    if err["type"] == "missing":
        return f"{loc}: required field is missing"
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f" = {value!r}"
    return f"{loc}{shown}: {err['msg'].removeprefix('Value error, ')}"


def parse_scenario(data: dict[str, Any], origin: str = "scenario") -> Scenario:
    """Validate a scenario given as a dict (a parsed TOML file)."""
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(e) for e in exc.errors()]
        raise ScenarioError(f"{origin} is not a valid scenario:\n  " + "\n  ".join(lines)) from None


def _read_toml(path: Path) -> dict[str, Any]:
    """The parsed TOML of a scenario file; a missing, unreadable, empty or malformed file is a ScenarioError."""
    if path.is_dir():
        raise ScenarioError(f"{path} is a folder; give a scenario TOML file (`joulepath scenario show-default`)")
    if not path.is_file():
        raise ScenarioError(
            f"scenario file {path} does not exist; start from `joulepath scenario show-default > {path}`"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario file {path}: {exc.strerror}") from None
    if not data:
        raise ScenarioError(
            f"{path}: the file is empty (no settings); omit the argument to use the built-in default, or start "
            "from `joulepath scenario show-default`"
        )
    return data


def load_scenario(path: str | Path | None) -> Scenario:
    """Read a scenario TOML file; `None` gives the built-in default. Relative file paths (trace, weather,
    grid) are resolved against the scenario file's folder."""
    if path is None:
        return Scenario()
    path = Path(path)
    data = _read_toml(path)
    for section, key in (("workload", "path"), ("facility", "weather_file"), ("facility", "grid_file")):
        value = data.get(section, {}).get(key) if isinstance(data.get(section), dict) else None
        if isinstance(value, str) and not Path(value).is_absolute():
            data[section][key] = str(path.parent / value)
    return parse_scenario(data, str(path))


def check_scenario_files(scenario: Scenario) -> None:
    """Read every file the scenario names (trace, weather, grid) and raise one ScenarioError that lists,
    field by field, each that is missing or does not parse; `scenario check` and `run` call it before work."""
    problems = []
    readers: list[tuple[str, Path | None, Callable[[Path], object]]] = [
        ("workload.path", scenario.workload.path if scenario.workload.kind == "azure_csv" else None, read_azure_csv),
        ("facility.weather_file", scenario.facility.weather_file, read_epw),
        ("facility.grid_file", scenario.facility.grid_file, read_eia_csv),
    ]
    for field, path, read in readers:
        if path is None:
            continue
        try:
            read(path)
        except (ValueError, OSError) as exc:  # the readers' own errors name the file, line and fix
            problems.append(f"{field}: {exc}")
    if problems:
        raise ScenarioError("the scenario names files that cannot be used:\n  " + "\n  ".join(problems))


__all__ = ["DTYPE_BYTES", "Scenario", "ScenarioError", "check_scenario_files", "load_scenario", "parse_scenario"]
