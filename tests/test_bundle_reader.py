"""Tests of ckptdoctor.readers.bundle (and its sstable / protowire helpers).

Checkpoints are written by TensorFlow itself (session-scoped fixtures, TF
imported lazily) and every listing and value is compared with TensorFlow's own
reader. Damage and hostile-index tests work on copies, or on bundles built here
byte by byte with a tiny SSTable writer.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import struct
import tempfile
import tracemalloc

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before anything can import tensorflow
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import google_crc32c
import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckptdoctor.errors import (
    CheckpointNotFoundError,
    CkptDoctorError,
    CorruptCheckpointError,
    TensorReadError,
    UnsupportedFormatError,
)
from ckptdoctor.readers import protowire, sstable
from ckptdoctor.readers.bundle import BundleReader, TensorNotFoundError, encode_slice_key

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ============================================================ TensorFlow fixtures


@pytest.fixture(scope="session")
def tf():
    import tensorflow as tf  # lazily: only tests that need TF pay for it

    return tf


STRINGS = [b"", b"plain", b"nul\x00inside\x00", b"\xff\xfe not utf-8 \x80", b"x" * 200, bytes(range(256)) * 80]


@pytest.fixture(scope="session")
def dtype_ckpt(tf, tmp_path_factory):
    """Every dtype TF can save on CPU, strings, empty/scalar tensors, NaN/Inf, a variant."""
    rng = np.random.default_rng(0)
    floats = np.array([[0.0, -0.0, 1.5, -2.25], [np.nan, np.inf, -np.inf, 1e-3], [3.0, -7.0, 0.1, 65504.0]])
    t = {}
    t["float32"] = tf.constant(floats.astype(np.float32))
    t["float64"] = tf.constant(floats)
    t["float16"] = tf.constant(floats.astype(np.float16))
    t["bfloat16"] = tf.constant(floats.astype(ml_dtypes.bfloat16))
    t["float8_e5m2"] = tf.cast(tf.constant(floats.astype(np.float32)), tf.dtypes.as_dtype(24))
    finite = np.nan_to_num(floats, posinf=448, neginf=-448).astype(np.float32)  # e4m3fn has no inf
    t["float8_e4m3fn"] = tf.cast(tf.constant(finite), tf.dtypes.as_dtype(25))
    small = np.array([[1.0, -2.0, 0.5, 0.0], [3.0, -0.25, 4.0, 1.0]])
    for name in ("float8_e4m3fnuz", "float8_e4m3b11fnuz", "float8_e5m2fnuz", "float4_e2m1fn"):
        t[name] = tf.constant(small.astype(getattr(ml_dtypes, name)), dtype=tf.dtypes.as_dtype(name))
    ints = np.array([[-8, -1, 0, 7], [3, -2, 5, -5]])
    t["int4"] = tf.constant(ints.astype(ml_dtypes.int4), dtype=tf.dtypes.as_dtype(29))
    t["uint4"] = tf.constant((ints & 15).astype(ml_dtypes.uint4), dtype=tf.dtypes.as_dtype(30))
    t["int2"] = tf.constant(np.clip(ints, -2, 1).astype(ml_dtypes.int2), dtype=tf.dtypes.as_dtype(31))
    t["uint2"] = tf.constant((ints & 3).astype(ml_dtypes.uint2), dtype=tf.dtypes.as_dtype(32))
    for dt in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"):
        info = np.iinfo(dt)
        edges = np.array([info.min, info.max, 0, 1], dt)
        values = np.concatenate([edges, rng.integers(info.min, info.max, 8, dtype=dt)])
        t[dt] = tf.constant(values.astype(dt).reshape(3, 4))
    for q in ("qint8", "quint8", "qint16", "quint16", "qint32"):
        t[q] = tf.cast(tf.constant([[-2.0, 3.0], [-8.0, 7.0]]), tf.dtypes.as_dtype(q))
    t["bool"] = tf.constant([[True, False, True], [False, False, True]])
    t["complex64"] = tf.constant(np.array([1 + 2j, -3.5j, np.nan + 1j, np.inf]).astype(np.complex64))
    t["complex128"] = tf.constant(np.array([[1 + 2j, -3.5j], [1e300 - 1e-300j, 0]]))
    t["string"] = tf.constant(STRINGS)
    t["string_2d"] = tf.constant([[b"a", b"bb", b"\x00"], [b"", b"\xff", b"long" * 40]])
    t["string_many"] = tf.constant([bytes([i % 256]) * (i * 37 % 300) for i in range(500)])  # vectorised path
    t["string_scalar"] = tf.constant(b"hello\x00world")
    t["string_empty"] = tf.constant(np.array([], dtype=object), dtype=tf.string)
    t["empty_f32"] = tf.zeros([0])
    t["empty_2d"] = tf.zeros([0, 5], tf.int64)
    t["empty_3x0"] = tf.zeros([3, 0], tf.bfloat16)
    t["scalar_f32"] = tf.constant(3.25)
    t["scalar_i64"] = tf.constant(-(2**62), tf.int64)
    t["scalar_bool"] = tf.constant(True)
    t["big"] = tf.constant(rng.standard_normal((1000, 257)).astype(np.float32))
    t["big_bf16"] = tf.cast(t["big"], tf.bfloat16)
    t["ünïcode/变量"] = tf.constant([1, 2, 3])
    t["variant"] = tf.raw_ops.TensorListFromTensor(
        tensor=tf.constant([[1.0, 2.0], [3.0, 4.0]]), element_shape=tf.constant([2])
    )
    prefix = str(tmp_path_factory.mktemp("dtypes") / "all")
    names = sorted(t)
    tensors = [t[n] for n in names]
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors)
    return prefix


@pytest.fixture(scope="session")
def tf1_ckpt(tf, tmp_path_factory):
    """TF1 Saver(sharded=True) over two logical CPUs with partitioned variables."""
    directory = tmp_path_factory.mktemp("tf1")
    graph = tf.Graph()
    with graph.as_default():
        v1 = tf.compat.v1
        normal = v1.random_normal_initializer()
        with tf.device("/cpu:0"):
            v1.get_variable("part/var", shape=[10, 4], initializer=normal, partitioner=v1.fixed_size_partitioner(3))
            v1.get_variable("words", initializer=tf.constant([b"a", b"b\x00c", b"\xff"]))
        with tf.device("/cpu:1"):
            v1.get_variable(
                "part2d/var", shape=[4, 6], initializer=normal, partitioner=v1.fixed_size_partitioner(2, axis=1)
            )
            v1.get_variable("plain", shape=[3], initializer=v1.ones_initializer())
        saver = v1.train.Saver(sharded=True)
        config = v1.ConfigProto(device_count={"CPU": 2})
        with v1.Session(graph=graph, config=config) as sess:
            sess.run(v1.global_variables_initializer())
            return saver.save(sess, str(directory / "model.ckpt"), write_meta_graph=False)


@pytest.fixture(scope="session")
def tf2_ckpt(tf, tmp_path_factory):
    """tf.train.Checkpoint of a tf_keras model, legacy Adam slots, a hash table, an odd name."""
    model = tf.keras.Sequential([tf.keras.layers.Dense(4, input_shape=(3,)), tf.keras.layers.Dense(2)])
    optimizer = tf.keras.optimizers.legacy.Adam()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(tf.ones([2, 3])))
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    table = tf.lookup.experimental.MutableHashTable(key_dtype=tf.string, value_dtype=tf.int64, default_value=-1)
    table.insert(tf.constant(["a", "b"]), tf.constant([1, 2], tf.int64))
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, table=table, **{"weird.name/x": tf.Variable(3.0)})
    return ckpt.save(str(tmp_path_factory.mktemp("tf2") / "ckpt"))


@pytest.fixture(scope="session")
def tf2_sharded_ckpt(tf, tmp_path_factory):
    """TF2 checkpoint split by MaxShardSizePolicy: several data files, slices across them."""
    ckpt = tf.train.Checkpoint(
        v1=tf.Variable(tf.random.normal([50, 50], seed=1)), v2=tf.Variable(tf.range(100)), s=tf.Variable(["x", "yy"])
    )
    policy = tf.train.experimental.MaxShardSizePolicy(max_shard_size=3000)
    options = tf.train.CheckpointOptions(experimental_sharding_callback=policy)
    return ckpt.write(str(tmp_path_factory.mktemp("tf2s") / "ckpt"), options=options)


@pytest.fixture(scope="session")
def many_keys_ckpt(tf, tmp_path_factory):
    """6500 scalar tensors with long names: an index of several data blocks."""
    names = [f"block/{i:05d}/" + "a_long_name_segment_" * 5 for i in range(6500)]
    tensors = [tf.constant(float(i)) for i in range(len(names))]
    prefix = str(tmp_path_factory.mktemp("many") / "many")
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors)
    return prefix


@pytest.fixture(scope="session")
def huge_ckpt(tf, tmp_path_factory):
    """One 64 MiB float32 tensor, for bounded-memory streaming."""
    prefix = str(tmp_path_factory.mktemp("huge") / "huge")
    value = tf.random.uniform([16 * 1024 * 1024], seed=3)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=["w"], shape_and_slices=[""], tensors=[value])
    return prefix


# ============================================================ comparison with TF


def assert_same_as_tf(tf, prefix: str) -> BundleReader:
    """Names, dtypes, shapes and bytes identical to TensorFlow's reader."""
    tf_reader = tf.train.load_checkpoint(prefix)
    shapes = tf_reader.get_variable_to_shape_map()
    dtypes = tf_reader.get_variable_to_dtype_map()
    reader = BundleReader(prefix)
    entries = reader.entries()
    assert [e.name for e in entries] == sorted(shapes)
    assert [(e.name, list(e.shape)) for e in entries] == [(n, s) for n, s in tf.train.list_variables(prefix)]
    for entry in entries:
        assert entry.shape == tuple(shapes[entry.name]), entry.name
        assert entry.dtype == dtypes[entry.name].name, entry.name
        if entry.dtype == "variant":
            with pytest.raises(UnsupportedFormatError, match="variant tensors are listed but not decoded"):
                reader.read(entry.name)
            continue
        ours = reader.read(entry.name)
        theirs = tf_reader.get_tensor(entry.name)
        assert_same_values(ours, theirs, entry.name)
    return reader


