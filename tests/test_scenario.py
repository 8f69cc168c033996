import tomllib
from pathlib import Path

import pytest

from joulepath.scenario import Scenario, ScenarioError, load_scenario, parse_scenario


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


def test_unknown_serve_model_is_a_clear_error() -> None:
    import pytest

    from joulepath.scenario import ScenarioError, parse_scenario

    with pytest.raises(ScenarioError, match=r"serve.model = 'gpt-9'.*jp-small, jp-large"):
        parse_scenario({"serve": {"model": "gpt-9"}})
