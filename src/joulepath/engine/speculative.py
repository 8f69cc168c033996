"""Speculative and multi-token decoding: propose k tokens cheaply, verify them in one (k+1)-token chunk of
the target model, keep the longest run it agrees with plus one token of its own (Leviathan et al. 2023;
Chen et al. 2023). A decode step reads every weight once whether it computes 1 token or k+1, so on a
memory-bound step accepted drafts are nearly free tokens.

Proposers (`Proposer`):
- `PromptLookup`: the last n tokens (n = 3, 2, 1) looked up earlier in the prompt and output; the tokens
  that followed are the proposal (Saxena 2023, "prompt lookup decoding"). No model; made for answers
  that copy from the prompt (lookup, extraction, code edits).
- `DraftModel`: a smaller model with the same vocabulary (jp-small for jp-large) run greedily k steps
  ahead, with its own paged KV cache (the draft's layers and heads differ from the target's, so its
  blocks cannot share the target's pool), truncated to what the target accepted.
- `MTPHeads`: multi-token heads shipped with the model (`model/mtp.py`, Medusa-1): from the hidden state
  that produced the last token, head i guesses the token i+1 after it. The engine keeps that hidden state.
- `EagleProposer`: the feature-level draft block shipped with the model (`model/eagle.py`, EAGLE-1): it
  reads the target's final hidden state at every position (the engine hands them over after each step),
  keeps its own one-layer paged KV cache, and drafts k tokens autoregressively on its own predicted
  features; positions whose drafted inputs were rejected are truncated and recomputed from the target's
  true features. With the prefix cache on, a hit skips the target's forward over the cached blocks, so the
  proposer keeps the features of full prompt blocks by the same chained block hashes (LRU, bounded) and a
  hit reads them back; a sequence whose skipped positions it does not hold gets no drafts (counted in
  `EagleProposer.no_features`).

Verification (`verify`): greedy requests keep drafts while they equal the target's argmax, so the output
is token-identical to plain decoding. Sampled requests use speculative rejection sampling: a proposal is
deterministic (its q is one-hot), so draft d is accepted with probability p(d), and on rejection the
token is drawn from p with d removed and renormalised (the residual max(p - q, 0)); the output
distribution is exactly the target's.

Never slower (`Speculator.plan`): k is chosen per sequence from its measured acceptance rate and the
measured cost of the engine's steps (an online fit of seconds = a + b x tokens, `StepCost`), maximising
tokens emitted per second of step time; k = 0 is a legal choice, so speculation turns itself off where the
acceptance it measures does not pay for the verify tokens (and, switched off, drafts one token once every
`explore_every` steps to measure it again).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

from joulepath.engine.kv_cache import KVCacheFull, PagedKVCache
from joulepath.engine.sampling import SamplingParams, filtered_probs

if TYPE_CHECKING:
    from joulepath.engine.scheduler import ScheduledChunk, Sequence
    from joulepath.model import LoadedModel
    from joulepath.model.eagle import EagleDraft
    from joulepath.model.mtp import MedusaHeads

PROPOSERS = ("prompt_lookup", "draft", "mtp", "eagle")


@dataclass
class SpecState:
    """Per-sequence speculative state."""

    proposed: int = 0  # draft tokens verified so far
    accepted: int = 0  # of those, kept
    verify_steps: int = 0  # decode steps that verified at least one draft
    decode_steps: int = 0  # every decode step (plain or verifying)
    hidden: Tensor | None = None  # final normed hidden state that produced the last token (MTP heads)

    def acceptance(self, prior: float) -> float:
        """Per-token acceptance estimate: the prior blended with what this sequence showed (4 pseudo-tokens)."""
        return (self.accepted + 4 * prior) / (self.proposed + 4)


class Proposer(Protocol):
    """Proposes up to `ks[i]` draft tokens for each decoding sequence (fewer or none is allowed)."""

    name: str

    def propose(self, seqs: list[Sequence], ks: list[int]) -> list[tuple[int, ...]]: ...

    def forget(self, seq: Sequence) -> None:
        """The sequence finished: drop anything kept for it."""
        ...


class PromptLookup:
    """n-gram lookup of the sequence's own tokens: the continuation of the latest earlier match."""

    name = "prompt_lookup"

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1) -> None:
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}")
        self.max_ngram, self.min_ngram = max_ngram, min_ngram

    def propose(self, seqs: list[Sequence], ks: list[int]) -> list[tuple[int, ...]]:
        return [
            lookup(s.all_ids, k, self.max_ngram, self.min_ngram) if k else () for s, k in zip(seqs, ks, strict=True)
        ]

    def forget(self, seq: Sequence) -> None:
        return None


