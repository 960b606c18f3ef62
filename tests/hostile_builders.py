"""Files that are cheap to make and costly to read, built for real (no TensorFlow, no Keras).

Each builder writes what an attacker would: zip archives whose members inflate to gigabytes
(written from a deflate stream built by repetition, so making a 3 GiB bomb takes milliseconds),
HDF5 files declaring terabytes they do not store, headers that claim more than the file holds,
nesting deeper than any parser's stack. Used by ``tests/test_hostile.py`` and
``benchmarks/hostile.py`` (the before/after measurements).

    python tests/hostile_builders.py OUT_DIR     # writes every case into OUT_DIR
"""

from __future__ import annotations

import json
import struct
import sys
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ckptdoctor.readers.hdf5_raw import HDF5_SIGNATURE

GiB = 1 << 30
TiB = 1 << 40

#: A small real-looking Keras 3 model config: Dense then BatchNormalization.
KERAS_CONFIG = {
    "module": "keras",
    "class_name": "Sequential",
    "config": {
        "name": "sequential",
        "layers": [
            {"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_shape": [None, 4], "name": "x"}},
            {"module": "keras.layers", "class_name": "Dense", "config": {"name": "dense", "units": 3}},
            {
                "module": "keras.layers",
                "class_name": "BatchNormalization",
                "config": {"name": "batch_normalization", "axis": -1},
            },
        ],
    },
}
KERAS_METADATA = {"keras_version": "3.15.1", "date_saved": "2026-01-01@00:00:00"}


class Deflated(NamedTuple):
    """A raw deflate stream, the size it inflates to and the CRC-32 of what it inflates to."""

    stream: bytes
    size: int
    crc: int


def _gf2_times(matrix: list[int], vec: int) -> int:
    out, i = 0, 0
    while vec:
        if vec & 1:
            out ^= matrix[i]
        vec >>= 1
        i += 1
    return out


def _gf2_square(matrix: list[int]) -> list[int]:
    return [_gf2_times(matrix, row) for row in matrix]


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of ``A + B`` from ``crc(A)``, ``crc(B)`` and ``len(B)`` (zlib's ``crc32_combine``)."""
    if len2 == 0:
        return crc1
    odd = [0xEDB88320] + [1 << i for i in range(31)]  # the operator for one zero bit
    even = _gf2_square(odd)  # two zero bits
    odd = _gf2_square(even)  # four
    while True:
        even = _gf2_square(odd)
        if len2 & 1:
            crc1 = _gf2_times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = _gf2_square(even)
        if len2 & 1:
            crc1 = _gf2_times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2


def crc32_repeat(chunk: bytes, times: int, crc: int = 0) -> int:
    """CRC-32 of ``chunk * times`` (after ``crc``) in O(log times) steps."""
    piece, n = zlib.crc32(chunk), len(chunk)
    while times:
        if times & 1:
            crc = crc32_combine(crc, piece, n)
        piece, n = crc32_combine(piece, piece, n), 2 * n
        times >>= 1
    return crc


def deflate_repeat(chunk: bytes, times: int, head: bytes = b"") -> Deflated:
    """A deflate stream of ``head + chunk * times``, made without compressing ``times`` chunks.

    After a full flush the compressor's history is empty, so the same chunk compresses to the same
    bytes every time: one piece is compressed and repeated, and the CRC-32 is combined, not computed
    over gigabytes. The result is a valid member: its CRC checks at the end.
    """
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH) if head else b""
    piece = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    size = len(head) + len(chunk) * times
    return Deflated(first + piece * times + c.flush(), size, crc32_repeat(chunk, times, zlib.crc32(head)))


def write_zip(path, members: list[tuple[str, bytes | Deflated]]) -> Path:
    """A zip archive written byte by byte: ``bytes`` members stored, ``Deflated`` ones as given.

    Sizes stay below 4 GiB (no zip64). The central directory declares each member's true inflated size.
    """
    out = bytearray()
    central = bytearray()
    for name, payload in members:
        raw = name.encode()
        if isinstance(payload, Deflated):
            method, data, size, crc = zipfile.ZIP_DEFLATED, payload.stream, payload.size, payload.crc
        else:
            method, data, size, crc = zipfile.ZIP_STORED, payload, len(payload), zlib.crc32(payload)
        assert size < 1 << 32 and len(data) < 1 << 32
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data), size, len(raw), 0)
        out += raw + data
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(data), size, len(raw),
            0, 0, 0, 0, 0, offset,
        )  # fmt: skip
        central += raw
    start = len(out)
    out += central
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), start, 0)
    path = Path(path)
    path.write_bytes(bytes(out))
    return path


