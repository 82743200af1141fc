"""Bootstrap confidence intervals (medheads.metrics) and `medheads bootstrap-ci`."""

import json
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


def test_paired_accuracy_and_multilabel_differences():
    from medheads.metrics import accuracy_difference_ci, multilabel_difference_ci

    rng = np.random.default_rng(6)
    y = rng.integers(0, 6, 300)
    worse = np.where(rng.random(300) < 0.6, y, (y + 1) % 6)
    better = np.where(rng.random(300) < 0.9, y, (y + 2) % 6)
    ci = accuracy_difference_ci(y, worse, better, n_resamples=300)
    assert ci["value"] == pytest.approx((better == y).mean() - (worse == y).mean())
    assert 0 < ci["low"] < ci["value"] < ci["high"]
    same = accuracy_difference_ci(y, worse, worse, n_resamples=50)
    assert same["low"] == same["high"] == 0.0

    y_true = rng.random((200, 5)) < 0.3
    a = np.where(rng.random((200, 5)) < 0.7, y_true, ~y_true)
    b = np.where(rng.random((200, 5)) < 0.95, y_true, ~y_true)
    diff = multilabel_difference_ci(y_true, a, b, n_resamples=300)
    ma, mb = multilabel_metrics(y_true.astype(int), a.astype(float)), multilabel_metrics(y_true.astype(int), b.astype(float))
    assert diff["subset_accuracy"]["value"] == pytest.approx(mb["subset_accuracy"] - ma["subset_accuracy"])
    assert diff["micro_f1"]["value"] == pytest.approx(mb["micro_f1"] - ma["micro_f1"])
    assert diff["micro_f1"]["low"] > 0 and diff["subset_accuracy"]["low"] > 0
    # paired: narrower than the two unpaired intervals would suggest when the systems agree on most texts
    close = np.where(rng.random((200, 5)) < 0.98, a, ~a)
    paired = multilabel_difference_ci(y_true, a, close, n_resamples=300)["subset_accuracy"]
    single = multilabel_ci(y_true, a, n_resamples=300)["subset_accuracy"]
    assert paired["high"] - paired["low"] < single["high"] - single["low"]


def _write_text_run(folder, gold, pred, problem_type):
    import json

    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"arguments": {"problem_type": problem_type}}))
    for name in ("validation_predictions.tsv", "predict_results.txt"):
        lines = ["index\tgold\tprediction\tscore"] + [f"{i}\t{g}\t{p}\t0.9" for i, (g, p) in enumerate(zip(gold, pred))]
        (folder / name).write_text("\n".join(lines) + "\n")


def test_bootstrap_ci_paired_on_two_text_runs(tmp_path, capsys):
    """`bootstrap-ci --paired` on two train-text runs (compare-encoders' plain and adapted): the text prediction files
    are read as texts, not as NER sentences, and the differences are second - first."""
    import json

    from medheads.training.cli import main as medheads

    rng = np.random.default_rng(7)
    labels = ["C1", "C2", "C3", "C4"]
    gold = [";".join(sorted(rng.choice(labels, size=rng.integers(1, 3), replace=False))) for _ in range(120)]
    plain = [g if rng.random() < 0.6 else labels[0] for g in gold]
    adapted = [g if rng.random() < 0.8 else labels[0] for g in gold]
    _write_text_run(tmp_path / "plain", gold, plain, "multi_label_classification")
    _write_text_run(tmp_path / "adapted", gold, adapted, "multi_label_classification")
    assert medheads(["bootstrap-ci", "--paired", str(tmp_path / "plain"), str(tmp_path / "adapted"),
                     "--n_resamples", "200"]) == 0
    paired = json.loads((tmp_path / "adapted" / "paired_intervals.json").read_text())
    single = {name: json.loads((tmp_path / name / "confidence_intervals.json").read_text())
              for name in ("plain", "adapted")}
    for split in ("validation", "test"):
        for metric in ("subset_accuracy", "micro_f1"):
            expected = single["adapted"][f"{split}_{metric}"]["value"] - single["plain"][f"{split}_{metric}"]["value"]
            assert paired[f"{split}_{metric}_difference"]["value"] == pytest.approx(expected)
    assert paired["validation_subset_accuracy_difference"]["value"] > 0.1
    assert "adapted - plain\tvalidation_subset_accuracy_difference\t+" in capsys.readouterr().out

    # multi-class runs: an accuracy difference
    classes = [labels[i] for i in rng.integers(0, 4, 100)]
    guesses = [c if rng.random() < 0.5 else "C1" for c in classes]
    _write_text_run(tmp_path / "a", classes, guesses, None)
    _write_text_run(tmp_path / "b", classes, classes, None)
    assert medheads(["bootstrap-ci", "--paired", str(tmp_path / "a"), str(tmp_path / "b"), "--n_resamples", "50"]) == 0
    paired = json.loads((tmp_path / "b" / "paired_intervals.json").read_text())
    assert set(paired) >= {"validation_accuracy_difference", "test_accuracy_difference"}
    wrong = np.mean([g != c for g, c in zip(guesses, classes)])
    assert wrong > 0.2 and paired["test_accuracy_difference"]["value"] == pytest.approx(wrong)

    # different texts: one clear error, exit 2
    _write_text_run(tmp_path / "other", gold[:60], plain[:60], "multi_label_classification")
    assert medheads(["bootstrap-ci", "--paired", str(tmp_path / "plain"), str(tmp_path / "other")]) == 2
    assert "different texts" in capsys.readouterr().err


