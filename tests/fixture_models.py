"""Load the reference fixtures in ``tests/fixtures`` (copied from ../shared/fixtures/reference).

``load_fixture(name)`` returns the fixture dict; ``fixture_model(name)`` returns a
glmlab model holding the fixture's weights in fp32 eval mode.
TEMPORARY: builds the model class directly; the loading work switches this to
write an official-layout folder and load it through ``glmlab.load_model``.
"""

from __future__ import annotations

from pathlib import Path

import torch

FIXTURES = Path(__file__).parent / "fixtures"


def load_fixture(name: str) -> dict:
    return torch.load(FIXTURES / f"{name}.pt", weights_only=True)


def fixture_model(name: str):
    from glmlab.models.configuration import ChatGLMConfig

    fx = load_fixture(name)
    config = ChatGLMConfig(**fx["config"])
    if fx["mode"] == "glm":
        from glmlab.models.chatglm import ChatGLMForConditionalGeneration as cls
    else:
        from glmlab.models.chatglm2 import ChatGLM2ForConditionalGeneration as cls
    model = cls(config).float().eval()
    model.load_state_dict(fx["state_dict"], strict=True)
    return model
