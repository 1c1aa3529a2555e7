"""Execute the tutorials on the real model and data for the docs site (``make docs-real``).

    python docs/execute_notebooks.py [NAME ...]     # default: every notebook, one after another

Each notebook in ``notebooks/`` runs top to bottom in its own kernel with its own parameters (SmolLM2-135M,
Rotten Tomatoes, tweets: nothing injected), its working directory ``notebooks/``; the executed copy,
made small by :func:`executed.shrink`, goes to ``docs/executed/NAME.ipynb`` for ``make docs`` to render.
Heavy: about 1.5 hours for all six on 2 CPU cores (04_analyses alone an hour); on a shared machine run it
under the heavy lock (``flock /work/notes/heavy.lock make docs-real``). A notebook that fails or writes to
stderr is reported and its old copy kept.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from executed import EXECUTED, NOTEBOOKS, shrink  # noqa: E402


def problems(nb) -> list[str]:
    """Errors and stderr output of an executed notebook (neither may reach the docs)."""
    out = []
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        for o in cell.get("outputs", []):
            if o.output_type == "error":
                out.append(f"code cell {i + 1}: {o.ename}: {o.evalue}")
            elif o.output_type == "stream" and o.get("name") == "stderr":
                out.append(f"code cell {i + 1} wrote to stderr: {''.join(o.text)[:200]!r}")
    return out


def run(name: str) -> bool:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=None, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    found = problems(nb)
    if found:
        print(f"{name}: not kept ({len(found)} problem(s)):\n  " + "\n  ".join(found), file=sys.stderr)
        return False
    EXECUTED.mkdir(parents=True, exist_ok=True)
    small = shrink(nb)
    nbformat.write(small, EXECUTED / f"{name}.ipynb")
    size = (EXECUTED / f"{name}.ipynb").stat().st_size
    print(f"{name}: {(time.perf_counter() - t0) / 60:.1f} min, docs/executed/{name}.ipynb {size / 1e3:.0f} kB")
    return True


def main(names: list[str]) -> int:
    known = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"no notebook {', '.join(unknown)}; choose from {', '.join(known)}", file=sys.stderr)
        return 2
    results = [run(name) for name in names or known]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
