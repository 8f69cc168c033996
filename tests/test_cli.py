import json
from pathlib import Path

from typer.testing import CliRunner

from joulepath.cli import app

runner = CliRunner(env={"COLUMNS": "200"})


def test_help_lists_every_command() -> None:
    out = runner.invoke(app, ["--help"]).output
    for cmd in ("run", "hw", "trace", "scenario", "meter"):
        assert cmd in out


def test_hw_list_show_and_json() -> None:
    assert "h100-sxm" in runner.invoke(app, ["hw", "list"]).output
    data = json.loads(runner.invoke(app, ["hw", "list", "--json"]).output)
    assert any(a["name"] == "b200" for a in data["accelerators"])
    shown = runner.invoke(app, ["hw", "show", "tpu-v5e"]).output
    assert "not published" in shown and "Google Cloud" in shown
    bad = runner.invoke(app, ["hw", "show", "h1000"])
    assert bad.exit_code == 2 and "known:" in bad.output


def test_meter_reports_its_backends() -> None:
    out = runner.invoke(app, ["meter", "--seconds", "0.05", "--json"])
    doc = json.loads(out.output)
    assert doc["notes"] and doc["measurement"]["provenance"]
    assert all(p.startswith(("measured", "estimated")) for p in doc["measurement"]["provenance"].values())


def test_trace_stats(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.1,10,5\n2023-11-16 18:15:47.1,20,6\n")
    out = runner.invoke(app, ["trace", "stats", str(path), "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["n_requests"] == 2
    missing = runner.invoke(app, ["trace", "stats", str(tmp_path / "x.csv")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_scenario_show_default_and_check(tmp_path: Path) -> None:
    toml = runner.invoke(app, ["scenario", "show-default"]).output
    path = tmp_path / "s.toml"
    path.write_text(toml)
    assert runner.invoke(app, ["scenario", "check", str(path)]).exit_code == 0
    path.write_text(toml.replace('accelerator = "h100-sxm"', 'accelerator = "nope"'))
    bad = runner.invoke(app, ["scenario", "check", str(path)])
    assert bad.exit_code == 2 and "fleet.accelerator" in bad.output and "Traceback" not in bad.output


def test_run_default_writes_result_json_and_never_overwrites(tmp_path: Path) -> None:
    analytic = tmp_path / "analytic.toml"  # the default scenario without serving here (see test_pipeline.py)
    analytic.write_text("[serve]\nenabled = false\n")
    first = runner.invoke(app, ["run", str(analytic), "--out", str(tmp_path)])
    assert first.exit_code == 0, first.output
    assert "J/token" in first.output and "estimated" in first.output
    second = runner.invoke(app, ["run", str(analytic), "--out", str(tmp_path), "--json"])
    summary = json.loads(second.output)
    results = sorted(tmp_path.glob("*/result.json"))
    assert len(results) == 2 and summary["result_json"] in map(str, results)
    doc = json.loads(results[0].read_text())
    assert doc["schema_version"] == "1.1" and doc["local"] is None and doc["baseline"]["max_batch"] == 1
    assert doc["summary"]["wall_j_per_token"] > doc["summary"]["device_j_per_token"] > 0
    assert [s["name"] for s in doc["waterfall"]] == [
        "device",
        "host",
        "it_overhead",
        "power_chain",
        "cooling",
        "auxiliary",
    ]
    assert 1.0 < doc["facility"]["metrics"]["pue"] < 2.0 and len(doc["facility"]["daily_means"]["it_power_w"]) == 365
    assert all(s["provenance"] for s in doc["waterfall"])


def test_run_with_bad_scenario_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("[fleet]\ncount = -4\n")
    out = runner.invoke(app, ["run", str(path), "--out", str(tmp_path)])
    assert out.exit_code == 2 and "fleet.count = -4" in out.output
    assert not list(tmp_path.glob("*/result.json"))


def test_generate_streams_and_reports_energy(tmp_path: Path) -> None:
    out = runner.invoke(app, ["generate", "hello", "--model", "dummy:tiny-llama", "--max-tokens", "5", "--json"])
    doc = json.loads(out.output)
    assert doc["record"]["output_tokens"] <= 5 and doc["record"]["energy_provenance"]
    from joulepath.model import load_model, save_checkpoint

    folder = save_checkpoint(load_model("dummy:tiny-qwen2"), tmp_path / "ckpt")
    saved = runner.invoke(app, ["generate", "hi", "--model", str(folder), "--max-tokens", "3"])
    assert saved.exit_code == 0 and "J/token" in saved.output
    bad = runner.invoke(app, ["generate", "hi", "--model", str(tmp_path / "none")])
    assert bad.exit_code == 2 and "no config.json" in bad.output


def test_twin_alone_from_csv_and_compare(tmp_path: Path) -> None:
    csv_path = tmp_path / "it.csv"
    csv_path.write_text("t_s,it_power_w\n" + "".join(f"{i * 3600},{1e6 + 1e5 * (i % 24)}\n" for i in range(48)))
    out = runner.invoke(app, ["twin", "--it-csv", str(csv_path), "--compare", "hvdc-800v", "--json"])
    assert out.exit_code == 0, out.output
    base, variant = json.loads(out.output)
    assert variant["metrics"]["facility_energy_j"] < base["metrics"]["facility_energy_j"]
    assert base["step_s"] == 3600
    bad = runner.invoke(app, ["twin", "--compare", "igloo"])
    assert bad.exit_code == 2 and "facility preset" in bad.output
    missing = runner.invoke(app, ["twin", "--it-csv", str(tmp_path / "none.csv")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_twin_from_the_default_scenario_prints_a_table() -> None:
    out = runner.invoke(app, ["twin"])
    assert out.exit_code == 0 and "PUE" in out.output and "WUE" in out.output


def test_eval_and_train_commands(tmp_path: Path) -> None:
    out = runner.invoke(app, ["eval", "--model", "dummy:tiny-llama", "--per-cell", "1", "--json"])
    doc = json.loads(out.output)
    assert len(doc["cells"]) == 24 and 0.0 <= doc["accuracy"] <= 1.0
    bad = runner.invoke(app, ["eval", "--model", "dummy:tiny-llama", "--golden", "train"])
    assert bad.exit_code == 2 and "unknown golden split" in bad.output
    trained = runner.invoke(app, ["train", "--out", str(tmp_path / "m"), "--steps", "3", "--tokens-per-step", "256"])
    assert trained.exit_code == 0 and (tmp_path / "m" / "model.safetensors").is_file()
