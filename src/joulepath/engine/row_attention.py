"""Row-invariant attention over the paged KV cache: joulepath's own C kernel (`attention_kernels.c`).

Every query row is attended over exactly its visible keys in one fixed order, so its output does not depend
on the rows beside it, on padding, or on how its sequence's tokens were split into steps (see the C file).
torch's SDPA does not promise that: on this CPU the same row differs by ~1e-7 between a padded batched
decode and a verify chunk, which is enough to flip a near-tied argmax. With row-invariant weight GEMMs
(the int8/int4 VNNI kernels) this makes greedy speculative decoding token-identical to plain decoding by
construction, and it is faster than padding + gathering for SDPA at decode (measured: benchmarks/RESULTS.md).

The kernel takes fp32 on the CPU. It is built on first use by the system compiler (`engine/native.py`) with
AVX-512 flags where the CPU has them and is single-threaded per call (an opt-in split over two threads
changes no bit: `SPLIT_MIN_WORK`).
`unavailable_reason()` says why it cannot run here (no compiler, a failed build, `JOULEPATH_ROW_ATTENTION=0`).
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from joulepath.engine import native

SOURCE = Path(__file__).with_name("attention_kernels.c")
BASE_FLAGS = ("-O3", "-ffp-contract=off", "-Wno-psabi", "-fPIC", "-shared")  # no fused multiply-adds: one arithmetic
MAX_HEAD_DIM = 256  # the kernel's MAX_VECS x 16
# Opt-in 2-thread row split: a call with this many key x head-dim x heads products runs half its rows on a
# helper thread when torch has 2 or more (rows are independent: no bit changes, tested). Off by default: on the
# 2-vCPU VM two threads of the kernel ran no faster than one (a 600-token prefill layer 11.3 vs 10.3 ms; two
# threads of a scalar C loop do run in parallel there, so the vector units look shared), and end to end it
# gained nothing (4.35 vs 4.41 s, jp-large int8_vnni, 120 golden prompts).
SPLIT_MIN_WORK = 1 << 62
_pool: ThreadPoolExecutor | None = None


@functools.cache
def has_avx512() -> bool:
    """Whether this is an x86-64 CPU with AVX-512F and FMA: the kernel's 16-float vectors are native there."""
    cpu = native.cpu_flags()
    return platform.machine() in ("x86_64", "AMD64") and not isinstance(cpu, str) and {"avx512f", "fma"} <= set(cpu)


def auto_declines() -> str | None:
    """Why `EngineConfig.attention='auto'` keeps SDPA here, or None. `auto` takes the kernel only where it is
    also the faster one: an AVX-512 CPU at 1 torch thread. Above that SDPA's prefill uses the other cores and
    was faster on prompt-heavy traffic (measured on a 2-core VM, jp-large, 120 golden prompts at batch 16,
    wall time: SDPA 16 % less on int8_vnni and 4-9 % less on fp32 weights at 2 threads; the kernel 5-8 % less at
    1 thread). Like vLLM's batch-invariant mode, exactness at any thread count is asked for by name."""
    if not has_avx512():
        return "no AVX-512: the kernel's 16-float vectors are split and it is slower than SDPA"
    if torch.get_num_threads() > 1:
        return f"{torch.get_num_threads()} torch threads: SDPA's prefill uses them (ask for 'row_invariant' by name)"
    return None


def flags() -> tuple[str, ...]:
    """Compiler flags: AVX-512 vectors where the CPU has them, else plain -O3 (correct everywhere; on AVX2 the
    16-float vectors are split and the kernel is slower than torch's SDPA: measured, so `auto` keeps SDPA)."""
    return ("-mavx512f", "-mfma", "-mprefer-vector-width=512", *BASE_FLAGS) if has_avx512() else BASE_FLAGS


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str | None]:
    if os.environ.get("JOULEPATH_ROW_ATTENTION", "1") == "0":
        return None, "disabled by JOULEPATH_ROW_ATTENTION=0"
    cc = native.compiler()
    if cc is None:
        return None, f"no C compiler ({os.environ.get('CC', 'gcc')}) on PATH to build {SOURCE.name}"
    try:
        lib = ctypes.CDLL(str(native.build(SOURCE, flags(), cc, "the row-invariant attention kernel")))
    except (RuntimeError, OSError) as e:
        return None, str(e)
    p, i32 = ctypes.c_void_p, ctypes.c_int
    lib.jp_attend_rows.argtypes = [p, p, p, p, p, p, p, p, i32, i32, i32, i32, ctypes.c_float, p]
    lib.jp_attend_rows.restype = ctypes.c_int
    return lib, None


def unavailable_reason() -> str | None:
    """None if the kernel is built and loaded, else why not (once per process)."""
    return _load()[1]


