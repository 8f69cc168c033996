import tomllib
from pathlib import Path

import pytest

from joulepath.scenario import Scenario, ScenarioError, check_scenario_files, load_scenario, parse_scenario


def test_default_round_trips_through_toml(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(Scenario().to_toml())
    assert load_scenario(path) == Scenario()
    assert load_scenario(None) == Scenario()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"fleet": {"accelerator": "h1000"}}, ["fleet.accelerator = 'h1000'", "allowed:", "h100-sxm"]),
        ({"fleet": {"count": 0}}, ["fleet.count = 0", "greater than or equal to 1"]),
        ({"fleet": {"count": 3, "tensor_parallel": 2}}, ["multiple of tensor_parallel"]),
        ({"model": {"preset": "gpt-9"}}, ["model.preset = 'gpt-9'", "llama-3.1-8b"]),
        ({"model": {"preset": None, "n_layers": 2}}, ["missing: d_model"]),
        ({"model": {"weight_dtype": "fp3"}}, ["model.weight_dtype = 'fp3'", "'fp8'"]),
        ({"workload": {"kind": "azure_csv"}}, ["needs path"]),
        ({"facility": {"preset": "igloo"}}, ["facility.preset = 'igloo'", "modern-air"]),
        ({"facility": {"climate": "lunar"}}, ["facility.climate = 'lunar'", "temperate"]),
        ({"facility": {"liquid_fraction": 1.5}}, ["facility.liquid_fraction = 1.5"]),
        ({"fleet": {"acelerator": "b200"}}, ["fleet.acelerator: unknown field"]),
        ({"fleet": {"assumed_tdp_w": 500}}, ["publishes 700 W", "power_limit_w"]),
        ({"facility": {"solar_mw": float("inf")}}, ["facility.solar_mw = inf", "finite number"]),
        ({"facility": {"storage_mwh": float("nan")}}, ["facility.storage_mwh = nan", "finite number"]),
        ({"workload": {"time_scale": float("inf")}}, ["workload.time_scale = inf", "finite number"]),
        ({"facility": {"wind_mw": -1}}, ["facility.wind_mw = -1", "greater than or equal to 0"]),
        ({"facility": {"liquid_fraction": 1.01}}, ["facility.liquid_fraction = 1.01", "less than or equal to 1"]),
        ({"facility": {"horizon_days": 0}}, ["facility.horizon_days = 0", "greater than 0"]),
        ({"workload": {"duration_s": 0}}, ["workload.duration_s = 0", "greater than 0"]),
        ({"workload": {"seed": -1}}, ["workload.seed = -1"]),  # used to fail in numpy as "expected non-negative"
        ({"model": {"n_heads": 5}}, ["n_heads (5) must be a multiple of n_kv_heads (8)"]),  # used to run
        ({"model": {"n_experts": 8, "n_experts_active": 9}}, ["n_experts_active must be in 1..8"]),
        ({"name": "../../x"}, ["name = '../../x'", "run folder"]),
        ({"name": ".hidden"}, ["name = '.hidden'"]),
        ({"name": "a/b"}, ["name = 'a/b'"]),
        ({"serve": {"prefix_cache": False, "kv_offload_disk_mib": 64}}, ["set prefix_cache = true"]),
        ({"serve": {"kv_modelled_tier": "tape"}}, ["serve.kv_modelled_tier = 'tape'", "'cxl-memory'"]),
        ({"serve": {"kv_int8": True, "kv_offload_disk_mib": 64}}, ["set kv_int8 = false"]),
        ({"serve": {"speculative": "medusa-9"}}, ["serve.speculative = 'medusa-9'", "'prompt_lookup'"]),
        ({"serve": {"draft_model": "gpt-9"}}, ["serve.draft_model = 'gpt-9'", "unknown model"]),
        ({"control": {"shifting": "on"}}, ["control.shifting = 'on'", "'off' or 'auto'"]),
        ({"control": {"deferrable_share": 1.5}}, ["control.deferrable_share = 1.5", "less than or equal to 1"]),
        ({"control": {"deferrable_share": -0.1}}, ["control.deferrable_share = -0.1", "greater than or equal to 0"]),
        ({"control": {"deadline_h": 0}}, ["control.deadline_h = 0", "greater than or equal to 1"]),
        ({"control": {"deadline_h": 2.5}}, ["control.deadline_h = 2.5", "valid integer"]),
        ({"control": {"battery_hours": -1}}, ["control.battery_hours = -1", "greater than or equal to 0"]),
        ({"control": {"battery_hours": float("inf")}}, ["control.battery_hours = inf", "finite number"]),
        ({"control": {"replan_h": 0}}, ["control.replan_h = 0", "greater than or equal to 1"]),
        ({"control": {"replan_h": 72}}, ["control.replan_h = 72", "less than or equal to 48"]),
    ],
)
def test_bad_scenarios_name_field_value_and_allowed(data: dict, expected: list[str]) -> None:  # type: ignore[type-arg]
    with pytest.raises(ScenarioError) as err:
        parse_scenario(data)
    for text in expected:
        assert text in str(err.value)


