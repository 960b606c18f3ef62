"""The user's own input pipeline as a source: ``package.module:function``, imported and called (their code runs).

The module is imported from the working directory and ``sys.path``; the function is
called with no arguments and returns a ``tf.data.Dataset``, a numpy array, a dict of
arrays, or an iterable of batches: arrays, dicts of arrays, or ``(x, y[, w])`` tuples
whose first element is the model input. A dataset's or an iterable's batches are used
as they come (``--batch-size`` re-batches them only when given); an array or a dict
of arrays is cut into ``--batch-size`` batches, and so are elements one dimension
short of the inputs (an unbatched dataset: single samples). A pass over a one-shot iterator (a
generator) calls the function again for the next pass.
"""

from __future__ import annotations

import importlib
import itertools
import os
import re
import sys
from collections.abc import Iterator

import numpy as np

from ckptdoctor.errors import BadDataError
from ckptdoctor.pipelines.sources.base import DEFAULT_BATCH_SIZE, Streamed, StreamedSource

__all__ = ["UserFunction", "looks_like_function"]

_SPEC = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")


def looks_like_function(spec: str) -> bool:
    """``package.module:function`` (and the part before ``:`` is no file: ``FILE.h5:dataset`` keeps its meaning)."""
    return bool(_SPEC.match(spec)) and not os.path.exists(spec.split(":", 1)[0])


def _import(spec: str):
    from ckptdoctor.tfcompat import import_tensorflow, tensorflow_available

    module_name, _, attr = spec.partition(":")
    if tensorflow_available():
        import_tensorflow()  # quietly, before the user's module imports it and TensorFlow's logs bury the report
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - the user's module may raise anything while it is imported
        raise BadDataError(f"--data {spec}: cannot import {module_name} ({type(e).__name__}: {e})") from e
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise BadDataError(f"--data {spec}: {module_name} has no function {attr}")
    return fn


def _model_input(element, spec: str):
    """A batch's model input: the element itself, or the first of an ``(x, y[, w])`` tuple."""
    if isinstance(element, (tuple, list)):
        if not element:
            raise BadDataError(f"--data {spec} yields an empty tuple: yield arrays or (x, y) tuples")
        element = element[0]
    if isinstance(element, dict):
        return {k: np.asarray(v) for k, v in element.items()}
    return {None: np.asarray(element)}


def _is_dataset(obj) -> bool:
    return type(obj).__module__.startswith("tensorflow") and hasattr(obj, "as_numpy_iterator")


class UserFunction(StreamedSource):
    """What ``package.module:function`` returns, read batch by batch."""

    rebatch_always = False

    def __init__(self, spec: str, input: str | None = None):
        super().__init__()
        self.name, self.runner_input = spec, input
        self._fn = _import(spec)
        self._pending: Iterator | None = None  # the first pass's batches, its first already read
        obj = self._call()
        self._obj = obj
        if isinstance(obj, (np.ndarray, dict)) or (hasattr(obj, "shape") and hasattr(obj, "dtype")):
            self.rebatch_always = True  # one array (or dict of them): cut into --batch-size batches
            self._reusable = True
            self.total = int(len(next(iter(obj.values())) if isinstance(obj, dict) else obj)) if len(obj) else 0
            first = _model_input(obj, spec)
        else:
            self._reusable = _is_dataset(obj) or iter(obj) is not obj
            batches = self._iterate(obj)
            first_element = self._next(batches)
            if first_element is None:
                raise BadDataError(f"--data {spec} yields no batch: return data with at least one sample")
            first = first_element
            self._pending = itertools.chain([first], batches)
        self._first, self._unbatched = first, False
        self._keys = {
            k: Streamed(k, a.ndim, optional=k is not None, sample=tuple(a.shape[1:]) if a.ndim else None)
            for k, a in first.items()
        }
        kind = "a tf.data.Dataset" if _is_dataset(obj) else type(obj).__name__
        self.notes.append(f"{spec}: your function, which returned {kind}")

    def arrays(self) -> dict:
        return self._keys

    def feed(self, inputs: list, batch_size: int | None, max_samples: int | None):
        """As ``StreamedSource.feed``; elements one dimension short of every input are single samples, batched."""
        shapes = {i.array.key: i.shape for i in inputs}
        self._unbatched = not self.rebatch_always and all(
            shape is not None and key in self._first and self._first[key].ndim == len(shape) - 1
            for key, shape in shapes.items()
        )
        if self._unbatched:
            self.rebatch_always = True
            self.notes.append(
                f"{self.name} yields single samples (no batch dimension): grouped into batches of "
                f"{batch_size or DEFAULT_BATCH_SIZE}"
            )
        return super().feed(inputs, batch_size, max_samples)

    def _call(self):
        try:
            return self._fn()
        except Exception as e:  # noqa: BLE001 - the user's function may raise anything
            raise BadDataError(f"--data {self.name} raised {type(e).__name__}: {e}") from e

    def _iterate(self, obj) -> Iterator[dict]:
        """The model inputs of ``obj``'s batches; the user's errors while iterating become ``BadDataError``."""
        try:
            it = obj.as_numpy_iterator() if _is_dataset(obj) else iter(obj)
        except Exception as e:  # noqa: BLE001 - the user's iterable may raise anything
            raise BadDataError(f"--data {self.name}: iterating its result raised {type(e).__name__}: {e}") from e
        while True:
            try:
                element = next(it)
            except StopIteration:
                return
            except Exception as e:  # noqa: BLE001 - the user's pipeline may raise anything
                msg = str(e).splitlines()[0] if str(e) else ""
                raise BadDataError(f"--data {self.name}: a batch raised {type(e).__name__}: {msg}") from e
            yield _model_input(element, self.name)

    @staticmethod
    def _next(batches: Iterator[dict]):
        return next(batches, None)

    def raw_batches(self, shapes: dict) -> Iterator[dict]:
        if isinstance(self._obj, (np.ndarray, dict)) or (hasattr(self._obj, "shape") and hasattr(self._obj, "dtype")):
            yield _model_input(self._obj, self.name)
            return
        if self._pending is not None:
            batches, self._pending = self._pending, None
        else:
            batches = self._iterate(self._obj if self._reusable else self._call())
        for batch in batches:
            yield {k: v[None] for k, v in batch.items()} if self._unbatched else batch
