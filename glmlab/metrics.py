"""Scores for the two tasks of the original experiments, and a forgetting measure.

* **Triple extraction** (``spo``): the model writes ``head_relation_tail`` triples,
  one per line. The original ChatGLM fine-tuning project scored each test sample
  by comparing *sets* of lines and reported the mean of the per-sample F1 over
  the test file. :func:`triple_f1` reproduces that number exactly
  (``sample_f1``) and also gives micro precision / recall / F1 from the same
  per-sample counts, which is steadier when samples hold very different numbers
  of triples.
* **Doc-to-question** (``d2q``): free text against one or more reference
  questions. Chinese text has no spaces, so :func:`rouge_l` and :func:`bleu4`
  work on characters (as the official ChatGLM evaluation does when it lists the
  characters of a string); a candidate is scored against its best reference.
* **Forgetting**: :func:`forgetting` compares what a fine-tuned model writes on
  general prompts with what the base model wrote on the same prompts.

Pure Python, no dependencies beyond the standard library.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

# --------------------------------------------------------------------------- triples


def parse_triples(text: str) -> list[str]:
    """The lines of ``text`` that are triples: exactly three ``_``-separated parts.

    This is the original project's filter on the *generated* text: lines are
    taken as they are (no stripping), anything else (chatter, a half-written
    triple) is dropped. Order and duplicates are kept; scoring uses sets.
    """
    return [line for line in text.split("\n") if len(line.split("_")) == 3]


def reference_triples(text: str) -> list[str]:
    """The reference side as the original counted it: every line of ``text``, unfiltered.

    Note that an empty reference is one empty line, i.e. one gold item that no
    prediction can match; such a sample always scores recall 0 (and F1 0), as in
    the original.
    """
    return text.split("\n")


@dataclass(frozen=True)
class TripleCounts:
    """Per-sample counts over *sets* of triples, and that sample's P/R/F1 as the original computed them."""

    true_positives: int
    n_predicted: int
    n_reference: int
    precision: float
    recall: float
    f1: float


def triple_counts(prediction: str, reference: str) -> TripleCounts:
    """Score one generated text against its reference text, exactly as the original did.

    ``precision = |pred ∩ ref| / |pred|`` (0 when nothing was predicted),
    ``recall = |pred ∩ ref| / |ref|``, ``f1 = 2PR / (P + R)`` (0 when both are 0),
    with ``pred = set(parse_triples(prediction))`` and
    ``ref = set(reference_triples(reference))``.
    """
    pred = set(parse_triples(prediction))
    ref = set(reference_triples(reference))
    tp = len(pred & ref)
    precision = tp / len(pred) if pred else 0.0
    recall = tp / len(ref)  # never empty: "".split("\n") == [""]
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return TripleCounts(tp, len(pred), len(ref), precision, recall, f1)


@dataclass(frozen=True)
class TripleScores:
    """Triple-extraction scores over a test file.

    ``sample_f1`` is the number the original project reported (mean over samples
    of the per-sample F1). ``precision`` / ``recall`` / ``f1`` are micro
    averages: the per-sample set counts summed over the file first.
    """

    precision: float
    recall: float
    f1: float
    sample_f1: float
    n_samples: int

    def as_dict(self) -> dict:
        """Plain dict, for JSON and printing."""
        return asdict(self)