def assert_same_values(ours: np.ndarray, theirs, name: str) -> None:
    if ours.dtype == object:  # strings: TF gives bytes for a scalar, an object array otherwise
        theirs = np.asarray(theirs, dtype=object)
        assert ours.shape == theirs.shape, name
        assert all(type(a) is bytes and a == b for a, b in zip(ours.ravel(), theirs.ravel())), name
    else:
        assert ours.dtype == theirs.dtype, name
        assert ours.shape == theirs.shape, name
        assert ours.tobytes() == theirs.tobytes(), name


def test_all_dtypes_match_tensorflow(tf, dtype_ckpt):
    reader = assert_same_as_tf(tf, dtype_ckpt)
    listed = {e.name: e for e in reader.entries()}
    assert {e.dtype for e in listed.values()} >= {
        "float32", "float64", "int32", "uint8", "int16", "int8", "string", "complex64", "int64", "bool",
        "qint8", "quint8", "qint32", "bfloat16", "qint16", "quint16", "uint16", "complex128", "float16",
        "variant", "uint32", "uint64", "float8_e5m2", "float8_e4m3fn", "float8_e4m3fnuz",
        "float8_e4m3b11fnuz", "float8_e5m2fnuz", "int4", "uint4",
    }  # fmt: skip
    assert listed["float32"].nbytes == 48 and not listed["float32"].partitioned
    assert listed["string_empty"].nbytes == 4  # just the length checksum
    assert listed["empty_f32"].nbytes == 0 and listed["empty_2d"].shape == (0, 5)
    assert listed["scalar_f32"].shape == () and listed["scalar_f32"].size == 1
    assert all(e.object_path is None for e in listed.values())


def test_dtype_table_matches_tensorflow(tf):
    from ckptdoctor.readers.bundle import _DTYPES

    for enum, dt in _DTYPES.items():
        tf_dtype = tf.dtypes.as_dtype(enum)
        assert dt.name == tf_dtype.name, enum
        if dt.np_dtype is not None and not tf_dtype.is_quantized:
            assert dt.np_dtype == np.dtype(tf_dtype.as_numpy_dtype).newbyteorder("<"), enum


def test_values_are_what_was_written(dtype_ckpt):
    with BundleReader(dtype_ckpt) as reader:
        assert reader.read("string").tolist() == STRINGS
        scalar = reader.read("string_scalar")
        assert scalar.shape == () and scalar.item() == b"hello\x00world"
        assert reader.read("string_empty").shape == (0,)
        f32 = reader.read("float32")
        assert np.isnan(f32[1, 0]) and f32[1, 1] == np.inf and np.signbit(f32[0, 1])
        assert reader.read("int4").astype(np.int8).tolist() == [[-8, -1, 0, 7], [3, -2, 5, -5]]
        assert reader.read("int4").dtype == ml_dtypes.int4 and reader.read("uint4").dtype == ml_dtypes.uint4
        assert reader.read("qint8").dtype == np.int8  # like TF's reader: the plain integer type
        assert reader.read("ünïcode/变量").tolist() == [1, 2, 3]
        assert not reader.read("big").flags.writeable  # a view of the data file, not a copy


def test_tf1_partitioned_and_sharded_match_tensorflow(tf, tf1_ckpt):
    reader = assert_same_as_tf(tf, tf1_ckpt)
    assert reader.num_shards == 2
    assert len(glob.glob(tf1_ckpt + ".data-*")) == 2
    listed = {e.name: e for e in reader.entries()}
    assert listed["part/var"].partitioned and listed["part/var"].shape == (10, 4)
    assert listed["part/var"].nbytes == 160
    assert listed["part2d/var"].partitioned and listed["part2d/var"].nbytes == 96
    assert not listed["plain"].partitioned
    assert not any(n.startswith("\x00") for n in listed)


def test_tf2_sharded_slices_across_files_match_tensorflow(tf, tf2_sharded_ckpt):
    reader = assert_same_as_tf(tf, tf2_sharded_ckpt)
    assert reader.num_shards > 1
    listed = {e.name: e for e in reader.entries()}
    v1 = listed["v1/.ATTRIBUTES/VARIABLE_VALUE"]
    assert v1.partitioned and v1.nbytes == 50 * 50 * 4 and v1.object_path == "v1"


def test_tf2_object_paths(tf, tf2_ckpt):
    reader = assert_same_as_tf(tf, tf2_ckpt)
    paths = {e.name: e.object_path for e in reader.entries()}
    assert paths["_CHECKPOINTABLE_OBJECT_GRAPH"] is None
    assert paths["model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"] == "model/layer_with_weights-0/kernel"
    assert paths["save_counter/.ATTRIBUTES/VARIABLE_VALUE"] == "save_counter"
    assert paths["optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE"] == "optimizer/iter"
    assert (
        paths["model/layer_with_weights-1/bias/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE"]
        == "model/layer_with_weights-1/bias/.OPTIMIZER_SLOT/optimizer/m"
    )
    assert paths["table/.ATTRIBUTES/table-keys"] == "table/table-keys"  # legacy prefix match
    assert paths["weird..name.Sx/.ATTRIBUTES/VARIABLE_VALUE"] == "weird.name/x"  # raw, unescaped names
    # Independent check: TF builds keys from the same BFS paths, so un-escaping
    # the key (spec 10.3 step 5) must give the path found through the graph.
    for key, path in paths.items():
        if "/.ATTRIBUTES/" in key:
            assert path == parse_key_without_graph(key), key
    assert reader.object_graph_error is None
    graph = reader.read("_CHECKPOINTABLE_OBJECT_GRAPH")
    assert graph.dtype == object and graph.shape == ()


def test_object_graph_decoded_as_tensorflow_parses_it(tf, tf2_ckpt, tmp_path):
    # Every node's children, attributes and slot variables as TF's own proto parser reads them: slots, a table's
    # several tensors, odd names, and a name over 127 bytes (two-byte lengths: the decoder's general path).
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    long_name = tf.train.Checkpoint(**{"n" * 150: tf.Variable(1.0)}).write(str(tmp_path / "long"))
    for prefix in (tf2_ckpt, long_name):
        with BundleReader(prefix) as reader:
            blob = reader.read_object_graph()
        ours = protowire.decode_object_graph(blob)
        theirs = trackable_object_graph_pb2.TrackableObjectGraph.FromString(blob).nodes
        assert len(ours) == len(theirs) >= 2
        for mine, node in zip(ours, theirs):
            assert mine.children == tuple((c.node_id, c.local_name) for c in node.children)
            assert mine.attributes == tuple((a.name, a.checkpoint_key) for a in node.attributes)
            slots = node.slot_variables
            assert mine.slot_variables == tuple(
                (s.original_variable_node_id, s.slot_name, s.slot_variable_node_id) for s in slots
            )
    assert any(len(key) > 127 for node in ours for _name, key in node.attributes)


