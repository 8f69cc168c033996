"""The planner's commands (registered on the app when `joulepath.cli.plan` is imported)."""

import json
from pathlib import Path

from typer.testing import CliRunner

import joulepath.cli.plan  # noqa: F401 - registers plan, sweep, sweep-query
from joulepath.cli.common import app

runner = CliRunner()
PLAN = """
[plan]
model = "llama-3.1-8b"
facility_days = 2
[plan.demand]
mean_tokens_per_s = 20000
[plan.search]
accelerators = ["h100-sxm", "b200"]
tensor_parallel = [1]
batch_caps = [64]
power_cap_fracs = [1.0]
"""


def test_plan_json_has_the_chosen_plan_its_reasons_and_the_front(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text(PLAN)
    out = runner.invoke(app, ["plan", str(f), "--json"])
    assert out.exit_code == 0, out.output
    d = json.loads(out.output)
    assert d["evaluated"] == 2 * 2 * 2 * 2  # accelerators x precisions x split x cooling
    assert d["chosen"]["accelerator"] in ("h100-sxm", "b200") and d["reasons"]
    assert d["pareto_front"] and "estimated" in d["provenance"]


def test_plan_html_shows_the_chosen_plan_front_curves_and_rejections(tmp_path: Path) -> None:
    f, page = tmp_path / "s.toml", tmp_path / "plan.html"
    f.write_text(PLAN)
    out = runner.invoke(app, ["plan", str(f), "--html", str(page), "--json"])
    assert out.exit_code == 0, out.output
    d = json.loads(out.output)
    text = page.read_text()
    assert d["html"] == str(page) and d["chosen"]["accelerator"] in text
    assert "Pareto front" in text and "knee:" in text and "Phase-split" in text and "Estimated" in text
    assert text.count("plotly-graph-div") == 1 + len(d["diminishing_returns"])  # the front and every curve
    assert not list(tmp_path.glob("*.tmp"))


def test_plan_with_a_bad_key_exits_2_with_one_line(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text(PLAN.replace("facility_days", "facility_dayz"))
    out = runner.invoke(app, ["plan", str(f)])
    assert out.exit_code == 2 and "facility_dayz" in out.output


def test_sweep_candidates_then_query_them(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text(PLAN)
    store = tmp_path / "store"
    out = runner.invoke(app, ["sweep", str(store), "--plan", str(f), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["rows"] == 16
    q = runner.invoke(app, ["sweep-query", str(store), "SELECT count(*) AS n FROM sweep WHERE feasible", "--json"])
    assert q.exit_code == 0, q.output
    assert 0 < json.loads(q.output)[0]["n"] <= 16
    refused = runner.invoke(app, ["sweep-query", str(store), "COPY sweep TO 'x.csv'"])
    assert refused.exit_code == 2
