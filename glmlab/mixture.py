"""Training on a mixture of sample files: ``--train_path task.jsonl,general.jsonl#300``.

A mixture spec is a comma-separated list of files, each one ``FILE`` (all of its samples every
epoch) or ``FILE#N`` (N of its samples every epoch, drawn afresh each epoch; N larger than the
file takes the whole file as many times as it fits and draws the rest). This is how replay
works against catastrophic forgetting: the task plus a share of the general data the base
learned from (LLaMA-Factory's dataset mixing, ms-swift's ``dataset#N``). ``--eval_path``
takes the same syntax; an eval mixture is drawn once (epoch 0's draw), so its losses compare
across epochs.

The files may hold different formats (instruction samples, ChatGLM3 conversations and tool
conversations, under ``--mode glm3``): each is encoded on its own by
:func:`glmlab.data.encode_file`, so the pool holds training-format rows only.

How the draw meets the loader
-----------------------------
:class:`MixtureDataset` is the epoch's samples: position ``i`` of epoch ``e`` is pool row
``draw(e)[i]``, and its length is the same every epoch (the sum of the per-file counts), so
the schedule (:class:`glmlab.train.Plan`) follows from the mixture. :class:`MixtureSampler` is
torch's ``DistributedSampler`` (every process takes its share of a shuffle seeded by
``--seed`` + epoch) whose ``set_epoch`` also redraws the dataset. The draw depends on
``(--seed, epoch, file)`` only -- never on a global random state -- so every process draws the
same epoch, and a run resumed mid-epoch redraws the very samples the interrupted run had and
skips the micro-batches it consumed (the loop in :mod:`glmlab.train` is unchanged). A spec of
one plain file draws the file itself, in order: the same data as before mixtures existed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

from glmlab.data import (
    DataError,
    EncodedDataset,
    EncodedFile,
    _is_conversation,
    _read_numbered,
    encode_file,
)


@dataclass(frozen=True)
class Source:
    """One file of a mixture: ``path``, and ``count`` samples per epoch (``None``: the whole file)."""

    path: str
    count: int | None = None

    def __str__(self) -> str:
        return self.path if self.count is None else f"{self.path}#{self.count}"


def parse_spec(spec: str) -> list[Source]:
    """The files of a mixture spec (``a.jsonl,b.jsonl#300``), each checked to exist.

    Raises :class:`glmlab.data.DataError` with one line naming the faulty part: an empty name,
    ``#N`` that is not a positive whole number (``#0``, ``#x``), a file that does not exist.
    A path that itself holds ``#`` or ``,`` cannot be named here (rename the file).
    """
    sources = []
    for part in str(spec).split(","):
        part = part.strip()
        path, hash_, count = part.rpartition("#") if "#" in part else (part, "", "")
        if not path:
            raise DataError(f"{spec}: an empty file name in the mixture (expected FILE or FILE#N, comma-separated)")
        if hash_ and not (count.isdigit() and int(count) > 0):
            raise DataError(f"{part}: #N must be a positive whole number of samples per epoch (got {count!r})")
        if not Path(path).is_file():
            raise DataError(f"{path}: no such file")
        sources.append(Source(path, int(count) if hash_ else None))
    return sources


def validate_spec(spec: str, mode: str) -> list[Source]:
    """Parse ``spec`` and read and validate every sample of every file, before any model loads.

    Raises :class:`glmlab.data.DataError` naming the file (and line): a malformed or incomplete
    sample, an empty file, a conversation under a mode that cannot train it (glm, glm2).
    """
    sources = parse_spec(spec)
    for source in sources:
        for line, sample in _read_numbered(source.path):
            if mode != "glm3" and _is_conversation(sample):
                raise DataError(f"{source.path}:{line}: conversation samples need --mode glm3 (got --mode {mode})")
    return sources


@dataclass
class Part:
    """One file of a mixture, encoded: where its rows sit in the pool and how many an epoch takes."""

    source: Source
    encoded: EncodedFile
    offset: int

    @property
    def per_epoch(self) -> int:
        return len(self.encoded) if self.source.count is None else self.source.count

    def draw(self, seed: int, epoch: int, index: int) -> np.ndarray:
        """Pool rows of this file for ``epoch``: whole copies of the file, then the rest drawn without
        replacement, by a generator seeded with ``(seed, epoch, index)`` alone."""
        size = len(self.encoded)
        if self.source.count is None:
            return self.offset + np.arange(size)
        copies, rest = divmod(self.source.count, size)
        rng = np.random.default_rng([seed, epoch, index])
        rows = [np.arange(size)] * copies + [rng.permutation(size)[:rest]]
        return self.offset + np.concatenate(rows)

    def line(self) -> str:
        """What this file gives per epoch and what was cut, in one line."""
        e = self.encoded
        share = "all" if self.source.count is None else f"#{self.source.count} of"
        return (f"{self.source.path}: {self.per_epoch} samples per epoch ({share} {len(e)} kept; read {e.num_read}, "
                f"skipped {e.skipped}, source cut {e.source_truncated}, target cut {e.target_truncated})")


class Mixture:
    """The encoded files of a spec and the per-epoch draw over them.

    ``rows`` is the pool (every kept row of every file, file after file); ``draw(epoch)`` lists
    the pool rows of one epoch, ``len(mixture)`` how many that is (the same every epoch).
    """

    def __init__(self, parts: Sequence[Part], seed: int):
        self.parts = list(parts)
        self.seed = seed
        self.rows: list[dict] = [row for part in self.parts for row in part.encoded.samples]

    @classmethod
    def encode(cls, spec: str, tokenizer, mode: str, max_len: int, max_src_len: int, is_skip: bool = False,
               seed: int = 1234, verbose: bool = True) -> Mixture:
        """Encode every file of ``spec`` (:func:`glmlab.data.encode_file`); with ``verbose`` print each
        file's counts. Raises :class:`DataError` when a file keeps no sample (``--is_skip``, cuts)."""
        parts, offset = [], 0
        for source in parse_spec(spec):
            encoded = encode_file(source.path, tokenizer, mode, max_len, max_src_len, is_skip, verbose=verbose)
            if not len(encoded):
                raise DataError(f"{source.path}: no sample left after the cut to --max_len {max_len} "
                                f"({encoded.skipped} skipped); nothing to draw from")
            parts.append(Part(source, encoded, offset))
            offset += len(encoded)
        mixture = cls(parts, seed)
        if verbose:
            print(*mixture.lines(), sep="\n", flush=True)
        return mixture

    def __len__(self) -> int:
        return sum(part.per_epoch for part in self.parts)

    def draw(self, epoch: int) -> list[int]:
        """The pool rows of ``epoch``, file after file (the sampler shuffles them)."""
        return np.concatenate([p.draw(self.seed, epoch, i) for i, p in enumerate(self.parts)]).tolist()

    def lines(self) -> list[str]:
        """One line per file (see :meth:`Part.line`), then the epoch's total when there are several."""
        lines = [part.line() for part in self.parts]
        if len(self.parts) > 1:
            lines.append(f"mixture: {len(self)} samples per epoch from {len(self.parts)} files")
        return lines

    def counts(self) -> list[dict]:
        """Per file: spec, samples per epoch, read, kept, skipped, source/target cut (for ``data.json``)."""
        return [{"source": str(p.source), "per_epoch": p.per_epoch, "read": p.encoded.num_read,
                 "kept": len(p.encoded), "skipped": p.encoded.skipped, "source_cut": p.encoded.source_truncated,
                 "target_cut": p.encoded.target_truncated} for p in self.parts]

    def write_counts(self, path: str | Path) -> None:
        """Write :meth:`counts` as JSON (the run folder's ``data.json``), so what a run trained on is on record."""
        Path(path).write_text(json.dumps({"train": self.counts(), "samples_per_epoch": len(self)}, indent=2) + "\n",
                              encoding="utf-8")


class MixtureDataset(Dataset):
    """The samples of one epoch of a :class:`Mixture` (epoch 0's draw until :meth:`set_epoch`)."""

    def __init__(self, mixture: Mixture):
        self.mixture = mixture
        self.rows = EncodedDataset(mixture.rows)  # every encoded sample as LongTensors, made once
        self.order = mixture.draw(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw ``epoch``'s samples (the same on every process, and again on resume)."""
        self.order = self.mixture.draw(epoch)

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> dict:
        return self.rows[self.order[i]]


class MixtureSampler(DistributedSampler):
    """``DistributedSampler`` whose ``set_epoch`` also redraws its :class:`MixtureDataset`."""

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.dataset.set_epoch(epoch)