def keras_weights_h5(path) -> Path:
    """A genuine, tiny Keras 3 ``model.weights.h5`` for ``KERAS_CONFIG`` (written with h5py)."""
    import h5py

    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        dense = f.create_group("layers/dense/vars")
        dense.attrs["name"] = "dense"  # Keras 3 names each layer's vars group (a variable-length string)
        dense["0"] = rng.normal(size=(4, 3)).astype("float32")
        dense["1"] = np.zeros(3, "float32")
        bn = f.create_group("layers/batch_normalization/vars")
        bn.attrs["name"] = "batch_normalization"
        for i, value in enumerate([np.ones(3), np.zeros(3), rng.normal(size=3), rng.uniform(1, 2, size=3)]):
            bn[str(i)] = value.astype("float32")
        f.create_group("optimizer/vars")
    return Path(path)


def _heap(data: bytes) -> tuple[int, list[tuple[int, int, int]]]:
    """The first global heap collection of an HDF5 file: its offset and ``(position, index, size)`` per object."""
    start = data.index(b"GCOL")
    end = start + struct.unpack_from("<Q", data, start + 8)[0]
    objects, p = [], start + 16
    while p + 16 <= end:
        index, size = struct.unpack_from("<H", data, p)[0], struct.unpack_from("<Q", data, p + 8)[0]
        objects.append((p, index, size))
        p += 16 + (size + 7) // 8 * 8 if index else size
    return start, objects


def heap_loop_h5(path) -> Path:
    """A Keras 3 ``.weights.h5`` whose global heap's free-space object has size 0: libhdf5 1.14.6 decodes
    the heap (to read the layers' names) in a loop that never ends."""
    keras_weights_h5(path)
    data = bytearray(Path(path).read_bytes())
    _start, objects = _heap(bytes(data))
    free = next(p for p, index, _size in objects if index == 0)
    data[free + 8 : free + 16] = bytes(8)
    Path(path).write_bytes(bytes(data))
    return Path(path)


def vlen_length_h5(path, length: int = 0x50000000) -> Path:
    """A Keras 3 ``.weights.h5`` whose first layer name's descriptor declares ``length`` bytes (the heap holds 5):
    libhdf5 allocates and zeroes what it declares (1.25 GiB by default) before it reads the heap."""
    keras_weights_h5(path)
    data = bytearray(Path(path).read_bytes())
    heap, _objects = _heap(bytes(data))
    at = data.index(struct.pack("<IQ", len("dense"), heap))
    data[at : at + 4] = struct.pack("<I", length)
    Path(path).write_bytes(bytes(data))
    return Path(path)


def vlen_kind_h5(path) -> Path:
    """A Keras 3 ``.weights.h5`` whose ``keras_version`` attribute (a variable-length string) has its datatype's
    kind set to 14, which does not exist (fuzz/regressions/keras_h5/vlen-datatype-of-unknown-kind.h5): libhdf5
    reading it crashed the process (a segmentation fault in h5py's ``attrs[...]``)."""
    import h5py

    keras_weights_h5(path)
    with h5py.File(path, "r+") as f:
        f.attrs["keras_version"] = "3.15.1"
    data = bytearray(Path(path).read_bytes())
    name = data.index(b"keras_version\x00")
    at = data.index(b"\x19\x01\x01\x00\x10\x00\x00\x00", name)  # class 9 version 1, a UTF-8 string, 16 bytes
    data[at + 1] = 0xDE  # kind 14, padding 13
    Path(path).write_bytes(bytes(data))
    return Path(path)


