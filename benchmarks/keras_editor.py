"""The alternative a Keras user has for listing a ``.keras`` file's weights: Keras' own file editor.

    python benchmarks/keras_editor.py MODEL.keras

``keras.saving.KerasFileEditor(path).summary()``: it reads the archive's config and every weight, and
prints the weights layer by layer (to /dev/null here: the benchmark times the reading, not a terminal).
"""

import contextlib
import os
import sys

os.environ.pop("TF_USE_LEGACY_KERAS", None)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(path: str) -> int:
    import keras

    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        keras.saving.KerasFileEditor(path).summary()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
