"""Keras HDF5 weights read with h5py: Keras 3 ``.weights.h5`` and legacy tf-keras / Keras 2 ``.h5``.

Two layouts exist:

* Keras 3 (and tf-keras ``save_weights('x.weights.h5')``): ``layers/<path>/vars/<i>``,
  one group per layer, variables numbered in the layer's own order; Keras 3 stores the
  layer's name as the ``name`` attribute of ``vars``. Optimizer state is under
  ``optimizer/vars``.
* legacy (tf-keras / Keras 2 ``model.save('m.h5')`` and ``save_weights('w.h5')``):
  ``[model_weights/]<layer>/<layer>/<var>:0``, each layer group naming its variables in
  its ``weight_names`` attribute; a full model keeps its config in the root attribute
  ``model_config`` and the optimizer under ``optimizer_weights``.

A tensor's name is its HDF5 path, so every weight h5py sees is listed under the name
h5py gives it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from ckptdoctor.errors import CorruptCheckpointError, TensorReadError, UnsupportedFormatError
from ckptdoctor.readers.base import DEFAULT_CHUNK_BYTES, TensorEntry

__all__ = ["KerasH5Reader", "is_keras_h5"]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_keras_h5(path: str) -> bool:
    """Whether ``path`` is an HDF5 file (the signature sits at offset 0 for Keras files)."""
    try:
        with open(path, "rb") as f:
            return f.read(8) == HDF5_SIGNATURE
    except OSError:
        return False


def _dtype_name(dtype: np.dtype) -> str:
    if dtype.kind in "SOU":
        return "string"
    return dtype.name


class KerasH5Reader:
    """Read the weights of a Keras HDF5 file (or of an open HDF5 file object).

    Attributes:
        prefix: the path shown in reports.
        format: ``keras-weights-h5`` (Keras 3 layout) or ``keras-legacy-h5``.
        layout: ``v3`` or ``legacy``.
        model_config: the model's config (a dict) for a legacy full model, else None.
        keras_version: the ``keras_version`` attribute when the file has one.
    """

    def __init__(self, path: str, fileobj=None, label: str | None = None):
        import h5py

        self.prefix = label or path
        self._fileobj = fileobj
        try:
            self._file = h5py.File(fileobj if fileobj is not None else path, "r")
        except (OSError, ValueError) as e:
            raise CorruptCheckpointError(
                f"{self.prefix} is not a readable HDF5 file ({e}): pass a Keras .h5, .weights.h5 or .keras file"
            ) from e
        f = self._file
        self.model_config = None
        self.keras_version = _text(f.attrs.get("keras_version")) if "keras_version" in f.attrs else None
        if "model_weights" in f or "layer_names" in f.attrs:
            self.layout = "legacy"
            self.format = "keras-legacy-h5"
            if "model_config" in f.attrs:
                try:
                    self.model_config = json.loads(_text(f.attrs["model_config"]))
                except ValueError as e:
                    raise CorruptCheckpointError(f"{self.prefix}: its model_config attribute is not JSON ({e})") from e
            if self.keras_version is None and "model_weights" in f:
                self.keras_version = _text(f["model_weights"].attrs.get("keras_version", b"")) or None
        elif "layers" in f or "vars" in f:
            self.layout = "v3"
            self.format = "keras-weights-h5"
        else:
            self.close()
            raise UnsupportedFormatError(
                f"{self.prefix} is HDF5 but not a Keras weights file (no 'layers', 'model_weights' or layer_names): "
                "pass a file written by Keras' save() or save_weights()"
            )
        self._datasets: dict[str, Any] = {}  # h5py.Dataset
        f.visititems(self._collect)

    def _collect(self, name, obj) -> None:
        import h5py

        if isinstance(obj, h5py.Dataset):
            self._datasets[name] = obj

    # ------------------------------------------------------------------ interface

    def entries(self) -> list[TensorEntry]:
        """Every dataset of the file, sorted by HDF5 path."""
        out = []
        for name in sorted(self._datasets):
            ds = self._datasets[name]
            shape = tuple(int(d) for d in ds.shape)
            out.append(
                TensorEntry(name=name, dtype=_dtype_name(ds.dtype), shape=shape, nbytes=int(ds.id.get_storage_size()))
            )
        return out

    def read(self, name: str) -> np.ndarray:
        """The dataset's values with their stored dtype and shape."""
        ds = self._lookup(name)
        try:
            return np.asarray(ds[()])
        except (OSError, ValueError, KeyError) as e:
            raise TensorReadError("tensor-unreadable", name, f"{name}: its bytes cannot be read ({e})") from e

    def iter_chunks(self, name: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[np.ndarray]:
        """Flat chunks of about ``chunk_bytes``, read row-block by row-block."""
        ds = self._lookup(name)
        if ds.ndim == 0 or ds.shape[0] == 0:
            yield self.read(name).ravel()
            return
        row_bytes = max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64)))
        rows = max(1, chunk_bytes // row_bytes)
        for start in range(0, ds.shape[0], rows):
            try:
                yield np.asarray(ds[start : start + rows]).ravel()
            except (OSError, ValueError) as e:
                raise TensorReadError("tensor-unreadable", name, f"{name}: its bytes cannot be read ({e})") from e

    def close(self) -> None:
        """Close the HDF5 file."""
        f, self._file = getattr(self, "_file", None), None
        if f is not None:
            f.close()

    def __enter__(self) -> KerasH5Reader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ------------------------------------------------------------------ Keras structure

    def layer_groups(self) -> list[dict]:
        """The layers the file stores weights for, in file order.

        Returns:
            dicts with ``path`` (the HDF5 group), ``name`` (the layer's name when the
            file records it, else None) and ``keys`` (its datasets, in the layer's
            variable order).
        """
        import h5py

        f = self._file
        groups: list[dict[str, Any]] = []
        if self.layout == "legacy":
            root = f.get("model_weights", f)
            base = "model_weights/" if "model_weights" in f else ""
            for layer in (_text(n) for n in root.attrs.get("layer_names", [])):
                if layer not in root:
                    groups.append({"path": base + layer, "name": layer, "keys": []})
                    continue
                names = [_text(n) for n in root[layer].attrs.get("weight_names", [])]
                groups.append({"path": base + layer, "name": layer, "keys": [f"{base}{layer}/{n}" for n in names]})
            return groups

        def walk(group, path):
            if "vars" in group and isinstance(group["vars"], h5py.Group):
                v = group["vars"]
                keys = sorted(
                    (k for k in v if isinstance(v[k], h5py.Dataset)),
                    key=lambda k: (0, int(k)) if k.isdigit() else (1, k),
                )
                groups.append(
                    {
                        "path": path,
                        "name": _text(v.attrs["name"]) if "name" in v.attrs else None,
                        "keys": [f"{path}/vars/{k}" if path else f"vars/{k}" for k in keys],
                    }
                )
            for child in group:
                if child != "vars" and isinstance(group[child], h5py.Group):
                    walk(group[child], f"{path}/{child}" if path else child)

        walk(f, "")
        return groups

    def _lookup(self, name: str):
        try:
            return self._datasets[name]
        except KeyError:
            raise KeyError(f"{self.prefix} has no tensor {name!r}") from None


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value.item())
    return str(value)