def parse_key_without_graph(key: str) -> str:
    obj, attr = key.split("/.ATTRIBUTES/")

    def unescape(segment: str) -> str:  # left to right: ".." -> ".", ".S" -> "/"
        return re.sub(r"\.([.S])", lambda m: "." if m.group(1) == "." else "/", segment)

    segments = [s if s in (".OPTIMIZER_SLOT",) else unescape(s) for s in obj.split("/")]
    return "/".join(segments) if attr == "VARIABLE_VALUE" else "/".join(segments + [attr])


def test_index_of_several_blocks_matches_tensorflow(tf, many_keys_ckpt):
    with open(many_keys_ckpt + ".index", "rb") as f:
        data = f.read()
    _, index_handle = sstable.read_footer(data, "many.index")
    index_block = sstable.read_block(data, index_handle, "many.index", "index block")
    assert len(list(sstable.iter_block(index_block, "many.index", "index block"))) >= 3
    reader = BundleReader(many_keys_ckpt)
    entries = reader.entries()
    assert len(entries) == 6500
    tf_names = [n for n, _ in tf.train.list_variables(many_keys_ckpt)]
    assert [e.name for e in entries] == tf_names
    tf_reader = tf.train.load_checkpoint(many_keys_ckpt)
    for name in tf_names[::97] + tf_names[-3:]:
        assert reader.read(name).tobytes() == tf_reader.get_tensor(name).tobytes()


# ============================================================ chunks and memory


@pytest.mark.parametrize("chunk_bytes", [1, 7, 1000, 1 << 20])
def test_iter_chunks_concatenate_to_read(dtype_ckpt, tf1_ckpt, tf2_sharded_ckpt, chunk_bytes):
    cases = [(dtype_ckpt, n) for n in ("big", "big_bf16", "float16", "int4", "complex128", "bool", "string",
             "string_many", "string_scalar", "string_empty", "empty_2d", "scalar_f32", "float8_e5m2")]  # fmt: skip
    cases += [(tf1_ckpt, "part/var"), (tf1_ckpt, "words"), (tf2_sharded_ckpt, "v1/.ATTRIBUTES/VARIABLE_VALUE")]
    for prefix, name in cases:
        with BundleReader(prefix) as reader:
            whole = reader.read(name).ravel()
            chunks = list(reader.iter_chunks(name, chunk_bytes))
            assert all(c.ndim == 1 for c in chunks)
            if whole.dtype != object:
                assert all(c.nbytes <= max(chunk_bytes, c.itemsize) for c in chunks), name
                joined = np.concatenate(chunks) if chunks else np.empty(0, whole.dtype)
                assert joined.dtype == whole.dtype and joined.tobytes() == whole.tobytes(), name
            else:
                assert [x for c in chunks for x in c] == whole.tolist(), name


def test_streaming_a_large_tensor_keeps_memory_bounded(huge_ckpt):
    with BundleReader(huge_ckpt) as reader:
        tracemalloc.start()
        try:
            total = 0.0
            count = 0
            for chunk in reader.iter_chunks("w", chunk_bytes=1 << 20):
                total += float(chunk.sum(dtype=np.float64))
                count += chunk.size
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            whole = reader.read("w")  # a view: only the CRC step is copied
            _, peak_read = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert count == 16 * 1024 * 1024
        assert peak < 8 << 20, peak
        assert peak_read < 24 << 20, peak_read
        assert abs(float(whole.sum(dtype=np.float64)) - total) < 1e-3 * count


# ============================================================ damage


def copy_checkpoint(prefix: str, directory) -> str:
    for path in glob.glob(glob.escape(prefix) + ".*"):
        shutil.copy(path, directory)
    return os.path.join(directory, os.path.basename(prefix))


def entry_of(prefix: str, name: str) -> protowire.BundleEntry:
    items = dict(sstable.read_table(prefix + ".index"))
    return protowire.decode_bundle_entry(items[name.encode()])


