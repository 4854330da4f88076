"""The committed notebooks carry the outputs of their current code (issue 16, item 7). Fast: nothing executes.

``bash scripts/render_notebooks.sh`` executes them and stores each one's code hash; a notebook fails here when it
was never rendered, when its code changed since, when a code cell was not executed (or ended in an error, or
shows nothing where it prints or plots), when it holds the rendering machine's paths, or when it is over 1.5 MB.
"""

from __future__ import annotations

import nbformat
import pytest

from glmlab.notebooks.render import KEY, MAX_BYTES, NOTEBOOKS, clean_copy, code_hash, names, problems, reader_text


@pytest.mark.parametrize("name", names())
def test_committed_notebook_is_rendered_from_its_code(name):
    assert problems(NOTEBOOKS / f"{name}.ipynb") == []


def _rendered(tmp_path, cells):
    """A small notebook as the render leaves it: executed in order, with outputs and its code hash."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# t")] + [nbformat.v4.new_code_cell(src) for src in cells]
    for count, cell in enumerate(nb.cells[1:], 1):
        cell.execution_count = count
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")] if "print" in cell.source else []
    nb.metadata[KEY] = {"code_sha256": code_hash(nb)}
    path = tmp_path / "t.ipynb"
    path.write_text(nbformat.writes(nb))
    return nb, path


def test_problems_catch_stale_unexecuted_and_never_rendered(tmp_path):
    nb, path = _rendered(tmp_path, ["x = 1", "print(x)"])
    assert problems(path) == []
    nb.cells[0].source = "# the markdown may change"
    path.write_text(nbformat.writes(nb))
    assert problems(path) == []
    nb.cells[1].source = "x = 2"  # code changed: the outputs are stale
    path.write_text(nbformat.writes(nb))
    assert problems(path) == ["t.ipynb: code changed since its outputs were rendered (run bash scripts/render_notebooks.sh)"]
    nb, path = _rendered(tmp_path, ["x = 1", "print(x)"])
    nb.cells[2].outputs, nb.cells[1].execution_count = [], None
    path.write_text(nbformat.writes(nb))
    assert problems(path) == ["t.ipynb: code cell 1 (x = 1) was not executed", "t.ipynb: code cell 2 (print(x)) shows nothing"]
    del nb.metadata[KEY]
    path.write_text(nbformat.writes(nb))
    assert problems(path) == ["t.ipynb: never rendered (run bash scripts/render_notebooks.sh)"]
    nb, path = _rendered(tmp_path, ["x = 1", "print(x)"])
    nb.cells[2].outputs[0].text = "a" * MAX_BYTES
    path.write_text(nbformat.writes(nb))
    assert problems(path)[0].startswith("t.ipynb: 1,5") and problems(path)[0].endswith("bytes, over 1,500,000")


def test_clean_copy_has_the_code_and_no_outputs(tmp_path):
    nb, path = _rendered(tmp_path, ["x = 1", "print(x)"])
    copy = nbformat.read(clean_copy(path, tmp_path / "clean.ipynb"), as_version=4)
    assert code_hash(copy) == code_hash(nb) and KEY in copy.metadata
    assert all(not c.outputs and c.execution_count is None for c in copy.cells if c.cell_type == "code")


def test_outputs_read_as_on_the_readers_machine(tmp_path):
    from pathlib import Path

    repo = tmp_path / "checkout"
    text = f"$ glmlab launch -- --output_dir {repo}/runs/04_lora/lora\n 10%|#  | 38/375\r100%|###| 375/375\nwrote {repo}/runs/x\n"
    assert reader_text(text, repo) == "$ glmlab launch -- --output_dir ./runs/04_lora/lora\n100%|###| 375/375\nwrote ./runs/x\n"
    assert reader_text(f"{Path.home()}/.cache/glmlab/synth-1/spo_train.jsonl", repo) == "~/.cache/glmlab/synth-1/spo_train.jsonl"
