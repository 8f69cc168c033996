"""The grid benchmark's NVML reference: measured default-limit power beside the power model's."""

import json
from pathlib import Path

import pytest

from joulepath.bench.grid import nvml_reference
from joulepath.hw.catalog import get_accelerator
from joulepath.hw.perf import Deployment, calibrated_efficiency, device_power_w


def test_nvml_reference_recomputes_the_model_for_the_measured_activity(tmp_path: Path) -> None:
    rows = [
        {"batch": 1, "bytes_per_s": 2.5e12, "flops_per_s": 2.5e12, "measured_power_w": 440.0},
        {"batch": 256, "bytes_per_s": 2.1e12, "flops_per_s": 5.5e14, "measured_power_w": 700.0},
    ]
    check = {"device": "H100", "catalog_entry": "h100-sxm", "idle_power_w": 74.0, "rows": rows}
    path = tmp_path / "device_power_check.json"
    path.write_text(json.dumps(check))
    ref = nvml_reference(path)
    assert ref is not None
    dep, eff = Deployment(get_accelerator("h100-sxm")), calibrated_efficiency()
    model = [device_power_w(dep, 1.0, r["bytes_per_s"], r["flops_per_s"], eff) for r in rows]
    assert [r["model_power_w"] for r in ref["rows"]] == pytest.approx(model)
    errors = [abs(m / r["measured_power_w"] - 1) for m, r in zip(model, rows, strict=True)]
    assert ref["mean_abs_error_pct"] == pytest.approx(100 * sum(errors) / 2)
    assert ref["idle_power_w_measured"] == 74.0


def test_nvml_reference_is_none_without_a_device_run(tmp_path: Path) -> None:
    assert nvml_reference(tmp_path / "absent.json") is None
