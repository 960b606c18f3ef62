"""Rendering reports as text (tabulate) and JSON. Nothing here computes."""

from __future__ import annotations

import json
import math
import os

__all__ = ["render_inspect", "render_diff", "render_repair", "to_json", "human_bytes"]

_MAX_NAME = 72


def human_bytes(n: int) -> str:
    """``1536`` -> ``1.5 KiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _num(x) -> str:
    if x is None:
        return ""
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return str(x)
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _name(name: str) -> str:
    # Long names are cut in the middle so that both the scope and the leaf stay visible.
    if len(name) <= _MAX_NAME:
        return name
    half = (_MAX_NAME - 1) // 2
    return name[:half] + "…" + name[-half:]


def _tab(rows, headers) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)


def to_json(data: dict) -> str:
    """One JSON document; NaN and Inf become strings so the output stays valid JSON."""

    def clean(x):
        if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
            return str(x)
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    return json.dumps(clean(data), indent=2, ensure_ascii=False)


def _findings_table(findings) -> str:
    if not findings:
        return "no findings"
    rows = []
    infos: dict[str, list] = {}
    for f in findings:
        if f.severity == "info":
            infos.setdefault(f.code, []).append(f)
        else:
            rows.append((f.severity, f.code, f.layer or "", _name(f.tensor or ""), f.message))
    for code, group in infos.items():
        if len(group) <= 3:
            rows.extend(("info", f.code, f.layer or "", _name(f.tensor or ""), f.message) for f in group)
        else:  # many infos of one kind (optimizer slots not saved) fold into one row; JSON keeps them all
            names = ", ".join(f.tensor or "" for f in group[:4])
            rows.append(
                (
                    "info",
                    code,
                    "",
                    f"{len(group)} tensors",
                    f"{names}, ... ({group[0].message.split('(', 1)[-1].split(')')[0]})",
                )
            )
    from tabulate import tabulate

    return tabulate(
        rows,
        headers=["severity", "code", "layer", "tensor", "message"],
        tablefmt="simple",
        maxcolwidths=[None, None, 24, 40, 70],
        disable_numparse=True,
    )


def render_inspect(report) -> str:
    """The readable inspect report: header, tensors, BN layers, findings."""
    s = report.summary
    lines = [
        f"checkpoint: {report.checkpoint}  ({report.resolved_from})"
        if report.resolved_from
        else f"checkpoint: {report.checkpoint}",
        f"format:     {report.format}",
        f"graph:      {report.graph or '(none)'}",
        f"tensors:    {report.total_tensors}, {human_bytes(report.total_bytes)}",
    ]
    lines += [f"note:       {n}" for n in report.notes]
    shown = len(report.tensors)
    lines.append("")
    title = "TENSORS" if shown == report.total_tensors else f"TENSORS ({shown} of {report.total_tensors} match)"
    lines.append(title)
    rows: list[tuple] = [
        (
            _name(t.name),
            t.dtype,
            "[" + ",".join(map(str, t.shape)) + "]",
            t.size,
            human_bytes(t.nbytes),
            _num(t.min),
            _num(t.max),
            _num(t.mean),
            _num(t.std),
            _num(t.nan),
            _num(t.inf),
            "" if t.in_graph is None else ("yes" if t.in_graph else "NO"),
            t.role,
        )
        for t in report.tensors
    ]
    headers = ["name", "dtype", "shape", "size", "bytes", "min", "max", "mean", "std", "nan", "inf", "in graph", "role"]
    if any(t.object_path for t in report.tensors):  # TF2 checkpoints: the readable object path too
        rows = [(*row, _name(t.object_path or "")) for row, t in zip(rows, report.tensors)]
        headers.append("object path")
    lines.append(_tab(rows, headers) if rows else "(none)")
    lines.append("")
    lines.append(f"BN LAYERS ({len(report.bn_layers)})")
    if report.bn_layers:
        lines.append(
            _tab(
                [
                    (b.layer, _num(b.channels), b.moving_mean or "", b.moving_variance or "", b.status)
                    for b in report.bn_layers
                ],
                ["layer", "channels", "moving mean", "moving variance", "status"],
            )
        )
    else:
        lines.append("(none)")
    lines.append("")
    lines.append(f"FINDINGS: {s.get('errors', 0)} errors, {s.get('warnings', 0)} warnings, {s.get('infos', 0)} infos")
    lines.append(_findings_table(report.findings))
    return "\n".join(lines)


def render_diff(report) -> str:
    """The readable diff report."""
    lines = [f"a: {report.a}", f"b: {report.b}", ""]
    lines.extend(f"note: {n}" for n in report.notes)
    if report.config_changed is not None:
        lines.append("model config: " + ("DIFFERENT" if report.config_changed else "same"))
    if lines[-1]:
        lines.append("")
    if report.identical:
        lines.append(f"identical: {report.compared} tensors, same dtypes, shapes and values")
        return "\n".join(lines)
    if report.only_in_a:
        lines.append(f"ONLY IN A ({len(report.only_in_a)})")
        lines.extend("  " + n for n in report.only_in_a)
        lines.append("")
    if report.only_in_b:
        lines.append(f"ONLY IN B ({len(report.only_in_b)})")
        lines.extend("  " + n for n in report.only_in_b)
        lines.append("")
    if report.changed:
        lines.append(f"DIFFERENT ({len(report.changed)} of {report.compared} in both)")
        lines.append(
            _tab(
                [
                    (
                        _name(c.name),
                        c.what,
                        c.dtype_a if c.dtype_a == c.dtype_b else f"{c.dtype_a} -> {c.dtype_b}",
                        str(list(c.shape_a)) if c.shape_a == c.shape_b else f"{list(c.shape_a)} -> {list(c.shape_b)}",
                        _num(c.max_abs_diff),
                        _num(c.max_rel_diff),
                    )
                    for c in report.changed
                ],
                ["name", "what", "dtype", "shape", "max abs diff", "max rel diff"],
            )
        )
    return "\n".join(lines)


def render_repair(report) -> str:
    """The readable repair report: BN layers before/after, proof, where the output went."""
    lines = [
        f"checkpoint: {report.checkpoint}",
        f"graph:      {report.graph}",
        f"data:       {report.data} ({report.samples} samples, batch size {report.batch_size}, method {report.method})",
        f"input:      {', '.join(report.inputs)}",
        f"training:   {report.training_flag or '(none)'}",
        "",
        f"BN LAYERS ({len(report.layers)})",
    ]
    rows = [
        (
            layer.layer,
            layer.channels,
            layer.samples,
            layer.status_before,
            _num(layer.max_mean_shift),
            f"{_num(layer.var_ratio_min)} .. {_num(layer.var_ratio_max)}" if layer.var_ratio_min is not None else "",
            _num(layer.gap_before),
            _num(layer.gap_after),
        )
        for layer in report.layers
    ]
    lines.append(
        _tab(
            rows,
            [
                "layer",
                "channels",
                "samples",
                "status before",
                "max mean shift (sd)",
                "variance ratio new/stored",
                "infer-vs-train gap before",
                "after",
            ],
        )
    )
    lines.append("")
    if report.gap_note:
        lines.append(report.gap_note)
    if report.held_in_inference:
        held = report.held_in_inference
        lines.append(
            f"held in inference mode while the BN layers ran in training mode ({len(held)}): "
            f"{', '.join(held[:12])}{' ...' if len(held) > 12 else ''}"
        )
    check = report.output_check
    if check is not None:
        verdict = (
            "better"
            if check.gap_after < check.gap_before
            else ("unchanged (round-off)" if check.improved else "NOT better")
        )
        lines.append(
            f"output check: final output vs the BN-training reference on the first {check.samples} samples, "
            f"relative gap {_num(check.gap_before)} -> {_num(check.gap_after)}: {verdict}"
        )
        if check.grown:
            lines.append(
                f"layers whose own gap grew: {', '.join(check.grown[:12])}{' ...' if len(check.grown) > 12 else ''}"
            )
    for n in report.notes:
        lines.append(f"note: {n}")
    for f in report.findings:
        lines.append(f"{f.severity}: {f.code}: {f.message}")
    if report.output:
        # a Keras file, a SavedModel directory, or a prefix
        files = (
            ""
            if os.path.isfile(report.output)
            else "/"
            if os.path.isdir(report.output)
            else " (+ .index, .data, .meta)"
            if os.path.isfile(report.output + ".meta")
            else " (+ .index, .data)"
        )
        lines.append(
            f"written: {report.output}{files}; verified: "
            f"{report.untouched} tensors bit-identical, {report.updated} statistics as computed"
        )
    if report.backup:
        lines.append(f"backup of the original: {report.backup}")
    if report.dry_run:
        lines.append("dry run: nothing written")
    return "\n".join(lines)
