"""A Keras model built from what the user says describes it (``--graph``), for files that hold only weights.

Three descriptions are accepted:

* a ``.keras`` archive (or a Keras 3 model directory, or a full legacy ``.h5``): its config, loaded with Keras' safe
  mode; the weights it holds are ignored (the checkpoint's replace them);
* a model config ``.json`` (``model.to_json()``), deserialized in safe mode;
* ``package.module:function``, a factory that returns the model. It is imported from
  the working directory and ``sys.path`` and called with no argument: this runs the
  user's own code, which is what they asked for.

Which Keras: the one that wrote the ``.keras``/``.json`` (its ``keras_version``), or the
one whose ``Model`` the factory returned.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import warnings

from ckptdoctor.errors import GraphError

__all__ = ["is_factory", "is_model_description", "build_model"]

_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def is_factory(spec: str) -> bool:
    """``package.module:function`` (and not a path that exists)."""
    return bool(_FACTORY.match(spec)) and not os.path.exists(spec)


def is_model_description(spec) -> bool:
    """Whether ``--graph`` names a Keras model description rather than a MetaGraphDef."""
    if not isinstance(spec, (str, os.PathLike)):
        return False
    spec = os.fspath(spec)
    return spec.lower().endswith((".keras", ".json", ".h5", ".hdf5")) or is_factory(spec)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:300]}" if text else type(e).__name__


def _keras(legacy: bool):
    from ckptdoctor.runtime.keras_model import import_keras
    from ckptdoctor.tfcompat import import_tensorflow

    import_tensorflow()
    return import_keras(legacy)


def _from_factory(spec: str):
    module_name, _, attr = spec.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    from ckptdoctor.tfcompat import import_tensorflow

    import_tensorflow()  # first, quietly: the user's module imports Keras, whose start-up would bury our messages
    try:
        target = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except Exception as e:  # the user's module: anything can go wrong on import
        raise GraphError(
            f"--graph {spec}: cannot import it ({_first_line(e)}); check the module is on sys.path "
            "(the working directory is)"
        ) from e
    if not callable(target):
        raise GraphError(f"--graph {spec}: {attr} is not a function that builds the model")
    try:
        model = target()
    except Exception as e:
        raise GraphError(f"--graph {spec}: the factory raised {_first_line(e)}") from e
    root = type(model).__module__.split(".")[0]
    if root not in ("keras", "tf_keras") or not hasattr(model, "layers") or not hasattr(model, "weights"):
        raise GraphError(f"--graph {spec}: the factory returned a {type(model).__name__}, not a Keras model")
    return _keras(root == "tf_keras"), model


def _from_json(path: str, unsafe: bool):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        config = json.loads(text)
    except (OSError, ValueError) as e:
        raise GraphError(f"{path} is not a readable JSON model config ({e})") from e
    version = config.get("keras_version") if isinstance(config, dict) else None
    K = _keras(bool(version) and str(version).startswith("2"))
    try:
        if hasattr(K, "config") and hasattr(K.config, "enable_unsafe_deserialization") and unsafe:
            K.config.enable_unsafe_deserialization()
        return K, K.models.model_from_json(text)
    except Exception as e:
        raise GraphError(f"Keras cannot build a model from {path}: {_first_line(e)}") from e


def _from_file(path: str, unsafe: bool):
    from ckptdoctor.readers.keras_archive import KerasArchiveReader, is_keras_archive
    from ckptdoctor.readers.keras_dir import KerasDirReader
    from ckptdoctor.readers.keras_h5 import KerasH5Reader

    reader: KerasH5Reader
    if os.path.isdir(path):
        reader = KerasDirReader(path)
    else:
        reader = KerasArchiveReader(path) if is_keras_archive(path) else KerasH5Reader(path)
    try:
        version, fmt, has_config = reader.keras_version, reader.format, bool(reader.model_config)
    finally:
        reader.close()
    if not has_config:
        raise GraphError(
            f"{path} holds weights only (no model config): pass a .keras file, a full .h5, a config "
            ".json or a package.module:function factory"
        )
    legacy = (version is not None and version.split(".")[0] == "2") or (fmt == "keras-legacy-h5" and version is None)
    K = _keras(legacy)
    try:
        if legacy:
            return K, K.models.load_model(path, compile=False, safe_mode=not unsafe)
        return K, K.saving.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as e:
        raise GraphError(f"Keras cannot load {path}: {_first_line(e)}") from e


def build_model(spec: str, unsafe: bool = False):
    """``(keras module, model)`` for the description ``spec``.

    Raises:
        GraphError: nothing there, an import or a factory that fails, something that is
            not a Keras model: one line quoting the cause.
    """
    spec = os.fspath(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras' UserWarnings would bury the report on stderr
        if is_factory(spec):
            return _from_factory(spec)
        if not os.path.isfile(spec) and not os.path.isdir(spec):
            raise GraphError(
                f"no model description at {spec}: pass --graph with a .keras file, a model config "
                ".json or a package.module:function factory"
            )
        if spec.lower().endswith(".json"):
            return _from_json(spec, unsafe)
        return _from_file(spec, unsafe)
