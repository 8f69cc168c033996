"""`report.html`: one self-contained page (Plotly bundled inline, opens offline) that says where the
joules went, from token to wall, for the baseline and the optimized configuration.

Order: a plain-language summary, the configurations side by side, the energy waterfalls, the hot-path
ranking with its advice, latency and throughput distributions, and the facility time series. Every
figure and row says whether its numbers are measured, estimated or assumed, and that tag is read from
the number's own provenance label (`joulepath.meter.provenance_kind`), never written in a template:
an energy figure is tagged measured only when the meter measured it. Each tag names what it labels
(`data-of="energy"`), so a test can check every energy tag.
"""

from __future__ import annotations

import html
import itertools
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from joulepath.meter import TIME_PROVENANCE, weakest_kind
from joulepath.report.wording import (
    NO_DIFFERENCE,
    RATIO_WORDS,
    gain_text,
    ratio_phrase,
    served_in_words,
    spread_range,
)
from joulepath.results import (
    EndpointRun,
    KVOffloadUse,
    LocalComparison,
    LocalRun,
    PowerCapChoice,
    RatioSpread,
    RunResult,
    ShiftChoice,
)

COLOURS = {"baseline": "#9aa5b1", "optimized": "#1f77b4"}
STATUS_SCRIPT = """<script>
window.__errors = [];
window.addEventListener('error', e => { window.__errors.push(String(e.message)); });
window.addEventListener('load', () => {
  const n = document.querySelectorAll('.js-plotly-plot .main-svg').length;
  const s = document.getElementById('js-status');
  s.dataset.plots = n;
  s.textContent = window.__errors.length ? 'script errors: ' + window.__errors.join('; ') : 'ok: ' + n + ' plot layers';
});
</script>"""
CSS = """body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;color:#1d2733;padding:0 1em}
h1{margin-bottom:.2em} .lead{font-size:1.15em;line-height:1.5;background:#f3f6f9;padding:1em;border-radius:8px}
table{border-collapse:collapse;margin:1em 0;width:100%}
td,th{border-bottom:1px solid #dde3ea;padding:.35em .6em;text-align:right}
td:first-child,th:first-child{text-align:left} .tag{font-size:.75em;padding:.1em .4em;border-radius:4px;color:#fff}
.measured{background:#2a9d8f} .estimated{background:#e76f51} .assumed{background:#8d6a9f}
.synthetic{background:#b08900} .replay,.unknown{background:#6c757d} .note{color:#5b6b7b;font-size:.9em}
#js-status{color:#5b6b7b;font-size:.8em}"""


def _tag(what: str, *labels: str) -> str:
    """A tag for `what` (e.g. "energy", "time"), its kind read from the numbers' provenance labels (the
    weakest of them); the full labels show on hover."""
    kind = weakest_kind(*labels)
    title = html.escape("; ".join(labels), quote=True)
    what = html.escape(what, quote=True)
    return f'<span class="tag {kind}" data-of="{what}" title="{title}">{what}: {kind}</span>'


def _fig(fig: go.Figure, title: str, note: str, tags: str) -> str:
    fig.update_layout(title=title, template="plotly_white", height=380, margin=dict(l=60, r=20, t=50, b=50))
    body = fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})
    return f'<section>{body}<p class="note">{tags} {html.escape(note)}</p></section>'


def waterfall_figure(result: RunResult) -> str:
    fig = go.Figure()
    stages_by_config = [("optimized", result.waterfall)]
    if result.baseline:
        stages_by_config.insert(0, ("baseline", result.baseline.waterfall))
    for name, wf in stages_by_config:
        served = max(result.summary.served_output_tokens if name == "optimized" else 1.0, 1e-9)
        if name == "baseline" and result.baseline:
            served = max(result.baseline.summary.served_output_tokens, 1e-9)
        labels = [s.name for s in wf.stages] + ["wall"]
        values = [s.energy_j / served for s in wf.stages] + [wf.wall_j / served]
        fig.add_trace(
            go.Waterfall(
                name=name,
                x=labels,
                y=values,
                measure=["relative"] * len(wf.stages) + ["total"],
                increasing=dict(marker=dict(color=COLOURS[name])),
                totals=dict(marker=dict(color="#264653" if name == "optimized" else "#6c757d")),
            )
        )
    fig.update_layout(waterfallgroupgap=0.3, yaxis_title="J per served output token")
    waterfalls = [wf for _, wf in stages_by_config]
    facility = [s.provenance for wf in waterfalls for s in wf.stages if s.name not in ("device", "host")]
    tags = " ".join(
        (
            _tag("device energy", *(wf.stage("device").provenance for wf in waterfalls)),
            _tag("host energy", *(wf.stage("host").provenance for wf in waterfalls)),
            _tag("facility energy", *facility),
        )
    )
    return _fig(
        fig,
        "Energy per token from device to wall (fleet projection)",
        f"device energy from the hardware model for {result.scenario.model.preset or 'the scenario model'} on "
        f"{result.scenario.fleet.count} x {result.scenario.fleet.accelerator}; host assumed; power chain and "
        "cooling from the facility twin.",
        tags,
    )


