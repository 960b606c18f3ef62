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

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from ckptdoctor.errors import CorruptCheckpointError, TensorReadError, UnsupportedFormatError
from ckptdoctor.readers.base import DEFAULT_CHUNK_BYTES, TensorEntry
from ckptdoctor.readers.hdf5_raw import HDF5_SIGNATURE, RawHDF5
from ckptdoctor.readers.limits import (
    LimitExceeded,
    hard_children,
    hdf5_name,
    hdf5_storage_problem,
    load_json,
    read_hdf5_attr,
)

__all__ = ["KerasH5Reader", "is_keras_h5", "HDF5_SIGNATURE"]

#: Attributes naming layers and weights hold names, not data: more than this is not a Keras file.
_NAMES_CAP = 16 << 20
#: What h5py raises on a damaged file, besides the HDF5 errors it maps to OSError/KeyError/ValueError.
_H5_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError, AttributeError, IndexError)


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


def _hard_group(group, name: str):
    """``group[name]`` when it is a group reached by a hard link, else None (soft and external links: not followed)."""
    import h5py

    try:
        if not isinstance(group.get(name, getlink=True), h5py.HardLink):
            return None
        found = group[name]
    except _H5_ERRORS:
        return None
    return found if isinstance(found, h5py.Group) else None


