"""Scores for the two tasks of the original experiments, and a forgetting measure.

* **Triple extraction** (``spo``): the model writes ``head_relation_tail`` triples,
  one per line. The original ChatGLM fine-tuning project scored each test sample
  by comparing *sets* of lines and reported the mean of the per-sample F1 over
  the test file. :func:`triple_f1` reproduces that number exactly
  (``sample_f1``) and also gives micro precision / recall / F1 from the same
  per-sample counts, which is steadier when samples hold very different numbers
  of triples.
* **Doc-to-question** (``d2q``): free text against one or more reference
  questions. :func:`generation_scores` computes ROUGE-1/2/L and BLEU-4 exactly
  as THUDM's official ChatGLM evaluation does (ChatGLM-6B ``ptuning/main.py``
  ``compute_metrics`` and the ChatGLM2 demo): ROUGE F from ``rouge-chinese`` on
  ``jieba`` words, BLEU-4 from ``nltk`` (``sentence_bleu``, smoothing
  ``method3``) on characters. Scores are kept in [0, 1]; ×100 gives the
  official numbers. With several references, BLEU uses them all and each ROUGE
  score takes the best one. :func:`exact_match` is plain accuracy after
  ``strip()``.
* **Forgetting**: :func:`forgetting` compares what a fine-tuned model writes on
  general prompts with what the base model wrote on the same prompts
  (rouge-chinese ROUGE-L over characters).

Dependencies: ``jieba``, ``rouge-chinese`` and ``nltk`` are used (rather than
hand-written metrics) so that doc-to-question numbers are comparable with the
ones published for ChatGLM fine-tuning. NLTK's BLEU needs no downloaded data.
They are imported on first use, so importing this module stays cheap; jieba's
"Building prefix dict" messages are silenced. The triple and forgetting
bookkeeping is plain Python.
"""

from __future__ import annotations

import functools
import logging
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


def grounded_triples(prediction: str, text: str) -> str:
    """The triples of ``prediction`` (:func:`parse_triples`) whose head and tail both occur in ``text``, the record
    they were extracted from, one per line; every other line is dropped.

    Extraction names what a record says: in the original project's data every reference triple's head and tail are
    spans of its record (6,701 of 6,701), and so they are in :mod:`glmlab.synth`'s (``tests/test_metrics.py``).
    A predicted triple naming a word the record does not hold (a small model's "鼓包" for a record that says "异响")
    cannot be right, so dropping it never costs recall where the references are spans, and raises precision.
    ``python -m glmlab.predict --grounded filter`` writes these; the model's own text stays beside them.
    """
    return "\n".join(t for t in parse_triples(prediction) if _in_text(t, text))


def _in_text(triple: str, text: str) -> bool:
    head, _, tail = triple.split("_")
    return bool(head) and bool(tail) and head in text and tail in text


def grounded_prefix(answer: str, text: str) -> bool:
    """Whether ``answer`` can still grow into triples grounded in ``text``: every finished line is a triple whose head
    and tail occur in ``text`` (what :func:`grounded_triples` keeps), and the open last line is the start of one (its
    head so far, and its tail so far, are spans of ``text``; its relation is free, as the filter's is). What
    ``python -m glmlab.predict --grounded decode`` lets the model write (:class:`glmlab.generation.GroundedDecoding`)."""
    *finished, open_line = answer.split("\n")
    if not all(len(line.split("_")) == 3 and _in_text(line, text) for line in finished):
        return False
    parts = open_line.split("_")
    if len(parts) > 3 or parts[0] not in text or (len(parts) > 1 and not parts[0]):
        return False
    return len(parts) < 3 or parts[2] in text


def grounded_end(answer: str, text: str) -> bool:
    """Whether a grounded answer may end here: :func:`grounded_prefix` holds and its last line is empty (no triple, or
    a line break after the last one) or a whole grounded triple."""
    open_line = answer.split("\n")[-1]
    return grounded_prefix(answer, text) and (not open_line or (len(open_line.split("_")) == 3
                                                                 and _in_text(open_line, text)))


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

#: The score keys of :func:`generation_score` (and, with ``n_samples``, of :func:`generation_scores`).
GENERATION_KEYS = ("rouge-1", "rouge-2", "rouge-l", "bleu-4")
_ROUGE_KEYS = GENERATION_KEYS[:3]
_TOKENIZERS = ("jieba", "char")


