"""glmlab.metrics: triple F1 by hand; ROUGE / BLEU pinned to hand-computed numbers and to the official ChatGLM code."""

import math
import subprocess
import sys
from pathlib import Path

import pytest

from glmlab.metrics import (
    exact_match,
    forgetting,
    generation_score,
    generation_scores,
    grounded_end,
    grounded_prefix,
    grounded_triples,
    looks_like_triples,
    parse_triples,
    triple_counts,
    triple_f1,
)


def test_parse_triples_keeps_only_three_part_lines():
    text = "a_组成_b\n胡说八道\nc_部件故障_d_e\nx_性能故障_y\n"
    assert parse_triples(text) == ["a_组成_b", "x_性能故障_y"]
    assert parse_triples("") == []


def test_triple_counts_as_the_original():
    # 2 predicted (a duplicate and a non-triple line dropped), 3 reference, 1 shared
    c = triple_counts("a_组成_b\na_组成_b\nx_y_z\n废话", "a_组成_b\nc_组成_d\ne_检测工具_f")
    assert (c.true_positives, c.n_predicted, c.n_reference) == (1, 2, 3)
    assert c.precision == pytest.approx(1 / 2)
    assert c.recall == pytest.approx(1 / 3)
    assert c.f1 == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))  # 0.4


def test_triple_counts_empty_cases():
    # nothing predicted: precision 0, F1 0
    c = triple_counts("", "a_组成_b")
    assert (c.precision, c.recall, c.f1, c.n_predicted, c.n_reference) == (0.0, 0.0, 0.0, 0, 1)
    # empty reference: one unmatchable gold item "" (the original's counting), F1 0 even for an empty prediction
    c = triple_counts("", "")
    assert (c.n_predicted, c.n_reference, c.f1) == (0, 1, 0.0)
    c = triple_counts("a_组成_b", "")
    assert (c.precision, c.recall, c.f1) == (0.0, 0.0, 0.0)


def test_triple_f1_micro_and_sample_mean():
    preds = ["a_组成_b\nc_组成_d", "x_组成_y", ""]
    refs = ["a_组成_b", "x_组成_y\nz_组成_w", "q_组成_r"]
    s = triple_f1(preds, refs)
    # per sample: (P,R,F) = (1/2, 1, 2/3), (1, 1/2, 2/3), (0, 0, 0)
    assert s.sample_f1 == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    # micro: tp 2, predicted 3, reference 4
    assert s.precision == pytest.approx(2 / 3)
    assert s.recall == pytest.approx(2 / 4)
    assert s.f1 == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))
    assert s.n_samples == 3
    perfect = triple_f1(["a_组成_b"], ["a_组成_b"])
    assert (perfect.precision, perfect.recall, perfect.f1, perfect.sample_f1) == (1.0, 1.0, 1.0, 1.0)
    empty = triple_f1([], [])
    assert (empty.f1, empty.sample_f1, empty.n_samples) == (0.0, 0.0, 0)
    with pytest.raises(ValueError):
        triple_f1(["a"], [])


def test_grounded_triples_keep_what_the_record_holds():
    record = "检修时发现发电机异响，随后发现怠速过低。"
    prediction = "发电机_部件故障_鼓包\n发电机_部件故障_异响\n怠速_性能故障_过高\n怠速_性能故障_过低\n说明：无\n_部件故障_异响"
    # 鼓包 and 过高 are not in the record; a line that is no triple, or has an empty head, is dropped too
    assert grounded_triples(prediction, record) == "发电机_部件故障_异响\n怠速_性能故障_过低"
    # a triple whose words are both in the record stays, right or wrong: grounding checks spans, not facts
    assert grounded_triples("怠速_部件故障_异响", record) == "怠速_部件故障_异响"
    assert grounded_triples("", record) == ""
    scores = triple_f1([prediction, grounded_triples(prediction, record)], ["发电机_部件故障_异响\n怠速_性能故障_过低"] * 2)
    assert scores.recall == 1.0 and scores.precision == pytest.approx(4 / 7)  # right: 2 of the 5 raw triples, then 2 of 2


