"""Keras 3 model directories: ``keras.saving.save_model(m, "dir", zipped=False)`` and the Hugging Face Hub layout.

Such a directory holds what a ``.keras`` archive holds, as plain files: ``config.json``,
``metadata.json`` and ``model.weights.h5`` (or ``model.weights.npz``), with ``assets/``
when a layer saves assets. A model repository downloaded from the Hugging Face Hub is
the same directory with a ``README.md`` (and ``.gitattributes``) beside it; its files may
be symlinks into the Hub cache's ``blobs/``, which are followed. Nothing is executed:
the config is parsed as JSON, the weights are read with h5py.
"""

from __future__ import annotations

import json
import os

from ckptdoctor.errors import CorruptCheckpointError, UnsupportedFormatError
from ckptdoctor.readers.keras_h5 import KerasH5Reader, is_keras_h5

__all__ = [
    "KerasDirReader",
    "is_keras_dir",
    "read_dir_config",
    "CONFIG_FILE",
    "METADATA_FILE",
    "WEIGHTS_H5",
    "WEIGHTS_NPZ",
    "not_weights_reason",
]

CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
WEIGHTS_H5 = "model.weights.h5"
WEIGHTS_NPZ = "model.weights.npz"


#: How a Git LFS pointer file starts: what a Hub repository cloned without ``git lfs`` holds instead of the weights.
LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def not_weights_reason(path: str) -> str:
    """Why the file at ``path`` (which should hold HDF5 weights) does not: a Git LFS pointer, or something else."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(LFS_POINTER))
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if head == LFS_POINTER:
        return "is a Git LFS pointer, not the weights (the repository was cloned without Git LFS): run git lfs pull"
    return "is not an HDF5 file (truncated, or another format renamed)"


def is_keras_dir(path: str) -> bool:
    """Whether ``path`` is a directory Keras 3 wrote a model into: ``config.json`` beside its weights
    (``model.weights.h5`` or ``.npz``), or beside a ``metadata.json`` naming a ``keras_version``."""
    if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, CONFIG_FILE)):
        return False
    if any(os.path.isfile(os.path.join(path, n)) for n in (WEIGHTS_H5, WEIGHTS_NPZ)):
        return True
    try:
        with open(os.path.join(path, METADATA_FILE), encoding="utf-8") as f:
            return "keras_version" in json.load(f)
    except (OSError, ValueError, TypeError):
        return False


def read_dir_config(path: str) -> tuple[dict, dict]:
    """``config.json`` and ``metadata.json`` (``{}`` when absent) of a Keras model directory.

    Raises:
        CorruptCheckpointError: either file is not readable JSON.
    """
    out: list[dict] = []
    for name, required in ((CONFIG_FILE, True), (METADATA_FILE, False)):
        file = os.path.join(path, name)
        if not required and not os.path.exists(file):
            out.append({})
            continue
        try:
            with open(file, encoding="utf-8") as f:
                value = json.load(f)
        except (OSError, ValueError) as e:
            raise CorruptCheckpointError(f"{path}: its {name} cannot be read as JSON ({e})") from e
        if not isinstance(value, dict):
            raise CorruptCheckpointError(f"{path}: its {name} is not a JSON object")
        out.append(value)
    return out[0], out[1]


class KerasDirReader(KerasH5Reader):
    """The weights of a Keras model directory (``model.weights.h5``), with its config and metadata.

    Attributes:
        model_config: ``config.json`` as a dict.
        metadata: ``metadata.json`` as a dict (``keras_version``, ``date_saved``), ``{}`` when absent.
        weights_file: the path of ``model.weights.h5``.
    """

    def __init__(self, path: str):
        config, metadata = read_dir_config(path)
        weights = os.path.join(path, WEIGHTS_H5)
        if not os.path.isfile(weights):
            present = ", ".join(sorted(os.listdir(path))[:8])
            raise UnsupportedFormatError(
                f"{path} has a Keras {CONFIG_FILE} but no {WEIGHTS_H5} or {WEIGHTS_NPZ} (it holds {present}): "
                "save the model again with keras.saving.save_model(model, DIR, zipped=False)"
            )
        if not is_keras_h5(weights):
            raise CorruptCheckpointError(f"{weights} {not_weights_reason(weights)}")
        super().__init__(weights, label=weights)
        if self.layout != "v3":
            self.close()
            raise UnsupportedFormatError(
                f"{weights} holds weights in the legacy tf-keras layout, not the Keras 3 one a model directory has: "
                "pass the file itself"
            )
        self.prefix = path
        self.format = "keras-v3-dir"
        self.model_config = config
        self.metadata = metadata
        self.keras_version = metadata.get("keras_version", self.keras_version)
        self.weights_file = weights
