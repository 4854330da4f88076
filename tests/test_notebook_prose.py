"""Notebooks 02-05 teach their own method (issue 16): no paragraph of prose shared verbatim between them,
each opens its method's box on the model itself, and 03-05 step through 02's loop with one library call."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
TRAINING = ("02_freeze", "03_ptuning", "04_lora", "05_full_zero3")


def cells(name: str, kind: str) -> list[str]:
    import nbformat

    return [c.source for c in nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4).cells if c.cell_type == kind]


def test_no_paragraph_is_repeated_across_the_training_notebooks():
    where: dict[str, set[str]] = {}
    for name in TRAINING:
        for text in cells(name, "markdown"):
            for paragraph in text.split("\n\n"):
                words = " ".join(paragraph.split())
                if words and not words.startswith("#"):  # headings may repeat ("## Loss curve")
                    where.setdefault(words, set()).add(name)
    repeated = {p[:80]: sorted(names) for p, names in where.items() if len(names) > 1}
    assert not repeated, repeated


@pytest.mark.parametrize("name", TRAINING)
def test_each_notebook_builds_its_model_and_lists_what_trains(name):
    code = "\n".join(cells(name, "code"))
    assert "params.start(globals())" in code and "params.check_runs(setup, runs)" in code
    assert "by_hand.trainable_rows(" in code  # read off the prepared model, not computed from flags
    assert "experiment.examples(setup, results, n=3, base=base)" in code  # the base's answer beside each run's
    if name != "02_freeze":  # 02 writes the loop; the others reuse it in a line
        assert "by_hand.run_steps(engine, loader, by_hand_steps)" in code
        assert "engine.backward(" not in code
