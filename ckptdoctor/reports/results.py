"""What the pipelines return: reports as data, which the rest of ``reports`` renders and stores."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from operator import attrgetter

from ckptdoctor.analysis.changes import LayerRepair
from ckptdoctor.analysis.diagnose import SEVERITIES, BNLayerStatus, Finding
from ckptdoctor.analysis.selfcheck import OutputCheck

__all__ = [
    "TensorReport",
    "StoredStatistics",
    "InspectReport",
    "RepairReport",
    "LayerRepair",
    "summary",
    "sort_findings",
    "tensor_row",
    "tensor_values",
    "TensorRows",
    "TensorTable",
    "TENSOR_FIELDS",
]


@dataclass(frozen=True, slots=True)  # slots: 100,000 of them cost a third of the memory
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


#: TensorReport's fields, in order: the keys of a tensor's JSON row.
TENSOR_FIELDS = tuple(f.name for f in fields(TensorReport))
#: A TensorReport's values in ``TENSOR_FIELDS`` order (for renderers that write a row without a dict).
tensor_values = attrgetter(*TENSOR_FIELDS)
_SCALARS = frozenset({"checkpoint", "format", "graph", "summary"})


def tensor_row(t: TensorReport) -> dict:
    """One tensor's row of the JSON document (``dataclasses.asdict`` without its deep copies, shape a list)."""
    row = dict(zip(TENSOR_FIELDS, tensor_values(t)))
    row["shape"] = list(t.shape)
    return row


class TensorTable(Sequence):
    """``InspectReport.tensors``: an immutable sequence of ``TensorReport``, kept as one column per field.

    A listing of 100,000 tensors made 100,000 frozen dataclasses (0.1 s, by hand) only for the JSON
    renderer to take them apart again. The pipeline fills columns instead; a ``TensorReport`` is made when a
    row is asked for (indexing, iterating), and ``reports.table`` writes the JSON rows from the columns.

    Equal to another ``TensorTable`` or to a tuple of ``TensorReport`` with the same rows, with the
    same hash as that tuple.
    """

    __slots__ = ("_columns",)

    def __init__(self, columns: Iterable[Sequence]):
        """Args: columns: ``TENSOR_FIELDS``' values in that order, each a sequence of one value per tensor."""
        made = tuple(c if c.__class__ is tuple else tuple(c) for c in columns)
        if len(made) != len(TENSOR_FIELDS) or len({len(c) for c in made}) > 1:
            raise ValueError(f"expected {len(TENSOR_FIELDS)} columns of one length, got {[len(c) for c in made]}")
        self._columns = made

    @classmethod
    def of(cls, rows: Iterable[TensorReport]) -> TensorTable:
        """The table of these rows."""
        listed = tuple(rows)
        return cls(zip(*map(tensor_values, listed)) if listed else ((),) * len(TENSOR_FIELDS))

    def column(self, name: str) -> tuple:
        """Every row's value of one field (``TENSOR_FIELDS``), in order."""
        return self._columns[TENSOR_FIELDS.index(name)]

    @property
    def columns(self) -> tuple[tuple, ...]:
        """All columns, in ``TENSOR_FIELDS`` order."""
        return self._columns

    def __len__(self) -> int:
        return len(self._columns[0])

    def __getitem__(self, index):
        if isinstance(index, slice):
            return TensorTable(c[index] for c in self._columns)
        return TensorReport(*(c[index] for c in self._columns))

    def __iter__(self) -> Iterator[TensorReport]:
        return map(TensorReport, *self._columns)

    def __eq__(self, other) -> bool:
        if isinstance(other, TensorTable):
            return self._columns == other._columns
        if isinstance(other, tuple):
            return tuple(self) == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"TensorTable({list(self)!r})" if len(self) <= 3 else f"TensorTable(<{len(self)} tensors>)"


@dataclass(frozen=True)
class TensorRows:
    """The ``tensors`` of the JSON document: iterated, one ``tensor_row`` dict per tensor.

    ``reports.table.iter_json`` writes ``tensors`` itself, without the dicts.
    """

    tensors: Sequence[TensorReport]

    def __iter__(self):
        return map(tensor_row, self.tensors)


@dataclass(frozen=True)
class StoredStatistics:
    """One BN layer's stored moving statistics, per channel (None: not stored, unreadable or not numeric)."""

    layer: str
    mean: tuple[float, ...] | None
    variance: tuple[float, ...] | None


