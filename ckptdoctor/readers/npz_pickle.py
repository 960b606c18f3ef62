"""Keras' pickled npz members read with a restricted unpickler: only numpy arrays and Keras variables, as records.

Keras 3's npz store (``saving_lib.NpzIOStore``) saves each layer as ``np.savez`` of a dict, so
every member is a 0-d object array: a pickle of ``{"0": variable, "1": ...}``. A layer's
values are ``keras.src.backend.Variable`` objects (whose value pickles as
``functools.partial(ResourceVariable, initial_value=<ndarray>)``), the optimizer's are
numpy arrays and scalars. ``np.load(allow_pickle=True)`` would import and call whatever the
pickle names, so ckptdoctor never uses it. Instead, as ``torch.load(weights_only=True)``
does, a ``pickle`` unpickler whose ``find_class`` answers only the globals such a member
needs, each with a stand-in of ours that records its arguments and runs nothing else:
numpy's ``_reconstruct``, ``scalar``, ``ndarray`` and ``dtype`` (both the ``numpy.core``
and ``numpy._core`` spellings), and Keras' ``Variable`` with the TensorFlow
``ResourceVariable``, ``as_dtype`` and ``functools.partial`` its value pickles through.
Neither numpy's nor Keras' nor TensorFlow's code runs (nothing is imported), so listing
stays TF-free. Any other global is refused in one line naming it, before anything of it
is imported.

Bounds: a member is read whole (at most ``limits.MAX_PICKLE_BYTES``, its sizes checked
first); no opcode allocates more than the bytes that follow it (protocol 5's ``BYTEARRAY8``,
which does, is refused: numpy's ``.npy`` pickles are protocol 3 or 4); an array's declared
shape must match the bytes the pickle holds for it, so no declared size allocates anything;
dtypes are spelled as numpy pickles them (``"f4"``); object arrays are only the 0-d container
Keras writes; leaves are numeric (bool, integer, float, complex). Where each leaf's bytes lie
in the member is recorded (``Leaf.offset``), so values are read, and rewritten by repair, in
place.
"""

from __future__ import annotations

import io
import math
import pickle
import re
import struct
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Leaf", "PickleRefused", "PickleDamaged", "read_pickled_member"]

#: What a member may hold: the globals answered, each with its stand-in (filled in below).
_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_KERAS_VARIABLE = (("keras.src.backend", "Variable"), ("keras.src.backend.tensorflow.core", "Variable"))
_NUMERIC_KINDS = "biufc"
_DTYPE_SPEC = re.compile(r"[biufcO][0-9]{1,2}")


class PickleRefused(Exception):
    """A pickle names a global outside the allowed set (``name``: ``module.qualname``)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class PickleDamaged(Exception):
    """A pickle that is not what Keras writes (the message says what)."""


class Leaf(NamedTuple):
    """One stored array: its dtype, shape, order, and where its bytes lie in the member."""

    dtype: np.dtype
    shape: tuple[int, ...]
    fortran: bool
    offset: int  # in the member (the .npy file), of the first data byte
    nbytes: int


# ----------------------------------------------------------------------------- stand-ins (none runs foreign code)


class _Token:
    """A global that is only passed around (``numpy.ndarray``, Keras' ``Variable``, ``ResourceVariable``)."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


_NDARRAY = _Token("numpy.ndarray")
_RESOURCE_VARIABLE = _Token("tensorflow.python.ops.resource_variable_ops.ResourceVariable")


class _DtypeRecord:
    """``numpy.dtype(spec, align, copy)`` then its ``__setstate__``: only plain numeric or object dtypes."""

    def __init__(self, spec=None, align=False, copy=True):
        # numpy pickles a dtype by its kind and size ("f4", "i8", "b1", "O8"); anything else could reach numpy's
        # parser of comma-strings (ast.literal_eval) and is no numeric type anyway.
        if not isinstance(spec, str) or not _DTYPE_SPEC.fullmatch(spec):
            raise PickleDamaged(f"a dtype spelled {spec!r:.40}, not a plain numpy type")
        try:
            self.dtype = np.dtype(spec)
        except (TypeError, ValueError) as e:
            raise PickleDamaged(f"a dtype spelled {spec!r}, which numpy does not know") from e
        if self.dtype.kind not in _NUMERIC_KINDS + "O" or self.dtype.fields or self.dtype.subdtype:
            raise PickleDamaged(f"an array of dtype {spec!r}, not a numeric one")

    def __setstate__(self, state) -> None:
        if not isinstance(state, tuple) or len(state) < 5 or any(s is not None for s in state[2:5]):
            raise PickleDamaged("a dtype with fields or sub-arrays, not a numeric one")
        order = state[1]
        if order not in ("<", ">", "|", "="):
            raise PickleDamaged(f"a dtype of byte order {order!r:.10}")
        if order in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(order)


class _ArrayRecord:
    """``_reconstruct(ndarray, (0,), b'b')`` then ``__setstate__((1, shape, dtype, fortran, data))``."""

    def __init__(self):
        self.state: tuple | None = None

    def __setstate__(self, state) -> None:
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
            raise PickleDamaged("an array whose pickled state is not numpy's")
        _version, shape, dtype, fortran, data = state
        if not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape) or len(shape) > 32:
            raise PickleDamaged(f"an array of shape {shape!r:.60}")
        if not isinstance(dtype, _DtypeRecord):
            raise PickleDamaged("an array without a numpy dtype")
        if dtype.dtype.kind == "O":
            if shape != () or not isinstance(data, list) or len(data) != 1:
                raise PickleDamaged(f"an object array of shape {list(shape)}, not the 0-d container Keras writes")
        elif type(data) is not bytes or len(data) != math.prod(shape) * dtype.dtype.itemsize:
            count = math.prod(shape)
            raise PickleDamaged(
                f"an array declaring {count} values of {dtype.dtype.name} (shape {list(shape)}) but holding "
                f"{len(data) if isinstance(data, (bytes, list)) else 'no'} bytes for them"
            )
        self.state = (shape, dtype.dtype, bool(fortran), data)


