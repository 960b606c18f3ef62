"""``inspect``, one pipeline for every format: resolve, read tensors, describe the model, diagnose, report.

The format's adapter (``formats.open_model``) resolves the path and reads the
tensors, and says what the model declares (``Description``). Everything after is
the same for every format: the BN layers' stored statistics are read and
diagnosed, frozen-from-the-start layers recognised, every tensor listed with its
statistics (streamed one tensor at a time), and the findings sorted.
"""

from __future__ import annotations

import dataclasses
import operator
import os
import re
from collections.abc import Iterator
from itertools import compress
from math import prod
from typing import TYPE_CHECKING

from ckptdoctor.analysis.diagnose import Finding, diagnose_bn, frozen_untrained
from ckptdoctor.analysis.staleness import stale_findings
from ckptdoctor.analysis.stats import (
    STATS_DTYPES,
    Partial,
    TensorStats,
    compute_stats,
    merge,
    partials,
    stats_of_many,
)
from ckptdoctor.collector import paused_gc
from ckptdoctor.errors import (
    CkptDoctorError,
    GraphError,
    MissingDependencyError,
    TensorReadError,
    UnsupportedFormatError,
)
from ckptdoctor.formats import open_model
from ckptdoctor.formats.base import Description, Model, not_checked
from ckptdoctor.reports.results import (
    TENSOR_FIELDS,
    InspectReport,
    StoredStatistics,
    TensorReport,
    TensorTable,
    sort_findings,
    summary,
)

if TYPE_CHECKING:
    import numpy as np

__all__ = ["inspect", "InspectReport", "TensorReport", "iter_stats", "default_jobs"]

_STATISTICS = ("moving_mean", "moving_variance")
_NBYTES = operator.attrgetter("nbytes")


def inspect(
    checkpoint: str,
    graph: str | bool | None = None,
    stats: bool = True,
    match: str | None = None,
    data: str | None = None,
    jobs: int | None = None,
    **dry_run,
) -> InspectReport:
    """Inspect a checkpoint, SavedModel or Keras file.

    Args:
        checkpoint: a prefix, any file of the checkpoint, a directory with a
            ``checkpoint`` state file, a SavedModel directory, a Keras file or a
            Keras model directory.
        graph: what describes the model: a MetaGraphDef, or for a Keras weights
            file a ``.keras``/model directory/full ``.h5``/config ``.json``/
            ``package.module:function`` factory; None uses what the checkpoint
            brings (``<prefix>.meta``, the file's own config); False none.
        stats: compute per-tensor statistics (reads every value).
        match: a regular expression; only matching tensors are listed (the
            diagnosis still covers all).
        data: also check the stored BN statistics against data: a dry-run repair
            computes what they should be, and layers whose stored statistics are far
            off get ``bn-stats-stale`` findings (see ``analysis.staleness``).
        jobs: tensors whose statistics are computed at once (threads); None: the cores this
            process may use (``default_jobs``). The statistics are the same whatever it is.
        dry_run: ``repair``'s options for that dry run (``input``, ``training``,
            ``feed``, ``batch_size``, ``max_samples``, ``unsafe``, ``compression``, ``resize``).

    Returns:
        An ``InspectReport``.

    Raises:
        CkptDoctorError: the checkpoint or graph cannot be read at all.
    """
    pattern = compile_match(match)
    if data is not None:
        from ckptdoctor.pipelines.sources import open_source
        from ckptdoctor.pipelines.sources.user import looks_like_function

        if not looks_like_function(data):  # the user's function runs once, in the dry run
            opened = {k: dry_run[k] for k in ("input", "compression", "resize") if k in dry_run}
            open_source(data, **opened)  # bad data fail before any work (nothing read beyond a first record)
    model = open_model(checkpoint, graph=graph)
    try:
        report = _report(model, model.describe(), stats, pattern, default_jobs() if jobs is None else jobs)
    finally:
        model.close()
    report = dataclasses.replace(report, match=match or None)
    return report if data is None else _against_data(report, checkpoint, graph, data, dry_run)


def _against_data(report: InspectReport, checkpoint: str, graph, data: str, options: dict) -> InspectReport:
    """The report with the ``bn-stats-stale`` findings of a dry-run repair over ``data``.

    A model that cannot be run (no graph, an exported SavedModel) keeps its report, with
    a note that the statistics were not checked; bad data still fail.
    """
    from ckptdoctor.pipelines.repair import repair

    try:
        dry = repair(
            checkpoint, data, graph=graph if graph not in (None, True, False) else None, dry_run=True, **options
        )
    except (GraphError, UnsupportedFormatError, MissingDependencyError) as e:
        note = f"BN statistics NOT checked against {data}: {str(e).splitlines()[0]}"
        return dataclasses.replace(report, notes=tuple(report.notes) + (note,))
    findings, notes = stale_findings(dry)
    all_findings = tuple(sort_findings(tuple(report.findings) + tuple(findings)))
    stale = {f.layer for f in findings}
    bn_layers = tuple(
        dataclasses.replace(row, status="stale") if row.layer in stale else row for row in report.bn_layers
    )
    return dataclasses.replace(
        report,
        findings=all_findings,
        notes=tuple(report.notes) + tuple(notes),
        bn_layers=bn_layers,
        summary=summary(report.total_tensors, report.total_bytes, report.bn_layers, all_findings),
        data_check=dry,
    )


