"""Metrics on hand-made cases whose values are known."""
import pytest

from common import metrics as M


def test_label_metrics():
    assert M.accuracy([1, 0, 1, 1], [1, 0, 0, 1]) == 75.0
    # F1 for class 1: P = 2/3, R = 1 -> 0.8; class 0: P = 1, R = 1/2 -> 2/3; macro = 0.7333
    assert M.binary_f1([1, 0, 1, 1], [1, 0, 0, 1]) == pytest.approx(80.0)
    assert M.macro_f1([1, 0, 1, 1], [1, 0, 0, 1]) == pytest.approx(100 * (0.8 + 2 / 3) / 2)
    assert M.mcc([1, 0, 1, 0], [1, 0, 1, 0]) == pytest.approx(100.0)
    assert M.mcc([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-100.0)


def test_correlations():
    assert M.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(100.0)
    assert M.spearman([1, 2, 3], [1, 10, 100]) == pytest.approx(100.0)
    assert M.pearson([1, 1, 1], [1, 2, 3]) == 0.0  # constant predictions: defined as 0, not NaN


def test_entity_f1_is_strict_iob2():
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    assert M.entity_f1([["B-PER", "I-PER", "O", "B-LOC"]], gold) == 100.0
    # PER boundary wrong -> 1 of 2 predicted entities right, 1 of 2 gold found -> F1 0.5
    assert M.entity_f1([["B-PER", "O", "O", "B-LOC"]], gold) == pytest.approx(50.0)


def test_text_metrics_take_the_best_reference():
    assert M.exact_match(["The cat."], [["a dog", "cat"]]) == 100.0
    # "black cat" vs "the cat": tokens {black, cat} vs {cat}: P 1/2, R 1 -> F1 2/3
    assert M.token_f1(["black cat"], [["the cat"]]) == pytest.approx(100 * 2 / 3)
    # ROUGE-L: LCS "a b d" of "a b c d" (4) and "a b d" (3): P 1, R 3/4 -> F 6/7
    assert M.rouge_l(["a b d"], [["x y", "a b c d"]]) == pytest.approx(100 * 6 / 7)


def test_multirc_em_needs_every_answer_of_a_question():
    preds, labels, groups = [1, 0, 1, 1], [1, 0, 0, 1], ["q1", "q1", "q2", "q2"]
    assert M.multirc_em(preds, labels, groups) == 50.0
    assert M.compute(["f1a", "em"], "classification", preds, labels, groups)["em"] == 50.0


# ----------------------------------------------------------------------------- E2E metrics
def test_e2e_bleu_and_rouge_on_a_hand_computed_case():
    from common import nlg_metrics as N

    p, r = ["The cat sat on the mat."], [["the cat sat on a mat ."]]
    # 7 tokens each (the final "."): 1-4-gram precisions 6/7, 4/6, 2/5, 1/4; equal lengths, no brevity penalty
    assert abs(N.bleu(p, r) - 100 * (6 / 7 * 4 / 6 * 2 / 5 * 1 / 4) ** 0.25) < 1e-9
    # LCS = 6 of 7 tokens both ways -> P = R = 6/7 -> F_beta = 6/7 for any beta
    assert abs(N.rouge_l(p, r) - 100 * 6 / 7) < 1e-9


def test_e2e_multi_reference_and_cider():
    from common import nlg_metrics as N

    refs = [["the eagle is a cheap pub .", "a cheap pub called the eagle ."],
            ["loch fyne serves french food ."], ["the mill is near the river ."]]
    perfect = [rs[0] for rs in refs]
    assert N.bleu(perfect, refs) == 100.0
    # the second reference of the first MR counts: a hypothesis equal to it is perfect too
    assert N.bleu([refs[0][1]] + perfect[1:], refs) == 100.0
    single = [[rs[0]] for rs in refs]
    assert abs(N.cider_d(perfect, single) - 10.0) < 1e-9  # identical to its only reference: cosine 1, x10
    worse = ["a pub .", "food .", "river ."]
    assert N.cider_d(worse, single) < N.cider_d(perfect, single)
    assert N.nist(worse, refs) < N.nist(perfect, refs)
    assert N.rouge_l(worse, refs) < N.rouge_l(perfect, refs)


def test_meteor_without_wordnet_is_left_out_not_faked():
    from common import metrics as M
    from common import nlg_metrics as N

    m = N.meteor(["a pub ."], [["a pub ."]])
    out = M.compute(("bleu", "meteor"), "generation", ["a pub ."], [["a pub ."]])
    assert (m is None) == ("meteor" not in out)