def _reconstruct(subtype=None, shape=None, dtype=None) -> _ArrayRecord:
    if subtype is not _NDARRAY or dtype != b"b" or not isinstance(shape, tuple) or math.prod(shape) > 1:
        raise PickleDamaged("numpy's _reconstruct called with other arguments than numpy's own pickles pass")
    return _ArrayRecord()


def _scalar(dtype=None, data=None) -> _ArrayRecord:
    """``numpy.core.multiarray.scalar(dtype, bytes)``: a numpy scalar, kept as a 0-d array."""
    if not isinstance(dtype, _DtypeRecord) or dtype.dtype.kind == "O":
        raise PickleDamaged("a numpy scalar that is not numeric")
    record = _ArrayRecord()
    record.__setstate__((1, (), dtype, False, data))
    return record


class _VariableRecord:
    """A Keras ``Variable``: made by ``NEWOBJ`` (``__new__`` only), its ``__dict__`` kept as given (None until a
    ``BUILD`` gives it: a pickle may leave it out)."""

    state: dict | None = None

    def __setstate__(self, state) -> None:
        if not isinstance(state, dict):
            raise PickleDamaged("a Keras variable whose pickled state is not a dict")
        self.state = state


class _ResourceValue:
    """What calling ``functools.partial(ResourceVariable, initial_value=...)`` gives: the value it was given."""

    def __init__(self, kwargs: dict):
        self.value = kwargs.get("initial_value")


class _PartialRecord:
    """``functools.partial(ResourceVariable)`` with its state; calling it gives a ``_ResourceValue``."""

    def __init__(self, func=None, *args):
        if func is not _RESOURCE_VARIABLE or args:
            raise PickleDamaged("functools.partial of something other than a TensorFlow variable")
        self.kwargs: dict = {}

    def __setstate__(self, state) -> None:
        if not (isinstance(state, tuple) and len(state) == 4 and state[0] is _RESOURCE_VARIABLE):
            raise PickleDamaged("functools.partial with another state than a TensorFlow variable's")
        if state[1] or not isinstance(state[2], dict):
            raise PickleDamaged("a TensorFlow variable made from positional arguments")
        self.kwargs = state[2]

    def __call__(self, *args, **kwargs) -> _ResourceValue:
        if args or kwargs:
            raise PickleDamaged("a TensorFlow variable made from more arguments than Keras gives")
        return _ResourceValue(self.kwargs)


def _as_dtype(name=None) -> str:
    if not isinstance(name, str):
        raise PickleDamaged("a TensorFlow dtype that is not named")
    return name


_ALLOWED: dict[tuple[str, str], Any] = {
    **{(m, "_reconstruct"): _reconstruct for m in _NUMPY_MODULES},
    **{(m, "scalar"): _scalar for m in _NUMPY_MODULES},
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DtypeRecord,
    **{key: _VariableRecord for key in _KERAS_VARIABLE},
    ("functools", "partial"): _PartialRecord,
    ("tensorflow.python.ops.resource_variable_ops", "ResourceVariable"): _RESOURCE_VARIABLE,
    ("tensorflow.python.framework.dtypes", "as_dtype"): _as_dtype,
}


# ----------------------------------------------------------------------------- the unpickler

#: ``pickle``'s unpickler in Python (the C one cannot say where each bytes object lies in the pickle).
_PythonUnpickler: Any = pickle._Unpickler


