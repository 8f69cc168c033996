import random
from pathlib import Path

import pytest
import torch

from joulepath.meter import Meter, ReplayBackend
from joulepath.model import load_model
from joulepath.quality import golden
from joulepath.quality import train as train_module
from joulepath.quality.evals import GateFailure, assert_gate, evaluate, gate, wilson_interval
from joulepath.quality.tasks import LEVELS, SKILLS, check, generate
from joulepath.quality.train import TrainConfig, lr_at, train


@pytest.mark.parametrize("skill", SKILLS)
def test_generators_give_checkable_answers(skill: str) -> None:
    rng = random.Random(0)
    for level in LEVELS:
        ex = generate(skill, level, rng)
        assert ex.answer and check(ex, f" {ex.answer}<|end|>") and not check(ex, ex.answer + "0")


def test_generated_answers_are_right() -> None:
    rng = random.Random(1)
    for _ in range(50):
        ex = generate("add", "hard", rng)
        a, b = ex.question.removeprefix("What is ").removesuffix("?").split(" + ")
        assert int(ex.answer) == int(a) + int(b)
        ex = generate("sort", "medium", rng)
        xs = [int(x) for x in ex.question.split(": ")[1].split(", ")]
        assert ex.answer == ", ".join(map(str, sorted(xs)))


def test_golden_sets_are_exactly_their_seeds() -> None:
    for split in golden.SEEDS:
        examples, documents = golden.build(split)
        assert golden._path(split, "examples").read_text() == golden._dump(examples)
        assert golden._path(split, "documents").read_text() == golden._dump(documents)


def test_golden_load_slices_and_attaches_documents() -> None:
    rows = golden.load("dev", skills=("lookup",), levels=("hard",), per_cell=5)
    assert len(rows) == 5 and all(r.document and r.answer in r.document for r in rows)
    assert len(golden.load("test")) == len(SKILLS) * len(LEVELS) * golden.PER_CELL
    with pytest.raises(ValueError, match="unknown golden split"):
        golden.load("train")


def test_wilson_interval() -> None:
    lo, hi = wilson_interval(38, 40)
    assert 0.83 < lo < 0.95 < hi <= 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_schedule_warms_up_then_decays_to_its_floor() -> None:
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, 100, cfg) == pytest.approx(1e-4) and lr_at(9, 100, cfg) == pytest.approx(1e-3)
    assert lr_at(100, 100, cfg) == pytest.approx(1e-4) and lr_at(55, 100, cfg) == pytest.approx(5.5e-4)


def test_rows_made_ahead_default_to_one_pass_over_the_run() -> None:
    assert TrainConfig(steps=100, tokens_per_step=4096, seq_len=1024).rows_to_make == 400  # 4 rows a step
    assert TrainConfig(steps=100, data_rows=64).rows_to_make == 64
    with pytest.raises(ValueError, match="data_rows"):  # a budgeted run's step count is not known ahead
        TrainConfig(time_budget_s=60.0)
    with pytest.raises(ValueError, match="data_rows"):
        TrainConfig(data_rows=-1)
    with pytest.raises(ValueError, match="give data_rows"):  # a pass too large to hold is refused, not built
        TrainConfig(steps=100_000, tokens_per_step=98_304)


def test_wall_budget_sets_the_step_count_from_the_timed_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([100.0, 101.0, 170.0])  # started at 99 s; step 10 at 100 s, step 30 at 101 s
    monkeypatch.setattr(train_module.time, "perf_counter", lambda: next(clock))
    budget = train_module.WallBudget(
        TrainConfig(time_budget_s=60.0, timing_steps=30, steps=10**6, data_rows=64), 99.0, 0
    )
    cpu = torch.device("cpu")
    assert budget.update(10, 500, cpu) == 500
    assert budget.update(30, 500, cpu) == 30 + 1160  # 0.05 s per timed step, 58 s of the budget left
    assert budget.update(31, 1190, cpu) == 31  # 71 s in: past 1.1 x the budget, stop here


@pytest.mark.slow
def test_training_learns_resumes_and_evaluates(tmp_path: Path) -> None:
    cfg = TrainConfig(
        steps=60,
        tokens_per_step=256,
        seq_len=128,
        data_rows=64,
        skills=("compare",),
        checkpoint_every=30,
        lr=3e-3,
        warmup_steps=10,
        mtp_heads=2,
        log_every=1,
    )
    losses: list[float] = []
    first = train(TrainConfig(**{**cfg.__dict__, "steps": 30}), tmp_path, lambda s: losses.append(s.loss))
    assert (tmp_path / "trainer_state.pt").is_file()
    train(cfg, tmp_path, lambda s: losses.append(s.loss))  # resumes at step 30
    assert len(losses) == 60 and sum(losses[-10:]) < sum(losses[:10])
    loaded = load_model(str(tmp_path))  # a Hugging Face folder with tokenizer and chat template
    assert loaded.chat_template and first.config.vocab_size == loaded.config.vocab_size
    assert (tmp_path / "mtp_heads.safetensors").is_file()  # heads train alongside and resume with the model
    warm = tmp_path / "warm"  # a fresh run warm-started from the trained folder begins at its weights
    start = train(TrainConfig(**{**cfg.__dict__, "steps": 1, "lr": 1e-12, "init_from": str(tmp_path)}), warm)
    assert all(
        torch.allclose(a, b, atol=1e-6)
        for a, b in zip(start.model.parameters(), loaded.model.parameters(), strict=True)
    )
    with pytest.raises(ValueError, match="not a loadable model folder"):
        train(TrainConfig(**{**cfg.__dict__, "init_from": str(tmp_path / "nothing")}), tmp_path / "cold")
    examples = golden.load("dev", skills=("compare",), levels=("easy",), per_cell=8)
    meter = Meter([ReplayBackend({"cpu": 10.0})])
    base = evaluate(loaded, examples, meter=meter)
    assert base.cell("compare", "easy").n == 8 and base.energy_provenance == "replay"
    assert gate(base, evaluate(loaded, examples, meter=meter), exact=True).passed
    worse = evaluate(load_model("dummy:tiny-llama"), examples, max_tokens=4)
    result = gate(base, worse, max_drop_points=0.0)
    assert result.passed == (worse.accuracy >= base.accuracy)
    if not result.passed:
        with pytest.raises(GateFailure, match="FAIL accuracy gate"):
            assert_gate(base, worse, max_drop_points=0.0)


def test_chat_template_renders_exactly_the_training_prompt() -> None:
    from joulepath.model.checkpoint import LoadedModel
    from joulepath.quality.tasks import CHAT_TEMPLATE, chat_prompt

    ex = generate("add", "easy", random.Random(3))
    loaded = LoadedModel(None, None, None, "zoo", {}, CHAT_TEMPLATE)  # type: ignore[arg-type]
    assert loaded.apply_chat_template([{"role": "user", "content": ex.user_text}]) == chat_prompt(ex)
    with_system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert loaded.apply_chat_template(with_system).startswith("<|system|>Be brief.\n<|user|>hi")
