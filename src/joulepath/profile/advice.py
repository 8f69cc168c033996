"""From a hot-path profile to advice: for each hot class, the lever that would cut it, whether joulepath
has that lever yet, and the expected gain (estimated: the roofline/energy model's first-order effect
on that class's share of time, never a measurement).
"""

from __future__ import annotations

from collections.abc import Sequence

from joulepath.engine import EngineConfig
from joulepath.model import LoadedModel
from joulepath.results import Advice, ClassCost, Lever

GEMMS = ("attention.qkv_proj", "attention.out_proj", "mlp", "lm_head")
SPEC_TOKENS_PER_STEP = 1.5  # assumed for the advice's estimate: tokens emitted per verify step
HOST = ("scheduler", "kv_cache.plan", "sampling+detokenize", "meter", "model.other")  # profiled host classes


LEVERS = {
    "quantization": Lever(
        "weight quantization (INT8/INT4/FP8)",
        True,
        "built: joulepath.optimize (serve.quantize; used only where the golden gate passes)",
    ),
    "low_precision": Lever(
        "lower-precision GEMMs (INT8 / FP8 compute)",
        True,
        "built: optimize int8_vnni (joulepath's AVX512-VNNI / AVX2 kernel) or int8_dynamic (fbgemm int8 GEMM) "
        "on a CPU, "
        "fp8_dynamic (torch._scaled_mm) on a GPU of compute capability 8.9+; gated",
    ),
    "kv_quantization": Lever(
        "KV-cache quantization",
        True,
        "built: engine kv_int8 (EngineConfig.kv_int8; the main job's serve.kv_int8, gated)",
    ),
    "speculative": Lever(
        "speculative decoding (prompt lookup, draft model, multi-token heads, EAGLE draft block)",
        True,
        "built: engine.speculative (EngineConfig.speculative; the main job's serve.speculative); k adapts, 0 allowed",
    ),
    "prefix_caching": Lever(
        "prefix caching (KV reuse of shared prompt prefixes)",
        True,
        "built: engine.prefix_cache (EngineConfig.prefix_cache; the main job's serve.prefix_cache)",
    ),
    "compiled_decode": Lever(
        "compiled decode with CUDA graphs",
        True,
        "built on the static path: engine.static_decode (torch.compile for batch 1, a captured graph per batch)",
    ),
    "batching": Lever("continuous batching", True, "built: joulepath.engine (EngineConfig.max_batch)"),
    "fusion": Lever("kernel fusion (torch.compile)", True, "built for the static batch-1 path only"),
}


def shared_prefix_fraction(prompts: Sequence[str], loaded: LoadedModel) -> float:
    """Share of prompt tokens that repeat a prefix of an earlier prompt (what prefix caching skips)."""
    seen: set[tuple[int, ...]] = set()
    total = reusable = 0
    for p in prompts:
        ids = tuple(loaded.tokenizer.encode(p))
        total += len(ids)
        lo, hi = 0, len(ids) - 1  # the last prompt token is always computed (its logits sample)
        while lo < hi:  # longest prefix already seen (prefixes of seen prompts are all in `seen`)
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if ids[:mid] in seen else (lo, mid - 1)
        reusable += lo
        seen.update(ids[:k] for k in range(1, len(ids) + 1))
    return reusable / total if total else 0.0


