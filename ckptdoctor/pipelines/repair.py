"""``repair``, one pipeline for every format: resolve, load data, run the statistics pass, verify, write, report.

Only forward passes run; no weight changes. The format's adapter loads the model and
binds it to the data (its ``Runner``); ``measure`` pools each BN layer's input moments
and checks the result against the BN-training reference (``selfcheck``); a repair
that does not bring the outputs closer is refused and writes nothing. Otherwise the
adapter writes the input again with only the moving means and variances replaced
(or added when missing), verifies what it wrote, and renames it into place.
"""

from __future__ import annotations

import os

import numpy as np

from ckptdoctor.analysis.changes import layer_change
from ckptdoctor.analysis.selfcheck import verdict
from ckptdoctor.errors import BadDataError, CkptDoctorError, OutputExistsError
from ckptdoctor.formats import open_model
from ckptdoctor.formats.base import RepairOptions
from ckptdoctor.pipelines.measure import Measured, measure
from ckptdoctor.pipelines.sources import DEFAULT_BATCH_SIZE, open_source
from ckptdoctor.reports.results import LayerRepair, RepairReport
from ckptdoctor.runtime.base import Runner

__all__ = ["LayerRepair", "RepairReport", "repair", "check_options"]


def check_options(
    method: str, batch_size: int | None, in_place: bool, output: str | None, max_samples: int | None = None
) -> None:
    """The option checks every repair makes before reading anything."""
    if method not in ("train", "sequential"):
        raise CkptDoctorError(f"--method must be train or sequential, received {method!r}")
    if batch_size is not None and batch_size < 1:
        raise CkptDoctorError(f"--batch-size must be at least 1, received {batch_size}")
    if max_samples is not None and max_samples < 1:
        raise BadDataError(f"--max-samples must be at least 1, received {max_samples}")
    if in_place and output:
        raise CkptDoctorError("pass either --output or --in-place, not both")


