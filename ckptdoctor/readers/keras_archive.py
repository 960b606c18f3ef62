"""Keras 3 ``.keras`` archives read with zipfile and h5py: ``config.json`` plus ``model.weights.h5``.

Nothing in the archive is executed: the config is parsed as JSON, the weights are
read as HDF5 straight from the zip member (no extraction to disk).
"""

from __future__ import annotations

import json
import zipfile

from ckptdoctor.errors import CorruptCheckpointError, UnsupportedFormatError
from ckptdoctor.readers.keras_h5 import KerasH5Reader

__all__ = ["KerasArchiveReader", "is_keras_archive", "CONFIG_MEMBER", "WEIGHTS_MEMBER", "METADATA_MEMBER"]

CONFIG_MEMBER = "config.json"
METADATA_MEMBER = "metadata.json"
WEIGHTS_MEMBER = "model.weights.h5"


def is_keras_archive(path: str) -> bool:
    """Whether ``path`` is a zip holding a Keras ``config.json``."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return CONFIG_MEMBER in zf.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


class KerasArchiveReader(KerasH5Reader):
    """The weights of a ``.keras`` archive, with its config and metadata.

    Attributes:
        model_config: ``config.json`` as a dict.
        metadata: ``metadata.json`` as a dict (``keras_version``, ``date_saved``).
    """

    def __init__(self, path: str):
        try:
            self._zip: zipfile.ZipFile | None = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as e:
            raise CorruptCheckpointError(
                f"{path} is not a readable zip archive ({e}): a .keras file is a zip written by model.save()"
            ) from e
        names = self._zip.namelist()
        try:
            config = json.loads(self._zip.read(CONFIG_MEMBER))
            metadata = json.loads(self._zip.read(METADATA_MEMBER)) if METADATA_MEMBER in names else {}
        except (KeyError, ValueError, zipfile.BadZipFile) as e:
            self._zip.close()
            raise CorruptCheckpointError(f"{path}: its {CONFIG_MEMBER} cannot be read as JSON ({e})") from e
        if WEIGHTS_MEMBER not in names:
            self._zip.close()
            other = [n for n in names if "weights" in n]
            raise UnsupportedFormatError(
                f"{path} has no {WEIGHTS_MEMBER} (members: {', '.join(names)}); "
                + ("weights stored as " + other[0] + " are not supported" if other else "it holds no weights")
            )
        try:
            super().__init__(path, fileobj=self._zip.open(WEIGHTS_MEMBER), label=path)
        except Exception:
            self._zip.close()
            raise
        self.format = "keras-v3"
        self.model_config = config
        self.metadata = metadata
        self.keras_version = metadata.get("keras_version", self.keras_version)

    def close(self) -> None:
        """Close the weights and the archive."""
        super().close()
        if getattr(self, "_fileobj", None) is not None:
            self._fileobj.close()
            self._fileobj = None
        z, self._zip = getattr(self, "_zip", None), None
        if z is not None:
            z.close()