def test_grounded_prefix_is_what_can_still_become_grounded_triples():
    record = "检修时发现压缩机异响，随后发现怠速过低。"
    # the open line: its head and tail so far are spans of the record; the relation is free, as the filter's is
    for answer in ("", "压缩", "压缩机", "压缩机_", "压缩机_部件", "压缩机_部件故障_", "压缩机_部件故障_异",
                   "压缩机_部件故障_异响\n", "压缩机_部件故障_异响\n怠速_性能故障_过低", "压缩机_随便_异响"):
        assert grounded_prefix(answer, record), answer
    for answer in ("鼓", "压缩机_部件故障_鼓", "压缩机_部件故障_异响_", "_部件故障", "压缩机_部件故障_鼓包\n怠速",
                   "压缩机_部件故障_异响\n\n", "压缩机_部件故障\n"):
        assert not grounded_prefix(answer, record), answer
    # it may end with no triple, after a line break, or after a whole grounded triple; not inside one
    assert grounded_end("", record) and grounded_end("压缩机_部件故障_异响", record)
    assert grounded_end("压缩机_部件故障_异响\n", record)
    for answer in ("压缩机", "压缩机_部件故障", "压缩机_部件故障_", "压缩机_部件故障_鼓包"):
        assert not grounded_end(answer, record), answer
    # an answer that may end is one the filter keeps whole
    for answer in ("压缩机_部件故障_异响", "压缩机_部件故障_异响\n怠速_性能故障_过低"):
        assert grounded_triples(answer, record) == answer


def test_every_reference_triple_of_the_synth_data_is_grounded():
    """So grounding can only drop wrong triples on these files: recall never falls."""
    import json

    from glmlab.notebooks import experiment

    for name in ("spo_train", "spo_valid", "spo_test"):
        for line in experiment.data_path(name).read_text(encoding="utf-8").splitlines():
            sample = json.loads(line)
            assert grounded_triples(sample["output"], sample["input"]) == sample["output"], (name, sample)


def test_looks_like_triples():
    assert looks_like_triples(["a_组成_b\nc_组成_d", ""])
    assert not looks_like_triples(["", ""])
    assert not looks_like_triples(["这是一个问题？"])
    assert not looks_like_triples([["问题一", "问题二"]])


# --------------------------------------------------------------------------- doc-to-question
#
# Fixed pairs whose jieba segmentation is unambiguous (checked first, so a changed jieba
# dictionary fails loudly instead of silently moving the numbers):
#   P = 发动机怎么保养 -> 发动机 / 怎么 / 保养
#   A = 发动机如何保养 -> 发动机 / 如何 / 保养
#   B = 汽车怎么保养   -> 汽车 / 怎么 / 保养
#   D = 汽车轮胎和刹车怎么保养 -> 汽车轮胎 / 和 / 刹车 / 怎么 / 保养
# rouge-chinese computes F as 2PR / (P + R + 1e-8), hence the tolerance of 1e-7 on ROUGE.

P = "发动机怎么保养"
A = "发动机如何保养"
B = "汽车怎么保养"
D = "汽车轮胎和刹车怎么保养"
ROUGE_TOL = 1e-7


def rouge_approx(value):
    return pytest.approx(value, abs=ROUGE_TOL)


def test_jieba_segmentation_of_the_fixed_pairs():
    import jieba

    assert list(jieba.cut(P)) == ["发动机", "怎么", "保养"]
    assert list(jieba.cut(A)) == ["发动机", "如何", "保养"]
    assert list(jieba.cut(B)) == ["汽车", "怎么", "保养"]
    assert list(jieba.cut(D)) == ["汽车轮胎", "和", "刹车", "怎么", "保养"]


