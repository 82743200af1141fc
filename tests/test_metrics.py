"""Tests for medheads.metrics against hand-worked examples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medheads.metrics import (
    classification_metrics,
    metric_key,
    multiclass_metrics,
    multilabel_metrics,
    ner_classification_report,
    ner_error_sentences,
    ner_metrics,
    tune_thresholds,
)

# --------------------------------------------------------------------------- #
# NER
# --------------------------------------------------------------------------- #

TOKENS = [["IL-2", "gene", "in", "the", "T", "cells"], ["NF-kB", "and", "p50", "bind"]]
GOLD = [
    ["B-DNA", "I-DNA", "O", "O", "B-cell_type", "I-cell_type"],
    ["B-protein", "O", "B-protein", "O"],
]
PRED = [
    ["B-DNA", "I-DNA", "O", "O", "B-cell_type", "O"],  # DNA right; cell_type span cut short
    ["B-protein", "O", "O", "B-DNA"],  # first protein right; p50 missed; spurious DNA
]


def test_ner_metrics_hand_worked():
    m = ner_metrics(GOLD, PRED)
    # Gold spans: DNA(s1 0-1), cell_type(s1 4-5), protein(s2 0), protein(s2 2) -> 4.
    # Predicted: DNA(s1 0-1), cell_type(s1 4-4), protein(s2 0), DNA(s2 3)   -> 4.
    # Exact matches: DNA(s1 0-1), protein(s2 0)                               -> TP = 2.
    # micro P = 2/4, R = 2/4, F1 = 1/2.
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(0.5)
    # DNA: TP 1, predicted 2, gold 1 -> P 1/2, R 1, F1 2/3.
    assert (m["precision_DNA"], m["recall_DNA"], m["f1_DNA"]) == pytest.approx((0.5, 1.0, 2 / 3))
    # cell_type: TP 0 -> all 0.  protein: TP 1, predicted 1, gold 2 -> P 1, R 1/2, F1 2/3.
    assert m["f1_cell_type"] == 0.0
    assert (m["precision_protein"], m["recall_protein"], m["f1_protein"]) == pytest.approx((1.0, 0.5, 2 / 3))
    assert (m["support_DNA"], m["support_cell_type"], m["support_protein"]) == (1.0, 1.0, 2.0)
    # macro over the 3 types: P (1/2+0+1)/3 = 1/2, R (1+0+1/2)/3 = 1/2, F1 (2/3+0+2/3)/3 = 4/9.
    assert m["macro_precision"] == pytest.approx(0.5)
    assert m["macro_recall"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx(4 / 9)
    # Words: 10 tokens, 3 wrong (cells, p50, bind) -> 7/10.
    assert m["word_accuracy"] == pytest.approx(0.7)
    # Word F1 per non-O tag: B-DNA TP1 FP1 -> 2/3; I-DNA 1; B-cell_type 1; I-cell_type 0;
    # B-protein TP1 FN1 -> 2/3.  Mean = (2/3 + 1 + 1 + 0 + 2/3) / 5 = 2/3.
    assert m["word_macro_f1"] == pytest.approx(2 / 3)
    assert all(type(v) is float for v in m.values())
    json.dumps(m)


def test_ner_metrics_strict_mode_rejects_spans_starting_with_inside_tag():
    gold, pred = [["B-X", "I-X", "O"]], [["I-X", "I-X", "O"]]
    # Default (conlleval) mode reads I-X I-X as one X span, equal to gold: F1 1.
    assert ner_metrics(gold, pred)["f1"] == 1.0
    # Strict IOB2 mode finds no valid predicted span: F1 0.
    assert ner_metrics(gold, pred, strict=True)["f1"] == 0.0


def test_ner_metrics_length_mismatch():
    with pytest.raises(ValueError, match="sentence 1: 4 gold tags but 3 predicted"):
        ner_metrics(GOLD, [PRED[0], PRED[1][:3]])
    with pytest.raises(ValueError, match="2 sentences of gold tags but 1 of predicted tags"):
        ner_metrics(GOLD, PRED[:1])


def test_ner_classification_report():
    report = ner_classification_report(GOLD, PRED)
    assert "protein" in report and "0.6667" in report and "micro avg" in report


def test_ner_error_sentences():
    text = ner_error_sentences(TOKENS, GOLD, [GOLD[0], PRED[1]])
    assert text == (
        "# sentence 1: 2/4 tags wrong\n"
        "  TOKEN  GOLD       PRED\n"
        "  NF-kB  B-protein  B-protein\n"
        "  and    O          O\n"
        "* p50    B-protein  O\n"
        "* bind   O          B-DNA"
    )
    both = ner_error_sentences(TOKENS, GOLD, PRED)
    assert both.count("# sentence") == 2 and "\n\n# sentence 1" in both
    assert ner_error_sentences(TOKENS, GOLD, GOLD) == ""
    with pytest.raises(ValueError, match="sentence 0: 5 tokens but 6 gold tags"):
        ner_error_sentences([TOKENS[0][:5], TOKENS[1]], GOLD, PRED)


# --------------------------------------------------------------------------- #
# Multi-label
# --------------------------------------------------------------------------- #

ML_TRUE = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
ML_PROB = np.array([[0.9, 0.2, 0.4], [0.1, 0.8, 0.6], [0.7, 0.3, 0.1], [0.2, 0.1, 0.3]])
# Predictions at 0.5:    [1,0,0],          [0,1,1],          [1,0,0],          [0,0,0]


def test_multilabel_metrics_hand_worked():
    m = multilabel_metrics(ML_TRUE, ML_PROB, 0.5, ["A", "B/x", "C c"])
    # A: TP 2 -> P 1, R 1, F1 1.  B: TP 1, FN 1 -> P 1, R 1/2, F1 2/3.  C: FP 1, FN 1 -> 0.
    assert (m["f1_A"], m["f1_B_x"], m["f1_C_c"]) == pytest.approx((1.0, 2 / 3, 0.0))
    assert (m["precision_B_x"], m["recall_B_x"], m["support_B_x"]) == pytest.approx((1.0, 0.5, 2.0))
    assert m["support_C_c"] == 1.0
    # micro: TP 3, FP 1, FN 2 -> P 3/4, R 3/5, F1 6/9.
    assert (m["micro_precision"], m["micro_recall"], m["micro_f1"]) == pytest.approx((0.75, 0.6, 2 / 3))
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    # Rows 0-2 each: 1 TP, F1 = 2/3; row 3 has no gold and no predicted label -> 0.
    assert m["samples_f1"] == pytest.approx(0.5)
    assert m["subset_accuracy"] == pytest.approx(0.25)  # only row 3 exact
    assert m["hamming_loss"] == pytest.approx(3 / 12)  # r0 C, r1 C, r2 B
    # AUC per label: A 1, B 1, C: positive 0.4 beats 0.1 and 0.3, not 0.6 -> 2/3.
    assert m["macro_roc_auc"] == pytest.approx((1 + 1 + 2 / 3) / 3)
    # micro AUC: 5 positives x 7 negatives; pairs won: 0.9, 0.8, 0.7 -> 7 each,
    # 0.4 -> 6, 0.3 -> 5 + one tie (0.5) -> 32.5 / 35.
    assert m["micro_roc_auc"] == pytest.approx(32.5 / 35)
    assert all(type(v) is float for v in m.values())


def test_multilabel_metrics_per_label_thresholds_and_undefined_auc():
    # Threshold 0.25 for B also catches row 2 (0.3) and nothing else: B becomes perfect.
    m = multilabel_metrics(ML_TRUE, ML_PROB, np.array([0.5, 0.25, 0.5]), ["A", "B", "C"])
    assert m["f1_B"] == 1.0
    no_positives = multilabel_metrics(np.zeros((3, 2)), np.full((3, 2), 0.1))
    assert "micro_roc_auc" not in no_positives and "macro_roc_auc" not in no_positives
    assert "f1_label_1" in no_positives


def test_multilabel_metrics_shape_checks():
    with pytest.raises(ValueError, match="2 label names for 3 label columns"):
        multilabel_metrics(ML_TRUE, ML_PROB, 0.5, ["A", "B"])
    with pytest.raises(ValueError, match="both become metric key 'a_b'"):
        multilabel_metrics(ML_TRUE, ML_PROB, 0.5, ["a b", "a/b", "c"])


def test_tune_thresholds_obvious_cases():
    y_true = np.array([[1, 1, 0, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0]])
    y_prob = np.array([
        # label 0: positives 0.16, 0.20; negatives 0.05, 0.08 -> perfect for t in (0.08, 0.16]:
        #   grid points 0.10, 0.15 -> the one closer to 0.5 is 0.15.
        # label 1: positives 0.91, 0.95; negatives 0.80, 0.85 -> perfect only at t = 0.90.
        # label 2: no positives -> 0.5.
        # label 3: positives 0.46, 0.61; negatives 0.51, 0.52. F1 is 2/3 for t <= 0.45
        #   (2 TP, 2 FP) and for t in (0.52, 0.61] (1 TP, 1 FN), but 2/5 at t = 0.50:
        #   0.45 and 0.55 tie at distance 0.05 from 0.5 -> the lower, 0.45.
        # label 4: positive 0.99, negatives 0.01: every grid point is perfect -> 0.5.
        [0.16, 0.95, 0.3, 0.46, 0.99],
        [0.20, 0.91, 0.7, 0.51, 0.01],
        [0.05, 0.80, 0.9, 0.61, 0.01],
        [0.08, 0.85, 0.1, 0.52, 0.01],
    ])
    y_true[:, 3] = [1, 0, 1, 0]
    assert tune_thresholds(y_true, y_prob) == pytest.approx([0.15, 0.9, 0.5, 0.45, 0.5])
    assert tune_thresholds(y_true, y_prob, grid=[0.7, 0.1]) == pytest.approx([0.1, 0.7, 0.5, 0.1, 0.7])


# --------------------------------------------------------------------------- #
# Multi-class and binary
# --------------------------------------------------------------------------- #


def one_hot(ids, n):
    return np.eye(n)[ids]


def test_multiclass_metrics_hand_worked():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 1, 0])
    m = multiclass_metrics(y_true, one_hot(y_pred, 3), ["Surgery", "Cardiovascular / Pulmonary", "Radiology"])
    # class 0: TP 2, FP 1, FN 1 -> P 2/3, R 2/3, F1 2/3 (support 3)
    # class 1: TP 2, FP 1       -> P 2/3, R 1,   F1 4/5 (support 2)
    # class 2: TP 0, FN 1       -> 0                     (support 1)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["f1_Surgery"] == pytest.approx(2 / 3)
    assert m["f1_Cardiovascular_Pulmonary"] == pytest.approx(0.8)
    assert m["recall_Cardiovascular_Pulmonary"] == 1.0
    assert m["support_Radiology"] == 1.0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0) / 3)
    assert m["weighted_f1"] == pytest.approx((3 * 2 / 3 + 2 * 0.8) / 6)
    assert m["weighted_precision"] == pytest.approx((3 * 2 / 3 + 2 * 2 / 3) / 6)
    assert m["weighted_recall"] == pytest.approx(4 / 6)
    assert "roc_auc" not in m


def test_classification_metrics_roc_auc():
    # Binary: positives score 0.4, 0.8; negatives 0.1, 0.6 -> 3 of 4 pairs ordered -> 0.75.
    p1 = np.array([0.1, 0.6, 0.4, 0.8])
    m = classification_metrics([0, 0, 1, 1], np.stack([1 - p1, p1], axis=1), ["normal", "pneumonia"])
    assert m["roc_auc"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(0.5)  # predicted 0, 1, 0, 1
    # Three classes, class 2 absent from y_true: OvR over classes 0 and 1 only.
    # class 0 scores: positives 0.7, 0.5; negatives 0.6, 0.2 -> 3/4.  class 1: scores 0.3, 0.5 for
    # negatives and 0.4, 0.8 for positives -> 3/4.  Mean 0.75.
    probs = np.array([[0.7, 0.3, 0.0], [0.5, 0.5, 0.0], [0.6, 0.4, 0.0], [0.2, 0.8, 0.0]])
    m3 = classification_metrics([0, 0, 1, 1], probs, ["a", "b", "c"])
    assert m3["roc_auc"] == pytest.approx(0.75)
    assert "roc_auc" not in classification_metrics([1, 1], np.array([[0.2, 0.8], [0.4, 0.6]]), ["n", "p"])


def test_metric_key():
    assert metric_key("Cardiovascular / Pulmonary") == "Cardiovascular_Pulmonary"
    assert metric_key("Consult - History and Phy.") == "Consult_History_and_Phy"
    assert metric_key("cell_type") == "cell_type"
