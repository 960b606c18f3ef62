"""Harness: the Keras HDF5 reader with its config (``readers/keras_h5.py``, ``readers/keras_config.py``,
``formats/keras/layout.py``).

Input: an HDF5 file (the seeds are Keras 3 and tf-keras ``.weights.h5`` and full legacy ``.h5`` files of
a tiny model). It goes through the whole TF-free ``inspect``: the reader's structure and attributes, the
legacy ``model_config`` JSON and the layers it names, every dataset's storage check, values and
statistics, the BN diagnosis, the report rendered.

    python -m fuzz.keras_h5 -max_total_time=60
"""

from fuzz.common import fuzz, instrumented, scratch_file

with instrumented(__name__):
    from ckptdoctor.errors import CkptDoctorError
    from ckptdoctor.pipelines.inspect import inspect
    from ckptdoctor.reports.table import render_inspect, to_json


def test_one_input(data: bytes) -> None:
    try:
        report = inspect(scratch_file(data, "fuzz.weights.h5"))
    except CkptDoctorError:
        return
    render_inspect(report)
    to_json(report.to_dict())


if __name__ == "__main__":
    fuzz(test_one_input, "keras_h5")