def test_generation_score_by_hand_jieba():
    s = generation_score(P, A)
    assert set(s) == {"rouge-1", "rouge-2", "rouge-l", "bleu-4"}
    # words: 3 vs 3, shared {发动机, 保养}: P = R = 2/3
    assert s["rouge-1"] == rouge_approx(2 / 3)
    # bigrams (发动机 怎么)(怎么 保养) vs (发动机 如何)(如何 保养): none shared
    assert s["rouge-2"] == 0.0
    # LCS 发动机 … 保养 = 2 words
    assert s["rouge-l"] == rouge_approx(2 / 3)
    # BLEU on characters, 7 vs 7 (BP = 1): p1 = 5/7, p2 = 3/6 (发动 动机 保养), p3 = 1/5 (发动机),
    # p4 = 0/4 -> method3 smooths to 1/(2*4); geometric mean = (1/112) ** (1/4) ≈ 0.30739
    assert s["bleu-4"] == pytest.approx((5 / 7 * 1 / 2 * 1 / 5 * 1 / 8) ** 0.25)
    assert s["bleu-4"] == pytest.approx(0.3073940764756322)

    s = generation_score(P, B)
    # words shared {怎么, 保养}: R1 = 2/3; bigram (怎么 保养) shared, 1 of 2 each side: R2 = 1/2; LCS 2
    assert (s["rouge-1"], s["rouge-2"], s["rouge-l"]) == (rouge_approx(2 / 3), rouge_approx(1 / 2), rouge_approx(2 / 3))
    # chars 7 vs 6 (BP = 1): p1 = 4/7, p2 = 3/6, p3 = 2/5, p4 = 1/4 (怎么保养) -> (1/35) ** (1/4)
    assert s["bleu-4"] == pytest.approx((1 / 35) ** 0.25)

    s = generation_score(P, D)
    # R1: P = 2/3, R = 2/5 -> F = 1/2; R2: P = 1/2, R = 1/4 -> F = 1/3; RL: LCS 2 -> 1/2
    assert (s["rouge-1"], s["rouge-2"], s["rouge-l"]) == (rouge_approx(1 / 2), rouge_approx(1 / 3), rouge_approx(1 / 2))


def test_bleu_by_hand_identical_and_brevity_penalty():
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    assert generation_score(P, P)["bleu-4"] == 1.0
    # "发动机" (3 chars) against P (7 chars): p1 = p2 = p3 = 1, no 4-gram -> 1/2;
    # BP = exp(1 - 7/3)
    expected = math.exp(1 - 7 / 3) * (1 / 2) ** 0.25
    s = generation_score("发动机", P)
    assert s["bleu-4"] == pytest.approx(expected)
    assert s["bleu-4"] == pytest.approx(0.22165788851265286)
    # ROUGE on words: 发动机 vs 发动机/怎么/保养: R1 = RL = 2·1·(1/3)/(4/3) = 1/2, no bigram on the left
    assert (s["rouge-1"], s["rouge-2"], s["rouge-l"]) == (rouge_approx(1 / 2), 0.0, rouge_approx(1 / 2))
    # the official call, made directly: character lists, method3
    direct = sentence_bleu([list(P)], list("发动机"), smoothing_function=SmoothingFunction().method3)
    assert s["bleu-4"] == pytest.approx(direct)
    # official behaviour kept: identical strings shorter than 4 characters do not reach 1
    # (p3, p4 smoothed to 1/2, 1/4; weights are not re-normalised): (1/8) ** (1/4)
    short = generation_score("保养", "保养")
    assert short["bleu-4"] == pytest.approx((1 / 8) ** 0.25)
    # one jieba word: no bigram at all, so ROUGE-2 is 0 even for identical text
    assert (short["rouge-1"], short["rouge-2"]) == (rouge_approx(1.0), 0.0)


def test_empty_prediction_scores_zero_without_raising():
    for empty in ("", "   ", "\n"):
        assert generation_score(empty, A) == {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0, "bleu-4": 0.0}
    # and an empty reference
    assert generation_score(P, "") == {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0, "bleu-4": 0.0}
    s = generation_scores(["", P], [[A], [A]])
    assert s["rouge-1"] == rouge_approx((0 + 2 / 3) / 2)
    with pytest.raises(ValueError):
        generation_score(P, [])


