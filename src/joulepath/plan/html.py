"""A plan as one self-contained HTML page (`joulepath plan --html PATH`): the chosen plan and its reasons,
the Pareto front among every feasible candidate, the diminishing-returns curves with their knees, the
phase-split finding and why the rest were rejected. Every number is an estimate (hardware model and
facility twin), and the page says so."""

from __future__ import annotations

import html
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from joulepath.plan.curves import Curve
from joulepath.plan.search import Plan, rejections

CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
    ".note{color:#555;font-size:90%}"
)


def pareto_figure(p: Plan) -> go.Figure:
    """Cost per million tokens against wall energy per token: every feasible candidate, the front, the pick."""
    feasible = [e for e in p.evaluations if e.feasible]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[e.cost_usd_per_mtok for e in feasible],
            y=[e.wall_j_per_token for e in feasible],
            mode="markers",
            name="feasible candidates",
            marker=dict(size=5, color="#bbb"),
            text=[e.candidate.label for e in feasible],
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[e.cost_usd_per_mtok for e in p.front],
            y=[e.wall_j_per_token for e in p.front],
            mode="markers",
            name="Pareto front (cost, wall J, carbon, SLO headroom)",
            marker=dict(size=8, color="#1f77b4"),
            text=[e.candidate.label for e in p.front],
        )
    )
    if p.chosen is not None:
        c = p.chosen
        star = dict(size=14, symbol="star", color="#d62728")
        fig.add_trace(
            go.Scatter(x=[c.cost_usd_per_mtok], y=[c.wall_j_per_token], mode="markers", name="chosen", marker=star)
        )
    fig.update_layout(
        xaxis_title="USD per million output tokens (estimated)",
        yaxis_title="J per token at the wall (estimated)",
        xaxis_type="log",
        yaxis_type="log",
        height=480,
    )
    return fig


def curve_figure(curve: Curve) -> go.Figure:
    """Tokens/s and tokens per wall-joule as accelerators (or megawatts) are added; the knee marked."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=curve.x, y=curve.tokens_per_s, name="tokens/s served", mode="lines+markers"))
    fig.add_trace(
        go.Scatter(x=curve.x, y=curve.tokens_per_wall_j, name="tokens per wall-joule", yaxis="y2", mode="lines+markers")
    )
    fig.add_vline(x=curve.knee_x, line_dash="dash", annotation_text=f"knee: {curve.knee_x:.3g}")
    fig.update_layout(
        xaxis_title=curve.x_label,
        yaxis_title="tokens/s (mean over the day)",
        height=380,
        yaxis2=dict(overlaying="y", side="right", title="tokens per wall-joule"),
    )
    return fig


def _chosen_table(p: Plan) -> str:
    if p.chosen is None:
        return "<p><b>No feasible plan.</b> " + " ".join(html.escape(r) for r in p.reasons) + "</p>"
    c = p.chosen
    rows = [
        ("design", c.candidate.label),
        ("accelerators", f"{c.n_devices} ({c.n_prefill_devices} for prefill)"),
        ("USD per million tokens", f"{c.cost_usd_per_mtok:.3f}"),
        ("J per token at the wall", f"{c.wall_j_per_token:.3f}"),
        ("mg CO2 per token", f"{c.carbon_g_per_token * 1e3:.3f}"),
        ("p99 TTFT / TPOT", f"{c.ttft_p99_s:.3g} s / {1e3 * c.tpot_p99_s:.3g} ms"),
        ("SLO headroom", f"{100 * c.slo_headroom_frac:.0f} %"),
        ("PUE", f"{c.pue:.3f}"),
        ("design facility power", f"{c.design_facility_mw:.3g} MW in {c.racks} racks ({c.rack_form})"),
        ("capital cost", f"{c.capex_usd / 1e6:.3g} M USD"),
    ]
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in p.reasons)
    return f"<table>{body}</table><ul>{reasons}</ul>"


def render_plan(p: Plan) -> str:
    """The whole page."""
    inp, s = p.inputs, p.split
    rejected = "".join(f"<tr><td>{html.escape(r)}</td><td>{n}</td></tr>" for r, n in rejections(p.evaluations).items())
    figures = [pareto_figure(p), *(curve_figure(c) for c in p.curves)]
    plots = "".join(f.to_html(full_html=False, include_plotlyjs=False) for f in figures)
    split = (
        f"Phase-split designs were cheaper in {s.split_cheaper} of {s.pairs} pairs where both met the SLOs "
        f"(median cost ratio split / co-located {s.median_cost_ratio:.2f}); {s.split_only_feasible} designs "
        f"met them only when split; the cheapest split design costs {s.best_split_vs_best_colocated:.2f}x "
        "the cheapest co-located one."
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>joulepath plan: {html.escape(inp.model.name)}</title>"
        f"<style>{CSS}</style><script>{get_plotlyjs()}</script></head><body>"
        f"<h1>joulepath plan: {html.escape(inp.model.name)}</h1>"
        f"<p class='note'>Estimated: joulepath.hw roofline model (H100-calibrated) and the facility twin; prices "
        f"from plan/data/prices.toml ({html.escape(inp.prices.table_date)}); demand: {html.escape(inp.demand.source)}, "
        f"peak {inp.demand.peak_tokens_per_s:,.0f} tokens/s. {len(p.evaluations)} candidates, "
        f"{sum(e.feasible for e in p.evaluations)} feasible.</p>"
        f"<h2>Chosen plan</h2>{_chosen_table(p)}<h2>Pareto front and diminishing returns</h2>{plots}"
        f"<h2>Phase-split serving</h2><p>{html.escape(split)}</p>"
        f"<h2>Rejected candidates</h2><table><tr><th>reason</th><th>candidates</th></tr>{rejected}</table>"
        "</body></html>"
    )


def write_plan_html(p: Plan, path: Path) -> Path:
    """Write the page atomically (a temporary file renamed into place)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(render_plan(p), encoding="utf-8")
    tmp.replace(path)
    return path
