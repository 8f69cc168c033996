"""Guardrails: an input policy and an output policy per deployment, each decision naming the rule that
fired.

Input: maximum length -> PII (redact or block) -> prompt-injection rules -> forbidden-request rules ->
semantic classifier. Output: maximum length (truncate) -> PII redaction -> forbidden-content rules ->
system-prompt leakage. A blocked request gets a refusal and never reaches the engine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from importlib import resources
from typing import Literal

from joulepath.serving.rules import INJECTION, Finding, find_forbidden, find_pii, find_rules, redact
from joulepath.serving.semantic import (
    SemanticClassifier,
    features,
    fit_features,
    out_of_fold_scores,
    threshold_for,
    with_readings,
)

Action = Literal["allow", "redact", "block", "truncate"]
REFUSAL = "I can't help with that request."


@dataclass(frozen=True)
class GuardPolicy:
    """What a deployment enforces. Every check can be switched off."""

    max_input_chars: int = 8000
    max_output_chars: int = 4000
    pii: Literal["redact", "block", "off"] = "redact"
    injection: bool = True
    forbidden: bool = True
    semantic: bool = True
    # p(unsafe) at which the classifier blocks; None: the classifier's own threshold, chosen by
    # cross-validation on the training split for at most 1 % of safe prompts blocked (`default_classifier`)
    semantic_threshold: float | None = None
    output_filter: bool = True
    system_prompt: str = ""  # leaked verbatim (any 40-character run of it) in an output -> blocked

    def __post_init__(self) -> None:
        if self.max_input_chars <= 0 or self.max_output_chars <= 0:
            raise ValueError("max_input_chars and max_output_chars must be positive")
        if self.semantic_threshold is not None and not 0.0 < self.semantic_threshold < 1.0:
            raise ValueError(f"semantic_threshold must be in (0, 1), got {self.semantic_threshold}")
        if self.pii not in ("redact", "block", "off"):
            raise ValueError(f"pii must be 'redact', 'block' or 'off', got {self.pii!r}")


@dataclass(frozen=True)
class Decision:
    action: Action
    text: str  # what goes on: the (redacted/truncated) text, or the refusal when blocked
    rules: tuple[str, ...] = ()  # every rule that fired, in order
    score: float | None = None  # the semantic classifier's p(unsafe), when it ran
    findings: tuple[Finding, ...] = field(default=(), repr=False)

    @property
    def blocked(self) -> bool:
        return self.action == "block"

    def explain(self) -> str:
        why = ", ".join(self.rules) or "no rule fired"
        score = f" (semantic p(unsafe) = {self.score:.2f})" if self.score is not None else ""
        return f"{self.action}: {why}{score}"


def load_safety_set(split: str | None = None) -> list[dict[str, str]]:
    """The labelled safety set shipped with joulepath: {id, label, category, split, text} rows."""
    text = resources.files("joulepath.serving").joinpath("data/safety.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [r for r in rows if split is None or r["split"] == split]


def safety_texts(split: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(forbidden requests, harmless requests) of one split of the safety set."""
    rows = load_safety_set(split)
    return (
        tuple(r["text"] for r in rows if r["label"] == "unsafe"),
        tuple(r["text"] for r in rows if r["label"] == "safe"),
    )


MAX_SAFE_BLOCKED = 0.01  # the goal: at most 1 % of safe prompts blocked


def training_examples() -> tuple[list[str], list[bool], list[bool]]:
    """(texts, unsafe, from the safety set): the safety set's training split, then the golden dev task
    prompts as extra safe examples; texts with personal data replaced by placeholders, as `check_inputs`
    scores them."""
    from joulepath.quality import golden

    rows = load_safety_set("train")
    tasks = [e.question for e in golden.load("dev", per_cell=3)]
    texts = [redact(r["text"], find_pii(r["text"])) for r in rows] + tasks
    unsafe = [r["label"] == "unsafe" for r in rows] + [False] * len(tasks)
    return texts, unsafe, [True] * len(rows) + [False] * len(tasks)


