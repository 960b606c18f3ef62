"""The floor of a pure-Python listing of a TF2 checkpoint: what `inspect --stats=False --format json` must do at least.

    python benchmarks/listing_floor.py PREFIX > rows.json

The least per-tensor work, each structure walked once in one fused loop, and nothing checked: the index's
blocks (their CRC-32C only), every entry's dtype, shape and size, the object graph's children and
attributes, each key's object path (breadth-first from the root, as ckptdoctor and TensorFlow derive it)
and one JSON row per tensor, as ckptdoctor writes it for a checkpoint like ``build_ckpts.py``'s (roles are
``weight`` but for the object graph's ``other``). No bounds, varint, overlap or hostile-input checks, no
partitioned tensors, no findings, no report objects: ckptdoctor cannot list faster than this in Python.
Section D of ``run.py`` times it beside ``ckptdoctor`` and ``tf.train.list_variables``.
"""

import gc
import json
import struct
import sys
from collections import deque

import google_crc32c

_DTYPES = {1: "float32", 2: "float64", 3: "int32", 7: "string", 9: "int64", 19: "float16"}
_GRAPH_KEY = b"_CHECKPOINTABLE_OBJECT_GRAPH"
_ROW = (
    '    {"name": %s, "dtype": %s, "shape": %s, "size": %d, "nbytes": %d, "min": null, "max": null, "mean": null, '
    '"std": null, "nan": null, "inf": null, "in_graph": null, "role": %s, "object_path": %s}'
)


def varint(b, p: int) -> tuple[int, int]:
    r = s = 0
    while True:
        c = b[p]
        p += 1
        r |= (c & 0x7F) << s
        if c < 0x80:
            return r, p
        s += 7


def fields(v: bytes) -> dict:
    """A message's last value of each field (varints and LEN fields; fixed32 skipped)."""
    out, q = {}, 0
    while q < len(v):
        tag, q = varint(v, q)
        wt = tag & 7
        if wt == 0:
            out[tag >> 3], q = varint(v, q)
        elif wt == 2:
            n, q = varint(v, q)
            out[tag >> 3] = v[q : q + n]
            q += n
        elif wt == 5:
            q += 4
        else:
            q += 8
    return out


def block(data: bytes, off: int, size: int) -> list:
    google_crc32c.value(data[off : off + size + 1])
    restarts = struct.unpack_from("<I", data, off + size - 4)[0]
    blk, end = data[off : off + size], size - 4 - 4 * restarts
    p, key, out = 0, b"", []
    while p < end:
        shared, non_shared, length = blk[p], blk[p + 1], blk[p + 2]
        if shared < 128 and non_shared < 128 and length < 128:
            p += 3
        else:
            shared, p = varint(blk, p)
            non_shared, p = varint(blk, p)
            length, p = varint(blk, p)
        key = key[:shared] + blk[p : p + non_shared]
        p += non_shared
        out.append((key, blk[p : p + length]))
        p += length
    return out


def entries(prefix: str) -> list:
    with open(prefix + ".index", "rb") as f:
        data = f.read()
    footer = data[-48:]
    _, p = varint(footer, 0)
    _, p = varint(footer, p)
    off, p = varint(footer, p)
    size, p = varint(footer, p)
    out = []
    for _key, handle in block(data, off, size):
        o, q = varint(handle, 0)
        s, q = varint(handle, q)
        out.extend(block(data, o, s))
    return out[1:]  # the header


def object_paths(prefix: str, entry: bytes) -> dict:
    e = fields(entry)
    with open(f"{prefix}.data-{e.get(3, 0):05d}-of-00001", "rb") as f:
        f.seek(e.get(4, 0))
        blob = f.read(e[5])
    n, q = varint(blob, 0)
    g = blob[q + 4 : q + 4 + n]  # past the length's CRC
    children, attributes = [], []
    p = 0
    while p < len(g):
        n, p = varint(g, p + 1)
        end, ch, at = p + n, [], []
        while p < end:
            tag = g[p]
            n, p = varint(g, p + 1)
            if tag == 0x0A:  # ObjectReference: 08 node_id 12 len local_name
                node, r = varint(g, p + 1)
                ch.append((node, g[r + 2 : p + n].decode()))
            elif tag == 0x12:  # SerializedTensor: 0a len name 12 len full_name 1a len checkpoint_key
                r = p + 2 + g[p + 1]
                attr = g[p + 2 : r]
                r += 2 + g[r + 1]
                at.append((attr, g[r + 2 : p + n].decode()))
            p += n
        children.append(ch)
        attributes.append(at)
    paths: list = [None] * len(children)
    paths[0] = ""
    queue = deque([0])
    while queue:
        i = queue.popleft()
        here = paths[i]
        for c, name in children[i]:
            if paths[c] is None:
                paths[c] = f"{here}/{name}" if here else name
                queue.append(c)
    return {
        key: paths[i] if attr == b"VARIABLE_VALUE" else f"{paths[i]}/{attr.decode()}"
        for i, at in enumerate(attributes)
        if paths[i] is not None
        for attr, key in at
    }


def main(prefix: str) -> int:
    gc.disable()
    listed = entries(prefix)
    graph = dict(listed).get(_GRAPH_KEY)
    paths = object_paths(prefix, graph) if graph is not None else {}
    quote = json.encoder.encode_basestring
    heads: dict = {}  # an entry's dtype and shape fields -> (dtype text, shape text, element count)
    rows = []
    for key, value in listed:
        end = 4 + value[3] if value[:1] == b"\x08" and value[2:3] == b"\x12" and value[3] < 0x80 else 0
        head = heads.get(value[:end]) if end else None
        if head is None:
            e = fields(value)
            dims = [fields(d).get(1, 0) for d in _dims(e.get(2, b""))]
            count = 1
            for d in dims:
                count *= d
            head = (quote(_DTYPES.get(e.get(1, 0), "?")), "[" + ", ".join(map(str, dims)) + "]", count)
            if end:
                heads[value[:end]] = head
        nbytes = _size(value, end) if end else fields(value).get(5, 0)
        name = key.decode()
        path = paths.get(name)
        role = '"other"' if key == _GRAPH_KEY else '"weight"'
        rows.append(_ROW % (quote(name), head[0], head[1], head[2], nbytes, role, quote(path) if path else "null"))
    sys.stdout.write('{"tensors": [\n' + ",\n".join(rows) + "\n]}\n")
    return 0


def _size(value: bytes, q: int) -> int:
    """Field 5 (size) of an entry, from ``q`` on (the fields after the shape: shard, offset, size, crc)."""
    while q < len(value):
        tag = value[q]
        if tag == 0x35:
            q += 5
            continue
        v, q = varint(value, q + 1)
        if tag == 0x28:
            return v
    return 0


def _dims(shape: bytes) -> list:
    out, q = [], 0
    while q < len(shape):
        tag, q = varint(shape, q)
        n, q = varint(shape, q)
        if tag == 0x12:
            out.append(shape[q : q + n])
        q += n
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
