"""The one error hierarchy of ckptdoctor.

Every error a user can act on is a ``CkptDoctorError``; the CLI turns it into one
line on stderr and exit code 2. Exceptions of TensorFlow, h5py and numpy are
translated where they enter our code (``raise ... from e``).
"""

__all__ = [
    "CkptDoctorError",
    "CheckpointNotFoundError",
    "CorruptCheckpointError",
    "UnsupportedFormatError",
    "GraphError",
    "BadDataError",
    "OutputExistsError",
    "MissingDependencyError",
    "TensorReadError",
]


class CkptDoctorError(Exception):
    """Base class: a problem the user can fix; the message says what and how."""


class CheckpointNotFoundError(CkptDoctorError):
    """The path given does not name a checkpoint."""


class CorruptCheckpointError(CkptDoctorError):
    """A checkpoint file exists but cannot be read as a checkpoint at all."""


class UnsupportedFormatError(CkptDoctorError):
    """A file of a kind ckptdoctor does not read (or not without an extra)."""


class GraphError(CkptDoctorError):
    """The MetaGraphDef is missing, unreadable or does not fit the checkpoint."""


class BadDataError(CkptDoctorError):
    """Data given for a repair has the wrong shape, dtype or values."""


class OutputExistsError(CkptDoctorError):
    """An output would overwrite an existing file and ``--force`` was not given."""


class MissingDependencyError(CkptDoctorError):
    """An optional dependency (TensorFlow) is needed for this task."""


class TensorReadError(CkptDoctorError):
    """One tensor's bytes cannot be read; other tensors still can.

    Attributes:
        code: the finding code this becomes (``checksum-mismatch`` or
            ``tensor-unreadable``).
        tensor: the tensor's name.
    """

    def __init__(self, code: str, tensor: str, message: str):
        super().__init__(message)
        self.code = code
        self.tensor = tensor