def hotpath_change_table(result: RunResult) -> str:
    """How the hot-path ranking changed: the five hottest classes of brute force and of optimized."""
    local = result.local
    if local is None or local.profile is None or local.profile_brute is None:
        return ""
    before, after = local.profile_brute.classes[:5], local.profile.classes[:5]
    rows = []
    for i in range(max(len(before), len(after))):
        cells = []
        for classes in (before, after):
            c = classes[i] if i < len(classes) else None
            cells.append(
                f"<td>{html.escape(c.name)} ({c.bound})</td><td>{100 * c.share:.1f} %</td>"
                if c
                else "<td></td><td></td>"
            )
        rows.append(f"<tr><td>{i + 1}</td>{''.join(cells)}</tr>")
    head = "<tr><th>rank</th><th>brute force</th><th>share of time</th><th>optimized</th><th>share of time</th></tr>"
    tag = _tag("time", local.profile.time_provenance)
    return (
        f"<table>{head}{''.join(rows)}</table><p class='note'>{tag} what was hottest before and after the levers.</p>"
    )


def hotpath_figure(result: RunResult) -> str:
    prof = result.local.profile if result.local else None
    if prof is None:
        return "<p>No hot-path profile in this run (serve.profile = false).</p>"
    classes = [c for c in prof.classes if c.share > 0.002][::-1]
    colours = {"compute-bound": "#e76f51", "memory-bound": "#2a9d8f", "host": "#8d99ae"}
    fig = go.Figure(
        go.Bar(
            x=[100 * c.share for c in classes],
            y=[c.name for c in classes],
            orientation="h",
            marker_color=[colours[c.bound] for c in classes],
            text=[c.bound for c in classes],
            hovertemplate="%{y}: %{x:.1f} % of time<br>%{text}<extra></extra>",
        )
    )
    fig.update_layout(xaxis_title="% of measured time (and energy)", height=max(300, 26 * len(classes) + 80))
    advice = "".join(f"<li>{html.escape(a.line())}</li>" for a in prof.advice) or "<li>nothing above 5 %</li>"
    note = (
        f"time measured by named scopes on {prof.limits.device} ({100 * prof.attributed_fraction:.1f} % attributed, "
        f"profiler overhead {100 * prof.overhead_fraction:+.1f} %); energy split by time share (estimated); "
        "roofline class from analytic FLOPs/bytes against measured device limits (estimated)."
    )
    tags = " ".join(
        (
            _tag("time", prof.time_provenance),
            _tag("energy", prof.energy_provenance, prof.energy_split_provenance),
            _tag("roofline class", prof.roofline_provenance),
        )
    )
    title = f"Hot paths of the optimized configuration serving {result.local.model if result.local else ''}"
    return _fig(fig, title, note, tags) + (f"<h3>What would cut it</h3><ul>{advice}</ul>")


