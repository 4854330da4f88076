"""``benchmarks/base_variants.py`` reuses a built base only when it was built from the pool and seed asked for."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
spec = importlib.util.spec_from_file_location("base_variants", REPO / "benchmarks" / "base_variants.py")
variants = importlib.util.module_from_spec(spec)
spec.loader.exec_module(variants)


def built(folder: Path, words: str, seed: int) -> None:
    folder.mkdir(parents=True)
    (folder / "probes.json").write_text(json.dumps({"corpus": {"words": words}, "recipe": {"seed": seed}}))


def test_a_built_base_is_reused_only_for_its_pool_and_build_seed(tmp_path, monkeypatch):
    from glmlab.notebooks import pretrained

    assert [variants.label(p, s) for p, s in (("shipped", 0), ("parts", 0), ("lexicon", 1))] == ["shipped", "parts", "lexicon-s1"]
    built(tmp_path / "lexicon-s1-glm", "lexicon", 1)
    built(tmp_path / "parts-glm", "lexicon", 0)
    monkeypatch.setattr(pretrained, "build", lambda *a, **k: pytest.fail("a built base was built again"))
    assert variants.base_folder("lexicon", "glm", tmp_path, 1, build_seed=1) == tmp_path / "lexicon-s1-glm"
    with pytest.raises(SystemExit, match=r"parts-glm: built from the 'lexicon' word pool with seed 0, not 'parts'"):
        variants.base_folder("parts", "glm", tmp_path, 1)
    calls = []
    monkeypatch.setattr(pretrained, "build", lambda mode, folder, **kw: calls.append((mode, Path(folder).name, kw)))
    variants.base_folder("parts", "glm2", tmp_path, 1, build_seed=2)
    assert calls == [("glm2", "parts-s2-glm2", {"threads": 1, "words": "parts", "seed": 2})]
