import os
import subprocess
import sys

import pytest

from joulepath.engine import EngineConfig
from joulepath.meter import Meter, ReplayBackend
from joulepath.model import load_model
from joulepath.profile import profile_engine
from joulepath.profile.advice import LEVERS, shared_prefix_fraction
from joulepath.profile.hotpath import MODEL_CLASSES


@pytest.fixture(scope="module")
def tiny():  # type: ignore[no-untyped-def]
    return load_model("dummy:tiny-llama")


def test_profile_attributes_time_and_conserves_energy(tiny) -> None:  # type: ignore[no-untyped-def]
    prompts = [f"shared system prompt, question {i}: " + "x" * (5 + i) for i in range(6)]
    meter = Meter([ReplayBackend({"cpu": 20.0})])
    prof = profile_engine(tiny, prompts, config=EngineConfig(max_batch=4), meter=meter, window_steps=2)
    names = {c.name for c in prof.classes}
    assert set(MODEL_CLASSES) <= names and "idle" in names
    assert prof.attributed_fraction >= 0.9
    assert sum(c.time_s for c in prof.classes) <= prof.wall_s * 1.0001
    time_s = sum(c.time_s for c in prof.classes)
    assert sum(c.energy_j for c in prof.classes) == pytest.approx(prof.energy_j * time_s / prof.wall_s)
    assert prof.energy_provenance == "replay" and prof.energy_j == pytest.approx(20.0 * prof.wall_s, rel=0.05)
    mlp = next(c for c in prof.classes if c.name == "mlp")
    assert mlp.flops > 0 and mlp.bytes > 0 and mlp.bound in ("compute-bound", "memory-bound")
    assert "mlp" in prof.operators and any(op.startswith("aten::") for op in prof.operators["mlp"])
    assert all(a.lever in LEVERS.values() for a in prof.advice)
    assert not hasattr(tiny.model, "__dict__") or "embed" not in tiny.model.__dict__  # instrumentation undone


def test_shared_prefix_fraction_counts_repeated_prompt_prefixes(tiny) -> None:  # type: ignore[no-untyped-def]
    first, second = "abcdefgh", "abcdefXY"  # byte tokenizer: one token per character
    assert shared_prefix_fraction([first, second], tiny) == pytest.approx(6 / 16)
    assert shared_prefix_fraction([first, first], tiny) == pytest.approx(7 / 16)  # last token always computed
    assert shared_prefix_fraction(["a", "b"], tiny) == 0.0


PROFILE_IN_A_FRESH_PROCESS = """
from joulepath.engine import EngineConfig
from joulepath.meter import Meter, ReplayBackend
from joulepath.model import load_model
from joulepath.profile import profile_engine
profile_engine(load_model("dummy:tiny-llama"), ["a b c", "d e f"], config=EngineConfig(max_batch=2),
               meter=Meter([ReplayBackend({"cpu": 1.0})]), window_steps=2)
print("profiled")
"""


def test_profiler_start_and_stop_lines_never_reach_the_terminal() -> None:
    """torch.profiler's backend prints `USDT: ... profiler_start` at its default log level; a fresh
    process (kineto reads its level once) with no KINETO_LOG_LEVEL of its own prints none of it."""
    env = {k: v for k, v in os.environ.items() if k != "KINETO_LOG_LEVEL"}
    out = subprocess.run(
        [sys.executable, "-c", PROFILE_IN_A_FRESH_PROCESS], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0 and "profiled" in out.stdout, out.stderr[-2000:]
    assert "USDT" not in out.stdout + out.stderr and "profiler_start" not in out.stdout + out.stderr


def test_advice_leaves_out_the_levers_the_profiled_configuration_already_runs() -> None:
    from joulepath.profile.advice import advise, levers_on
    from joulepath.results import ClassCost

    assert levers_on(EngineConfig(max_batch=1)) == frozenset()
    on = levers_on(EngineConfig(max_batch=16, prefix_cache=True, kv_int8=True), "int8_dynamic")
    assert on == {"batching", "prefix_caching", "kv_quantization", "quantization", "low_precision"}
    assert levers_on(EngineConfig(), "teal:0.5") == {"batching"}  # sparsity is not a precision lever
    # a lever with gate-chosen opt-outs or a group size is still its mode
    assert "low_precision" in levers_on(EngineConfig(), "int4_vnni:g64+skip=output")
    assert "low_precision" not in levers_on(EngineConfig(), "int4_weight_only+skip=output")
    loaded = load_model("dummy:tiny-llama")
    classes = [ClassCost(n, 0.3, 0.3, 0.1, 1e9, 1e6, "compute-bound", 0.5) for n in ("mlp", "attention.qkv_proj")]
    classes += [ClassCost("idle", 0.4, 0.4, 0.1, 0.0, 0.0, "host", None)]
    prompts = ["What is 2 + 2?", "What is 2 + 2? And 3?"] * 4
    every = advise(classes, 200, 10, prompts, loaded, 4)
    rest = advise(classes, 200, 10, prompts, loaded, 4, on=on)
    dropped = {a.lever for a in every} - {a.lever for a in rest}
    assert dropped == {LEVERS["low_precision"], LEVERS["batching"], LEVERS["prefix_caching"]}
    assert all(a.lever not in {LEVERS[k] for k in on} for a in rest)