def latency_figure(result: RunResult) -> str:
    local = result.local
    if local is None:
        return "<p>No requests were served on this machine (serve.enabled = false).</p>"
    fig = go.Figure()
    for run in (local.baseline, local.optimized):
        for field, dash in (("ttft_s", "TTFT"), ("tpot_s", "TPOT")):
            values = [1e3 * getattr(r.record, field) for r in run.requests]
            fig.add_trace(
                go.Box(x=values, name=f"{run.name} {dash}", marker_color=COLOURS[run.name], boxpoints="outliers")
            )
    fig.update_layout(xaxis_title="milliseconds", xaxis_type="log", showlegend=False)
    throughput = go.Figure(
        go.Bar(
            x=[run.name for run in (local.baseline, local.optimized)],
            y=[run.tokens_per_s for run in (local.baseline, local.optimized)],
            marker_color=[COLOURS["baseline"], COLOURS["optimized"]],
            text=[f"{run.j_per_token:.3g} J/token" for run in (local.baseline, local.optimized)],
        )
    )
    throughput.update_layout(yaxis_title="output tokens/s")
    energy = _tag("energy", local.baseline.energy_provenance, local.optimized.energy_provenance)
    return _fig(
        fig,
        "Latency per request on this machine",
        f"time to first token and per output token ({_median_note(local)}).",
        _tag("time", TIME_PROVENANCE),
    ) + _fig(
        throughput,
        "Throughput on this machine",
        f"{_median_note(local)}; energy per token: {local.optimized.energy_provenance}",
        f"{_tag('time', TIME_PROVENANCE)} {energy}",
    )


def _median_note(local: LocalComparison) -> str:
    return f"each configuration's median repetition of {local.repeats}, served interleaved"


def facility_figure(result: RunResult) -> str:
    twin = result.facility
    s, dt = twin.series, twin.clock.dt_s
    per_day = max(1, round(86400 / dt))
    n_days = max(1, twin.clock.n_steps // per_day)

    def daily(x: np.ndarray) -> np.ndarray:
        return x[: n_days * per_day].reshape(n_days, -1).mean(axis=1) if len(x) >= per_day else x

    days = np.arange(len(daily(s["it_power_w"])))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=days, y=daily(s["it_power_w"]) / 1e3, name="IT power kW"))
    fig.add_trace(go.Scatter(x=days, y=daily(s["cooling_power_w"]) / 1e3, name="cooling power kW"))
    if result.control is not None and result.control.cooling_w_fixed_daily:
        fixed = np.asarray(result.control.cooling_w_fixed_daily[: len(days)]) / 1e3
        fig.add_trace(go.Scatter(x=days[: len(fixed)], y=fixed, name="cooling kW at fixed setpoints",
                                 line=dict(dash="dash")))  # fmt: skip
    fig.add_trace(go.Scatter(x=days, y=daily(s["t_outdoor_c"]), name="outdoor °C", yaxis="y2"))
    pue = daily(s["facility_power_w"]) / np.maximum(daily(s["it_power_w"]), 1e-9)
    fig.add_trace(go.Scatter(x=days, y=pue * 10, name="PUE x 10", yaxis="y2", line=dict(dash="dot")))
    fig.add_trace(
        go.Scatter(x=days, y=daily(s["carbon_intensity_g_per_kwh"]) / 10, name="grid gCO2/kWh / 10", yaxis="y2")
    )
    fig.update_layout(
        xaxis_title="day of the facility horizon (daily means)",
        yaxis_title="kW",
        yaxis2=dict(overlaying="y", side="right", title="°C, PUE x 10, gCO2/kWh / 10"),
        legend=dict(orientation="h", y=-0.25),
    )
    return _fig(
        fig,
        f"Facility: {twin.config.name}, {result.scenario.facility.climate} climate, grid {twin.grid_source}",
        f"facility twin ({twin.weather_source}); the fleet's board-power series over the horizon "
        f"(load shape: {result.scenario.facility.load_shape}).",
        " ".join(
            (
                _tag("facility energy", twin.metrics.provenance),
                _tag("weather", twin.weather_source),
                _tag("grid carbon", twin.grid_source),
            )
        ),
    )


