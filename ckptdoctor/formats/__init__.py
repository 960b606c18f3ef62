"""Storage formats, each an adapter with the same verbs (``base.Model``), and the dispatch between them.

``open_model`` looks at what the user's path is (a Keras file, a SavedModel
directory, or a checkpoint) and opens it with its format's adapter; the pipelines
never ask which format they hold.
"""

from __future__ import annotations

import os

from ckptdoctor.formats.base import Model

__all__ = ["open_model"]


def open_model(path, graph=None, for_repair: bool = False) -> Model:
    """The adapter of the checkpoint, SavedModel or Keras file at ``path``.

    A SavedModel directory is read as a SavedModel unless ``graph`` is given (inspect
    then checks its bundle against that graph, or with ``graph=False`` lists it alone).

    Raises:
        CkptDoctorError: nothing readable there; the message says what was expected.
    """
    path = os.fspath(path)
    # A checkpoint prefix names no file: the Keras and SavedModel modules are imported only for a path that
    # exists (on a listing of 100,000 tensors, their imports were 3% of the time).
    if os.path.exists(path):
        from ckptdoctor.formats.keras.files import is_keras_file

        if is_keras_file(path):
            from ckptdoctor.formats.keras.adapter import KerasFile

            return KerasFile(path, graph)
    saved_model = False
    if os.path.isdir(path):
        from ckptdoctor.formats.savedmodel.layout import is_saved_model_dir

        saved_model = is_saved_model_dir(path)
    if saved_model and (for_repair or graph in (None, True)):
        from ckptdoctor.formats.savedmodel.adapter import SavedModelDir

        return SavedModelDir(path, graph, for_repair=for_repair)
    if not saved_model:
        tf2 = _tf2_checkpoint(path, graph)
        if tf2 is not None:
            return tf2
    from ckptdoctor.formats.tf1.adapter import TF1Checkpoint

    return TF1Checkpoint(path, graph)


def _tf2_checkpoint(path: str, graph):
    """The TF2 adapter when ``path`` is an object-based checkpoint without a MetaGraphDef (or ``graph`` names a
    Keras model), else None."""
    from ckptdoctor.errors import CkptDoctorError
    from ckptdoctor.formats.tf2.adapter import TF2Checkpoint
    from ckptdoctor.formats.tf2.objects import has_object_graph
    from ckptdoctor.readers.bundle import BundleReader
    from ckptdoctor.readers.resolve import resolve_checkpoint
    from ckptdoctor.runtime.keras_build import is_model_description

    described = is_model_description(graph)
    if not described and graph not in (None, True, False):
        return None  # a MetaGraphDef
    reader = None
    try:
        resolved = resolve_checkpoint(path)
        if resolved.kind != "v2" or (
            not described and graph is not False and os.path.isfile(resolved.prefix + ".meta")
        ):
            return None
        if not described:
            reader = BundleReader(resolved.prefix)
            if not has_object_graph(reader):
                reader.close()
                return None
    except CkptDoctorError:
        return None  # the TF1 adapter says what is wrong
    return TF2Checkpoint(resolved, graph, reader=reader)  # the index is read once
