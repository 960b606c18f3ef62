"""The HTML form of an inspect or repair report: one self-contained page, readable offline and shareable.

The page is one file: its style sheet is inline, its charts are inline SVG written by
``charts`` (no matplotlib, no script, no font, image or style sheet fetched from
anywhere), and every name in it is HTML-escaped. It opens from a mail attachment or
a laptop without a network in any browser.

inspect: the header facts, the findings grouped by code with the advice once per
code, the BN layer table, and a chart of every BN layer's stored statistics (each
channel's moving mean against 0 and moving variance against 1, their initial values,
so layers still at init, or barely moved from it, stand out). With ``--data``: what a
repair would change (the mean shift in sd and the variance ratio new/stored per
channel, the inference-vs-training gap) per layer, judged against the staleness
thresholds. repair: the same change chart with the gap before and after, over the
layers in network order, and the per-layer table.

The page is written to a temporary name, read back and checked (the same bytes, one
``<svg>`` per chart, no external reference), then renamed into place.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from html import escape
from html.parser import HTMLParser

import numpy as np

from ckptdoctor.analysis.staleness import ERROR_RATIO, ERROR_SHIFT, WARN_RATIO, WARN_SHIFT, stale_severity
from ckptdoctor.constants import VERSION
from ckptdoctor.errors import CkptDoctorError, OutputExistsError
from ckptdoctor.reports.charts import COLOURS, LogScale, Mark, Panel, Row, SymLogScale, fmt, render_chart
from ckptdoctor.reports.findings import group_findings
from ckptdoctor.reports.results import InspectReport, RepairReport
from ckptdoctor.writers.atomic import atomic_output

__all__ = ["inspect_html", "repair_html", "write_html", "check_html"]

_CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #222;
       margin: 0 auto; padding: 16px 24px 40px; max-width: 1320px; background: #fff; }
h1 { font-size: 22px; margin: 8px 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #dde2e8; }
h3 { font-size: 15px; margin: 0 0 4px; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; }
.verdict { font-size: 16px; font-weight: 600; padding: 8px 12px; border-radius: 6px; display: inline-block; }
.verdict.bad { background: #f9dcdc; color: #8e1b10; } .verdict.warn { background: #fdf2d0; color: #7a5200; }
.verdict.good { background: #dff3e4; color: #14562c; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 12px 0; }
dl.facts dt { color: #666; } dl.facts dd { margin: 0; word-break: break-all; }
nav a { margin-right: 14px; }
ul.notes { color: #444; padding-left: 20px; } ul.notes li { margin: 2px 0; }
.group { border-left: 4px solid #bbb; padding: 6px 12px; margin: 10px 0; background: #fafbfc; }
.group.error { border-color: #c0392b; } .group.warning { border-color: #d4a017; } .group.info { border-color: #3b6ea8; }
.sev { text-transform: uppercase; font-size: 11px; font-weight: 700; letter-spacing: .04em; margin-right: 6px; }
.error .sev, .st-error, .st-missing, .st-partial, .st-at-init, .st-invalid { color: #c0392b; }
.warning .sev, .st-warning, .st-stale { color: #9a6400; } .info .sev { color: #3b6ea8; } .st-ok { color: #1e8449; }
.group ul { margin: 4px 0; padding-left: 20px; } .group li { margin: 1px 0; }
.advice { margin: 4px 0 0; } .shared { margin: 2px 0; color: #333; } .meaning { color: #555; font-weight: normal; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border-bottom: 1px solid #e3e7ec; padding: 3px 10px 3px 0; text-align: left; vertical-align: top; }
th { color: #555; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 10px 0 18px; overflow-x: auto; } figcaption { color: #555; max-width: 1100px; margin-top: 4px; }
details summary { cursor: pointer; color: #3b6ea8; }
footer { margin-top: 36px; color: #777; font-size: 12px; }
@media print { nav { display: none; } figure { overflow: visible; } }
"""


def _e(value) -> str:
    return escape("" if value is None else str(value))