@functools.cache
def _jieba():
    """jieba, imported on first use with its "Building prefix dict ..." chatter on stderr silenced."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba


def _tokens(text: str, tokenize: str) -> list[str]:
    """``text`` split for ROUGE: jieba words (``"jieba"``, the official way) or characters (``"char"``)."""
    if tokenize == "jieba":
        return list(_jieba().cut(text))
    if tokenize == "char":
        return list(text)
    raise ValueError(f"tokenize must be one of {_TOKENIZERS}, not {tokenize!r}")


def _rouge_f(hypothesis: Sequence[str], reference: Sequence[str], metrics: Sequence[str] = _ROUGE_KEYS) -> dict:
    """rouge-chinese F scores of two token lists, joined by spaces as the official code joins them.

    When either side is empty after stripping (rouge-chinese would raise) every score is 0.0, the
    guard of the newer official demos.
    """
    hyp, ref = " ".join(hypothesis), " ".join(reference)
    if not hyp.strip() or not ref.strip():
        return dict.fromkeys(metrics, 0.0)
    from rouge_chinese import Rouge

    scores = Rouge(metrics=list(metrics)).get_scores(hyp, ref)[0]
    return {k: float(scores[k]["f"]) for k in metrics}


def _bleu4(prediction: str, references: Sequence[str]) -> float:
    """NLTK sentence BLEU-4 over characters, smoothing ``method3``, as the official code calls it."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    return float(
        sentence_bleu([list(r) for r in references], list(prediction), smoothing_function=SmoothingFunction().method3)
    )


def _reference_list(reference: str | Sequence[str]) -> list[str]:
    references = [reference] if isinstance(reference, str) else list(reference)
    if not references:
        raise ValueError("a sample needs at least one reference")
    return references


def generation_score(prediction: str, reference: str | Sequence[str], tokenize: str = "jieba") -> dict[str, float]:
    """ROUGE-1/2/L F and BLEU-4 of one prediction, as THUDM's official ChatGLM evaluation scores a sample.

    ROUGE: ``rouge_chinese.Rouge().get_scores(' '.join(jieba.cut(pred)), ' '.join(jieba.cut(ref)))``,
    the ``'f'`` of ``rouge-1``, ``rouge-2`` and ``rouge-l``; all three are 0.0 when either joined
    string is empty after stripping (an empty prediction scores 0, it does not raise).
    ``tokenize="char"`` is a character-level variant that feeds ROUGE single characters instead of
    jieba words (not the official numbers).

    BLEU-4: ``nltk`` ``sentence_bleu([list(ref)], list(pred),
    smoothing_function=SmoothingFunction().method3)``, on *characters* whatever ``tokenize`` says,
    as the official code does. Note that a prediction shorter than 4 characters cannot reach 1
    (its missing n-gram orders are smoothed, not re-weighted): an identical 2-character pair
    scores ``(1 · 1 · 1/2 · 1/4) ** (1/4) ≈ 0.595``.

    ``reference`` is one string or a list of acceptable strings (doc-to-question has 1-4 questions
    per document). With several, BLEU gets them all (NLTK's own multi-reference BLEU: n-gram counts
    clipped by the most any reference holds, brevity penalty against the closest reference length)
    and each ROUGE score is the best over the references, taken per metric (ROUGE-1 and ROUGE-2 may
    come from different references). An empty list raises ``ValueError``.

    Scores are in [0, 1]; the official reports multiply by 100 (and round to 4 decimals).
    Note rouge-chinese's own conventions: ROUGE-N counts *distinct* n-grams, and F is
    ``2PR / (P + R + 1e-8)``, so an identical pair scores 0.99999999..., not exactly 1.
    """
    references = _reference_list(reference)
    hypothesis = _tokens(prediction, tokenize)
    scores = dict.fromkeys(_ROUGE_KEYS, 0.0)
    for ref in references:
        for key, value in _rouge_f(hypothesis, _tokens(ref, tokenize)).items():
            scores[key] = max(scores[key], value)
    scores["bleu-4"] = _bleu4(prediction, references)
    return scores


