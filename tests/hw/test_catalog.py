import subprocess
import sys

import pytest

from joulepath.hw import UnknownHardwareError, accelerators, get_accelerator, interconnects, local_cpu, memories

REQUIRED = [
    "h100-sxm",
    "h200-sxm",
    "b200",
    "gb200",
    "gb300",
    "mi300x",
    "mi355x",
    "tpu-v5e",
    "tpu-v5p",
    "tpu-v6e",
    "tpu7x",
    "gaudi3",
]


def test_issue_accelerators_and_classes_present() -> None:
    table = accelerators()
    assert set(REQUIRED) <= set(table)
    kinds = {a.kind for a in table.values()}
    assert {"gpu", "tpu", "npu", "dpu", "cpu"} <= kinds


def test_interconnects_and_memories_cover_the_issue() -> None:
    names = set(interconnects())
    for needed in (
        "nvlink4",
        "nvlink5",
        "nvl72",
        "infiniband-ndr",
        "infiniband-xdr",
        "ethernet-800g-uec",
        "pcie5-x16",
        "pcie6-x16",
        "cxl2-x16",
        "ualink-200g",
        "optics-pluggable-1.6t",
        "optics-cpo-1.6t",
    ):
        assert needed in names
    assert {"hbm3", "hbm3e", "ddr5", "cxl-memory", "hbm-pim"} <= set(memories())


ACCEL_FIGURES = (
    "bf16_dense_tflops",
    "fp8_dense_tflops",
    "int8_dense_tops",
    "memory_capacity_gib",
    "memory_bandwidth_tb_s",
    "tdp_w",
    "idle_w",
)
FIGURES = {
    "gpu": ACCEL_FIGURES,
    "tpu": ACCEL_FIGURES,
    "npu": ACCEL_FIGURES,
    "dpu": ("network_gbps", "memory_capacity_gib", "tdp_w", "idle_w"),
    "cpu": ("cores", "tdp_w"),
}


def _check(name: str, item: object, figures: tuple[str, ...]) -> None:
    assert getattr(item, "source", ""), f"{name} has no source"
    unpublished = getattr(item, "not_published", ())
    for field in figures:
        value = getattr(item, field)
        if value is None:
            assert field in unpublished, f"{name}.{field} missing but not declared unpublished"
        else:
            assert field not in unpublished, f"{name}.{field} both given and declared unpublished"
            assert value > 0


def test_every_figure_is_sourced_or_declared_unpublished() -> None:
    for name, acc in accelerators().items():
        _check(name, acc, FIGURES[acc.kind])
    for name, link in interconnects().items():
        _check(name, link, ("bandwidth_gb_s", "energy_pj_per_bit"))
    for name, tier in memories().items():
        _check(name, tier, ("bandwidth_gb_s", "energy_pj_per_bit"))


def test_known_figures() -> None:
    h100 = get_accelerator("H100-SXM")
    assert h100.memory_bandwidth_tb_s == 3.35 and h100.tdp_w == 700
    assert h100.peak_flops("fp8") == pytest.approx(2 * h100.peak_flops("bf16"), rel=1e-3)
    assert get_accelerator("tpu-v5e").peak_flops("fp8") == get_accelerator("tpu-v5e").peak_flops("bf16")


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(UnknownHardwareError, match=r"known: .*h100-sxm"):
        get_accelerator("h1000")


def test_local_cpu_detected_with_labelled_power() -> None:
    cpu = local_cpu()
    assert cpu.kind == "cpu" and cpu.cores and cpu.cores >= 1
    assert cpu.tdp_w and cpu.tdp_w > 0
    assert "detected" in cpu.source and ("catalog" in cpu.source or "estimated" in cpu.source)


def test_hw_layers_do_not_import_torch() -> None:
    code = (
        "import sys, joulepath.hw, joulepath.hw.fleet, joulepath.hw.calibration, joulepath.workload; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
