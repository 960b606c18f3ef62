"""Telling Keras files apart (archives, HDF5, model directories, sharded weights), opening them, and reading a
model config given with ``--graph``."""

from __future__ import annotations

import json
import os
import zipfile

from ckptdoctor.errors import CorruptCheckpointError, GraphError

__all__ = ["KERAS_SUFFIXES", "is_keras_file", "open_keras_reader", "config_from"]


#: File names Keras writes; a file so named that is not a Keras file is damaged, not a checkpoint.
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def is_keras_file(path: str) -> bool:
    """Whether ``path`` is a Keras model or weights: a ``.keras`` archive, a Keras HDF5 file, a Keras 3 model
    directory (``config.json`` + ``model.weights.h5``/``.npz``) or a sharded-weights manifest (``*.weights.json``).

    Raises:
        CorruptCheckpointError: a file named ``.keras``/``.h5``/``.hdf5`` that is neither
            a zip archive nor HDF5 (truncated, or something else renamed): without this it
            would be read as a TensorFlow checkpoint and fail with a confusing message.
    """
    from ckptdoctor.readers.keras_archive import is_keras_archive
    from ckptdoctor.readers.keras_dir import is_keras_dir
    from ckptdoctor.readers.keras_h5 import is_keras_h5
    from ckptdoctor.readers.keras_sharded import is_sharded_manifest

    path = os.fspath(path)
    if os.path.isdir(path):
        return is_keras_dir(path)
    if not os.path.isfile(path):
        return False
    if is_sharded_manifest(path) or is_keras_h5(path) or is_keras_archive(path):
        return True
    if path.lower().endswith(KERAS_SUFFIXES):
        what = "a zip archive with config.json" if path.lower().endswith(".keras") else "an HDF5 file"
        raise CorruptCheckpointError(
            f"{path} is named like a Keras file but is not {what} (truncated, or another "
            "format renamed): save the model again with model.save()"
        )
    return False


def open_keras_reader(path: str):
    """The reader for a Keras file or directory.

    ``KerasArchiveReader`` for a ``.keras`` zip (``KerasNpzReader`` when it holds ``model.weights.npz``),
    ``KerasDirReader`` for a model directory (``KerasNpzReader`` for npz weights), ``KerasShardedReader``
    for a ``*.weights.json`` manifest, ``KerasH5Reader`` for HDF5.
    """
    from ckptdoctor.readers.keras_archive import WEIGHTS_MEMBER, KerasArchiveReader, is_keras_archive
    from ckptdoctor.readers.keras_h5 import KerasH5Reader
    from ckptdoctor.readers.keras_npz import WEIGHTS_NPZ_MEMBER, open_npz_archive
    from ckptdoctor.readers.keras_sharded import KerasShardedReader, is_sharded_manifest

    path = os.fspath(path)
    if os.path.isdir(path):
        return _open_keras_dir(path)
    if is_sharded_manifest(path):
        return KerasShardedReader(path)
    if is_keras_archive(path):
        if _zip_holds(path, WEIGHTS_NPZ_MEMBER) and not _zip_holds(path, WEIGHTS_MEMBER):
            return open_npz_archive(path)
        return KerasArchiveReader(path)
    return KerasH5Reader(path)


def _zip_holds(path: str, member: str) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return member in zf.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def _open_keras_dir(path: str):
    """A Keras model directory: HDF5 weights, npz weights, or the npz Keras 3 writes as ``model.weights.h5``."""
    from ckptdoctor.readers.keras_dir import WEIGHTS_H5, WEIGHTS_NPZ, KerasDirReader
    from ckptdoctor.readers.keras_npz import open_npz_dir

    h5, npz = os.path.join(path, WEIGHTS_H5), os.path.join(path, WEIGHTS_NPZ)
    if os.path.isfile(h5) and zipfile.is_zipfile(h5):
        return open_npz_dir(path, h5)
    if not os.path.isfile(h5) and os.path.isfile(npz):
        return open_npz_dir(path, npz)
    return KerasDirReader(path)


def config_from(path: str) -> tuple[dict, str | None]:
    """The model config ``path`` describes and the Keras version that wrote it (None: not recorded).

    ``path`` is a ``.keras`` file, a full ``.h5``, a Keras model directory, a config ``.json``, or a
    ``package.module:function`` factory (built with Keras: this runs the user's code, as asked).
    """
    from ckptdoctor.runtime.keras_build import is_factory

    if is_factory(path):
        return _factory_config(path)
    if not os.path.exists(path):
        raise GraphError(
            f"no model config at {path}: pass --graph with a .keras file, a full .h5, a config .json or a "
            "package.module:function factory"
        )
    if path.endswith(".json") and not path.endswith(".weights.json"):
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


def _factory_config(spec: str) -> tuple[dict, str | None]:
    from ckptdoctor.runtime.keras_build import build_model

    K, model = build_model(spec)
    try:
        return json.loads(model.to_json()), getattr(K, "__version__", None)
    except Exception as e:  # noqa: BLE001 - a subclassed model may not serialize its config
        raise GraphError(
            f"--graph {spec}: the model it builds has no config to check the weights against "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); repair still takes it"
        ) from e