def generation_scores(
    predictions: Sequence[str], references: Sequence[str | Sequence[str]], tokenize: str = "jieba"
) -> dict[str, float]:
    """Mean ROUGE-1/2/L F and BLEU-4 over a file, each prediction against its own references.

    Returns ``{"rouge-1", "rouge-2", "rouge-l", "bleu-4", "n_samples"}``: the mean over samples of
    :func:`generation_score` (see there for how a sample is scored and for ``tokenize``), in
    [0, 1]. Multiply by 100 to get the numbers THUDM's ChatGLM fine-tuning demos report
    (ChatGLM-6B ``ptuning/main.py`` ``compute_metrics``). ``references[i]`` is a string or a list
    of acceptable strings. An empty file scores 0 with ``n_samples`` 0.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if tokenize not in _TOKENIZERS:
        raise ValueError(f"tokenize must be one of {_TOKENIZERS}, not {tokenize!r}")
    n = len(predictions)
    totals = dict.fromkeys(GENERATION_KEYS, 0.0)
    for prediction, reference in zip(predictions, references):
        for key, value in generation_score(prediction, reference, tokenize).items():
            totals[key] += value
    means = {key: (total / n if n else 0.0) for key, total in totals.items()}
    return {**means, "n_samples": n}


def exact_match(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    """Fraction of predictions equal to their reference after ``strip()`` (with a list: equal to any of them).

    Aligned lists; an empty file scores 0.0, a sample with an empty reference list raises ``ValueError``.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        return 0.0
    hits = 0
    for prediction, reference in zip(predictions, references):
        hits += any(prediction.strip() == ref.strip() for ref in _reference_list(reference))
    return hits / len(predictions)


# --------------------------------------------------------------------------- forgetting


@dataclass(frozen=True)
class Forgetting:
    """How far a fine-tuned model's answers on general prompts moved from the base model's.

    ``similarity``: mean ROUGE-L F (rouge-chinese, on *character* tokens, see :func:`forgetting`)
    of each fine-tuned answer to the base answer (1 = unchanged). ``change = 1 - similarity``.
    ``identical``: fraction of prompts answered exactly as before. ``length_ratio``: mean
    ``len(tuned) / len(base)`` (fine-tuning on short targets often shortens general answers), over
    prompts whose base answer is non-empty.
    """

    similarity: float
    change: float
    identical: float
    length_ratio: float
    n_prompts: int

    def as_dict(self) -> dict:
        """Plain dict, for JSON and printing."""
        return asdict(self)


def _answer_similarity(tuned: str, base: str) -> float:
    """Character-level ROUGE-L F of ``tuned`` against ``base`` (rouge-chinese), 1.0 for the same characters.

    Whitespace is ignored. Answers with the same non-space characters (two empty answers
    included) score exactly 1.0 (rouge-chinese's ``2PR / (P + R + 1e-8)`` would give
    0.99999999...); an empty answer against a non-empty one scores 0.0.
    """
    tuned_chars, base_chars = _chars(tuned), _chars(base)
    if tuned_chars == base_chars:
        return 1.0
    return _rouge_f(tuned_chars, base_chars, metrics=("rouge-l",))["rouge-l"]


def forgetting(base_outputs: Sequence[str], tuned_outputs: Sequence[str]) -> Forgetting:
    """Compare generations of the base and the fine-tuned model on the same prompts (aligned lists).

    Similarity is rouge-chinese ROUGE-L F over characters (whitespace ignored): general answers
    are compared with each other, not with a reference, so characters avoid any dependence on
    jieba's segmentation.
    """
    if len(base_outputs) != len(tuned_outputs):
        raise ValueError(f"{len(base_outputs)} base outputs but {len(tuned_outputs)} fine-tuned outputs")
    n = len(base_outputs)
    if n == 0:
        raise ValueError("forgetting needs at least one pair of outputs")
    similarity = sum(_answer_similarity(t, b) for b, t in zip(base_outputs, tuned_outputs)) / n
    identical = sum(b == t for b, t in zip(base_outputs, tuned_outputs)) / n
    ratios = [len(t) / len(b) for b, t in zip(base_outputs, tuned_outputs) if b]
    length_ratio = sum(ratios) / len(ratios) if ratios else float("nan")
    return Forgetting(similarity, 1.0 - similarity, identical, length_ratio, n)


# --------------------------------------------------------------------------- helpers


def _chars(text: str) -> list[str]:
    """The characters of ``text`` without whitespace."""
    return [ch for ch in text if not ch.isspace()]