def flip_byte(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


def test_flipped_data_byte_fails_that_tensor_only(dtype_ckpt, tmp_path):
    prefix = copy_checkpoint(dtype_ckpt, tmp_path)
    data_file = prefix + ".data-00000-of-00001"
    flip_byte(data_file, entry_of(prefix, "float64").offset + 5)
    flip_byte(data_file, entry_of(prefix, "string").offset + entry_of(prefix, "string").size - 3)
    with BundleReader(prefix) as reader:
        for name in ("float64", "string"):
            with pytest.raises(TensorReadError) as info:
                reader.read(name)
            assert info.value.code == "checksum-mismatch" and info.value.tensor == name
            message = str(info.value)
            assert name in message and data_file in message
            assert "expected crc32c 0x" in message and "computed 0x" in message
        with pytest.raises(TensorReadError, match="checksum") as info:
            for _ in reader.iter_chunks("float64", chunk_bytes=8):
                pass
        assert info.value.code == "checksum-mismatch"
        for entry in reader.entries():
            if entry.name not in ("float64", "string", "variant"):
                reader.read(entry.name)


def test_flipped_string_length_checksum(dtype_ckpt, tmp_path):
    prefix = copy_checkpoint(dtype_ckpt, tmp_path)
    entry = entry_of(prefix, "string_2d")
    lengths_size = sum(len(varint(len(s))) for s in [b"a", b"bb", b"\x00", b"", b"\xff", b"long" * 40])
    flip_byte(prefix + ".data-00000-of-00001", entry.offset + lengths_size)  # first byte of the checksum
    with BundleReader(prefix) as reader, pytest.raises(TensorReadError, match="length checksum") as info:
        reader.read("string_2d")
    assert info.value.code == "checksum-mismatch"


def test_truncated_data_file(dtype_ckpt, tmp_path):
    prefix = copy_checkpoint(dtype_ckpt, tmp_path)
    data_file = prefix + ".data-00000-of-00001"
    cut = entry_of(prefix, "big").offset + 100
    os.truncate(data_file, cut)
    with BundleReader(prefix) as reader:
        with pytest.raises(TensorReadError) as info:
            reader.read("big")
        assert info.value.code == "tensor-unreadable" and info.value.tensor == "big"
        big = entry_of(prefix, "big")
        message = str(info.value)
        assert data_file in message and str(big.offset + big.size) in message and f"only {cut} bytes" in message
        with pytest.raises(TensorReadError, match="truncated"):
            reader.iter_chunks("big")
        readable = [e.name for e in reader.entries() if entry_of(prefix, e.name).offset + e.nbytes <= cut]
        assert readable
        for name in readable:
            if name != "variant":
                reader.read(name)


def test_data_file_cut_short_while_a_tensor_streams(dtype_ckpt, tmp_path):
    # A tensor of several chunks is read with pread: a file cut short after the reader checked its size
    # ends the stream with a one-line error, not short chunks or a crash.
    prefix = copy_checkpoint(dtype_ckpt, tmp_path)
    big = entry_of(prefix, "big")
    with BundleReader(prefix) as reader:
        chunks = reader.iter_chunks("big", chunk_bytes=4096)
        first = next(chunks)
        assert first.tobytes() == reader.read("big").reshape(-1)[:1024].tobytes()
        os.truncate(prefix + ".data-00000-of-00001", big.offset + 10000)
        with pytest.raises(TensorReadError, match="cut short") as info:
            list(chunks)
    assert info.value.code == "tensor-unreadable" and info.value.tensor == "big"
    assert str(big.offset + big.size) in str(info.value)


def write_file(path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def test_missing_and_broken_index_files(dtype_ckpt, tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        BundleReader(str(tmp_path / "nothing"))
    with pytest.raises(CheckpointNotFoundError, match="is a directory"):
        BundleReader(str(tmp_path))
    prefix = copy_checkpoint(dtype_ckpt, tmp_path)
    with open(prefix + ".index", "rb") as f:
        good = f.read()

    cases = {
        "empty": b"",
        "short": good[-20:],
        "zero-footer": good[:-48] + bytes(48),
        "png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
        "bad-block-crc": bytes([good[0] ^ 1]) + good[1:],
        "truncated": good[: len(good) // 2],
    }
    messages = {}
    for what, data in cases.items():
        write_file(prefix + ".index", data)
        with pytest.raises(CorruptCheckpointError) as info:
            BundleReader(prefix)
        messages[what] = str(info.value)
        assert prefix + ".index" in messages[what] and "\n" not in messages[what]
    assert "magic" in messages["zero-footer"] and "magic" in messages["png"]
    assert "empty" in messages["empty"] and "checksum mismatch" in messages["bad-block-crc"]

    write_file(prefix + ".index", good)
    os.remove(prefix + ".data-00000-of-00001")
    with pytest.raises(CorruptCheckpointError, match="data-00000-of-00001 is missing"):
        BundleReader(prefix)
    os.remove(prefix + ".index")
    with pytest.raises(CheckpointNotFoundError):
        BundleReader(prefix)


def test_missing_second_shard_is_named(tf1_ckpt, tmp_path):
    prefix = copy_checkpoint(tf1_ckpt, tmp_path)
    os.remove(prefix + ".data-00001-of-00002")
    with pytest.raises(CorruptCheckpointError, match=r"model\.ckpt\.data-00001-of-00002 is missing") as info:
        BundleReader(prefix)
    assert "part2d/var (a piece)" in str(info.value) or "plain" in str(info.value)


def test_prefix_spellings_and_lookup_errors(dtype_ckpt):
    for spelling in (dtype_ckpt, dtype_ckpt + ".index", dtype_ckpt + ".data-00000-of-00001"):
        with BundleReader(spelling) as reader:
            assert reader.prefix == dtype_ckpt and reader.format == "tf-v2-bundle"
    reader = BundleReader(dtype_ckpt)
    with pytest.raises(TensorNotFoundError, match="did you mean 'float32'") as info:
        reader.read("float33")
    assert isinstance(info.value, KeyError) and isinstance(info.value, CkptDoctorError)
    with pytest.raises(TensorNotFoundError):
        reader.iter_chunks("nope")  # raised at the call, not at the first next()
    view = reader.read("big")
    reader.close()
    assert view[0, 0] == view[0, 0]  # still mapped while viewed
    with pytest.raises(ValueError, match="closed"):
        reader.read("big")


# ============================================================ synthetic bundles


def varint(v: int) -> bytes:
    out = bytearray()
    while True:
        if v < 0x80:
            out.append(v)
            return bytes(out)
        out.append((v & 0x7F) | 0x80)
        v >>= 7


def f_varint(field: int, v: int) -> bytes:
    return varint(field << 3) + varint(v & ((1 << 64) - 1))


def f_len(field: int, payload: bytes) -> bytes:
    return varint((field << 3) | 2) + varint(len(payload)) + payload


def shape_proto(dims) -> bytes:
    return b"".join(f_len(2, f_varint(1, d) if d else b"") for d in dims)


def entry_proto(dtype, dims, offset=0, size=0, crc=0, shard=0, slices=()) -> bytes:
    out = f_varint(1, dtype) + f_len(2, shape_proto(dims))
    if shard:
        out += f_varint(3, shard)
    out += f_varint(4, offset) + f_varint(5, size) + b"\x35" + struct.pack("<I", sstable.mask_crc(crc))
    for extents in slices:
        out += f_len(7, b"".join(f_len(1, f_varint(1, s) + (b"" if n is None else f_varint(2, n))) for s, n in extents))
    return out


HEADER = f_varint(1, 1) + f_len(3, f_varint(1, 1))


def block(items, restart_interval=16) -> bytes:
    out, restarts, prev = bytearray(), [], b""
    for i, (k, v) in enumerate(items):
        shared = 0
        if i % restart_interval:
            while shared < min(len(k), len(prev)) and k[shared] == prev[shared]:
                shared += 1
        else:
            restarts.append(len(out))
        out += varint(shared) + varint(len(k) - shared) + varint(len(v)) + k[shared:] + v
        prev = k
    restarts = restarts or [0]
    return bytes(out) + b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))


def snappy_compress(data: bytes) -> bytes:
    """A naive Snappy compressor (greedy 4-byte matches), for tests only."""
    out = bytearray(varint(len(data)))

    def literal(chunk: bytes) -> None:
        for i in range(0, len(chunk), 200):
            part = chunk[i : i + 200]
            out.extend(bytes([(len(part) - 1) << 2]) if len(part) <= 60 else bytes([60 << 2, len(part) - 1]))
            out.extend(part)

    last: dict[bytes, int] = {}
    pos = lit = 0
    while pos + 4 <= len(data):
        cand = last.get(data[pos : pos + 4])
        last[data[pos : pos + 4]] = pos
        if cand is None or pos - cand > 65535:
            pos += 1
            continue
        length = 4
        while pos + length < len(data) and length < 64 and data[cand + length] == data[pos + length]:
            length += 1
        literal(data[lit:pos])
        offset = pos - cand
        if length <= 11 and offset < 2048:
            out.extend(bytes([((offset >> 8) << 5) | ((length - 4) << 2) | 1, offset & 0xFF]))
        else:
            out.extend(bytes([((length - 1) << 2) | 2]) + struct.pack("<H", offset))
        pos += length
        lit = pos
    literal(data[lit:])
    return bytes(out)


def build_sstable(items, block_size=4096, compress=False) -> bytes:
    """A LevelDB table as TensorFlow writes it (optionally Snappy-compressed)."""
    out = bytearray()

    def put(contents: bytes) -> bytes:
        kind = b"\x00"
        if compress:
            contents, kind = snappy_compress(contents), b"\x01"
        handle = varint(len(out)) + varint(len(contents))
        crc = sstable.mask_crc(google_crc32c.extend(google_crc32c.value(contents), kind))
        out.extend(contents + kind + struct.pack("<I", crc))
        return handle

    index, current, size = [], [], 0
    for k, v in items:
        current.append((k, v))
        size += len(k) + len(v) + 8
        if size >= block_size:
            index.append((current[-1][0], put(block(current))))
            current, size = [], 0
    if current:
        index.append((current[-1][0], put(block(current))))
    meta = put(block([]))
    index_handle = put(block(index, restart_interval=1))
    footer = (meta + index_handle).ljust(40, b"\x00") + struct.pack("<Q", sstable.TABLE_MAGIC)
    return bytes(out + footer)


def write_bundle(directory, items, data: bytes | list[bytes], header: bytes = HEADER) -> str:
    prefix = os.path.join(directory, "synth")
    shards = data if isinstance(data, list) else [data]
    write_file(prefix + ".index", build_sstable([(b"", header)] + sorted(items)))
    for i, blob in enumerate(shards):
        write_file(prefix + f".data-{i:05d}-of-{len(shards):05d}", blob)
    return prefix


def string_payload(values, byte_order="<") -> tuple[bytes, int]:
    lengths = b"".join(varint(len(v)) for v in values)
    fixed = b"".join(struct.pack(byte_order + "I", len(v)) for v in values)
    length_crc = google_crc32c.value(fixed)
    stored = struct.pack(byte_order + "I", sstable.mask_crc(length_crc))
    payload = b"".join(values)
    return lengths + stored + payload, google_crc32c.extend(google_crc32c.extend(length_crc, stored), payload)


def test_table_matches_sstable_spec_example():
    # docs/checkpoint-format.md, "Worked example: a one-tensor index": the 127-byte index of one
    # float32 tensor "f32" [3,4].
    hexdump = (
        "0000060801 1a020801 000313663332 0801120812020803120208042830 35dc5a3b9d 00000000 01000000"
        "00ec85258b 0000000001000000 00c0f2a1b0 000102670 02a 0000000001000000 00d994ef47"
        "2f083c0e" + "00" * 36 + "57fb808b247547db"
    )
    data = bytes.fromhex(hexdump.replace(" ", ""))
    assert len(data) == 127
    items = sstable.parse_table(data, "f32.index")
    assert [k for k, _ in items] == [b"", b"f32"]
    entry = protowire.decode_bundle_entry(items[1][1])
    assert (entry.dtype, entry.shape, entry.offset, entry.size, entry.crc32c) == (1, (3, 4), 0, 48, 0x9D3B5ADC)
    assert protowire.decode_bundle_header(items[0][1]).num_shards == 1


def test_protowire_examples_from_spec():
    e = protowire.decode_bundle_entry(bytes.fromhex("0807120412020805 20d401 28dd01 35daf0102c".replace(" ", "")))
    assert (e.dtype, e.shape, e.offset, e.size, e.crc32c) == (7, (5,), 212, 221, 0x2C10F0DA)
    p = protowire.decode_bundle_entry(
        bytes.fromhex("080112081202080a12020804 3a060a0210060a00 3a080a04080610040a00".replace(" ", ""))
    )
    assert p.shape == (10, 4) and p.slices == (((0, 6), (0, None)), ((6, 4), (0, None)))
    assert protowire.decode_bundle_entry(bytes.fromhex("0801 1206 1200 12020805")).shape == (0, 5)
    assert sstable.unmask_crc(sstable.mask_crc(0x12345678)) == 0x12345678 and sstable.mask_crc(0) == 0xA282EAD8
    # Non-canonical but valid encodings take the generic path.
    odd = f_varint(9, 5) + f_len(2, shape_proto([2])) + bytes([0x88, 0x00, 0x01]) + f_varint(5, 8) + b"\x35" + bytes(4)
    assert protowire.decode_bundle_entry(odd)[:2] == (1, (2,))
    for bad in (b"\x08", b"\x12\x05\x12", b"\x28" + b"\xff" * 11, b"\x0f", bytes.fromhex("12031201ff")):
        with pytest.raises(protowire.WireFormatError):
            protowire.decode_bundle_entry(bad)


def test_slice_keys_match_spec_examples():
    assert encode_slice_key("part/var", [(0, 6), (0, None)]).hex() == "00706172742f76617200010102808680" + "7f"
    assert encode_slice_key("part/var", [(6, 4), (0, None)]).hex() == "00706172742f7661720001010286848" + "07f"
    assert encode_slice_key("m", [(2, 2), (3, 3)]).hex() == "006d0001010282828383"
    from ckptdoctor.readers.bundle import _ordered_signed

    assert _ordered_signed(0x424242).hex() == "f0424242" and _ordered_signed(-0x800).hex() == "3800"
    assert [_ordered_signed(v).hex() for v in (0, 5, -1, -64)] == ["80", "85", "7f", "40"]


def test_snappy_decoder():
    assert sstable.snappy_decompress(b"\x05\x10hello") == b"hello"
    assert sstable.snappy_decompress(b"\x08\x04ab\x09\x02") == b"abababab"  # overlapping copy
    assert sstable.snappy_decompress(b"\x06\x08abc\x0b\x03\x00\x00\x00") == b"abcabc"  # 4-byte offset
    for bad in (b"\x05\x10hell", b"\x08\x04ab\x09\x05", b"\xff\xff\xff\xff\x0f\x00a", b"\x03\x04ab\x01\x00"):
        with pytest.raises(ValueError):
            sstable.snappy_decompress(bad)
    text = b"the quick brown fox " * 50 + bytes(range(256)) + b"z" * 300
    assert sstable.snappy_decompress(snappy_compress(text)) == text


def one_block_table(contents: bytes, kind: int = 0) -> bytes:
    """A table whose only data block holds ``contents`` (CRC-valid) with type byte ``kind``."""
    type_byte = bytes([kind])
    out = bytearray(contents) + type_byte
    out += struct.pack("<I", sstable.mask_crc(google_crc32c.value(contents + type_byte)))
    index = block([(b"\xff", varint(0) + varint(len(contents)))], restart_interval=1)
    handle = varint(len(out)) + varint(len(index))
    out += index + b"\x00" + struct.pack("<I", sstable.mask_crc(google_crc32c.value(index + b"\x00")))
    return bytes(out) + (handle + handle).ljust(40, b"\x00") + struct.pack("<Q", sstable.TABLE_MAGIC)


def test_unknown_block_compression_is_unsupported():
    contents = block([(b"", HEADER)])
    assert sstable.parse_table(one_block_table(contents), "t.index") == [(b"", HEADER)]
    with pytest.raises(UnsupportedFormatError, match="compression type 2"):
        sstable.parse_table(one_block_table(contents, kind=2), "t.index")


def test_snappy_compressed_index_reads_the_same(many_keys_ckpt, tmp_path):
    prefix = copy_checkpoint(many_keys_ckpt, tmp_path)
    items = sstable.read_table(prefix + ".index")
    write_file(prefix + ".index", build_sstable(items, block_size=65536, compress=True))
    with open(prefix + ".index", "rb") as f:
        data = f.read()
    _, index_handle = sstable.read_footer(data, "x")
    assert data[index_handle.offset + index_handle.size] == 1  # Snappy type byte
    assert len(data) < os.path.getsize(many_keys_ckpt + ".index") / 2
    reader, original = BundleReader(prefix), BundleReader(many_keys_ckpt)
    assert reader.entries() == original.entries()
    assert reader.read(reader.entries()[-1].name).item() == 6499.0


def test_big_endian_bundle(tmp_path):
    header = f_varint(1, 1) + f_varint(2, 1) + f_len(3, f_varint(1, 1))
    values = {
        "f32": (1, np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5, ">f4"),
        "c64": (8, np.array([1 + 2j, -3j], np.complex64), ">c8"),
        "i16": (5, np.array([-2, 300], np.int16), ">i2"),
        "bf16": (14, np.array([1.0, -2.5, np.inf], ml_dtypes.bfloat16), None),
        "u8": (4, np.array([1, 255], np.uint8), "u1"),
    }
    data, items = b"", []
    for name, (dtype, arr, be) in values.items():
        raw = arr.view(np.uint16).astype(">u2").tobytes() if be is None else arr.astype(be).tobytes()
        items.append((name.encode(), entry_proto(dtype, arr.shape, len(data), len(raw), google_crc32c.value(raw))))
        data += raw
    strings = [b"ab", b"", b"\x00\xff" * 100]
    raw, crc = string_payload(strings, ">")
    items.append((b"s", entry_proto(7, [3], len(data), len(raw), crc)))
    data += raw
    with BundleReader(write_bundle(tmp_path, items, data, header)) as reader:
        assert reader.big_endian
        for name, (_, arr, _) in values.items():
            got = reader.read(name)
            assert got.dtype == arr.dtype and got.tobytes() == arr.tobytes(), name
            assert np.concatenate(list(reader.iter_chunks(name, 2))).tobytes() == arr.tobytes()
        together = reader.read_run(list(values) + ["s"], 1 << 20)  # read with one pread, swapped each
        for (name, (_, arr, _)), got in zip(values.items(), together):
            assert got.dtype == arr.dtype and got.tobytes() == arr.tobytes(), name
        assert together[-1] is None
        assert reader.read("s").tolist() == strings


def test_synthetic_partitioned_tensors(tmp_path):
    full = np.arange(24, dtype=np.float32).reshape(4, 6)
    pieces = [((0, 2), (0, None)), ((2, 2), (0, 3)), ((2, 2), (3, 3))]
    data, items = b"", []
    for extents in pieces:
        region = tuple(slice(s, s + n if n is not None else None) for s, n in extents)
        raw = full[region].tobytes()
        # The first piece's key spells the whole dimension explicitly (0, 6), as
        # TF1 writers do, while the full entry leaves the length out.
        key_extents = ((0, 2), (0, 6)) if extents == pieces[0] else extents
        for name, spelled in (("w", key_extents), ("gappy", extents)):  # each piece with bytes of its own
            entry = entry_proto(1, full[region].shape, len(data), len(raw), google_crc32c.value(raw))
            items.append((encode_slice_key(name, spelled), entry))
            data += raw
    items.append((b"w", entry_proto(1, [4, 6], slices=pieces)))
    # A tensor whose pieces do not tile, and one whose piece entries are missing.
    items.append((b"gappy", entry_proto(1, [4, 6], slices=pieces[:2])))
    items.append((b"lost", entry_proto(1, [2, 2], slices=[((0, 1), (0, None)), ((1, 1), (0, None))])))
    with BundleReader(write_bundle(tmp_path, items, data)) as reader:
        listed = {e.name: e for e in reader.entries()}
        assert list(listed) == ["gappy", "lost", "w"]
        assert listed["w"].partitioned and listed["w"].nbytes == full.nbytes
        assert reader.read("w").tobytes() == full.tobytes()
        with pytest.raises(TensorReadError, match="do not tile") as info:
            reader.read("gappy")
        assert info.value.code == "tensor-unreadable"
        with pytest.raises(TensorReadError, match="no entry"):
            reader.read("lost")


def test_hostile_entries_do_not_allocate(tmp_path):
    huge = 1 << 40
    items = [
        (b"huge_float", entry_proto(1, [huge, huge], 0, 16)),
        (b"huge_strings", entry_proto(7, [huge], 0, 10)),
        (b"past_the_end", entry_proto(1, [4], 1 << 50, 16)),
        (b"unknown_dtype", entry_proto(99, [4], 0, 16)),
        (b"resource", entry_proto(20, [], 0, 0)),
        (b"huge_partitioned", entry_proto(1, [huge, huge], slices=[((0, None), (0, None))])),
        (b"big_string_len", entry_proto(7, [1], 0, 16)),
    ]
    data = varint(1 << 40) + bytes(20)
    with BundleReader(write_bundle(tmp_path, items, data)) as reader:
        dtypes = {e.name: e.dtype for e in reader.entries()}
        assert dtypes["unknown_dtype"] == "unknown(99)" and dtypes["resource"] == "resource"
        for name in dtypes:
            with pytest.raises((TensorReadError, UnsupportedFormatError)):
                reader.read(name)
            with pytest.raises((TensorReadError, UnsupportedFormatError)):
                list(reader.iter_chunks(name))


@pytest.mark.parametrize(
    "items, header, match",
    [
        ([(b"x", b"\x12\x10")], HEADER, "entry b'x' is not a BundleEntryProto"),
        ([(b"x", entry_proto(1, [1], 0, 4, shard=3))], HEADER, "in data file 3 but the header says 1"),
        ([], f_varint(1, 1) + f_varint(2, 7), "endianness 7"),
        ([(b"x", entry_proto(1, [-1], 0, 4))], HEADER, "negative dimension"),
    ],
)
def test_hostile_index_is_corrupt(tmp_path, items, header, match):
    prefix = write_bundle(tmp_path, items, bytes(8), header)
    with pytest.raises(CorruptCheckpointError, match=match):
        BundleReader(prefix)


def test_unsupported_headers(tmp_path):
    newer = f_varint(1, 1) + f_len(3, f_varint(1, 5) + f_varint(2, 3))
    with pytest.raises(UnsupportedFormatError, match="newer"):
        BundleReader(write_bundle(tmp_path, [], b"", newer))
    v1 = f_len(1, b"\x0a\x00")
    with pytest.raises(UnsupportedFormatError, match="V1"):
        BundleReader(write_bundle(tmp_path, [], b"", v1))


def test_no_header_record(tmp_path):
    prefix = os.path.join(tmp_path, "nohead")
    write_file(prefix + ".index", build_sstable([(b"a", entry_proto(1, [1], 0, 4))]))
    with pytest.raises(CorruptCheckpointError, match="no header record"):
        BundleReader(prefix)


# ============================================================ fuzzing


@pytest.fixture(scope="session")
def small_index(tmp_path_factory) -> tuple[str, bytes]:
    strings, crc = string_payload([b"abc", b"\x00"])
    items = [
        (b"f", entry_proto(1, [2], 0, 8, google_crc32c.value(bytes(8)))),
        (b"s", entry_proto(7, [2], 8, len(strings), crc)),
    ]
    prefix = write_bundle(str(tmp_path_factory.mktemp("fuzz")), items, bytes(8) + strings)
    with open(prefix + ".index", "rb") as f:
        return prefix, f.read()


def exercise(prefix: str) -> None:
    """Open, list and read everything; only CkptDoctorErrors may come out."""
    try:
        reader = BundleReader(prefix)
    except CkptDoctorError:
        return
    with reader:
        for entry in reader.entries():
            try:
                reader.read(entry.name)
                list(reader.iter_chunks(entry.name, 3))
            except CkptDoctorError:
                pass


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6), st.integers(0, 10**6))
def test_fuzz_index_bytes(small_index, edits, cut):
    prefix, good = small_index
    data = bytearray(good)
    for pos, value in edits:
        data[pos % len(data)] = value
    with tempfile.TemporaryDirectory() as d:
        target = copy_checkpoint(prefix, d)
        write_file(target + ".index", bytes(data[: max(cut, len(data) - 60)] if cut % 3 == 0 else data))
        exercise(target)


