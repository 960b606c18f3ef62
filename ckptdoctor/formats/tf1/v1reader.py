"""TensorFlow's own checkpoint reader, for what the native reader does not handle (V1 tables)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ckptdoctor.errors import CorruptCheckpointError
from ckptdoctor.readers.base import DEFAULT_CHUNK_BYTES, TensorEntry
from ckptdoctor.tfcompat import import_tensorflow

__all__ = ["TFReader"]


class TFReader:
    """A ``CheckpointReader`` backed by ``tf.train.load_checkpoint``."""

    format = "tf-v1-table"

    def __init__(self, prefix: str, format: str = "tf-v1-table"):
        tf = import_tensorflow()
        self.prefix = prefix
        self.format = format
        try:
            self._reader = tf.train.load_checkpoint(prefix)
        except (tf.errors.OpError, ValueError) as e:
            raise CorruptCheckpointError(f"TensorFlow cannot read {prefix}: {str(e).splitlines()[0]}") from e
        self._dtypes = self._reader.get_variable_to_dtype_map()
        self._shapes = self._reader.get_variable_to_shape_map()

    def entries(self) -> list[TensorEntry]:
        out = []
        for name in sorted(self._shapes):
            dtype = self._dtypes[name].name
            shape = tuple(int(d) for d in self._shapes[name])
            size = int(np.prod(shape, dtype=np.int64)) if shape else 1
            itemsize = self._dtypes[name].size if dtype not in ("string", "variant") else 0
            out.append(TensorEntry(name, dtype, shape, size * itemsize))
        return out

    def read(self, name: str) -> np.ndarray:
        value = self._reader.get_tensor(name)
        return np.asarray(value)

    def iter_chunks(self, name: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[np.ndarray]:
        flat = self.read(name).reshape(-1)
        step = max(1, chunk_bytes // max(1, flat.itemsize))
        for start in range(0, flat.size, step):
            yield flat[start : start + step]

    def close(self) -> None:
        self._reader = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