def _page(kind: str, subject: str, body: list[str]) -> str:
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f'<meta name="generator" content="ckptdoctor {_e(VERSION)}">',
            f"<title>ckptdoctor {kind}: {_e(subject)}</title>",
            f"<style>{_CSS}</style>",
            "</head>",
            "<body>",
            *body,
            f"<footer>Written by ckptdoctor {_e(VERSION)} on "
            f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}. This page is self-contained: "
            "no script, nothing loaded from the network.</footer>",
            "</body>",
            "</html>",
            "",
        ]
    )


def _facts(pairs) -> str:
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in pairs if v not in (None, ""))
    return f'<dl class="facts">{rows}</dl>'


def _notes(notes) -> str:
    return "" if not notes else "<ul class=notes>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"


#: A group shows this many findings (infos: ``_FOLD_INFOS``); the rest are one click away.
_FOLD, _FOLD_INFOS = 30, 5


def _own_severity(severity: str) -> str:
    return f'<span class="sev st-{_e(severity)}">{_e(severity)}</span>'


def _findings(findings) -> str:
    """The findings, one block per code: the shared words, each finding's own part, the advice said once."""
    if not findings:
        return "<p>No findings.</p>"
    out = []
    for g in group_findings(findings):
        head = (
            f'<h3><span class="sev">{_e(g.severity)}</span><code>{_e(g.code)}</code> '
            f'({len(g.items)}) <span class="meaning">{_e(g.meaning)}</span></h3>'
        )
        if len(g.items) == 1:
            body = f"<p>{_e(g.items[0].message)}</p>"
        else:
            items = [f"<li>{_own_severity(item.severity) if g.mixed else ''}{_e(item.text)}</li>" for item in g.items]
            shown = _FOLD_INFOS if g.severity == "info" else _FOLD
            listed = "<ul>" + "".join(items[:shown]) + "</ul>"
            if len(items) > shown:
                listed += (
                    f"<details><summary>… and {len(items) - shown} more</summary><ul>"
                    + "".join(items[shown:])
                    + "</ul></details>"
                )
            body = (f'<p class="shared">… {_e(g.shared)}</p>' if g.shared else "") + listed
            if g.advice:
                body += f'<p class="advice"><strong>Advice:</strong> {_e(g.advice)}</p>'
        out.append(f'<div class="group {_e(g.severity)}">{head}{body}</div>')
    return "\n".join(out)


def _natural(name: str) -> list:
    """A sort key comparing the numbers in a name as numbers: ``bn_2`` before ``bn_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _ordered(names: list[str], order) -> list[str]:
    """``names`` in ``order`` (the network's), names it lacks after, as they came."""
    rank = {name: i for i, name in enumerate(order or ())}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), names.index(n)))


