"""Harness: the protobuf wire-format decoders of a bundle (``readers/protowire.py``).

Input: one serialized message (the seeds are a real ``BundleHeaderProto``, ``BundleEntryProto`` values of
TF1 and TF2 checkpoints, a partitioned tensor's piece, and a TF2 ``TrackableObjectGraph``). It is
decoded as each of them; an object graph is then mapped to object paths for its own keys and for keys
extending them (rule 4 of ``object_paths_from_graph``).

    python -m fuzz.protowire -max_total_time=60
"""

from fuzz.common import fuzz, instrumented

with instrumented(__name__):
    from ckptdoctor.errors import CkptDoctorError
    from ckptdoctor.readers.bundle import object_paths_from_graph
    from ckptdoctor.readers.protowire import decode_bundle_entry, decode_bundle_header, decode_object_graph


def test_one_input(data: bytes) -> None:
    for decode in (decode_bundle_header, decode_bundle_entry):
        try:
            decode(data)
        except CkptDoctorError:
            pass
    try:
        nodes = decode_object_graph(data)
    except CkptDoctorError:
        return
    keys = [key for node in nodes for _name, key in node.attributes]
    object_paths_from_graph(nodes, keys + [k + "-keys" for k in keys[:64]] + ["a/.ATTRIBUTES/b"])


if __name__ == "__main__":
    fuzz(test_one_input, "protowire")
