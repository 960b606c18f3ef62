"""The command line: a thin python-fire layer that calls the library and renders its reports.

Exit codes: 0 nothing wrong, 1 an error-level finding (or checkpoints differ),
2 the tool could not do its job (one line on stderr; ``--debug`` for the traceback).
"""

from __future__ import annotations

import sys

__all__ = ["Commands", "main"]


class Outcome:
    """What a command prints (via ``__str__``) and the process's exit code."""

    def __init__(self, text: str, exit_code: int):
        self.text = text
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.text


def _fmt(format: str) -> str:
    format = str(format).lower()
    if format not in ("table", "json"):
        from ckptdoctor.errors import CkptDoctorError

        raise CkptDoctorError(f"--format must be table or json, received {format!r}")
    return format


def _render_inspect(report, format):
    from ckptdoctor.reports.table import render_inspect, to_json

    text = to_json(report.to_dict()) if format == "json" else render_inspect(report)
    return Outcome(text, report.exit_code)


def _feeds(feed) -> list[str]:
    """--feed given once (a string) or several times (a tuple)."""
    return [str(f) for f in ([feed] if isinstance(feed, str) else list(feed or ()))]


class Commands:
    """Inspect and repair TensorFlow checkpoints, above all their batch-norm statistics."""

    def inspect(
        self,
        checkpoint: str,
        graph: str | None = None,
        stats: bool = True,
        match: str | None = None,
        format: str = "table",
        report: str | None = None,
        force: bool = False,
        data: str | None = None,
        input: str | None = None,
        training: str | None = None,
        feed: tuple = (),
        batch_size: int = 256,
        max_samples: int | None = None,
        unsafe: bool = False,
    ):
        """List every tensor, cross-reference the graph, diagnose BN statistics.

        Args:
            checkpoint: a prefix (model.ckpt), any file of it (.index, .data-*, .meta), a directory
                with a 'checkpoint' state file, a SavedModel directory, a Keras file (.keras,
                .weights.h5, sharded .weights.json, .h5) or a Keras model directory (config.json +
                model.weights.h5, as save_model(zipped=False) and the Hugging Face Hub write it).
            graph: the MetaGraphDef (.meta) or a SavedModel; for Keras weights, a .keras, model directory,
                full .h5, config .json or package.module:function factory (imported and called: this runs
                your code); default: <prefix>.meta when it exists; False: none.
            stats: compute min/max/mean/std and NaN/Inf counts per tensor (reads every value).
            match: a regular expression: list only matching tensors (the diagnosis covers all).
            format: table or json.
            report: also write the report as HDF5 to this path.
            force: overwrite an existing --report file.
            data: also check the BN statistics against data (as for repair; a dry run writes nothing):
                layers whose stored statistics are far from their input's moments are bn-stats-stale.
            input: with --data: the placeholder or model input the data feed.
            training: with --data: the boolean training switch (TF1 graphs).
            feed: with --data: NAME=VALUE constants for other placeholders.
            batch_size: with --data: samples per forward pass.
            max_samples: with --data: use only the first N samples.
            unsafe: with --data: allow Keras Lambda layers (their code runs).

        Exit code: 0 no error-level finding, 1 at least one, 2 the checkpoint could not be read.
        """
        from ckptdoctor.pipelines.inspect import inspect

        format = _fmt(format)
        extra: dict = {}
        if data is not None:
            extra = dict(
                data=str(data),
                input=None if input is None else str(input),
                training=None if training is None else str(training),
                feed=_feeds(feed),
                batch_size=int(batch_size),
                max_samples=max_samples,
                unsafe=bool(unsafe),
            )
        result = inspect(
            str(checkpoint),
            graph=graph if graph in (None, False) else str(graph),
            stats=bool(stats),
            match=None if match is None else str(match),
            **extra,
        )
        if report:
            from ckptdoctor.reports.hdf5 import write_report

            write_report(result, str(report), force=bool(force))
            print(f"report written to {report}", file=sys.stderr)
        return _render_inspect(result, format)

    def report(self, path: str, format: str = "table"):
        """Print a report stored by `inspect --report` exactly as inspect printed it.

        Args:
            path: the HDF5 report.
            format: table or json.
        """
        from ckptdoctor.reports.hdf5 import read_report

        return _render_inspect(read_report(str(path)), _fmt(format))

    def diff(self, a: str, b: str, format: str = "table"):
        """Compare two checkpoints or Keras files: tensors only in one, dtype, shape or value differences.

        Args:
            a: first checkpoint (prefix, folder, SavedModel), Keras file (.keras, .weights.h5, .weights.json,
                .h5) or Keras model directory.
            b: second one; two Keras files with model configs also differ when their configs do.
            format: table or json.

        Exit code: 0 identical, 1 different, 2 error.
        """
        from ckptdoctor.pipelines.diff import diff
        from ckptdoctor.reports.table import render_diff, to_json

        format = _fmt(format)
        result = diff(str(a), str(b))
        text = to_json(result.to_dict()) if format == "json" else render_diff(result)
        return Outcome(text, result.exit_code)

    def repair(
        self,
        checkpoint: str,
        data: str,
        graph: str | None = None,
        input: str | None = None,
        training: str | None = None,
        feed: tuple = (),
        batch_size: int = 256,
        max_samples: int | None = None,
        method: str = "train",
        output: str | None = None,
        in_place: bool = False,
        dry_run: bool = False,
        force: bool = False,
        report: str | None = None,
        format: str = "table",
        progress: bool = True,
        unsafe: bool = False,
    ):
        """Recompute BN moving mean and variance from data and write a verified new checkpoint.

        Args:
            checkpoint: the checkpoint to repair (never modified, except with --in-place after verification),
                a Keras model (model.keras, a Keras model directory, a full legacy .h5, a SavedModel directory
                written by tf-keras), or Keras weights (.weights.h5, sharded .weights.json) with --graph.
            data: X.npy, data.npz (keys = placeholder or Keras input names), FILE.h5:dataset, or FILE.h5
                (its top-level datasets, named like .npz keys).
            graph: the MetaGraphDef; default <prefix>.meta. For Keras weights (.weights.h5, .weights.json):
                the model, as a .keras, a Keras model directory, a config .json, or package.module:function,
                a factory imported from the working directory and sys.path and called (this runs your code).
            input: the placeholder the data go to (default: the only float placeholder that fits).
            training: the boolean training switch (default: found from the BN layers).
            feed: NAME=VALUE constants for other placeholders (repeatable), e.g. keep_prob=1.0.
            batch_size: samples per forward pass.
            max_samples: use only the first N samples.
            method: train (batch statistics in training mode) or sequential (layer by layer in inference mode).
            output: output prefix (default <prefix>-repaired).
            in_place: replace the input after verification, keeping a backup.
            dry_run: compute and report, write nothing.
            force: overwrite an existing output.
            report: also write an HDF5 file with per-layer before/after arrays.
            format: table or json.
            progress: show a progress bar on stderr.
            unsafe: Keras models only: allow Lambda layers, whose Python code runs when the model loads.

        Exit code: 0 repaired (or dry run), 1 refused (the repair would not bring the inference outputs closer
        to the reference; nothing written), 2 error.
        """
        from ckptdoctor.pipelines.repair import repair
        from ckptdoctor.reports.table import render_repair, to_json

        format = _fmt(format)
        result = repair(
            str(checkpoint),
            str(data),
            graph=None if graph is None else str(graph),
            input=None if input is None else str(input),
            training=None if training is None else str(training),
            feed=_feeds(feed),
            batch_size=int(batch_size),
            max_samples=None if max_samples is None else int(max_samples),
            method=str(method),
            output=None if output is None else str(output),
            in_place=bool(in_place),
            dry_run=bool(dry_run),
            force=bool(force),
            report=None if report is None else str(report),
            progress=bool(progress),
            unsafe=bool(unsafe),
        )
        text = to_json(result.to_dict()) if format == "json" else render_repair(result)
        return Outcome(text, result.exit_code)