def _summary_numbers(values) -> str:
    a = np.asarray(values, np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return "no finite value"
    return f"min {fmt(float(a.min()))}, median {fmt(float(np.median(a)))}, max {fmt(float(a.max()))}"


# ----------------------------------------------------------------------------- inspect


def _stored_chart(report: InspectReport, names: list[str]) -> str:
    """Each BN layer's stored moving mean (against 0) and moving variance (against 1), per channel."""
    stored = {s.layer: s for s in report.stored}
    status = {b.layer: b.status for b in report.bn_layers}
    channels = {b.layer: b.channels for b in report.bn_layers}
    means = [np.asarray(stored[n].mean) for n in names if n in stored and stored[n].mean]
    variances = [np.asarray(stored[n].variance) for n in names if n in stored and stored[n].variance]
    mean_scale = SymLogScale(np.concatenate(means) if means else [])
    var_scale = LogScale(np.concatenate(variances) if variances else [], include=(1.0,), floor=1e-8)

    def row(name: str, kind: str) -> Row:
        s = stored.get(name)
        values = None if s is None else getattr(s, kind)
        what = "moving mean" if kind == "mean" else "moving variance"
        if not values:
            return Row(note=f"{what} not stored" if status.get(name) in ("missing", "partial") else "not read")
        a = np.asarray(values, np.float64)
        finite = a[np.isfinite(a)]
        colour = COLOURS["mark"] if status.get(name) in ("ok", "stale") else COLOURS["before"]
        median = float(np.median(finite)) if finite.size else None
        marks = [] if median is None else [Mark(median, colour, "diamond", f"median {what} {fmt(median)}")]
        title = f"{name}: {channels.get(name) or a.size} channels, {what} {_summary_numbers(a)}"
        if finite.size < a.size:
            title += f", {a.size - finite.size} NaN/Inf"
        return Row(values=a, marks=marks, title=title)

    panels = [
        Panel(
            "Moving mean, per channel",
            mean_scale,
            "symmetric log scale; dashed: 0, the initial value",
            [row(n, "mean") for n in names],
            reference=0.0,
        ),
        Panel(
            "Moving variance, per channel",
            var_scale,
            "log scale; dashed: 1, the initial value",
            [row(n, "variance") for n in names],
            reference=1.0,
        ),
    ]
    judged = {layer.layer: _judged(layer)[1] for layer in report.data_check.layers} if report.data_check else {}
    rows = [(n, status.get(n, ""), judged.get(n, status.get(n, ""))) for n in names]
    return render_chart("Stored BN statistics per layer", rows, panels)


def _stat_text(values, status: str) -> str:
    if values:
        return _summary_numbers(values)
    return "not stored" if status in ("missing", "partial") else "not read"


def _bn_table(report: InspectReport, names: list[str]) -> str:
    rows = {b.layer: b for b in report.bn_layers}
    stored = {s.layer: s for s in report.stored}
    body = []
    for name in names:
        b, s = rows[name], stored.get(name)
        mean, var = (_stat_text(None if s is None else getattr(s, k), b.status) for k in ("mean", "variance"))
        body.append(
            f"<tr><td class=mono>{_e(b.layer)}</td><td class=num>{_e(b.channels)}</td>"
            f'<td class="st-{_e(b.status)}">{_e(b.status)}</td><td>{_e(mean)}</td><td>{_e(var)}</td>'
            f"<td class=mono>{_e(b.moving_mean)}<br>{_e(b.moving_variance)}</td></tr>"
        )
    return (
        "<table><thead><tr><th>layer</th><th>channels</th><th>status</th><th>stored moving mean</th>"
        "<th>stored moving variance</th><th>tensors</th></tr></thead><tbody>" + "".join(body) + "</tbody></table>"
    )


def _tensor_table(report: InspectReport) -> str:
    rows = "".join(
        f"<tr><td class=mono>{_e(t.name)}</td><td>{_e(t.dtype)}</td><td class=mono>{_e(list(t.shape))}</td>"
        f"<td class=num>{t.size}</td><td class=num>{fmt(t.min) if t.min is not None else ''}</td>"
        f"<td class=num>{fmt(t.max) if t.max is not None else ''}</td>"
        f"<td class=num>{fmt(t.mean) if t.mean is not None else ''}</td>"
        f"<td class=num>{fmt(t.std) if t.std is not None else ''}</td>"
        f"<td>{'' if t.in_graph is None else ('yes' if t.in_graph else 'NO')}</td><td>{_e(t.role)}</td></tr>"
        for t in report.tensors
    )
    listed = len(report.tensors)
    what = f"{listed} tensors" + (f" of {report.total_tensors} (--match {report.match})" if report.match else "")
    return (
        f"<details><summary>{_e(what)}</summary><table><thead><tr><th>name</th><th>dtype</th><th>shape</th>"
        "<th>size</th><th>min</th><th>max</th><th>mean</th><th>std</th><th>in graph</th><th>role</th></tr>"
        f"</thead><tbody>{rows}</tbody></table></details>"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _verdict(errors: int, warnings: int, good: str) -> str:
    if errors:
        return f'<p class="verdict bad">{_count(errors, "error")}, {_count(warnings, "warning")}: exit code 1</p>'
    if warnings:
        return f'<p class="verdict warn">{_count(warnings, "warning")}, no error: exit code 0</p>'
    return f'<p class="verdict good">{_e(good)}</p>'


def inspect_html(report: InspectReport) -> str:
    """The HTML page of an inspect report."""
    s = report.summary
    check = report.data_check
    names = [b.layer for b in report.bn_layers]
    if check is not None and check.order:
        names, order_note = _ordered(names, check.order), "in the order the network runs them"
    else:  # the network's order is known only from running it (--data)
        names = sorted(names, key=_natural)
        order_note = "by name, numbers compared as numbers; with --data, in the order the network runs them"
    body = [
        f"<h1>ckptdoctor inspect: <code>{_e(report.checkpoint)}</code></h1>",
        _verdict(s.get("errors", 0), s.get("warnings", 0), "no finding of error or warning level: exit code 0"),
        _facts(
            [
                ("checkpoint", f"<code>{_e(report.checkpoint)}</code>"),
                ("resolved", _e(report.resolved_from)),
                ("format", _e(report.format)),
                ("graph", f"<code>{_e(report.graph)}</code>" if report.graph else "(none)"),
                ("tensors", f"{report.total_tensors}, {report.total_bytes:,} bytes"),
                ("BN layers", str(len(report.bn_layers))),
                ("findings", ", ".join(_count(s.get(k + "s", 0), k) for k in ("error", "warning", "info"))),
            ]
        ),
        _notes(report.notes),
        "<nav>"
        + ('<a href="#data">Against the data</a>' if check is not None and check.layers else "")
        + ('<a href="#statistics">Stored statistics</a>' if names else "")
        + '<a href="#findings">Findings</a><a href="#bn-layers">BN layers</a><a href="#tensors">Tensors</a></nav>',
    ]
    # The charts first: which layers are off, and by how much, at a glance.
    if check is not None and check.layers:
        body += _data_section(check)
    if names:
        body += [
            '<h2 id="statistics">Stored statistics</h2>',
            f"<figure>{_stored_chart(report, names)}<figcaption>Each row is a BN layer ({_e(order_note)}); each "
            "thin tick one channel's stored value, the diamond the layer's median. A layer whose statistics never "
            "moved from their initial values sits on the dashed lines (a single tick at mean 0 and variance 1); "
            "one that barely moved (a moving average that lags the weights) hugs them. Hover a row for its "
            "numbers.</figcaption></figure>",
        ]
    body += [
        '<h2 id="findings">Findings</h2>',
        _findings(report.findings),
        f'<h2 id="bn-layers">BN layers ({len(report.bn_layers)})</h2>',
        _bn_table(report, names) if names else "<p>No BN layer.</p>",
    ]
    body += ['<h2 id="tensors">Tensors</h2>', _tensor_table(report)]
    return _page("inspect", report.checkpoint, body)


def _data_section(check: RepairReport) -> list[str]:
    """inspect --data: what the dry-run repair measured, per layer."""
    return [
        '<h2 id="data">Against the data</h2>',
        f"<p>A dry-run repair (nothing written) computed each BN layer's input moments on {check.samples} samples "
        f"of <code>{_e(check.data)}</code> (method {_e(check.method)}, batch size {check.batch_size}). Stale: a mean "
        f"shift above {WARN_SHIFT} sd or a variance ratio beyond {WARN_RATIO} (errors above {ERROR_SHIFT} sd or "
        f"{ERROR_RATIO}).</p>",
        f"<figure>{_change_chart(check, 'What a repair would change, per BN layer')}<figcaption>"
        f"{_e(_change_caption(check, dry=True))}</figcaption></figure>",
        _change_table(check),
    ]


# ----------------------------------------------------------------------------- repair


def _shifts(layer) -> np.ndarray | None:
    if layer.mean_before is None:
        return None
    sd = np.sqrt(np.maximum(np.asarray(layer.variance_after, np.float64), 1e-12))
    return np.abs(np.asarray(layer.mean_after, np.float64) - np.asarray(layer.mean_before, np.float64)) / sd


def _ratios(layer) -> np.ndarray | None:
    if layer.variance_before is None:
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(layer.variance_after, np.float64) / np.asarray(layer.variance_before, np.float64)


def _judged(layer) -> tuple[str, str]:
    """A layer's status judged on the data, and its colour: ``stale`` (warning or error level) or as stored."""
    if layer.status_before != "ok":
        return layer.status_before, layer.status_before
    severity = stale_severity(layer)
    return ("stale", severity) if severity else ("ok", "ok")


def _marked_row(values, note: str, title: str, extremes: list) -> Row:
    """One layer's per-channel values with their finite extremes marked (``extremes``: ``(np.min or np.max,
    label template)``); a row saying ``note`` when there are none."""
    if values is None:
        return Row(note=note)
    finite = values[np.isfinite(values)]
    marks = (
        []
        if finite.size == 0
        else [
            Mark(float(pick(finite)), COLOURS["mark"], "diamond", label.format(fmt(float(pick(finite)))))
            for pick, label in extremes
        ]
    )
    return Row(values=values, marks=marks, title=f"{title} {_summary_numbers(values)}")


def _change_chart(report: RepairReport, title: str) -> str:
    """Per layer in network order: the mean shift (sd) and variance ratio per channel, the gap before and after."""
    by_name = {layer.layer: layer for layer in report.layers}
    names = _ordered(list(by_name), report.order)
    layers = [by_name[n] for n in names]
    shifts = {n: _shifts(by_name[n]) for n in names}
    ratios = {n: _ratios(by_name[n]) for n in names}
    all_shifts = np.concatenate([a for a in shifts.values() if a is not None] or [np.zeros(0)])
    all_ratios = np.concatenate([a for a in ratios.values() if a is not None] or [np.zeros(0)])
    gaps = [g for layer in layers for g in (layer.gap_before, layer.gap_after) if g is not None]
    shift_scale = LogScale(all_shifts, include=(WARN_SHIFT, ERROR_SHIFT), floor=1e-4, zero=True)
    ratio_scale = LogScale(all_ratios, include=(1 / ERROR_RATIO, ERROR_RATIO), floor=1e-6)
    gap_scale = LogScale(gaps, include=(), floor=1e-9, zero=True)
    shift_rows, ratio_rows, gap_rows = [], [], []
    for layer in layers:
        n = layer.layer
        s, r = shifts[n], ratios[n]
        shift_rows.append(
            _marked_row(s, "no stored mean", f"{n}: mean shift per channel (sd)", [(np.max, "largest shift {} sd")])
        )
        ratio_rows.append(
            _marked_row(
                r,
                "no stored variance",
                f"{n}: variance ratio new/stored",
                [(np.min, "smallest ratio {}"), (np.max, "largest ratio {}")],
            )
        )
        gap_rows.append(_gap_row(layer))
    panels = [
        Panel(
            "Mean shift, per channel (sd)",
            shift_scale,
            "|new − stored mean| / new sd, log scale",
            shift_rows,
            zones=[(WARN_SHIFT, ERROR_SHIFT, "warning"), (ERROR_SHIFT, 10.0**shift_scale.hi, "error")],
        ),
        Panel(
            "Variance ratio new / stored, per channel",
            ratio_scale,
            "log scale; dashed: 1 (unchanged)",
            ratio_rows,
            reference=1.0,
            zones=[
                (1 / ERROR_RATIO, 1 / WARN_RATIO, "warning"),
                (WARN_RATIO, ERROR_RATIO, "warning"),
                (10.0**ratio_scale.lo, 1 / ERROR_RATIO, "error"),
                (ERROR_RATIO, 10.0**ratio_scale.hi, "error"),
            ],
        ),
        Panel(
            "Inference-vs-training gap of the layer",
            gap_scale,
            "largest |inference − training output|, first batch, log scale",
            gap_rows,
        ),
    ]
    return render_chart(title, [(n, *_judged(by_name[n])) for n in names], panels)


def _gap_row(layer) -> Row:
    b, a = layer.gap_before, layer.gap_after
    if b is None and a is None:
        return Row(note="not measured (no training mode)")
    marks = []
    if b is not None:
        marks.append(Mark(b, COLOURS["before"], "ring", f"before: {fmt(b)}"))
    if a is not None:
        marks.append(Mark(a, COLOURS["after"], "circle", f"after: {fmt(a)}"))
    segment = (b, a) if b is not None and a is not None else None
    return Row(marks=marks, segment=segment, title=f"{layer.layer}: gap before {fmt(b)}, after {fmt(a)}")


def _change_caption(report: RepairReport, dry: bool) -> str:
    order = "in the order the network runs them" if report.order else "in the order the model lists them"
    verb = "a repair would make" if dry else "the repair made"
    return (
        f"Each row is a BN layer, {order}. Left: how far {verb} move each channel's mean, in units of the new "
        "standard deviation (each thin tick is a channel, the diamond the largest); shaded: warning "
        f"({WARN_SHIFT}–{ERROR_SHIFT} sd) and error (above {ERROR_SHIFT} sd) zones of bn-stats-stale. Middle: each "
        f"channel's new variance over the stored one (diamonds: smallest and largest); shaded beyond {WARN_RATIO} "
        f"and {ERROR_RATIO}. Right: the largest difference between the layer's inference-mode and training-mode "
        "outputs on the first batch, with the stored statistics (red ring) and with the new ones (green dot). "
        "Hover a row for its numbers."
    )


def _change_table(report: RepairReport) -> str:
    by_name = {layer.layer: layer for layer in report.layers}
    body = []
    for name in _ordered(list(by_name), report.order):
        layer = by_name[name]
        ratio = f"{fmt(layer.var_ratio_min)} – {fmt(layer.var_ratio_max)}" if layer.var_ratio_min is not None else "n/a"
        status, key = _judged(layer)
        severity = stale_severity(layer) if status == "stale" else None
        body.append(
            f"<tr><td class=mono>{_e(name)}</td><td class=num>{layer.channels}</td>"
            f'<td class="st-{_e(layer.status_before)}">{_e(layer.status_before)}</td>'
            f'<td class="st-{_e(key)}">{_e(status)}{f" ({severity})" if severity else ""}</td>'
            f"<td class=num>{fmt(layer.max_mean_shift)}</td>"
            f"<td class=num>{ratio}</td><td class=num>{fmt(layer.gap_before)}</td>"
            f"<td class=num>{fmt(layer.gap_after)}</td></tr>"
        )
    return (
        "<table><thead><tr><th>layer</th><th>channels</th><th>stored statistics</th><th>judged on the data</th>"
        "<th>largest mean shift (sd)</th><th>variance ratio new/stored</th><th>gap before</th><th>gap after</th>"
        "</tr></thead><tbody>" + "".join(body) + "</tbody></table>"
    )


def _output_check(report: RepairReport) -> str:
    check = report.output_check
    if check is None:
        return "<p>The output check was not made (the notes say why).</p>"
    verdict = (
        "better"
        if check.gap_after < check.gap_before
        else ("unchanged (round-off)" if check.improved else "NOT better")
    )
    return (
        f"<p><strong>Output check:</strong> the final output's relative gap to the BN-training reference on the "
        f"first {check.samples} samples went from {fmt(check.gap_before)} to {fmt(check.gap_after)}: "
        f"<strong>{_e(verdict)}</strong>."
        + (f" Layers whose own gap grew: {_e(', '.join(check.grown))}." if check.grown else "")
        + "</p>"
    )


def _repair_notes(report: RepairReport) -> list[str]:
    held = report.held_in_inference
    notes = [report.gap_note] if report.gap_note else []
    if held:
        notes.append(f"held in inference mode while the BN layers ran in training mode: {', '.join(held)}")
    return notes + list(report.notes)


def repair_html(report: RepairReport) -> str:
    """The HTML page of a repair report."""
    if report.output:
        verdict = f'<p class="verdict good">Repaired: written to <code>{_e(report.output)}</code>, verified</p>'
    elif report.dry_run:
        verdict = '<p class="verdict warn">Dry run: nothing written</p>'
    else:
        verdict = '<p class="verdict bad">Refused: nothing written</p>'
    body = [
        f"<h1>ckptdoctor repair: <code>{_e(report.checkpoint)}</code></h1>",
        verdict,
        _facts(
            [
                ("checkpoint", f"<code>{_e(report.checkpoint)}</code>"),
                ("graph", f"<code>{_e(report.graph)}</code>"),
                ("data", f"<code>{_e(report.data)}</code>: {report.samples} samples, batch size {report.batch_size}"),
                ("method", _e(report.method)),
                ("inputs", _e(", ".join(report.inputs))),
                ("training switch", _e(report.training_flag or "(none)")),
                ("output", f"<code>{_e(report.output)}</code>" if report.output else "(nothing written)"),
                (
                    "verified",
                    f"{report.untouched} tensors bit-identical, {report.updated} statistics as computed"
                    if report.output
                    else "",
                ),
                ("backup", f"<code>{_e(report.backup)}</code>" if report.backup else ""),
                ("BN layers", str(len(report.layers))),
            ]
        ),
        _output_check(report),
        _notes(_repair_notes(report)),
    ]
    if report.findings:
        body += ["<h2>Findings</h2>", _findings(report.findings)]
    body += [
        f"<h2>BN layers ({len(report.layers)})</h2>",
        f"<figure>{_change_chart(report, 'What the repair changed, per BN layer')}<figcaption>"
        f"{_e(_change_caption(report, dry=report.dry_run))}</figcaption></figure>",
        _change_table(report),
    ]
    return _page("repair", report.checkpoint, body)


# ----------------------------------------------------------------------------- writing and checking


class _Census(HTMLParser):
    """Counts the page's ``<svg>`` elements and collects every reference to something outside it."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.svgs, self.external, self.scripts, self.in_style = 0, [], 0, False

    def handle_starttag(self, tag, attrs):
        self.svgs += tag == "svg"
        self.scripts += tag == "script"
        self.in_style = tag == "style"
        for name, value in attrs:
            v = (value or "").strip().lower()
            if name in ("src", "href", "xlink:href", "srcset", "data", "action") and not v.startswith("#"):
                self.external.append(f"<{tag} {name}={value!r}>")
            if name == "style" and "url(" in v:
                self.external.append(f"<{tag} style=...url(...)>")

    def handle_endtag(self, tag):
        self.in_style = False

    def handle_data(self, data):
        if self.in_style and ("@import" in data or "url(" in data):
            self.external.append("<style> @import or url()")


def check_html(text: str) -> int:
    """Check that a page is self-contained (no script, no reference outside the page); returns its ``<svg>`` count.

    Raises:
        CkptDoctorError: the page references something outside itself.
    """
    census = _Census()
    census.feed(text)
    census.close()
    if census.external or census.scripts:
        raise CkptDoctorError(
            f"the HTML report is not self-contained ({(census.external or ['a script'])[0]}); nothing was kept"
        )
    return census.svgs


def _expected_charts(report) -> int:
    if isinstance(report, RepairReport):
        return 1
    charts = 1 if report.bn_layers else 0
    return charts + (1 if report.data_check is not None and report.data_check.layers else 0)


def write_html(report, path: str, force: bool = False) -> str:
    """Write the HTML page of an inspect or repair report, atomically (refused if it exists, unless ``force``).

    Returns:
        The path written.
    """
    if os.path.exists(path) and not force:
        raise OutputExistsError(f"{path} exists: pass --force to overwrite it, or choose another --report path")
    text = repair_html(report) if isinstance(report, RepairReport) else inspect_html(report)
    data = text.encode("utf-8")
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
        with open(tmp, "rb") as f:
            back = f.read()
        if back != data:
            raise CkptDoctorError(f"the report written to {tmp} does not read back equal; nothing was kept")
        svgs = check_html(back.decode("utf-8"))
        if svgs != _expected_charts(report):
            raise CkptDoctorError(
                f"the HTML report written to {tmp} has {svgs} charts, expected {_expected_charts(report)}; "
                "nothing was kept"
            )
    return path
