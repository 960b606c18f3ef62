"""TensorFlow-free readers of every file format ckptdoctor reads, behind one small interface (see ``base``)."""

from ckptdoctor.readers.base import DEFAULT_CHUNK_BYTES, CheckpointReader, TensorEntry

__all__ = ["CheckpointReader", "TensorEntry", "DEFAULT_CHUNK_BYTES"]
