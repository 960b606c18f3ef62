"""``inspect``: list every tensor of a checkpoint, cross-reference its graph, diagnose BN statistics."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field

from .diagnose import (
    SEVERITIES, BNLayerStatus, Finding, bn_layers_from_names, diagnose_bn, diagnose_graph, role_from_name,
)
from .errors import CkptDoctorError, TensorReadError
from .readers import open_reader
from .resolve import resolve_checkpoint
from .stats import STATS_DTYPES, compute_stats

__all__ = ["TensorReport", "InspectReport", "inspect"]


@dataclass(frozen=True)
class TensorReport:
    """One tensor as listed by ``inspect``.

    Statistics are None when not computed (``stats=False``) or not numeric.
    ``in_graph`` is None when no graph was checked.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    size: int
    nbytes: int
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    nan: int | None = None
    inf: int | None = None
    in_graph: bool | None = None
    role: str = "other"
    object_path: str | None = None


@dataclass(frozen=True)
class InspectReport:
    """Everything ``inspect`` found, as data.

    ``exit_code`` is 1 when any finding is an error, else 0.
    """

    checkpoint: str
    format: str
    graph: str | None
    tensors: tuple[TensorReport, ...]
    bn_layers: tuple[BNLayerStatus, ...]
    findings: tuple[Finding, ...]
    notes: tuple[str, ...] = ()
    resolved_from: str = ""
    total_tensors: int = 0
    total_bytes: int = 0
    summary: dict = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 1 if any(f.severity == "error" for f in self.findings) else 0

    def findings_with(self, code: str) -> list[Finding]:
        """The findings of one code."""
        return [f for f in self.findings if f.code == code]

    def to_dict(self) -> dict:
        """The JSON document of the report (``--format json``)."""
        return {
            "checkpoint": self.checkpoint,
            "format": self.format,
            "graph": self.graph,
            "tensors": [dict(asdict(t), shape=list(t.shape)) for t in self.tensors],
            "bn_layers": [asdict(b) for b in self.bn_layers],
            "findings": [asdict(f) for f in self.findings],
            "summary": dict(self.summary),
            "notes": list(self.notes),
        }


def _summary(total_tensors, total_bytes, bn_layers, findings) -> dict:
    return {
        "tensors": total_tensors,
        "total_bytes": total_bytes,
        "bn_layers": len(bn_layers),
        "errors": sum(f.severity == "error" for f in findings),
        "warnings": sum(f.severity == "warning" for f in findings),
        "infos": sum(f.severity == "info" for f in findings),
        "exit_code": 1 if any(f.severity == "error" for f in findings) else 0,
    }


def read_stat_values(reader, keys, unreadable: dict) -> dict:
    """The stored values of ``keys`` (BN moving statistics); the ones that cannot be read go to ``unreadable``."""
    values = {}
    for key in sorted(keys):
        try:
            values[key] = reader.read(key)
        except TensorReadError as e:
            unreadable[key] = e
    return values


def compile_match(match: str | None):
    """The compiled ``--match`` pattern, or None when no pattern was given."""
    if not match:
        return None
    try:
        return re.compile(match)
    except re.error as e:
        raise CkptDoctorError(f"--match {match!r} is not a regular expression: {e}") from e


def list_tensors(reader, entries, *, stats: bool, pattern, role_of, in_graph_of,
                 unreadable: dict) -> tuple[list[TensorReport], list[Finding]]:
    """One ``TensorReport`` per entry (matching ``pattern``) and the ``non-finite`` findings.

    Statistics are streamed one tensor at a time; a tensor whose bytes cannot be read
    is added to ``unreadable`` (and reported by ``assemble_report``).
    """
    tensors, findings = [], []
    for e in entries:
        s = None
        if e.name not in unreadable and stats and e.dtype in STATS_DTYPES:
            try:
                s = compute_stats(reader.iter_chunks(e.name))
            except TensorReadError as err:
                unreadable[e.name] = err
        role = role_of(e.name)
        if s is not None and (s.nan or s.inf) and role not in ("bn_moving_mean", "bn_moving_variance"):
            findings.append(Finding(
                "non-finite", "error", None, e.name,
                f"{e.name} holds {s.nan} NaN and {s.inf} Inf values: training diverged before this was "
                "saved; restore an earlier checkpoint or lower the learning rate",
            ))
        if pattern is not None and not pattern.search(e.name):
            continue
        tensors.append(TensorReport(
            name=e.name, dtype=e.dtype, shape=tuple(e.shape), size=e.size, nbytes=e.nbytes,
            min=s.min if s else None, max=s.max if s else None, mean=s.mean if s else None,
            std=s.std if s else None, nan=s.nan if s else None, inf=s.inf if s else None,
            in_graph=in_graph_of(e.name), role=role, object_path=e.object_path,
        ))
    return tensors, findings


def sort_findings(findings) -> list[Finding]:
    """Findings in the order inspect lists them: errors, warnings, infos; then by code, layer and tensor."""
    order = {severity: i for i, severity in enumerate(SEVERITIES)}
    return sorted(findings, key=lambda f: (order[f.severity], f.code, f.layer or "", f.tensor or ""))


