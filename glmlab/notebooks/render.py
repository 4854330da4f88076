"""Render the six notebooks: execute them in place, so the repository shows their outputs, and write HTML pages.

``bash scripts/render_notebooks.sh`` (``python -m glmlab.notebooks.render``) runs, in order, each notebook of
``notebooks/`` with its default parameters through papermill (the CPU path: ``--cpu 2`` jobs, one thread per
process, as on a 2-core laptop), then

* rewrites what would only be true on the rendering machine (:func:`reader_outputs`): the checkout's absolute
  path becomes ``.``, the data cache ``~/.cache/glmlab`` and the home folder ``~``; a progress bar's
  carriage-return frames become its final frame (:func:`glmlab.notebooks.jobs.final_frames`); papermill's
  own metadata (absolute paths, timestamps) goes;
* stores the sha256 of the notebook's code cells (:func:`code_hash`) and the seconds it took in the notebook's
  metadata (``metadata.glmlab``), and writes the notebook back in place;
* writes ``notebooks/html/<name>.html`` (nbconvert; git-ignored) for offline or projector use.

The exercises' answers (``notebooks/solutions/NN_*.ipynb``) are rendered after the six, the same way.

A notebook that fails is left as it was (the run stops with its error). :func:`problems` is what
``tests/test_rendered.py`` checks on the committed notebooks: rendered, code unchanged since, every code cell
executed in order and without error, each at most :data:`MAX_BYTES`. :func:`clean_copy` gives the
outputs-free copy the papermill tests execute.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
NOTEBOOKS = REPO / "notebooks"
HTML_DIR = NOTEBOOKS / "html"
MAX_BYTES = 1_500_000  # a notebook with its outputs, as committed (issue 16: at most 1.5 MB)
KEY = "glmlab"  # the notebook-metadata key holding the render's record
INJECTED = "injected-parameters"  # papermill's tag for the cell it adds with -p values
# A cell that calls one of these shows something: it must have outputs once executed.
SHOWS = re.compile(r"^\s*(print|display|plt\.show)\(|^\s*plots\.plot_|^\s*calculator\(", re.MULTILINE)


def names(solutions: bool = True) -> list[str]:
    """The notebooks in reading order (``notebooks/NN_*.ipynb``), then their exercises' solutions
    (``solutions/NN_*``: ``notebooks/solutions/NN_*.ipynb``, answers measured by the render)."""
    chapters = sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    answers = sorted(f"solutions/{p.stem}" for p in (NOTEBOOKS / "solutions").glob("[0-9][0-9]_*.ipynb"))
    return chapters + (answers if solutions else [])


def _code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code" and INJECTED not in c.metadata.get("tags", [])]


def code_hash(nb) -> str:
    """The sha256 of a notebook's code cells, in order (papermill's injected parameters left out): what the
    stored outputs were computed from. Markdown may change freely; code may not without a new render."""
    digest = hashlib.sha256()
    for cell in _code_cells(nb):
        digest.update(cell.source.strip().encode("utf-8") + b"\n\x00\n")
    return digest.hexdigest()


def strip(nb):
    """``nb`` without outputs, execution counts, papermill's injected cell and run metadata (in place; returned)."""
    nb.cells = [c for c in nb.cells if INJECTED not in c.metadata.get("tags", [])]
    for cell in nb.cells:
        for key in ("papermill", "execution"):
            cell.metadata.pop(key, None)
        if cell.metadata.get("tags") == []:
            del cell.metadata["tags"]
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("papermill", None)
    return nb


def clean_copy(source: str | Path, target: str | Path) -> Path:
    """Write ``source`` without its outputs to ``target`` (what the papermill tests execute); returns ``target``."""
    import nbformat

    nb = strip(nbformat.read(str(source), as_version=4))
    Path(target).write_text(nbformat.writes(nb) + "\n", encoding="utf-8")
    return Path(target)


def reader_text(text: str, repo: Path = REPO) -> str:
    """``text`` as the reader's machine would print it: paths relative to the checkout, the cache and home as
    ``~``, each progress bar at its final frame."""
    from glmlab.notebooks.jobs import final_frames

    home = str(Path.home())
    cache = os.environ.get("GLMLAB_CACHE", str(Path.home() / ".cache" / "glmlab"))
    for prefix, short in ((str(repo.resolve()), "."), (str(repo), "."), (cache, "~/.cache/glmlab"), (home, "~")):
        if prefix and prefix not in (".", "/"):
            text = text.replace(prefix, short)
    return final_frames(text)


def reader_outputs(nb, repo: Path = REPO):
    """Every text output of ``nb`` through :func:`reader_text` (in place; returned). Images stay as they are."""
    for cell in _code_cells(nb):
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = reader_text(output["text"], repo)
            for mime, value in output.get("data", {}).items():
                if mime.startswith("text/") or mime == "application/json":
                    output["data"][mime] = (reader_text(value, repo) if isinstance(value, str)
                                            else json.loads(reader_text(json.dumps(value), repo)))
            if output.get("output_type") == "error":
                output["evalue"] = reader_text(output["evalue"], repo)
                output["traceback"] = [reader_text(line, repo) for line in output["traceback"]]
    return nb


