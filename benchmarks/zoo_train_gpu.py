"""Train the shipped zoo models on one CUDA GPU within a wall-time budget (device machine only).

Makes the packed rows on the machine's CPU cores, trains jp-large (with Medusa heads) and jp-small on
the same rows and tokenizer, samples the GPU's busy share through NVML while jp-large trains, scores a
slice of the golden dev split and the heads' chain acceptance, and leaves everything in `--out`:
`train_log.json` and `<model>.tar.gz.part-*` (each Hugging Face folder in bf16, written as soon as it
trained, split under the device tool's per-file limit; `cat jp-large.tar.gz.part-* | tar xz` restores it).

    PYTHONPATH=src python3 benchmarks/zoo_train_gpu.py --out $OUT --large-s 250 --small-s 70
    PYTHONPATH=src python3 benchmarks/zoo_train_gpu.py --out $OUT --models jp-large --init --large-s 250
    PYTHONPATH=src python3 benchmarks/zoo_train_gpu.py --out /tmp/z --cpu-smoke   # this script's CPU test
    PYTHONPATH=src python3 benchmarks/zoo_train_gpu.py --out $OUT --models jp-large --only lookup \
        --lookup-lines 2,4 --lookup-echo 0.5 --large-s 180   # lookup diagnostic: does the loss leave ~1.7?

`--init` continues from the shipped weights (a fresh optimizer and schedule: a second device session
adds to the first instead of starting over).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from joulepath.model import load_model, save_checkpoint
from joulepath.model.checkpoint import zoo_path
from joulepath.model.mtp import load_heads
from joulepath.quality import golden, shards
from joulepath.quality.evals import evaluate, mean_accepted_length
from joulepath.quality.tasks import LEVELS
from joulepath.quality.train import TrainConfig, TrainState, make_data, train
from joulepath.serving.guard import safety_texts

PART_BYTES = 15 * 2**20
LOG: dict[str, Any] = {"stages": {}, "errors": []}


class GpuBusySampler:
    """NVML 'GPU utilisation' (share of time a kernel ran) sampled every 0.2 s in a thread."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read: Callable[[], int] | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._read = lambda: pynvml.nvmlDeviceGetUtilizationRates(self._handle).gpu
        except Exception as exc:  # no NVML: say so in the log rather than invent a number
            LOG["errors"].append(f"nvml: {exc}")

    def start(self) -> None:
        if self._read is not None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        read = self._read
        while read is not None and not self._stop.is_set():
            self.samples.append((time.perf_counter(), int(read())))
            time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()

    def busy_fraction(self, t0: float, t1: float) -> float | None:
        window = [u for t, u in self.samples if t0 <= t <= t1]
        return sum(window) / (100 * len(window)) if window else None