def vlen_dataset_h5(path, chunked: bool, length: int = 0x50000000) -> Path:
    """A Keras 3 ``.weights.h5`` with a string dataset (``layers/vocab/vars/0``, a vocabulary) whose value
    ``"alpha"``'s descriptor declares ``length`` bytes; ``chunked``: stored in chunks, else contiguously."""
    import h5py

    keras_weights_h5(path)
    with h5py.File(path, "r+") as f:
        vocab = f.create_group("layers/vocab/vars")
        ds = vocab.create_dataset(
            "0",
            data=np.array([b"alpha", b"beta", b"gamma"], dtype=object),
            dtype=h5py.string_dtype(),
            **({"chunks": (2,), "maxshape": (None,)} if chunked else {}),
        )
        f.flush()
        at = ds.id.get_chunk_info(0).byte_offset if chunked else ds.id.get_offset()  # the first descriptor
    data = bytearray(Path(path).read_bytes())
    assert struct.unpack_from("<I", data, at)[0] == len("alpha")
    data[at : at + 4] = struct.pack("<I", length)
    Path(path).write_bytes(bytes(data))
    return Path(path)


def object_graph_bundle(prefix, count: int = 10_000_000) -> str:
    """A TF2 checkpoint whose object graph ``_CHECKPOINTABLE_OBJECT_GRAPH``, a string scalar in any real
    checkpoint, declares ``count`` (empty) strings, with valid checksums: reading it made ``count`` objects."""
    import google_crc32c
    from test_bundle_reader import entry_proto, write_bundle

    from ckptdoctor.readers import sstable

    length_crc = google_crc32c.value(bytes(4 * count))  # the lengths as the writer checksums them (u32 each)
    stored = struct.pack("<I", sstable.mask_crc(length_crc))
    data = bytes(count) + stored  # one zero varint per string, then the lengths' checksum, no payload
    crc = google_crc32c.extend(length_crc, stored)
    entry = entry_proto(7, [count], 0, len(data), crc)
    return write_bundle(prefix, [(b"_CHECKPOINTABLE_OBJECT_GRAPH", entry)], data)


def external_storage_h5(path, target: str = "/dev/zero") -> Path:
    """A Keras 3 ``.weights.h5`` whose dense kernel's values are declared to be in ``target`` (an external file)."""
    import h5py

    keras_weights_h5(path)
    with h5py.File(path, "r+") as f:
        del f["layers/dense/vars/0"]
        f["layers/dense/vars"].create_dataset(
            "0", shape=(1 << 20, 3), dtype="float32", external=[(target, 0, 12 << 20)]
        )
    return Path(path)


def linked_h5(path, fifo) -> Path:
    """A Keras 3 ``.weights.h5`` with an external link to the FIFO ``fifo`` (opening it waits for a writer
    forever), a soft link from a layer back to ``/layers`` and a hard link making ``/layers`` its own descendant."""
    import os

    import h5py

    keras_weights_h5(path)
    os.mkfifo(fifo)
    with h5py.File(path, "r+") as f:
        f["layers/evil"] = h5py.ExternalLink(str(fifo), "/")
        f["layers/dense/loop"] = h5py.SoftLink("/layers")
        f["layers/batch_normalization/again"] = f["layers"]
    return Path(path)


