"""Batch-1 decode benchmark: joulepath's static decode path vs Hugging Face transformers `generate()`
on the same weights, against this machine's measured memory-read roofline.

Decoding one token streams every weight once, so tokens/s x bytes per token is the achieved read
bandwidth; its ratio to a plain large-tensor reduction's bandwidth is the roofline fraction.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import torch

from joulepath.bench.common import machine, read_bandwidth_gb_s, write_result
from joulepath.engine.sampling import SamplingParams
from joulepath.engine.static_decode import generate_static
from joulepath.meter import auto_meter
from joulepath.model import LoadedModel, load_model, save_checkpoint

PROMPT_TOKENS = 32


def make_prompt(vocab_size: int) -> list[int]:
    """32 fixed token ids inside the vocabulary (the content does not matter for timing)."""
    return [(1000 + i) % vocab_size for i in range(PROMPT_TOKENS)]


def bytes_per_token(loaded: LoadedModel, context_tokens: float) -> float:
    """Weights (tied tensors once) plus the KV cache read at `context_tokens`."""
    cfg = loaded.config
    params = {p.data_ptr(): p.numel() * p.element_size() for p in loaded.model.parameters()}
    elem = next(loaded.model.parameters()).element_size()
    kv = 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * elem * context_tokens
    return sum(params.values()) + kv


def time_transformers(folder: str, prompt: list[int], n_tokens: int, device: str) -> tuple[float, list[int]] | None:
    """Decode tokens/s of transformers' generate() (prefill removed by differencing), and its tokens."""
    try:
        from transformers import AutoModelForCausalLM
    except ImportError:
        return None
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device).eval()  # type: ignore[arg-type]
    hf.generation_config.eos_token_id = None  # fixed-length decode on both sides; no EOS suppression either
    ids = torch.tensor([prompt], device=device)
    mask = torch.ones_like(ids)  # explicit: otherwise prompt tokens equal to pad_token_id count as padding

    def run(n: int) -> tuple[float, list[int]]:
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = hf.generate(ids, attention_mask=mask, max_new_tokens=n, do_sample=False, pad_token_id=0)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, out[0, len(prompt) :].tolist()

    run(2)  # warm-up
    t1, _ = run(1)
    tn, tokens = run(n_tokens)
    return (n_tokens - 1) / (tn - t1), tokens


def run(model: str = "dummy:qwen2.5-0.5b", n_tokens: int = 64, quick: bool = False) -> dict[str, Any]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    n_tokens = 16 if quick else n_tokens
    loaded = load_model(model, device=device, dtype=torch.float32)
    prompt = make_prompt(loaded.config.vocab_size)
    params = SamplingParams(max_tokens=n_tokens, ignore_eos=True)
    generate_static(loaded.model, prompt, SamplingParams(max_tokens=4, ignore_eos=True))  # warm-up
    meter = auto_meter()
    meter.begin("decode")
    ours = generate_static(loaded.model, prompt, params)
    energy = meter.end("decode")
    bandwidth = read_bandwidth_gb_s(device)
    per_token = bytes_per_token(loaded, len(prompt) + n_tokens / 2)
    achieved = ours.decode_tokens_per_s * per_token / 1e9
    result: dict[str, Any] = {
        "model": model,
        "device": device,
        "dtype": "float32",
        "decode_tokens": n_tokens,
        "tokens_per_s": round(ours.decode_tokens_per_s, 3),
        "bytes_per_token": per_token,
        "achieved_gb_s": round(achieved, 2),
        "measured_read_bandwidth_gb_s": round(bandwidth, 2),
        "roofline_fraction": round(achieved / bandwidth, 3),
        "j_per_token": energy.total_energy_j / n_tokens,
        "energy_provenance": energy.provenance_summary,
        "quick": quick,
        "machine": machine(),
    }
    if device == "cuda":  # the captured static decode (CUDA graphs) next to eager
        generate_static(loaded.model, prompt, params, compile_decode=True)  # compile + capture for these shapes
        compiled = generate_static(loaded.model, prompt, params, compile_decode=True)
        result["compiled_tokens_per_s"] = round(compiled.decode_tokens_per_s, 3)
        result["compiled_outputs_identical"] = compiled.output_ids == ours.output_ids
    with tempfile.TemporaryDirectory() as folder:
        save_checkpoint(loaded, folder)
        del loaded
        hf = time_transformers(folder, prompt, n_tokens, device)
    if hf is not None:
        result["transformers_tokens_per_s"] = round(hf[0], 3)
        result["speedup_vs_transformers"] = round(ours.decode_tokens_per_s / hf[0], 3)
        result["outputs_identical_to_transformers"] = hf[1] == ours.output_ids
    return result


def report(result: dict[str, Any]) -> None:
    print(f"{result['model']} batch-1 decode, {result['dtype']}, {result['device']}, {result['decode_tokens']} tokens")
    print(f"{'':28}{'tokens/s':>10}{'GB/s':>8}")
    hf = result.get("transformers_tokens_per_s")
    if hf:
        print(f"{'transformers generate()':28}{hf:>10.2f}{hf * result['bytes_per_token'] / 1e9:>8.1f}")
    print(f"{'joulepath (static decode)':28}{result['tokens_per_s']:>10.2f}{result['achieved_gb_s']:>8.1f}")
    if "compiled_tokens_per_s" in result:
        c = result["compiled_tokens_per_s"]
        print(f"{'joulepath (compiled, graphs)':28}{c:>10.2f}{c * result['bytes_per_token'] / 1e9:>8.1f}")
    print(f"{'memory read roofline':28}{'':>10}{result['measured_read_bandwidth_gb_s']:>8.1f}")
    if hf:
        same = result["outputs_identical_to_transformers"]
        print(f"speedup vs transformers: {result['speedup_vs_transformers']:.2f}x (greedy outputs identical: {same})")
    print(
        f"roofline fraction: {result['roofline_fraction']:.2f}; energy {result['j_per_token']:.3g} J/token "
        f"({result['energy_provenance']})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="16 tokens instead of 64")
    parser.add_argument("--model", default="dummy:qwen2.5-0.5b")
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args(argv)
    result = run(args.model, args.tokens, args.quick)
    report(result)
    print(f"wrote {write_result('decode', result)}")
    return 0