def stage(name: str) -> Any:
    """Decorator: time a stage, record its result or its error, never let one stage kill the rest."""

    def wrap(fn: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            print(f"== {name}", flush=True)
            try:
                result = fn(*args, **kwargs)
            except Exception:
                LOG["errors"].append(f"{name}: {traceback.format_exc()}")
                print(traceback.format_exc(), flush=True)
                result = None
            LOG["stages"][name] = round(time.perf_counter() - t0, 1)
            return result

        return run

    return wrap


@stage("data")
def make_rows(cfg: TrainConfig, tokenizer: Path, workers: int) -> shards.PackedRows:
    rows = make_data(replace(cfg, data_workers=workers), tokenizer, safety_texts("train"))
    LOG["data"] = {
        "rows": rows.n_rows,
        "seq_len": rows.length,
        "fill": round(rows.fill, 4),
        "answer_tokens": int(rows.targets.sum()),
    }
    return rows


def fit(name: str, cfg: TrainConfig, rows: shards.PackedRows, work: Path, busy: GpuBusySampler | None) -> Path:
    """Train one model into work/name; log its curve, throughput and (for jp-large) GPU busy share."""
    out = work / name
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(zoo_path("jp-large") / "tokenizer.json", out / "tokenizer.json")  # one tokenizer for both
    curve: list[dict[str, Any]] = []
    window: dict[str, float] = {}

    def show(s: TrainState) -> None:
        now = time.perf_counter()
        if s.step >= cfg.timing_steps and "t0" not in window:
            window.update(t0=now, step0=s.step)
        window.update(t1=now, step1=s.step)
        curve.append({**asdict(s), "t_s": round(now - t_start, 1)})
        if s.step % (cfg.log_every * 4) == 0 or s.step == s.total_steps:
            heads = " ".join(f"{a:.2f}" for a in s.head_accuracy)
            print(f"{name} {s.step}/{s.total_steps} loss {s.loss:.3f} {s.tokens_per_s:,.0f} tok/s {heads}", flush=True)

    t_start = time.perf_counter()
    if busy is not None:
        busy.start()
    train(cfg, out, show, safety=safety_texts("train"), data=rows)
    seconds = time.perf_counter() - t_start
    record: dict[str, Any] = {"config": asdict(cfg), "wall_s": round(seconds, 1), "curve": curve}
    if "t0" in window and window["step1"] > window["step0"]:
        tokens = (window["step1"] - window["step0"]) * cfg.rows_per_step * cfg.seq_len
        record["tokens_per_s"] = round(tokens / (window["t1"] - window["t0"]))
        if busy is not None:
            busy.stop()
            record["gpu_busy_fraction"] = busy.busy_fraction(window["t0"], window["t1"])
    record["tokens_seen"] = (curve[-1]["step"] if curve else 0) * cfg.rows_per_step * cfg.seq_len
    LOG[name] = record
    return out


def quick_eval(folder: Path, name: str, per_cell: int, device: str) -> None:
    """Golden dev slice per level, and (if the model has heads) chain acceptance on the same prompts."""
    loaded = load_model(str(folder), device=device)
    examples = golden.load("dev", per_cell=per_cell)
    report = evaluate(loaded, examples)
    result: dict[str, Any] = {lv: round(report.level_accuracy(lv), 4) for lv in LEVELS}
    result["cells"] = {f"{c.skill}/{c.level}": c.correct / c.n for c in report.cells}
    heads = load_heads(folder, device)
    if heads is not None:
        result["mtp_mean_accepted"] = round(mean_accepted_length(loaded, heads, report), 3)
    LOG.setdefault("eval", {})[name] = result
    print(name, json.dumps({k: v for k, v in result.items() if k != "cells"}), flush=True)


def package(folder: Path, out: Path) -> None:
    """One model folder, in bf16, as `<name>.tar.gz.part-N` in `out` right after it trained (so a later
    stage that runs out of time loses nothing already trained)."""
    (folder / "trainer_state.pt").unlink(missing_ok=True)  # optimizer state: not shipped
    save_checkpoint(load_model(str(folder)), folder, dtype=torch.bfloat16)  # shipped in bf16 (half the bytes)
    archive = folder.parent / f"{folder.name}.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(folder, arcname=folder.name)
    data = archive.read_bytes()
    for i in range(0, len(data), PART_BYTES):
        (out / f"{folder.name}.tar.gz.part-{i // PART_BYTES}").write_bytes(data[i : i + PART_BYTES])
    LOG.setdefault("archive_bytes", {})[folder.name] = len(data)
    (out / "train_log.json").write_text(json.dumps(LOG, indent=1))


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.cuda.is_available(), "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
        info["nvidia_smi"] = smi.stdout.strip()
    return info


def int_pair(parser: argparse.ArgumentParser, flag: str, text: str) -> tuple[int, int] | None:
    """LO,HI from a flag's text (None when empty); anything else ends the script with the flag's usage."""
    if not text:
        return None
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        parser.error(f"{flag} takes LO,HI, two whole numbers (e.g. 2,4), got {text!r}")
    return int(parts[0]), int(parts[1])


def train_configs(
    parser: argparse.ArgumentParser, args: argparse.Namespace, smoke: bool
) -> tuple[TrainConfig, TrainConfig]:
    """(jp-large, jp-small) training configs from the flags; a bad value ends the script with its reason."""
    unknown = set(args.models.split(",")) - {"jp-large", "jp-small"}
    if unknown or not args.models:
        parser.error(f"--models: jp-large and/or jp-small, comma-separated; got {args.models!r}")
    if not smoke and (args.large_s <= 0 or args.small_s <= 0):
        parser.error("--large-s and --small-s are wall-time budgets in seconds, > 0")
    drill = tuple(s for s in args.drill.split(",") if s)
    only = tuple(s for s in args.only.split(",") if s)
    lines = int_pair(parser, "--lookup-lines", args.lookup_lines)
    large = TrainConfig(
        preset="jp-large",
        init_from=str(zoo_path("jp-large")) if args.init else "",
        steps=6 if smoke else 100_000,
        tokens_per_step=(2 * 256) if smoke else 48 * 2048,
        seq_len=256 if smoke else 2048,
        lr=1.5e-3 * args.lr_scale,
        warmup_steps=5 if smoke else (50 if args.init else 150),
        data_rows=8 if smoke else args.rows,
        skills=only or (("add", "sort", "lookup") if smoke else TrainConfig.skills + drill),
        lookup_lines=lines,
        lookup_echo=args.lookup_echo,
        mtp_heads=4,
        checkpoint_every=10**9,
        time_budget_s=0 if smoke else args.large_s,
        timing_steps=30,
        compile=False,  # measured-free choice for a 4-minute budget: see docs/quality.md
        log_every=2 if smoke else 25,
    )
    small = TrainConfig(
        **{
            **asdict(large),
            "preset": "jp-small",
            "init_from": str(zoo_path("jp-small")) if args.init else "",
            "lr": 3e-3 * args.lr_scale,
            "mtp_heads": 0,
            "time_budget_s": 0 if smoke else args.small_s,
        }
    )
    return large, small


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--large-s", type=float, default=250.0)
    parser.add_argument("--small-s", type=float, default=70.0)
    parser.add_argument("--rows", type=int, default=48_000)
    parser.add_argument("--eval-per-cell", type=int, default=10)
    parser.add_argument("--models", default="jp-large,jp-small", help="which to train, in this order")
    parser.add_argument("--init", action="store_true", help="warm start from the shipped zoo weights")
    parser.add_argument("--lr-scale", type=float, default=1.0, help="peak learning rates times this")
    parser.add_argument("--drill", default="", help="skills added to the uniform draw again (e.g. add,mul)")
    parser.add_argument("--only", default="", help="train on these skills alone (e.g. lookup: a diagnostic run)")
    parser.add_argument(
        "--lookup-lines", default="", help="lookup documents of LO,HI lines (e.g. 2,4) instead of each level's"
    )
    parser.add_argument(
        "--lookup-echo", type=float, default=0.0, help="share of lookup documents asked in the echo form (0-1)"
    )
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny run on CPU to test this script")
    args = parser.parse_args()
    smoke = args.cpu_smoke
    try:  # before anything is made or removed
        large, small = train_configs(parser, args, smoke)
    except ValueError as exc:  # e.g. --lookup-lines 1,4 or an unknown skill in --only
        parser.error(str(exc))
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/zoo-train/models")
    shutil.rmtree(work.parent, ignore_errors=True)
    work.mkdir(parents=True)
    LOG["machine"] = machine()
    print(json.dumps(LOG["machine"]), flush=True)
    device = "cpu" if smoke else "cuda"
    rows = make_rows(large, zoo_path("jp-large") / "tokenizer.json", 2 if smoke else max(1, (os.cpu_count() or 2) - 1))
    if rows is not None:
        busy = GpuBusySampler() if not smoke else None
        chosen = args.models.split(",")
        plan = {"jp-large": (large, busy), "jp-small": (small, None)}
        for name, (cfg, sampler) in ((n, plan[n]) for n in chosen):
            folder = stage(f"train-{name}")(fit)(name, cfg, rows, work, sampler)
            if folder is not None:
                stage(f"package-{name}")(package)(folder, args.out)
                stage(f"eval-{name}")(quick_eval)(folder, name, 1 if smoke else args.eval_per_cell, device)
    LOG["total_s"] = round(time.perf_counter() - t0, 1)
    (args.out / "train_log.json").write_text(json.dumps(LOG, indent=1))
    print(json.dumps({k: v for k, v in LOG.items() if k not in ("jp-large", "jp-small")}, indent=1)[:4000])
    return 0 if not LOG["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
