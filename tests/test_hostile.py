"""Files that are cheap to make and costly to read: each built for real, then given to the real CLI.

Each case checks the outcome (exit code, one line on stderr, the finding), that the refusal came from
the check meant to catch it (its message), and that the process's peak RSS stayed low (``wait4``). No
wall-clock threshold: work is bounded by refusing before the costly part, which the message and the
memory show; ``benchmarks/hostile.py`` measures the times. The builders are ``hostile_builders.py``.
The CLI runs with TensorFlow and Keras unimportable (``run_cli_measured``), as on a machine without
them: what is measured is the cost of reading the file, not of importing Keras to check a config.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import google_crc32c
import hostile_builders as hb
import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli, run_cli_measured
from test_bundle_reader import HEADER, block, entry_proto, varint, write_bundle, write_file

from ckptdoctor.readers import sstable
from ckptdoctor.readers.bundle import _longest_prefix

MiB = 1 << 20
#: The issue's goal for the config bomb (3 GiB inflated, 6.3 GB RSS before): every case stays below.
RSS_BOUND = 256 * MiB
SEED = Path(__file__).resolve().parents[1] / "sample_ckpts" / "seed"
FIXTURE_SAVEDMODEL = Path(__file__).resolve().parents[1] / "fuzz" / "fixtures" / "savedmodel"
FUZZ_CORPUS = Path(__file__).resolve().parents[1] / "fuzz" / "corpus"
#: Importing TensorFlow alone costs about 560 MiB of RSS here: the bound when Keras checks a config.
WITH_TENSORFLOW_BOUND = 1024 * MiB


def refused(args, *fragments) -> str:
    """Run ``ckptdoctor ARGS``: exit 2 with one line holding ``fragments``, within the memory bound."""
    proc, rss = run_cli_measured(*args)
    assert_one_line_error(proc, *fragments)
    assert rss < RSS_BOUND, f"peak RSS {rss / MiB:.0f} MiB"
    return proc.stderr


def inspected(*args) -> dict:
    """``ckptdoctor inspect ARGS --format json`` (exit 0 or 1, nothing on stderr, within the memory bound)."""
    proc, rss = run_cli_measured("inspect", *args, "--format", "json")
    assert proc.returncode in (0, 1), proc.stderr
    assert proc.stderr == "", proc.stderr
    assert rss < RSS_BOUND, f"peak RSS {rss / MiB:.0f} MiB"
    return json.loads(proc.stdout)


# ----------------------------------------------------------------------------- .keras archives


@pytest.mark.parametrize(
    "build,fragments",
    [
        (hb.config_bomb, ("config.json inflates 3.04 MiB to 3 GiB", "decompression bomb")),
        (hb.weights_bomb, ("model.weights.h5 inflates", "to 3 GiB", "decompression bomb")),
        (lambda p: hb.weights_bomb(p, hdf5_start=True), ("model.weights.h5 inflates", "decompression bomb")),
    ],
    ids=["config-3GiB", "weights-3GiB-zeros", "weights-3GiB-after-real-hdf5"],
)
def test_zip_bombs_are_refused_before_inflating(tmp_path, build, fragments):
    path = build(tmp_path / "bomb.keras")
    assert path.stat().st_size < 4 * MiB
    refused(["inspect", path], *fragments)


def test_a_member_lying_about_its_size_is_read_no_further(tmp_path):
    # The central directory says 2 bytes; the deflate stream holds 3 GiB: zipfile stops at 2 and the CRC fails.
    path = hb.lying_size_archive(tmp_path / "lying.keras")
    refused(["inspect", path], "config.json cannot be read as JSON")


def test_json_members_are_capped_at_64_MiB(tmp_path):
    # Stored (not compressed), so no ratio check: the cap alone refuses it, before reading.
    path = hb.keras_archive(tmp_path / "big.keras", {"config.json": b" " * (65 * MiB)})
    refused(["inspect", path], "config.json declares 65 MiB, above the 64 MiB limit")


def test_deeply_nested_config_is_refused_before_parsing(tmp_path):
    path = hb.deep_json_archive(tmp_path / "deep.keras")
    refused(["inspect", path], "config.json nests 200000 levels deep, above the limit of 256")


def test_weights_member_must_be_hdf5(tmp_path):
    path = hb.keras_archive(tmp_path / "png.keras", {"model.weights.h5": b"\x89PNG\r\n\x1a\n" + bytes(100)})
    refused(["inspect", path], "does not start with the HDF5 signature")


def test_genuine_archive_reads_through_the_window(tmp_path):
    doc = inspected(hb.keras_archive(tmp_path / "ok.keras"))
    assert doc["format"] == "keras-v3" and {t["name"] for t in doc["tensors"]} >= {"layers/dense/vars/0"}
    assert all(t["mean"] is not None for t in doc["tensors"])


@pytest.mark.parametrize("kind", ["keras3", "tfkeras"])
def test_layer_sizes_from_a_config_are_not_allocated(tmp_path, kind):
    # The weights check rebuilds each config layer with Keras: a 600-byte config declaring a 16,000 x 16,000
    # Dense layer made it allocate and initialise 1 GB (Keras 3: 82 s, 3.7 GB RSS; tf-keras: 23 s, 3.7 GB).
    if kind == "keras3":
        path = hb.big_layer_archive(tmp_path / "big.keras")
    else:
        path = hb.big_layer_legacy_h5(tmp_path / "big.h5", FUZZ_CORPUS / "keras_h5" / "tfkeras-full.h5")
    proc, rss = run_cli_measured("inspect", path, "--format", "json", tensorflow=True)
    doc = json.loads(proc.stdout)
    assert proc.returncode == 1
    kernel = [f for f in doc["findings"] if f["code"] == "shape-mismatch" and "kernel" in f["message"]]
    assert kernel and "16000" in kernel[0]["message"]
    assert rss < WITH_TENSORFLOW_BOUND, f"peak RSS {rss / MiB:.0f} MiB"


def test_repair_refuses_a_config_that_does_not_fit_its_weights_before_loading(tmp_path):
    # Keras would build (allocate, 3.7 GB RSS) the 16,000 x 16,000 layer before failing on the weights.
    data = tmp_path / "x.npy"
    np.save(data, np.zeros((8, 4), np.float32))
    proc, rss = run_cli_measured(
        "repair", hb.big_layer_archive(tmp_path / "big.keras"), "--data", data, "--dry-run", tensorflow=True
    )
    assert_one_line_error(proc, "its config and its weights disagree", "the config builds [16000, 16000]")
    assert rss < WITH_TENSORFLOW_BOUND, f"peak RSS {rss / MiB:.0f} MiB"


def test_a_config_of_many_kinds_of_layers_is_checked_up_to_a_bound(tmp_path, monkeypatch):
    # 20,000 Dense layers of different widths: each a rebuild of about 2 ms; 1024 are rebuilt, the rest noted.
    # An empty expectation cache of its own: kinds that earlier tests taught it would not count as rebuilds.
    monkeypatch.setenv("CKPTDOCTOR_CACHE_DIR", str(tmp_path / "cache"))
    proc, rss = run_cli_measured("inspect", hb.many_layers_archive(tmp_path / "many.keras"), "--format", "json",
                                 tensorflow=True)  # fmt: skip
    doc = json.loads(proc.stdout)
    assert proc.returncode == 1 and rss < WITH_TENSORFLOW_BOUND
    assert any("rebuilt 1022 layers" in n for n in doc["notes"])
    assert any("not rebuilt: the config asks for more than 1024 kinds of layers" in n for n in doc["notes"])


# ----------------------------------------------------------------------------- HDF5 datasets


@pytest.mark.parametrize(
    "layout,fragment",
    [
        ("chunked", "declares 4 TiB (shape [1099511627776]) but stores none of its 16777216 chunks"),
        ("partial", "but stores 1 of its 16777216 chunks"),
        ("contiguous", "but stores 0 bytes: its values were never written"),
    ],
)
def test_declared_but_unstored_dataset_is_a_finding(tmp_path, layout, fragment):
    doc = inspected(hb.unstored_weights_h5(tmp_path / "w.weights.h5", layout=layout))
    found = [f for f in doc["findings"] if f["code"] == "tensor-not-stored"]
    assert [(f["tensor"], f["severity"]) for f in found] == [("layers/dense/vars/0", "error")]
    assert fragment in found[0]["message"]
    stats = {t["name"]: t["mean"] for t in doc["tensors"]}
    assert stats.pop("layers/dense/vars/0") is None and all(v is not None for v in stats.values())


def test_unstored_bn_statistic_is_a_finding_not_a_read(tmp_path):
    doc = inspected(hb.unstored_weights_h5(tmp_path / "w.weights.h5", key="layers/batch_normalization/vars/3"))
    found = [f["tensor"] for f in doc["findings"] if f["code"] == "tensor-not-stored"]
    assert found == ["layers/batch_normalization/vars/3"]


def test_external_storage_and_inflating_filters_are_not_read(tmp_path):
    doc = inspected(hb.external_storage_h5(tmp_path / "ext.weights.h5"))
    (msg,) = [f["message"] for f in doc["findings"] if f["code"] == "tensor-not-stored"]
    assert "stored in external file '/dev/zero', not in this file" in msg
    doc = inspected(hb.compressed_zeros_h5(tmp_path / "gz.weights.h5"))
    (msg,) = [f["message"] for f in doc["findings"] if f["code"] == "tensor-not-stored"]
    assert "declares 64 MiB" in msg and "its filters would inflate it more than 100:1" in msg


def test_links_are_not_followed(tmp_path):
    # An external link to a FIFO (opening it would wait forever), a soft link and a hard link making cycles.
    path = hb.linked_h5(tmp_path / "links.weights.h5", tmp_path / "fifo")
    doc = inspected(path)
    assert {t["name"] for t in doc["tensors"]} == {
        f"layers/{layer}/vars/{i}" for layer, n in (("dense", 2), ("batch_normalization", 4)) for i in range(n)
    }


def test_libhdf5_heap_loop_is_refused(tmp_path):
    # libhdf5 1.14.6 decodes this heap (for the layers' names) forever; the old reader hung.
    path = hb.heap_loop_h5(tmp_path / "loop.weights.h5")
    refused(["inspect", path], "holds a free-space object of size 0 (libhdf5 would loop forever")


def test_driver_information_block_declaring_gigabytes_is_refused(tmp_path):
    # libhdf5 1.14.6 allocates the 1.5 GiB the block declares (1.57 GB of RSS) before it reads past the file's end.
    path = hb.driver_info_h5(tmp_path / "model.weights.h5")
    refused(["inspect", path], "a damaged HDF5 file", "driver information block of 1610612736 bytes", "past the end")
    # The same block where the file is cut: libhdf5 reads the missing bytes as zeros (4 GB of RSS before).
    cut = hb.cut_superblock_h5(tmp_path / "cut.h5")
    assert cut.stat().st_size == 41
    refused(["inspect", cut], "driver information block of 4243456004 bytes at offset 10")


@pytest.mark.parametrize(
    "build,code,fragments",
    [
        (hb.keras_weights_h5, None, ()),
        (hb.unstored_weights_h5, "tensor-not-stored", ("declares 4 TiB", "(shard w_00000.weights.h5)")),
        (hb.heap_loop_h5, "shard-unreadable", ("a damaged HDF5 file", "free-space object of size 0")),
        (hb.driver_info_h5, "shard-unreadable", ("a damaged HDF5 file", "driver information block")),
    ],
    ids=["genuine", "unstored-4TiB", "heap-loop", "driver-info-1.5GiB"],
)
def test_shards_of_sharded_weights_get_the_checks_of_one_weights_file(tmp_path, build, code, fragments):
    # Each shard is read as a .weights.h5 is: the reader once read every dataset unchecked (4 TiB of fill values
    # for the unstored kernel), read layer names from a hostile heap and opened shards without the superblock check.
    report = inspected(hb.sharded_weights(tmp_path / "sharded", build))
    found = [f for f in report["findings"] if f["code"] == code]
    assert len(found) == (code is not None)
    for fragment in fragments:
        assert fragment in found[0]["message"]
    if code != "shard-unreadable":  # every dataset is listed, with the shapes h5py reads from the shard
        import h5py

        with h5py.File(tmp_path / "sharded" / "w_00000.weights.h5") as f:
            shapes = {}
            f.visititems(lambda n, o: shapes.update({n: list(o.shape)}) if isinstance(o, h5py.Dataset) else None)
        assert {t["name"]: t["shape"] for t in report["tensors"]} == shapes


def test_a_manifest_above_the_json_limit_is_not_read(tmp_path):
    manifest = tmp_path / "w.weights.json"
    with open(manifest, "wb") as f:
        f.truncate((64 << 20) + 1)  # a sparse file: 64 MiB of zeros and one byte
    refused(["inspect", manifest], "w.weights.json is not a readable JSON manifest", "above the 64 MiB limit")


def test_a_local_heap_free_list_that_loops_is_refused(tmp_path):
    # libhdf5 1.14.6 allocates a node per free block while decoding the list: one naming itself never ends.
    path = hb.free_list_loop_h5(tmp_path / "model.weights.h5")
    refused(["inspect", path], "a damaged HDF5 file", "has a free list that returns to offset")


def test_heap_signatures_are_found_where_bytes_find_finds_them():
    # The heap scan searches with a compiled pattern: each next match in [pos, stop) must be bytes.find's,
    # overlapping signatures, ones cut by the window's ends and a window ending inside one included.
    # Both signatures, of global (GCOL) and local (HEAP) heaps.
    from ckptdoctor.readers.hdf5_raw import _HEAP_SEARCH, _HEAP_SIGNATURE, _LOCAL_HEAP_SEARCH, _LOCAL_HEAP_SIGNATURE

    rng = np.random.default_rng(3)
    for _ in range(300):
        buf = bytearray(rng.integers(0x40, 0x50, int(rng.integers(0, 200)), dtype=np.uint8).tobytes())
        for at in rng.integers(0, len(buf) + 1, int(rng.integers(0, 6))):
            signature = (_HEAP_SIGNATURE, _LOCAL_HEAP_SIGNATURE)[int(rng.integers(0, 2))]
            buf[at : at + 4] = signature
        data = bytes(buf) + (b"GCOLGCOL", b"HEAPGCOL")[int(rng.integers(0, 2))][: int(rng.integers(0, 9))]
        pos, stop = sorted(int(x) for x in rng.integers(0, len(data) + 1, 2))
        for search, signature in ((_HEAP_SEARCH, _HEAP_SIGNATURE), (_LOCAL_HEAP_SEARCH, _LOCAL_HEAP_SIGNATURE)):
            found, want = [], []
            m = search(data, pos, stop)
            while m is not None:
                found.append(m.start())
                m = search(data, m.start() + 1, stop)
            p = data.find(signature, pos, stop)
            while p >= 0:
                want.append(p)
                p = data.find(signature, p + 1, stop)
            assert found == want


def test_variable_length_value_declaring_gigabytes_is_refused(tmp_path):
    # libhdf5 allocated and zeroed the 1.25 GiB this descriptor declares (1.36 GB RSS) before failing.
    path = hb.vlen_length_h5(tmp_path / "vlen.weights.h5")
    refused(["inspect", path], "declares 1342177280 bytes but its global heap object holds 5")


def test_variable_length_datatype_of_unknown_kind_is_refused(tmp_path):
    # h5py's attrs[...] crashed the process (segmentation fault) reading this attribute; now refused before.
    path = hb.vlen_kind_h5(tmp_path / "kind.weights.h5")
    refused(["inspect", path], "keras_version", "variable-length datatype of unknown kind 14")


@pytest.mark.parametrize("chunked", [False, True], ids=["contiguous", "chunked"])
def test_string_dataset_declaring_gigabytes_is_not_read(tmp_path, chunked):
    # diff reads every tensor: the vocabulary's descriptors are checked first (libhdf5 would allocate 1.25 GiB).
    path = hb.vlen_dataset_h5(tmp_path / "vocab.weights.h5", chunked)
    refused(["diff", path, path], "layers/vocab/vars/0: a value declares 1342177280 bytes")


def test_report_file_with_a_hostile_heap_is_refused(tmp_path):
    path = hb.heap_loop_h5(tmp_path / "report.h5")
    refused(["report", path], "is not an HDF5 file", "loop forever")


# ----------------------------------------------------------------------------- data files


@pytest.mark.parametrize(
    "build,spec,fragment",
    [
        (hb.npy_header_bomb, "{}", "its header declares shape [1099511627776, 2] of float32 (8 TiB)"),
        (hb.npz_bomb, "{}", "member inp.npy inflates 3.04 MiB to 3 GiB"),
        (hb.unstored_data_h5, "{}:x", "dataset x declares 2 TiB (shape [274877906944, 2]) but stores none"),
        (lambda p: hb.driver_info_h5(p, data=True), "{}:x", "driver information block of 1610612736 bytes"),
        (lambda p: hb.driver_info_h5(p, data=True), "{}", "driver information block of 1610612736 bytes"),
        (lambda p: hb.free_list_loop_h5(p, data=True), "{}:x", "local heap at offset 680 has a free list that returns"),
    ],
    ids=[
        "npy-2^40-rows",
        "npz-3GiB",
        "h5-2^38-rows-unstored",
        "h5-driver-info-1.5GiB",
        "h5-all-driver-info-1.5GiB",
        "h5-free-list-loop",
    ],
)
def test_hostile_data_are_refused_before_any_work(tmp_path, build, spec, fragment):
    path = build(tmp_path / ("data" + {"npy_header_bomb": ".npy", "npz_bomb": ".npz"}.get(build.__name__, ".h5")))
    stderr = refused(["repair", SEED / "model.ckpt", "--data", spec.format(path), "--dry-run"], fragment)
    assert "internal error" not in stderr


def test_npz_member_holding_less_than_its_header_declares(tmp_path):
    import io

    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f4", "fortran_order": False, "shape": (1 << 30, 2)})
    path = hb.write_zip(tmp_path / "short.npz", [("inp.npy", head.getvalue() + bytes(64))])
    refused(["repair", SEED / "model.ckpt", "--data", path, "--dry-run"], "declares shape [1073741824, 2]")


def test_damaged_chunk_of_integer_data_is_a_one_line_error(tmp_path):
    # fuzz/regressions/data/h5-integer-chunk-unreadable: the NaN check reads float data only, so a damaged
    # gzip chunk of integer data is first met when the batches are read: still one line, exit 2.
    import h5py

    path = tmp_path / "ints.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(128, dtype=np.int32).reshape(64, 2), chunks=(8, 2), compression="gzip")
    with h5py.File(path, "r") as f:
        info = f["x"].id.get_chunk_info(0)
    with open(path, "r+b") as f:
        f.seek(info.byte_offset)
        f.write(b"\xff" * info.size)
    proc = run_cli("repair", SEED / "model.ckpt", "--data", f"{path}:x", "--dry-run")  # with TensorFlow: it runs
    assert_one_line_error(proc, "rows 0 to 64 cannot be read", "the data file is damaged")


def test_npy_header_that_does_not_parse(tmp_path):
    path = tmp_path / "bad.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': ((((\n")
    refused(["repair", SEED / "model.ckpt", "--data", path, "--dry-run"], "is not a readable .npy array")


# ----------------------------------------------------------------------------- SavedModels


def test_deeply_nested_saved_model_pb(tmp_path):
    proc, rss = run_cli_measured("inspect", hb.deep_saved_model(tmp_path / "sm"))
    assert proc.returncode in (0, 1, 2) and "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) <= 1
    assert rss < RSS_BOUND


def test_keras_metadata_with_deep_json_and_a_long_node_path(tmp_path):
    directory = shutil.copytree(FIXTURE_SAVEDMODEL, tmp_path / "sm")
    deep = b"[" * 200_000 + b"]" * 200_000
    (directory / "keras_metadata.pb").write_bytes(hb.saved_metadata([("root", deep)]))
    doc = inspected(directory)
    assert any("keras_metadata.pb" in n and "nests 200000 levels deep" in n for n in doc["notes"])
    # A BN node whose path has 100,000 parts: its holders are found in linear time (it was quadratic).
    long_path = "root" + ".layer-0" * 100_000
    meta = json.dumps({"class_name": "BatchNormalization", "name": "bn"}).encode()
    (directory / "keras_metadata.pb").write_bytes(hb.saved_metadata([(long_path, meta)]))
    doc = inspected(directory)
    assert doc["format"] == "tf-saved-model"


def test_an_object_graph_without_nodes_has_no_root_to_walk_from(tmp_path):
    # fuzz/regressions/saved_model/object-graph-without-nodes: saved_model.pb's object graph is there but holds no
    # node, and keras_metadata.pb names a BN layer by a path from the root (node 0): an IndexError, a traceback.
    from tensorflow.core.protobuf import saved_model_pb2

    directory = shutil.copytree(FIXTURE_SAVEDMODEL, tmp_path / "sm")
    saved = saved_model_pb2.SavedModel.FromString((directory / "saved_model.pb").read_bytes())
    graph = saved.meta_graphs[0].object_graph_def
    first = graph.nodes[0].children[0].local_name
    del graph.nodes[:]
    (directory / "saved_model.pb").write_bytes(saved.SerializeToString())
    meta = json.dumps({"class_name": "BatchNormalization", "name": "bn"}).encode()
    (directory / "keras_metadata.pb").write_bytes(hb.saved_metadata([(f"root.{first}", meta)]))
    doc = inspected(directory)
    assert doc["format"] == "tf-saved-model"
    # The bundle's own BN layer is still found, by its keys; nothing is made up for the one the graph does not hold.
    assert [layer["layer"] for layer in doc["bn_layers"]] == ["layer_with_weights-1"]


# ----------------------------------------------------------------------------- checkpoints (bundles)


def test_entries_sharing_bytes_are_read_once(tmp_path):
    # 2000 index entries all claim the same 1 MiB: "every tensor" would read it 2000 times.
    raw = np.arange(MiB // 4, dtype=np.float32).tobytes()
    entry = entry_proto(1, [MiB // 4], 0, len(raw), google_crc32c.value(raw))
    prefix = write_bundle(tmp_path, [(f"t{i:04d}".encode(), entry) for i in range(2000)], raw)
    doc = inspected(prefix, "--graph", "False")
    assert [t["name"] for t in doc["tensors"] if t["mean"] is not None] == ["t0000"]
    overlapping = [f for f in doc["findings"] if f["code"] == "tensor-unreadable"]
    assert len(overlapping) == 1999 and "overlap those of 't0000'" in overlapping[0]["message"]


def test_object_graph_declaring_millions_of_strings_is_not_read(tmp_path):
    # The object graph must be one string: its 10,000,000 "strings" (10 MB) were 10 million objects.
    doc = inspected(hb.object_graph_bundle(tmp_path), "--graph", "False")  # within the memory bound
    assert [(t["name"], t["shape"], t["object_path"]) for t in doc["tensors"]] == [
        ("_CHECKPOINTABLE_OBJECT_GRAPH", [10_000_000], None)
    ]


def test_index_of_another_kind_is_told_by_its_footer(tmp_path):
    # A sparse 1 GiB file of zeros named .index: its last 48 bytes say it is none, before it is read.
    with open(tmp_path / "ckpt.index", "wb") as f:
        f.truncate(1 << 30)
    write_file(tmp_path / "ckpt.data-00000-of-00001", b"")
    refused(["inspect", tmp_path / "ckpt", "--graph", "False"], "is not a TensorFlow checkpoint index: bad magic")


def _table(blocks: list[bytes], handles: list[bytes]) -> bytes:
    """An SSTable of the given data blocks whose index lists ``handles`` (raw block handles)."""
    out = bytearray()

    def put(contents: bytes) -> bytes:
        handle = varint(len(out)) + varint(len(contents))
        crc = sstable.mask_crc(google_crc32c.extend(google_crc32c.value(contents), b"\x00"))
        out.extend(contents + b"\x00" + struct.pack("<I", crc))
        return handle

    real = [put(b) for b in blocks]
    index = [(f"k{i:06d}".encode(), h) for i, h in enumerate(handles or real)]
    meta = put(block([]))
    index_handle = put(block(index, restart_interval=1))
    return bytes(out + (meta + index_handle).ljust(40, b"\x00") + struct.pack("<Q", sstable.TABLE_MAGIC))


def test_index_listing_one_block_many_times_is_refused(tmp_path):
    data_block = block([(b"", HEADER)] + [(f"t{i:04d}".encode(), entry_proto(1, [1], 0, 4)) for i in range(200)])
    handle = varint(0) + varint(len(data_block))
    write_file(tmp_path / "ckpt.index", _table([data_block], [handle] * 5000))
    write_file(tmp_path / "ckpt.data-00000-of-00001", bytes(4))
    refused(["inspect", tmp_path / "ckpt", "--graph", "False"], "overlaps the previous block")


def test_prefix_compression_cannot_rebuild_quadratically_many_key_bytes(tmp_path):
    # 40,000 entries each sharing its whole predecessor plus one byte: 800 MB of keys from 200 kB.
    entries = [varint(0) + varint(0) + varint(len(HEADER)) + HEADER, varint(0) + varint(1000) + varint(0) + b"k" * 1000]
    entries += [varint(1000 + i) + varint(1) + varint(0) + b"a" for i in range(40_000)]  # share all, add one byte
    data_block = b"".join(entries) + struct.pack("<II", 0, 1)  # one restart point, at 0
    write_file(tmp_path / "ckpt.index", _table([data_block], []))
    write_file(tmp_path / "ckpt.data-00000-of-00001", b"")
    assert (tmp_path / "ckpt.index").stat().st_size < 300_000
    refused(["inspect", tmp_path / "ckpt", "--graph", "False"], "its keys expand to more than 64 times")


def test_many_pieces_are_tiled_without_pairwise_checks(tmp_path):
    from ckptdoctor.readers.bundle import BundleReader, encode_slice_key

    full = np.arange(4096 * 4, dtype=np.float32).reshape(4096, 4)
    grid = np.arange(80 * 80, dtype=np.float32).reshape(80, 80)
    items, data = [], b""
    for name, array, regions in (
        ("rows", full, [((i, 1), (0, None)) for i in range(4096)]),
        ("grid", grid, [((i, 1), (j, 1)) for i in range(80) for j in range(80)]),
        # Three cells of the last row and (0, 0) left out, a piece of four cells over the last row in: as many
        # elements as the shape, one of them twice.
        (
            "overlap",
            grid,
            [
                ((i, 1), (j, 1))
                for i in range(80)
                for j in range(80)
                if (i, j) not in {(79, 76), (79, 78), (79, 79), (0, 0)}
            ]
            + [((79, 1), (76, 4))],
        ),
    ):
        for extents in regions:
            part = array[tuple(slice(s, s + n if n else None) for s, n in extents)]
            raw = part.tobytes()
            items.append(
                (
                    encode_slice_key(name, extents),
                    entry_proto(1, part.shape, len(data), len(raw), google_crc32c.value(raw)),
                )
            )
            data += raw
        items.append((name.encode(), entry_proto(1, array.shape, slices=regions)))
    with BundleReader(write_bundle(tmp_path, items, data)) as reader:
        assert reader.read("rows").tobytes() == full.tobytes()
        assert reader.read("grid").tobytes() == grid.tobytes()
        with pytest.raises(Exception, match="do not tile"):
            reader.read("overlap")


def test_longest_prefix_search_agrees_with_trying_every_prefix():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    marker = "v/.ATTRIBUTES/"
    words = st.text(alphabet="ab-/", max_size=6)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(words, max_size=12), words)
    def check(suffixes, probe):
        attribute_keys = sorted({marker + s for s in suffixes})
        key = marker + probe
        brute = next(
            (key[:end] for end in range(len(key) - 1, len(marker), -1) if key[:end] in set(attribute_keys)), None
        )
        assert _longest_prefix(attribute_keys, key, len(marker)) == brute

    check()


def test_truncated_copies_of_the_cases_still_give_one_line(tmp_path):
    # Half of each hostile file: whatever the damage, one line (or a report), never a traceback.
    for name, build in hb.CASES.items():
        if name.endswith((".keras", ".weights.h5")):
            path = build(tmp_path / name)
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
            proc, _rss = run_cli_measured("inspect", path)
            assert proc.returncode in (0, 1, 2) and "Traceback" not in proc.stderr, (name, proc.stderr)
            assert "internal error" not in proc.stderr, (name, proc.stderr)
            os.remove(path)
