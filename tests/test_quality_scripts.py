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


def _write_conll(path: Path, sentences: list[list[tuple[str, str]]]) -> Path:
    path.write_text("\n\n".join("\n".join(f"{w}\t{t}" for w, t in s) for s in sentences) + "\n")
    return path


def test_ner_consistency_sorts_mentions_and_errors_by_hand_counted_cases(tmp_path):
    """scripts/ner_consistency.py: each evaluation mention's status, the agreement rate and the error kinds, on
    sentences where every count is known by hand."""
    script = load_script("ner_consistency")
    train = _write_conll(tmp_path / "train.tsv", [
        [("IL-2", "B-protein"), ("binds", "O")],                        # IL-2: protein x3
        [("IL-2", "B-protein"), ("and", "O"), ("IL-2", "B-protein")],
        [("T", "B-cell_type"), ("cells", "I-cell_type")],                # T cells: cell_type x1, untagged x2
        [("T", "O"), ("cells", "O"), ("grow", "O")],
        [("T", "O"), ("cells", "O")],
        [("NF", "B-protein"), ("kappa", "I-protein"), ("B", "I-protein")],  # kappa only inside a longer entity
        [("CD4", "B-protein"), ("and", "O"), ("CD4", "B-DNA"), ("CD4", "B-protein")],  # CD4: protein 2, DNA 1
    ])
    devel = _write_conll(tmp_path / "devel.tsv", [
        [("IL-2", "B-protein"), ("binds", "O")],              # consistent, found
        [("T", "B-cell_type"), ("cells", "I-cell_type")],     # train majority differs (untagged 2 vs 1), missed
        [("kappa", "B-protein")],                              # unseen on its own, type error
        [("CD4", "B-protein"), ("IL-2", "O")],                 # majority agrees (found); IL-2 untagged: disagreement
    ])
    result, index = script.consistency(script.read_conll(train), script.read_conll(devel))
    assert result["evaluation_mentions"] == 4
    assert result["mention_status"] == {"consistent": 1, "train majority differs": 1, "unseen": 1,
                                        "train majority agrees": 1}
    # comparable occurrences: IL-2 x2 (protein, untagged), T cells x1 (cell_type vs majority untagged), CD4 x1
    assert result["comparable_occurrences"] == 4
    assert result["agreement_rate"] == pytest.approx(2 / 4)

    predictions = tmp_path / "pred.tsv"
    predictions.write_text(
        "IL-2\tB-protein\tB-protein\nbinds\tO\tO\n\n"
        "T\tB-cell_type\tO\ncells\tI-cell_type\tO\n\n"
        "kappa\tB-protein\tB-DNA\n\n"
        "CD4\tB-protein\tB-protein\nIL-2\tO\tB-protein\n")
    errors = script.error_analysis(script.read_predictions(predictions), index)
    assert errors["outcome"] == {"correct": 2, "missed (no overlapping prediction)": 1,
                                 "type error (right words)": 1}
    assert errors["spurious_predictions_without_overlap"] == 1
    assert errors["recall_by_status"]["consistent"] == {"mentions": 1, "recall": 1.0}
    assert errors["recall_by_status"]["train majority differs"]["recall"] == 0.0

    assert script.main([str(train), str(devel), "--predictions", str(predictions),
                        "--output_dir", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "consistency.json").read_text())
    assert report["errors"]["gold_mentions"] == 4
    assert "| train majority differs | 1 | 25.0% |" in (tmp_path / "out" / "consistency.md").read_text()
