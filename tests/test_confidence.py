"""Bootstrap confidence intervals (medheads.metrics) and `medheads bootstrap-ci`."""

import numpy as np
import pytest

from medheads.metrics import accuracy_ci, bootstrap_ci, multilabel_ci, multilabel_metrics, ner_f1_ci, ner_metrics

TAGS = ["O", "B-Disease", "I-Disease", "B-Chem", "I-Chem"]


def random_tags(rng, n, length=8):
    return [list(rng.choice(TAGS, size=length, p=[0.6, 0.12, 0.1, 0.1, 0.08])) for _ in range(n)]


def test_ner_f1_ci_point_equals_seqeval_and_brackets_it():
    rng = np.random.default_rng(0)
    gold = random_tags(rng, 200)
    pred = [[g if rng.random() < 0.8 else rng.choice(TAGS) for g in s] for s in gold]
    ci = ner_f1_ci(gold, pred, n_resamples=300)
    assert ci["value"] == pytest.approx(ner_metrics(gold, pred)["f1"])
    assert ci["low"] < ci["value"] < ci["high"]
    assert 0.01 < ci["high"] - ci["low"] < 0.2
    perfect = ner_f1_ci(gold, gold, n_resamples=50)
    assert perfect["value"] == perfect["low"] == perfect["high"] == 1.0


def test_accuracy_ci_matches_the_binomial_standard_error():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 6, 283)
    pred = np.where(rng.random(283) < 0.64, y, (y + 1) % 6)
    ci = accuracy_ci(y, pred, n_resamples=2000)
    p = ci["value"]
    assert ci["std"] == pytest.approx(np.sqrt(p * (1 - p) / 283), rel=0.15)  # ~0.03, as the issue says
    assert ci["high"] - ci["low"] == pytest.approx(2 * 1.96 * ci["std"], rel=0.15)


def test_multilabel_ci_points_equal_the_metrics():
    rng = np.random.default_rng(2)
    y_true = rng.random((150, 5)) < 0.3
    y_pred = np.where(rng.random((150, 5)) < 0.85, y_true, ~y_true)
    ci = multilabel_ci(y_true, y_pred, n_resamples=200)
    metrics = multilabel_metrics(y_true.astype(int), y_pred.astype(float))
    assert ci["subset_accuracy"]["value"] == pytest.approx(metrics["subset_accuracy"])
    assert ci["micro_f1"]["value"] == pytest.approx(metrics["micro_f1"])


def test_bootstrap_is_reproducible_and_checks_input():
    stat = np.random.default_rng(3).random(50)
    first = bootstrap_ci(lambda idx: stat[idx].mean(), 50, 100, seed=4)
    assert first == bootstrap_ci(lambda idx: stat[idx].mean(), 50, 100, seed=4)
    with pytest.raises(ValueError):
        bootstrap_ci(lambda idx: 0.0, 0)


def test_paired_difference_ci():
    from medheads.metrics import ner_f1_difference_ci

    rng = np.random.default_rng(5)
    gold = random_tags(rng, 150)
    worse = [[g if rng.random() < 0.7 else "O" for g in s] for s in gold]
    better = [[g if rng.random() < 0.9 else "O" for g in s] for s in gold]
    ci = ner_f1_difference_ci(gold, worse, better, n_resamples=300)
    assert ci["value"] == pytest.approx(ner_metrics(gold, better)["f1"] - ner_metrics(gold, worse)["f1"])
    assert 0 < ci["low"] < ci["value"] < ci["high"]
    same = ner_f1_difference_ci(gold, worse, worse, n_resamples=50)
    assert same["low"] == same["high"] == 0.0