def test_multi_reference_rouge_takes_best_per_metric():
    # a useless first reference does not drag the score down: best, not first, not mean
    assert generation_score(P, ["轮胎多久换一次", A]) == pytest.approx(generation_score(P, A), abs=ROUGE_TOL)
    # ROUGE-1/L are best against A (2/3 > 1/2), ROUGE-2 against D (1/3 > 0)
    for refs in ([A, D], [D, A]):
        s = generation_score(P, refs)
        assert s["rouge-1"] == rouge_approx(2 / 3), refs
        assert s["rouge-2"] == rouge_approx(1 / 3), refs
        assert s["rouge-l"] == rouge_approx(2 / 3), refs


def test_multi_reference_bleu_uses_all_references():
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    # with A and B together every n-gram is clipped by the reference holding most of it:
    # p1 = 7/7, p2 = 5/6 (发动 动机 怎么 么保 保养), p3 = 3/5 (发动机 怎么保 么保养), p4 = 1/4 (怎么保养);
    # closest reference length 7 -> BP = 1. (1/8) ** (1/4) ≈ 0.5946, above either reference alone
    s = generation_score(P, [A, B])
    assert s["bleu-4"] == pytest.approx((1 * 5 / 6 * 3 / 5 * 1 / 4) ** 0.25)
    assert s["bleu-4"] > max(generation_score(P, A)["bleu-4"], generation_score(P, B)["bleu-4"])
    direct = sentence_bleu([list(A), list(B)], list(P), smoothing_function=SmoothingFunction().method3)
    assert s["bleu-4"] == pytest.approx(direct)


def test_char_option_differs_from_jieba_where_segmentation_matters():
    jieba_scores = generation_score(P, A)
    char_scores = generation_score(P, A, tokenize="char")
    # characters: 7 distinct each side, 5 shared -> R1 = RL = 5/7; bigrams 3 of 6 shared -> R2 = 1/2
    assert char_scores["rouge-1"] == rouge_approx(5 / 7)
    assert char_scores["rouge-2"] == rouge_approx(1 / 2)
    assert char_scores["rouge-l"] == rouge_approx(5 / 7)
    assert jieba_scores["rouge-2"] == 0.0 and jieba_scores["rouge-1"] == rouge_approx(2 / 3)
    # BLEU is on characters either way, as in the official code
    assert char_scores["bleu-4"] == jieba_scores["bleu-4"]
    assert generation_scores([P], [A], tokenize="char")["rouge-1"] == rouge_approx(5 / 7)
    with pytest.raises(ValueError):
        generation_scores([P], [A], tokenize="words")


def _official_compute_metrics(decoded_preds, decoded_labels):
    """THUDM ChatGLM2-6B ptuning/main.py compute_metrics (the part after decoding), verbatim but for names."""
    import jieba
    import numpy as np
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_chinese import Rouge

    score_dict = {"rouge-1": [], "rouge-2": [], "rouge-l": [], "bleu-4": []}
    for pred, label in zip(decoded_preds, decoded_labels):
        hypothesis = list(jieba.cut(pred))
        reference = list(jieba.cut(label))
        rouge = Rouge()
        if len(" ".join(hypothesis).split()) == 0 or len(" ".join(reference).split()) == 0:
            result = {"rouge-1": {"f": 0.0}, "rouge-2": {"f": 0.0}, "rouge-l": {"f": 0.0}}
        else:
            scores = rouge.get_scores(" ".join(hypothesis), " ".join(reference))
            result = scores[0]
        for k, v in result.items():
            score_dict[k].append(round(v["f"] * 100, 4))
        bleu_score = sentence_bleu([list(label)], list(pred), smoothing_function=SmoothingFunction().method3)
        score_dict["bleu-4"].append(round(bleu_score * 100, 4))
    for k, v in score_dict.items():
        score_dict[k] = float(np.mean(v))
    return score_dict


