"""The small interface every checkpoint reader implements.

A reader answers three questions: which tensors are there, what is each one's
dtype and shape, and give me its values (whole, or in chunks for statistics).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    import numpy as np


__all__ = ["TensorEntry", "CheckpointReader", "DEFAULT_CHUNK_BYTES"]

#: Chunk size used when values are streamed for statistics.
DEFAULT_CHUNK_BYTES = 16 * 1024 * 1024


class TensorEntry(NamedTuple):
    """One tensor of a checkpoint, as listed without reading its values.

    A named tuple: a reader makes one per tensor when it lists, and a tuple is made in half the time of a
    frozen dataclass (100,000 tensors: 0.067 -> 0.036 s), in the same memory.

    Attributes:
        name: the key as stored (``dense/kernel``), partitioned variables once,
            under their full name.
        dtype: TensorFlow's dtype name without ``DT_`` in lower case, which is
            numpy's name where numpy has one: ``float32``, ``bfloat16``,
            ``string``, ``variant``, ``bool``, ``int64``...
        shape: the full shape.
        nbytes: bytes the tensor occupies in the data files (for strings and
            variants the stored size, for partitioned tensors the sum of pieces).
        partitioned: True when stored as several slices.
        object_path: for TF2 object-based checkpoints, the readable object path
            (``model/layer-0/kernel``) from ``_CHECKPOINTABLE_OBJECT_GRAPH``;
            otherwise None.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    partitioned: bool = False
    object_path: str | None = None

    @property
    def size(self) -> int:
        """Number of elements (1 for a scalar)."""
        n = 1
        for d in self.shape:
            n *= d
        return n


class CheckpointReader(Protocol):
    """What inspect, diff and repair need from a checkpoint."""

    prefix: str
    format: str  # "tf-v2-bundle", "tf-v1-table", ...

    def entries(self) -> list[TensorEntry]:
        """Every tensor, sorted by name; slices of partitioned tensors hidden."""

    def read(self, name: str) -> np.ndarray:
        """The whole tensor with its stored dtype and shape.

        Raises:
            TensorReadError: its bytes are missing or fail their checksum.
        """

    def iter_chunks(self, name: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[np.ndarray]:
        """The tensor's values as flat 1-D arrays of at most about ``chunk_bytes``.

        Concatenated in order they equal ``read(name).ravel()``. Checksums are
        verified: a mismatch raises ``TensorReadError`` (possibly after chunks were
        yielded, so callers must discard partial results on error).
        """

    def close(self) -> None:
        """Release open files and maps."""