def compile_match(match: str | None):
    """The compiled ``--match`` pattern, or None when no pattern was given."""
    if not match:
        return None
    try:
        return re.compile(match)
    except re.error as e:
        raise CkptDoctorError(f"--match {match!r} is not a regular expression: {e}") from e


def _report(model: Model, description: Description, stats: bool, pattern, jobs: int = 1) -> InspectReport:
    reader = model.reader
    entries = reader.entries()
    unreadable: dict[str, TensorReadError] = {}
    specs = description.bn_layers
    present = {e.name for e in entries} if specs else set()  # only the BN layers' keys are looked up in it
    stat_keys = {spec[k] for spec in specs for k in _STATISTICS if spec.get(k)}
    values = read_stat_values(reader, stat_keys & present, unreadable)
    diagnosed = [
        (spec, *diagnose_bn(spec, present, values, from_graph=not description.bn_from_names, advice=description.advice))
        for spec in specs
    ]
    del present  # 100,000 names: not kept while every tensor's report is made
    diagnosed = frozen_untrained(diagnosed, description.trained)
    bn_rows = [row for _spec, row, _found in diagnosed]
    findings = [f for _spec, _row, found in diagnosed for f in found] + list(description.findings)
    bn_role = {
        getattr(row, attr): "bn_" + attr
        for row in bn_rows
        for attr in ("moving_mean", "moving_variance", "gamma", "beta")
        if getattr(row, attr)
    }

    tensors, listed = list_tensors(reader, entries, stats, pattern, description, bn_role, unreadable, jobs)
    findings += listed + [Finding(err.code, "error", None, key, str(err)) for key, err in sorted(unreadable.items())]
    notes = list(description.notes)
    if not stats:
        notes.append("statistics not computed (--stats=False): NaN/Inf in weights not checked")
    findings = sort_findings(findings)
    total_bytes = sum(map(_NBYTES, entries))
    return InspectReport(
        checkpoint=model.path,
        format=model.format,
        graph=description.graph,
        tensors=tensors,
        bn_layers=tuple(bn_rows),
        findings=tuple(findings),
        notes=tuple(notes),
        resolved_from=model.resolved_from,
        total_tensors=len(entries),
        total_bytes=total_bytes,
        summary=summary(len(entries), total_bytes, bn_rows, findings),
        stored=tuple(
            StoredStatistics(
                row.layer, _per_channel(values.get(row.moving_mean)), _per_channel(values.get(row.moving_variance))
            )
            for row in bn_rows
        ),
    )


def _per_channel(value) -> tuple[float, ...] | None:
    """A stored statistic's values as floats (None: not stored, unreadable, or not a number type)."""
    import numpy as np

    if value is None:
        return None
    try:
        return tuple(float(v) for v in np.asarray(value).astype(np.float64).reshape(-1))
    except (TypeError, ValueError):
        return None