def default_classifier(max_safe_blocked: float = MAX_SAFE_BLOCKED) -> SemanticClassifier:
    """Fitted on the training examples, with its threshold chosen by cross-validation on them alone (the
    held-out split is never seen): the lowest p(unsafe) at which at most `max_safe_blocked` of the safety
    set's safe training prompts are blocked out of fold (5 folds, 3 shufflings; about 10 s). Golden task
    prompts train but do not count, as they are far easier than the safety set's safe prompts."""
    texts, unsafe, counted = training_examples()
    everything, owner = with_readings(texts)  # scored as `SemanticClassifier.scores` scores a request
    x = features(everything)
    oof = out_of_fold_scores(x, owner, unsafe)
    safe = [i for i, (u, c) in enumerate(zip(unsafe, counted, strict=True)) if c and not u]
    fitted = fit_features(x.subset(range(len(texts))), unsafe)  # the texts as written, not their readings
    return replace(fitted, threshold=threshold_for(oof[:, safe], max_safe_blocked))


@lru_cache(maxsize=1)
def shared_default_classifier() -> SemanticClassifier:
    """The default classifier, fitted once per process (it is immutable, so guards can share it)."""
    return default_classifier()


class Guard:
    def __init__(self, policy: GuardPolicy | None = None, classifier: SemanticClassifier | None = None) -> None:
        self.policy = policy or GuardPolicy()
        self._classifier = classifier

    @cached_property
    def classifier(self) -> SemanticClassifier:
        return self._classifier or shared_default_classifier()

    @property
    def semantic_threshold(self) -> float:
        """The policy's threshold, or the classifier's cross-validated one (this loads the classifier)."""
        p = self.policy.semantic_threshold
        return p if p is not None else self.classifier.threshold

    def check_input(self, text: str) -> Decision:
        return self.check_inputs([text])[0]

    def check_inputs(self, texts: list[str]) -> list[Decision]:
        """Decisions for many inputs, with one batched embedding pass for the semantic classifier."""
        scores: list[float | None] = [None] * len(texts)
        if self.policy.semantic:
            within = [i for i, t in enumerate(texts) if len(t) <= self.policy.max_input_chars]
            scored = [redact(texts[i], find_pii(texts[i])) for i in within]  # placeholders, not personal data
            for i, score in zip(within, self.classifier.scores(scored), strict=True):
                scores[i] = score
        return [self._decide_input(t, s) for t, s in zip(texts, scores, strict=True)]

    def _decide_input(self, text: str, score: float | None) -> Decision:
        p = self.policy
        if len(text) > p.max_input_chars:
            return Decision(
                "block",
                f"Input of {len(text)} characters is over this deployment's limit of {p.max_input_chars}; shorten it.",
                ("length.input",),
            )
        pii = find_pii(text) if p.pii != "off" else []
        if pii and p.pii == "block":
            return Decision("block", REFUSAL, tuple(sorted({f.rule for f in pii})), findings=tuple(pii))
        unsafe = find_rules(text, INJECTION, skip_quoted=True) if p.injection else []
        unsafe += find_forbidden(text) if p.forbidden else []
        semantic = ["semantic.unsafe"] if score is not None and score >= self.semantic_threshold else []
        if unsafe or semantic:
            return Decision("block", REFUSAL, tuple([f.rule for f in unsafe] + semantic), score, tuple(unsafe))
        if pii:
            return Decision("redact", redact(text, pii), tuple(sorted({f.rule for f in pii})), score, tuple(pii))
        return Decision("allow", text, (), score)

    def check_output(self, text: str) -> Decision:
        p = self.policy
        if not p.output_filter:
            return Decision("allow", text)
        rules: list[str] = []
        if len(text) > p.max_output_chars:
            text, rules = text[: p.max_output_chars], ["length.output"]
        harmful = find_forbidden(text)
        if harmful or _leaks(text, p.system_prompt):
            names = [f.rule for f in harmful] + ([] if harmful else ["output.system_prompt_leak"])
            return Decision("block", REFUSAL, tuple(rules + names), findings=tuple(harmful))
        pii = find_pii(text) if p.pii != "off" else []
        if pii:
            return Decision(
                "redact", redact(text, pii), tuple(rules + sorted({f.rule for f in pii})), findings=tuple(pii)
            )
        return Decision("truncate" if rules else "allow", text, tuple(rules))


def _leaks(output: str, system_prompt: str, window: int = 40) -> bool:
    """Whether any `window`-character run of the system prompt appears in the output."""
    if len(system_prompt) < window:
        return bool(system_prompt) and system_prompt in output
    return any(system_prompt[i : i + window] in output for i in range(0, len(system_prompt) - window + 1, 8))
