"""Fail when a function or method of the package is longer than a reader holds in one sitting.

Usage: ``python tools/check_lengths.py [--max 120] [PATH ...]`` (default: ``ckptdoctor``).
Lines are counted from the ``def`` (decorators excluded) to the last line of the body,
docstring included. Run by ``make check``.
"""

from __future__ import annotations

import argparse
import ast
import pathlib
import sys


def long_functions(paths: list[str], limit: int) -> list[tuple[str, int, str, int]]:
    """``(file, line, name, length)`` of every function longer than ``limit`` lines."""
    found = []
    for root in paths:
        for file in sorted(pathlib.Path(root).rglob("*.py")):
            tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = (node.end_lineno or node.lineno) - node.lineno + 1
                    if length > limit:
                        found.append((str(file), node.lineno, node.name, length))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", default=["ckptdoctor"])
    parser.add_argument("--max", type=int, default=120)
    args = parser.parse_args()
    found = long_functions(args.paths, args.max)
    for file, line, name, length in found:
        print(f"{file}:{line}: {name} is {length} lines (at most {args.max}): split it")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