def compressed_zeros_h5(path, declared: int = 64 << 20) -> Path:
    """A Keras 3 ``.weights.h5`` whose dense kernel is ``declared`` bytes of zeros, gzip-compressed about 1000:1."""
    import h5py

    keras_weights_h5(path)
    with h5py.File(path, "r+") as f:
        del f["layers/dense/vars/0"]
        f["layers/dense/vars"].create_dataset(
            "0", data=np.zeros((declared // 16, 4), "float32"), compression="gzip", compression_opts=9, chunks=True
        )
    return Path(path)


def saved_metadata(nodes: list[tuple[str, bytes]]) -> bytes:
    """A ``keras_metadata.pb`` (``SavedMetadata``) of ``(node_path, metadata JSON)`` nodes."""
    out = b""
    for node_path, meta in nodes:
        body = b"\x1a" + _varint(len(node_path)) + node_path.encode() + b"\x2a" + _varint(len(meta)) + meta
        out += b"\x0a" + _varint(len(body)) + body
    return out


def _keras_members(tmp: Path) -> list[tuple[str, bytes | Deflated]]:
    return [
        ("metadata.json", json.dumps(KERAS_METADATA).encode()),
        ("config.json", json.dumps(KERAS_CONFIG).encode()),
        ("model.weights.h5", keras_weights_h5(tmp).read_bytes()),
    ]


def keras_archive(path, replace: dict | None = None) -> Path:
    """A genuine small ``.keras`` archive; ``replace`` swaps members (name -> bytes or ``Deflated``)."""
    path = Path(path)
    members = dict(_keras_members(path.with_suffix(".tmp.h5")))
    path.with_suffix(".tmp.h5").unlink()
    members.update(replace or {})
    return write_zip(path, list(members.items()))


def big_layer_archive(path, units: int = 16000) -> Path:
    """A ``.keras`` whose config (600 bytes) declares a Dense layer of ``units`` x ``units`` (1 GB of float32 for
    16,000) built from an input of ``units``; the weights file stores the small layer of ``keras_archive``."""
    import copy

    config = copy.deepcopy(KERAS_CONFIG)
    config["config"]["layers"][1] = {
        "module": "keras.layers",
        "class_name": "Dense",
        "config": {"name": "dense", "units": units},
        "build_config": {"input_shape": [None, units]},
    }
    return keras_archive(path, {"config.json": json.dumps(config).encode()})


def many_layers_archive(path, n: int = 20000) -> Path:
    """A ``.keras`` whose config adds ``n`` Dense layers of different widths (no weights stored for them)."""
    import copy

    config = copy.deepcopy(KERAS_CONFIG)
    config["config"]["layers"] += [
        {"module": "keras.layers", "class_name": "Dense", "config": {"name": f"d{i}", "units": 3 + i},
         "build_config": {"input_shape": [None, 3]}}
        for i in range(n)
    ]  # fmt: skip
    return keras_archive(path, {"config.json": json.dumps(config).encode()})


def big_layer_legacy_h5(path, source, units: int = 16000) -> Path:
    """A copy of the tf-keras full model ``source`` whose ``model_config`` declares its input and Dense layer
    ``units`` wide (a ``units`` x ``units`` kernel); the stored weights stay as they are."""
    import shutil

    import h5py

    shutil.copyfile(source, path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        for layer in config["config"]["layers"]:
            if layer["class_name"] == "InputLayer":
                layer["config"]["batch_input_shape"] = [None, units]
            elif layer["class_name"] == "Dense":
                layer["config"]["units"] = units
        f.attrs["model_config"] = json.dumps(config).encode()
    return Path(path)


def config_bomb(path, size: int = 3 * GiB) -> Path:
    """A ``.keras`` whose ``config.json`` inflates to ``size`` bytes of JSON whitespace (about size/1000 on disk)."""
    return keras_archive(path, {"config.json": deflate_repeat(b" " * (1 << 20), size >> 20)})


def weights_bomb(path, size: int = 3 * GiB, hdf5_start: bool = False) -> Path:
    """A ``.keras`` whose ``model.weights.h5`` inflates to ``size`` bytes of zeros.

    ``hdf5_start``: the member starts with a genuine Keras weights file (so a signature check alone passes).
    """
    head = b""
    if hdf5_start:
        tmp = Path(path).with_suffix(".tmp.h5")
        head = keras_weights_h5(tmp).read_bytes()
        tmp.unlink()
    zeros = deflate_repeat(bytes(1 << 20), (size - len(head)) >> 20, head=head)
    return keras_archive(path, {"model.weights.h5": zeros})


def lying_size_archive(path, size: int = 3 * GiB) -> Path:
    """A ``.keras`` whose ``config.json`` declares 2 bytes in the central directory but inflates to ``size``."""
    bomb = deflate_repeat(b" " * (1 << 20), size >> 20)
    return keras_archive(path, {"config.json": Deflated(bomb.stream, 2, zlib.crc32(b"  "))})


def deep_json_archive(path, depth: int = 200_000) -> Path:
    """A ``.keras`` whose ``config.json`` nests ``depth`` lists (a few hundred kB)."""
    return keras_archive(path, {"config.json": b"[" * depth + b"]" * depth})


def unstored_weights_h5(
    path, declared: int = 4 * TiB, layout: str = "chunked", key: str = "layers/dense/vars/0"
) -> Path:
    """A Keras 3 ``.weights.h5`` whose dataset ``key`` declares ``declared`` bytes of float32 and stores none.

    ``layout``: ``chunked`` (no chunk ever written), ``contiguous`` (storage never allocated) or
    ``partial`` (one chunk of many written). ``key``: the dense kernel by default (its statistics
    would be computed), ``layers/batch_normalization/vars/3`` for the BN moving variance (read whole).
    """
    import h5py

    path = Path(path)
    keras_weights_h5(path)
    n = declared // 4
    with h5py.File(path, "r+") as f:
        group, name = key.rsplit("/", 1)
        del f[group][name]
        if layout == "contiguous":
            f[group].create_dataset(name, shape=(n,), dtype="float32")
        else:
            ds = f[group].create_dataset(name, shape=(n,), dtype="float32", chunks=(1 << 16,))
            if layout == "partial":
                ds[: 1 << 16] = 1.0
    return path


def npy_header_bomb(path, rows: int = 1 << 40, width: int = 2) -> Path:
    """An ``.npy`` whose header claims ``rows`` x ``width`` float32 and that holds one row."""
    header = {"descr": "<f4", "fortran_order": False, "shape": (rows, width)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(np.ones(width, "float32").tobytes())
    return Path(path)


def npz_bomb(path, size: int = 3 * GiB, width: int = 2) -> Path:
    """An ``.npz`` whose member ``inp.npy`` (the seed sample's input) inflates to ``size`` bytes: a valid
    header for rows of ``width`` float32, then zeros."""
    import io

    head = io.BytesIO()
    rows = (size >> 20 << 20) // (4 * width)
    np.lib.format.write_array_header_1_0(head, {"descr": "<f4", "fortran_order": False, "shape": (rows, width)})
    return write_zip(path, [("inp.npy", deflate_repeat(bytes(1 << 20), size >> 20, head=head.getvalue()))])


def unstored_data_h5(path, rows: int = 1 << 38, width: int = 2) -> Path:
    """Data for ``--data FILE.h5:x``: a float32 dataset of ``rows`` x ``width`` that stores nothing."""
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("x", shape=(rows, width), dtype="float32", chunks=(1024, width))
    return Path(path)


def _small_h5(path, data: bool) -> bytearray:
    """The bytes of a genuine ``keras_weights_h5`` at ``path`` or, with ``data``, of data with a dataset ``x``
    (written with h5py), for a builder to damage."""
    import h5py

    if data:
        with h5py.File(path, "w") as f:
            f["x"] = np.ones((4, 2), "float32")
    else:
        keras_weights_h5(path)
    return bytearray(Path(path).read_bytes())


def driver_info_h5(path, declared: int = 0x60000000, data: bool = False) -> Path:
    """A Keras 3 ``.weights.h5`` (or, with ``data``, data with a dataset ``x``) whose superblock points at a driver
    information block, appended after the file, declaring ``declared`` bytes: libhdf5 1.14.6 allocates them
    (1.5 GiB by default) before it finds that the block runs past the end of the file."""
    raw = _small_h5(path, data)
    assert raw[8] == 0 and raw[13] == 8, "h5py writes a version 0 superblock with 8-byte addresses"
    at = len(raw)
    raw += struct.pack("<B3xI8s", 0, declared, b"NCSAmult")  # version, reserved, size, driver id
    raw[40:48] = struct.pack("<Q", len(raw))  # the end-of-file address, after the base and free-space ones
    raw[48:56] = struct.pack("<Q", at)  # the driver information block's address
    Path(path).write_bytes(bytes(raw))
    return Path(path)


def free_list_loop_h5(path, data: bool = False) -> Path:
    """A Keras 3 ``.weights.h5`` (or, with ``data``, data with a dataset ``x``) whose root group's local heap has a
    free block naming itself as the next one: libhdf5 1.14.6 decodes the list (to look up a name) allocating a
    node per block, without end (found by fuzzing)."""
    raw = _small_h5(path, data)
    at = raw.index(b"HEAP")
    free, segment = struct.unpack_from("<QQ", raw, at + 16)  # (after the data segment's size) free list, data
    assert free != 1, "h5py leaves free space in a group's heap"
    raw[segment + free : segment + free + 8] = struct.pack("<Q", free)  # the block's next: itself
    Path(path).write_bytes(bytes(raw))
    return Path(path)


def cut_superblock_h5(path) -> Path:
    """41 bytes that libhdf5 1.14.6 opens with 4 GB of RSS (found by fuzzing): a version 1 superblock with 4-byte
    addresses, the base and end-of-file addresses undefined, cut after the first byte of the driver information
    block's address. libhdf5 reads the missing bytes as zeros (address 10), and the block's size field there is
    the superblock's own group node sizes: 4 GiB."""
    head = HDF5_SIGNATURE + bytes([1, 0, 0, 0, 0, 4, 4, 0])  # versions, 4-byte offsets and lengths
    head += struct.pack("<HHIHH", 0xFCEE, 0xFFFA, 0, 0xB800, 0xFF0A)  # node sizes (K), flags, K, reserved
    head += struct.pack("<III", 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF) + b"\x0a"  # base, free space, EOF, cut
    Path(path).write_bytes(head)
    return Path(path)


def sharded_weights(folder, shard_builder) -> Path:
    """Keras 3 sharded weights in ``folder``: ``w.weights.json`` naming one shard, ``w_00000.weights.h5``, built by
    ``shard_builder(path)`` (a ``keras_weights_h5`` or one of its hostile variants); the manifest puts every layer's
    group in that shard, as Keras does for weights below ``max_shard_size``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shard = "w_00000.weights.h5"
    shard_builder(folder / shard)
    groups = ["/layers/dense/vars", "/layers/batch_normalization/vars", "/optimizer/vars"]
    manifest = {"metadata": {"total_size": 0}, "weight_map": {g: [shard] for g in groups}}
    (folder / "w.weights.json").write_text(json.dumps(manifest))
    return folder / "w.weights.json"


def nested_message(depth: int, field: int = 2) -> bytes:
    """A protobuf message nesting ``depth`` length-delimited fields ``field`` inside each other."""
    tag = bytes([(field << 3) | 2])
    body = b""
    for _ in range(depth):
        body = tag + _varint(len(body)) + body
    return body


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


SEED = Path(__file__).resolve().parents[1] / "sample_ckpts" / "seed"
FUZZ_CORPUS = Path(__file__).resolve().parents[1] / "fuzz" / "corpus"


def deep_saved_model(directory, depth: int = 2000) -> Path:
    """A SavedModel directory whose ``saved_model.pb`` nests ``depth`` messages; its bundle is the seed's."""
    import shutil

    directory = Path(directory)
    (directory / "variables").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SEED / "model.ckpt.index", directory / "variables" / "variables.index")
    shutil.copyfile(SEED / "model.ckpt.data-00000-of-00001", directory / "variables" / "variables.data-00000-of-00001")
    (directory / "saved_model.pb").write_bytes(nested_message(depth))
    return directory


CASES = {
    "config-bomb.keras": config_bomb,
    "weights-bomb.keras": weights_bomb,
    "weights-bomb-hdf5-start.keras": lambda p: weights_bomb(p, hdf5_start=True),
    "lying-size.keras": lying_size_archive,
    "deep-config.keras": deep_json_archive,
    "unstored.weights.h5": unstored_weights_h5,
    "unstored-contiguous.weights.h5": lambda p: unstored_weights_h5(p, layout="contiguous"),
    "unstored-bn.weights.h5": lambda p: unstored_weights_h5(p, key="layers/batch_normalization/vars/3"),
    "rows-2e40.npy": npy_header_bomb,
    "bomb.npz": npz_bomb,
    "unstored-data.h5": unstored_data_h5,
    "heap-loop.weights.h5": heap_loop_h5,
    "driver-info.weights.h5": driver_info_h5,
    "free-list-loop.weights.h5": free_list_loop_h5,
    "big-layer.keras": big_layer_archive,
    "big-layer-tfkeras.h5": lambda p: big_layer_legacy_h5(p, FUZZ_CORPUS / "keras_h5" / "tfkeras-full.h5"),
    "many-layers.keras": lambda p: many_layers_archive(p, 50_000),
    "vlen-1GiB.weights.h5": vlen_length_h5,
    "deep-saved-model": deep_saved_model,
}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, build in CASES.items():
        build(out / name)
        print(name)