def test_custom_architecture_without_preset() -> None:
    s = parse_scenario(
        {
            "model": {
                "preset": None,
                "n_layers": 2,
                "d_model": 64,
                "n_heads": 4,
                "n_kv_heads": 2,
                "head_dim": 16,
                "d_ff": 128,
                "vocab_size": 100,
            }
        }
    )
    assert s.model.spec().n_layers == 2


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="does not exist"):
        load_scenario(tmp_path / "none.toml")
    with pytest.raises(ScenarioError, match="is a folder; give a scenario TOML file"):
        load_scenario(tmp_path)
    for text in ("", "\n# only a comment\n"):
        (tmp_path / "empty.toml").write_text(text)
        with pytest.raises(ScenarioError, match=r"the file is empty.*omit the argument to use the built-in default"):
            load_scenario(tmp_path / "empty.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[fleet\ncount = 2")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(bad)


def test_relative_trace_path_resolves_against_the_scenario(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "s.toml"
    path.write_text('[workload]\nkind = "azure_csv"\npath = "trace.csv"\n')
    assert load_scenario(path).workload.path == tmp_path / "sub" / "trace.csv"
    assert tomllib.loads(Scenario().to_toml())["fleet"]["accelerator"] == "h100-sxm"


def test_scenario_knows_the_zoo_by_name_without_importing_torch() -> None:
    from joulepath.model.checkpoint import ZOO_MODELS
    from joulepath.scenario import ZOO_MODELS as SCENARIO_ZOO

    assert SCENARIO_ZOO == ZOO_MODELS


def test_scenario_knows_the_drafter_files_and_the_zoo_folders() -> None:
    from joulepath.model.checkpoint import zoo_path
    from joulepath.model.eagle import EAGLE_FILE
    from joulepath.model.mtp import HEADS_FILE
    from joulepath.scenario import DRAFTER_FILES, model_folder

    assert DRAFTER_FILES == {"mtp": HEADS_FILE, "eagle": EAGLE_FILE}
    assert model_folder("jp-large") == zoo_path("jp-large") and model_folder("dummy:tiny-llama") is None


def test_a_drafter_the_served_model_does_not_ship_is_refused_up_front(tmp_path: Path) -> None:
    import pytest

    from joulepath.scenario import ScenarioError, parse_scenario

    with pytest.raises(ScenarioError, match=r"ships no eagle_draft\.safetensors"):
        parse_scenario({"serve": {"model": str(tmp_path), "speculative": "eagle"}})
    with pytest.raises(ScenarioError, match=r"ships no mtp_heads\.safetensors"):
        parse_scenario({"serve": {"model": "dummy:tiny-llama", "speculative": "mtp"}})
    assert parse_scenario({"serve": {"model": "jp-large", "speculative": "mtp"}}).serve.speculative == "mtp"


def test_attention_setting_is_checked_against_the_int8_kv_cache() -> None:
    import pytest

    from joulepath.scenario import ScenarioError, parse_scenario

    assert parse_scenario({}).serve.attention == "auto"
    assert parse_scenario({"serve": {"attention": "row_invariant"}}).serve.attention == "row_invariant"
    with pytest.raises(ScenarioError, match="row_invariant reads a full-precision KV cache: set kv_int8 = false"):
        parse_scenario({"serve": {"attention": "row_invariant", "kv_int8": True}})
    with pytest.raises(ScenarioError, match="attention"):
        parse_scenario({"serve": {"attention": "flash"}})


def test_unknown_serve_model_is_a_clear_error() -> None:
    import pytest

    from joulepath.scenario import ScenarioError, parse_scenario

    with pytest.raises(ScenarioError, match=r"serve.model = 'gpt-9'.*jp-small, jp-large"):
        parse_scenario({"serve": {"model": "gpt-9"}})


def test_safe_names_are_kept() -> None:
    assert parse_scenario({"name": "llama-8b_v2.1"}).name == "llama-8b_v2.1"


def test_check_files_reads_every_file_the_scenario_names(tmp_path: Path) -> None:
    check_scenario_files(Scenario())  # the default names no file
    path = tmp_path / "s.toml"
    path.write_text(
        "[workload]\nkind = 'azure_csv'\npath = 'trace.csv'\n"
        "[facility]\nweather_file = 'site.epw'\ngrid_file = 'grid.csv'\n"
    )
    scenario = load_scenario(path)  # loading does not read them
    with pytest.raises(ScenarioError) as err:
        check_scenario_files(scenario)
    for field in ("workload.path: trace file", "facility.weather_file: weather file", "facility.grid_file: grid file"):
        assert field in str(err.value)
    (tmp_path / "trace.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,1\n")
    (tmp_path / "site.epw").write_text("")  # used to raise IndexError
    (tmp_path / "grid.csv").mkdir()
    with pytest.raises(ScenarioError) as err:
        check_scenario_files(scenario)
    for text in ("trace.csv:2: 2 column(s)", "site.epw: not an EPW file", "grid.csv is a folder"):
        assert text in str(err.value)


def test_offload_defaults_go_unused_without_the_prefix_cache() -> None:
    assert parse_scenario({"serve": {"prefix_cache": False}}).serve.kv_offload_disk_mib == 256


def test_shifting_defaults_and_the_deferrable_share_from_the_workload() -> None:
    c = Scenario().control
    assert (c.shifting, c.deadline_h, c.battery_hours, c.replan_h) == ("off", 24, 4.0, 24)
    derived = parse_scenario({"workload": {"interactive_fraction": 0.7}})
    assert derived.control.shift_deferrable_share(derived.workload) == pytest.approx(0.3)
    given = parse_scenario({"workload": {"interactive_fraction": 0.7}, "control": {"deferrable_share": 0.25}})
    assert given.control.shift_deferrable_share(given.workload) == 0.25
    off = parse_scenario({"control": {"shifting": "off", "battery_hours": 0}})
    assert off.control.shifting == "off" and off.control.battery_hours == 0
