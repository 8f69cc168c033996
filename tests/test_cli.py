import dataclasses
import json
import re
from pathlib import Path

import pytest
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
    assert doc["schema_version"] == "1.2" and doc["local"] is None and doc["baseline"]["max_batch"] == 1
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
    short = runner.invoke(app, ["eval", "--model", "dummy:tiny-llama", "--per-cell", "1", "--json"])
    assert short.exit_code == 2 and "context is 512 tokens" in short.output  # golden lookups run to 1,207 tokens
    assert "Traceback" not in short.output
    from joulepath.model import load_model, save_checkpoint

    tiny = load_model("dummy:tiny-llama")
    folder = save_checkpoint(dataclasses.replace(tiny, config=tiny.config.replace(max_position=2048)), tmp_path / "t")
    out = runner.invoke(app, ["eval", "--model", str(folder), "--per-cell", "1", "--json"])
    doc = json.loads(out.output)
    assert len(doc["cells"]) == 24 and 0.0 <= doc["accuracy"] <= 1.0
    bad = runner.invoke(app, ["eval", "--model", "dummy:tiny-llama", "--golden", "train"])
    assert bad.exit_code == 2 and "unknown golden split" in bad.output
    trained = runner.invoke(
        app, ["train", "--out", str(tmp_path / "m"), "--steps", "3", "--tokens-per-step", "256", "--seq-len", "256"]
    )
    assert trained.exit_code == 0 and (tmp_path / "m" / "model.safetensors").is_file()


# --- inputs that must be refused, clearly and early (issue 10) ---


def _refused(args: list[str], *expected: str) -> str:
    """Run the CLI; it must exit 2 with every expected fragment and no traceback."""
    out = runner.invoke(app, args)
    assert out.exit_code == 2, out.output
    assert "Traceback" not in out.output  # an unhandled exception would exit 1, not 2
    flat = " ".join(out.output.split())
    for text in expected:
        assert text in flat, flat
    return flat


def test_generate_refuses_a_prompt_longer_than_the_context_and_caps_max_tokens() -> None:
    _refused(["generate", "word " * 200, "--model", "dummy:tiny-llama"], "is 1,000 tokens", "context is 512 tokens")
    out = runner.invoke(app, ["generate", "hi", "--model", "dummy:tiny-llama", "--max-tokens", "600"])
    assert out.exit_code == 0 and "max_tokens capped from 600 to 510" in " ".join(out.output.split())
    doc = json.loads(runner.invoke(app, ["generate", "hi", "--model", "dummy:tiny-llama", "--max-tokens", "600",
                                         "--json"]).output)  # fmt: skip
    assert doc["record"]["capped_max_tokens"] == 510 and doc["record"]["output_tokens"] <= 510


def test_scenario_check_refuses_empty_folder_non_finite_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("# nothing set\n")
    _refused(["scenario", "check", str(empty)], "the file is empty", "omit the argument to use the built-in default")
    _refused(["scenario", "check", str(tmp_path)], "is a folder")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = '../../x'\n[facility]\nsolar_mw = inf\nhorizon_days = 0\n")
    _refused(
        ["scenario", "check", str(bad)], "facility.solar_mw = inf", "facility.horizon_days = 0", "name = '../../x'"
    )
    files = tmp_path / "files.toml"
    files.write_text("[workload]\nkind = 'azure_csv'\npath = 'none.csv'\n[facility]\nweather_file = 'none.epw'\n")
    _refused(["scenario", "check", str(files)], "workload.path: trace file", "facility.weather_file: weather file")


def test_run_checks_the_output_folder_and_files_before_any_work(tmp_path: Path) -> None:
    analytic = tmp_path / "analytic.toml"
    analytic.write_text("[serve]\nenabled = false\n")
    (tmp_path / "afile").write_text("")
    _refused(["run", str(analytic), "--out", str(tmp_path / "afile")], "is a file")
    _refused(["run", str(analytic), "--out", str(tmp_path / "afile" / "sub")], "cannot write a run")
    missing = tmp_path / "missing.toml"
    missing.write_text("[workload]\nkind = 'azure_csv'\npath = 'none.csv'\n")
    _refused(["run", str(missing), "--out", str(tmp_path / "runs")], "workload.path", "does not exist")
    assert not (tmp_path / "runs").exists()