@dataclass(frozen=True)
class RowPlan:
    """Which keys each query row of a step sees: row `rows[r]` of q reads positions [lo[r], hi[r]) of its
    sequence, whose cache slots are `slots[off[r] + position]`. int64 CPU tensors, built once per step."""

    slots: Tensor
    off: Tensor
    lo: Tensor
    hi: Tensor
    rows: Tensor
    max_row: int = -1  # the largest q row and cache slot named (checked against the tensors at each call)
    max_slot: int = -1

    @staticmethod
    def build(spans: list[tuple[Tensor, int, int, int]], window: int | None) -> RowPlan:
        """`spans`: per chunk (its slots from position 0, its first q row, its first position, its token count)."""
        slots, off, lo, hi, rows = [], [], [], [], []
        base = 0
        for chunk_slots, first_row, start, n in spans:
            for j in range(n):
                upto = start + j + 1
                off.append(base)
                lo.append(max(0, upto - window) if window else 0)
                hi.append(upto)
                rows.append(first_row + j)
            slots.append(chunk_slots.cpu())
            base += len(chunk_slots)
        as64 = functools.partial(torch.tensor, dtype=torch.int64)
        every = torch.cat(slots).to(torch.int64)
        if len(every) and int(every.min()) < 0:
            raise ValueError("a chunk's slot list holds a negative slot")
        top_slot = int(every.max()) if len(every) else -1
        return RowPlan(every, as64(off), as64(lo), as64(hi), as64(rows), max(rows, default=-1), top_slot)


def attend(q: Tensor, k: Tensor, v: Tensor, plan: RowPlan) -> Tensor:
    """Attention output (T, H, D) of q (T, H, D) over one layer's cache k, v (S, KV, D), rows as `plan` says
    (rows it does not name are left as zeros)."""
    lib, reason = _load()
    if lib is None:
        raise RuntimeError(f"row-invariant attention is unavailable: {reason}")
    _check(q, k, v, plan)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()  # the cache layer is a view of a contiguous pool
    _, h, d = q.shape
    kv = k.shape[1]
    out = torch.zeros_like(q)
    n = len(plan.rows)
    scale = d**-0.5

    def call(r0: int, count: int) -> int:
        at = 8 * r0  # byte offset into the int64 per-row arrays
        return int(lib.jp_attend_rows(
            q.data_ptr(), k.data_ptr(), v.data_ptr(), plan.slots.data_ptr(), plan.off.data_ptr() + at,
            plan.lo.data_ptr() + at, plan.hi.data_ptr() + at, plan.rows.data_ptr() + at, count, h, kv, d, scale,
            out.data_ptr(),
        ))  # fmt: skip

    split = _split(plan, h * d)
    if split:
        global _pool
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="joulepath-attention")
        other = _pool.submit(call, split, n - split)
        statuses = [call(0, split), other.result()]
    else:
        statuses = [call(0, n) if n else 0]
    if 1 in statuses:
        raise MemoryError("row-invariant attention could not allocate its score buffer")
    if any(statuses):
        raise RuntimeError(f"row-invariant attention refused the call (status {max(statuses)})")
    return out


def _check(q: Tensor, k: Tensor, v: Tensor, plan: RowPlan) -> None:
    """The C side trusts its pointers: refuse what would make it read or write the wrong bytes."""
    if not (q.dtype is k.dtype is v.dtype is torch.float32 and q.is_cpu and k.is_cpu and v.is_cpu):
        raise TypeError(
            f"row-invariant attention takes fp32 CPU tensors; got q {q.dtype} on {q.device}, cache {k.dtype} on "
            f"{k.device} (use EngineConfig.attention='sdpa' there)"
        )
    if q.dim() != 3 or k.dim() != 3 or k.shape != v.shape or q.shape[2] != k.shape[2]:
        raise ValueError(
            f"want q (T, H, D) and a cache layer (S, KV, D) for k and v; got {q.shape}, {k.shape}, {v.shape}"
        )
    h, kv, d = q.shape[1], k.shape[1], q.shape[2]
    if kv < 1 or h % kv:
        raise ValueError(f"query heads ({h}) must be a multiple of KV heads ({kv})")
    if d > MAX_HEAD_DIM:
        raise ValueError(f"row-invariant attention takes head_dim <= {MAX_HEAD_DIM}, got {d}; use attention='sdpa'")
    if plan.max_row >= q.shape[0] or plan.max_slot >= k.shape[0]:
        raise ValueError(
            f"the plan names q row {plan.max_row} and cache slot {plan.max_slot}; q has {q.shape[0]} rows and the "
            f"cache {k.shape[0]} slots"
        )


def _split(plan: RowPlan, per_key: int) -> int:
    """Rows for this thread when the call is worth two (the other thread takes the rest), else 0."""
    if len(plan.rows) < 2 or torch.get_num_threads() < 2:
        return 0
    keys = (plan.hi - plan.lo).cumsum(0)
    total = int(keys[-1])
    if total * per_key < SPLIT_MIN_WORK:
        return 0
    return min(max(int(torch.searchsorted(keys, total // 2)) + 1, 1), len(plan.rows) - 1)
