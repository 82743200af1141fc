"""scripts/mtsamples_levers.py: the closed-form leave-one-out accuracy used to choose settings, and the label-noise
ceiling, on data small enough to check by hand."""

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("class_weight", [None, "balanced"])
def test_leave_one_out_accuracy_matches_refitting(class_weight):
    from sklearn.preprocessing import StandardScaler

    levers = load_script("mtsamples_levers")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(45, 12))
    y = rng.choice(3, 45, p=[0.5, 0.3, 0.2])
    x[:, 0] += y
    fast = levers._loo_accuracies(x, y, class_weight)
    xs = np.hstack([StandardScaler().fit_transform(x), np.ones((45, 1))])
    targets = np.where(y[:, None] == np.arange(3), 1.0, -1.0)
    weights = (45 / (3 * np.bincount(y)))[y] if class_weight else np.ones(45)
    for alpha in levers.ALPHAS:
        hits = 0
        for i in range(45):
            keep = np.arange(45) != i
            a = xs[keep].T @ (weights[keep, None] * xs[keep]) + alpha * np.eye(13)
            coef = np.linalg.solve(a, xs[keep].T @ (weights[keep, None] * targets[keep]))
            hits += (xs[i] @ coef).argmax() == y[i]
        assert fast[alpha] == pytest.approx(hits / 45)


def test_ceiling_counts_verbatim_copies_under_other_labels(tmp_path):
    levers = load_script("mtsamples_levers")
    rows = [("note a", "Surgery", "train"), ("note b", "Radiology", "train"), ("note c", "Orthopedic", "train"),
            ("Note  A", "Orthopedic", "validation"),   # a copy (case, spacing) of a training note, another label
            ("note c", "Orthopedic", "validation"),    # a copy with the same label
            ("note d", "Radiology", "validation")]
    path = tmp_path / "mt.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["transcription", "medical_specialty", "split"])
        writer.writerows(rows)
    levers.main(["ceiling", "--train_file", str(path), "--output_dir", str(tmp_path / "out")])
    result = json.loads((tmp_path / "out" / "ceiling.json").read_text())
    assert result["validation_notes"] == 3
    assert result["validation_notes_with_a_verbatim_copy_under_another_label"] == 1
    assert result["validation_notes_whose_text_is_in_train"] == 2
    assert result["of_those_with_the_same_label_in_train"] == 1
    # note a: 1 of its 2 copies is Orthopedic -> 0.5; note c: 2 of 2 -> 1; note d: alone -> 1
    assert result["ceiling_label_drawn_from_the_copies"] == pytest.approx((0.5 + 1 + 1) / 3)
