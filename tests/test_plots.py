"""Tests for medheads.plots: every plot writes a non-empty PNG and leaves matplotlib's backend alone."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from medheads.plots import (
    plot_confusion_matrix,
    plot_multilabel_confusion,
    plot_per_label_f1,
    plot_training_curves,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def backend_unchanged():
    before = matplotlib.get_backend()
    yield
    assert matplotlib.get_backend() == before


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_plot_confusion_matrix(tmp_path):
    names = ["Surgery", "Cardiovascular / Pulmonary", "Radiology"]
    out = plot_confusion_matrix([0, 0, 1, 2, 2], [0, 1, 1, 2, 0], names, tmp_path / "sub" / "cm.png", "Specialty")
    assert out == tmp_path / "sub" / "cm.png"
    assert_png(out)


def test_plot_multilabel_confusion_caps_labels(tmp_path):
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, size=(20, 35))
    y_pred = rng.integers(0, 2, size=(20, 35))
    assert_png(plot_multilabel_confusion(y_true, y_pred, [f"C{j:07d}" for j in range(35)], tmp_path / "ml.png"))
    assert_png(plot_multilabel_confusion(y_true[:, :3], y_pred[:, :3], ["a", "b", "c"], tmp_path / "ml3.png"))


def test_plot_per_label_f1_accepts_metrics_or_plain_dict(tmp_path):
    metrics = {"micro_f1": 0.7, "eval_f1_Chest": 0.9, "f1_Abdomen": 0.5, "support_Chest": 3.0}
    assert_png(plot_per_label_f1(metrics, tmp_path / "f1.png", "ROCOv2"))
    many = {f"label {i}": i / 100 for i in range(100)}
    assert_png(plot_per_label_f1(many, tmp_path / "many.png", max_labels=20))


def test_plot_training_curves(tmp_path):
    history = [
        {"loss": 1.2, "grad_norm": 3.0, "learning_rate": 5e-5, "epoch": 0.5, "step": 10},
        {"loss": 0.9, "epoch": 1.0, "step": 20},
        {"eval_loss": 0.8, "eval_f1": 0.55, "eval_runtime": 1.0, "epoch": 1.0, "step": 20},
        {"loss": 0.6, "epoch": 1.5, "step": 30},
        {"eval_loss": 0.7, "eval_f1": 0.62, "eval_runtime": 1.0, "epoch": 2.0, "step": 40},
        {"train_runtime": 12.0, "train_loss": 0.8, "epoch": 2.0, "step": 40},
    ]
    assert_png(plot_training_curves(history, tmp_path / "curves.png"))
    assert_png(plot_training_curves(history, tmp_path / "by_loss.png", metric="eval_loss"))
    # Nothing logged: still a figure, with notes instead of lines.
    assert_png(plot_training_curves([], tmp_path / "empty.png"))