def lookup(ids: list[int], k: int, max_ngram: int = 3, min_ngram: int = 1) -> tuple[int, ...]:
    """Up to `k` tokens that followed the latest earlier occurrence of the longest suffix n-gram of `ids`.

    >>> lookup([5, 6, 7, 9, 5, 6], 2)
    (7, 9)
    """
    n_ids = len(ids)
    for n in range(min(max_ngram, n_ids - 1), min_ngram - 1, -1):
        tail = ids[n_ids - n :]
        for start in range(n_ids - n - 1, -1, -1):  # latest first: recent context predicts best
            if ids[start : start + n] == tail:
                follow = ids[start + n : start + n + k]
                if follow:
                    return tuple(follow)
    return ()


class MTPHeads:
    """Medusa-1 heads: guesses from the hidden state that produced the last token (kept by the engine)."""

    name = "mtp"

    def __init__(self, loaded: LoadedModel, heads: MedusaHeads) -> None:
        self.model, self.heads = loaded.model, heads

    @torch.inference_mode()
    def propose(self, seqs: list[Sequence], ks: list[int]) -> list[tuple[int, ...]]:
        rows = [i for i, (s, k) in enumerate(zip(seqs, ks, strict=True)) if k and s.spec.hidden is not None]
        out: list[tuple[int, ...]] = [()] * len(seqs)
        if not rows:
            return out
        h = torch.stack([seqs[i].spec.hidden for i in rows])  # type: ignore[misc]  # (R, d)
        k_max = min(max(ks[i] for i in rows), self.heads.cfg.n_heads)
        guesses = self.model.output(self.heads.hidden(h)[:k_max]).argmax(-1)  # (K, R)
        for j, i in enumerate(rows):
            out[i] = tuple(int(t) for t in guesses[: ks[i], j])
        return out

    def forget(self, seq: Sequence) -> None:
        seq.spec.hidden = None


class DraftModel:
    """A smaller model proposing greedily, with its own paged KV cache (truncated after each verify)."""

    name = "draft"

    def __init__(self, target: LoadedModel, draft: LoadedModel, kv_memory_bytes: int, block_size: int = 16) -> None:
        if draft.config.vocab_size != target.config.vocab_size:
            raise ValueError(
                f"draft model {draft.source} has vocabulary {draft.config.vocab_size}, the target "
                f"{target.source} {target.config.vocab_size}: a draft must share the target's tokenizer"
            )
        p = next(draft.model.parameters())
        self.loaded = draft
        self.cache = PagedKVCache.from_budget(draft.config, kv_memory_bytes, block_size, p.device, p.dtype)
        self.computed: dict[int, int] = {}  # seq_id -> tokens with draft KV

    @torch.inference_mode()
    def propose(self, seqs: list[Sequence], ks: list[int]) -> list[tuple[int, ...]]:
        from joulepath.engine.runner import run_step
        from joulepath.engine.scheduler import ScheduledChunk

        live = [(s, k) for s, k in zip(seqs, ks, strict=True) if k]
        drafts: dict[int, list[int]] = {s.seq_id: [] for s, _ in live}
        for s, _ in live:  # the draft's KV must hold the accepted tokens: catch up from where it stopped
            self.sync(s)
        for step in range(max((k for _, k in live), default=0)):
            chunks, active = [], []
            for s, k in live:
                if step >= k:
                    continue
                ids = s.all_ids + drafts[s.seq_id]
                start = self.computed.get(s.seq_id, 0)
                try:
                    self.cache.reserve(s.seq_id, len(ids))
                except KVCacheFull:
                    continue  # no room for this one's draft KV: it proposes what it has
                chunks.append(ScheduledChunk(s, start, tuple(ids[start:]), True))
                active.append(s)
            if not chunks:
                break
            logits = run_step(self.loaded.model, self.cache, chunks)
            for s, row in zip(active, logits.argmax(-1).tolist(), strict=True):
                self.computed[s.seq_id] = len(s.all_ids) + len(drafts[s.seq_id])
                drafts[s.seq_id].append(int(row))
        return [tuple(drafts.get(s.seq_id, ())) for s in seqs]

    def sync(self, seq: Sequence) -> None:
        """Forget draft KV past the tokens the sequence kept (rejected drafts, a preemption)."""
        known = self.computed.get(seq.seq_id, 0)
        ids = seq.all_ids
        keep = min(known, len(ids) - 1)  # the last token is always fed again (its KV is the draft's input)
        if keep < known:
            self.cache.truncate(seq.seq_id, keep)
            self.computed[seq.seq_id] = keep

    def forget(self, seq: Sequence) -> None:
        self.cache.release(seq.seq_id)
        self.computed.pop(seq.seq_id, None)


