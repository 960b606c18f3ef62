"""Harness: the ``saved_model.pb`` and ``keras_metadata.pb`` readers (``readers/saved_model_pb.py``,
``readers/keras_metadata.py``) and the SavedModel inspection built on them.

Input: one byte, then a file: ``saved_model.pb`` when the byte is even, ``keras_metadata.pb`` when odd
(the seeds are a tf-keras SavedModel's two files and a ``tf.Module``'s ``saved_model.pb``). The other
file and the ``variables/`` bundle come from ``fuzz/fixtures/savedmodel`` (the same tf-keras
SavedModel). Both readers run on the input, then the whole TF-free ``inspect`` of the directory.

    python -m fuzz.saved_model -max_total_time=60
"""

import shutil

from fuzz.common import FIXTURES, fuzz, instrumented, scratch, scratch_file

with instrumented(__name__):
    from ckptdoctor.errors import CkptDoctorError
    from ckptdoctor.pipelines.inspect import inspect
    from ckptdoctor.readers.keras_metadata import read_keras_metadata_nodes
    from ckptdoctor.readers.saved_model_pb import read_saved_model
    from ckptdoctor.reports.table import render_inspect

FILES = ("saved_model.pb", "keras_metadata.pb")


def test_one_input(data: bytes) -> None:
    if not data:
        return
    fuzzed = FILES[data[0] & 1]
    directory = scratch() / "sm"
    if not (directory / "variables").is_dir():
        shutil.copytree(FIXTURES / "savedmodel", directory, dirs_exist_ok=True)
    for name in FILES:
        scratch_file(data[1:] if name == fuzzed else (FIXTURES / "savedmodel" / name).read_bytes(), f"sm/{name}")
    try:
        read_saved_model(str(directory / "saved_model.pb"))
    except CkptDoctorError:
        pass
    try:
        read_keras_metadata_nodes(str(directory))
    except CkptDoctorError:
        pass
    try:
        render_inspect(inspect(str(directory)))
    except CkptDoctorError:
        return


if __name__ == "__main__":
    fuzz(test_one_input, "saved_model")