def test_an_interrupted_or_failed_run_leaves_no_run_folder(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import joulepath.report.html

    analytic = tmp_path / "analytic.toml"
    analytic.write_text("[serve]\nenabled = false\n[facility]\nhorizon_days = 7\n")  # a week: what fails is the write
    out_dir = tmp_path / "runs"

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(joulepath.report.html, "write_report", interrupt)  # after result.json was written
    out = runner.invoke(app, ["run", str(analytic), "--out", str(out_dir)])
    assert out.exit_code == 130 and "interrupted" in out.output and "Traceback" not in out.output
    assert list(out_dir.iterdir()) == []

    def disk_full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(joulepath.report.html, "write_report", disk_full)
    _refused(["run", str(analytic), "--out", str(out_dir)], "No space left on device")
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("t_s,it_power_w\n0,1e6\n3600,inf\n", ["it.csv:3: it_power_w = 'inf'", "finite number >= 0"]),
        ("t_s,it_power_w\n0,1e6\n3600,-5\n", ["it.csv:3: it_power_w = '-5'"]),
        ("t_s,it_power_w\n0,nan\n", ["it.csv:2: it_power_w = 'nan'"]),
        ("t_s,it_power_w\n0,abc\n", ["it.csv:2: it_power_w = 'abc' is not a number"]),
        ("t_s,it_power_w\n0,1e6\n3600\n", ["it.csv:3: no it_power_w value"]),
        ("t_s,it_power_w\n0,1e6,7\n", ["it.csv:2: more columns than the header"]),
        ("t_s,it_power_w\n0,0\n3600,0\n", ["0 on every row"]),  # used to crash: ZeroDivisionError
        ("t_s,it_power_w\n0,1e6\n0,1e6\n", ["it.csv:3: t_s must increase"]),
        ("t_s,it_power_w\n", ["no rows after the header"]),
    ],
)
def test_twin_refuses_bad_it_power_rows_with_file_and_line(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = tmp_path / "it.csv"
    path.write_text(text)
    _refused(["twin", "--it-csv", str(path)], *expected)


def test_trace_stats_refuses_rows_with_the_wrong_number_of_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.1,10,5,7\n")
    _refused(["trace", "stats", str(path)], "t.csv:2: 4 column(s) where the header has 3",
             "TIMESTAMP,ContextTokens,GeneratedTokens")  # fmt: skip
    _refused(["trace", "stats", str(tmp_path)], "is a folder")


@pytest.mark.parametrize(
    "args",
    [
        ["profile", "--model", "dummy:tiny-llama", "--per-cell", "-1"],  # used to profile nothing and advise
        ["profile", "--model", "dummy:tiny-llama", "--max-batch", "0"],  # used to hang
        ["eval", "--model", "dummy:tiny-llama", "--per-cell", "0"],  # used to report an empty evaluation
        ["generate", "hi", "--model", "dummy:tiny-llama", "--max-tokens", "0"],
        ["generate", "hi", "--model", "dummy:tiny-llama", "--temperature", "nan"],  # used to crash in sampling
        ["meter", "--seconds", "-1"],  # used to crash in time.sleep
    ],
)
def test_numeric_options_out_of_range_are_refused(args: list[str]) -> None:
    out = runner.invoke(app, args)
    assert out.exit_code == 2 and "Traceback" not in out.output, out.output


NARROW = CliRunner(env={"COLUMNS": "80"})  # an 80-column terminal; a pipe gets the same width from Rich


def test_hw_list_at_80_columns_shows_every_name_whole_and_plain_numbers() -> None:
    from joulepath.hw import accelerators

    out = NARROW.invoke(app, ["hw", "list"]).output
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 80
    cells = {cell.strip() for line in out.splitlines() for cell in line.split("│")}
    assert set(accelerators()) <= cells  # each name whole, in a cell of its own
    assert "1,979" in out and "e+" not in out  # the H100's FP8 TFLOP/s, not 1.98e+03
    assert "left out at this width" in out  # what did not fit is named, not cut
    wide = CliRunner(env={"COLUMNS": "160"}).invoke(app, ["hw", "list"]).output
    assert "NVIDIA" in wide and "INT8" in wide and "left out" not in wide


def _trace_csv(folder: Path) -> Path:
    path = folder / "trace.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(
        f"2023-11-16 18:15:{i:02d}.000,{100 + 37 * i},{20 + i}\n" for i in range(30)
    ))  # fmt: skip
    return path


@pytest.mark.parametrize(
    "args",
    [
        ["hw", "show", "h100-sxm"],
        ["hw", "show", "optics-cpo-1.6t"],
        ["hw", "list", "--kind", "cpu"],
        ["trace", "stats", "TRACE"],
        ["meter", "--seconds", "0.01"],
        ["twin", "--compare", "hvdc-800v"],
        ["run", "ANALYTIC", "--out", "OUT"],
    ],
)
def test_tables_fit_80_columns_without_cutting_anything(args: list[str], tmp_path: Path) -> None:
    analytic = tmp_path / "analytic.toml"
    analytic.write_text("[serve]\nenabled = false\n")
    paths = {"TRACE": str(_trace_csv(tmp_path)), "ANALYTIC": str(analytic), "OUT": str(tmp_path / "runs")}
    result = NARROW.invoke(app, [paths.get(a, a) for a in args])
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
    assert not re.search(r"\d\.\d+e[+-]\d", result.output)  # no scientific notation