class _Unpickler(_PythonUnpickler):
    """``pickle``'s own unpickler, with ``find_class`` answering only ``_ALLOWED`` and the bytes opcodes
    recording where each bytes object lies."""

    dispatch = dict(_PythonUnpickler.dispatch)

    def __init__(self, data: bytes):
        self._stream = io.BytesIO(data)
        super().__init__(self._stream)
        self.offsets: dict[int, int] = {}  # id(bytes object) -> where its bytes start in ``data``
        self._keep: list[bytes] = []  # the bytes objects (their ids stay theirs)
        self._frame_start = 0

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise PickleRefused(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise PickleRefused("a persistent id")

    def _position(self) -> int:
        frame = self._unframer.current_frame
        return self._frame_start + frame.tell() if frame else self._stream.tell()

    def _load_frame(self) -> None:
        (size,) = struct.unpack("<Q", self.read(8))
        self._frame_start = self._stream.tell()
        self._unframer.load_frame(size)

    def _load_bytes(self, width: int) -> None:
        (size,) = struct.unpack({1: "<B", 4: "<I", 8: "<Q"}[width], self.read(width))
        at = self._position()
        value = self.read(size)
        if len(value) != size:
            raise PickleDamaged("the pickle ends inside a bytes value")
        self.offsets[id(value)] = at
        self._keep.append(value)
        self.append(value)

    def _load_short_binbytes(self) -> None:
        self._load_bytes(1)

    def _load_binbytes(self) -> None:
        self._load_bytes(4)

    def _load_binbytes8(self) -> None:
        self._load_bytes(8)

    def _load_protocol_5(self) -> None:
        # BYTEARRAY8 allocates the length it declares before reading (pickle.py), and out-of-band buffers are
        # not in a file: numpy writes .npy pickles with protocol 3 or 4, which have neither.
        raise PickleDamaged("a protocol 5 opcode (bytearray or out-of-band buffer), which numpy's .npy never writes")

    dispatch[pickle.FRAME[0]] = _load_frame
    for _op in (pickle.BYTEARRAY8, pickle.NEXT_BUFFER, pickle.READONLY_BUFFER):
        dispatch[_op[0]] = _load_protocol_5
    dispatch[pickle.SHORT_BINBYTES[0]] = _load_short_binbytes
    dispatch[pickle.BINBYTES[0]] = _load_binbytes
    dispatch[pickle.BINBYTES8[0]] = _load_binbytes8


_ERRORS = (
    pickle.UnpicklingError,
    TypeError,
    ValueError,
    AttributeError,
    KeyError,
    IndexError,
    EOFError,
    struct.error,
    OverflowError,
    RecursionError,
    UnicodeDecodeError,
)


def _leaf(value, offsets: dict, start: int, where: str) -> Leaf:
    if isinstance(value, _VariableRecord):
        if value.state is None:
            raise PickleDamaged(f"{where} is a Keras variable with no pickled state")
        inner = value.state.get("_value")
        if not isinstance(inner, _ResourceValue) or not isinstance(inner.value, _ArrayRecord):
            raise PickleDamaged(f"{where} is a Keras variable without an array value")
        leaf = _leaf(inner.value, offsets, start, where)
        shape, dtype = value.state.get("_shape"), value.state.get("_dtype")
        wrong_shape = shape is not None and (not isinstance(shape, (tuple, list)) or tuple(shape) != leaf.shape)
        if wrong_shape or (dtype is not None and dtype != leaf.dtype.name):
            raise PickleDamaged(
                f"{where} is a Keras variable of {dtype!r:.20} {shape!r:.40} holding {leaf.dtype} {list(leaf.shape)}"
            )
        return leaf
    if not isinstance(value, _ArrayRecord) or value.state is None or value.state[1].kind == "O":
        raise PickleDamaged(f"{where} holds a {type(value).__name__.strip('_')}, not a numeric array")
    shape, dtype, fortran, data = value.state
    if id(data) not in offsets:
        raise PickleDamaged(f"{where}'s bytes are not stored in the pickle as bytes")
    return Leaf(dtype, shape, fortran, start + offsets[id(data)], len(data))


def read_pickled_member(data: bytes, start: int) -> dict[str, Leaf]:
    """The arrays of one pickled member (``data``: its pickle, which starts at ``start`` in the member).

    Returns:
        key -> ``Leaf`` (the keys of the dict Keras saved: ``"0"``, ``"1"``...).

    Raises:
        PickleRefused: the pickle names a global outside the allowed set (nothing of it was imported).
        PickleDamaged: not a pickle of the 0-d container of arrays and Keras variables that Keras writes.
    """
    unpickler = _Unpickler(data)
    try:
        top = unpickler.load()
    except (PickleRefused, PickleDamaged):
        raise
    except _ERRORS as e:
        raise PickleDamaged(f"not a readable pickle ({type(e).__name__}: {str(e)[:120]})") from e
    if unpickler._stream.tell() != len(data):
        raise PickleDamaged(f"{len(data) - unpickler._stream.tell()} bytes follow the pickle")
    if not isinstance(top, _ArrayRecord) or top.state is None or top.state[1].kind != "O":
        raise PickleDamaged("the pickle is not the 0-d object array (a dict of arrays) Keras writes")
    content = top.state[3][0]
    if not isinstance(content, dict) or not all(isinstance(k, str) for k in content):
        raise PickleDamaged(f"the pickled object is a {type(content).__name__.strip('_')}, not a dict of arrays")
    return {k: _leaf(v, unpickler.offsets, start, f"key {k!r}") for k, v in content.items()}