@FUZZ
@given(st.binary(max_size=120), st.binary(max_size=60))
def test_fuzz_entry_values_with_valid_table(value, data):
    with tempfile.TemporaryDirectory() as d:
        prefix = write_bundle(d, [(b"t", value), (encode_slice_key("t", [(0, None)]), value)], data)
        exercise(prefix)


dims_strategy = st.lists(st.one_of(st.integers(0, 6), st.just(1 << 40)), max_size=3)
extent_strategy = st.tuples(st.integers(0, 4), st.one_of(st.none(), st.integers(0, 4)))


@FUZZ
@given(
    st.one_of(st.integers(1, 33), st.just(99)),
    dims_strategy,
    st.integers(0, 80),
    st.integers(0, 80),
    st.booleans(),
    st.lists(st.lists(extent_strategy, min_size=1, max_size=3), max_size=3),
    st.binary(min_size=0, max_size=80),
)
def test_fuzz_well_formed_entries(dtype, dims, offset, size, right_crc, slices, data):
    # Structurally valid entries with arbitrary, mostly inconsistent, contents
    # reach the read paths (strings, pieces, sizes) rather than the decoder.
    crc = google_crc32c.value(data[offset : offset + size]) if right_crc else 12345
    items = [(b"t", entry_proto(dtype, dims, offset, size, crc))]
    if slices:
        items.append((b"p", entry_proto(dtype, dims, slices=slices)))
        for extents in slices:
            shape = [n if n is not None else 3 for _, n in extents]
            items.append((encode_slice_key("p", extents), entry_proto(dtype, shape, offset, size, crc)))
    with tempfile.TemporaryDirectory() as d:
        exercise(write_bundle(d, list(dict(items).items()), data))


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_block_contents(contents):
    try:
        sstable.parse_table(one_block_table(contents), "fuzz.index")
    except CorruptCheckpointError:
        pass


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_object_graph_and_snappy(blob):
    try:
        protowire.decode_object_graph(blob)
    except protowire.WireFormatError:
        pass
    try:
        sstable.snappy_decompress(blob)
    except ValueError:
        pass


