"""List functions longer than 60 lines in the project's Python packages, unless a comment gives the reason.

    .venv/bin/python bin/long_functions.py            # the default areas below (bin/test runs this)
    .venv/bin/python bin/long_functions.py FILE ...   # any files

A function's length is `end_lineno - lineno + 1` (signature, docstring and body). A comment containing
"long:" on the lines just above it or on its first lines is its reason. Exit status 1 when one is listed.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LIMIT = 60
ROOT = Path(__file__).resolve().parent.parent
AREAS = [f"{package}/**/*.py" for package in ("accounts", "billing", "api", "atelier", "orchestration")]


def long_functions(path: Path) -> list[str]:
    """`path:line name length` for each function over LIMIT lines without a reason."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.end_lineno is None:
            continue
        length = node.end_lineno - node.lineno + 1
        first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
        if length > LIMIT and not any("long:" in line for line in lines[max(0, first - 4) : node.lineno + 2]):
            shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            found.append(f"{shown}:{node.lineno} {node.name} {length} lines")
    return found


def default_paths() -> list[Path]:
    """Every module of AREAS, sorted."""
    return sorted({p for area in AREAS for p in ROOT.glob(area)})


def main(argv: list[str]) -> int:
    paths = [Path(a).resolve() for a in argv] or default_paths()
    found = [line for path in paths for line in long_functions(path)]
    print("\n".join(found) if found else f"No function over {LIMIT} lines without a reason.")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
