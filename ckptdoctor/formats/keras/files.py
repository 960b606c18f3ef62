"""Telling Keras files apart, opening them, and reading a model config given with ``--graph``."""

from __future__ import annotations

import os

from ckptdoctor.errors import CorruptCheckpointError, GraphError

__all__ = ["KERAS_SUFFIXES", "is_keras_file", "open_keras_reader", "config_from"]


#: File names Keras writes; a file so named that is not a Keras file is damaged, not a checkpoint.
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def is_keras_file(path: str) -> bool:
    """Whether ``path`` is a Keras ``.keras`` archive or a Keras HDF5 file.

    Raises:
        CorruptCheckpointError: a file named ``.keras``/``.h5``/``.hdf5`` that is neither
            a zip archive nor HDF5 (truncated, or something else renamed): without this it
            would be read as a TensorFlow checkpoint and fail with a confusing message.
    """
    from ckptdoctor.readers.keras_archive import is_keras_archive
    from ckptdoctor.readers.keras_h5 import is_keras_h5

    path = os.fspath(path)
    if not os.path.isfile(path):
        return False
    if is_keras_h5(path) or is_keras_archive(path):
        return True
    if path.lower().endswith(KERAS_SUFFIXES):
        what = "a zip archive with config.json" if path.lower().endswith(".keras") else "an HDF5 file"
        raise CorruptCheckpointError(
            f"{path} is named like a Keras file but is not {what} (truncated, or another "
            "format renamed): save the model again with model.save()"
        )
    return False


def open_keras_reader(path: str):
    """The reader for a Keras file: ``KerasArchiveReader`` for a zip, ``KerasH5Reader`` for HDF5."""
    from ckptdoctor.readers.keras_archive import KerasArchiveReader, is_keras_archive
    from ckptdoctor.readers.keras_h5 import KerasH5Reader

    return KerasArchiveReader(path) if is_keras_archive(path) else KerasH5Reader(path)


def config_from(path: str) -> tuple[dict, str | None]:
    """The model config in ``path`` and the Keras version that wrote it (None: not recorded)."""
    if not os.path.isfile(path):
        raise GraphError(f"no model config at {path}: pass --graph with a .keras file, a full .h5 or a config .json")
    if path.endswith(".json"):
        from ckptdoctor.readers.limits import MAX_JSON_BYTES, load_json

        try:
            with open(path, "rb") as f:
                config = load_json(f.read(MAX_JSON_BYTES + 1), path)
        except (OSError, ValueError) as e:
            raise GraphError(f"{path} is not a readable JSON model config ({e})") from e
        return config, config.get("keras_version") if isinstance(config, dict) else None
    reader = open_keras_reader(path)
    try:
        if not reader.model_config:
            raise GraphError(f"{path} holds no model config: pass a .keras file, a full .h5 or a config .json")
        return reader.model_config, reader.keras_version
    finally:
        reader.close()