def problems(path: str | Path, repo: Path = REPO) -> list[str]:
    """What keeps a committed notebook from standing as rendered: never rendered, code changed since, a code
    cell not executed (or out of order, or with an error), a cell that shows something without output, the
    rendering machine's paths, more than :data:`MAX_BYTES`. Empty when it stands."""
    import nbformat

    path = Path(path)
    label = str(path.relative_to(NOTEBOOKS)) if path.resolve().is_relative_to(NOTEBOOKS.resolve()) else path.name
    found = []
    size = path.stat().st_size
    if size > MAX_BYTES:
        found.append(f"{label}: {size:,} bytes, over {MAX_BYTES:,}")
    nb = nbformat.read(str(path), as_version=4)
    record = nb.metadata.get(KEY, {})
    if "code_sha256" not in record:
        return found + [f"{label}: never rendered (run bash scripts/render_notebooks.sh)"]
    if record["code_sha256"] != code_hash(nb):
        found.append(f"{label}: code changed since its outputs were rendered (run bash scripts/render_notebooks.sh)")
    cells = _code_cells(nb)
    counts = [c.execution_count for c in cells]
    for index, cell in enumerate(cells):
        first_line = cell.source.strip().splitlines()[0][:50] if cell.source.strip() else "empty"
        where = f"{label}: code cell {index + 1} ({first_line})"
        if cell.execution_count is None:
            found.append(f"{where} was not executed")
        elif any(o.get("output_type") == "error" for o in cell.outputs):
            found.append(f"{where} ended in an error")
        elif SHOWS.search(cell.source) and not cell.outputs:
            found.append(f"{where} shows nothing")
    if None not in counts and counts != list(range(1, len(cells) + 1)):
        found.append(f"{label}: cells not executed top to bottom in one kernel (counts {counts})")
    text = nbformat.writes(nb)
    for machine in {str(repo.resolve()), str(repo), str(Path.home())} - {"/", "."}:
        if machine in text:
            found.append(f"{label}: holds the rendering machine's path {machine}")
    return found


def _kernel(root: Path) -> str:
    """A kernelspec running this interpreter, first on ``JUPYTER_PATH`` (no ``ipykernel install`` needed)."""
    spec = root / "kernels" / "glmlab-render"
    spec.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "glmlab render", "language": "python"}))
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(root), os.environ.get("JUPYTER_PATH")]))
    return "glmlab-render"


def render_one(name: str, kernel: str, html_dir: Path | None = HTML_DIR) -> dict[str, Any]:
    """Execute ``notebooks/<name>.ipynb`` with its defaults, rewrite it in place with its outputs and record,
    and write its HTML page; returns ``{"notebook", "seconds", "bytes"}``. A failing notebook raises
    (papermill's error) and is left unchanged."""
    import nbformat
    import papermill as pm

    path = NOTEBOOKS / f"{name}.ipynb"
    stem = path.stem
    with tempfile.TemporaryDirectory(prefix=f"render-{stem}-") as tmp:
        source = clean_copy(path, Path(tmp) / f"{stem}.ipynb")
        executed = Path(tmp) / f"{stem}.out.ipynb"
        start = time.perf_counter()
        pm.execute_notebook(str(source), str(executed), kernel_name=kernel, cwd=str(path.parent), progress_bar=False,
                            log_output=False)  # in the notebook's own folder, as Jupyter runs it
        seconds = time.perf_counter() - start
        nb = nbformat.read(str(executed), as_version=4)
    for cell in nb.cells:
        for key in ("papermill", "execution"):
            cell.metadata.pop(key, None)
        if cell.metadata.get("tags") == []:  # papermill adds an empty list to every cell
            del cell.metadata["tags"]
    nb.metadata.pop("papermill", None)
    reader_outputs(nb)
    nb.metadata[KEY] = {"code_sha256": code_hash(nb), "seconds": round(seconds),
                        "rendered_with": f"papermill, default parameters, {os.cpu_count()} CPU cores, no GPU"}
    text = nbformat.writes(nb) + "\n"
    path.write_text(text, encoding="utf-8")
    if html_dir is not None:
        from nbconvert import HTMLExporter

        page = html_dir / f"{name}.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        body, _ = HTMLExporter().from_notebook_node(nb)
        page.write_text(body, encoding="utf-8")
    return {"notebook": name, "seconds": round(seconds), "bytes": len(text.encode("utf-8"))}


def main(argv: list[str] | None = None) -> int:
    """Render every notebook (or ``--only`` some) in order; print one line per notebook and the problems left."""
    parser = argparse.ArgumentParser(prog="render_notebooks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=None,
                        help="comma-separated notebook names, e.g. 01_data,solutions/01_data (default: all, in order)")
    parser.add_argument("--html_dir", default=str(HTML_DIR), help="where the HTML pages go ('' for none)")
    parser.add_argument("--check", action="store_true", help="only report what keeps the committed notebooks from standing")
    args = parser.parse_args(argv)
    chosen = names() if args.only is None else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(chosen) - set(names()))
    if unknown:
        parser.error(f"--only: no notebook {', '.join(unknown)} in {NOTEBOOKS} (known: {', '.join(names())})")
    if not args.check:
        # The reader's laptop: the CPU path, one thread per DeepSpeed process, PNG figures at 100 dpi.
        os.environ.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="")
        with tempfile.TemporaryDirectory(prefix="render-kernel-") as root:
            rc = Path(root, "matplotlibrc")
            rc.write_text("figure.dpi: 100\nsavefig.dpi: 100\n")
            os.environ["MATPLOTLIBRC"] = str(rc)
            kernel = _kernel(Path(root))
            for name in chosen:
                done = render_one(name, kernel, Path(args.html_dir) if args.html_dir else None)
                print(f"{name}: {done['seconds']} s, {done['bytes']:,} bytes", flush=True)
    left = [p for name in chosen for p in problems(NOTEBOOKS / f"{name}.ipynb")]
    for line in left:
        print(line)
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
