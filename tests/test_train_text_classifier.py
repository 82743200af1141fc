"""scripts/train_text_classifier.py (medheads.training.text_classification): tiny random BERT folders, small slices of ROCOv2
and MTSamples. Metrics are checked against counts worked out by hand from the written predictions."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import save_tiny_encoder

from medheads.data import DataFormatError
from medheads.errors import InputError
from medheads.training.arguments import parse_args
from medheads.training.text_classification import (
    ARGUMENT_CLASSES, TextDataArguments, load_splits, make_compute_metrics, parse_head_sizes, prepare_labels, run,
)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "train_text_classifier.py"
DATA = Path(os.environ.get("MEDHEADS_DATA_DIR", REPO.parent / "shared" / "data"))
ROCO = DATA / "rocov2" / "rocov2_valid.csv"
MTS = DATA / "mtsamples" / "mtsamples_6class.csv"


def run_args(args) -> dict:
    """What `medheads train-text ARGS` does, returning the metrics (input errors raise instead of exiting 2)."""
    return run(*parse_args(ARGUMENT_CLASSES, args))


needs_data = pytest.mark.skipif(not (ROCO.is_file() and MTS.is_file()), reason=f"real data not found under {DATA}")


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    return save_tiny_encoder(tmp_path_factory.mktemp("tiny_bert"))


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def roco_slice(tmp_path_factory):
    """The first 200 ROCOv2 captions with their curated CUIs."""
    with open(ROCO, newline="") as handle:
        rows = [row for _, row in zip(range(200), csv.DictReader(handle))]
    path = tmp_path_factory.mktemp("roco") / "roco200.csv"
    return write_csv(path, ["image_id", "caption", "cuis_manual"],
                     [[r["image_id"], r["caption"], r["cuis_manual"]] for r in rows])


@pytest.fixture(scope="module")
def mts_slice(tmp_path_factory):
    """80 training and 30 validation MTSamples notes (long: they exceed the tiny encoder's 128-token window)."""
    with open(MTS, newline="") as handle:
        rows = list(csv.DictReader(handle))
    train = [r for r in rows if r["split"] == "train"][:80]
    valid = [r for r in rows if r["split"] == "validation"][:30]
    path = tmp_path_factory.mktemp("mts") / "mts110.csv"
    return write_csv(path, ["transcription", "medical_specialty", "split"],
                     [[r["transcription"][:1500], r["medical_specialty"], r["split"]] for r in train + valid])


def common(encoder_dir, out, cache, epochs=3):
    return ["--model_name_or_path", str(encoder_dir), "--output_dir", str(out), "--feature_cache_dir", str(cache),
            "--num_train_epochs", str(epochs), "--head_hidden_sizes", "16", "--learning_rate", "5e-3",
            "--disable_tqdm", "true", "--seed", "3", "--dataloader_pin_memory", "false"]


def micro_f1_by_hand(gold: list[set], pred: list[set]) -> float:
    tp = sum(len(g & p) for g, p in zip(gold, pred))
    fp = sum(len(p - g) for g, p in zip(gold, pred))
    fn = sum(len(g - p) for g, p in zip(gold, pred))
    return 2 * tp / (2 * tp + fp + fn)


def read_predictions(out: Path):
    with open(out / "predict_results.txt") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return rows


# ---------------------------------------------------------------------------------------------------------------------


def test_help_lists_script_and_trainer_flags():
    result = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for flag in ("--model_name_or_path", "--pooling", "--head_hidden_sizes", "--max_seq_length", "--use_feature_cache",
                 "--label_separator", "--min_label_count", "--validation_split_percentage", "--tune_thresholds",
                 "--drop_empty_texts", "--learning_rate", "--metric_for_best_model", "--split_column_name",
                 "--threshold_min_positives"):
        assert flag in result.stdout


def test_head_sizes_and_compute_metrics_by_hand():
    assert parse_head_sizes("512, 256") == [512, 256] and parse_head_sizes("") == [] and parse_head_sizes([8]) == [8]
    with pytest.raises(InputError, match="comma-separated"):
        parse_head_sizes("512;256")

    class Prediction:  # what Trainer passes to compute_metrics
        def __init__(self, predictions, label_ids):
            self.predictions, self.label_ids = predictions, label_ids

    # 3 texts x 2 labels; logits > 0 <=> probability > 0.5. Predicted {a}, {a,b}, {} vs gold {a}, {b}, {b}:
    # tp = 2 (row0 a, row1 b), fp = 1 (row1 a), fn = 1 (row2 b) -> micro F1 = 4/6; one of 3 rows exact.
    logits = np.array([[2.0, -1.0], [1.0, 3.0], [-2.0, -0.5]])
    gold = np.array([[1, 0], [0, 1], [0, 1]], dtype=np.float32)
    metrics = make_compute_metrics("multi_label_classification", ["a", "b"])(Prediction(logits, gold))
    assert metrics["micro_f1"] == pytest.approx(4 / 6) and metrics["subset_accuracy"] == pytest.approx(1 / 3)
    assert not any(key.startswith("f1_") for key in metrics)  # per-label keys stay out of the per-epoch logs
    # multi-class: argmax = 0, 1, 1 vs gold 0, 1, 0 -> accuracy 2/3; class 0 F1 = 2/3, class 1 F1 = 2/3
    metrics = make_compute_metrics("single_label_classification", ["x", "y"])(
        Prediction(logits, np.array([0, 1, 0])))
    assert metrics["accuracy"] == pytest.approx(2 / 3) and metrics["weighted_f1"] == pytest.approx(2 / 3)


@needs_data
def test_percentage_split_is_reproducible_and_disjoint(roco_slice):
    args = TextDataArguments(train_file=str(roco_slice), text_column_name="caption", label_column_name="cuis_manual",
                             label_separator=";", validation_split_percentage=10, test_split_percentage=10)
    first, again, other = (load_splits(args, True, seed) for seed in (0, 0, 1))
    assert [len(first[s]) for s in ("train", "validation", "test")] == [160, 20, 20]
    ids = {s: {row["_index"] for row in first[s]} for s in first}
    assert set().union(*ids.values()) == set(range(200)) and sum(map(len, ids.values())) == 200
    assert ids == {s: {row["_index"] for row in again[s]} for s in again}
    assert ids["test"] != {row["_index"] for row in other["test"]}


@needs_data
def test_multilabel_rocov2_end_to_end(encoder_dir, roco_slice, tmp_path):
    from transformers import pipeline

    out = tmp_path / "out"
    metrics = run_args(common(encoder_dir, out, tmp_path / "cache") + [
        "--train_file", str(roco_slice), "--text_column_name", "caption", "--label_column_name", "cuis_manual",
        "--problem_type", "multi_label_classification", "--validation_split_percentage", "20",
        "--test_split_percentage", "20", "--do_train", "--do_eval", "--do_predict", "--threshold_min_positives", "3"])
    results = json.loads((out / "all_results.json").read_text())
    for key in ("predict_micro_f1", "predict_macro_f1", "predict_subset_accuracy", "eval_micro_f1", "eval_macro_f1",
                "eval_subset_accuracy", "eval_threshold_05_micro_f1", "predict_threshold_05_micro_f1", "train_loss"):
        assert key in results and key in metrics, key
        assert 0.0 <= results[key] <= 1.0 or key == "train_loss"
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["script"] == "train_text_classifier.py"
    assert summary["metrics"]["predict_micro_f1"] == results["predict_micro_f1"]
    for plot in summary["plots"]:
        assert (out / plot).stat().st_size > 1000
    assert {"confusion_matrix_test.png", "per_label_f1_test.png", "training_curves.png"} <= set(summary["plots"])
    assert "== test (40 rows) (tuned per-label thresholds) ==" in (out / "classification_report.txt").read_text()

    config = json.loads((out / "config.json").read_text())
    labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    thresholds = np.array(config["thresholds"])
    assert len(thresholds) == len(labels) and ((0 < thresholds) & (thresholds < 1)).all()
    splits = load_splits(TextDataArguments(
        train_file=str(roco_slice), text_column_name="caption", label_column_name="cuis_manual", label_separator=";",
        validation_split_percentage=20, test_split_percentage=20), True, 3)
    positives = {name: sum(name in row["labels"] for row in splits["validation"]) for name in labels}
    assert all(thresholds[j] == 0.5 for j, name in enumerate(labels) if positives[name] < 3)
    assert any(thresholds[j] != 0.5 for j, name in enumerate(labels) if positives[name] >= 3)

    # predict_micro_f1 worked out by hand from the written predictions
    rows = read_predictions(out)
    gold = [set(filter(None, r["gold"].split(";"))) for r in rows]
    predicted = [set(filter(None, r["prediction"].split(";"))) for r in rows]
    assert len(rows) == 40
    assert results["predict_micro_f1"] == pytest.approx(micro_f1_by_hand(gold, predicted))
    assert results["predict_subset_accuracy"] == pytest.approx(np.mean([g == p for g, p in zip(gold, predicted)]))

    # the saved folder is a pipeline: sigmoid scores for every label; tuned thresholds reproduce the predictions
    texts = [row["text"] for row in splits["test"]]
    classifier = pipeline("text-classification", model=str(out), trust_remote_code=True, top_k=None, device="cpu")
    outputs = classifier(texts[:8])
    assert all(sorted(item["label"] for item in scores) == sorted(labels) for scores in outputs)
    scores = np.array([[dict((d["label"], d["score"]) for d in item)[name] for name in labels] for item in outputs])
    assert not np.allclose(scores.sum(axis=1), 1.0)  # sigmoid per label, not a softmax
    for i, row_scores in enumerate(scores):
        assert {labels[j] for j in np.flatnonzero(row_scores >= thresholds)} == predicted[i]

    # a saved model is a valid --model_name_or_path: evaluating it again gives the same numbers, stored thresholds kept
    again = run_args(common(out, tmp_path / "again", tmp_path / "cache") + [
        "--train_file", str(roco_slice), "--text_column_name", "caption", "--label_column_name", "cuis_manual",
        "--validation_split_percentage", "20", "--test_split_percentage", "20", "--do_eval", "--do_predict"])
    for key in ("eval_micro_f1", "eval_subset_accuracy", "predict_micro_f1", "predict_macro_f1"):
        assert again[key] == pytest.approx(results[key], abs=1e-9), key


@needs_data
def test_multiclass_mtsamples_from_json_config(encoder_dir, mts_slice, tmp_path):
    out = tmp_path / "out"
    config = tmp_path / "mts.json"
    config.write_text(json.dumps({
        "model_name_or_path": "will-be-overridden", "train_file": str(mts_slice), "split_column_name": "split",
        "text_column_name": "transcription", "label_column_name": "medical_specialty",
        "problem_type": "single_label_classification", "do_train": True, "do_eval": True, "pooling": "cls",
        "max_chunk_length": 64, "head_hidden_sizes": "", "num_train_epochs": 2, "learning_rate": 0.01,
        "output_dir": str(out), "feature_cache_dir": str(tmp_path / "cache"), "disable_tqdm": True,
        "dataloader_pin_memory": False}))
    metrics = run_args([str(config), "--model_name_or_path", str(encoder_dir)])
    results = json.loads((out / "all_results.json").read_text())
    assert {"eval_accuracy", "eval_weighted_f1", "eval_macro_f1"} <= set(results)
    assert results["eval_samples"] == 30 and metrics["train_samples"] == 80
    saved = json.loads((out / "config.json").read_text())
    assert saved["problem_type"] == "single_label_classification" and saved["head_hidden_sizes"] == []
    assert saved["pooling"] == "cls" and saved["max_chunk_length"] == 64 and saved["thresholds"] is None
    args = json.loads((out / "metrics.json").read_text())["arguments"]
    assert args["metric_for_best_model"] == "accuracy" and args["model_name_or_path"] == str(encoder_dir)
    assert (out / "confusion_matrix_validation.png").is_file()
    # accuracy by hand: re-run the saved model on the validation texts
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    model = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    with open(mts_slice, newline="") as handle:
        valid = [r for r in csv.DictReader(handle) if r["split"] == "validation"]
    hits = 0
    for row in valid:
        with torch.no_grad():
            logits = model(**tokenizer(row["transcription"], return_tensors="pt")).logits
        hits += model.config.id2label[int(logits.argmax())] == row["medical_specialty"]
    assert results["eval_accuracy"] == pytest.approx(hits / len(valid))


@needs_data
def test_feature_cache_gives_the_same_training_as_the_frozen_encoder(encoder_dir, roco_slice, tmp_path):
    def run(flag, name):
        out = tmp_path / name
        extra = ["--min_label_count", "5"] if name == "fewer_labels" else []
        run_args(common(encoder_dir, out, tmp_path / "cache", epochs=2) + extra + [
            "--train_file", str(roco_slice), "--text_column_name", "caption", "--label_column_name", "cuis_manual",
            "--max_train_samples", "64", "--do_train", "--do_eval", "--logging_steps", "1",
            "--use_feature_cache", flag])
        state = json.loads((out / "trainer_state.json").read_text())
        losses = [log["loss"] for log in state["log_history"] if "loss" in log]
        return losses, json.loads((out / "all_results.json").read_text())

    cached_losses, cached = run("true", "cached")
    direct_losses, direct = run("false", "direct")
    assert len(cached_losses) == len(direct_losses) == 4
    np.testing.assert_allclose(cached_losses, direct_losses, rtol=1e-4)
    assert cached["eval_micro_f1"] == pytest.approx(direct["eval_micro_f1"], abs=1e-6)
    assert cached["eval_loss"] == pytest.approx(direct["eval_loss"], rel=1e-4)
    assert len(list((tmp_path / "cache").iterdir())) == 2  # train and validation features, computed once each
    # another label set on the same texts (a different head) reuses the features: the cache is keyed on texts+weights
    run("true", "fewer_labels")
    assert len(list((tmp_path / "cache").iterdir())) == 2


@needs_data
def test_resume_from_checkpoint_reaches_the_same_result(encoder_dir, roco_slice, tmp_path):
    import shutil

    args = ["--train_file", str(roco_slice), "--text_column_name", "caption", "--label_column_name", "cuis_manual",
            "--max_train_samples", "64", "--do_train", "--do_eval", "--save_total_limit", "4",
            "--load_best_model_at_end", "false"]  # the final model is the last epoch's: it depends on the resumed part
    full = tmp_path / "full"
    run_args(common(encoder_dir, full, tmp_path / "cache", epochs=4) + args)
    checkpoints = sorted(full.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert len(checkpoints) == 4
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(checkpoints[1], resumed / checkpoints[1].name)  # as if stopped after epoch 2
    run_args(common(encoder_dir, resumed, tmp_path / "cache", epochs=4) + args)
    first, second = (json.loads((d / "all_results.json").read_text()) for d in (full, resumed))
    for key in ("eval_loss", "eval_micro_f1", "eval_macro_f1"):
        assert second[key] == pytest.approx(first[key], rel=1e-5), key
    assert json.loads((resumed / "config.json").read_text())["thresholds"] == \
        json.loads((full / "config.json").read_text())["thresholds"]


# --- bad input: one clear error, before any training ---------------------------------------------------------------


def fails_before_training(args, out: Path, match: str):
    with pytest.raises((InputError, DataFormatError)) as error:
        run_args(args)
    message = str(error.value)
    assert match in message, message
    assert not list(out.glob("checkpoint-*")) and not (out / "all_results.json").exists()
    return message


def test_missing_column_lists_the_available_ones(encoder_dir, tmp_path):
    data = write_csv(tmp_path / "d.csv", ["caption", "cuis"], [["ct chest", "C1"], ["mri brain", "C2"]] * 5)
    message = fails_before_training(common(encoder_dir, tmp_path / "o", tmp_path / "c") + [
        "--train_file", str(data), "--text_column_name", "caption", "--label_column_name", "cuis_manual",
        "--do_train"], tmp_path / "o", "no column 'cuis_manual'")
    assert "['caption', 'cuis']" in message and "--label_column_name" in message


def test_unknown_class_at_evaluation_names_file_line_and_label(encoder_dir, tmp_path):
    train = write_csv(tmp_path / "train.csv", ["text", "label"], [["ct chest", "Radiology"],
                                                                  ["knee pain", "Orthopedic"]] * 5)
    valid = write_csv(tmp_path / "valid.csv", ["text", "label"], [["ct chest", "Radiology"], ["the heart", "Cardio"],
                                                                  ["mri", "Radiology"]])
    message = fails_before_training(common(encoder_dir, tmp_path / "o", tmp_path / "c") + [
        "--train_file", str(train), "--validation_file", str(valid), "--problem_type", "multi_class",
        "--do_train", "--do_eval"], tmp_path / "o", f"{valid}:3: class 'Cardio'")
    assert "never occurs in training" in message and "'Orthopedic', 'Radiology'" in message


def test_multilabel_unknown_labels_are_dropped_and_counted(caplog):
    rows = {"train": [{"labels": ["A", "B"]}, {"labels": ["A"]}, {"labels": ["A", "C"]}, {"labels": ["B"]}],
            "validation": [{"labels": ["A", "Z"]}, {"labels": ["Z", "Y"]}, {"labels": ["C"]}]}
    args = TextDataArguments(label_separator=";", min_label_count=2)
    with caplog.at_level(logging.INFO, logger="medheads"):
        labels = prepare_labels(rows, "multi_label_classification", args, None)
    assert labels == ["A", "B"]  # C occurs once in training
    assert [row["labels"] for row in rows["validation"]] == [["A"], [], []]
    assert [row["labels"] for row in rows["train"]] == [["A", "B"], ["A"], ["A"], ["B"]]
    messages = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert any(m.startswith("validation: dropped 4 label occurrences (3 distinct labels") and "2 rows now have none"
               in m for m in messages), messages
    assert any(m.startswith("train: dropped 1 label occurrences (1 distinct labels") for m in messages), messages


def test_empty_texts_error_names_lines_or_are_dropped(encoder_dir, tmp_path):
    data = write_csv(tmp_path / "d.csv", ["text", "label"],
                     [["ct chest", "a"], ["", "b"], ["mri", "a"], ["  ", "b"]] + [["x ray", "b"], ["ct", "a"]] * 5)
    args = common(encoder_dir, tmp_path / "o", tmp_path / "c") + [
        "--train_file", str(data), "--problem_type", "single_label_classification", "--do_train", "--do_eval",
        "--validation_split_percentage", "20"]
    message = fails_before_training(args, tmp_path / "o", "2 rows have empty text")
    assert "lines 3, 5" in message and "--drop_empty_texts" in message
    metrics = run_args(args + ["--drop_empty_texts", "--num_train_epochs", "1"])
    assert metrics["train_samples"] == 10 and metrics["eval_samples"] == 2


def test_model_path_that_is_not_an_encoder(encoder_dir, tmp_path):
    data = write_csv(tmp_path / "d.csv", ["text", "label"], [["ct chest", "a;b"], ["mri", "a"]] * 5)
    rest = ["--train_file", str(data), "--do_train", "--output_dir", str(tmp_path / "o")]
    fails_before_training(["--model_name_or_path", str(tmp_path / "nowhere")] + rest, tmp_path / "o",
                          "not a model folder or Hub id")
    from medheads import HiddenLayerTokenClassifier
    ner = tmp_path / "ner"
    HiddenLayerTokenClassifier.from_encoder(str(encoder_dir), id2label={0: "O", 1: "B-x"}).save_pretrained(ner)
    fails_before_training(["--model_name_or_path", str(ner)] + rest, tmp_path / "o",
                          "is a saved medheads-hidden-layer-token-classifier model")
    from transformers import ViTConfig, ViTModel
    vit = tmp_path / "vit"
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=48,
                       image_size=32, patch_size=8)).save_pretrained(vit)
    fails_before_training(["--model_name_or_path", str(vit)] + rest, tmp_path / "o", "is not a text encoder")


@pytest.mark.parametrize("name", ["text_mtsamples.json", "text_rocov2_cuis_manual.json", "text_rocov2_cuis20.json"])
def test_example_configs_parse_and_point_at_the_data(name):
    model_args, data_args, training_args = parse_args(ARGUMENT_CLASSES, [str(REPO / "configs" / name)])
    assert model_args.model_name_or_path and training_args.do_train and training_args.output_dir.startswith("outputs/")
    assert (REPO / data_args.train_file).resolve().name in ("mtsamples_6class.csv", "rocov2_valid.csv")
    if DATA.is_dir():
        assert (REPO / data_args.train_file).is_file()
