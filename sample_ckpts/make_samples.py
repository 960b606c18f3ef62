"""Rebuild the sample checkpoints bundled in ``sample_ckpts/<kind>/``.

Each sample is built by ``builders.py`` in its own process (control flow v1),
into a temporary folder next to its final place; it is checked (state file
with a relative path, folder under :data:`MAX_SAMPLE_BYTES`), given a
``README.md`` that says what is wrong with it and the errors measured, and only
then swapped in for the old folder.

Usage::

    python sample_ckpts/make_samples.py            # all samples
    python sample_ckpts/make_samples.py seed nobn  # some of them
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

__all__ = ["SAMPLES", "MAX_SAMPLE_BYTES", "SampleError", "make_sample", "main"]

HERE = os.path.dirname(os.path.abspath(__file__))
BUILDERS = os.path.join(HERE, "builders.py")
MAX_SAMPLE_BYTES = 1_000_000


@dataclass(frozen=True)
class Sample:
    """One bundled sample: what it is, and extra builder arguments."""

    kind: str
    description: str
    extra_args: tuple[str, ...] = ()


SAMPLES = (
    Sample(
        "seed",
        "The seed question's network and Saver (trainables + globals named "
        "`*batch_normalization*`). The moving statistics are saved, but they are "
        "stale: EMAs (momentum 0.99) that lag the weights, which Adam(0.05) keeps "
        "moving, so inference mode is far worse than training mode.",
    ),
    Sample(
        "seed-trainables",
        "Saver over trainable variables only: the 6 moving statistics "
        "(`moving_mean`, `moving_variance` of 3 BN layers) are missing from the "
        "checkpoint and keep their initial values 0 and 1 after restore.",
    ),
    Sample(
        "seed-no-update",
        "Train op built without the `UPDATE_OPS` control dependency: the moving "
        "statistics were never updated and are saved at their initial values 0 and 1.",
    ),
    Sample(
        "convnet",
        "Healthy: 3 x (conv 3x3x8, fused BN, relu), global average pool, dense 1, "
        "trained in mini-batches of 64 with update ops; moving statistics fit the data.",
        ("--samples", "512"),
    ),
    Sample(
        "nobn",
        "Healthy: the seed network without batch normalization; nothing to repair.",
    ),
)


class SampleError(RuntimeError):
    """A sample could not be built or failed its checks."""


def _folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)


def _check_state_file(folder: str) -> None:
    with open(os.path.join(folder, "checkpoint"), encoding="utf-8") as f:
        text = f.read()
    paths = re.findall(r'checkpoint_paths?: "([^"]*)"', text)
    if not paths or any(os.path.isabs(p) or os.sep in p for p in paths):
        raise SampleError(f'expected only relative paths such as "model.ckpt" in {folder}/checkpoint, received {paths}')


def _readme(sample: Sample, info: dict) -> str:
    return (
        f"# {sample.kind}\n\n"
        f"{sample.description}\n"
        f"Measured (loss on the {info['samples']} rows of `X.npy`): training error "
        f"{info['train_error']:.3g}, restored inference error "
        f"{info['restored_inference_error']:.3g} (restored, training mode: "
        f"{info['restored_training_error']:.3g}). "
        f"Rebuild with `python sample_ckpts/make_samples.py {sample.kind}`.\n"
    )


def make_sample(sample: Sample, root: str = HERE) -> dict:
    """Build one sample into ``root/<kind>`` and return its info.json.

    Raises:
        SampleError: the build failed, or the result failed a check; the
            previous folder is then left as it was.
    """
    final = os.path.join(root, sample.kind)
    staging = os.path.join(root, f".{sample.kind}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        command = [
            sys.executable,
            BUILDERS,
            sample.kind,
            staging,
            "--control-flow",
            "v1",
            *sample.extra_args,
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise SampleError(f"building {sample.kind} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
        with open(os.path.join(staging, "info.json"), encoding="utf-8") as f:
            info = json.load(f)
        with open(os.path.join(staging, "README.md"), "w", encoding="utf-8") as f:
            f.write(_readme(sample, info))
        _check_state_file(staging)
        size = _folder_bytes(staging)
        if size >= MAX_SAMPLE_BYTES:
            raise SampleError(
                f"expected sample {sample.kind} under {MAX_SAMPLE_BYTES} bytes, received {size}: pass fewer --samples"
            )
        shutil.rmtree(final, ignore_errors=True)
        os.rename(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    info["folder_bytes"] = size
    return info


def main(argv: list[str] | None = None) -> int:
    """Rebuild the named samples (all if none); progress goes to stderr."""
    names = sys.argv[1:] if argv is None else argv
    by_kind = {s.kind: s for s in SAMPLES}
    unknown = [n for n in names if n not in by_kind]
    if unknown:
        print(
            f"make_samples.py: expected sample names among {sorted(by_kind)}, received {unknown}",
            file=sys.stderr,
        )
        return 2
    failures = []
    for sample in [by_kind[n] for n in names] or SAMPLES:
        started = time.perf_counter()
        try:
            info = make_sample(sample)
        except SampleError as e:
            failures.append(sample.kind)
            print(f"make_samples.py: {e}", file=sys.stderr)
            continue
        print(
            f"{sample.kind}: train {info['train_error']:.3g}, restored inference "
            f"{info['restored_inference_error']:.3g}, {info['folder_bytes']} bytes, "
            f"{time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