def default_jobs() -> int:
    """The cores this process may run on (``sched_getaffinity``: a container's or ``taskset``'s limit)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


#: The chunk the statistics pass reads at a time: small enough to stay in the CPU's cache while the
#: checksum and the four reductions read it (16 MiB chunks make each of them a pass over memory: about
#: 1.7x the CPU time of the checksum and reductions over 2 GiB, measured on a 2-core AMD EPYC).
STATS_CHUNK_BYTES = 1 << 20


def _stats_of(reader, name: str) -> tuple[TensorStats | None, TensorReadError | None]:
    try:
        return compute_stats(reader.iter_chunks(name, STATS_CHUNK_BYTES)), None
    except TensorReadError as err:
        return None, err


def iter_stats(reader, entries, jobs: int = 1) -> Iterator[tuple[TensorStats | None, TensorReadError | None]]:
    """``(statistics, read error)`` of each entry, in order, on ``jobs`` threads.

    The results are bit-identical whatever ``jobs`` is. Each chunk's share of a tensor's statistics
    (``stats.partials``) depends on that chunk alone, and the shares are merged in the file's order
    (``stats.merge``), exactly as one thread does. numpy's reductions and the CRC32C hashing release
    the GIL, so two threads use two cores. A reader that is not safe to read from two threads
    (``parallel_reads`` False: HDF5 through a zip member stream, say) gets one job.

    Tasks: a run of consecutive tensors (``_batches``: up to 8 MiB or 256 tensors), or a piece of a
    tensor of more than ``_PIECE_BYTES`` (``reader.pieces``: a bundle's), whose pieces' CRC32Cs are
    combined and checked once all are read. Tasks are submitted while fewer than ``_PENDING_TENSORS``
    tensors' results wait to be taken: memory does not grow with the number of tensors, and a thread
    that finished its task is not left idle while another still reads a big tensor ahead of it.
    """
    if jobs <= 1 or not getattr(reader, "parallel_reads", False) or not entries:
        for batch in _batches(entries):
            yield from _batch_stats(reader, batch)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="ckptdoctor-stats") as pool:
        pending: deque = deque()  # (a batch's future, or (name, its pieces' futures); tensors in it)
        waiting = 0
        for task in _tasks(reader, entries):
            if isinstance(task, list):
                pending.append((pool.submit(_batch_stats, reader, task), len(task)))
            else:
                name, pieces = task
                futures = [pool.submit(_piece_partials, reader, name, a, b) for a, b in pieces]
                pending.append(((name, futures), 1))
            waiting += pending[-1][1]
            while waiting >= _PENDING_TENSORS:
                work, count = pending.popleft()
                waiting -= count
                yield from _results(reader, work)
        while pending:
            yield from _results(reader, pending.popleft()[0])


#: A thread's task: consecutive tensors up to this many bytes or this many tensors. One future per
#: tensor of 1 KiB would cost more than its statistics.
_BATCH_BYTES, _BATCH_TENSORS = 8 * 1024 * 1024, 256

#: A tensor of more than this is read in pieces of about this size, on all the threads.
_PIECE_BYTES = 32 * 1024 * 1024

#: Tensors whose tasks may be submitted before the first of them is taken: a bound on the results held
#: (a few hundred bytes each), high enough that the other threads go on while one reads a big tensor.
_PENDING_TENSORS = 16384


def _tasks(reader, entries) -> Iterator[list[str] | tuple[str, list[tuple[int, int]]]]:
    """``_batches`` of the entries, but a tensor the reader splits into pieces is a task of its own."""
    split = getattr(reader, "pieces", None)
    run: list = []
    for e in entries:
        pieces = None
        if split is not None and e.nbytes > _PIECE_BYTES:
            try:
                pieces = split(e.name, STATS_CHUNK_BYTES, _PIECE_BYTES)
            except TensorReadError:
                pieces = None  # read whole, which reports it
        if pieces is None:
            run.append(e)
            continue
        yield from _batches(run)
        run = []
        yield e.name, pieces
    yield from _batches(run)


def _batch_stats(reader, names: list[str]) -> list[tuple[TensorStats | None, TensorReadError | None]]:
    """The results of a batch of tensors. A reader with ``read_run`` (a bundle's) reads the tensors of one
    chunk or less together, and their statistics are reduced together (``stats.stats_of_many``); bigger ones,
    and every tensor of other readers, one at a time (``_stats_of``). The same batches whatever ``jobs`` is,
    so the same figures."""
    import numpy as np

    read_run = getattr(reader, "read_run", None)
    if read_run is None or len(names) < 2:
        return [_stats_of(reader, n) for n in names]
    values = read_run(names, STATS_CHUNK_BYTES)
    computed = iter(stats_of_many([v for v in values if isinstance(v, np.ndarray)]))
    out: list[tuple[TensorStats | None, TensorReadError | None]] = []
    for name, value in zip(names, values):
        if value is None:
            out.append(_stats_of(reader, name))
        elif isinstance(value, TensorReadError):
            out.append((None, value))
        else:
            out.append((next(computed), None))
    return out


def _piece_partials(reader, name: str, start: int, stop: int) -> tuple[list[Partial], int, int]:
    """A piece's chunks' partial statistics, its CRC32C and its length (on a pool thread)."""
    crc = 0

    def chunks() -> Iterator[np.ndarray]:
        nonlocal crc
        for values, so_far in reader.iter_piece(name, start, stop, STATS_CHUNK_BYTES):
            crc = so_far
            yield values

    return partials(chunks()), crc, stop - start


def _results(reader, work) -> list[tuple[TensorStats | None, TensorReadError | None]]:
    """The results of a task: a batch's, or a split tensor's, merged in its pieces' order once its
    checksum is checked (the first piece that failed to read reports, as when read in order)."""
    if not isinstance(work, tuple):
        return work.result()
    name, futures = work
    parts: list[Partial] = []
    crcs = []
    try:
        for future in futures:
            piece, crc, length = future.result()
            parts.extend(piece)
            crcs.append((crc, length))
        reader.check_pieces(name, crcs)
    except TensorReadError as err:
        return [(None, err)]
    return [(merge(parts), None)]


def _batches(entries) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for e in entries:
        batch.append(e.name)
        size += e.nbytes
        if size >= _BATCH_BYTES or len(batch) >= _BATCH_TENSORS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def read_stat_values(reader, keys, unreadable: dict) -> dict:
    """The stored values of ``keys`` (BN moving statistics); the ones that cannot be read go to ``unreadable``."""
    values = {}
    for key in sorted(keys):
        try:
            values[key] = reader.read(key)
        except TensorReadError as e:
            unreadable[key] = e
    return values


def list_tensors(
    reader, entries, stats: bool, pattern, description: Description, bn_role: dict, unreadable: dict, jobs: int = 1
) -> tuple[TensorTable, list[Finding]]:
    """The ``TensorReport`` of each entry (matching ``pattern``), as a ``TensorTable``, and the ``non-finite`` findings.

    A key's role is its role in ``bn_role`` (the diagnosed BN layers' tensors), else the description's.

    Statistics are streamed one tensor at a time (``jobs`` tensors at once, see ``iter_stats``);
    a tensor whose bytes cannot be read is added to ``unreadable`` (and reported as a finding
    of its own). The rows are made a column at a time: 100,000 tensors are listed without a
    report object or a Python-level loop over all fields per tensor.
    """
    with paused_gc():  # 100,000 tensors are listed faster without collections between
        return _list_tensors(reader, entries, stats, pattern, description, bn_role, unreadable, jobs)


_NO_STATISTICS = ("min", "max", "mean", "std", "nan", "inf")


def _list_tensors(
    reader, entries, stats: bool, pattern, description: Description, bn_role: dict, unreadable: dict, jobs: int
) -> tuple[TensorTable, list[Finding]]:
    found = _statistics(reader, entries, jobs, unreadable) if stats else None
    # The entries' fields as columns (tuples, kept by TensorTable as they are), in one transposition: TensorEntry
    # is a tuple.
    names, dtypes, shapes, nbytes, _partitioned, _paths = tuple(zip(*entries)) if entries else ((),) * 6
    roles = list(map(description.role, names)) if description.roles is None else description.roles(names)
    if bn_role:
        roles = [bn_role.get(key) or role for key, role in zip(names, roles)]
    findings = []
    if found is not None:
        for name, s, role in zip(names, found, roles):
            if s is not None and (s.nan or s.inf) and role not in ("bn_moving_mean", "bn_moving_variance"):
                findings.append(
                    Finding(
                        "non-finite",
                        "error",
                        None,
                        name,
                        f"{name} holds {s.nan} NaN and {s.inf} Inf values: training diverged before this was "
                        "saved; restore an earlier checkpoint or lower the learning rate",
                    )
                )
    paths = list(map(description.object_path, entries))
    if set(map(type, shapes)) != {tuple}:
        shapes = tuple(s if s.__class__ is tuple else tuple(s) for s in shapes)
    sizes = {s: prod(s) for s in dict.fromkeys(shapes)}  # shape -> elements: a checkpoint has few distinct shapes
    columns = {
        "name": names,
        "dtype": dtypes,
        "shape": shapes,
        "size": list(map(sizes.__getitem__, shapes)),
        "nbytes": nbytes,
        "in_graph": (None,) * len(names)
        if description.in_graph is not_checked
        else list(map(description.in_graph, names)),
        "role": roles,
        "object_path": paths,
    }
    for field in _NO_STATISTICS:
        columns[field] = (
            (None,) * len(entries) if found is None else [None if s is None else getattr(s, field) for s in found]
        )
    if pattern is not None:
        by_path = description.match_object_paths
        keep = [bool(pattern.search(n) or (by_path and pattern.search(p or ""))) for n, p in zip(names, paths)]
        columns = {field: list(compress(c, keep)) for field, c in columns.items()}
    return TensorTable(columns[field] for field in TENSOR_FIELDS), findings


def _statistics(reader, entries, jobs: int, unreadable: dict) -> list[TensorStats | None]:
    """Each entry's statistics (None: not a number type, or unreadable: added to ``unreadable``)."""
    wanted = [e for e in entries if e.name not in unreadable and e.dtype in STATS_DTYPES]
    computed = iter_stats(reader, wanted, jobs)
    out: list[TensorStats | None] = []
    taken = 0  # wanted[:taken] have their statistics
    for e in entries:
        s = None
        if taken < len(wanted) and wanted[taken] is e:
            s, err = next(computed)
            taken += 1
            if err is not None:
                unreadable[e.name] = err
        out.append(s)
    return out
