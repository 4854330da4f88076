"""Load the reference fixtures in ``tests/fixtures`` (copied from ../shared/fixtures/reference).

``load_fixture(name)`` returns the fixture dict; ``fixture_model(name)`` returns a glmlab model
holding the fixture's weights in fp32 eval mode. It writes the fixture as an official-layout
checkpoint folder (``config.json``, weights, tokenizer files: ``sp_v1.model`` as ``ice_text.model``
or ``sp_v2.model`` as ``tokenizer.model``) and loads it through ``glmlab.load_model``, so every
model test also goes through the strict loader. ``write_fixture_folder`` gives the folder itself.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch

FIXTURES = Path(__file__).parent / "fixtures"


def load_fixture(name: str) -> dict:
    return torch.load(FIXTURES / f"{name}.pt", weights_only=True)


def write_fixture_folder(name: str, folder: str | Path, weights_format: str | None = None) -> Path:
    """Write fixture ``name`` as a checkpoint folder in the official layout and return it.

    ``weights_format`` defaults to the official one of the generation: ``bin`` for ChatGLM-6B,
    ``safetensors`` for ChatGLM2/3.
    """
    from glmlab.loading import write_weights
    from glmlab.models.configuration import ChatGLMConfig
    from glmlab.tiny import tokenizer_config

    fx = load_fixture(name)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ChatGLMConfig(**fx["config"]).save_pretrained(folder)
    write_weights(fx["state_dict"], folder, weights_format or ("bin" if fx["mode"] == "glm" else "safetensors"))
    if fx["mode"] == "glm":
        shutil.copyfile(FIXTURES / "sp_v1.model", folder / "ice_text.model")
    else:
        shutil.copyfile(FIXTURES / "sp_v2.model", folder / "tokenizer.model")
    text = json.dumps(tokenizer_config(fx["mode"]), indent=2, ensure_ascii=False) + "\n"
    (folder / "tokenizer_config.json").write_text(text, encoding="utf-8")
    return folder


def fixture_model(name: str):
    import glmlab

    fx = load_fixture(name)
    with tempfile.TemporaryDirectory(prefix=f"glmlab-{name}-") as folder:
        write_fixture_folder(name, folder)
        return glmlab.load_model(folder, mode=fx["mode"], dtype=torch.float32).eval()
