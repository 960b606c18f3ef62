"""Harness: the ``.keras`` zip reader (``readers/keras_archive.py``) and what reads its members.

Input: a ``.keras`` archive (the seed is one Keras 3 wrote for a tiny model). It goes through the whole
TF-free ``inspect``: the zip's members checked, ``config.json`` and ``metadata.json`` parsed, the
weights member opened as HDF5, the config's layers matched to the weights, the report rendered.

    python -m fuzz.keras_archive -max_total_time=60
"""

from fuzz.common import fuzz, instrumented, scratch_file

with instrumented(__name__):
    from ckptdoctor.errors import CkptDoctorError
    from ckptdoctor.pipelines.inspect import inspect
    from ckptdoctor.reports.table import render_inspect, to_json


def test_one_input(data: bytes) -> None:
    try:
        report = inspect(scratch_file(data, "fuzz.keras"))
    except CkptDoctorError:
        return
    render_inspect(report)
    to_json(report.to_dict())


if __name__ == "__main__":
    fuzz(test_one_input, "keras_archive")
