"""Execute every analysis notebook headlessly; fail if any cell errors.

Usage::

    python -m analysis.run_notebooks [--results DIR] [--timeout 120] [--inplace] [NOTEBOOK ...]

Why: notebooks rot silently when the loader or the results change. CI and ``tests/test_analysis.py`` run this
on the committed ``results/`` (which may hold no runs of ours yet: each notebook must then show the paper's
values and say "not yet run"). Outputs are discarded unless ``--inplace`` is given, because notebooks are
committed without outputs; figures land in ``analysis/figures/`` either way.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

HERE = Path(__file__).resolve().parent
NOTEBOOKS = sorted(HERE.glob("*.ipynb"))


def execute(path: Path, results_dir: Path | None = None, timeout: int = 120, inplace: bool = False) -> float:
    """Run one notebook in a fresh ``python3`` kernel in the notebook's own folder, as Jupyter and
    ``jupyter nbconvert --execute`` do (kernels started from the repository root once hid that no notebook
    could import ``analysis`` there); return its wall time (s).

    ``results_dir`` is passed to the kernel as ``$CONVIT_RESULTS`` (read by ``analysis.load``).
    Raises :class:`nbclient.exceptions.CellExecutionError` on the first failing cell.
    """
    nb = nbformat.read(path, as_version=4)
    env_before = os.environ.get("CONVIT_RESULTS")
    if results_dir is not None:
        os.environ["CONVIT_RESULTS"] = str(Path(results_dir).resolve())
    start = time.perf_counter()
    try:
        NotebookClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        ).execute()
    finally:
        if results_dir is not None:
            if env_before is None:
                os.environ.pop("CONVIT_RESULTS", None)
            else:
                os.environ["CONVIT_RESULTS"] = env_before
    if inplace:
        nbformat.write(nb, path)
    return time.perf_counter() - start


def strip(path: Path) -> None:
    """Remove outputs and execution counts (notebooks are committed clean)."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, path)


def main(argv: list[str] | None = None) -> int:
    """Execute the given notebooks (default: all of ``analysis/``); exit 1 if any fails."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", type=Path)
    ap.add_argument("--results", type=Path, default=None)
    ap.add_argument("--timeout", type=int, default=120, help="seconds per cell")
    ap.add_argument("--inplace", action="store_true", help="keep outputs in the notebook files")
    ap.add_argument("--strip", action="store_true", help="only strip outputs, do not execute")
    args = ap.parse_args(argv)
    failed = []
    for path in args.notebooks or NOTEBOOKS:
        if args.strip:
            strip(path)
            continue
        try:
            secs = execute(path, args.results, args.timeout, args.inplace)
            print(f"ok    {path.name} ({secs:.1f} s)")
        except CellExecutionError as exc:
            failed.append(path.name)
            print(f"FAIL  {path.name}\n{exc}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
