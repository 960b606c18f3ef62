"""A folder of images as a source, decoded the way ``keras.utils.image_dataset_from_directory`` delivers them.

PNG, JPEG, BMP and GIF files anywhere under the folder (class subfolders allowed), in
sorted order of their paths. Each is decoded with ``tf.io.decode_image`` to the model
input's number of channels (a GIF: its first frame), as float32 in 0-255: the model's
own preprocessing (``Rescaling``, ``Normalization``) does the rest, as it does for
Keras' loader. An image whose height and width differ from the input's is resized
with ``tf.image.resize`` (bilinear, no antialiasing), as Keras does; the report says
how many were, and ``resize=False`` refuses them instead. One image is decoded at a
time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from ckptdoctor.errors import BadDataError
from ckptdoctor.pipelines.sources.base import Streamed, StreamedSource, shown_shape

__all__ = ["ImageFolder", "IMAGE_EXTENSIONS", "image_files"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def image_files(folder: str) -> list[str]:
    """Every image file under ``folder``, recursively, sorted by path (class folders in name order)."""
    found: list[str] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        found.extend(os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS))
    return sorted(found, key=lambda p: os.path.relpath(p, folder).split(os.sep))


def decode_image(tf, data: bytes, path: str, channels: int):
    """One encoded image as a uint8 ``(H, W, channels)`` tensor; an undecodable file is a ``BadDataError``."""
    try:
        return tf.io.decode_image(data, channels=channels, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BadDataError(f"{path} is not a decodable image ({msg}): remove it or save it as PNG or JPEG") from e


def fit_image(tf, image, size: tuple[int, int], resize: bool, where: str) -> tuple[np.ndarray, bool]:
    """``image`` as float32 ``(H, W, C)`` of ``size``, resized bilinearly when it differs; True when resized."""
    have = tuple(int(d) for d in image.shape[:2])
    if have == size:
        return image.numpy().astype(np.float32), False
    if not resize:
        raise BadDataError(
            f"{where} is {have[0]}x{have[1]} but the model input takes {size[0]}x{size[1]}: "
            "resize the images, or drop --resize=False to resize them bilinearly as Keras does"
        )
    return tf.image.resize(image, size, method="bilinear").numpy().astype(np.float32), True


class ImageFolder(StreamedSource):
    """The images under one folder, one raw batch per image."""

    def __init__(self, folder: str, resize: bool = True, input: str | None = None):
        super().__init__()
        self.folder, self.resize, self.runner_input = folder, resize, input
        self.files = image_files(folder)
        if not self.files:
            raise BadDataError(
                f"{folder} holds no image ({', '.join(IMAGE_EXTENSIONS)}): pass a folder of images, "
                "a TFRecord file or X.npy"
            )
        classes = {os.path.relpath(os.path.dirname(p), folder) for p in self.files} - {"."}
        self.name, self.total = folder, len(self.files)
        self._described = f"{folder}: {len(self.files)} images" + (f" in {len(classes)} folders" if classes else "")
        self._resized = 0

    def arrays(self) -> dict:
        return {None: Streamed(None, 4)}

    def raw_batches(self, shapes: dict) -> Iterator[dict]:
        from ckptdoctor.tfcompat import import_tensorflow

        tf = import_tensorflow()
        shape = shapes[None]
        if shape is None or len(shape) != 4:
            raise BadDataError(
                f"{self.folder} holds images, but the model input takes {shown_shape(shape or [])}: "
                "images feed an input of shape [None, height, width, channels]"
            )
        channels = shape[3] or 3
        if channels not in (1, 3, 4):
            raise BadDataError(f"the model input takes {channels} channels: images decode to 1, 3 or 4")
        size = None if shape[1] is None or shape[2] is None else (int(shape[1]), int(shape[2]))
        resized = 0
        try:
            for path in self.files:
                try:
                    with open(path, "rb") as f:
                        data = f.read()
                except OSError as e:
                    raise BadDataError(f"cannot read {path}: {e.strerror or e}") from e
                image = decode_image(tf, data, path, channels)
                if size is None:  # an input of any size: the first image's
                    size = (int(image.shape[0]), int(image.shape[1]))
                array, was = fit_image(tf, image, size, self.resize, path)
                resized += was
                yield {None: array[None]}
        finally:  # also when --max-samples stops the pass early
            if size is not None:
                self._note(size, channels, resized)

    def _note(self, size, channels: int, resized: int) -> None:
        note = f"{self._described}, decoded to {size[0]}x{size[1]}x{channels} float32 in 0-255"
        if resized:
            note += f"; {resized} resized to {size[0]}x{size[1]} (bilinear, as Keras does)"
        self.notes[:] = [note]
