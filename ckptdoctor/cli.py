"""The command line: a thin python-fire layer that calls the library and renders its reports.

Exit codes: 0 nothing wrong, 1 an error-level finding (or checkpoints differ),
2 the tool could not do its job (one line on stderr; ``--debug`` for the traceback).

python-fire dispatches the commands; ``main`` answers what fire answers badly itself:
``--help`` (the commands with their summaries; a command's usage, options and example,
from its docstring), ``--version``, an unknown command or option, a missing argument
(one line, exit 2).
"""

from __future__ import annotations

import gc
import os
import re
import sys
import types

__all__ = ["Commands", "main"]


class Outcome:
    """What a command prints, the process's exit code, and lines for stderr after the output.

    The text is one string or an iterable of pieces (a large JSON listing, written as it is
    encoded); ``main`` writes it (``emit``), ``__str__`` joins it.
    """

    def __init__(self, text, exit_code: int, after: tuple[str, ...] = ()):
        self.text = text
        self.exit_code = exit_code
        self.after = after

    def __str__(self) -> str:
        return self.text if isinstance(self.text, str) else "".join(self.text).rstrip("\n")

    def emit(self, out) -> None:
        """Write the text and a newline to ``out`` (piece by piece when it comes in pieces)."""
        if isinstance(self.text, str):
            out.write(self.text + "\n")
            return
        for piece in self.text:
            out.write(piece)


def _serialize(result):
    """fire's ``serialize``: an ``Outcome`` writes itself (and fire prints nothing more); the rest as fire does."""
    if isinstance(result, Outcome):
        result.emit(sys.stdout)
        return None
    return result


def _fmt(format: str) -> str:
    format = str(format).lower()
    if format not in ("table", "json"):
        from ckptdoctor.errors import CkptDoctorError

        raise CkptDoctorError(f"--format must be table or json, received {format!r}")
    return format