class FeatureRows:
    """A sequence's target features, positions 0..n-1, in a buffer that doubles when full (appending a step's
    rows copies only those rows; truncating sets the length)."""

    def __init__(self, d: int, device: torch.device, dtype: torch.dtype) -> None:
        self.data = torch.empty(64, d, device=device, dtype=dtype)
        self.n = 0

    def put(self, start: int, rows: Tensor) -> None:
        """Positions [start, start + len(rows)) = rows; positions past them are dropped (start <= n)."""
        end = start + len(rows)
        if end > len(self.data):
            grown = torch.empty(max(end, 2 * len(self.data)), self.data.shape[1], device=self.data.device,
                                dtype=self.data.dtype)  # fmt: skip
            grown[: self.n] = self.data[: self.n]
            self.data = grown
        self.data[start:end] = rows
        self.n = end

    def view(self, lo: int = 0, hi: int | None = None) -> Tensor:
        return self.data[lo : self.n if hi is None else hi]


class EagleProposer:
    """EAGLE-1 drafting from the target's features with the shipped one-block draft (its own paged KV)."""

    name = "eagle"

    def __init__(
        self, target: LoadedModel, draft: EagleDraft, kv_memory_bytes: int, block_size: int = 16,
        store_bytes: int | None = None,
    ) -> None:  # fmt: skip
        """`store_bytes`: the prefix feature store's budget (default: the draft's KV budget)."""
        p = next(target.model.parameters())
        self.target, self.draft = target.model, draft
        self.cache = PagedKVCache.from_budget(draft.block_cfg, kv_memory_bytes, block_size, p.device, p.dtype)
        self.block_size = block_size  # the engine's KV block: the prefix cache's hashes are per such block
        self.features: dict[int, FeatureRows] = {}  # seq_id -> the target's features of positions 0..n-1
        self.computed: dict[int, int] = {}  # seq_id -> draft KV positions holding true (not drafted) inputs
        self.blind: set[int] = set()  # sequences with positions never computed here (prefix-cache hits)
        self.no_features = 0  # proposals declined for want of features
        self.stored: OrderedDict[int, Tensor] = OrderedDict()  # block hash -> (block_size, d) features, LRU
        block_bytes = block_size * target.config.d_model * p.element_size()
        self.max_stored = max(1, (kv_memory_bytes if store_bytes is None else store_bytes) // block_bytes)

    def observe_step(self, chunks: list[ScheduledChunk], every: Tensor, accepted: dict[int, int]) -> None:
        """The target's features of a step (`every`: one row per computed token, drafts included): keep the
        rows of known tokens and of accepted drafts (a rejected draft's row is not the sequence's). Called
        after the scheduler advanced, so the prefix hashes of the blocks this step filled exist."""
        row = 0
        for c in chunks:
            keep = len(c.token_ids) + (accepted.get(c.seq.seq_id, 0) if c.draft_tokens else 0)
            self.observe(c.seq.seq_id, c.start, every[row : row + keep], c.seq.prefix.hashes)
            row += len(c.tokens)

    def observe(self, seq_id: int, start: int, rows: Tensor, hashes: Seq[int] = ()) -> None:
        """The target's features of positions [start, start + len(rows)) of a sequence; `hashes`: its full
        blocks' prefix-cache hashes (empty without the prefix cache)."""
        buf = self.features.get(seq_id)
        if buf is None:
            buf = self.features[seq_id] = FeatureRows(rows.shape[-1], rows.device, rows.dtype)
        if start == 0:
            self.blind.discard(seq_id)  # a full recompute (a preemption) brings every position back
        if seq_id in self.blind:
            return
        if start > buf.n and not self._recall(buf, start, hashes):
            self.blind.add(seq_id)  # positions [n, start) were never computed here and are not stored
            return
        buf.put(start, rows)
        self._remember(buf, start, hashes)
        if self.computed.get(seq_id, 0) > start:  # recomputed positions (a preemption): the draft's too
            self.computed[seq_id] = start

    def _recall(self, buf: FeatureRows, start: int, hashes: Seq[int]) -> bool:
        """Fill positions [buf.n, start) from stored blocks (a prefix-cache hit); False if one is missing."""
        bs, known = self.block_size, buf.n
        if known % bs or start % bs or len(hashes) < start // bs:
            return False
        wanted = hashes[known // bs : start // bs]
        if any(h not in self.stored for h in wanted):
            return False
        for i, h in enumerate(wanted):
            self.stored.move_to_end(h)
            buf.put(known + i * bs, self.stored[h])
        return True

    def _remember(self, buf: FeatureRows, start: int, hashes: Seq[int]) -> None:
        """Store (copies of) the features of the full hashed blocks this observation touched, LRU-bounded."""
        bs = self.block_size
        for i in range(start // bs, min(buf.n // bs, len(hashes))):
            h = hashes[i]
            if h in self.stored:
                self.stored.move_to_end(h)
                continue
            self.stored[h] = buf.view(i * bs, (i + 1) * bs).clone()
            if len(self.stored) > self.max_stored:
                self.stored.popitem(last=False)

    @torch.inference_mode()
    def propose(self, seqs: list[Sequence], ks: list[int]) -> list[tuple[int, ...]]:
        from joulepath.engine.runner import PagedAttention
        from joulepath.engine.scheduler import ScheduledChunk

        out: list[tuple[int, ...]] = [()] * len(seqs)
        live: list[tuple[int, Sequence, int]] = []
        for i, (s, k) in enumerate(zip(seqs, ks, strict=True)):
            if not k:
                continue
            feats = self.features.get(s.seq_id)
            if s.seq_id in self.blind or feats is None or feats.n != len(s.all_ids) - 1:
                self.no_features += 1
                continue
            start = min(self.computed.get(s.seq_id, 0), feats.n - 1)
            try:
                self.cache.truncate(s.seq_id, start)  # drafted inputs of the last proposal go
                self.cache.reserve(s.seq_id, len(s.all_ids) + k)
            except KVCacheFull:
                continue
            self.computed[s.seq_id] = start
            live.append((i, s, k))
        if not live:
            return out
        embed = self.target.embed
        drafts: dict[int, list[int]] = {i: [] for i, _, _ in live}
        carried: dict[int, Tensor] = {}  # row -> predicted feature of the last drafted position
        for step in range(max(k for _, _, k in live)):
            active = [(i, s) for i, s, k in live if step < k]
            chunks, f_in, tok_in, pos = [], [], [], []
            for i, s in active:
                n_known = len(s.all_ids) - 1  # the last token has no feature yet: it is the first input's x_{i+1}
                if step == 0:
                    lo = self.computed[s.seq_id]
                    f_in.append(self.features[s.seq_id].view(lo, n_known))
                    tok_in.append(torch.tensor(s.all_ids[lo + 1 : n_known + 1]))
                    pos.append(torch.arange(lo, n_known))
                else:
                    lo = n_known + step - 1
                    f_in.append(carried[i][None])
                    tok_in.append(torch.tensor([drafts[i][-1]]))
                    pos.append(torch.tensor([lo]))
                chunks.append(ScheduledChunk(s, lo, tuple(range(len(pos[-1]))), True))
            device = self.cache.k.device
            inputs = torch.cat(f_in).to(device)
            pred = self.draft(inputs, embed(torch.cat(tok_in).to(device)), torch.cat(pos).to(device),
                              PagedAttention(self.cache, chunks, None))  # fmt: skip
            ends = torch.tensor([len(p) for p in pos]).cumsum(0) - 1
            last = pred[ends.to(device)]
            guesses = self.target.output(last).argmax(-1).tolist()
            for j, (i, s) in enumerate(active):
                if step == 0:
                    self.computed[s.seq_id] = len(s.all_ids) - 1
                carried[i] = last[j]
                drafts[i].append(int(guesses[j]))
        for i, _, _ in live:
            out[i] = tuple(drafts[i])
        return out

    def forget(self, seq: Sequence) -> None:
        self.cache.release(seq.seq_id)
        for d in (self.features, self.computed):
            d.pop(seq.seq_id, None)
        self.blind.discard(seq.seq_id)


@dataclass
class StepCost:
    """Online least-squares fit of step seconds = a + b x tokens computed in the step (measured), over
    decode and verify steps only: a prefill chunk's tokens cost far less each (large GEMMs run near peak),
    and would make the marginal cost of a draft look cheaper than it is."""

    n: int = 0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0
    decay: float = 0.98  # older steps weigh less: the machine's load changes
    slope: float | None = None  # the last b fitted while steps of different sizes were in the window

    def observe(self, tokens: int, seconds: float) -> None:
        d = self.decay
        self.n += 1
        self.sx, self.sy = d * self.sx + tokens, d * self.sy + seconds
        self.sxx, self.sxy = d * self.sxx + tokens * tokens, d * self.sxy + tokens * seconds

    def coefficients(self) -> tuple[float, float] | None:
        """(a, b) in seconds and seconds per token, or None until steps of different sizes were seen. Once
        fitted, a window of same-sized steps only (speculation switched off, so every step is plain) keeps
        the last slope and refits the intercept: forgetting the slope would send the planner back to
        probing with drafts, and a model drafter's probe costs a catch-up over the whole prompt."""
        weight = (1 - self.decay**self.n) / (1 - self.decay)
        var = self.sxx * weight - self.sx * self.sx
        if self.n < 4:
            return None
        if var <= 1e-9 * max(self.sxx * weight, 1.0):
            if self.slope is None:
                return None
            return max((self.sy - self.slope * self.sx) / weight, 1e-9), self.slope
        b = max((self.sxy * weight - self.sx * self.sy) / var, 0.0)
        self.slope = b
        a = max((self.sy - b * self.sx) / weight, 1e-9)
        return a, b


def one_draft(seqs: list[Sequence], caps: list[int]) -> list[int]:
    """One draft token for one sequence, none for the rest: what a measurement needs (a step one token larger
    than plain), at the least cost. The sequence with the shortest context goes: a model drafter first runs
    over every token it has not seen (its catch-up), so a probe drafting for all 8 of a batch at once cost a
    draft-model prefill of all 8 contexts."""
    ks = [0] * len(seqs)
    able = [i for i, c in enumerate(caps) if c]
    if able:
        ks[min(able, key=lambda i: len(seqs[i].all_ids))] = 1
    return ks


def expected_tokens(alpha: float, k: int) -> float:
    """Tokens a verify of k drafts emits when each is accepted with probability alpha: 1 + a + ... + a^k."""
    return float(sum(alpha**i for i in range(k + 1)))


@dataclass
class Speculator:
    """A proposer, the per-step choice of k, and the statistics the choice is made from."""

    proposer: Proposer
    max_k: int = 4
    adaptive: bool = True  # False: always propose max_k (for tests and benchmarks of the raw lever)
    prior: float = 0.5  # acceptance assumed for a sequence before it shows any
    cost: StepCost = field(default_factory=StepCost)
    propose_s_per_position: float | None = None  # measured
    probes: int = 0  # measurable plans made before the step cost could be fitted
    proposed: int = 0
    accepted: int = 0
    explore_every: int = 2048  # after this many steps with no draft at all, one step drafts one token
    idle: int = 0  # steps planned in a row with no draft

    def __post_init__(self) -> None:
        if self.max_k < 1:
            raise ValueError(f"speculative max_k must be >= 1, got {self.max_k}")

    def plan(self, seqs: list[Sequence], room: list[int], measurable: bool = True) -> list[int]:
        """k for each decoding sequence (at most `room[i]`), maximising expected tokens per second of a decode
        step of these sequences. A step of n tokens costs a + b x n (fitted on the engine's decode and verify
        steps) plus the proposer's seconds per draft position x the largest k (measured: a draft model runs
        one forward per position for the whole batch). So a draft pays when its acceptance, valued at what a
        plain decode step costs per sequence ((a + b x n) / n), exceeds its marginal cost b (plus c for each
        position it adds to the largest k).

        Prefill chunks sharing the step are left out on purpose: their cost is spent whether or not anyone
        drafts, and an accepted draft saves only a decode row of a later step, never prefill. Counting them
        made every draft look cheap beside a long prefill (measured, golden lookup at batch 8: 855 of the
        MTP heads' 864 drafts went into mixed steps at 42 % acceptance).

        Before the cost is fitted, plans alternate plain and one-draft probe steps, but only on `measurable`
        steps (decode only: the engine fits its cost on those alone). A probe in a step that prefill shares
        buys no measurement and still costs a model drafter its catch-up: at arithmetic batch 8 with 192
        requests queued, 35 such probes went by before the first fit."""
        caps = [max(0, min(self.max_k, r)) for r in room]
        if not self.adaptive:
            return caps
        coef = self.cost.coefficients()
        if coef is None:  # no cost fit yet: alternate plain steps and 1-draft steps, so both sizes get measured
            if not measurable:
                return [0] * len(seqs)
            self.probes += 1
            return one_draft(seqs, caps) if self.probes % 2 else [0] * len(seqs)
        a, b = coef
        c = self.propose_s_per_position or 0.0
        prior = self.global_acceptance()
        alphas = [s.spec.acceptance(prior) for s in seqs]
        ks = [0] * len(seqs)
        tokens, step_tokens, k_max = float(len(seqs)), float(len(seqs)), 0

        def seconds(extra_tokens: float, k_top: int) -> float:
            return a + b * (step_tokens + extra_tokens) + c * k_top

        while True:  # add one draft at a time where it raises tokens per second most; stop when none does
            rate = tokens / seconds(0, k_max)
            best, best_rate, best_gain = -1, rate * (1 + 1e-6), 0.0
            for i, (alpha, k) in enumerate(zip(alphas, ks, strict=True)):
                if k >= caps[i]:
                    continue
                gain = expected_tokens(alpha, k + 1) - expected_tokens(alpha, k)
                new_rate = (tokens + gain) / seconds(1, max(k_max, k + 1))
                if new_rate > best_rate:
                    best, best_rate, best_gain = i, new_rate, gain
            if best < 0:
                return self._explore(seqs, ks, caps)
            tokens += best_gain
            ks[best] += 1
            step_tokens += 1
            k_max = max(k_max, ks[best])

    def _explore(self, seqs: list[Sequence], ks: list[int], caps: list[int]) -> list[int]:
        """`ks`, except that after `explore_every` steps in a row with no draft one sequence drafts one token:
        the acceptance the plan trusts is otherwise never measured again, and traffic that would pay (a
        server's later prompts) could not turn speculation back on."""
        if any(ks):
            self.idle = 0
            return ks
        self.idle += 1
        if self.idle < self.explore_every or not any(caps):
            return ks
        self.idle = 0
        return one_draft(seqs, caps)

    def observe_propose(self, seconds: float, k_max: int) -> None:
        """The proposer took `seconds` for drafts of at most `k_max` positions (a running mean per position)."""
        if k_max < 1:
            return
        per = seconds / k_max
        old = self.propose_s_per_position
        self.propose_s_per_position = per if old is None else old + 0.2 * (per - old)

    def global_acceptance(self) -> float:
        return (self.accepted + 8 * self.prior) / (self.proposed + 8)

    def record(self, seq: Sequence, proposed: int, accepted: int) -> None:
        seq.spec.decode_steps += 1
        if proposed:
            seq.spec.proposed += proposed
            seq.spec.accepted += accepted
            seq.spec.verify_steps += 1
            self.proposed += proposed
            self.accepted += accepted


def verify(
    logits: Tensor, drafts: Seq[int], params: SamplingParams, generator: torch.Generator | None
) -> tuple[list[int], int]:
    """Tokens a verify step emits, and how many drafts it accepted. `logits` (k+1, vocab): row i is the
    target's distribution after the chunk's first i+1 tokens (the last sampled token, then drafts)."""
    out: list[int] = []
    if params.greedy:
        target = logits.argmax(-1).tolist()
        for i, d in enumerate(drafts):
            if target[i] != d:
                return [*out, target[i]], i
            out.append(d)
        return [*out, target[len(drafts)]], len(drafts)
    for i, d in enumerate(drafts):
        p = filtered_probs(logits[i], params).cpu()
        if float(torch.rand((), generator=generator)) < float(p[d]):
            out.append(d)
            continue
        residual = p.clone()
        residual[d] = 0.0
        if float(residual.sum()) <= 0:  # p was all on d (then rejection had probability 0): keep d
            return [*out, d], i
        return [*out, int(torch.multinomial(residual / residual.sum(), 1, generator=generator))], i
    p = filtered_probs(logits[len(drafts)], params).cpu()
    return [*out, int(torch.multinomial(p, 1, generator=generator))], len(drafts)


def make_proposer(
    kind: str, target: LoadedModel, draft: LoadedModel | None, kv_memory_bytes: int, block_size: int = 16
) -> Proposer:
    """The proposer `kind` names for `target` (errors say what is missing and how to fix it)."""
    if kind == "prompt_lookup":
        return PromptLookup()
    if kind == "draft":
        if draft is None:
            raise ValueError("speculative = 'draft' needs a draft model (EngineConfig.draft_model, e.g. jp-small)")
        return DraftModel(target, draft, kv_memory_bytes)
    if kind == "mtp":
        from pathlib import Path

        from joulepath.model.mtp import load_heads

        heads = load_heads(Path(target.source), next(target.model.parameters()).device)
        if heads is None:
            raise ValueError(
                f"speculative = 'mtp': {target.source} ships no multi-token heads (mtp_heads.safetensors); "
                "use prompt_lookup or a draft model"
            )
        heads = heads.to(dtype=next(target.model.parameters()).dtype)
        return MTPHeads(target, heads)
    if kind == "eagle":
        from pathlib import Path

        from joulepath.model.eagle import EAGLE_FILE, load_eagle

        p = next(target.model.parameters())
        block = load_eagle(Path(target.source), target.config, p.device)
        if block is None:
            raise ValueError(
                f"speculative = 'eagle': {target.source} ships no draft block ({EAGLE_FILE}); train one with "
                "benchmarks/mtp_distill.py --write, or use prompt_lookup, mtp or a draft model"
            )
        return EagleProposer(target, block.to(dtype=p.dtype), kv_memory_bytes, block_size)
    raise ValueError(f"unknown speculative proposer {kind!r}; use one of {', '.join(PROPOSERS)}")
