"""Checkpoint readers behind one small interface (see ``base``)."""

from __future__ import annotations

from ..resolve import ResolvedCheckpoint
from .base import DEFAULT_CHUNK_BYTES, CheckpointReader, TensorEntry

__all__ = ["open_reader", "CheckpointReader", "TensorEntry", "DEFAULT_CHUNK_BYTES"]


def open_reader(resolved: ResolvedCheckpoint) -> CheckpointReader:
    """The reader for a resolved checkpoint: native for V2 bundles, TensorFlow's for V1."""
    if resolved.kind == "v2":
        from .bundle import BundleReader

        return BundleReader(resolved.prefix)
    from ..errors import UnsupportedFormatError
    from ..tfcompat import tensorflow_available

    if not tensorflow_available():
        raise UnsupportedFormatError(
            f"{resolved.prefix} is not a V2 checkpoint (no .index beside it); reading older formats "
            "needs TensorFlow: pip install 'ckptdoctor[tf]'"
        )
    from .tfreader import TFReader

    return TFReader(resolved.prefix)