def config_table(result: RunResult) -> str:
    """Baseline vs optimized, one row per number, each tagged from its provenance label."""
    rows = _local_rows(result.local) if result.local else _endpoint_rows(result.endpoint) if result.endpoint else []
    if result.baseline:
        b, o = result.baseline.summary, result.summary
        fleet = _tag("energy", b.provenance, o.provenance)
        pool = result.projection.small_tier
        if pool is not None:  # tiered routing in the fleet: how much of the load never needed the big model
            share = pool.output_tokens / max(result.projection.total_served_tokens, 1e-9)
            units = f"{pool.units} of {result.projection.n_units} units of {pool.accelerator} ({pool.kind})"
            text = f"{share:.0%} of output tokens on {pool.model}, {units}, {pool.device_energy_j / 1e3:,.0f} kJ"
            rows.append(
                ("fleet: small tier (routed requests)", "-", text, _tag("device energy", result.projection.provenance))
            )
        rows += [
            ("fleet: wall energy per token", f"{b.wall_j_per_token:.3g} J", f"{o.wall_j_per_token:.3g} J", fleet),
            (
                "fleet: served / unserved tokens",
                f"{b.served_output_tokens:,.0f} / {b.unserved_output_tokens:,.0f}",
                f"{o.served_output_tokens:,.0f} / {o.unserved_output_tokens:,.0f}",
                _tag("tokens", b.provenance, o.provenance),
            ),
            (
                "facility PUE",
                f"{b.pue:.3f}",
                f"{o.pue:.3f}",
                _tag("facility energy", result.facility.metrics.provenance),
            ),
            (
                "carbon for the run",
                f"{b.carbon_g / 1e3:.3g} kg",
                f"{o.carbon_g / 1e3:.3g} kg",
                _tag("carbon", o.provenance, result.facility.grid_source),
            ),
        ]
    body = "".join(
        f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td><td>{html.escape(c)}</td><td>{tag}</td></tr>"
        for a, b, c, tag in rows
    )
    table = f"<table><tr><th></th><th>baseline</th><th>optimized</th><th></th></tr>{body}</table>"
    return table + (ratio_table(result.local) if result.local else "")


def _endpoint_rows(ep: EndpointRun) -> list[tuple[str, str, str, str]]:
    """A measured endpoint's numbers (the baseline column is modelled only: nothing measured there)."""
    r, time_tag, energy_tag = ep.run, _tag("time", "measured at the client"), _tag("energy", ep.run.energy_provenance)
    return [
        ("endpoint: requests answered / sent", "-", f"{len(r.requests)} / {ep.sent}", time_tag),
        ("endpoint: TTFT p50 / p99", "-", f"{1e3 * r.percentile('ttft_s', 50):.0f} / "
         f"{1e3 * r.percentile('ttft_s', 99):.0f} ms", time_tag),
        ("endpoint: TPOT p50", "-", f"{1e3 * r.percentile('tpot_s', 50):.1f} ms", time_tag),
        ("endpoint: output tokens/s", "-", f"{r.tokens_per_s:.3g}", time_tag),
        ("endpoint: energy per token", "-", f"{r.j_per_token:.3g} J", energy_tag),
    ]  # fmt: skip


def _local_rows(local: LocalComparison) -> list[tuple[str, str, str, str]]:
    """Rows for the configurations served here (each one's median repetition)."""
    b, o = local.baseline, local.optimized
    time, energy = _tag("time", TIME_PROVENANCE), _tag("energy", b.energy_provenance, o.energy_provenance)
    accuracy = _tag("accuracy", b.accuracy_provenance)
    rows = [
        (
            f"golden accuracy of the {len(local.optimized_answers)} served requests",
            f"{local.accuracy_baseline:.1%}",
            f"{local.accuracy_optimized:.1%}",
            accuracy,
        ),
        ("energy per output token (this machine)", f"{b.j_per_token:.3g} J", f"{o.j_per_token:.3g} J", energy),
        ("throughput (this machine)", f"{b.tokens_per_s:.1f} tokens/s", f"{o.tokens_per_s:.1f} tokens/s", time),
    ]
    for q, field in ((50, "ttft_s"), (99, "ttft_s"), (99, "tpot_s")):
        pb, po = b.percentile(field, q), o.percentile(field, q)
        rows.append((f"p{q} {field[:-2].upper()}", f"{1e3 * pb:.0f} ms", f"{1e3 * po:.0f} ms", time))
    return rows + _weight_rows(local) + _tier_rows(o) + _kv_rows(o.kv)


def _tier_rows(run: LocalRun) -> list[tuple[str, str, str, str]]:
    """Tiered routing: what each model tier served in the optimized configuration (measured; joules as
    the meter labelled them, shared by tokens)."""
    rows = []
    for t in run.tier_mix():
        per_correct = f"{t.joules_per_correct:.3g} J per correct answer" if t.correct else "no correct answer"
        text = (f"{t.requests} requests ({t.requests / len(run.requests):.0%}), {t.correct / t.requests:.1%} right, "
                f"{per_correct}")  # fmt: skip
        rows.append(
            (
                f"tier {t.tier} (median repetition)",
                "-",
                text,
                _tag("requests, accuracy, energy", "measured: served here", run.energy_provenance),
            )
        )
    return rows


