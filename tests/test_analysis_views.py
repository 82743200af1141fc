"""Seed 000's analysis views written by train-text: label co-occurrence / correlation, 2-D map of pooled states."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import save_tiny_encoder
from transformers import AutoTokenizer

from medheads import FrozenEncoderMultiLabel
from medheads.plots import label_cooccurrence, plot_embedding_map, plot_label_cooccurrence, project_2d

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "scripts" / "sample_data"


def test_label_cooccurrence_hand_worked():
    y = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 0], [0, 0, 1]])
    counts, correlation = label_cooccurrence(y)
    assert counts.tolist() == [[3, 2, 0], [2, 2, 0], [0, 0, 1]]
    # phi of columns 0 and 1: (p11 - p1 p2) / sqrt(p1 q1 p2 q2) = (0.5 - 0.75*0.5) / sqrt(0.75*0.25*0.5*0.5)
    assert correlation[0, 1] == pytest.approx((0.5 - 0.375) / np.sqrt(0.75 * 0.25 * 0.25))
    assert correlation[0, 2] == pytest.approx(-1.0)
    np.testing.assert_allclose(correlation, np.corrcoef(y.T))
    # a label in every row has no variance: correlation 0 off the diagonal, no NaN
    _, constant = label_cooccurrence(np.array([[1, 0], [1, 1], [1, 0]]))
    assert constant.tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_pca_map_separates_clusters_and_matches_sklearn():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 5, (3, 16))
    x = np.concatenate([c + rng.normal(0, 0.5, (40, 16)) for c in centres])
    groups = np.repeat(np.arange(3), 40)
    coords, method = project_2d(x, method="pca")
    assert method == "pca" and coords.shape == (120, 2)
    reference = PCA(n_components=2).fit_transform(x)
    np.testing.assert_allclose(np.abs(coords), np.abs(reference), atol=1e-8)
    # clusters stay apart: every between-centre distance exceeds 3x the largest within-cluster spread
    means = np.stack([coords[groups == g].mean(0) for g in range(3)])
    spread = max(np.linalg.norm(coords[groups == g] - means[g], axis=1).mean() for g in range(3))
    distances = [np.linalg.norm(means[a] - means[b]) for a in range(3) for b in range(a + 1, 3)]
    assert min(distances) > 3 * spread


def test_plots_write_images(tmp_path):
    y = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1]])
    assert plot_label_cooccurrence(y, ["a", "b", "c"], tmp_path / "c.png").stat().st_size > 5_000
    coords = np.random.default_rng(0).normal(size=(30, 2))
    labels = ["x"] * 10 + ["y"] * 10 + [None] * 10
    assert plot_embedding_map(coords, labels, tmp_path / "m.png").stat().st_size > 5_000


def write_split(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["caption", "cuis_manual"])
        writer.writeheader()
        writer.writerows({"caption": r["caption"], "cuis_manual": r["cuis_manual"]} for r in rows)
    return path


def test_umap_map_when_installed_keeps_clusters_apart():
    pytest.importorskip("umap")
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 5, (3, 16))
    x = np.concatenate([c + rng.normal(0, 0.5, (40, 16)) for c in centres])
    groups = np.repeat(np.arange(3), 40)
    coords, method = project_2d(x)
    assert method == "umap" and coords.shape == (120, 2)
    means = np.stack([coords[groups == g].mean(0) for g in range(3)])
    spread = max(np.linalg.norm(coords[groups == g] - means[g], axis=1).mean() for g in range(3))
    assert min(np.linalg.norm(means[a] - means[b]) for a in range(3) for b in range(a + 1, 3)) > 3 * spread


def test_train_text_writes_the_views_from_the_real_labels_and_features(tmp_path, monkeypatch):
    from medheads.training.text_classification import main

    # PCA, whatever is installed: the map is checked coordinate by coordinate against a recomputation from the
    # saved model, which PCA reproduces (to float noise) and UMAP, being stochastic and nonlinear, does not
    monkeypatch.setitem(sys.modules, "umap", None)

    with open(SAMPLE / "captions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    train, validation = write_split(tmp_path / "train.csv", rows[:300]), write_split(tmp_path / "val.csv", rows[500:])
    encoder = save_tiny_encoder(tmp_path / "enc")
    out = tmp_path / "run"
    main(["--model_name_or_path", str(encoder), "--train_file", str(train), "--validation_file", str(validation),
          "--text_column_name", "caption", "--label_column_name", "cuis_manual", "--output_dir", str(out),
          "--feature_cache_dir", str(tmp_path / "cache"), "--num_train_epochs", "2", "--do_train", "--do_eval",
          "--disable_tqdm", "true", "--use_cpu", "true", "--dataloader_pin_memory", "false"])
    summary = json.loads((out / "metrics.json").read_text())
    plots = [Path(p).name for p in summary["plots"]]
    assert {"label_cooccurrence.png", "embedding_map_validation.png", "confusion_matrix_validation.png"} <= set(plots)
    views = json.loads((out / "analysis_views.json").read_text())

    # co-occurrence: exactly Y^T Y of the training file's label sets
    labels = views["label_cooccurrence"]["labels"]
    y = np.array([[label in r["cuis_manual"].split(";") for label in labels] for r in rows[:300]], dtype=int)
    assert views["label_cooccurrence"]["counts"] == (y.T @ y).tolist()
    np.testing.assert_allclose(views["label_cooccurrence"]["correlation"], label_cooccurrence(y)[1], atol=1e-6)

    # map: the projection of the saved model's pooled states of the validation captions
    model = FrozenEncoderMultiLabel.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        inputs = tokenizer([r["caption"] for r in rows[500:]], padding=True, return_tensors="pt")
        pooled = model.forward_features(**inputs).numpy()
    coords, method = project_2d(pooled)
    assert views["embedding_map"]["method"] == method
    np.testing.assert_allclose(np.abs(views["embedding_map"]["coordinates"]), np.abs(coords), atol=2e-3)
    frequency = y.sum(0)
    first = [label for label in labels if label in rows[500]["cuis_manual"].split(";")]
    assert views["embedding_map"]["labels"][0] == max(first, key=lambda label: frequency[labels.index(label)])

    # the card explains the views and shows them
    from medheads.hub.publishing import build_model_card

    card = str(build_model_card(out, "org/tiny", revision="0" * 40))
    assert "label co-occurrence" in card and "2-D map" in card and "per-label confusion" in card
    assert "(label_cooccurrence.png)" in card and "(embedding_map_validation.png)" in card

    # bootstrap CIs from the per-text validation rows: the point values are the run's own metrics
    from medheads.training.cli import main as medheads

    assert medheads(["bootstrap-ci", str(out), "--n_resamples", "200"]) == 0
    intervals = json.loads((out / "confidence_intervals.json").read_text())
    results = json.loads((out / "all_results.json").read_text())
    assert intervals["validation_subset_accuracy"]["value"] == pytest.approx(results["eval_subset_accuracy"])
    assert intervals["validation_micro_f1"]["value"] == pytest.approx(results["eval_micro_f1"])
    assert intervals["validation_micro_f1"]["low"] <= results["eval_micro_f1"] <= intervals["validation_micro_f1"]["high"]