def sort_findings(findings) -> list[Finding]:
    """Findings in the order inspect lists them: errors, warnings, infos; then by code, layer and tensor."""
    order = {severity: i for i, severity in enumerate(SEVERITIES)}
    return sorted(findings, key=lambda f: (order[f.severity], f.code, f.layer or "", f.tensor or ""))


def summary(total_tensors: int, total_bytes: int, bn_layers, findings) -> dict:
    """The counts at the foot of an inspect report."""
    return {
        "tensors": total_tensors,
        "total_bytes": total_bytes,
        "bn_layers": len(bn_layers),
        "errors": sum(f.severity == "error" for f in findings),
        "warnings": sum(f.severity == "warning" for f in findings),
        "infos": sum(f.severity == "info" for f in findings),
        "exit_code": 1 if any(f.severity == "error" for f in findings) else 0,
    }


@dataclass(frozen=True)
class InspectReport:
    """Everything ``inspect`` found, as data.

    ``exit_code`` is 1 when any finding is an error, else 0.
    """

    checkpoint: str
    format: str
    graph: str | None
    tensors: Sequence[TensorReport]  # a TensorTable from inspect; any tuple of TensorReport reads the same
    bn_layers: tuple[BNLayerStatus, ...]
    findings: tuple[Finding, ...]
    notes: tuple[str, ...] = ()
    resolved_from: str = ""
    total_tensors: int = 0
    total_bytes: int = 0
    summary: dict = field(default_factory=dict)
    #: The ``--match`` pattern that chose ``tensors`` (None: every tensor is listed).
    match: str | None = None
    #: Each BN layer's stored values (``bn_layers``' order), for the HTML report's chart; not in JSON or HDF5.
    stored: tuple[StoredStatistics, ...] = field(default=(), compare=False, repr=False)
    #: With ``data``: the dry-run repair that judged the statistics (None without); not in JSON or HDF5.
    data_check: RepairReport | None = field(default=None, compare=False, repr=False)

    @property
    def exit_code(self) -> int:
        return 1 if any(f.severity == "error" for f in self.findings) else 0

    def findings_with(self, code: str) -> list[Finding]:
        """The findings of one code."""
        return [f for f in self.findings if f.code == code]

    def to_dict(self) -> dict:
        """The JSON document of the report (``--format json``)."""
        return {key: value if key in _SCALARS else list(value) for key, value in self.json_items()}

    def json_items(self):
        """The JSON document's ``(key, value)`` pairs in order; the lists as iterators of one dict per row.

        ``reports.table.iter_json`` writes them row by row: no list of 100,000 dicts is built.
        """
        yield "checkpoint", self.checkpoint
        yield "format", self.format
        yield "graph", self.graph
        yield "tensors", TensorRows(self.tensors)
        yield "bn_layers", (asdict(b) for b in self.bn_layers)
        yield "findings", (asdict(f) for f in self.findings)
        yield "summary", dict(self.summary)
        yield "notes", iter(self.notes)


@dataclass(frozen=True)
class RepairReport:
    """What ``repair`` did."""

    checkpoint: str
    graph: str
    data: str
    inputs: tuple[str, ...]
    training_flag: str | None
    method: str
    batch_size: int
    samples: int
    layers: tuple[LayerRepair, ...]
    output: str | None
    backup: str | None
    dry_run: bool
    untouched: int
    updated: int
    notes: tuple[str, ...] = ()
    gap_note: str = ""
    #: Layers (Keras) or ops (graphs) that take a training argument or switch but were held in
    #: inference mode while the BN layers ran in training mode: dropout, noise, stochastic depth...
    held_in_inference: tuple[str, ...] = ()
    #: The final output's gap to the reference before and after (``selfcheck``); None when it
    #: could not be measured (the notes say why).
    output_check: OutputCheck | None = None
    #: ``repair-not-improved`` when the repair was refused (nothing written).
    findings: tuple[Finding, ...] = ()
    refused: bool = False
    #: The BN layers' names in the order the network runs them (empty: unknown); ``layers`` keep the
    #: format's order. Not in the JSON document, whose schema stays as it was.
    order: tuple[str, ...] = ()

    @property
    def exit_code(self) -> int:
        """1 when the repair was refused (nothing written), else 0."""
        return 1 if self.refused else 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = [asdict(layer) for layer in self.layers]
        del d["order"]
        return d
