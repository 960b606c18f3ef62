"""The TF1 adapter: a checkpoint prefix (V2 bundle, or V1 through TensorFlow) with its MetaGraphDef.

The graph, when there is one (``<prefix>.meta`` or ``--graph``), says which
variables exist, which are BN statistics and which are trainable; without it BN
layers are found by their tensor names. Repair runs the graph (``runner``) and
writes a new bundle with TensorFlow's own kernel (``writers.bundle``).
"""

from __future__ import annotations

import os

from ckptdoctor.analysis.diagnose import diagnose_graph
from ckptdoctor.errors import CkptDoctorError, GraphError, MissingDependencyError
from ckptdoctor.formats.base import Description, RepairOptions, Written
from ckptdoctor.readers.resolve import resolve_checkpoint

__all__ = ["TF1Checkpoint"]


def _open_reader(resolved):
    """The native reader for V2 bundles; TensorFlow's for V1 tables."""
    if resolved.kind == "v2":
        from ckptdoctor.readers.bundle import BundleReader

        return BundleReader(resolved.prefix)
    from ckptdoctor.errors import UnsupportedFormatError
    from ckptdoctor.tfcompat import tensorflow_available

    if not tensorflow_available():
        raise UnsupportedFormatError(
            f"{resolved.prefix} is not a V2 checkpoint (no .index beside it); reading older formats "
            "needs TensorFlow: pip install 'ckptdoctor[tf]'"
        )
    from ckptdoctor.formats.tf1.v1reader import TFReader

    return TFReader(resolved.prefix)


def _graph_path(prefix: str, graph) -> str | None:
    if graph is False or graph == "":
        return None
    if graph not in (None, True):
        return os.fspath(graph)
    meta = prefix + ".meta"
    return meta if os.path.isfile(meta) else None


class TF1Checkpoint:
    """A TF1 or TF2 checkpoint prefix, cross-referenced with a MetaGraphDef when there is one."""

    family = "tensorflow"
    config = None

    def __init__(self, path: str, graph=None):
        self._resolved = resolve_checkpoint(path)
        self.path = self._resolved.prefix
        self.resolved_from = self._resolved.how
        self._graph = graph
        self._reader = None

    @property
    def reader(self):
        """Opened on first use, so that option and graph errors come before the checkpoint is read."""
        if self._reader is None:
            self._reader = _open_reader(self._resolved)
        return self._reader

    @property
    def format(self) -> str:
        return self.reader.format

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def comparable_name(self, key: str) -> str:
        return key

    # ------------------------------------------------------------------ inspect

    def describe(self) -> Description:
        meta = _graph_path(self.path, self._graph)
        notes: list[str] = []
        info = None
        if meta is not None:
            from ckptdoctor.tfcompat import tensorflow_available

            try:
                if not tensorflow_available():
                    raise MissingDependencyError("TensorFlow is not installed")
                from ckptdoctor.formats.tf1.graph import analyze_graph

                info = analyze_graph(meta)
            except MissingDependencyError:
                notes.append(
                    f"graph {meta} not checked: TensorFlow is not installed; "
                    "pip install 'ckptdoctor[tf]' to cross-reference the graph"
                )
        if info is None:
            if meta is None and self._graph is None:
                notes.append(
                    "no graph (.meta) beside the checkpoint: BN layers found by name; pass --graph to check one"
                )
            keys = [e.name for e in self.reader.entries()]
            return Description.from_names(keys, notes)
        by_key = {e.name: e for e in self.reader.entries()}
        layers = [
            {
                "layer": b.layer,
                "moving_mean": b.moving_mean,
                "moving_variance": b.moving_variance,
                "gamma": b.gamma,
                "beta": b.beta,
                "channels": b.channels,
            }
            for b in info.bn_layers
        ]
        stat_keys = {str(layer[k]) for layer in layers for k in ("moving_mean", "moving_variance") if layer.get(k)}
        findings = diagnose_graph(
            info.variables, by_key, info.roles, stat_keys, info.update_ops_unused, info.bn_update_ops
        )
        return Description(
            graph=meta,
            bn_layers=layers,
            role=lambda key: info.roles.get(key) or "other",
            in_graph=lambda key: key in info.variables,
            findings=findings,
            notes=notes,
        )

    # ------------------------------------------------------------------ repair

    def _meta(self) -> str:
        meta = self._graph if self._graph not in (None, True, False, "") else self.path + ".meta"
        if not os.path.isfile(meta):
            raise GraphError(
                f"repair needs the graph: no {meta}; pass --graph with the MetaGraphDef (.meta) of this model"
            )
        return os.fspath(meta)

    def check_repair(self, options: RepairOptions) -> None:
        if self._resolved.kind != "v2":
            raise CkptDoctorError(f"{self.path} is not a V2 checkpoint: repair writes V2 checkpoints only")
        self._meta()

    def output_path(self, output: str | None, in_place: bool, force: bool, dry_run: bool) -> str:
        from ckptdoctor.writers.bundle import bundle_output_path

        return bundle_output_path(self.path, output, in_place, force, dry_run)

    def runner(self, arrays: dict, options: RepairOptions):
        from ckptdoctor.formats.tf1.runner import GraphRunner
        from ckptdoctor.tfcompat import import_tensorflow

        return GraphRunner(import_tensorflow(), self.reader, self._meta(), arrays, options)

    def write(self, replacements: dict, output: str, in_place: bool, force: bool) -> Written:
        from ckptdoctor.writers.bundle import write_checkpoint

        done = write_checkpoint(self.reader, output, replacements, self._meta(), force=force, in_place=in_place)
        return Written(done["untouched"], done["updated"], done["backup"])