def test_damaged_object_graph_still_lists(tf2_ckpt, tmp_path):
    prefix = copy_checkpoint(tf2_ckpt, tmp_path)
    graph = entry_of(prefix, "_CHECKPOINTABLE_OBJECT_GRAPH")
    flip_byte(prefix + ".data-00000-of-00001", graph.offset + graph.size - 2)
    with BundleReader(prefix) as reader:
        entries = reader.entries()
        assert len(entries) == len(BundleReader(tf2_ckpt).entries())
        assert all(e.object_path is None for e in entries)
        assert "checksum" in reader.object_graph_error


def test_reader_never_imports_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys, ckptdoctor.readers.bundle as b; "
        "bad = [m for m in sys.modules if m.startswith(('tensorflow', 'google.protobuf'))]; "
        "assert not bad, bad"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


@pytest.mark.parametrize("which", ["dtype_ckpt", "tf1_ckpt"])
def test_cli_without_tensorflow_matches_tf_names_dtypes_shapes_and_numpy_stats(which, request):
    """The acceptance check of the TF-free reader: a dtype zoo and a sharded, partitioned TF1 checkpoint."""
    import json

    import tensorflow as tf
    from conftest import run_cli_without_tf

    prefix = request.getfixturevalue(which)
    proc = run_cli_without_tf("inspect", prefix, "--format", "json", "--graph=False")
    assert proc.returncode in (0, 1) and "TF_LOADED=False" in proc.stderr, proc.stderr
    doc = json.loads(proc.stdout)
    reader = tf.train.load_checkpoint(prefix)
    dtypes = reader.get_variable_to_dtype_map()
    shapes = reader.get_variable_to_shape_map()
    assert {t["name"] for t in doc["tensors"]} == set(shapes)
    for t in doc["tensors"]:
        assert t["dtype"] == dtypes[t["name"]].name and t["shape"] == list(shapes[t["name"]]), t["name"]
        if t["mean"] is None or t["dtype"] in ("variant", "string"):
            continue
        v = np.asarray(reader.get_tensor(t["name"]))
        v = v.astype(np.float32) if v.dtype.kind not in "fiub" else v
        finite = v[np.isfinite(v)] if v.dtype.kind == "f" else v
        ref = finite.astype(np.float64).ravel()
        assert t["min"] == ref.min() and t["max"] == ref.max(), t["name"]
        assert t["mean"] == pytest.approx(ref.mean(), rel=1e-9, abs=1e-12), t["name"]
        assert t["std"] == pytest.approx(ref.std(), rel=1e-6, abs=1e-12), t["name"]
        if v.dtype.kind == "f":
            assert t["nan"] == int(np.isnan(v).sum()) and t["inf"] == int(np.isinf(v).sum())


def test_shape_of_more_than_int64_elements_is_refused_even_with_a_zero_dimension():
    # Found by test_fuzz_well_formed_entries: (2**40, 2**40, 0) holds no element, but numpy
    # (and TensorFlow) cannot make an array of that shape; the entry is damaged, not a crash.
    with tempfile.TemporaryDirectory() as d:
        prefix = write_bundle(d, [(b"t", entry_proto(1, [2**40, 2**40, 0], 0, 0, google_crc32c.value(b"")))], b"")
        with BundleReader(prefix) as reader:
            assert [e.shape for e in reader.entries()] == [(2**40, 2**40, 0)]  # listed, as stored
            with pytest.raises(TensorReadError, match=r"2\*\*63-1"):
                reader.read("t")


# ============================================================ listing 100,000 tensors: the same, in less memory


