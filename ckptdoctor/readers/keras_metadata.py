"""A TensorFlow-free reader of ``keras_metadata.pb``, the Keras half of a tf-keras SavedModel.

``keras_metadata.pb`` is a serialized ``SavedMetadata`` message: repeated ``nodes``
(field 1), each a ``SavedObject`` with ``node_id`` (2, the SavedModel object graph's
node), ``node_path`` (3, ``root``, ``root.layer-3``), ``identifier`` (4,
``_tf_keras_layer``) and a JSON ``metadata`` string (5: the layer's class, name,
``trainable`` and, for the root, the model's config). Decoded with ``protowire``: every
length is checked against the buffer, the message nests two levels by its schema (no
recursion on the input), and each node's JSON goes through ``limits.load_json`` (size
and depth checked before it is parsed).
"""

from __future__ import annotations

import os
from typing import NamedTuple

from ckptdoctor.errors import CorruptCheckpointError
from ckptdoctor.readers.limits import load_json
from ckptdoctor.readers.protowire import WireFormatError, iter_fields

__all__ = ["MetadataNode", "decode_keras_metadata", "read_keras_metadata_nodes"]

_VARINT, _LEN = 0, 2


class MetadataNode(NamedTuple):
    """One node of ``keras_metadata.pb``: where it is in the object graph and what its JSON says.

    ``metadata`` is the parsed JSON when it is an object, else ``{}``; ``node_id`` is None when absent.
    """

    node_id: int | None
    node_path: str
    identifier: str
    metadata: dict


def decode_keras_metadata(buf: bytes) -> list[MetadataNode]:
    """Every node of a serialized ``SavedMetadata``, in stored order.

    Raises:
        WireFormatError: the bytes are not a ``SavedMetadata`` message.
        ValueError: a node's metadata is not JSON, not UTF-8, or too large or deep (``limits``).
    """
    nodes: list[MetadataNode] = []
    for field, wtype, raw in iter_fields(buf):
        if field != 1:
            continue
        if wtype != _LEN:
            raise WireFormatError(f"SavedMetadata.nodes has wire type {wtype}, expected {_LEN}")
        node_id, node_path, identifier, meta = None, "", "", b""
        for f, w, v in iter_fields(raw):  # type: ignore[arg-type]
            if f == 2 and w == _VARINT:
                node_id = int(v)
            elif f == 3 and w == _LEN:
                node_path = bytes(v).decode("utf-8", "replace")
            elif f == 4 and w == _LEN:
                identifier = bytes(v).decode("utf-8", "replace")
            elif f == 5 and w == _LEN:
                meta = bytes(v)
        parsed = load_json(meta, f"the metadata of node {node_path or len(nodes)}") if meta.strip() else {}
        nodes.append(MetadataNode(node_id, node_path, identifier, parsed if isinstance(parsed, dict) else {}))
    return nodes


def read_keras_metadata_nodes(directory: str, name: str = "keras_metadata.pb") -> list[MetadataNode] | None:
    """The nodes of ``directory/keras_metadata.pb``, or None when the SavedModel has no such file.

    Raises:
        CorruptCheckpointError: the file cannot be read or is not a ``SavedMetadata``.
    """
    file = os.path.join(directory, name)
    if not os.path.isfile(file):
        return None
    try:
        with open(file, "rb") as f:
            buf = f.read()
    except OSError as e:
        raise CorruptCheckpointError(f"cannot read {file}: {e.strerror or e}") from e
    try:
        return decode_keras_metadata(buf)
    except ValueError as e:  # WireFormatError and limits.LimitExceeded are ValueErrors too
        raise CorruptCheckpointError(f"{file} is not a readable keras_metadata.pb ({e})") from e
