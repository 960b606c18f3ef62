"""TFRecord files of ``tf.train.Example`` as a source: one file, a glob, or a folder of ``*.tfrecord*`` files.

Files are read in sorted order, one record at a time (``tf.data.TFRecordDataset``),
GZIP or ZLIB compressed by their extension (``.gz``, ``.zlib``) or ``--compression``.
Each model input is read from the feature named like it, or the one ``--input
NAME=FEATURE`` names. ``float_list`` and ``int64_list`` values are reshaped to the
input's sample shape; a ``bytes_list`` holds a serialized tensor
(``tf.io.serialize_tensor``) or an encoded image (decoded as in ``sources.images``).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator

import numpy as np

from ckptdoctor.errors import BadDataError
from ckptdoctor.pipelines.sources.base import Streamed, StreamedSource, shown_shape
from ckptdoctor.pipelines.sources.images import decode_image, fit_image

__all__ = ["TFRecordFiles", "tfrecord_files", "parse_input_map", "COMPRESSIONS"]

COMPRESSIONS = {"": "", "none": "", "gzip": "GZIP", "zlib": "ZLIB"}
_BY_EXTENSION = {".gz": "GZIP", ".gzip": "GZIP", ".zlib": "ZLIB", ".zz": "ZLIB"}
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM")


def tfrecord_files(spec: str) -> list[str]:
    """The files ``spec`` names: itself, its folder's ``*.tfrecord*`` files, or a glob's matches (sorted)."""
    if os.path.isdir(spec):
        return sorted(glob.glob(os.path.join(glob.escape(spec), "*.tfrecord*")))
    if os.path.isfile(spec):
        return [spec]
    return sorted(p for p in glob.glob(spec) if os.path.isfile(p))


def parse_input_map(text: str | None) -> dict[str, str]:
    """``--input NAME=FEATURE[,NAME=FEATURE...]`` as {input: feature}; a plain ``NAME``: {NAME: NAME}."""
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        name, _, feature = item.partition("=")
        if not name.strip() or ("=" in item and not feature.strip()):
            raise BadDataError(f"--input {text!r}: expected NAME or NAME=FEATURE (comma-separated for several)")
        out[name.strip()] = (feature or name).strip()
    return out


def _compression(path: str, given: str | None) -> str:
    if given is not None:
        try:
            return COMPRESSIONS[given.lower()]
        except KeyError:
            raise BadDataError(f"--compression must be GZIP, ZLIB or NONE, received {given!r}") from None
    return _BY_EXTENSION.get(os.path.splitext(path)[1].lower(), "")


class TFRecordFiles(StreamedSource):
    """``tf.train.Example`` records, one raw batch per record."""

    def __init__(self, spec: str, files: list[str], compression: str | None, input: str | None, resize: bool):
        super().__init__()
        from ckptdoctor.tfcompat import import_tensorflow

        self.tf = import_tensorflow()
        self.name, self.files, self.resize = spec, files, resize
        self._compression = {f: _compression(f, compression) for f in files}
        first = next(self._examples(files[:1]), None)
        if first is None:
            raise BadDataError(f"{files[0]} holds no record: pass TFRecord files of tf.train.Example")
        present = sorted(first[2].features.feature)
        self.mapping = parse_input_map(input)
        if self.mapping:
            self._keys = {name: Streamed(name, None) for name in self.mapping}
        else:
            self.mapping = {name: name for name in present}
            self._keys = {name: Streamed(name, None, optional=True) for name in present}
        self.notes.append(f"{spec}: {len(files)} TFRecord file{'s' if len(files) > 1 else ''} of tf.train.Example")

    def arrays(self) -> dict:
        return self._keys

    def _examples(self, files: list[str]) -> Iterator[tuple]:
        """``(file, record index, tf.train.Example)`` for every record, read one at a time."""
        tf = self.tf
        for path in files:
            records = iter(tf.data.TFRecordDataset(path, compression_type=self._compression[path]))
            index = 0
            while True:
                try:
                    raw = next(records)
                except StopIteration:
                    break
                except (tf.errors.DataLossError, tf.errors.OpError) as e:
                    raise BadDataError(
                        f"{path}: record {index} cannot be read ({str(e).splitlines()[0]}): the file is damaged, "
                        "or compressed (pass --compression GZIP or ZLIB)"
                    ) from e
                try:
                    example = tf.train.Example.FromString(raw.numpy())
                except Exception as e:  # noqa: BLE001 - protobuf's DecodeError, whose module varies by runtime
                    raise BadDataError(f"{path}: record {index} is not a tf.train.Example ({e})") from e
                yield path, index, example
                index += 1

    def raw_batches(self, shapes: dict) -> Iterator[dict]:
        for path, index, example in self._examples(self.files):
            features = example.features.feature
            out = {}
            for key, shape in shapes.items():
                feature = self.mapping[key]
                if feature not in features:
                    raise BadDataError(
                        f"{path}: record {index} has no feature {feature!r} (it has "
                        f"{', '.join(sorted(features)) or 'none'}): pass --input {key}=FEATURE"
                    )
                out[key] = self._value(features[feature], shape, f"{path}: record {index}, feature {feature!r}")[None]
            yield out

    def _value(self, feature, shape: list | None, where: str) -> np.ndarray:
        """One feature's value, shaped as one sample of the input."""
        kind = feature.WhichOneof("kind")
        if kind == "float_list":
            return _reshaped(np.asarray(feature.float_list.value, np.float32), shape, where)
        if kind == "int64_list":
            return _reshaped(np.asarray(feature.int64_list.value, np.int64), shape, where)
        values = feature.bytes_list.value if kind == "bytes_list" else []
        if len(values) != 1:
            raise BadDataError(f"{where} holds {len(values)} values; expected one serialized tensor or image")
        data = bytes(values[0])
        if data.startswith(_IMAGE_MAGIC):
            sample = shape[1:] if shape else []
            if len(sample) != 3 or sample[0] is None or sample[1] is None:
                raise BadDataError(f"{where} is an image, but the input takes {shown_shape(shape or [])}")
            image = decode_image(self.tf, data, where, int(sample[2] or 3))
            return fit_image(self.tf, image, (int(sample[0]), int(sample[1])), self.resize, where)[0]
        try:
            from tensorflow.core.framework import tensor_pb2

            return _reshaped(self.tf.make_ndarray(tensor_pb2.TensorProto.FromString(data)), shape, where)
        except BadDataError:
            raise
        except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and make_ndarray's errors
            raise BadDataError(
                f"{where} is neither a serialized tensor (tf.io.serialize_tensor) nor a PNG/JPEG/BMP/GIF image ({e})"
            ) from e


def _reshaped(values: np.ndarray, shape: list | None, where: str) -> np.ndarray:
    """``values`` as one sample of an input of ``shape`` (sizes known: reshaped; one unknown: inferred)."""
    sample = list(shape[1:]) if shape else []
    if shape is None or (values.ndim == len(sample) and all(d in (None, g) for d, g in zip(sample, values.shape))):
        return values
    unknown = [d for d in sample if d is None]
    known = int(np.prod([d for d in sample if d is not None]))
    if len(unknown) <= 1 and known and values.size % known == 0 and (unknown or values.size == known):
        return values.reshape([-1 if d is None else d for d in sample])
    raise BadDataError(
        f"{where} holds {values.size} values of shape {list(values.shape)}, which do not make one sample of "
        f"the input's shape {shown_shape(shape)}"
    )