def test_generation_scores_match_the_official_chatglm_evaluation():
    preds = [P, "发动机", "", "今天天气很好，我们去公园散步吧。", "请问汽车轮胎多久需要更换一次？"]
    labels = [A, P, B, "今天天气不错，我们去公园走走。", "汽车轮胎一般多久换一次？"]
    ours = generation_scores(preds, labels)
    official = _official_compute_metrics(preds, labels)
    assert ours["n_samples"] == 5
    for key in ("rouge-1", "rouge-2", "rouge-l", "bleu-4"):
        # official numbers are x100 and rounded per sample to 4 decimals
        assert ours[key] * 100 == pytest.approx(official[key], abs=1e-4), key
    # and the mean is what it should be for the first three, by hand
    firsts = generation_scores(preds[:3], labels[:3])
    assert firsts["rouge-1"] == rouge_approx((2 / 3 + 1 / 2 + 0) / 3)
    assert firsts["bleu-4"] == pytest.approx(((1 / 112) ** 0.25 + math.exp(1 - 7 / 3) * (1 / 2) ** 0.25 + 0) / 3)
    assert generation_scores([], []) == {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0, "bleu-4": 0.0, "n_samples": 0}
    with pytest.raises(ValueError):
        generation_scores([P], [])


def test_exact_match():
    assert exact_match(["发动机怎么保养 ", "b", "c"], ["发动机怎么保养", "x", ["y", " c\n"]]) == pytest.approx(2 / 3)
    assert exact_match(["a"], [["x", "y"]]) == 0.0
    assert exact_match(["发动机"], ["发动 机"]) == 0.0  # inner whitespace is not ignored
    assert exact_match([], []) == 0.0
    with pytest.raises(ValueError):
        exact_match(["a"], [])
    with pytest.raises(ValueError):
        exact_match(["a"], [[]])


def test_import_is_cheap_and_jieba_is_quiet():
    """Loading glmlab/metrics.py imports none of the metric libraries, and scoring prints nothing."""
    code = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('glm_metrics', sys.argv[1])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['glm_metrics'] = m; spec.loader.exec_module(m)\n"
        "print(sorted(k for k in ('jieba', 'nltk', 'rouge_chinese') if k in sys.modules))\n"
        "print(round(m.generation_score('发动机怎么保养', '发动机如何保养')['rouge-1'], 6))\n"
    )
    path = Path(__file__).resolve().parents[1] / "glmlab" / "metrics.py"
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], check=False, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[]", "0.666667"]
    assert done.stderr == ""  # no "Building prefix dict from the default dictionary ..."


# --------------------------------------------------------------------------- forgetting


def test_forgetting():
    f = forgetting(["abcde", "你好", "same"], ["ace", "你好", "same"])
    # ROUGE-L over characters: LCS(ace, abcde) = 3, P = 1, R = 3/5 -> F = 0.75
    assert f.similarity == pytest.approx((0.75 + 1 + 1) / 3, abs=ROUGE_TOL)
    assert f.change == pytest.approx(1 - (0.75 + 1 + 1) / 3, abs=ROUGE_TOL)
    assert f.identical == pytest.approx(2 / 3)
    assert f.length_ratio == pytest.approx((3 / 5 + 1 + 1) / 3)
    unchanged = forgetting(["a", "发动机怎么保养", ""], ["a", "发动机怎么保养", ""])
    assert (unchanged.similarity, unchanged.change, unchanged.identical) == (1.0, 0.0, 1.0)
    assert unchanged.n_prompts == 3
    # characters, not words: 发动机怎么保养 vs 发动机如何保养 share 5 of 7 characters in order
    moved = forgetting([A], [P])
    assert moved.similarity == pytest.approx(5 / 7, abs=ROUGE_TOL)
    assert moved.identical == 0.0
    # an answer that vanished scores 0 (no exception); whitespace alone does not count as a change
    gone = forgetting(["发动机", "汽车 发动机"], ["", "汽车发动机"])
    assert gone.similarity == pytest.approx(0.5)
    assert gone.identical == 0.0
    assert set(unchanged.as_dict()) == {"similarity", "change", "identical", "length_ratio", "n_prompts"}
    with pytest.raises(ValueError):
        forgetting(["a"], [])
