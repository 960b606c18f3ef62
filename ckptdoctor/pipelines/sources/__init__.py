"""Where repair's data come from: ``--data`` names a file of arrays, a folder of images, TFRecord files, or a function.

``open_source`` tells them apart, in this order:

* ``package.module:function`` whose part before ``:`` is no file: the user's input
  function (``sources.user``; their code runs);
* ``FILE.h5:dataset``, ``X.npy``, ``data.npz``, ``FILE.h5``: arrays (``sources.arrays``);
* a folder of images, PNG/JPEG/BMP/GIF, class subfolders allowed (``sources.images``);
* a TFRecord file (``*.tfrecord*``, or any file given with ``--compression``), a folder
  of ``*.tfrecord*`` files, or a glob matching TFRecord files (``sources.tfrecords``).

Every source binds to the model's inputs and yields batches pass after pass
(``sources.base``); the streamed ones read one sample or batch at a time.
"""

from __future__ import annotations

import glob
import os

from ckptdoctor.errors import BadDataError
from ckptdoctor.pipelines.sources.base import DEFAULT_BATCH_SIZE, Feed, Streamed

__all__ = ["open_source", "Feed", "Streamed", "DEFAULT_BATCH_SIZE"]

_ARRAY_EXTENSIONS = (".npy", ".npz", ".h5", ".hdf5")
_ADVICE = "pass --data X.npy, data.npz, FILE.h5:dataset, a folder of images, TFRecord files or package.module:function"


def _is_tfrecord(path: str) -> bool:
    return ".tfrecord" in os.path.basename(path).lower() or os.path.basename(path).lower().endswith(".tfrec")


def open_source(spec: str, input: str | None = None, compression: str | None = None, resize: bool = True):
    """The source ``spec`` names, opened (nothing read beyond what tells its kind and keys).

    Args:
        spec: what the user passed as ``--data``.
        input: ``--input``: the input one array feeds; for TFRecord files also ``NAME=FEATURE`` pairs.
        compression: TFRecord files: GZIP, ZLIB or NONE (default: by extension).
        resize: images of another size than the input are resized (bilinear); False refuses them.

    Raises:
        BadDataError: nothing there, an empty folder or glob, or a source that cannot be opened.
    """
    from ckptdoctor.pipelines.sources.user import looks_like_function

    if looks_like_function(spec):
        from ckptdoctor.pipelines.sources.user import UserFunction

        return UserFunction(spec, input=_plain(input))
    if os.path.isdir(spec):
        from ckptdoctor.pipelines.sources.images import ImageFolder, image_files

        if image_files(spec):
            return ImageFolder(spec, resize=resize, input=_plain(input))
        return _tfrecords(spec, compression, input, resize)
    if os.path.isfile(spec) and (_is_tfrecord(spec) or (compression and not spec.lower().endswith(_ARRAY_EXTENSIONS))):
        return _tfrecords(spec, compression, input, resize)
    if not os.path.exists(spec) and glob.has_magic(spec):
        return _tfrecords(spec, compression, input, resize)
    from ckptdoctor.pipelines.sources.arrays import ArraySource

    return ArraySource(spec, input=_plain(input))


def _plain(input: str | None) -> str | None:
    if input is not None and "=" in input:
        raise BadDataError(f"--input {input}: NAME=FEATURE maps TFRecord features; for this data pass --input NAME")
    return input


def _tfrecords(spec: str, compression: str | None, input: str | None, resize: bool):
    from ckptdoctor.pipelines.sources.tfrecords import TFRecordFiles, tfrecord_files

    files = tfrecord_files(spec)
    if not files:
        what = "folder" if os.path.isdir(spec) else "pattern"
        raise BadDataError(f"the {what} {spec} holds no image and no *.tfrecord* file: {_ADVICE}")
    return TFRecordFiles(spec, files, compression, input, resize)