def _check_options(argv: list[str]) -> list[str]:
    """Unknown ``--options`` are one-line errors (fire would print its usage screen); ``--no-x`` means ``--x=False``."""
    import inspect as _inspect

    from ckptdoctor.errors import CkptDoctorError

    if not argv or argv[0].startswith("-") or not hasattr(Commands, argv[0]):
        return argv
    params = _inspect.signature(getattr(Commands, argv[0])).parameters
    known = {name for name in params if name != "self"}
    flags = {name for name, p in params.items() if isinstance(p.default, bool)}
    out = []
    for arg in argv:
        if not arg.startswith("--") or arg in ("--help", "--"):
            out.append(arg)
            continue
        name = arg[2:].split("=", 1)[0].replace("-", "_")
        if name.startswith("no_") and name[3:] in flags and "=" not in arg:
            out.append(f"--{name[3:]}=False")
            continue
        if name in known or (name.startswith("no") and name[2:] in flags):
            out.append(arg)
            continue
        options = ", ".join("--" + n.replace("_", "-") for n in params if n != "self")
        raise CkptDoctorError(f"unknown option {arg.split('=', 1)[0]} for {argv[0]}: its options are {options}")
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ckptdoctor`` console script."""
    import fire

    from ckptdoctor.errors import CkptDoctorError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        argv = _check_options(argv)
        result = fire.Fire(Commands, command=argv, name="ckptdoctor")
    except fire.core.FireExit as e:
        return int(e.code or 0)
    except CkptDoctorError as e:
        if debug:
            raise
        print(f"ckptdoctor: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ckptdoctor: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): not an error of ours to report
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 1
    except Exception as e:  # the CLI boundary: a bug must still not print a traceback
        if debug:
            raise
        print(
            f"ckptdoctor: internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
            "(rerun with --debug for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 2
    return result.exit_code if isinstance(result, Outcome) else 0


if __name__ == "__main__":
    sys.exit(main())