def _colour() -> bool:
    """Colour only on a terminal, and not when ``NO_COLOR`` is set (https://no-color.org) or ``TERM=dumb``."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def _render_inspect(report, format, after: tuple[str, ...] = ()):
    from ckptdoctor.reports.table import iter_inspect, iter_json

    text = iter_json(report.json_items()) if format == "json" else iter_inspect(report, colour=_colour())
    return Outcome(text, report.exit_code, after)


def _int(value, option: str, allow_none: bool = False):
    """An integer option, or a one-line error naming it."""
    if value is None and allow_none:
        return None
    try:
        if isinstance(value, bool) or float(value) != int(float(value)):
            raise ValueError(value)
        return int(float(value))
    except (TypeError, ValueError):
        from ckptdoctor.errors import CkptDoctorError

        raise CkptDoctorError(f"--{option} must be a whole number, received {value!r}") from None


def _jobs(jobs) -> int | None:
    """``--jobs``: a positive number, or None (the cores the process may use)."""
    from ckptdoctor.errors import CkptDoctorError

    jobs = _int(jobs, "jobs", allow_none=True)
    if jobs is not None and jobs < 1:
        raise CkptDoctorError(f"--jobs must be 1 or more, received {jobs}")
    return jobs


def _refuse_existing(report, force) -> None:
    """An existing --report file without --force is refused before any work."""
    if report and os.path.exists(str(report)) and not force:
        from ckptdoctor.errors import OutputExistsError

        raise OutputExistsError(f"{report} exists: pass --force to overwrite it, or choose another --report path")


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
        batch_size: int | None = None,
        max_samples: int | None = None,
        unsafe: bool = False,
        compression: str | None = None,
        resize: bool = True,
        jobs: int | None = None,
    ):
        """List every tensor, cross-reference the graph, diagnose BN statistics.

        Args:
            checkpoint: a prefix (model.ckpt), any file of it (.index, .data-*, .meta), a directory
                with a 'checkpoint' state file, a SavedModel directory, a Keras file (.keras,
                .weights.h5, sharded .weights.json, .h5) or a Keras model directory (config.json +
                model.weights.h5, as save_model(zipped=False) and the Hugging Face Hub write it).
            graph: the MetaGraphDef (.meta) or a SavedModel; for a TF2 checkpoint or Keras weights, the model:
                a .keras, model directory, full .h5, config .json or package.module:function factory (imported
                and called: this runs your code); default: <prefix>.meta when it exists; False: none.
            stats: compute min/max/mean/std and NaN/Inf counts per tensor (reads every value).
            match: a regular expression: list only matching tensors (the diagnosis covers all).
            format: table or json.
            report: also write the report to this file: FILE.html a self-contained page with charts (opens offline),
                any other name HDF5 (read back by `ckptdoctor report`).
            force: overwrite an existing --report file.
            data: also check the BN statistics against data (as for repair; a dry run writes nothing):
                layers whose stored statistics are far from their input's moments are bn-stats-stale.
                Any form repair takes; package.module:function runs your code.
            input: with --data: the placeholder or model input the data feed (TFRecord: NAME=FEATURE too).
            training: with --data: the boolean training switch (TF1 graphs).
            feed: with --data: NAME=VALUE constants for other placeholders.
            batch_size: with --data: samples per forward pass (default 256; a function's batches as they come).
            max_samples: with --data: use only the first N samples.
            unsafe: with --data: allow Keras Lambda layers (their code runs).
            compression: with TFRecord --data: GZIP, ZLIB or NONE (default: by the files' extension).
            resize: with an image --data: resize images to the model input (bilinear); False refuses other sizes.
            jobs: tensors whose statistics are computed at once (threads); default: the cores this process may
                use. The statistics are the same whatever it is.

        Exit code: 0 no error-level finding, 1 at least one, 2 the checkpoint could not be read.

        Examples:
            ckptdoctor inspect sample_ckpts/seed-trainables --match moving --report seed.html
            ckptdoctor inspect model.keras --data X.npy --format json
        """
        from ckptdoctor.pipelines.inspect import inspect

        format = _fmt(format)
        _refuse_existing(report, force)
        extra: dict = {}
        if data is None:
            _collector_not_needed()
        else:
            extra = dict(
                data=str(data),
                input=None if input is None else str(input),
                training=None if training is None else str(training),
                feed=_feeds(feed),
                batch_size=_int(batch_size, "batch-size", allow_none=True),
                max_samples=_int(max_samples, "max-samples", allow_none=True),
                unsafe=bool(unsafe),
                compression=None if compression is None else str(compression),
                resize=bool(resize),
            )
        result = inspect(
            str(checkpoint),
            graph=graph if graph in (None, False) else str(graph),
            stats=bool(stats),
            match=None if match is None else str(match),
            jobs=_jobs(jobs),
            **extra,
        )
        if report:
            from ckptdoctor.reports import write_report

            write_report(result, str(report), force=bool(force))
        return _render_inspect(result, format, (f"report written to {report}",) if report else ())

    def report(self, path: str, format: str = "table"):
        """Print a report stored by `inspect --report FILE.h5` exactly as inspect printed it.

        Args:
            path: the HDF5 report.
            format: table or json.

        Example:
            ckptdoctor report seed.h5 --format json
        """
        from ckptdoctor.reports.hdf5 import read_report

        _collector_not_needed()
        return _render_inspect(read_report(str(path)), _fmt(format))

    def diff(self, a: str, b: str, format: str = "table"):
        """Compare two checkpoints or Keras files: tensors only in one, dtype, shape or value differences.

        Args:
            a: first checkpoint (prefix, folder, SavedModel), Keras file (.keras, .weights.h5, .weights.json,
                .h5) or Keras model directory.
            b: second one; two Keras files with model configs also differ when their configs do.
            format: table or json.

        Exit code: 0 identical, 1 different, 2 error.

        Example:
            ckptdoctor diff model.keras model-repaired.keras
        """
        from ckptdoctor.pipelines.diff import diff
        from ckptdoctor.reports.table import render_diff, to_json

        format = _fmt(format)
        _collector_not_needed()
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
        batch_size: int | None = None,
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
        compression: str | None = None,
        resize: bool = True,
    ):
        """Recompute BN moving mean and variance from data and write a verified new checkpoint.

        Args:
            checkpoint: the checkpoint to repair (never modified, except with --in-place after verification),
                a Keras model (model.keras, a Keras model directory, a full legacy .h5, a SavedModel directory
                written by tf-keras), or Keras weights (.weights.h5, sharded .weights.json) with --graph.
            data: X.npy, data.npz (keys = placeholder or Keras input names), FILE.h5:dataset, FILE.h5
                (its top-level datasets, named like .npz keys); a folder of images (PNG, JPEG, BMP, GIF, class
                subfolders allowed; float32 0-255, as Keras loads them); TFRecord files of tf.train.Example (a
                file, a glob, or a folder of *.tfrecord*; features named like the inputs); or
                package.module:function, imported from the working directory and sys.path and called: this runs
                your code; it returns a tf.data.Dataset, an array, a dict of arrays or an iterable of batches.
            graph: the MetaGraphDef; default <prefix>.meta. For a TF2 checkpoint (tf.train.Checkpoint,
                CheckpointManager) or Keras weights (.weights.h5, .weights.json): the model, as a .keras, a
                Keras model directory, a config .json, or package.module:function, a factory imported from the
                working directory and sys.path and called (this runs your code).
            input: the placeholder the data go to (default: the only float placeholder that fits); TFRecord
                data: NAME=FEATURE (comma-separated) reads input NAME from feature FEATURE.
            training: the boolean training switch (default: found from the BN layers).
            feed: NAME=VALUE constants for other placeholders (repeatable), e.g. keep_prob=1.0.
            batch_size: samples per forward pass (default 256; a function's batches are used as they come).
            max_samples: use only the first N samples.
            method: train (batch statistics in training mode) or sequential (layer by layer in inference mode).
            output: output prefix (default <prefix>-repaired).
            in_place: replace the input after verification, keeping a backup.
            dry_run: compute and report, write nothing.
            force: overwrite an existing output.
            report: also write a report: FILE.html a self-contained page with charts of what changed per layer,
                any other name HDF5 with the per-layer before/after arrays. A refused repair writes none.
            format: table or json.
            progress: show progress on stderr (samples/s, ETA) when it is a terminal and --format is table.
            unsafe: Keras models only: allow Lambda layers, whose Python code runs when the model loads.
            compression: TFRecord data: GZIP, ZLIB or NONE (default: by the files' extension, .gz or .zlib).
            resize: image data: resize images to the model input's size (bilinear); False refuses other sizes.

        Exit code: 0 repaired (or dry run), 1 refused (the repair would not bring the inference outputs closer
        to the reference; nothing written), 2 error.

        Examples:
            ckptdoctor repair sample_ckpts/seed --data sample_ckpts/seed/X.npy --output fixed/seed --report repair.html
            ckptdoctor repair model.keras --data X.npy --dry-run
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
            batch_size=_int(batch_size, "batch-size", allow_none=True),
            max_samples=_int(max_samples, "max-samples", allow_none=True),
            method=str(method),
            output=None if output is None else str(output),
            in_place=bool(in_place),
            dry_run=bool(dry_run),
            force=bool(force),
            report=None if report is None else str(report),
            progress=bool(progress) and format != "json",
            unsafe=bool(unsafe),
            compression=None if compression is None else str(compression),
            resize=bool(resize),
        )
        text = to_json(result.to_dict()) if format == "json" else render_repair(result)
        return Outcome(
            text, result.exit_code, (f"report written to {report}",) if report and not result.refused else ()
        )


#: The commands, in the order a user meets them.
COMMANDS = ("inspect", "repair", "diff", "report")

#: What an option's value is, in the help (default: the option's name in capitals).
_METAVARS = {
    "match": "REGEX",
    "format": "table|json",
    "report": "FILE",
    "data": "FILE",
    "feed": "NAME=VALUE",
    "input": "NAME",
    "training": "NAME",
    "batch_size": "N",
    "max_samples": "N",
    "compression": "GZIP|ZLIB|NONE",
    "jobs": "N",
    "method": "train|sequential",
    "output": "PATH",
    "graph": "GRAPH",
}


def _params(command: str) -> dict:
    import inspect as _inspect

    return {n: p for n, p in _inspect.signature(getattr(Commands, command)).parameters.items() if n != "self"}


def _doc(command: str) -> dict:
    """A command's docstring in parts: ``summary``, ``args`` (name -> text), ``paragraphs``, ``examples``."""
    import inspect as _inspect

    lines = _inspect.cleandoc(getattr(Commands, command).__doc__ or "").splitlines()
    doc: dict = {"summary": lines[0].strip() if lines else "", "args": {}, "paragraphs": [], "examples": []}
    section, arg = "", ""
    for line in lines[1:]:
        if not line.strip():
            section = "" if section not in ("args", "examples") else section
            continue
        if not line.startswith(" "):
            head = line.strip()
            if section == "text":  # the paragraph goes on
                doc["paragraphs"][-1] += " " + head
                continue
            section = {"Args:": "args", "Example:": "examples", "Examples:": "examples"}.get(head, "text")
            if section == "text":
                doc["paragraphs"].append(head)
            continue
        if section == "args":
            m = re.match(r"^    (\w+): (.*)$", line)
            if m:
                arg = m.group(1)
                doc["args"][arg] = m.group(2).strip()
            elif arg:
                doc["args"][arg] += " " + line.strip()
        elif section == "examples":
            doc["examples"].append(line.strip())
        elif doc["paragraphs"]:
            doc["paragraphs"][-1] += " " + line.strip()
    return doc


def _help_width() -> int:
    from ckptdoctor.reports.table import terminal_width

    return min(terminal_width(), 100)


def _two_columns(rows: list[tuple[str, str]], width: int) -> list[str]:
    import textwrap

    col = min(max((len(left) for left, _ in rows), default=0) + 4, 30)
    out = []
    for left, right in rows:
        text = textwrap.wrap(right, max(20, width - col), break_on_hyphens=False) or [""]
        if len(left) + 4 > col:
            out.append("  " + left)
            out += [" " * col + t for t in text]
        else:
            out.append(("  " + left).ljust(col) + text[0])
            out += [" " * col + t for t in text[1:]]
    return out


def top_help() -> str:
    """``ckptdoctor --help``: the commands with their one-line summaries."""
    from ckptdoctor.constants import VERSION

    width = _help_width()
    lines = [
        f"ckptdoctor {VERSION}: {(Commands.__doc__ or '').strip()}",
        "",
        "usage: ckptdoctor COMMAND ARGUMENTS [--options]",
        "",
        "commands:",
        *_two_columns([(c, _doc(c)["summary"]) for c in COMMANDS], width),
        "",
        "options:",
        *_two_columns(
            [
                ("--help, -h", "this help; `ckptdoctor COMMAND --help`: the command's options and an example"),
                ("--version", "print the version"),
                ("--debug", "on an error, show the traceback"),
            ],
            width,
        ),
        "",
        "Exit codes: 0 nothing wrong, 1 an error-level finding (diff: different; repair: refused, nothing written), "
        "2 the tool could not do its job (one line on stderr).",
        "",
        "example:",
        "  ckptdoctor inspect model.ckpt --report model.html",
    ]
    return "\n".join(_rewrap(lines, width))


def _rewrap(lines: list[str], width: int) -> list[str]:
    import textwrap

    out = []
    for line in lines:
        out += [line] if line.startswith(" ") or len(line) <= width else textwrap.wrap(line, width)
    return out


def command_help(command: str) -> str:
    """``ckptdoctor COMMAND --help``: usage, summary, arguments, options with defaults, exit codes, examples."""
    width = _help_width()
    doc, params = _doc(command), _params(command)
    required = [n for n, p in params.items() if p.default is p.empty]
    usage = f"usage: ckptdoctor {command} {' '.join(n.upper() for n in required)} [options]"
    options = []
    for name, p in params.items():
        if name in required:
            continue
        flag = "--" + name.replace("_", "-")
        text = doc["args"].get(name, "")
        if isinstance(p.default, bool):
            left = f"{flag}, --no-{flag[2:]}" if p.default else flag
            text = _with_default(text, "on") if p.default else text
        else:
            left = f"{flag} {_METAVARS.get(name, name.upper())}"
            if p.default not in (None, ()):
                text = _with_default(text, p.default)
        options.append((left, text))
    lines = [usage, "", doc["summary"], "", "arguments:"]
    lines += _two_columns([(n.upper(), doc["args"].get(n, "")) for n in required], width)
    lines += ["", "options:", *_two_columns(options + [("--help, -h", "this help")], width), ""]
    for paragraph in doc["paragraphs"]:
        lines += [paragraph, ""]
    lines += ["example:" if len(doc["examples"]) == 1 else "examples:"] + ["  " + e for e in doc["examples"]]
    return "\n".join(_rewrap(lines, width))


def _with_default(text: str, default) -> str:
    return f"{text.rstrip('.')} (default: {default})."


def _is_flag(arg: str) -> bool:
    """What fire takes for a flag (a negative number is a value)."""
    return arg.startswith("--") or bool(re.match(r"^-[a-zA-Z]", arg))


def _check_options(argv: list[str]) -> list[str]:
    """The command line as fire will take it, or a one-line error.

    Unknown ``--options`` and missing arguments are one-line errors (fire would print its usage
    screen); ``--no-x`` means ``--x=False``; a switch given without a value (``--force``) is
    ``--force=True``, so that it never takes the next argument as its value.
    """
    from ckptdoctor.errors import CkptDoctorError

    if not argv or argv[0].startswith("-") or not hasattr(Commands, argv[0]):
        return argv
    command, params = argv[0], _params(argv[0])
    flags = {name for name, p in params.items() if isinstance(p.default, bool)}
    out, positional, named = [command], 0, set()
    rest = argv[1:]
    i = 0
    while i < len(rest):
        arg, following = rest[i], rest[i + 1] if i + 1 < len(rest) else None
        i += 1
        if arg == "--":  # fire's own flags follow
            out += rest[i - 1 :]
            break
        if not arg.startswith("--"):
            out.append(arg)
            positional += not _is_flag(arg)
            continue
        name = arg[2:].split("=", 1)[0].replace("-", "_")
        if name.startswith("no_") and name[3:] in flags and "=" not in arg:
            out.append(f"--{name[3:]}=False")
        elif name in flags and "=" not in arg:  # --force, --stats False
            takes = following is not None and following.lower() in ("true", "false")
            out.append(f"--{name}={following.capitalize() if following is not None and takes else True}")
            i += takes
        elif name in params or (name.startswith("no") and name[2:] in flags):
            out.append(arg)
            named.add(name)
            if "=" not in arg and following is not None and not name.startswith("no"):
                out.append(following)  # --match moving: the next argument is the value
                i += 1
        else:
            options = ", ".join("--" + n.replace("_", "-") for n in params)
            raise CkptDoctorError(f"unknown option {arg.split('=', 1)[0]} for {command}: its options are {options}")
    required = [n for n, p in params.items() if p.default is p.empty and n not in named]
    if positional < len(required):
        missing = " and ".join(n.upper() for n in required[positional:])
        raise CkptDoctorError(
            f"{command} needs {missing}: ckptdoctor {command} {' '.join(n.upper() for n in required)} [options] "
            f"(ckptdoctor {command} --help)"
        )
    return out


def _early_answer(argv: list[str]) -> str | None:
    """The text of ``--help`` and ``--version`` (answered without fire), or None for a command to run.

    Raises:
        CkptDoctorError: an unknown command or top-level option.
    """
    from ckptdoctor.errors import CkptDoctorError

    head = argv[: argv.index("--")] if "--" in argv else argv
    if not argv or argv[0] in ("--help", "-h", "help"):
        if len(argv) > 1 and argv[1] in COMMANDS:
            return command_help(argv[1])
        return top_help()
    if argv[0] in ("--version", "-V"):
        from ckptdoctor.constants import VERSION

        return f"ckptdoctor {VERSION}"
    if argv[0] not in COMMANDS:
        what = "option" if argv[0].startswith("-") else "command"
        raise CkptDoctorError(
            f"unknown {what} {argv[0]!r}: the commands are {', '.join(COMMANDS)} (ckptdoctor --help lists them)"
        )
    if "--help" in head or "-h" in head:
        return command_help(argv[0])
    return None


class _AsyncioOnDemand(types.ModuleType):
    """What fire sees as ``asyncio`` while it is imported (``_import_fire``).

    fire imports asyncio (and with it ssl, logging and concurrent.futures: 80 ms of a 0.5 s
    listing on a 2.5 GHz core) only to ask, before each call, whether the command is a
    coroutine function, and to run one if it is. This answers that question as asyncio does
    for functions (``inspect.iscoroutinefunction``: Python 3.11's asyncio adds only the
    generator-based coroutines it no longer makes); anything else fire asks of it imports
    the real asyncio then and hands over.
    """

    @staticmethod
    def iscoroutinefunction(fn) -> bool:
        import inspect

        return inspect.iscoroutinefunction(fn)

    def __getattr__(self, name: str):
        import importlib

        return getattr(importlib.import_module("asyncio"), name)


def _import_fire():
    """``fire``, imported without importing asyncio (``_AsyncioOnDemand``); the process's own ``import asyncio``
    still gets the real module: the stand-in is in ``sys.modules`` only while fire is imported."""
    if "fire" in sys.modules or "asyncio" in sys.modules:
        import fire

        return fire
    sys.modules["asyncio"] = _AsyncioOnDemand("asyncio")
    try:
        import fire
    finally:
        del sys.modules["asyncio"]
    return fire


#: Set by ``main(owns_process=True)``: the process ends once the command's output is written.
_owns_process = False


def _collector_not_needed() -> None:
    """Turn the garbage collector off for the rest of the process, when ``main`` owns it (``run``).

    For commands that read checkpoints and write reports, without TensorFlow's work: they make an
    object or more per tensor (the index, the object graph, the rows) and no cyclic garbage worth
    collecting, and each collection walks every one made so far (on 100,000 tensors, 0.06 s of a 0.6 s
    listing, by hand). The statistics pass of 100,000 tensors peaked at the same memory with it off.
    Not with ``--data``: the dry-run repair's TensorFlow and Keras objects need it.
    """
    if _owns_process:
        gc.disable()


def main(argv: list[str] | None = None, owns_process: bool = False) -> int:
    """Entry point of the ``ckptdoctor`` console script.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
        owns_process: the process ends when ``main`` returns (``run``): commands that need no garbage
            collection turn it off (``_collector_not_needed``), and it is not turned on again.
    """
    fire = _import_fire()

    from ckptdoctor.errors import CkptDoctorError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        answer = _early_answer(argv)
        if answer is not None:
            print(answer)
            return 0
        argv = _check_options(argv)
        global _owns_process
        _owns_process = owns_process
        result = fire.Fire(Commands, command=argv, name="ckptdoctor", serialize=_serialize)
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
    if isinstance(result, Outcome):
        for line in result.after:  # after the output, so that it reads last on a terminal
            print(line, file=sys.stderr)
        return result.exit_code
    return 0


def run() -> None:
    """Entry point of the ``ckptdoctor`` console script and of ``python -m ckptdoctor``: ``main``, then exit.

    Once TensorFlow is imported, the process ends with ``os._exit`` after stdout and stderr are flushed. Python's
    own exit would take TensorFlow's and Keras' objects down one by one (part of the repair's time in
    BENCHMARKS.md D7), with nothing of ours left to do: ``main`` returns only once every output was written,
    verified and renamed, and every file closed. Without TensorFlow the exit is Python's own.
    """
    code = main(owns_process=True)
    if sys.modules.get("tensorflow") is None:
        sys.exit(code)
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (`| head`), as main answers it
        code = code or 1
    try:
        sys.stderr.flush()
    except OSError:
        pass  # stderr closed: nothing more can be said
    os._exit(code)


if __name__ == "__main__":
    run()