def repair(
    checkpoint: str,
    data: str,
    graph: str | None = None,
    input: str | None = None,
    training: str | None = None,
    feed=(),
    batch_size: int | None = None,
    max_samples: int | None = None,
    method: str = "train",
    output: str | None = None,
    in_place: bool = False,
    dry_run: bool = False,
    force: bool = False,
    report: str | None = None,
    progress: bool = False,
    unsafe: bool = False,
    compression: str | None = None,
    resize: bool = True,
) -> RepairReport:
    """Recompute every BN layer's moving mean and variance from data.

    With ``method="train"`` each batch runs with the BN layers in training mode, and
    each layer's new statistics are the exact mean and population variance of its
    input over every element seen (see ``estimator.PooledMoments``). With
    ``method="sequential"`` layers are recalibrated one at a time in the order they
    run, in inference mode, the layers before already recalibrated: for graphs whose
    BN mode is fixed to inference. See ``measure`` for both.

    Args:
        checkpoint: the checkpoint, Keras file or SavedModel to repair; never modified
            (``in_place`` swaps it only after the new one is verified, keeping a backup).
        data: ``X.npy``, ``data.npz`` (keys name inputs), ``FILE.h5:dataset``, a folder of images,
            TFRecord files (a file, a glob, a folder) or ``package.module:function`` (``pipelines.sources``).
        graph: TF1 checkpoints: the MetaGraphDef; default ``<prefix>.meta``. Keras weights-only files
            (``.weights.h5``, ``.weights.json``): the model (``runtime.keras_build.build_model``).
        input: the input the data feed (a placeholder or any feedable tensor, or a
            Keras input's name); default: the only one that fits. TFRecord files:
            ``NAME=FEATURE`` (comma-separated) maps features to inputs of other names.
        training: TF1: the boolean training switch; default: the one the BN layers depend on.
        feed: TF1: ``NAME=VALUE`` constants for other placeholders.
        batch_size: samples per forward pass (default 256; a function's batches as they come).
        max_samples: use only the first N samples.
        method: ``train`` or ``sequential``.
        output: the output; default ``<prefix>-repaired`` (``model-repaired.keras``, ``dir-repaired``).
        in_place: replace the input after verification, keeping a backup.
        dry_run: compute everything, write nothing.
        force: overwrite an existing output.
        report: a report path: ``.html``/``.htm`` a self-contained page with charts, anything else
            HDF5 with per-layer before/after arrays (``reports.write_report``).
        progress: show a progress bar on stderr (when it is a terminal).
        unsafe: Keras models: allow Lambda layers (their code runs).
        compression, resize: TFRecord files' GZIP/ZLIB/NONE (default: by extension); images of another size
            than the model input resized bilinearly (False: refused).

    Returns:
        A ``RepairReport``; ``refused`` (nothing written) when the output check finds the
        new statistics no closer to the reference than the stored ones.
    """
    check_options(method, batch_size, in_place, output, max_samples)
    model = open_model(checkpoint, graph=graph, for_repair=True)  # before the data: its problems are said first
    try:
        source = open_source(data, input=input, compression=compression, resize=resize)
        options = RepairOptions(
            data=data,
            input=source.runner_input,
            training=training,
            feed=tuple(feed),
            batch_size=batch_size or DEFAULT_BATCH_SIZE,
            max_samples=max_samples,
            method=method,
            unsafe=unsafe,
            progress=progress,
        )
        model.check_repair(options)
        out = model.output_path(output, in_place, force, dry_run)
        if report and os.path.exists(report) and not force:
            raise OutputExistsError(f"{report} exists: pass --force to overwrite it, or choose another --report path")
        runner = model.runner(source.arrays(), options)
        try:
            fed = source.feed(runner.inputs, batch_size, max_samples)
            measured = measure(runner, fed.batches, fed.total, method, progress)
            order = _network_order(runner)
        finally:
            runner.close()
        replacements, rows = _results(runner, measured, n := measured.samples)
        refused, findings = verdict(measured.check, runner.held)
        written = None
        if not dry_run and not refused:
            written = model.write(replacements, out, in_place=in_place, force=force)
    finally:
        model.close()
    result = RepairReport(
        checkpoint=model.path,
        graph=runner.graph,
        data=data,
        inputs=tuple(i.name for i in runner.inputs),
        training_flag=runner.training_flag,
        method=method,
        batch_size=batch_size or fed.largest or DEFAULT_BATCH_SIZE,
        samples=n,
        layers=tuple(rows),
        output=out if written is not None else None,
        backup=written.backup if written else None,
        dry_run=dry_run,
        untouched=written.untouched if written else 0,
        updated=written.updated if written else 0,
        notes=tuple((written.notes if written else ()) + tuple(source.notes) + tuple(runner.notes)),
        gap_note=runner.gap_note,
        held_in_inference=tuple(runner.held),
        output_check=measured.check,
        findings=findings,
        refused=refused,
        order=order,
    )
    if report and not refused:  # a refused repair writes nothing
        from ckptdoctor.reports import write_report

        write_report(result, report, force=force)
    return result


def _network_order(runner: Runner) -> tuple[str, ...]:
    """The target layers in the order they ran (after the measuring passes); layers not seen run last."""
    names = [t.name for t in runner.targets]
    ran = [name for name in dict.fromkeys(runner.order()) if name in set(names)]
    return tuple(ran + [name for name in names if name not in set(ran)])


def _results(runner: Runner, measured: Measured, n: int) -> tuple[dict, list[LayerRepair]]:
    """The new statistics keyed as stored (in the stored dtype), and one report row per layer."""
    replacements, rows = {}, []
    for t in runner.targets:
        p = measured.pooled[t.name]
        replacements[t.moving_mean] = p.mean.astype(np.dtype(t.dtypes[t.moving_mean]))
        replacements[t.moving_variance] = p.variance.astype(np.dtype(t.dtypes[t.moving_variance]))
        rows.append(
            layer_change(t, p.mean, p.variance, n, measured.gaps_before.get(t.name), measured.gaps_after.get(t.name))
        )
    return replacements, rows
