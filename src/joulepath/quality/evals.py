"""Evaluation on golden sets (exact match per skill and level with Wilson 95 % intervals, tokens,
time, J/token) and the gate that every optimization must pass against its baseline."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from joulepath.engine import Engine, EngineConfig, SamplingParams
from joulepath.meter import Meter
from joulepath.model import DenseCausalAttention, LoadedModel
from joulepath.model.mtp import MedusaHeads, chain_acceptance
from joulepath.quality.tasks import Example, chat_prompt, check
from joulepath.results import wilson_interval


@dataclass(frozen=True)
class Cell:
    skill: str
    level: str
    n: int
    correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.n)


@dataclass(frozen=True)
class EvalReport:
    """Exact-match results of one model on one set of examples."""

    model: str
    cells: tuple[Cell, ...]
    outputs: tuple[str, ...]  # in example order
    output_tokens: int
    seconds: float
    energy_j: float
    energy_provenance: str
    examples: tuple[Example, ...] = field(repr=False, default=())

    @property
    def accuracy(self) -> float:
        n = sum(c.n for c in self.cells)
        return sum(c.correct for c in self.cells) / n if n else 0.0

    @property
    def j_per_token(self) -> float:
        return self.energy_j / max(self.output_tokens, 1)

    def level_accuracy(self, level: str) -> float:
        """Exact-match accuracy over every cell of one difficulty level."""
        cells = [c for c in self.cells if c.level == level]
        n = sum(c.n for c in cells)
        return sum(c.correct for c in cells) / n if n else 0.0

    def cell(self, skill: str, level: str) -> Cell:
        return next(c for c in self.cells if c.skill == skill and c.level == level)


def evaluate(
    loaded: LoadedModel,
    examples: list[Example],
    config: EngineConfig | None = None,
    max_tokens: int = 48,
    meter: Meter | None = None,
) -> EvalReport:
    """Greedy answers from the engine (continuous batching), scored by exact match."""
    engine = Engine(loaded, config, meter)
    params = SamplingParams(max_tokens=max_tokens, stop=("<|end|>",))
    t0 = time.perf_counter()
    done = engine.generate([chat_prompt(e) for e in examples], params)
    seconds = time.perf_counter() - t0
    counts: dict[tuple[str, str], list[int]] = {}
    for ex, out in zip(examples, done, strict=True):
        c = counts.setdefault((ex.skill, ex.level), [0, 0])
        c[0] += 1
        c[1] += check(ex, out.text)
    cells = tuple(Cell(s, lv, n, k) for (s, lv), (n, k) in counts.items())
    provenance = done[0].record.energy_provenance if done else "none"
    return EvalReport(
        loaded.source,
        cells,
        tuple(o.text for o in done),
        sum(o.record.output_tokens for o in done),
        seconds,
        sum(o.record.energy_j for o in done),
        provenance,
        tuple(examples),
    )


@dataclass(frozen=True)
class GateResult:
    passed: bool
    report: str  # readable: which cells moved and by how much


class GateFailure(AssertionError):
    """A candidate that lost more quality than its gate allows."""


def gate(baseline: EvalReport, candidate: EvalReport, max_drop_points: float = 1.0, exact: bool = False) -> GateResult:
    """Compare a candidate (a quantized model, a cache, a router) with its baseline on the same examples.

    exact=True: every output must be identical (techniques that promise exactness). Otherwise overall
    accuracy may drop by at most `max_drop_points` percentage points."""
    if [e.question for e in baseline.examples] != [e.question for e in candidate.examples]:
        raise ValueError("gate: baseline and candidate were evaluated on different examples")
    lines = []
    for b in baseline.cells:
        c = candidate.cell(b.skill, b.level)
        if c.correct != b.correct:
            lines.append(f"  {b.skill}/{b.level}: {100 * b.accuracy:.1f} % -> {100 * c.accuracy:.1f} %")
    drop = 100 * (baseline.accuracy - candidate.accuracy)
    if exact:
        diffs = [i for i, (x, y) in enumerate(zip(baseline.outputs, candidate.outputs, strict=True)) if x != y]
        passed = not diffs
        head = f"exactness gate: {len(diffs)} of {len(baseline.outputs)} outputs differ"
        if diffs:
            i = diffs[0]
            head += f"; first at #{i}: {baseline.outputs[i]!r} vs {candidate.outputs[i]!r}"
    else:
        passed = drop <= max_drop_points
        head = (
            f"accuracy gate: {100 * baseline.accuracy:.1f} % -> {100 * candidate.accuracy:.1f} % "
            f"({-drop:+.1f} points; allowed -{max_drop_points:g})"
        )
    return GateResult(passed, "\n".join([("PASS " if passed else "FAIL ") + head, *lines]))


def assert_gate(baseline: EvalReport, candidate: EvalReport, max_drop_points: float = 1.0, exact: bool = False) -> None:
    result = gate(baseline, candidate, max_drop_points, exact)
    if not result.passed:
        raise GateFailure(result.report)


@torch.no_grad()
def mean_accepted_length(loaded: LoadedModel, heads: MedusaHeads, report: EvalReport) -> float:
    """Tokens per verification step if `heads` proposed and the model verified greedily as a chain,
    on the answers of `report` (teacher-forced: one forward over prompt + answer gives every hidden
    state the decoder would have seen, so the count is exact for greedy verification)."""
    tok, model = loaded.tokenizer, loaded.model
    device = heads.proj.device
    tokens = forwards = 0
    for ex, text in zip(report.examples, report.outputs, strict=True):
        p_ids, a_ids = tok.encode(chat_prompt(ex)), tok.encode(text + "<|end|>")
        ids = torch.tensor(p_ids + a_ids, device=device)
        x = model.trunk(ids, torch.arange(len(ids), device=device), DenseCausalAttention([len(ids)]))
        h = model.norm(x)[len(p_ids) - 1 : -1]  # (n, d): the states that produced each answer token
        guesses = heads.logits(model, h).argmax(-1).tolist()  # (K, n)
        n = len(a_ids)
        hits = [
            [j + m + 1 < n and guesses[m][j] == a_ids[j + m + 1] for m in range(heads.cfg.n_heads)] for j in range(n)
        ]
        t, f = chain_acceptance(hits)
        tokens, forwards = tokens + t, forwards + f
    return tokens / max(forwards, 1)


def speculative_acceptance(loaded: LoadedModel, proposer: str, examples: list[Example], k: int = 4,
                           max_batch: int = 8) -> dict[str, Any]:  # fmt: skip
    """Serve `examples` greedily with `proposer` drafting k tokens every decode step (no adaptive k) and
    report tokens per decode step (1 + accepted drafts per step: the mean accepted length), the acceptance
    rate and the answers (measured through the engine's own speculative path)."""
    config = EngineConfig(max_batch=max_batch, speculative=proposer, spec_adaptive=False, spec_max_k=k)
    done = Engine(loaded, config).generate(
        [chat_prompt(e) for e in examples], SamplingParams(max_tokens=48, stop=("<|end|>",))
    )
    steps = sum(o.record.decode_steps for o in done)
    proposed = sum(o.record.draft_proposed for o in done)
    accepted = sum(o.record.draft_accepted for o in done)
    return {
        "tokens_per_decode_step": 1 + accepted / steps if steps else None,
        "acceptance_rate": accepted / proposed if proposed else None,
        "decode_steps": steps,
        "proposed": proposed,
        "accepted": accepted,
        "answers": [o.text for o in done],
    }