def _weight_rows(local: LocalComparison) -> list[tuple[str, str, str, str]]:
    """The optimized model's weights and every lever's quality gate (measured on golden test examples)."""
    rows = []
    o = local.optimized
    if local.gates or o.lever:
        bpw = f" ({o.bytes_per_weight:.3g} bytes/weight)" if o.bytes_per_weight else ""
        rows.append(("weights", "as loaded", f"{o.lever or 'as loaded'}{bpw}", _tag("bytes", "measured")))
    for g in local.gates:
        lo, hi = g.lever_ci95
        verdict = "passed" if g.passed else "refused"
        text = (
            f"{verdict}: {100 * g.baseline_accuracy:.1f} % -> {100 * g.lever_accuracy:.1f} % "
            f"(95 % CI {100 * lo:.0f}-{100 * hi:.0f} %), agreement {100 * g.greedy_agreement:.0f} %, KL {g.mean_kl:.3g}"
        )
        rows.append((f"quality gate {g.lever}", "-", text, _tag("accuracy", g.provenance)))
    return rows


def _kv_rows(kv: KVOffloadUse | None) -> list[tuple[str, str, str, str]]:
    """The optimized configuration's KV pool and tiers (measured), and a modelled tier's effect (estimated)."""
    if kv is None:
        return []
    measured = _tag("KV blocks", "measured")
    restored = ", ".join(f"{t.restored_blocks} from {t.tier}" for t in kv.tiers) or "no tier configured"
    rows = [("KV blocks evicted from the pool / restored", "-", f"{kv.evicted_blocks} / {restored}", measured)]
    m = kv.modelled
    if m is not None:
        text = f"would serve {m.hit_blocks} blocks: copy {1e3 * m.copy_s:.3g} ms, {m.copy_j:.3g} J"
        text += f" vs recompute {1e3 * m.recompute_s:.3g} ms" if m.recompute_s is not None else ""
        tag = _tag("copy time and energy", m.estimate_provenance)
        rows.append((f"modelled {m.tier} KV tier", "-", text, tag))
    return rows


def ablation_figure(result: RunResult) -> str:
    """The headline waterfall: wall J per token from brute force down, one bar per lever (projected)."""
    steps = result.ablation
    fig = go.Figure(
        go.Waterfall(
            x=[s.lever for s in steps] + ["optimized"],
            y=[steps[0].wall_j_per_token]
            + [b.wall_j_per_token - a.wall_j_per_token for a, b in itertools.pairwise(steps)]
            + [steps[-1].wall_j_per_token],
            measure=["absolute"] + ["relative"] * (len(steps) - 1) + ["total"],
            decreasing=dict(marker=dict(color="#2a9d8f")),
            increasing=dict(marker=dict(color="#e76f51")),
            totals=dict(marker=dict(color="#264653")),
        )
    )
    fig.update_layout(yaxis_title="J per served output token at the wall")
    return _fig(
        fig,
        "Brute force to optimized, one lever at a time (fleet projection)",
        "each bar: the lever's change in wall energy per token, with every lever before it on; the served-here "
        "levers use the work profile measured on their own rung (table below).",
        _tag("energy", *(s.provenance for s in steps)),
    )


def tier_table(result: RunResult) -> str:
    """Tiered routing on the served requests: always-large, always-small, the router, the cascade and the
    oracle, each with its accuracy, small-tier share and joules per correct answer (issue 17)."""
    local = result.local
    if local is None or not local.tier_policies:
        return ""
    large = local.tier_policies[0]
    energy = _tag("energy", local.optimized.energy_provenance)
    rows = []
    for p in local.tier_policies:
        per_correct = f"{p.joules_per_correct:.3g}" if p.correct else "—"
        vs = f"{large.joules_per_correct / p.joules_per_correct:.2f}x" if p.correct and large.correct else "—"
        rows.append(
            f"<tr><td>{html.escape(p.policy)}</td><td>{p.accuracy:.1%}</td><td>{p.small_tier_share:.0%}</td>"
            f"<td>{per_correct}</td><td>{vs}</td><td>{html.escape(p.how)}</td></tr>"
        )
    head = (
        "<tr><th>policy</th><th>golden accuracy</th><th>small-tier share</th><th>J per correct answer</th>"
        "<th>vs always-large</th><th>how</th></tr>"
    )
    accuracy = _tag("accuracy", "measured: each answer checked against its golden answer")
    note = (f"{energy} {accuracy} the same {len(local.optimized_answers)} served requests each; joules are the "
            "ledger's per-request shares.")  # fmt: skip
    table = f"<table>{head}{''.join(rows)}</table>"
    return f"<h3>Tiered processing on the served requests</h3>{table}<p class='note'>{note}</p>"