def test_bootstrap_ci_paired_on_two_ner_runs(tmp_path):
    import json

    from medheads.training.cli import main as medheads

    rng = np.random.default_rng(8)
    gold = random_tags(rng, 80)
    systems = {"softmax": [[g if rng.random() < 0.7 else "O" for g in s] for s in gold], "crf": gold}
    for name, pred in systems.items():
        (tmp_path / name).mkdir()
        blocks = ["\n".join(f"w{i}\t{g}\t{p}" for i, (g, p) in enumerate(zip(gs, ps))) for gs, ps in zip(gold, pred)]
        (tmp_path / name / "test_predictions.tsv").write_text("\n\n".join(blocks) + "\n")
    assert medheads(["bootstrap-ci", "--paired", str(tmp_path / "softmax"), str(tmp_path / "crf"),
                     "--n_resamples", "100"]) == 0
    paired = json.loads((tmp_path / "crf" / "paired_intervals.json").read_text())
    assert [k for k in paired if k.endswith("_difference")] == ["test_span_f1_difference"]
    expected = 1.0 - ner_metrics(gold, systems["softmax"])["f1"]
    assert paired["test_span_f1_difference"]["value"] == pytest.approx(expected) and expected > 0.1


def test_bootstrap_ci_on_an_image_run_gives_accuracy_and_roc_auc(tmp_path, capsys):
    """An image run's predict_results.tsv (as train-image writes it): accuracy and binary ROC AUC whose points equal
    sklearn's on all images, with intervals that bracket them."""
    from sklearn.metrics import roc_auc_score

    from medheads.training.confidence import main

    rng = np.random.default_rng(0)
    n = 300
    gold = rng.integers(0, 2, n)
    p_pneumonia = np.clip(gold * 0.5 + rng.random(n) * 0.6 - 0.05, 0, 1)
    pred = (p_pneumonia >= 0.5).astype(int)
    names = ["normal", "pneumonia"]
    (tmp_path / "config.json").write_text(json.dumps({"id2label": {"0": "normal", "1": "pneumonia"},
                                                      "problem_type": "single_label_classification"}))
    rows = ["index\timage\tgold\tprediction\tscores"]
    rows += [f"{i}\t\t{names[g]}\t{names[p]}\t{1 - q:.4f};{q:.4f}" for i, (g, p, q) in enumerate(zip(gold, pred,
                                                                                                  p_pneumonia))]
    (tmp_path / "predict_results.tsv").write_text("\n".join(rows) + "\n")
    assert main([str(tmp_path)]) == 0
    intervals = json.loads((tmp_path / "confidence_intervals.json").read_text())
    assert set(intervals) == {"test_accuracy", "test_roc_auc"}
    accuracy, auc = intervals["test_accuracy"], intervals["test_roc_auc"]
    assert accuracy["value"] == pytest.approx((gold == pred).mean())
    assert auc["value"] == pytest.approx(roc_auc_score(gold, np.round(p_pneumonia, 4)))
    for ci in (accuracy, auc):
        assert ci["low"] < ci["value"] < ci["high"] and ci["n"] == n
    assert "test_roc_auc" in capsys.readouterr().out

    # paired: a second run that fixes ten of the first run's errors
    second = tmp_path / "second"
    second.mkdir()
    (second / "config.json").write_text((tmp_path / "config.json").read_text())
    fixed = pred.copy()
    wrong = np.flatnonzero(pred != gold)[:10]
    fixed[wrong] = gold[wrong]
    rows = ["index\timage\tgold\tprediction\tscores"]
    rows += [f"{i}\t\t{names[g]}\t{names[p]}\t0.5;0.5" for i, (g, p) in enumerate(zip(gold, fixed))]
    (second / "predict_results.tsv").write_text("\n".join(rows) + "\n")
    assert main(["--paired", str(tmp_path), str(second)]) == 0
    difference = json.loads((second / "paired_intervals.json").read_text())["test_accuracy_difference"]
    assert difference["value"] == pytest.approx(10 / n) and difference["low"] > 0