@pytest.mark.parametrize("value", [0, 1, 127, 128, 16383, 16384, 2**21 - 1, 2**21, 2**28 - 1, 2**28, 2**35, 2**63 - 1])
def test_canonical_entries_decode_as_the_generic_decoder(value):
    # The canonical path inlines varints of two to four bytes: every width, and every cut of the message, gives
    # what the generic decoder gives (a cut inside a longer varint: read_varint's own message, as before).
    proto = entry_proto(1, [3, value], value, value, crc=value & 0xFFFFFFFF, shard=value)
    assert protowire.decode_bundle_entry(proto) == protowire._decode_bundle_entry_generic(proto)
    for cut in range(len(proto)):
        try:
            generic = protowire._decode_bundle_entry_generic(proto[:cut])
        except protowire.WireFormatError:
            with pytest.raises(protowire.WireFormatError):
                protowire.decode_bundle_entry(proto[:cut])
        else:
            assert protowire.decode_bundle_entry(proto[:cut]) == generic
    width = len(varint(value))
    if width > 2:  # a two-byte varint cut after its first byte was, and is, "message truncated"
        offset_at = proto.index(b"\x20" + varint(value)) + 1  # the offset's varint
        with pytest.raises(protowire.WireFormatError, match="truncated varint"):
            protowire.decode_bundle_entry(proto[: offset_at + width - 1])


def object_graph_proto(nodes) -> bytes:
    """A ``TrackableObjectGraph``: each node ``(children [(id, name)], attributes [(name, key)])``."""
    out = b""
    for children, attributes in nodes:
        node = b"".join(f_len(1, f_varint(1, i) + f_len(2, name.encode())) for i, name in children)
        node += b"".join(
            f_len(2, f_len(1, name.encode()) + f_len(2, b"full") + f_len(3, key.encode())) for name, key in attributes
        )
        out += f_len(1, node)
    return out


@pytest.mark.parametrize("node_id", [0, 1, 127, 128, 16383, 16384, 2**21 - 1, 2**21, 2**31 - 1])
def test_object_graph_children_of_every_id_width(node_id):
    # Child ids of one to three bytes are read inline, longer ones by read_varint: the same ids either way.
    nodes = protowire.decode_object_graph(object_graph_proto([([(node_id, "x"), (5, "y")], [])]))
    assert nodes[0].children == ((node_id, "x"), (5, "y"))


def tf2_bundle(directory, names) -> str:
    """A TF2-style bundle: the root's children ``names``, each a float32 scalar variable, and the object graph."""
    keys = [f"{name}/.ATTRIBUTES/VARIABLE_VALUE" for name in names]
    graph = object_graph_proto(
        [([(i + 1, name) for i, name in enumerate(names)], [])] + [([], [("VARIABLE_VALUE", key)]) for key in keys]
    )
    data, crc = string_payload([graph])
    items = [(OBJECT_GRAPH.encode(), entry_proto(7, [], 0, len(data), crc))]
    for i, key in enumerate(keys):
        value = struct.pack("<f", i)
        items.append((key.encode(), entry_proto(1, [], len(data), 4, google_crc32c.value(value))))
        data += value
    return write_bundle(directory, items, data)


OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"


def test_object_graph_keys_are_the_readers_names_and_let_go_once_listed(tmp_path):
    # One string per name (the graph's keys are the reader's own), and the decoded graph is released once the
    # listing, its last user, is built: asked again, it is decoded again, the same.
    with BundleReader(tf2_bundle(tmp_path, ["a", "b", "c"])) as reader:
        nodes = reader.object_graph_nodes()
        listing = {e.name: e for e in reader.entries()}
        keys = [key for node in nodes for _attr, key in node.attributes]
        assert sorted(keys) == sorted(set(listing) - {OBJECT_GRAPH})
        assert all(listing[key].name is key for key in keys)
        assert [listing[k].object_path for k in sorted(keys)] == ["a", "b", "c"]
        again = reader.object_graph_nodes()
        assert again is not nodes and again == nodes
    # Without the reader's names, the keys are equal strings of their own.
    assert protowire.decode_object_graph(object_graph_proto([([], [("V", "k")])]))[0] == ((), (("V", "k"),), ())


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="reads the resident pages from /proc/self/smaps")
def test_a_string_tensor_read_leaves_its_pages_unmapped(tmp_path):
    # A string tensor is copied out of the data file's memory map: its pages (an object graph's 8 MB on 100,000
    # tensors) are dropped from the resident set once read, as a streamed tensor's are.
    blob = os.urandom(4 << 20)
    data, crc = string_payload([blob])
    prefix = write_bundle(tmp_path, [(b"s", entry_proto(7, [], 0, len(data), crc))], data)
    with BundleReader(prefix) as reader:
        assert reader.read("s")[()] == blob
        assert mapped_kib(prefix + ".data-00000-of-00001") < 1024