def triple_f1(predictions: Sequence[str], references: Sequence[str]) -> TripleScores:
    """Micro P/R/F1 and the original's mean per-sample F1 of ``predictions`` against ``references``.

    Both are lists of texts (triples one per line), aligned by position. An
    empty list scores 0 everywhere.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    counts = [triple_counts(p, r) for p, r in zip(predictions, references)]
    tp = sum(c.true_positives for c in counts)
    n_pred = sum(c.n_predicted for c in counts)
    n_ref = sum(c.n_reference for c in counts)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_ref if n_ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    sample_f1 = sum(c.f1 for c in counts) / len(counts) if counts else 0.0
    return TripleScores(precision, recall, f1, sample_f1, len(counts))


def looks_like_triples(references: Iterable[object]) -> bool:
    """True when the references are strings and every non-empty line of them is a triple.

    Used by ``glmlab.predict`` to decide whether to print triple F1. At least one
    triple must occur, so a file of plain answers does not qualify.
    """
    seen = False
    for ref in references:
        if not isinstance(ref, str):
            return False
        for line in ref.split("\n"):
            if not line:
                continue
            if len(line.split("_")) != 3:
                return False
            seen = True
    return seen


# --------------------------------------------------------------------------- generation


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of ``a`` and ``b`` (O(len(a)·len(b)) time, O(len(b)) memory)."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(candidate: str, reference: str | Sequence[str]) -> float:
    """Character-level ROUGE-L F1 of ``candidate``; with several references, the best one counts.

    ``P = LCS / len(candidate)``, ``R = LCS / len(reference)``, ``F = 2PR / (P + R)``.
    Whitespace is ignored (characters are compared after removing it). Empty
    candidate or reference scores 0, except that two empty strings score 1.
    """
    references = [reference] if isinstance(reference, str) else list(reference)
    if not references:
        raise ValueError("rouge_l needs at least one reference")
    cand = _chars(candidate)
    best = 0.0
    for ref in references:
        ref_chars = _chars(ref)
        if not cand and not ref_chars:
            return 1.0
        if not cand or not ref_chars:
            continue
        lcs = _lcs_length(cand, ref_chars)
        if lcs:
            p, r = lcs / len(cand), lcs / len(ref_chars)
            best = max(best, 2 * p * r / (p + r))
    return best


def bleu4(candidate: str, reference: str | Sequence[str]) -> float:
    """Character-level sentence BLEU-4 of ``candidate`` against one or more references.

    Standard BLEU: n-gram precisions (n = 1..4) with counts clipped by the most
    any single reference holds, geometric mean, brevity penalty against the
    reference length closest to the candidate's. A zero n-gram precision is
    smoothed geometrically (the k-th zero counts as ``1 / 2**k`` matches, as
    NLTK's ``method3``), so short candidates do not collapse to 0.
    Whitespace is ignored. An empty candidate, or one sharing no character with
    any reference, scores 0.
    """
    references = [reference] if isinstance(reference, str) else list(reference)
    if not references:
        raise ValueError("bleu4 needs at least one reference")
    cand = _chars(candidate)
    refs = [_chars(r) for r in references]
    if not cand:
        return 0.0
    log_precision = 0.0
    zeros = 0
    for n in range(1, 5):
        cand_ngrams = Counter(_ngrams(cand, n))
        total = sum(cand_ngrams.values())
        if total == 0:  # candidate shorter than n: this order says nothing; count as a smoothed zero
            zeros += 1
            log_precision += math.log(1 / (2**zeros))
            continue
        max_ref = Counter()
        for ref in refs:
            for gram, count in Counter(_ngrams(ref, n)).items():
                max_ref[gram] = max(max_ref[gram], count)
        matches = sum(min(count, max_ref[gram]) for gram, count in cand_ngrams.items())
        if matches == 0:
            if n == 1:  # nothing in common at all
                return 0.0
            zeros += 1
            log_precision += math.log(1 / (2**zeros) / total)
        else:
            log_precision += math.log(matches / total)
    c = len(cand)
    r = min((len(ref) for ref in refs), key=lambda length: (abs(length - c), length))
    brevity = 1.0 if c > r else math.exp(1 - r / c)
    return brevity * math.exp(log_precision / 4)


def generation_scores(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> dict[str, float]:
    """Mean character-level ROUGE-L and BLEU-4 over a file (each prediction against its own references).

    ``references[i]`` is a string or a list of acceptable strings (doc-to-question
    lists 1-4 questions per document). Returns ``{"rouge_l", "bleu4", "n_samples"}``.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    n = len(predictions)
    if n == 0:
        return {"rouge_l": 0.0, "bleu4": 0.0, "n_samples": 0}
    rouge = sum(rouge_l(p, r) for p, r in zip(predictions, references)) / n
    bleu = sum(bleu4(p, r) for p, r in zip(predictions, references)) / n
    return {"rouge_l": rouge, "bleu4": bleu, "n_samples": n}


# --------------------------------------------------------------------------- forgetting


@dataclass(frozen=True)
class Forgetting:
    """How far a fine-tuned model's answers on general prompts moved from the base model's.

    ``similarity``: mean character-level ROUGE-L of each fine-tuned answer to the
    base answer (1 = unchanged). ``change = 1 - similarity``. ``identical``:
    fraction of prompts answered exactly as before. ``length_ratio``: mean
    ``len(tuned) / len(base)`` (fine-tuning on short targets often shortens
    general answers), over prompts whose base answer is non-empty.
    """

    similarity: float
    change: float
    identical: float
    length_ratio: float
    n_prompts: int

    def as_dict(self) -> dict:
        """Plain dict, for JSON and printing."""
        return asdict(self)


def forgetting(base_outputs: Sequence[str], tuned_outputs: Sequence[str]) -> Forgetting:
    """Compare generations of the base and the fine-tuned model on the same prompts (aligned lists)."""
    if len(base_outputs) != len(tuned_outputs):
        raise ValueError(f"{len(base_outputs)} base outputs but {len(tuned_outputs)} fine-tuned outputs")
    n = len(base_outputs)
    if n == 0:
        raise ValueError("forgetting needs at least one pair of outputs")
    similarity = sum(rouge_l(t, b) for b, t in zip(base_outputs, tuned_outputs)) / n
    identical = sum(b == t for b, t in zip(base_outputs, tuned_outputs)) / n
    ratios = [len(t) / len(b) for b, t in zip(base_outputs, tuned_outputs) if b]
    length_ratio = sum(ratios) / len(ratios) if ratios else float("nan")
    return Forgetting(similarity, 1.0 - similarity, identical, length_ratio, n)


# --------------------------------------------------------------------------- helpers


def _chars(text: str) -> list[str]:
    """The characters of ``text`` without whitespace."""
    return [ch for ch in text if not ch.isspace()]


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
