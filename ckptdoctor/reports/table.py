"""Rendering reports as text (tabulate) and JSON. Nothing here computes."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator
from itertools import islice, repeat
from json.encoder import encode_basestring as _quote  # the string encoder of json.dumps(ensure_ascii=False)

from ckptdoctor.reports.results import TENSOR_FIELDS, TensorRows, TensorTable, tensor_values

__all__ = [
    "render_inspect",
    "render_diff",
    "render_repair",
    "to_json",
    "iter_json",
    "iter_inspect",
    "human_bytes",
    "terminal_width",
    "TENSOR_ROWS",
]

_MAX_NAME = 72


def human_bytes(n: int) -> str:
    """``1536`` -> ``1.5 KiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _count(n: int, noun: str) -> str:
    """``1 error``, ``2 errors``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


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


def _finite(x):
    """``x`` with NaN and Inf turned into strings, as ``to_json`` does (the slow path: rows that hold one)."""
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return str(x)
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


_ROW = json.JSONEncoder(ensure_ascii=False, allow_nan=False)  # no indent: the C encoder


def _encode(value) -> str:
    try:
        return _ROW.encode(value)
    except ValueError:  # a NaN or Inf: strings, as in to_json
        return _ROW.encode(_finite(value))


#: The rows of a list joined into one piece of ``iter_json``'s output: fewer, larger writes.
_JSON_BATCH = 512


def iter_json(items) -> Iterator[str]:
    """One JSON document from ``(key, value)`` pairs, in pieces, each list element on a line of its own.

    The document is the same as ``to_json`` of the dict (``json.loads`` of both are equal;
    NaN and Inf become strings), but each element of a list value is encoded by the C encoder
    (a tensor's row by ``tensor_json``, which writes the same text without the dict) and
    yielded as it comes, a few hundred lines at a time: a listing of 100,000 tensors is never
    one string, nor a list of dicts, and goes out 10x faster than through the pure-Python
    indenting encoder.

    Args:
        items: ``(key, value)`` pairs; a value that is a list, tuple or iterator (not a dict
            or string) is written one element per line.
    """
    yield "{"
    sep = "\n"
    for key, value in items:
        head = f"{sep}  {_encode(key)}: "
        sep = ",\n"
        if isinstance(value, (str, dict, int, float, bool)) or value is None:
            yield head + _encode(value)
            continue
        lines = _json_rows(value.tensors) if isinstance(value, TensorRows) else map(_encode, value)
        opening = head + "[\n    "
        while batch := list(islice(lines, _JSON_BATCH)):
            yield opening + ",\n    ".join(batch)
            opening = ",\n    "
        yield head + "[]" if opening != ",\n    " else "\n  ]"
    yield "\n}\n"


class _NotPlain(Exception):
    """A value ``tensor_json`` leaves to the encoder: NaN, Inf, or a type other than the plain ones."""


def _atom(v) -> str:
    """``v`` as the C encoder writes it, for None, str, bool, int, finite float and a tuple of ints."""
    cls = v.__class__
    if cls is str:
        return _quote(v)
    if v is None:
        return "null"
    if cls is int:
        return int.__repr__(v)
    if cls is float:
        if v - v == 0.0:  # finite
            return float.__repr__(v)
    elif cls is bool:
        return "true" if v else "false"
    elif cls is tuple and all(d.__class__ is int for d in v):
        return "[" + ", ".join(map(int.__repr__, v)) + "]"
    raise _NotPlain


_TENSOR_TEMPLATE = "{" + ", ".join(f"{_quote(f)}: %s" for f in TENSOR_FIELDS) + "}"
_STATISTICS = ("min", "max", "mean", "std", "nan", "inf")
#: A row without statistics (``--stats=False``, strings): the six nulls written once.
_LISTED_TEMPLATE = "{" + ", ".join(f"{_quote(f)}: {'null' if f in _STATISTICS else '%s'}" for f in TENSOR_FIELDS) + "}"
_FLAGS = {None: "null", True: "true", False: "false"}


#: Shape -> ``(that very tuple, its JSON)``: readers share one tuple per distinct shape, so a listing's
#: rows find theirs by identity; an equal tuple of other element types (``(1.0,)``, ``(True,)``) misses.
_SHAPES: dict[tuple, tuple[tuple, str]] = {}
_SHAPES_LIMIT = 4096


def _shape_json(shape: tuple) -> str | None:
    """A tuple of ints as the C encoder writes it; None when an element is not exactly an int."""
    try:
        hit = _SHAPES.get(shape)
    except TypeError:  # an unhashable element: not ints
        return None
    if hit is not None and hit[0] is shape:
        return hit[1]
    for d in shape:
        if d.__class__ is not int:
            return None
    text = "[" + ", ".join(map(int.__repr__, shape)) + "]"
    if len(_SHAPES) >= _SHAPES_LIMIT:
        _SHAPES.clear()
    _SHAPES[shape] = (shape, text)
    return text


def tensor_json(t) -> str:
    """``_encode(tensor_row(t))``, the same text, without the dict: a quarter of the cost (a second on
    100,000 tensors). Rows with a NaN, an Inf or a value of another type go through the encoder."""
    return _values_json(tensor_values(t))


def _json_rows(tensors) -> Iterator[str]:
    """``tensor_json`` of each row; a ``TensorTable``'s from its columns (no ``TensorReport`` is made)."""
    if isinstance(tensors, TensorTable):
        if _listed(tensors.columns):
            return _listed_rows(tensors.columns)
        return map(_values_json, zip(*tensors.columns))
    return map(tensor_json, tensors)


#: The part of a row without statistics between its name and its object path: ``_LISTED_TEMPLATE``'s.
_MIDDLE = _LISTED_TEMPLATE[_LISTED_TEMPLATE.index("%s") + 2 : _LISTED_TEMPLATE.rindex("%s")]
_NAME_HEAD, _ROW_END = _LISTED_TEMPLATE[: _LISTED_TEMPLATE.index("%s")], _LISTED_TEMPLATE[-1]
_NONE = type(None)
#: Rows ``_listed_rows`` writes at a time: the text of a few thousand rows is held, not of all.
_LISTED_BLOCK = 4096


def _only(column: tuple, *kinds: type) -> bool:
    return set(map(type, column)) <= set(kinds)


def _listed(columns: tuple) -> bool:
    """Whether every row is one ``_values_json`` writes by its template without statistics: no statistic, and
    each other value exactly of the type the template writes (the encoder writes the rest)."""
    name, dtype, shape, size, nbytes, lo, hi, mean, std, nan, inf, in_graph, role, path = columns
    return (
        all(c.count(None) == len(c) for c in (lo, hi, mean, std, nan, inf))  # identity first: no set of types
        and _only(name, str)
        and _only(dtype, str)
        and _only(shape, tuple)
        and _only(size, int)
        and _only(nbytes, int)
        and _only(in_graph, _NONE, bool)
        and _only(role, str)
        and _only(path, str, _NONE)
    )


def _listed_rows(columns: tuple) -> Iterator[str]:
    """The rows of a table that is ``_listed``, a block of rows at a time, a column at a time.

    The text between a row's name and its object path depends on six values that few distinct rows share
    (dtype, shape, size, bytes, in_graph, role): it is made once per distinct six, and each row is three
    joined strings. The same text as ``_values_json`` row by row, in 60% of the time (100,000 rows).
    A shape of other than ints (``_shape_json`` None) leaves its row to ``_values_json``.
    """
    name, dtype, shape, size, nbytes, _lo, _hi, _mean, _std, _nan, _inf, in_graph, role, path = columns
    middles: dict = {}
    # Readers share one tuple per distinct shape: when each distinct one is of ints, the shapes themselves go in
    # the middles' keys (equal ones have one text) and are written once per distinct middle, not once per row.
    by_shape = all(_shape_json(s) is not None for s in dict(zip(map(id, shape), shape)).values())
    for a in range(0, len(name), _LISTED_BLOCK):
        b = a + _LISTED_BLOCK
        shapes = shape[a:b] if by_shape else list(map(_shape_json, shape[a:b]))
        keys = list(zip(dtype[a:b], shapes, size[a:b], nbytes[a:b], in_graph[a:b], role[a:b]))
        for key in set(keys).difference(middles):
            d, shape_text, n, nb, flag, r = key
            if by_shape:
                shape_text = _shape_json(shape_text)
            middles[key] = (
                None
                if shape_text is None
                else _MIDDLE % (_quote(d), shape_text, int.__repr__(n), int.__repr__(nb), _FLAGS[flag], _quote(r))
            )
        paths = ["null" if p is None else _quote(p) for p in path[a:b]]
        middles_of = list(map(middles.__getitem__, keys))
        if None not in middles_of:  # every row by the template: joined by map, no Python-level loop
            yield from map(
                "".join, zip(repeat(_NAME_HEAD), map(_quote, name[a:b]), middles_of, paths, repeat(_ROW_END))
            )
            continue
        for i, middle in enumerate(middles_of):
            yield (
                _values_json(tuple(c[a + i] for c in columns))
                if middle is None
                else _NAME_HEAD + _quote(name[a + i]) + middle + paths[i] + _ROW_END
            )


def _values_json(values: tuple) -> str:
    """``tensor_json`` of a row given as its values in ``TENSOR_FIELDS`` order."""
    name, dtype, shape, size, nbytes, lo, hi, mean, std, nan, inf, in_graph, role, path = values
    # The row of a listing (no statistics) in a third of the calls of the general way below.
    if (
        lo is None
        and hi is None
        and mean is None
        and std is None
        and nan is None
        and inf is None
        and name.__class__ is str
        and dtype.__class__ is str
        and role.__class__ is str
        and size.__class__ is int
        and nbytes.__class__ is int
        and shape.__class__ is tuple
        and (in_graph is None or in_graph is True or in_graph is False)
        and (path is None or path.__class__ is str)
    ):
        shape_text = _shape_json(shape)
        if shape_text is not None:
            return _LISTED_TEMPLATE % (
                _quote(name),
                _quote(dtype),
                shape_text,
                int.__repr__(size),
                int.__repr__(nbytes),
                _FLAGS[in_graph],
                _quote(role),
                "null" if path is None else _quote(path),
            )
    try:
        return _TENSOR_TEMPLATE % tuple(map(_atom, values))
    except _NotPlain:
        row = dict(zip(TENSOR_FIELDS, values))
        row["shape"] = list(shape)
        return _encode(row)


def terminal_width() -> int:
    """The terminal's width in columns (``COLUMNS`` first; 80 when the output is not a terminal)."""
    return max(40, shutil.get_terminal_size((80, 24)).columns)


#: SGR colour codes, used only when the output is a terminal (``colour=True``).
_SGR = {
    "error": "1;31",
    "warning": "1;33",
    "info": "36",
    "code": "1",
    "ok": "32",
    "stale": "33",
    "missing": "31",
    "partial": "31",
    "at-init": "31",
    "invalid": "31",
}


def _paint(text: str, what: str, colour: bool) -> str:
    code = _SGR.get(what)
    return f"\x1b[{code}m{text}\x1b[0m" if colour and code else text


def _wrap(text: str, width: int, first: str = "", rest: str = "    ") -> list[str]:
    import textwrap

    return textwrap.wrap(
        text, width, initial_indent=first, subsequent_indent=rest, break_long_words=False, break_on_hyphens=False
    ) or [first]


#: A group lists this many findings (infos: ``_INFOS_SHOWN``) and counts the rest.
_SHOWN, _INFOS_SHOWN = 20, 5


def _findings_text(findings, width: int, colour: bool) -> str:
    """One block per code: the shared words, each finding's own part, and the advice once."""
    from ckptdoctor.reports.findings import group_findings

    if not findings:
        return "no findings"
    blocks = []
    for g in group_findings(findings):
        if len(g.items) == 1:
            lines = _wrap(f"{g.severity} {g.code}: {g.items[0].message}", width, rest="  ")
        else:
            about = f"… {g.shared}" if g.shared else g.meaning
            lines = _wrap(f"{g.severity} {g.code} ({len(g.items)}): {about}", width, rest="  ")
            limit = _INFOS_SHOWN if g.severity == "info" else _SHOWN
            shown = g.items if len(g.items) <= limit + 1 else g.items[:limit]
            for item in shown:
                own = f"{_paint(item.severity, item.severity, colour)}: " if g.mixed else ""
                wrapped = _wrap("- " + (f"{item.severity}: " if g.mixed else "") + item.text, width, "  ", "    ")
                lines += [wrapped[0].replace(f"- {item.severity}: ", f"- {own}", 1)] + wrapped[1:]
            if len(shown) < len(g.items):
                lines.append(f"  - … and {len(g.items) - len(shown)} more (--format json lists every finding)")
            if g.advice:
                lines += _wrap("advice: " + g.advice, width, first="  ", rest="    ")
        head = f"{g.severity} {g.code}"
        lines[0] = f"{_paint(g.severity, g.severity, colour)} {_paint(g.code, 'code', colour)}" + lines[0][len(head) :]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


#: More tensors than this (and no --match) are summarised by role, not listed.
TENSOR_ROWS = 50


def _tensor_summary(report) -> list[str]:
    """The tensors counted by role, and how to list them (a checkpoint with hundreds of tensors)."""
    roles: dict[str, list[int]] = {}
    for t in report.tensors:
        count = roles.setdefault(t.role, [0, 0])
        count[0] += 1
        count[1] += t.nbytes
    rows = [(role, n, human_bytes(b)) for role, (n, b) in sorted(roles.items(), key=lambda kv: -kv[1][0])]
    return [
        f"TENSORS ({len(report.tensors)}: too many to list; --match REGEX lists the matching ones, "
        "e.g. --match moving_mean, and --match . lists them all)",
        _tab(rows, ["role", "tensors", "bytes"]),
    ]


def _tensor_lines(report) -> Iterator[str]:
    """The tensor table's lines (each with its newline), a row at a time.

    Laid out as ``tabulate``'s "simple" format with ``disable_numparse`` lays it out (each
    column as wide as its widest cell, at least its header plus 2; cells left-aligned and two
    spaces apart; no trailing blanks), in two passes over the rows (one for the widths), so
    that 100,000 rows are never held as a table of strings. A cell tabulate would lay out
    differently (a line break, an escape code, a wide character) sends the table to tabulate.
    """
    shown = len(report.tensors)
    if shown > TENSOR_ROWS and not report.match:
        yield "\n".join(_tensor_summary(report)) + "\n"
        return
    title = "TENSORS" if shown == report.total_tensors else f"TENSORS ({shown} of {report.total_tensors} match)"
    yield title + "\n"
    headers = ["name", "dtype", "shape", "size", "bytes", "min", "max", "mean", "std", "nan", "inf", "in graph", "role"]
    paths = any(t.object_path for t in report.tensors)  # TF2 checkpoints: the readable object path too
    if paths:
        headers.append("object path")
    if not shown:
        yield "(none)\n"
        return
    widths = [len(h) + 2 for h in headers]
    plain = True
    for row in _tensor_rows(report.tensors, paths):
        for i, cell in enumerate(row):
            if len(cell) > widths[i]:
                widths[i] = len(cell)
            plain = plain and cell.isprintable() and cell.isascii()
    if not plain:
        yield _tab(list(_tensor_rows(report.tensors, paths)), headers) + "\n"
        return
    yield "  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip() + "\n"
    yield "  ".join("-" * w for w in widths) + "\n"
    for row in _tensor_rows(report.tensors, paths):
        yield "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n"


def _tensor_rows(tensors, paths: bool) -> Iterator[tuple[str, ...]]:
    for t in tensors:
        row = (
            _name(t.name),
            t.dtype,
            "[" + ",".join(map(str, t.shape)) + "]",
            str(t.size),
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
        yield (*row, _name(t.object_path or "")) if paths else row


def render_inspect(report, width: int | None = None, colour: bool = False) -> str:
    """The readable inspect report: header, tensors, BN layers, findings.

    Args:
        width: wrap prose (notes, findings) at this many columns; default: the terminal's width.
        colour: colour severities and BN statuses (ANSI codes: only for a terminal).
    """
    return "".join(iter_inspect(report, width, colour)).rstrip("\n")


def iter_inspect(report, width: int | None = None, colour: bool = False) -> Iterator[str]:
    """``render_inspect``'s text in pieces, each ending in a newline: the tensor table a row at a time."""
    width = width or terminal_width()
    head, tail = _inspect_parts(report, width, colour)
    yield "\n".join(head) + "\n"
    yield from _tensor_lines(report)
    yield "\n".join(tail) + "\n"


def _inspect_parts(report, width: int, colour: bool) -> tuple[list[str], list[str]]:
    """The lines before the tensor table and those after it."""
    s = report.summary
    lines = _wrap(
        f"checkpoint: {report.checkpoint}  ({report.resolved_from})"
        if report.resolved_from
        else f"checkpoint: {report.checkpoint}",
        width,
        rest=" " * 12,
    )
    lines += [
        f"format:     {report.format}",
        f"graph:      {report.graph or '(none)'}",
        f"tensors:    {report.total_tensors}, {human_bytes(report.total_bytes)}",
    ]
    for n in report.notes:
        lines += _wrap(f"note:       {n}", width, rest=" " * 12)
    head, lines = lines + [""], [""]
    lines.append(f"BN LAYERS ({len(report.bn_layers)})")
    if report.bn_layers:
        lines.append(
            _tab(
                [
                    (
                        b.layer,
                        _num(b.channels),
                        b.moving_mean or "",
                        b.moving_variance or "",
                        _paint(b.status, b.status, colour),
                    )
                    for b in report.bn_layers
                ],
                ["layer", "channels", "moving mean", "moving variance", "status"],
            )
        )
    else:
        lines.append("(none)")
    lines.append("")
    counts = ", ".join(_count(s.get(k + "s", 0), k) for k in ("error", "warning", "info"))
    lines.append(f"FINDINGS: {counts}")
    lines.append(_findings_text(report.findings, width, colour))
    return head, lines


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


def render_repair(report, width: int | None = None) -> str:
    """The readable repair report: BN layers before/after, proof, where the output went.

    Args:
        width: wrap the notes and findings at this many columns; default: the terminal's width.
    """
    width = width or terminal_width()
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
    prose = []
    if report.gap_note:
        prose.append(report.gap_note)
    if report.held_in_inference:
        held = report.held_in_inference
        prose.append(
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
        prose.append(
            f"output check: final output vs the BN-training reference on the first {check.samples} samples, "
            f"relative gap {_num(check.gap_before)} -> {_num(check.gap_after)}: {verdict.replace(' ', chr(0))}"
        )
        if check.grown:
            prose.append(
                f"layers whose own gap grew: {', '.join(check.grown[:12])}{' ...' if len(check.grown) > 12 else ''}"
            )
    prose += [f"note: {n}" for n in report.notes]
    prose += [f"{f.severity}: {f.code}: {f.message}" for f in report.findings]
    for text in prose:  # a NUL keeps a phrase on one line ("NOT better")
        lines += [line.replace(chr(0), " ") for line in _wrap(text, width, rest="  ")]
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
