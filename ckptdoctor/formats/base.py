"""The verbs every storage format answers, and the data they answer with.

One adapter per format (``tf1``, ``keras``, ``savedmodel``), opened on the user's
path by ``formats.open_model``. The pipelines are written once against these verbs:

* ``reader``: which tensors, with their dtypes, shapes and values (a ``CheckpointReader``);
* ``describe()``: what the model says: its variables, BN layers and roles, and the
  cross-reference findings only the format can make (a ``Description``);
* ``runner(arrays, options)``: the model loaded and bound to the data, which runs
  batches and returns each BN input's moments (a ``runtime.base.Runner``);
* ``output_path(...)`` and ``write(replacements, ...)``: a verified, atomic write of
  the replaced tensors, every other byte the input's own (a ``Written``).

Formats never import each other; what two of them share (running a Keras model,
writing a TensorFlow bundle) lives below them, in ``runtime`` and ``writers``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol

from ckptdoctor.analysis.diagnose import Advice, Finding, bn_layers_from_names, role_from_name, roles_from_names
from ckptdoctor.readers.base import CheckpointReader, TensorEntry
from ckptdoctor.runtime.base import Runner

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Description", "RepairOptions", "Written", "Model"]


def not_checked(key: str) -> None:
    """``Description.in_graph`` when nothing was checked: None for every key."""
    return None


@dataclass
class Description:
    """What a model (graph, config, SavedModel) says about the tensors, for ``inspect``.

    Attributes:
        graph: what described the model, as the report names it; None: nothing did
            (BN layers then come from tensor names).
        bn_layers: one spec per BN layer for ``diagnose_bn``: ``layer``, ``moving_mean``,
            ``moving_variance``, ``gamma``, ``beta`` (keys or None), ``channels`` and
            ``trainable`` (None: unknown).
        role: tensor key -> role (``weight``, ``optimizer_slot``, ``bn_moving_mean``...).
        in_graph: tensor key -> whether the model declares it (None: not checked).
        findings: the cross-reference findings (missing, unexpected, mis-shaped tensors,
            update ops never run).
        trained: whether the model took a training step (None: unknown).
        advice: how the format's users fix what ``diagnose_bn`` finds.
        object_path: entry -> the object path the report shows beside its key.
        match_object_paths: ``--match`` also sees the object paths.
        bn_from_names: the BN layers were guessed from tensor names, not declared.
        roles: the roles of many keys at once, the same as ``role`` of each (a list, in order); None: ``role``
            is asked key by key.
    """

    graph: str | None
    bn_layers: list[dict]
    role: Callable[[str], str]
    in_graph: Callable[[str], bool | None] = not_checked
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    trained: bool | None = None
    advice: Advice = field(default_factory=Advice)
    object_path: Callable[[TensorEntry], str | None] = lambda entry: entry.object_path
    match_object_paths: bool = False
    bn_from_names: bool = False
    roles: Callable[[Sequence[str]], list[str]] | None = None

    @classmethod
    def from_names(cls, keys: list[str], notes: list[str], advice: Advice | None = None) -> Description:
        """Nothing describes the model: BN layers and roles are guessed from the tensor names."""
        return cls(
            graph=None,
            bn_layers=bn_layers_from_names(keys),
            role=role_from_name,
            roles=roles_from_names,
            notes=notes,
            bn_from_names=True,
            advice=advice or Advice(),
        )


@dataclass(frozen=True)
class RepairOptions:
    """What the user asked of a repair, beyond the paths."""

    data: str = ""  # the data as the user named them, for messages
    input: str | None = None
    training: str | None = None
    feed: tuple[str, ...] = ()
    batch_size: int = 256
    max_samples: int | None = None
    method: str = "train"
    unsafe: bool = False
    progress: bool = False


class Written(NamedTuple):
    """What a verified write left: tensors verified bit-identical, tensors replaced, the backup."""

    untouched: int
    updated: int
    backup: str | None = None
    notes: tuple[str, ...] = ()


class Model(Protocol):
    """An opened checkpoint or model file: the adapter of its format."""

    path: str  # the checkpoint as the report names it
    resolved_from: str  # one line: how the user's path was understood
    family: str  # "keras" or "tensorflow": whose tensor names these are (diff)

    @property
    def format(self) -> str:
        """The format's name in reports (``tf-v2-bundle``, ``keras-v3``, ``tf-saved-model``...)."""

    @property
    def reader(self) -> CheckpointReader:
        """The tensors: names, dtypes, shapes and values."""

    @property
    def config(self) -> dict | None:
        """A Keras model config the file carries."""

    def describe(self) -> Description:
        """What the model says about the tensors."""

    def comparable_name(self, key: str) -> str:
        """The key under which ``diff`` matches this tensor with the other side's."""

    def check_repair(self, options: RepairOptions) -> None:
        """Refuse options the format cannot use, before anything is read."""

    def output_path(self, output: str | None, in_place: bool, force: bool, dry_run: bool) -> str:
        """Where the repaired model goes; refuses an existing output without ``force``."""

    def runner(self, arrays: dict, options: RepairOptions) -> Runner:
        """The model loaded and bound to the data arrays (``load_data``'s dict)."""

    def write(self, replacements: dict[str, np.ndarray], output: str, in_place: bool, force: bool) -> Written:
        """Write the input with ``replacements``, verified, then renamed into place."""

    def close(self) -> None:
        """Release the files."""