def assemble_report(*, checkpoint: str, format: str, graph: str | None, entries, tensors, bn_rows,
                    findings: list, unreadable: dict, notes: list, stats: bool, resolved_from: str) -> InspectReport:
    """The finished report: unreadable tensors become findings, findings are ordered, totals summed."""
    findings = list(findings) + [Finding(err.code, "error", None, key, str(err))
                                 for key, err in sorted(unreadable.items())]
    if not stats:
        notes = list(notes) + ["statistics not computed (--stats=False): NaN/Inf in weights not checked"]
    total_bytes = sum(e.nbytes for e in entries)
    findings = sort_findings(findings)
    return InspectReport(
        checkpoint=checkpoint, format=format, graph=graph, tensors=tuple(tensors), bn_layers=tuple(bn_rows),
        findings=tuple(findings), notes=tuple(notes), resolved_from=resolved_from,
        total_tensors=len(entries), total_bytes=total_bytes,
        summary=_summary(len(entries), total_bytes, bn_rows, findings),
    )


def _graph_path(prefix: str, graph) -> str | None:
    if graph is False or graph == "":
        return None
    if graph not in (None, True):
        return os.fspath(graph)
    meta = prefix + ".meta"
    return meta if os.path.isfile(meta) else None


def inspect(checkpoint: str, graph: str | bool | None = None, stats: bool = True,
            match: str | None = None) -> InspectReport:
    """Inspect a checkpoint.

    Args:
        checkpoint: a prefix, any file of the checkpoint, or a directory with a
            ``checkpoint`` state file.
        graph: a MetaGraphDef; None uses ``<prefix>.meta`` when it exists;
            False checks no graph.
        stats: compute per-tensor statistics (reads every value).
        match: a regular expression; only matching tensors are listed (the
            diagnosis still covers all).

    Returns:
        An ``InspectReport``.

    Raises:
        CkptDoctorError: the checkpoint or graph cannot be read at all.
    """
    from .keras_inspect import is_keras_file

    if is_keras_file(checkpoint):
        from .keras_inspect import inspect_keras

        return inspect_keras(checkpoint, graph=graph, stats=stats, match=match)
    from .savedmodel_inspect import is_saved_model_dir

    if graph in (None, True) and is_saved_model_dir(os.fspath(checkpoint)):
        # saved_model.pb plays the graph's part; --graph False lists the bundle alone.
        from .savedmodel_inspect import inspect_saved_model

        return inspect_saved_model(checkpoint, stats=stats, match=match)
    resolved = resolve_checkpoint(checkpoint)
    pattern = compile_match(match)
    meta = _graph_path(resolved.prefix, graph)
    notes: list[str] = []
    info = None
    if meta is not None:
        from .errors import MissingDependencyError
        from .tfcompat import tensorflow_available

        try:
            if not tensorflow_available():
                raise MissingDependencyError("TensorFlow is not installed")
            from .graph import analyze_graph

            info = analyze_graph(meta)
        except MissingDependencyError:
            notes.append(f"graph {meta} not checked: TensorFlow is not installed; "
                         "pip install 'ckptdoctor[tf]' to cross-reference the graph")
            meta = None
    if info is None and meta is None and graph is None:
        notes.append("no graph (.meta) beside the checkpoint: BN layers found by name; pass --graph to check one")

    reader = open_reader(resolved)
    try:
        entries = reader.entries()
        by_key = {e.name: e for e in entries}
        findings: list[Finding] = []
        unreadable: dict[str, TensorReadError] = {}

        # BN layers: from the graph's structure, or from names without one.
        if info is not None:
            layers = [
                {"layer": b.layer, "moving_mean": b.moving_mean, "moving_variance": b.moving_variance,
                 "gamma": b.gamma, "beta": b.beta, "channels": b.channels}
                for b in info.bn_layers
            ]
        else:
            layers = bn_layers_from_names(list(by_key))
        stat_keys = {layer[k] for layer in layers for k in ("moving_mean", "moving_variance") if layer.get(k)}
        values = read_stat_values(reader, stat_keys & set(by_key), unreadable)
        bn_rows = []
        for layer in layers:
            row, layer_findings = diagnose_bn(layer, set(by_key), values, from_graph=info is not None)
            bn_rows.append(row)
            findings.extend(layer_findings)
        if info is not None:
            findings.extend(diagnose_graph(info.variables, by_key, info.roles, stat_keys,
                                           info.update_ops_unused, info.bn_update_ops))
            roles = info.roles
        else:
            roles = {}
        bn_role = {}
        for row in bn_rows:
            for attr in ("moving_mean", "moving_variance", "gamma", "beta"):
                if getattr(row, attr):
                    bn_role[getattr(row, attr)] = "bn_" + attr

        tensors, listed = list_tensors(
            reader, entries, stats=stats, pattern=pattern,
            role_of=lambda n: bn_role.get(n) or roles.get(n) or ("other" if info is not None else role_from_name(n)),
            in_graph_of=lambda n: (n in info.variables) if info is not None else None,
            unreadable=unreadable,
        )
        return assemble_report(
            checkpoint=resolved.prefix, format=reader.format, graph=meta if info is not None else None,
            entries=entries, tensors=tensors, bn_rows=bn_rows, findings=findings + listed, unreadable=unreadable,
            notes=notes, stats=stats, resolved_from=resolved.how,
        )
    finally:
        reader.close()
