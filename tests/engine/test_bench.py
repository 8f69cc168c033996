"""The shipped benchmarks run end to end on a tiny model (their numbers are not asserted: speed
targets live in the benchmarks, not in tests)."""

from pathlib import Path

from joulepath.bench import batch, decode


def test_decode_benchmark_runs_and_matches_transformers() -> None:
    result = decode.run("dummy:tiny-llama", n_tokens=8)
    assert result["tokens_per_s"] > 0 and result["roofline_fraction"] > 0
    assert result["outputs_identical_to_transformers"] is True


def test_batch_benchmark_writes_its_fields(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("JOULEPATH_BENCH_DIR", str(tmp_path))
    assert batch.main(["--quick", "--model", "dummy:tiny-llama"]) == 0
    import json

    doc = json.loads((tmp_path / "batch.json").read_text())
    assert doc["throughput_ratio"] > 0 and doc["p99_tpot_ratio"] > 0 and doc["n_requests"] == 8
    assert doc["one_at_a_time"]["energy_provenance"].startswith(("measured", "estimated"))  # J/token is labelled


def test_detokenize_benchmark_compares_both_methods_on_the_same_text(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from joulepath.bench import detokenize

    monkeypatch.setenv("JOULEPATH_BENCH_DIR", str(tmp_path))
    assert detokenize.main(["--quick"]) == 0
    import json

    doc = json.loads((tmp_path / "detokenize.json").read_text())
    assert doc["same_text"] is True and doc["full_redecode_us_per_token"] > 0 and doc["incremental_us_per_token"] > 0