def advise(
    classes: Sequence[ClassCost],
    prefill_tokens: int,
    decode_tokens: int,
    prompts: Sequence[str],
    loaded: LoadedModel,
    el_bytes: int,
    min_share: float = 0.05,
    on: frozenset[str] = frozenset(),
) -> list[Advice]:
    """Advice for the hot classes, largest expected gain first; a lever in `on` (keys of `LEVERS`: already
    on in the profiled configuration) is not advised again: what it left is in the classes themselves."""
    by = {c.name: c for c in classes}
    out: list[Advice] = []
    gemm = [by[n] for n in GEMMS if n in by]
    mem = sum(c.share for c in gemm if c.bound == "memory-bound")
    comp = sum(c.share for c in gemm if c.bound == "compute-bound")
    if mem >= min_share:
        keep = 1 / el_bytes  # INT8 weights: 1 byte per weight instead of `el_bytes`
        out.append(
            Advice(
                "GEMMs (" + ", ".join(c.name for c in gemm if c.bound == "memory-bound") + ")",
                mem,
                f"weight GEMMs are memory-bound and {100 * mem:.0f} % of time",
                LEVERS["quantization"],
                mem * (1 - keep),
                f"memory-bound time scales with weight bytes; {el_bytes} -> 1 byte per weight",
            )
        )
    if comp >= min_share:
        out.append(
            Advice(
                "GEMMs (compute-bound)",
                comp,
                f"weight GEMMs are compute-bound and {100 * comp:.0f} % of time",
                LEVERS["low_precision"],
                comp * 0.5,
                "twice the peak FLOP/s at half the precision on most devices",
            )
        )
    attn = by.get("attention.kernel")
    if attn and attn.share >= min_share and attn.bound == "memory-bound":
        out.append(
            Advice(
                "attention.kernel",
                attn.share,
                f"attention over the KV cache is memory-bound and {100 * attn.share:.0f} % of time",
                LEVERS["kv_quantization"],
                attn.share * 0.5,
                "KV bytes halve at 8 bits per value (from 16)",
            )
        )
    reuse = shared_prefix_fraction(prompts, loaded)
    processed = prefill_tokens + decode_tokens
    model_share = sum(c.share for c in classes if c.name not in (*HOST, "idle"))
    prefill_share = model_share * prefill_tokens / processed if processed else 0.0
    if reuse * prefill_share >= min_share / 2:
        out.append(
            Advice(
                "prefill",
                prefill_share,
                f"{100 * reuse:.0f} % of prompt tokens repeat an earlier prompt's prefix; prefill is "
                f"~{100 * prefill_share:.0f} % of time",
                LEVERS["prefix_caching"],
                reuse * prefill_share,
                "reused prompt tokens skip their prefill; prefill share by token count",
            )
        )
    decode_share = model_share * decode_tokens / processed if processed else 0.0
    if decode_share >= min_share:
        out.append(
            Advice(
                "decode",
                decode_share,
                f"decoding (one weight read per token) is ~{100 * decode_share:.0f} % of time",
                LEVERS["speculative"],
                decode_share * (1 - 1 / SPEC_TOKENS_PER_STEP),
                f"assumed {SPEC_TOKENS_PER_STEP} tokens per verify step; a verify costs about one decode step when "
                "memory-bound (benchmarks/speculative.py measures both)",
            )
        )
    host = sum(by[n].share for n in HOST if n in by)
    if host >= min_share:
        out.append(
            Advice(
                "host overhead (" + ", ".join(n for n in HOST if n in by and by[n].share > 0.01) + ")",
                host,
                f"Python/host work between kernels is {100 * host:.0f} % of time",
                LEVERS["compiled_decode"],
                host * 0.8,
                "captured graphs replay kernels without per-op host work (gpt-fast-style decode)",
            )
        )
    idle = by.get("idle")
    if idle and idle.share >= min_share:
        out.append(
            Advice(
                "idle",
                idle.share,
                f"the device idles {100 * idle.share:.0f} % of the time between steps",
                LEVERS["batching"],
                idle.share * 0.5,
                "more requests per step fill the gaps",
            )
        )
    applied = {LEVERS[k] for k in on}
    return sorted((a for a in out if a.lever not in applied), key=lambda a: -a.expected_gain)


def levers_on(config: EngineConfig, weight_lever: str | None = None) -> frozenset[str]:
    """The `LEVERS` a configuration already runs: from its engine settings and the weight lever applied
    to its model (`int8_dynamic`, `int4_weight_only`, `teal:0.5`, ... ; None: as loaded)."""
    on = {"batching"} if config.max_batch > 1 else set()
    on |= {"prefix_caching"} if config.prefix_cache else set()
    on |= {"speculative"} if config.speculative else set()
    on |= {"kv_quantization"} if config.kv_int8 else set()
    if weight_lever and not weight_lever.startswith("teal"):
        mode = weight_lever.split("+", 1)[0].split(":", 1)[0]  # "int4_vnni:g64+skip=output" -> "int4_vnni"
        int8_compute = mode in ("int8_dynamic", "int8_vnni", "int4_vnni")  # int8 activations too
        on |= {"quantization", "low_precision"} if int8_compute else {"quantization"}
    return frozenset(on)
