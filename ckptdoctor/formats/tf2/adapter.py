"""The TF2 adapter: object-based checkpoints of ``tf.train.Checkpoint`` / ``CheckpointManager``.

These hold no graph: the checkpoint's own object graph (``objects``) says which
objects are BN layers and which tensors are optimizer state, without TensorFlow.
With ``--graph`` naming the model (a ``.keras``, a config ``.json`` or a
``package.module:function`` factory, ``runtime.keras_build``), the model is matched to
the checkpoint by structure (``match``): every tensor is named by its layer path and
the model's variables are cross-referenced. Repair builds that model, restores the
checkpoint into it, measures with the Keras runner, and writes the same bundle again
(``writers.bundle``): the same object graph and keys, every tensor but the moving
statistics bit-identical (optimizer slots, step counters, ``save_counter``, other roots).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import cast

from ckptdoctor.analysis.diagnose import Advice, Finding, roles_from_names
from ckptdoctor.errors import CorruptCheckpointError, GraphError, UnsupportedFormatError
from ckptdoctor.formats.base import Description, RepairOptions, Written
from ckptdoctor.formats.tf2.objects import ObjectGraph, read_object_graph
from ckptdoctor.readers.bundle import BundleReader
from ckptdoctor.readers.resolve import ResolvedCheckpoint

__all__ = ["TF2Checkpoint", "TF2_ADVICE"]

#: What users of tf.train.Checkpoint do about missing or never-updated statistics.
TF2_ADVICE = Advice(
    source="the model's",
    save="save the whole model with the checkpoint (tf.train.Checkpoint(model=model) tracks every variable)",
    update="they were never updated (the layer never ran in training mode: a custom loop must call "
    "model(x, training=True)); train with it in training mode",
)
_NEEDS_MODEL = (
    "pass --graph with the model: a .keras file, a model config .json or a package.module:function factory "
    "that returns it"
)


class TF2Checkpoint:
    """A TF2 object-based checkpoint, described by its object graph and, with ``--graph``, by the model."""

    family = "tensorflow"
    config = None
    format = "tf2-object-checkpoint"

    def __init__(self, resolved: ResolvedCheckpoint, graph=None, reader: BundleReader | None = None):
        self.path = resolved.prefix
        self.resolved_from = resolved.how
        self._graph = graph if graph not in (None, True, False, "") else None
        # The dispatch's reader when it opened one already: the index of 100,000 tensors is read once.
        self.reader = reader if reader is not None else BundleReader(resolved.prefix)
        self._objects: ObjectGraph | None = None

    def close(self) -> None:
        self.reader.close()

    def comparable_name(self, key: str) -> str:
        return key

    def objects(self) -> ObjectGraph:
        if self._objects is None:
            self._objects = read_object_graph(self.reader)
        return self._objects

    def _model(self, unsafe: bool = False):
        """``(keras, model, match)``: the described model matched to the checkpoint."""
        from ckptdoctor.formats.tf2.match import match_model
        from ckptdoctor.runtime.keras_build import build_model
        from ckptdoctor.tfcompat import import_tensorflow

        if self._graph is None:
            raise GraphError(f"{self.path}: {_NEEDS_MODEL}")
        tf = import_tensorflow()
        K, model = build_model(self._graph, unsafe)
        return K, model, match_model(tf, model, self.objects())

    # ------------------------------------------------------------------ inspect

    def describe(self) -> Description:
        if self._graph is None:
            try:
                graph = self.objects()
            except CorruptCheckpointError as e:
                return self._describe_by_names(str(e))
            notes = [
                f"BN layers found from the checkpoint's object graph (objects with moving_mean and moving_variance "
                f"children), named by object path; {_NEEDS_MODEL} to name them by layer and check the model"
            ]
            role, roles = _roles(graph, frozenset())
            return Description(
                graph=None,
                bn_layers=graph.bn_layers(),
                role=role,
                roles=roles,
                notes=notes,
                object_path=self._object_path({}),
                match_object_paths=True,
                advice=TF2_ADVICE,
            )
        return self._describe_with_model()

    def _describe_by_names(self, problem: str) -> Description:
        """Without a model, a checkpoint whose object graph cannot be used is still listed: BN layers by name."""
        keys = [e.name for e in self.reader.entries()]
        notes = [f"{problem}: every tensor is listed, BN layers found by name; the checkpoint may be damaged"]
        return Description.from_names(keys, notes, TF2_ADVICE)

    def _object_path(self, names: dict[str, str]):
        graph = self.objects()
        node_of, path_of = graph.node_of, graph.path_of

        def object_path(entry) -> str | None:
            name = entry[0]  # TensorEntry.name
            if names:
                found = names.get(name)
                if found:
                    return found
            node = node_of.get(name)
            return (path_of[node] if node is not None else None) or entry.object_path

        return object_path

    def _describe_with_model(self) -> Description:
        from ckptdoctor.formats.tf2.match import variable_paths
        from ckptdoctor.runtime.keras_model import find_bn_layers

        K, model, match = self._model()
        graph = self.objects()
        paths = variable_paths(model)
        names = {key: paths.get(vid, key) for vid, key in match.key_of.items()}
        specs = []
        for bn in find_bn_layers(K, model):
            keys = {
                w: match.key_of.get(id(getattr(bn.layer, w, None)))
                for w in ("moving_mean", "moving_variance", "gamma", "beta")
            }
            keys["moving_mean"] = keys["moving_mean"] or f"{bn.name}/moving_mean"
            keys["moving_variance"] = keys["moving_variance"] or f"{bn.name}/moving_variance"
            specs.append({"layer": bn.name, **keys, "channels": None, "trainable": bn.trainable})
        findings = self._cross_reference(model, match, paths)
        declared = set(match.key_of.values())
        others = sorted(set(graph.roots) - {match.root} - graph.optimizers)
        notes = [
            f"the model is the checkpoint's root object {match.root!r} (matched by structure); "
            f"{len(declared)} of its {len(model.weights)} variables found"
        ]

        def in_graph(key: str) -> bool | None:
            if key in declared or graph.role(key) is not None:
                return True
            return False if key in match.subtree_keys else None

        role, roles = _roles(graph, declared)
        return Description(
            graph=f"{self._graph} (model)",
            bn_layers=specs,
            role=role,
            roles=roles,
            in_graph=in_graph,
            findings=findings,
            notes=notes + _other_roots_note(others),
            object_path=self._object_path(names),
            match_object_paths=True,
            advice=TF2_ADVICE,
        )

    def _cross_reference(self, model, match, paths: dict[int, str]) -> list[Finding]:
        shapes = {e.name: tuple(e.shape) for e in self.reader.entries()}
        findings = []
        for v in match.unmatched:
            name = paths.get(id(v), _leaf_name(v))
            severity = (
                "error"
                if getattr(v, "trainable", True) or name.endswith(("moving_mean", "moving_variance"))
                else "warning"
            )
            findings.append(
                Finding(
                    "missing-in-checkpoint",
                    severity,
                    None,
                    name,
                    f"the model's variable {name} is not in the checkpoint: a restore leaves it at its initial value; "
                    "check that --graph is the model that wrote this checkpoint",
                )
            )
        for v in model.weights:
            key = match.key_of.get(id(v))
            want = tuple(int(d) for d in v.shape)
            if key is not None and key in shapes and shapes[key] != want:
                findings.append(
                    Finding(
                        "shape-mismatch",
                        "error",
                        None,
                        key,
                        f"{key} ({paths.get(id(v), '?')}) has shape {list(shapes[key])}, but the model builds it as "
                        f"{list(want)}: pass the model that wrote this checkpoint",
                    )
                )
        for key in sorted(match.subtree_keys - set(match.key_of.values())):
            findings.append(
                Finding(
                    "unexpected-in-checkpoint",
                    "warning",
                    None,
                    key,
                    f"checkpoint tensor {key} belongs to no variable of the model: it is ignored on restore; "
                    "check that --graph is the model that wrote this checkpoint",
                )
            )
        return findings

    # ------------------------------------------------------------------ repair

    def check_repair(self, options: RepairOptions) -> None:
        if self._graph is None:
            raise GraphError(f"repair of the TF2 checkpoint {self.path} needs the model to run: {_NEEDS_MODEL}")
        if options.training or options.feed:
            raise UnsupportedFormatError(
                "--training and --feed are for TF1 graphs: a Keras model switches its BN layers itself; drop them"
            )

    def output_path(self, output: str | None, in_place: bool, force: bool, dry_run: bool) -> str:
        from ckptdoctor.writers.bundle import bundle_output_path

        return bundle_output_path(self.path, output, in_place, force, dry_run)

    def runner(self, arrays: dict, options: RepairOptions):
        from ckptdoctor.formats.tf2.restore import keras_runner

        K, model, match = self._model(options.unsafe)
        return keras_runner(
            K,
            model,
            match,
            self.path,
            self.reader,
            arrays,
            options,
            graph=f"{self._graph} (model, restored from {self.path})",
        )

    def write(self, replacements: dict, output: str, in_place: bool, force: bool) -> Written:
        from ckptdoctor.writers.bundle import write_checkpoint

        done = write_checkpoint(self.reader, output, replacements, meta_path=None, force=force, in_place=in_place)
        notes: tuple[str, ...] = (
            "the same object graph and keys as the input; every tensor but the moving statistics is the "
            "input's own, bit for bit",
        )
        if in_place and os.path.isfile(os.path.join(os.path.dirname(self.path), "checkpoint")):
            notes += (
                f"in place: {self.path} now holds the repaired statistics, the directory's 'checkpoint' "
                f"file still names it (left as it is), and the original is kept as {done['backup']}",
            )
        return Written(done["untouched"], done["updated"], done["backup"], notes)


def _roles(graph: ObjectGraph, declared: set[str] | frozenset[str]) -> tuple[Callable[[str], str], Callable]:
    """``Description.role`` and ``roles``: the object graph's role, else ``weight`` for a ``declared`` key, else
    the role its name says: for a model object, the name of its path, not of its key. A key follows the saver's
    first route, and with ``tf.train.Checkpoint(model=..., optimizer=...)`` a Keras 3 model's kernel is saved as
    ``optimizer/_trainable_variables/0/...``, which names optimizer state."""

    node_of, in_model, path_of = graph.node_of, graph.in_model, graph.path_of

    def role(key: str) -> str:
        return roles((key,))[0]

    def roles(keys: Sequence[str]) -> list[str]:
        # The graph's roles first (optimizer state, root counters: outside the model), then "weight" for the
        # declared keys, then the names' roles for the rest only (an optimizer's 66,000 slots are not also
        # matched against the name patterns).
        nodes = list(map(node_of.get, keys))
        outside = [i for i, node in enumerate(nodes) if node is not None and not in_model[node]]
        out: list[str | None] = [None] * len(keys)
        for i, found in zip(outside, graph.outside_roles(cast("list[int]", [nodes[i] for i in outside]))):
            out[i] = found
        if declared:
            out = ["weight" if found is None and key in declared else found for key, found in zip(keys, out)]
        rest = [i for i, found in enumerate(out) if found is None] if outside or declared else range(len(keys))
        pairs = zip(map(keys.__getitem__, rest), map(nodes.__getitem__, rest))
        names = [(node is not None and in_model[node] and path_of[node]) or key for key, node in pairs]
        for i, found in zip(rest, roles_from_names(names)):
            out[i] = found
        return out  # type: ignore[return-value]  # every item set above

    return role, roles


def _leaf_name(v) -> str:
    return str(getattr(v, "path", None) or getattr(v, "name", "?"))


def _other_roots_note(others: list[str]) -> list[str]:
    if not others:
        return []
    return [f"root objects not checked against the model: {', '.join(others)} (their tensors are listed as stored)"]
