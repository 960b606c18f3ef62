"""The one place TensorFlow is imported, lazily.

Graph analysis, repair and writing call ``import_tensorflow()``; reading a V2
checkpoint never does.
"""

from __future__ import annotations

import contextlib
import os

from ckptdoctor.collector import long_lived_imports
from ckptdoctor.errors import MissingDependencyError

__all__ = ["import_tensorflow", "tensorflow_available"]


@contextlib.contextmanager
def _quiet_stderr():
    """Send fd 2 to a temporary file; yield a function returning what was written."""
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lambda: (sink.seek(0), sink.read().decode("utf-8", "replace"))[1]
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def tensorflow_available() -> bool:
    """True when TensorFlow can be imported (without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        return False


def import_tensorflow():
    """Import TensorFlow quietly and return the module.

    Old-style graphs (``tf.compat.v1.layers``) need tf-keras, so
    ``TF_USE_LEGACY_KERAS=1`` is set unless the caller chose otherwise.

    Raises:
        MissingDependencyError: TensorFlow is not installed.
    """
    import sys

    if sys.modules.get("tensorflow") is not None:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    # TensorFlow's pooling (BFC) allocator on the CPU, unless the caller chose: the default one hands each
    # large activation back to the system and page-faults it in again on the next forward pass (BENCHMARKS.md
    # D7). The pool's memory is returned when the process ends.
    os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
    # TensorFlow's C++ start-up prints CUDA probing lines straight to fd 2, whatever
    # the log level; they would bury our one-line messages, so they are held back
    # and shown only if the import fails.
    with long_lived_imports():
        with _quiet_stderr() as held:
            try:
                import tensorflow as tf

                tf.config.list_physical_devices()
            except ImportError as e:
                raise MissingDependencyError(
                    f"TensorFlow is needed for this ({e}): pip install 'ckptdoctor[tf]'"
                ) from e
            except Exception:
                sys.stderr.write(held())
                raise
        tf.get_logger().setLevel("ERROR")
        try:
            import absl.logging

            absl.logging.set_verbosity(absl.logging.ERROR)
        except ImportError:
            pass
    return tf
