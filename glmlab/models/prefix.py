"""The P-tuning v2 prefix encoder, as the official ChatGLM code builds it.

P-tuning v2 learns ``pre_seq_len`` virtual tokens whose keys and values are
prepended in every attention layer. The encoder turns prefix positions
``0..pre_seq_len-1`` into one flat vector per position holding, for every layer,
a key and a value: ``kv_size = num_layers * 2 * (per-layer key width)``.

* ``prefix_projection=False`` (the "prefix only on the embedding" variant): one
  embedding table of width ``kv_size``; nothing else is trained.
* ``prefix_projection=True``: a narrower embedding followed by a two-layer MLP
  (``Linear -> Tanh -> Linear``) that projects it up to ``kv_size``.

The parameter names (``embedding``, ``trans.0``, ``trans.2``) are the official ones,
so an official P-tuning checkpoint loads strictly.
"""

from __future__ import annotations

import torch
from torch import nn


class PrefixEncoder(nn.Module):
    """Maps prefix positions to flattened per-layer keys and values.

    Args:
        pre_seq_len: number of virtual prefix tokens.
        kv_size: width of the output, ``num_layers * 2 * key_width``.
        prefix_projection: use the MLP re-parameterisation.
        embed_dim: embedding width when projecting (ChatGLM-6B: ``hidden_size``;
            ChatGLM2/3: ``kv_size``).
        hidden_size: width of the MLP's hidden layer when projecting.
    """

    def __init__(self, pre_seq_len: int, kv_size: int, prefix_projection: bool, embed_dim: int, hidden_size: int):
        super().__init__()
        self.prefix_projection = prefix_projection
        if prefix_projection:
            self.embedding = nn.Embedding(pre_seq_len, embed_dim)
            self.trans = nn.Sequential(nn.Linear(embed_dim, hidden_size), nn.Tanh(), nn.Linear(hidden_size, kv_size))
        else:
            self.embedding = nn.Embedding(pre_seq_len, kv_size)

    def forward(self, prefix: torch.Tensor) -> torch.Tensor:
        """``prefix``: (B, pre_seq_len) positions -> (B, pre_seq_len, kv_size)."""
        if self.prefix_projection:
            return self.trans(self.embedding(prefix))
        return self.embedding(prefix)
