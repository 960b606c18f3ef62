"""The command line follows the conventions: --help and --version, one-line errors, output for terminals and pipes.

Everything runs the real ``ckptdoctor`` entry point in a subprocess; the terminal case runs it on a real
pseudo-terminal (``pty``) of a known size.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLES, assert_one_line_error, cli_command, run_cli

import ckptdoctor
from ckptdoctor.cli import COMMANDS, Commands

ANSI = re.compile(r"\x1b\[[0-9;]*m")
SAVER_ADVICE = "save with a Saver over all global variables"


def summary(command: str) -> str:
    return (getattr(Commands, command).__doc__ or "").strip().splitlines()[0]


# --------------------------------------------------------------------------------------------- help, version


@pytest.mark.parametrize("args", [["--help"], ["-h"], []])
def test_help_lists_every_command_with_its_summary(args):
    proc = run_cli(*args)
    assert proc.returncode == 0 and not proc.stderr
    text = " ".join(proc.stdout.split())  # the summaries may wrap
    assert set(COMMANDS) == {"inspect", "repair", "diff", "report"}
    for command in COMMANDS:
        assert re.search(rf"^  {command} ", proc.stdout, re.M), command
        assert f"{command} {summary(command)}" in text
    assert "SYNOPSIS" not in proc.stdout and "--version" in proc.stdout


def test_version_prints_the_version():
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout == f"ckptdoctor {ckptdoctor.__version__}\n"


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_help_has_usage_options_and_an_example(command):
    import inspect

    proc = run_cli(command, "--help")
    assert proc.returncode == 0 and not proc.stderr
    out = proc.stdout
    assert out.startswith(f"usage: ckptdoctor {command} ") and summary(command) in " ".join(out.split())
    examples = re.findall(rf"^  ckptdoctor {command} \S.*$", out, re.M)
    assert examples and re.search(r"^examples?:$", out, re.M)
    params = [p for p in inspect.signature(getattr(Commands, command)).parameters if p != "self"]
    for name in params:  # every option, spelled as the command line takes it
        assert f"--{name.replace('_', '-')}" in out or name.upper() in out, name
    assert run_cli("help", command).stdout == out
    # The exit codes: one paragraph, however the docstring wraps it.
    doc = inspect.cleandoc(getattr(Commands, command).__doc__)
    said = [" ".join(p.split()) for p in doc.split("\n\n") if p.startswith("Exit code:")]
    shown = [" ".join(p.split()) for p in out.split("\n\n") if p.startswith("Exit code:")]
    assert shown == said


def test_inspect_help_names_the_html_report():
    out = " ".join(run_cli("inspect", "--help").stdout.split())
    assert "--report FILE" in out and "FILE.html a self-contained page with charts" in out


# --------------------------------------------------------------------------------------------- one-line errors


def test_bad_command_lines_are_one_line_errors(tmp_path):
    assert_one_line_error(run_cli("frobnicate"), "unknown command 'frobnicate'", "inspect, repair, diff, report")
    assert_one_line_error(run_cli("--frobnicate"), "unknown option '--frobnicate'")
    assert_one_line_error(run_cli("inspect"), "inspect needs CHECKPOINT", "ckptdoctor inspect --help")
    assert_one_line_error(run_cli("diff", SAMPLES / "seed"), "diff needs B")
    assert_one_line_error(run_cli("repair", SAMPLES / "seed"), "repair needs DATA")
    assert_one_line_error(run_cli("inspect", SAMPLES / "seed", "--frob"), "unknown option --frob for inspect")
    assert_one_line_error(
        run_cli("inspect", SAMPLES / "seed", "--data", SAMPLES / "seed" / "X.npy", "--batch-size", "many"),
        "--batch-size must be a whole number, received 'many'",
    )


def test_a_switch_never_takes_the_next_argument_as_its_value(tmp_path):
    # fire alone would read `--force PATH` as force=PATH and then miss the checkpoint.
    out = tmp_path / "r.h5"
    proc = run_cli("inspect", "--graph", "False", "--report", out, "--force", SAMPLES / "seed-no-update")
    assert proc.returncode == 1 and out.exists()
    proc = run_cli("inspect", SAMPLES / "seed-no-update", "--graph", "False", "--stats", "False")
    assert "statistics not computed" in proc.stdout


# --------------------------------------------------------------------------------------------- table output


def findings_section(stdout: str) -> list[str]:
    return stdout.split("\nFINDINGS:", 1)[1].splitlines()[1:]


def test_advice_is_said_once_per_code_with_the_tensors_under_it():
    proc = run_cli("inspect", SAMPLES / "seed-trainables")
    assert proc.returncode == 1
    assert proc.stdout.count(SAVER_ADVICE) == 1
    lines = findings_section(proc.stdout)
    block = lines[: next(i for i, line in enumerate(lines) if not line.strip())]
    assert block[0].startswith("error bn-stats-missing (6): ")
    listed = [line for line in block if line.startswith("  - ")]
    assert len(listed) == 6
    for layer in ("batch_normalization", "batch_normalization_1", "batch_normalization_2"):
        for stat in ("moving_mean", "moving_variance"):
            assert sum(line.endswith(f" {layer}/{stat}") for line in listed) == 1
    # The JSON keeps one whole message per finding, as before.
    doc = json.loads(run_cli("inspect", SAMPLES / "seed-trainables", "--format", "json").stdout)
    missing = [f for f in doc["findings"] if f["code"] == "bn-stats-missing"]
    assert len(missing) == 6 and all(SAVER_ADVICE in f["message"] for f in missing)
    assert set(doc) == {"checkpoint", "format", "graph", "tensors", "bn_layers", "findings", "summary", "notes"}
    assert set(missing[0]) == {"code", "severity", "layer", "tensor", "message"}


@pytest.mark.parametrize("columns", [60, 150])
def test_piped_output_wraps_at_COLUMNS_without_colour(columns):
    env = dict(os.environ, COLUMNS=str(columns))
    proc = run_cli("inspect", SAMPLES / "seed-trainables", env=env)
    assert "\x1b[" not in proc.stdout
    prose = findings_section(proc.stdout)
    assert max(len(line) for line in prose) <= columns
    assert (max(len(line) for line in prose) > 80) == (columns > 80)


def run_on_terminal(args, columns: int, env: dict) -> str:
    """The CLI's stdout when stdout is a terminal of ``columns`` columns (a real pseudo-terminal)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen(cli_command() + [str(a) for a in args], stdout=slave, stderr=subprocess.PIPE, env=env)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(master)
    return b"".join(chunks).decode("utf-8").replace("\r\n", "\n")


