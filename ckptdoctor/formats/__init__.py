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
    from ckptdoctor.formats.keras.files import is_keras_file
    from ckptdoctor.formats.savedmodel.layout import is_saved_model_dir

    path = os.fspath(path)
    if is_keras_file(path):
        from ckptdoctor.formats.keras.adapter import KerasFile

        return KerasFile(path, graph)
    if is_saved_model_dir(path) and (for_repair or graph in (None, True)):
        from ckptdoctor.formats.savedmodel.adapter import SavedModelDir

        return SavedModelDir(path, graph, for_repair=for_repair)
    from ckptdoctor.formats.tf1.adapter import TF1Checkpoint

    return TF1Checkpoint(path, graph)
