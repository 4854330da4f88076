"""Hand-computed cases for glmlab.metrics."""

import math

import pytest

from glmlab.metrics import (
    bleu4,
    forgetting,
    generation_scores,
    looks_like_triples,
    parse_triples,
    rouge_l,
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


def test_looks_like_triples():
    assert looks_like_triples(["a_组成_b\nc_组成_d", ""])
    assert not looks_like_triples(["", ""])
    assert not looks_like_triples(["这是一个问题？"])
    assert not looks_like_triples([["问题一", "问题二"]])


def test_rouge_l_by_hand():
    # LCS("abcde", "ace") = 3: P = 3/5, R = 1, F = 2*0.6/(1.6) = 0.75
    assert rouge_l("abcde", "ace") == pytest.approx(0.75)
    assert rouge_l("汽车 发动机", "汽车发动机") == 1.0  # whitespace ignored
    assert rouge_l("abc", "xyz") == 0.0
    assert rouge_l("", "abc") == 0.0
    assert rouge_l("", "") == 1.0
    # best of several references
    assert rouge_l("abcde", ["xyz", "ace"]) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        rouge_l("a", [])


def test_bleu4_by_hand():
    assert bleu4("发动机怎么保养", "发动机怎么保养") == pytest.approx(1.0)
    assert bleu4("", "abc") == 0.0
    assert bleu4("xyz", "abc") == 0.0
    # "abcd" vs "abce": p1 = 3/4, p2 = 2/3, p3 = 1/2, p4 = 0 -> smoothed 1/(2*1); equal lengths, BP = 1
    expected = math.exp((math.log(3 / 4) + math.log(2 / 3) + math.log(1 / 2) + math.log(1 / 2)) / 4)
    assert bleu4("abcd", "abce") == pytest.approx(expected)
    # brevity penalty: "abc" against "abcdef": precisions 1, 1, 1, candidate has no 4-gram -> 1/2; BP = exp(1 - 6/3)
    expected = math.exp(1 - 2) * math.exp(math.log(1 / 2) / 4)
    assert bleu4("abc", "abcdef") == pytest.approx(expected)


def test_generation_scores_mean_over_samples():
    s = generation_scores(["abcde", "q"], [["ace"], ["q", "zz"]])
    assert s["rouge_l"] == pytest.approx((0.75 + 1.0) / 2)
    assert s["n_samples"] == 2
    assert generation_scores([], [])["n_samples"] == 0


def test_forgetting():
    f = forgetting(["abcde", "你好", "same"], ["ace", "你好", "same"])
    assert f.similarity == pytest.approx((0.75 + 1 + 1) / 3)
    assert f.change == pytest.approx(1 - (0.75 + 1 + 1) / 3)
    assert f.identical == pytest.approx(2 / 3)
    assert f.length_ratio == pytest.approx((3 / 5 + 1 + 1) / 3)
    unchanged = forgetting(["a", "b"], ["a", "b"])
    assert (unchanged.similarity, unchanged.change, unchanged.identical) == (1.0, 0.0, 1.0)
    with pytest.raises(ValueError):
        forgetting(["a"], [])