def ablation_table(result: RunResult) -> str:
    """The waterfall as numbers: each step's measured local figures (served rungs) and projected ones."""
    first = result.ablation[0]
    rows = []
    for step in result.ablation:
        local = ratio = acc = "—"
        if step.local is not None:
            run = step.local.median
            local = f"{1 / run.j_per_token:.3g}" if run.j_per_token else "—"
            ratio = gain_text(step.local_ratio) or "—"
            lo, hi = step.accuracy_interval or (float("nan"), float("nan"))
            acc = f"{step.local.accuracy:.0%} ({lo:.0%}–{hi:.0%})"
        vs_brute = first.wall_j_per_token / step.wall_j_per_token if step.wall_j_per_token else float("nan")
        tags = _tag("energy", step.provenance) + (
            " " + _tag("local energy", step.local.median.energy_provenance) if step.local else ""
        )
        rows.append(
            f"<tr><td>{html.escape(step.lever)}</td><td>{html.escape(step.acts_on)}</td><td>{local}</td>"
            f"<td>{html.escape(ratio)}</td><td>{html.escape(acc)}</td><td>{1 / step.wall_j_per_token:.3g}</td>"
            f"<td>{vs_brute:.2f}x</td><td>{step.carbon_g_per_token:.3g}</td><td>{tags}</td></tr>"
        )
    head = (
        "<tr><th>lever added</th><th>acts on</th><th>tokens/J here (median)</th><th>tokens/J vs previous rung, "
        "paired (min–max)</th><th>golden accuracy (95 % CI)</th><th>tokens per wall-joule</th><th>vs brute force"
        "</th><th>g CO2 per token</th><th></th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def headline_text(result: RunResult) -> str:
    """The summary's first sentence: brute force vs optimized, here and at the wall, with accuracy."""
    h = result.headline()
    if h is None:
        return ""
    parts = []
    if h.local_tokens_per_joule is not None and h.local_tokens_per_joule.values:
        r = h.local_tokens_per_joule
        spread = f"{r.low:.2f}–{r.high:.2f}x over {len(r.values)} paired repetitions"
        parts.append(
            f"<b>{r.median:.2f}x</b> more tokens per joule on this machine ({spread}) {_tag('energy', r.provenance)}"
        )
    wall = result.ablation[0].provenance
    parts.append(
        f"<b>{h.wall_tokens_per_joule_ratio:.2f}x</b> more tokens per wall-joule projected onto the fleet and "
        f"facility {_tag('energy', wall)}"
    )
    accuracy = ""
    if h.accuracy_brute is not None and h.accuracy_optimized is not None and h.accuracy_delta_pts is not None:
        ci = h.accuracy_delta_ci95_pts
        paired = f" (paired 95 % interval {ci[0]:+.1f} to {ci[1]:+.1f})" if ci else ""
        accuracy = (
            f", at golden accuracy {h.accuracy_brute:.0%} (brute force) vs {h.accuracy_optimized:.0%} (optimized), "
            f"{h.accuracy_delta_pts:+.1f} points{paired}"
        )
    levers = " → ".join(html.escape(s.lever) for s in result.ablation[1:])
    return (
        f"<b>Headline.</b> Every lever on ({levers}) against brute force: {' and '.join(parts)}{accuracy}. "
        "Here: the optimized configuration as served; at the wall: the waterfall's last step. "
        "The wall figures and everything the facility adds are estimated; the local ones are as the meter labels them."
    )


def ratio_table(local: LocalComparison) -> str:
    """Every local ratio (optimized / baseline) over the interleaved repetitions: median, min-max, and
    what it means, in words; "no significant difference measured" when the spread includes 1.0."""
    rows = []
    for spread in local.ratios():
        name = RATIO_WORDS[spread.metric][0]
        kind = "energy" if spread.metric == "j_per_token" else "time"
        verdict = NO_DIFFERENCE if spread.spread_known and spread.includes_one else ratio_phrase(spread)
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{spread.median:.2f}</td><td>{html.escape(spread_range(spread))}</td>"
            f"<td>{html.escape(verdict)}</td><td>{_tag(kind, spread.provenance)}</td></tr>"
        )
    head = (
        f"<tr><th>optimized / baseline, {local.repeats} repetitions served interleaved</th><th>median</th>"
        "<th>min–max</th><th>in words</th><th></th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def summary_text(result: RunResult) -> str:
    sc, s = result.scenario, result.summary
    parts = [headline_text(result)] if result.ablation else []
    local = result.local
    if local:
        b, o = local.baseline, local.optimized
        parts.append(
            f"Serving {served_in_words(local)} of this workload on <b>{html.escape(local.model)}</b> here, "
            f"{_energy_claim(local.ratio('j_per_token'))} "
            f"(median runs {b.j_per_token:.3g} → {o.j_per_token:.3g} J/token; "
            f"{_tag('time', TIME_PROVENANCE)} {_tag('energy', b.energy_provenance, o.energy_provenance)}), "
            f"with golden accuracy {local.accuracy_baseline:.0%} → {local.accuracy_optimized:.0%} on all of them."
        )
        if local.profile and local.profile.classes:
            hot = local.profile.classes[0]
            advice = local.profile.advice[0].line() if local.profile.advice else ""
            before = ""
            if local.profile_brute and local.profile_brute.classes:
                was = local.profile_brute.classes[0]
                before = (
                    f"Under brute force the hottest path was {html.escape(was.name)} ({100 * was.share:.0f} % of "
                    "time); "
                )
            parts.append(
                f"{before}optimized, the hottest path is <b>{html.escape(hot.name)}</b> ({100 * hot.share:.0f} % of "
                f"time, {hot.bound}). " + (f"What is left — next lever: {html.escape(advice)}." if advice else "")
            )
    if result.endpoint:
        parts.append(endpoint_text(result.endpoint))
    if result.control:
        c = result.control
        parts.append(
            f"Cooling control ({html.escape(c.controller)}) cut the optimized facility's cooling energy by "
            f"<b>{100 * c.cooling_saving_frac:.1f} %</b> and its facility energy by "
            f"{100 * c.facility_saving_frac:.1f} % against fixed setpoints on the same load, with "
            f"{c.inlet_violation_steps} steps above a 27 °C inlet "
            f"{_tag('energy', c.provenance)}."
        )
    if result.power_cap:
        parts.append(power_cap_text(result.power_cap))
    if result.shift:
        parts.append(shift_text(result.shift))
    parts.append(
        f"Projected onto {sc.fleet.count} x {html.escape(sc.fleet.accelerator)} serving a "
        f"{html.escape(sc.model.preset or 'custom')} model, a token costs {s.wall_j_per_token:.3g} J at the wall "
        f"(PUE {s.pue:.2f}, {s.carbon_g / 1e3:.3g} kg CO2 for the run) {_tag('energy', s.provenance)}."
    )
    return "<p>" + "</p><p>".join(parts) + "</p>"


def shift_text(c: ShiftChoice) -> str:
    """The summary's sentence on shifting the deferrable work and dispatching the battery."""
    co2, cost = c.co2_kg, c.cost_usd
    bound = ""
    if co2[2] is not None and cost[2] is not None:
        bound = (
            f" (perfect foresight: {100 * (1 - co2[2] / co2[0]):.1f} % and {100 * (1 - cost[2] / cost[0]):.1f} %; "
            f"the online policy gets {c.oracle_fraction:.0%} of its saving)"
        )
    return (
        f"Shifting {100 * c.deferrable_share:.0f} % of the work by up to {c.deadline_h} h with a {c.battery_hours:g} h "
        f"battery cut the optimized facility's CO2 by <b>{100 * c.co2_cut_frac:.1f} %</b> and its energy cost by "
        f"<b>{100 * c.cost_cut_frac:.1f} %</b> against running everything at once{bound}, with "
        f"{c.missed_deadlines} missed deadlines {_tag('carbon', c.provenance)}."
    )


def shift_figure(result: RunResult) -> str:
    """Daily mean grid import, run-now vs shifted, and the battery's state of charge (estimated)."""
    c = result.shift
    if c is None:
        return ""
    fig = go.Figure()
    days = np.arange(len(c.grid_w_daily[0]))
    for name, series, colour in (("run now", c.grid_w_daily[0], COLOURS["baseline"]),
                                 ("shifted + battery", c.grid_w_daily[1], COLOURS["optimized"])):  # fmt: skip
        fig.add_trace(go.Scatter(x=days, y=np.asarray(series) / 1e3, name=name, line=dict(color=colour)))
    fig.add_trace(
        go.Scatter(x=days, y=np.asarray(c.soc_wh_daily) / 1e3, name="battery state of charge (kWh)", yaxis="y2")
    )
    fig.update_layout(
        xaxis_title="day", yaxis_title="grid import, daily mean kW",
        yaxis2=dict(title="kWh", overlaying="y", side="right"),
    )  # fmt: skip
    return _fig(fig, "Shifting and storage (optimized facility)", "", _tag("energy", c.provenance))


def power_cap_text(c: PowerCapChoice) -> str:
    """The summary's sentence on the optimized fleet's power limit."""
    tag = _tag("energy", c.provenance)
    if c.cap_w >= c.tdp_w:
        return (
            f"No power cap paid within a {c.latency_bound_pct:g} % p99 TPOT bound under this reading of the "
            f"hardware model, so the optimized fleet runs at its {c.tdp_w:.0f} W limit {tag}."
        )
    return (
        f"The optimized fleet runs capped at <b>{c.cap_w:.0f} W</b> of {c.tdp_w:.0f} W: {c.j_saving_pct:.1f} % less "
        f"device energy per token for {c.p99_slowdown_pct:.1f} % slower p99 TPOT {tag}."
    )


def endpoint_text(ep: EndpointRun) -> str:
    """The summary's sentence on a measured endpoint (`joulepath bench serve`)."""
    r = ep.run
    accuracy = f", golden accuracy {r.accuracy:.0%}" if r.accuracy == r.accuracy else ""
    return (
        f"The endpoint <b>{html.escape(ep.url)}</b> ({html.escape(ep.model)}) answered {len(r.requests)} of "
        f"{ep.sent} requests ({len(ep.errors)} errors) at {r.tokens_per_s:.3g} tokens/s, TTFT p50 "
        f"{1e3 * r.percentile('ttft_s', 50):.0f} ms and p99 {1e3 * r.percentile('ttft_s', 99):.0f} ms, "
        f"{r.j_per_token:.3g} J/token{accuracy} {_tag('time', 'measured at the client')} "
        f"{_tag('energy', r.energy_provenance)}; the baseline beside it is modelled (one request at a time)."
    )


def _energy_claim(energy: RatioSpread) -> str:
    """The summary's energy comparison (HTML): `continuous batching used 1.57x less energy per token than
    one request at a time`, never a difference the repetitions' spread does not support."""
    detail = html.escape(
        f"optimized / baseline {spread_range(energy)} over {len(energy.values)} interleaved repetitions"
        if energy.spread_known
        else "one repetition: no spread measured"
    )
    if energy.spread_known and energy.includes_one:
        return (
            f"<b>{NO_DIFFERENCE}</b> in energy per token between continuous batching and one request at a time "
            f"(median: batching used {html.escape(ratio_phrase(energy))}; {detail})"
        )
    return (
        f"continuous batching used <b>{html.escape(ratio_phrase(energy))}</b> than one request at a time "
        f"(median; {detail})"
    )


def render_report(result: RunResult) -> str:
    sc = result.scenario
    sections = [
        f"<h1>joulepath run: {html.escape(sc.name)}</h1><p class='note'>{html.escape(sc.description)}</p>",
        f'<div class="lead">{summary_text(result)}</div>',
        "<h2>Baseline vs optimized</h2>",
        config_table(result),
        *(["<h2>Lever by lever</h2>", ablation_figure(result), ablation_table(result)] if result.ablation else []),
        tier_table(result),
        "<h2>Where the energy goes, device to wall</h2>",
        waterfall_figure(result),
        "<h2>Hot paths</h2>",
        hotpath_figure(result),
        hotpath_change_table(result),
        "<h2>Latency and throughput</h2>",
        latency_figure(result),
        "<h2>Facility</h2>",
        facility_figure(result),
        shift_figure(result),
        '<p id="js-status">rendering…</p>',
    ]
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>joulepath: {html.escape(sc.name)}</title>"
        f"<style>{CSS}</style>{STATUS_SCRIPT}<script>{get_plotlyjs()}</script></head>"
        f"<body>{''.join(sections)}</body></html>"
    )


def write_report(result: RunResult, run_dir: Path) -> Path:
    path = run_dir / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(render_report(result), encoding="utf-8")
    tmp.replace(path)
    return path
