"""What a data source is: something that yields batches for the model's inputs, pass after pass.

A source answers three things. ``arrays()``: what the format's runner binds its inputs
to (``formats.base.Model.runner``), one entry per key (``None``: the one array of a
single-input source). ``feed(inputs, ...)``: once bound, the ``Feed`` that yields one
list of arrays per batch (one per input, in the inputs' order and dtypes). ``name``,
``total`` and ``notes``: what the report says about it.

Streaming sources (image folders, TFRecord files, the user's input function) bind
``Streamed`` placeholders rather than arrays: nothing is read before the first pass,
and each batch is decoded, checked and used in turn, so memory holds one batch
whatever the number of samples. Their checks run on each batch as it comes; a bad
sample stops the repair before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from ckptdoctor.errors import BadDataError

__all__ = ["Streamed", "Feed", "StreamedSource", "DEFAULT_BATCH_SIZE", "rebatch", "shown_shape"]

DEFAULT_BATCH_SIZE = 256


class Streamed:
    """What a runner binds an input to when the data are streamed: a key and what is known of the shape.

    ``shape`` has ``None`` for the samples and for every size not known before reading
    (``formats.tf1.feeding`` matches them with any size). ``optional``: the key may feed
    nothing (a TFRecord label, an extra dict entry), unlike an ``.npz`` key.
    """

    def __init__(self, key: str | None, ndim: int | None, optional: bool = False, sample: tuple | None = None):
        self.key, self.optional = key, optional
        self.ndim = (4 if ndim is None else ndim) if sample is None else len(sample) + 1
        self.shape: tuple = (None,) * self.ndim if sample is None else (None, *sample)
        self.dtype = np.dtype("float32")

    def __repr__(self) -> str:
        return f"Streamed({self.key!r})"


def shown_shape(shape) -> str:
    return "[" + ", ".join("None" if d is None else str(d) for d in shape) + "]"


class Feed:
    """The bound batches of one repair: ``batches()`` is called once per pass and yields lists of arrays.

    Attributes:
        total: the samples a pass yields, None when not known before a pass (streamed sources).
        largest: the batch size (batches used as they come: the largest seen so far; 0: not known).
    """

    def __init__(self, batches: Callable[[], Iterator[list]], total: int | None, largest: int = 0):
        self.batches, self.total, self.largest = batches, total, largest


def rebatch(batches: Iterable[list], batch_size: int) -> Iterator[list]:
    """The same samples in consecutive batches of ``batch_size`` (the last may be smaller)."""
    held: list[list] = []
    count = 0
    for batch in batches:
        held.append(batch)
        count += len(batch[0])
        while count >= batch_size:
            joined = [np.concatenate([b[i] for b in held]) for i in range(len(batch))]
            yield [a[:batch_size] for a in joined]
            rest = [a[batch_size:] for a in joined]
            count -= batch_size
            held = [rest] if count else []
    if count:
        yield [np.concatenate([b[i] for b in held]) for i in range(len(held[0]))]


class StreamedSource:
    """A source read as it is used; subclasses yield raw batches: dicts key -> array of samples.

    ``raw_batches(shapes)`` gets each bound key's input shape (to decode images or
    reshape flat features to). ``rebatch_always``: the raw batches are single samples
    (files, records) grouped into ``--batch-size`` (default ``DEFAULT_BATCH_SIZE``);
    otherwise they are used as they come unless ``--batch-size`` is given.
    """

    name: str = ""
    total: int | None = None
    rebatch_always = True
    runner_input: str | None = None  # what --input tells the runner (None: the keys say it all)

    def __init__(self) -> None:
        self.notes: list[str] = []

    def arrays(self) -> dict:
        raise NotImplementedError

    def raw_batches(self, shapes: dict) -> Iterator[dict]:
        raise NotImplementedError

    def feed(self, inputs: list, batch_size: int | None, max_samples: int | None) -> Feed:
        """The checked, cast, re-batched and truncated batches for the bound ``inputs``."""
        keys = [i.array.key for i in inputs]
        shapes = {i.array.key: i.shape for i in inputs}
        size = batch_size if batch_size is not None or not self.rebatch_always else DEFAULT_BATCH_SIZE

        def batches() -> Iterator[list]:
            raw = (self._checked(b, inputs, keys) for b in self.raw_batches(shapes))
            stream = rebatch(raw, size) if size is not None else raw
            seen = 0
            for batch in stream:
                fed.largest = max(fed.largest, len(batch[0]))
                if max_samples is not None and seen + len(batch[0]) > max_samples:
                    batch = [a[: max_samples - seen] for a in batch]
                if len(batch[0]):
                    yield batch
                seen += len(batch[0])
                if max_samples is not None and seen >= max_samples:
                    return
            if not seen:
                raise BadDataError(f"{self.name} holds no samples: pass data with at least one sample")

        total = self.total if max_samples is None or self.total is None else min(self.total, max_samples)
        fed = Feed(batches, total, size or 0)
        return fed

    def _checked(self, raw: dict, inputs: list, keys: list) -> list:
        """One raw batch as one array per input, each checked against its input and cast to its dtype."""
        out = []
        for i, key in zip(inputs, keys):
            label = f"{self.name} ({i.name.split(':')[0]})"
            if key not in raw:
                raise BadDataError(f"{label}: a batch has no {key!r} (it holds {', '.join(map(str, raw))})")
            out.append(check_batch(np.asarray(raw[key]), label, i.shape, i.dtype))
        if len({len(a) for a in out}) > 1:
            raise BadDataError(f"{self.name}: a batch holds {[len(a) for a in out]} samples for the inputs")
        return out


def check_batch(array: Any, label: str, shape: list | None, dtype: str) -> np.ndarray:
    """``array`` (one batch) in ``dtype`` after checking its shape, dtype and values against the input."""
    from ckptdoctor.pipelines.data import _dtype

    if array.ndim == 0:
        raise BadDataError(f"{label} yields a scalar batch, but the input takes {shown_shape(shape or [])}")
    want = np.dtype("float32") if dtype == "bfloat16" else np.dtype(dtype)
    kind = array.dtype.kind
    if kind in "OSUVMm" or (kind == "b" and want.kind != "b") or (kind == "c" and want.kind != "c"):
        raise BadDataError(f"{label} yields {array.dtype}, which cannot feed a {dtype} input: convert it to {dtype}")
    if want.kind in "iu" and kind == "f":
        raise BadDataError(f"{label} yields {array.dtype} but the input is {dtype}: casting would drop the fractions")
    if shape is not None:
        got = list(array.shape)
        if len(shape) != len(got) or any(w is not None and w != g for w, g in zip(shape[1:], got[1:])):
            raise BadDataError(
                f"{label} yields batches of shape {got} but the input takes {shown_shape(shape)}: "
                "yield batches with the samples first, shaped like the input"
            )
    if kind in "fc" and not np.isfinite(array).all():
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise BadDataError(f"{label} yields {array[where]} at {list(where)}: remove or fix non-finite samples")
    return np.array(array, dtype=_dtype(dtype))