class KerasH5Reader:
    """Read the weights of a Keras HDF5 file (or of an open HDF5 file object).

    Nothing the file declares is trusted before it is checked: a dataset whose declared values
    are not stored in the file (storage never allocated, chunks never written, external or
    virtual storage, filters inflating more than ``limits.MAX_EXPANSION`` times) is listed but
    never read: reading it raises ``TensorReadError`` with code ``tensor-not-stored``. Attributes
    holding JSON or names are size-checked before they are read; only hard links are followed.

    Attributes:
        prefix: the path shown in reports.
        format: ``keras-weights-h5`` (Keras 3 layout) or ``keras-legacy-h5``.
        layout: ``v3`` or ``legacy``.
        model_config: the model's config (a dict) for a legacy full model, else None.
        keras_version: the ``keras_version`` attribute when the file has one.
    """

    def __init__(
        self, path: str, fileobj=None, label: str | None = None, raw: RawHDF5 | None = None, shard: bool = False
    ):
        """Open ``path``, or ``fileobj`` with ``raw``, the ``RawHDF5`` of its bytes (a ``.keras`` member).

        ``shard``: one shard of sharded weights (``keras_sharded``), in the Keras 3 layout whatever groups it holds.
        """
        import h5py

        self.prefix = label or path
        self._shard = shard
        self._fileobj = fileobj
        self._datasets: dict[str, Any] = {}  # h5py.Dataset
        self._problems: dict[str, str | None] = {}
        try:
            self._raw = raw if raw is not None else RawHDF5.open(path)
        except OSError as e:
            raise CorruptCheckpointError(f"cannot read {self.prefix}: {e.strerror or e}") from e
        if self._raw.problem:
            self._raw.close()
            raise CorruptCheckpointError(
                f"{self.prefix} is a damaged HDF5 file: {self._raw.problem}; get an undamaged copy"
            )
        try:
            self._file = h5py.File(fileobj if fileobj is not None else path, "r")
        except _H5_ERRORS as e:
            self._raw.close()
            raise CorruptCheckpointError(
                f"{self.prefix} is not a readable HDF5 file ({e}): pass a Keras .h5, .weights.h5 or .keras file"
            ) from e
        try:
            self._read_structure()
        except BaseException:
            self.close()
            raise

    def _read_structure(self) -> None:
        f = self._file
        self.model_config = None
        self.keras_version = self._text_attr(f, "keras_version")
        weights = _hard_group(f, "model_weights")
        try:
            legacy = weights is not None or "layer_names" in f.attrs
            v3 = not legacy and (
                self._shard or _hard_group(f, "layers") is not None or _hard_group(f, "vars") is not None
            )
        except _H5_ERRORS as e:
            raise CorruptCheckpointError(f"{self.prefix} is a damaged HDF5 file ({e})") from e
        if legacy:
            self.layout = "legacy"
            self.format = "keras-legacy-h5"
            text = self._text_attr(f, "model_config")
            if text is not None:
                try:
                    config = load_json(text, "its model_config attribute")
                except ValueError as e:
                    raise CorruptCheckpointError(f"{self.prefix}: its model_config attribute is not JSON ({e})") from e
                self.model_config = config if isinstance(config, dict) else None
            if self.keras_version is None and weights is not None:
                self.keras_version = self._text_attr(weights, "keras_version") or None
        elif v3:
            self.layout = "v3"
            self.format = "keras-weights-h5"
        else:
            raise UnsupportedFormatError(
                f"{self.prefix} is HDF5 but not a Keras weights file (no 'layers', 'model_weights' or layer_names): "
                "pass a file written by Keras' save() or save_weights()"
            )
        try:
            f.visititems(self._collect)
        except _H5_ERRORS as e:
            raise CorruptCheckpointError(
                f"{self.prefix} is a damaged HDF5 file: its groups cannot be walked ({e})"
            ) from e

    def _text_attr(self, obj, name: str) -> str | None:
        """A string attribute (size-checked before it is read), or None when absent."""
        try:
            if name not in obj.attrs:
                return None
            return _text(read_hdf5_attr(obj, name, self._raw))
        except LimitExceeded as e:
            raise CorruptCheckpointError(f"{self.prefix}: {e}; it is not a file Keras wrote") from e
        except _H5_ERRORS as e:
            raise CorruptCheckpointError(f"{self.prefix}: its {name} attribute cannot be read ({e})") from e

    def _names_attr(self, obj, name: str) -> list[str]:
        """A list-of-names attribute (``layer_names``, ``weight_names``), size-checked; [] when absent."""
        try:
            if name not in obj.attrs:
                return []
            value = np.asarray(read_hdf5_attr(obj, name, self._raw, _NAMES_CAP))
        except LimitExceeded as e:
            raise CorruptCheckpointError(f"{self.prefix}: {e}; it is not a file Keras wrote") from e
        except _H5_ERRORS as e:
            raise CorruptCheckpointError(f"{self.prefix}: its {name} attribute cannot be read ({e})") from e
        return [_text(v) for v in value.reshape(-1)]

    def _collect(self, name, obj) -> None:
        import h5py

        if isinstance(obj, h5py.Dataset):
            self._datasets[hdf5_name(name)] = obj

    # ------------------------------------------------------------------ interface

    def entries(self) -> list[TensorEntry]:
        """Every dataset of the file, sorted by HDF5 path."""
        out = []
        for name in sorted(self._datasets):
            ds = self._datasets[name]
            try:
                shape = tuple(int(d) for d in ds.shape) if ds.shape is not None else ()
                dtype = _dtype_name(ds.dtype)
                nbytes = int(ds.id.get_storage_size())
            except _H5_ERRORS as e:
                # A datatype h5py cannot map (bitfield, region reference...) or damaged metadata: listed, not read.
                shape, dtype, nbytes = (), f"unsupported ({type(e).__name__})", 0
            out.append(TensorEntry(name=name, dtype=dtype, shape=shape, nbytes=nbytes))
        return out

    def storage_problem(self, name: str) -> str | None:
        """Why dataset ``name``'s values are not stored in the file (``limits.hdf5_storage_problem``), or None."""
        if name not in self._problems:
            try:
                self._problems[name] = hdf5_storage_problem(self._lookup(name))
            except _H5_ERRORS as e:
                self._problems[name] = f"has storage metadata that cannot be read ({e})"
        return self._problems[name]

    def _checked(self, name: str):
        """The dataset, after checking that its values are stored in the file and can be read safely."""
        ds = self._lookup(name)
        problem = self.storage_problem(name)
        if problem is not None:
            raise TensorReadError(
                "tensor-not-stored", name, f"{name} {problem}; not read: the file does not hold the values it declares"
            )
        try:
            unsafe = self._raw.dataset_problem(ds, name)
        except _H5_ERRORS as e:
            unsafe = f"{name}: its variable-length values cannot be checked ({e})"
        if unsafe is not None:
            raise TensorReadError("tensor-unreadable", name, f"{unsafe}; not read")
        return ds

    def read(self, name: str) -> np.ndarray:
        """The dataset's values with their stored dtype and shape.

        Raises:
            TensorReadError: ``tensor-not-stored`` when its values are not in the file,
                ``tensor-unreadable`` when its bytes cannot be read.
        """
        ds = self._checked(name)
        try:
            return np.asarray(ds[()])
        except _H5_ERRORS as e:
            raise TensorReadError("tensor-unreadable", name, f"{name}: its bytes cannot be read ({e})") from e

    def iter_chunks(self, name: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[np.ndarray]:
        """Flat chunks of about ``chunk_bytes`` in C order, read as hyperslabs of the leading axes."""
        ds = self._checked(name)
        try:
            shape, itemsize = tuple(int(d) for d in ds.shape), max(1, ds.dtype.itemsize)
        except _H5_ERRORS as e:
            raise TensorReadError("tensor-unreadable", name, f"{name}: its bytes cannot be read ({e})") from e
        if not shape or 0 in shape:
            yield self.read(name).ravel()
            return
        # The first axis whose trailing block fits a chunk: iterate the axes before it, slice along it.
        axis = next(k for k in range(len(shape)) if math.prod(shape[k + 1 :]) * itemsize <= chunk_bytes)
        rows = max(1, chunk_bytes // (math.prod(shape[axis + 1 :]) * itemsize))
        for outer in np.ndindex(*shape[:axis]):
            for start in range(0, shape[axis], rows):
                try:
                    block = ds[outer + (slice(start, start + rows),)]
                except _H5_ERRORS as e:
                    raise TensorReadError("tensor-unreadable", name, f"{name}: its bytes cannot be read ({e})") from e
                yield np.asarray(block).ravel()

    def close(self) -> None:
        """Close the HDF5 file (and unmap its bytes)."""
        f, self._file = getattr(self, "_file", None), None
        if f is not None:
            f.close()
        raw = getattr(self, "_raw", None)
        if raw is not None:
            raw.close()

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
        try:
            return self._legacy_groups() if self.layout == "legacy" else self._v3_groups()
        except _H5_ERRORS as e:
            raise CorruptCheckpointError(
                f"{self.prefix} is a damaged HDF5 file: its layers cannot be read ({e})"
            ) from e

    def _legacy_groups(self) -> list[dict]:
        f = self._file
        groups = []
        weights = _hard_group(f, "model_weights")
        root = weights if weights is not None else f
        base = "model_weights/" if weights is not None else ""
        for layer in self._names_attr(root, "layer_names"):
            group = _hard_group(root, layer) if layer else None
            if group is None:
                groups.append({"path": base + layer, "name": layer, "keys": []})
                continue
            names = self._names_attr(group, "weight_names")
            groups.append({"path": base + layer, "name": layer, "keys": [f"{base}{layer}/{n}" for n in names]})
        return groups

    def _v3_groups(self) -> list[dict]:
        """Depth first, children in name order, as the recursive walk Keras' layout suggests; no recursion,
        and each group once (hard links can make a group its own descendant)."""
        import h5py

        groups = []
        seen: set = set()
        stack: list[tuple[Any, str]] = [(self._file, "")]
        while stack:
            group, path = stack.pop()
            address = h5py.h5o.get_info(group.id).addr
            if address in seen:
                continue
            seen.add(address)
            children = hard_children(group)
            v = dict(children).get("vars")
            if isinstance(v, h5py.Group):
                keys = sorted(
                    (k for k, obj in hard_children(v) if isinstance(obj, h5py.Dataset)),
                    key=lambda k: (0, int(k)) if k.isdigit() else (1, k),
                )
                groups.append(
                    {
                        "path": path,
                        "name": self._text_attr(v, "name"),
                        "keys": [f"{path}/vars/{k}" if path else f"vars/{k}" for k in keys],
                    }
                )
            subgroups = [(c, obj) for c, obj in children if c != "vars" and isinstance(obj, h5py.Group)]
            for child, obj in reversed(subgroups):
                stack.append((obj, f"{path}/{child}" if path else child))
        return groups

    def contiguous_range(self, name: str) -> tuple[int, int, np.dtype, tuple[int, ...]] | None:
        """``(offset, nbytes, dtype, shape)`` of a dataset whose values lie as one run of raw bytes in the HDF5 file
        (contiguous layout, no filters, no external storage, a fixed-size numeric dtype), offset from the file's
        first byte; None for any other dataset: its bytes cannot be overwritten in place."""
        import h5py

        ds = self._lookup(name)
        try:
            plist = ds.id.get_create_plist()
            if plist.get_layout() != h5py.h5d.CONTIGUOUS or plist.get_nfilters() or plist.get_external_count():
                return None
            dtype, shape = ds.dtype, tuple(int(d) for d in ds.shape)
            offset, nbytes = ds.id.get_offset(), int(ds.id.get_storage_size())
        except _H5_ERRORS:
            return None
        if dtype.kind not in "biuf" or offset is None or nbytes != math.prod(shape) * dtype.itemsize:
            return None
        return int(offset), nbytes, dtype, shape

    def has_group(self, path: str) -> bool:
        """Whether the group ``path`` (``/layers/dense/vars``) is in the file, reached by hard links."""
        group = self._file
        for part in path.strip("/").split("/"):
            group = _hard_group(group, part) if part else group
            if group is None:
                return False
        return True

    def _lookup(self, name: str):
        try:
            return self._datasets[name]
        except KeyError:
            raise KeyError(f"{self.prefix} has no tensor {name!r}") from None


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value.item())
    return str(value)