def test_a_terminal_gets_colour_and_its_own_width():
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env["TERM"] = "xterm-256color"
    out = run_on_terminal(["inspect", SAMPLES / "seed-trainables"], 132, env)
    assert "\x1b[1;31merror\x1b[0m" in out and "\x1b[31mmissing\x1b[0m" in out
    prose = [ANSI.sub("", line) for line in findings_section(out)]
    assert 80 < max(len(line) for line in prose) <= 132
    plain = run_on_terminal(["inspect", SAMPLES / "seed-trainables"], 132, dict(env, NO_COLOR="1"))
    assert "\x1b[" not in plain and ANSI.sub("", out) == plain


def test_long_tensor_tables_show_a_count_and_point_to_match(resnet_keras):
    model = [resnet_keras / "model.keras", "--graph", "False", "--stats=False"]  # the file alone: no Keras, fast
    doc = json.loads(run_cli("inspect", *model, "--format", "json").stdout)
    total = len(doc["tensors"])
    assert total > 100  # the JSON lists every tensor, as before
    out = run_cli("inspect", *model).stdout
    assert f"TENSORS ({total}: too many to list; --match REGEX lists the matching ones" in out
    assert "--match . lists them all" in out
    names = [t["name"] for t in doc["tensors"]]
    assert not [n for n in names if re.search(rf"^{re.escape(n)}\s", out, re.M)]  # no tensor row
    matched = run_cli("inspect", *model, "--match", "vars/2$").stdout
    rows = [n for n in names if n.endswith("vars/2") and re.search(rf"^{re.escape(n)}\s", matched, re.M)]
    assert rows and f"TENSORS ({len(rows)} of {total} match)" in matched
    everything = run_cli("inspect", *model, "--match", ".").stdout
    assert all(re.search(rf"^{re.escape(n)}\s", everything, re.M) for n in names)


# --------------------------------------------------------------------------------------------- the demo


@pytest.mark.skipif(not shutil.which("make"), reason="no make")
@pytest.mark.slow  # breadth: make test-slow runs it, for make test's time
def test_make_demo_reads_as_a_story(tmp_path):
    """``make demo`` with this environment: no make error noise, inspect's exit 1 said in words, the reports named."""
    venv = Path(sys.prefix)
    out = tmp_path / "demo"
    cmd = ["make", "--no-print-directory", "-o", f"{venv}/.installed", "demo", f"VENV={venv}", f"DEMO_OUT={out}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    text = proc.stdout + proc.stderr
    assert "make:" not in text and "Error" not in text and "(ignored)" not in text
    assert text.count("-> exit code 1, as expected") == 2
    assert "inference-mode error 3.85e-05 (1x)" in proc.stdout  # the repaired checkpoint, restored
    tail = proc.stdout.rstrip().splitlines()[-2:]
    assert [line.split()[0] for line in tail] == [str(out / "seed-inspect.html"), str(out / "seed-repair.html")]
    for name in ("seed-inspect.html", "seed-repair.html"):
        assert (out / name).read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
