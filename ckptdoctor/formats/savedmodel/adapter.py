"""The SavedModel adapter: the ``variables/`` bundle, read TF-free, checked against ``saved_model.pb``.

Inspect describes the bundle by the SavedModel's object graph (``describe``). Repair
needs a model it can run: tf-keras' ``keras_metadata.pb`` (``model.save("dir")``)
rebuilds it with ``tf_keras.models.load_model`` (Lambda layers refused before loading
unless ``--unsafe``); the BN inputs are measured as for Keras files
(``runtime.keras_runner``), and only ``variables/variables.*`` is rewritten (``store``).
"""

from __future__ import annotations

import os

from ckptdoctor.constants import KERAS_METADATA_PB, SAVED_MODEL_VARIABLES
from ckptdoctor.errors import (
    CheckpointNotFoundError,
    CkptDoctorError,
    CorruptCheckpointError,
    OutputExistsError,
    UnsupportedFormatError,
)
from ckptdoctor.formats.base import Description, RepairOptions, Written
from ckptdoctor.formats.savedmodel.describe import describe_saved_model_dir
from ckptdoctor.formats.savedmodel.store import default_output_dir, write_directory
from ckptdoctor.readers.bundle import BundleReader

__all__ = ["SavedModelDir"]


class SavedModelDir:
    """A SavedModel directory; for inspect and diff named by its bundle prefix, for repair by the directory."""

    family = "tensorflow"
    config = None
    format = "tf-saved-model"

    def __init__(self, path: str, graph=None, for_repair: bool = False):
        self.directory = os.path.normpath(os.fspath(path))
        self._graph = graph
        self._prefix = os.path.join(self.directory, SAVED_MODEL_VARIABLES)
        if not for_repair and not os.path.isfile(self._prefix + ".index"):
            raise CheckpointNotFoundError(
                f"{self.directory} is a SavedModel without variables ({SAVED_MODEL_VARIABLES}.index is missing): "
                "it holds no tensors to inspect; save the model again if it should have weights"
            )
        self.path = self.directory if for_repair else self._prefix
        self.resolved_from = f"the variables of the SavedModel {self.directory}"
        self._reader: BundleReader | None = None

    @property
    def reader(self):
        if self._reader is None:
            self._reader = BundleReader(self._prefix)
        return self._reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def comparable_name(self, key: str) -> str:
        return key

    def describe(self) -> Description:
        return describe_saved_model_dir(self.directory, self.reader)

    # ------------------------------------------------------------------ repair

    def check_repair(self, options: RepairOptions) -> None:
        if self._graph or options.training or options.feed:
            raise CkptDoctorError(
                "--graph, --training and --feed are for TF1 checkpoints: a SavedModel brings its own model; drop them"
            )
        if not os.path.isfile(os.path.join(self.directory, KERAS_METADATA_PB)):
            raise UnsupportedFormatError(
                f"{self.directory} is a SavedModel without {KERAS_METADATA_PB} (e.g. written by Keras 3 model.export "
                "or tf.saved_model.save): it holds traced functions but no Keras model to run the BN layers in "
                "training mode, so it cannot be repaired; repair the model it was exported from (.keras, .h5) and "
                "export again"
            )
        if not os.path.isfile(self._prefix + ".index"):
            raise CorruptCheckpointError(
                f"{self.directory} has no {SAVED_MODEL_VARIABLES}.index: the SavedModel holds no variables"
            )

    def output_path(self, output: str | None, in_place: bool, force: bool, dry_run: bool) -> str:
        path = self.directory
        out = path if in_place else os.path.normpath(output or default_output_dir(path))
        if not in_place and os.path.abspath(out) == os.path.abspath(path):
            raise CkptDoctorError(
                f"--output is the input {path} itself: pass --in-place to replace it (keeping a backup)"
            )
        if not dry_run and not in_place and os.path.lexists(out) and not force:
            raise OutputExistsError(f"{out} exists: pass --force to overwrite it, or choose --output elsewhere")
        return out

    def runner(self, arrays: dict, options: RepairOptions):
        from ckptdoctor.formats.savedmodel.metadata import bundle_keys, read_keras_metadata
        from ckptdoctor.runtime.keras_runner import load_runner

        path = self.directory
        config, code, version = read_keras_metadata(path)
        return load_runner(
            path,
            config,
            code,
            version if version and version.startswith("2") else "2",
            "keras-saved-model",
            arrays,
            data=options.data,
            input=options.input,
            unsafe=options.unsafe,
            keys_of=lambda bns: bundle_keys(bns, self.reader),
            read=self.reader.read,
            graph=f"{path} ({KERAS_METADATA_PB}, tf-keras)",
        )

    def write(self, replacements: dict, output: str, in_place: bool, force: bool) -> Written:
        done, backup = write_directory(self.directory, output, self.reader, replacements, in_place)
        return Written(
            done["untouched"],
            done["updated"],
            backup,
            (f"only {SAVED_MODEL_VARIABLES}.* was rewritten; every other file is the input's own",),
        )
