"""The described model with the TF2 checkpoint restored into it, bound to the data: the runner of TF2 repairs."""

from __future__ import annotations

from ckptdoctor.errors import GraphError, UnsupportedFormatError
from ckptdoctor.formats.base import RepairOptions

__all__ = ["keras_runner"]

_BN_WEIGHTS = ("moving_mean", "moving_variance", "gamma", "beta")


def _differences(model, match, reader) -> list[str]:
    """What keeps the model from restoring the checkpoint: variables it lacks, shapes that differ."""
    from ckptdoctor.formats.tf2.match import variable_paths

    paths = variable_paths(model)
    shapes = {e.name: tuple(e.shape) for e in reader.entries()}
    out = [f"{paths.get(id(v), getattr(v, 'name', '?'))} is not in the checkpoint" for v in match.unmatched]
    for v in model.weights:
        key = match.key_of.get(id(v))
        want = tuple(int(d) for d in v.shape)
        if key is not None and key in shapes and shapes[key] != want:
            out.append(
                f"{paths.get(id(v), key)} has shape {list(shapes[key])} in the checkpoint, {list(want)} in the model"
            )
    return out


def keras_runner(K, model, match, prefix: str, reader, arrays: dict, options: RepairOptions, graph: str):
    """Restore ``prefix`` into ``model`` (its root object ``match.root``) and bind it to the data.

    Raises:
        GraphError: the model does not match the checkpoint (the message lists what differs).
    """
    from ckptdoctor.runtime.keras_model import (
        bind_inputs,
        check_stored_values,
        frozen_note,
        held_in_inference,
        input_arrays,
        input_names,
        targets,
        trainable_bn_layers,
        variant_notes,
    )
    from ckptdoctor.runtime.keras_runner import KerasRunner
    from ckptdoctor.tfcompat import import_tensorflow

    differs = _differences(model, match, reader)
    if differs:
        shown = "; ".join(differs[:5]) + (f"; and {len(differs) - 5} more" if len(differs) > 5 else "")
        raise GraphError(f"the model does not match {prefix} ({shown}): pass the model that wrote this checkpoint")
    tf = import_tensorflow()
    status = tf.train.Checkpoint(**{match.root: model}).read(prefix)
    try:
        status.assert_existing_objects_matched()
    except AssertionError as e:
        raise GraphError(f"TensorFlow cannot restore {prefix} into the model: {str(e).splitlines()[0][:300]}") from e
    status.expect_partial()  # the optimizer and other root objects are not restored: they are not run
    bns, frozen = trainable_bn_layers(K, model, prefix)
    keys = {}
    for bn in bns:
        keys[bn.name] = {
            w: match.key_of[id(getattr(bn.layer, w))]
            for w in _BN_WEIGHTS
            if getattr(bn.layer, w, None) is not None and id(getattr(bn.layer, w)) in match.key_of
        }
        if "moving_mean" not in keys[bn.name] or "moving_variance" not in keys[bn.name]:
            raise UnsupportedFormatError(f"{prefix} does not store the moving statistics of BN layer {bn.name}")
    stored = check_stored_values(bns, keys, reader.read, prefix)
    names, xs = input_arrays(None, arrays, options.data, options.input, names=input_names(model))
    return KerasRunner(
        model,
        bns,
        frozen,
        targets(bns, keys, stored),
        bind_inputs(model, names, xs),
        graph=graph,
        held=held_in_inference(K, model),
        notes=frozen_note(frozen) + variant_notes(bns),
    )