def mapped_kib(path: str) -> int:
    """The resident KiB of this process's maps of ``path`` (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            first = line.split(" ", 1)[0]
            if "-" in first and ":" not in first:  # a mapping's header line: "start-end perms offset dev inode path"
                inside = line.rstrip("\n").endswith(os.path.realpath(path))
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1])
    return total


def test_table_errors_come_before_entry_errors(tmp_path):
    # The index is decoded as its table is read, yet the first problem reported is the one reported when the
    # table was read whole first: the table's own (keys out of order), then the header's, then an entry's.
    bad_entry = (b"b", b"\x12\x10")
    prefix = os.path.join(tmp_path, "disorder")
    write_file(prefix + ".index", build_sstable([(b"", HEADER), bad_entry, (b"a", entry_proto(1, [1], 0, 4))]))
    write_file(prefix + ".data-00000-of-00001", bytes(4))
    with pytest.raises(CorruptCheckpointError, match="keys out of order"):
        BundleReader(prefix)
    with pytest.raises(CorruptCheckpointError, match="endianness 7"):
        BundleReader(write_bundle(tmp_path, [bad_entry], bytes(4), f_varint(1, 1) + f_varint(2, 7)))
    write_file(prefix + ".index", build_sstable([(b"a", entry_proto(1, [1], 0, 4)), bad_entry]))
    with pytest.raises(CorruptCheckpointError, match="no header record"):
        BundleReader(prefix)
    table = build_sstable([(b"", HEADER), (b"b", entry_proto(1, [1], 0, 4)), (b"a", entry_proto(1, [1], 0, 4))])
    read = []
    with pytest.raises(CorruptCheckpointError, match="keys out of order"):
        for key, _value in sstable.iter_table(table, "t.index"):
            read.append(key)
    assert read == [b"", b"b", b"a"]  # every item first, as parse_table reads them all before it checks the order
    with pytest.raises(CorruptCheckpointError, match=r"keys out of order \(b'a' after b'b'\)"):
        sstable.parse_table(table, "t.index")


def test_paused_gc_restores_the_collector_as_it_was():
    import gc

    from ckptdoctor.collector import paused_gc

    assert gc.isenabled()
    with pytest.raises(KeyError), paused_gc():
        assert not gc.isenabled()
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner block leaves it as the outer one set it
        raise KeyError("x")
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()  # off before, off after
    finally:
        gc.enable()


# ============================================================ a tensor read in pieces (statistics on several threads)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.binary(max_size=3000))
def test_combined_crc_is_the_crc_of_the_concatenation(first, second):
    combined = sstable.combine_crc(google_crc32c.value(first), google_crc32c.value(second), len(second))
    assert combined == google_crc32c.value(first + second)


def test_combined_crc_of_long_pieces():
    a, b = os.urandom(3 << 20), os.urandom((5 << 20) + 7)
    assert sstable.combine_crc(google_crc32c.value(a), google_crc32c.value(b), len(b)) == google_crc32c.value(a + b)


@pytest.mark.parametrize("name", ["big", "big_bf16", "int64"])
def test_pieces_yield_the_chunks_of_iter_chunks_and_pass_the_checksum(dtype_ckpt, name, monkeypatch):
    import ckptdoctor.pipelines.inspect as pipeline
    from ckptdoctor.analysis.stats import compute_stats, merge, partials

    monkeypatch.setattr(pipeline, "_PIECE_BYTES", 10_000)
    monkeypatch.setattr(pipeline, "STATS_CHUNK_BYTES", 1000)
    with BundleReader(dtype_ckpt) as reader:
        entry = next(e for e in reader.entries() if e.name == name)
        whole = list(reader.iter_chunks(name, chunk_bytes=1000))
        pieces = reader.pieces(name, 1000, 10_000)
        if entry.nbytes <= 10_000:
            assert pieces is None
            return
        assert pieces[0][0] == 0 and pieces[-1][1] == entry.nbytes and len(pieces) >= 10
        assert all(stop == start for (_, stop), (start, _) in zip(pieces, pieces[1:]))
        chunks, crcs = [], []
        for start, stop in pieces:
            read = list(reader.iter_piece(name, start, stop, 1000))
            chunks += [values for values, _ in read]
            crcs.append((read[-1][1], stop - start))
        assert [c.tobytes() for c in chunks] == [c.tobytes() for c in whole]
        reader.check_pieces(name, crcs)
        assert merge(partials(chunks)) == compute_stats(whole)
        # Through the threads, the pieces on three of them: statistics equal to one thread's, bit for bit.
        one = list(pipeline.iter_stats(reader, [entry], jobs=1))
        assert one[0][0] == compute_stats(whole) and one[0][1] is None
        assert list(pipeline.iter_stats(reader, [entry], jobs=3)) == one


def test_a_damaged_tensor_read_in_pieces_fails_as_when_read_in_order(dtype_ckpt, tmp_path, monkeypatch):
    import ckptdoctor.pipelines.inspect as pipeline

    monkeypatch.setattr(pipeline, "_PIECE_BYTES", 10_000)
    monkeypatch.setattr(pipeline, "STATS_CHUNK_BYTES", 1000)
    prefix = copy_checkpoint(dtype_ckpt, tmp_path)
    data_file = prefix + ".data-00000-of-00001"
    big = entry_of(prefix, "big")
    flip_byte(data_file, big.offset + big.size // 2 + 1)
    with BundleReader(prefix) as reader:
        entry = next(e for e in reader.entries() if e.name == "big")
        assert len(reader.pieces("big", 1000, 10_000)) > 2
        (stats, one), (_, two) = (
            list(pipeline.iter_stats(reader, [entry], jobs=1))[0],
            list(pipeline.iter_stats(reader, [entry], jobs=2))[0],
        )
    assert stats is None and one.code == two.code == "checksum-mismatch" and str(one) == str(two)
    # Cut short after the reader checked the file's size: the piece that meets the end reports it.
    with BundleReader(prefix) as reader:
        entry = next(e for e in reader.entries() if e.name == "big")
        expected = list(pipeline.iter_stats(reader, [entry], jobs=1))[0][1]  # the flipped byte, before the cut
        os.truncate(data_file, big.offset + 50_000)
        one = list(pipeline.iter_stats(reader, [entry], jobs=1))[0][1]
        two = list(pipeline.iter_stats(reader, [entry], jobs=2))[0][1]
    assert expected.code == "checksum-mismatch"
    assert one.code == two.code == "tensor-unreadable" and str(one) == str(two) and "cut short" in str(two)


# ============================================================ small tensors read together (statistics)


def test_read_run_reads_what_read_reads(dtype_ckpt, tf1_ckpt):
    for prefix in (dtype_ckpt, tf1_ckpt):
        with BundleReader(prefix) as reader:
            entries = reader.entries()
            names = [e.name for e in entries]
            most = 4096
            got = reader.read_run(names, most)
            assert len(got) == len(names)
            read_some = 0
            for e, value in zip(entries, got):
                whole_path = e.partitioned or e.dtype in ("string", "variant") or e.nbytes > most
                if whole_path:
                    assert value is None, e.name
                    continue
                expected = reader.read(e.name).reshape(-1)
                assert value.dtype == expected.dtype and value.tobytes() == expected.tobytes(), e.name
                read_some += 1
            assert read_some >= (10 if prefix == dtype_ckpt else 1)
            # One at a time, or in reverse order: the same arrays.
            again = reader.read_run(names[::-1], most)[::-1]
            for a, b in zip(got, again):
                assert (a is None and b is None) or a.tobytes() == b.tobytes()


def test_read_run_reports_a_damaged_tensor_as_read_does(dtype_ckpt, tmp_path):
    prefix = copy_checkpoint(dtype_ckpt, tmp_path)
    data_file = prefix + ".data-00000-of-00001"
    flip_byte(data_file, entry_of(prefix, "float64").offset + 5)
    with BundleReader(prefix) as reader:
        names = [e.name for e in reader.entries() if e.dtype not in ("string", "variant")]
        got = dict(zip(names, reader.read_run(names, 1 << 20)))
        with pytest.raises(TensorReadError) as info:
            reader.read("float64")
        assert isinstance(got["float64"], TensorReadError) and str(got["float64"]) == str(info.value)
        assert got["float64"].code == "checksum-mismatch"
        assert all(isinstance(v, np.ndarray) for n, v in got.items() if n != "float64")
    # Cut short: the tensors past the end get read()'s message, the others their values.
    cut = entry_of(prefix, "big").offset + 100
    os.truncate(data_file, cut)
    with BundleReader(prefix) as reader:
        got = dict(zip(names, reader.read_run(names, 1 << 20)))
        past = [n for n in names if entry_of(prefix, n).offset + entry_of(prefix, n).size > cut]
        assert "big" in past
        for name in past:
            with pytest.raises(TensorReadError) as info:
                reader.read(name)
            assert str(got[name]) == str(info.value)
        assert all(isinstance(got[n], np.ndarray) for n in names if n not in past and n != "float64")


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 40), st.sampled_from([0, 1, 2, 5, 10, 2**62])),
        max_size=12,
    )
)
def test_may_overlap_is_true_exactly_when_two_stored_ranges_intersect(spans):
    # _find_overlaps skips its sweep when _may_overlap says no: that must be certain. Reference: every pair of
    # non-empty byte ranges in one data file, compared (ties, empty entries, three shards, offsets + sizes near 2**63).
    from ckptdoctor.readers.bundle import _may_overlap

    entries = [protowire.BundleEntry(1, (), shard, offset, size, 0, ()) for shard, offset, size in spans]
    pairs = [(a, b) for i, a in enumerate(spans) for b in spans[i + 1 :]]
    intersect = any(
        sa == sb and na > 0 and nb > 0 and oa < ob + nb and ob < oa + na for (sa, oa, na), (sb, ob, nb) in pairs
    )
    assert _may_overlap(entries) == intersect
    # In the order TensorFlow writes them (by file and offset), where no sort is made when none overlaps.
    assert _may_overlap(sorted(entries, key=lambda e: (e.shard_id, e.offset))) == intersect


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(min_size=1, max_size=6), min_size=1, max_size=60), st.sampled_from([16, 64, 4096]))
def test_table_order_checked_a_block_at_a_time_reports_the_first_disorder(keys, block_size):
    # iter_table_blocks checks each block's keys at once (and the first against the last block's): the items and
    # the error must be those of a check key by key, whichever block the first key not above its predecessor is in.
    items = [(k, bytes([i % 256])) for i, k in enumerate(keys)]
    table = build_sstable(items, block_size=block_size)
    first = next(((keys[i], keys[i - 1]) for i in range(1, len(keys)) if keys[i] <= keys[i - 1]), None)
    read = []
    if first is None:
        assert list(sstable.iter_table(table, "t.index")) == items
        assert [i for b in sstable.iter_table_blocks(table, "t.index") for i in b] == items
        return
    with pytest.raises(CorruptCheckpointError, match="keys out of order") as e:
        for item in sstable.iter_table(table, "t.index"):
            read.append(item)
    assert read == items and f"({first[0]!r} after {first[1]!r})" in str(e.value)


@pytest.mark.parametrize("block_size", [24, 64, 4096])
def test_pieces_and_tensors_told_apart_in_every_block(tmp_path, block_size):
    # The reader stores a block's entries at once, the pieces of partitioned tensors (keys from b"\x00") apart from
    # the tensors: with blocks of one or two entries, some hold both kinds, and the listing and values must not
    # depend on where the blocks end.
    full = np.arange(12, dtype=np.float32).reshape(3, 4)
    rows = [((i, 1), (0, None)) for i in range(3)]
    data, items = b"", []
    for extents in rows:
        raw = full[extents[0][0]].tobytes()
        items.append(
            (encode_slice_key("p", extents), entry_proto(1, [1, 4], len(data), len(raw), google_crc32c.value(raw)))
        )
        data += raw
    items.append((b"p", entry_proto(1, [3, 4], slices=rows)))
    for name in (b"\x01low", b"a", b"b/c", b"z"):
        items.append((name, entry_proto(1, [4], len(data), 16, google_crc32c.value(full[0].tobytes()))))
        data += full[0].tobytes()
    prefix = os.path.join(tmp_path, "blocks")
    write_file(prefix + ".index", build_sstable([(b"", HEADER)] + sorted(items), block_size=block_size))
    write_file(prefix + ".data-00000-of-00001", data)
    with BundleReader(prefix) as reader:
        assert [(e.name, e.partitioned, e.nbytes) for e in reader.entries()] == [
            ("\x01low", False, 16),
            ("a", False, 16),
            ("b/c", False, 16),
            ("p", True, 48),
            ("z", False, 16),
        ]
        assert reader.read("p").tobytes() == full.tobytes() and reader.read("\x01low").tobytes() == full[0].tobytes()
