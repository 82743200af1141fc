"""scripts/train_ner.py (medheads.training.ner): the pure helpers on hand-worked cases, then whole runs of `run_args()` on a tiny
random BERT and small slices of JNLPBA and NCBI-disease, and the errors a user gets for bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import VOCAB, encoder_config, make_tokenizer
from transformers import AutoModel, BertTokenizerFast, TrainerCallback
from transformers.trainer_utils import EvalPrediction

from medheads.data import DataFormatError
from medheads.metrics import ner_metrics
from medheads.errors import InputError
from medheads.training.arguments import parse_args
from medheads.training.ner import (
    ARGUMENT_CLASSES, EncodedSplit, NerMetrics, NerSplit, align_labels, b_to_i_map, build_label_list, entity_type,
    first_token_positions, main, parse_hidden_layers, require_fast_tokenizer, run, type_confusion, word_predictions,
)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDHEADS_DATA_DIR", REPO.parent / "shared" / "data"))
JNLPBA = DATA / "jnlpba"
NCBI = DATA / "ncbi-disease"


def run_args(args, callbacks=None) -> dict:
    """What `medheads train-ner ARGS` does, returning the metrics (input errors raise instead of exiting 2)."""
    return run(*parse_args(ARGUMENT_CLASSES, args), callbacks=callbacks)


needs_jnlpba = pytest.mark.skipif(not (JNLPBA / "train.tsv").is_file(),
                                  reason=f"JNLPBA not found in {JNLPBA} (set MEDHEADS_DATA_DIR to the shared data)")
needs_ncbi = pytest.mark.skipif(not (NCBI / "test.tsv").is_file(),
                                reason=f"NCBI-disease not found in {NCBI} (set MEDHEADS_DATA_DIR to the shared data)")

# A fast run: tiny model, few sentences, no progress bars.
FAST = ["--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "32", "--logging_steps", "1",
        "--disable_tqdm", "true", "--use_cpu", "true", "--seed", "3"]
# JNLPBA words are mostly [UNK] to the tiny vocabulary: a small learning rate keeps the model's tags varied (not all
# O), so the metric checks below compare non-zero numbers.
SLOW_LR = ["--learning_rate", "1e-4"]
FAST_LR = ["--learning_rate", "5e-3"]


# ---------------------------------------------------------------------------------------------------------------------
# Helpers on hand-worked cases
# ---------------------------------------------------------------------------------------------------------------------


def test_parse_hidden_layers():
    assert parse_hidden_layers("-1") == -1
    assert parse_hidden_layers(["-1"]) == -1
    assert parse_hidden_layers("-1,-2,-3,-4") == [-1, -2, -3, -4]
    assert parse_hidden_layers(["-1", "-2"]) == [-1, -2]
    assert parse_hidden_layers([3, 4]) == [3, 4]
    assert parse_hidden_layers(4) == 4
    assert parse_hidden_layers("all", num_layers=3) == [0, 1, 2, 3]
    with pytest.raises(InputError, match="not an integer"):
        parse_hidden_layers("last")


def test_label_list_is_sorted_with_o_first():
    sentences = [{"tokens": ["a", "b", "c"], "ner_tags": ["I-protein", "O", "B-DNA"]},
                 {"tokens": ["d"], "ner_tags": ["B-protein"]}]
    assert build_label_list(sentences) == ["O", "B-DNA", "B-protein", "I-protein"]


def test_align_labels_first_sub_token_and_label_all_tokens():
    labels = ["O", "B-protein", "I-protein"]
    # [CLS] il - 2 receptor [SEP]: word 0 has three sub-tokens, word 1 one.
    word_ids = [None, 0, 0, 0, 1, None]
    assert align_labels(word_ids, [1, 2]) == [-100, 1, -100, -100, 2, -100]
    assert b_to_i_map(labels) == [0, 2, 2]
    assert align_labels(word_ids, [1, 2], label_all_tokens=True, b_to_i=b_to_i_map(labels)) == \
        [-100, 1, 2, 2, 2, -100]
    # Word 1 vanished in normalisation, word 3 was truncated away.
    assert first_token_positions([None, 0, 0, 2, None], 4) == [1, -1, 3, -1]


def test_word_predictions_read_the_first_sub_token():
    id2label = {0: "O", 1: "B-protein", 2: "I-protein"}
    token_predictions = np.array([[0, 1, 0, 2, 0, -100], [0, 2, 1, 0, -100, -100]])
    positions = [[1, 3, -1], [2, 1]]
    assert word_predictions(token_predictions, positions, id2label) == \
        [["B-protein", "I-protein", "O"], ["B-protein", "I-protein"]]


def test_ner_metrics_hand_worked():
    """Gold spans: protein(0-1), DNA(3) in sentence 1, protein(0) in sentence 2. Predicted: protein(0-1) right,
    DNA missed, sentence 2's protein right plus a spurious DNA: tp 2, fp 1, fn 1 -> P = R = F1 = 2/3.
    Per type: protein P = R = 1; DNA P = 0 (1 predicted, wrong), R = 0. Macro F1 = (1 + 0) / 2."""
    id2label = {0: "O", 1: "B-DNA", 2: "B-protein", 3: "I-DNA", 4: "I-protein"}
    gold = [["B-protein", "I-protein", "O", "B-DNA"], ["B-protein", "O", "O"]]
    split = NerSplit("validation", "hand", [{"tokens": list("abcd"), "ner_tags": gold[0]},
                                            {"tokens": list("efg"), "ner_tags": gold[1]}])
    # Token rows: [CLS] w0 w1 w2 w3 [SEP] / [CLS] w0 w1 w1' w2 [SEP]; pads are -100.
    positions = [[1, 2, 3, 4], [1, 2, 4]]
    predictions = np.array([[0, 2, 4, 0, 0, 0], [0, 2, 1, 3, 0, 0]])
    metrics_fn = NerMetrics(id2label).use(EncodedSplit(split, None, positions))
    metrics = metrics_fn(EvalPrediction(predictions=predictions, label_ids=np.zeros_like(predictions)))
    assert metrics_fn.last_predictions == [["B-protein", "I-protein", "O", "O"], ["B-protein", "B-DNA", "O"]]
    assert metrics["precision"] == pytest.approx(2 / 3)
    assert metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["f1"] == pytest.approx(2 / 3)
    assert metrics["f1_protein"] == pytest.approx(1.0)
    assert metrics["f1_DNA"] == 0.0
    assert metrics["macro_f1"] == pytest.approx(0.5)
    assert metrics["word_accuracy"] == pytest.approx(5 / 7)
    # Raw logits ([N, L, C]) give the same result as argmax ids.
    logits = np.eye(5)[predictions]
    assert metrics_fn(EvalPrediction(predictions=logits, label_ids=None)) == metrics


def test_type_confusion_over_entity_types():
    gold = [["B-DNA", "I-DNA", "O"]]
    pred = [["B-protein", "I-DNA", "O"]]
    y_true, y_pred, types = type_confusion(gold, pred, ["O", "B-DNA", "B-protein", "I-DNA", "I-protein"])
    assert types == ["O", "DNA", "protein"]
    assert (y_true, y_pred) == ([1, 1, 0], [2, 1, 0])
    assert entity_type("I-cell_line") == "cell_line" and entity_type("O") == "O"


def test_slow_tokenizer_is_refused():
    class Slow:
        is_fast = False

    with pytest.raises(InputError, match="not a fast tokenizer"):
        require_fast_tokenizer(Slow(), "some/model")


# ---------------------------------------------------------------------------------------------------------------------
# Whole runs
# ---------------------------------------------------------------------------------------------------------------------


def tiny_word_tokenizer(folder: Path) -> BertTokenizerFast:
    """tiny.py's tokenizer with its whole vocabulary. (With transformers 5, `make_tokenizer`'s
    `BertTokenizerFast(vocab_file=...)` ignores the file and keeps only the 5 special tokens; `vocab=` works.)"""
    tokenizer = make_tokenizer(folder)
    if len(tokenizer) != len(VOCAB):
        tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(VOCAB)}, do_lower_case=True,
                                      model_max_length=64)
    assert tokenizer.tokenize("breast cancer") == ["breast", "cancer"]
    return tokenizer


def save_tiny_word_encoder(folder: Path, layers: int) -> Path:
    """A tiny random BERT saved like a pretrained encoder (a bare BertModel, no MLM head, as all-MiniLM-L6-v2), with
    its (fast) word tokenizer."""
    torch.manual_seed(0)
    AutoModel.from_config(encoder_config("bert", layers=layers)).save_pretrained(folder)
    tiny_word_tokenizer(folder).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    return save_tiny_word_encoder(tmp_path_factory.mktemp("tiny_bert"), layers=4)


def read_predictions(path: Path) -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    tokens, gold, pred = [], [], []
    for block in path.read_text(encoding="utf-8").strip("\n").split("\n\n"):
        rows = [line.split("\t") for line in block.split("\n")]
        tokens.append([r[0] for r in rows])
        gold.append([r[1] for r in rows])
        pred.append([r[2] for r in rows])
    return tokens, gold, pred


def read_conll_tags(path: Path, limit: int) -> list[list[str]]:
    from medheads.data import read_conll

    return [s["ner_tags"] for s in read_conll(path)[:limit]]


def jnlpba_args(encoder_dir, out, *extra):
    return ["--model_name_or_path", str(encoder_dir), "--train_file", str(JNLPBA / "train.tsv"),
            "--validation_file", str(JNLPBA / "devel.tsv"), "--max_train_samples", "64", "--max_eval_samples", "24",
            "--output_dir", str(out), "--do_train", "--num_train_epochs", "2", *FAST, *SLOW_LR, *extra]


@pytest.fixture(scope="module")
def jnlpba_run(encoder_dir, tmp_path_factory):
    if not (JNLPBA / "train.tsv").is_file():
        pytest.skip(f"JNLPBA not found in {JNLPBA} (set MEDHEADS_DATA_DIR to the shared data)")
    out = tmp_path_factory.mktemp("jnlpba") / "run"
    # devel.tsv doubles as the test split here (JNLPBA's test split is not in the shared data).
    results = run_args(jnlpba_args(encoder_dir, out, "--test_file", str(JNLPBA / "devel.tsv"), "--max_predict_samples",
                               "16", "--do_predict", "--hidden_layers", "-1", "-2", "--layer_combination",
                               "scalar_mix"))
    return out, results


@needs_jnlpba
def test_run_writes_the_reports(jnlpba_run):
    out, results = jnlpba_run
    for name in ("all_results.json", "train_results.json", "eval_results.json", "predict_results.json",
                 "metrics.json", "classification_report.txt", "validation_errors.txt", "test_errors.txt",
                 "validation_predictions.tsv", "test_predictions.tsv", "training_curves.png",
                 "f1_per_type_validation.png", "f1_per_type_test.png", "confusion_matrix_validation.png",
                 "confusion_matrix_test.png", "config.json", "model.safetensors", "tokenizer.json",
                 "modeling_hidden_layer_token_classifier.py"):
        assert (out / name).is_file(), name
    all_results = json.loads((out / "all_results.json").read_text())
    assert all_results == pytest.approx(results)
    for key in ("eval_f1", "eval_macro_f1", "eval_precision", "eval_recall", "eval_word_accuracy", "predict_f1",
                "predict_macro_f1", "train_loss", "eval_samples", "predict_samples"):
        assert key in all_results, key
    for split, prefix in (("validation", "eval"), ("test", "predict")):  # per type, for every type in the gold data
        _, gold, _ = read_predictions(out / f"{split}_predictions.tsv")
        for type_name in {t[2:] for sentence in gold for t in sentence if t != "O"}:
            for metric in ("f1", "precision", "recall", "support"):
                assert f"{prefix}_{metric}_{type_name}" in all_results
    assert all_results["eval_samples"] == 24 and all_results["predict_samples"] == 16
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["script"] == "train_ner.py"
    assert summary["metrics"]["predict_f1"] == all_results["predict_f1"]
    assert summary["arguments"]["label_list"][0] == "O" and len(summary["arguments"]["label_list"]) == 11
    assert "training_curves.png" in summary["plots"]
    config = json.loads((out / "config.json").read_text())
    assert config["hidden_layers"] == [-1, -2] and config["layer_combination"] == "scalar_mix"
    assert config["id2label"]["0"] == "O"
    report = (out / "classification_report.txt").read_text()
    assert "== validation:" in report and "== test:" in report and "micro avg" in report
    assert "Best checkpoint: checkpoint-" in report and "Word level" in report


@needs_jnlpba
def test_metrics_equal_medheads_metrics_on_the_written_predictions(jnlpba_run):
    out, results = jnlpba_run
    for split, prefix, limit in (("validation", "eval", 24), ("test", "predict", 16)):
        tokens, gold, pred = read_predictions(out / f"{split}_predictions.tsv")
        assert gold == read_conll_tags(JNLPBA / "devel.tsv", limit)  # every word, none dropped
        expected = ner_metrics(gold, pred)
        assert expected["f1"] > 0  # the check below compares non-trivial numbers
        for key, value in expected.items():
            assert results[f"{prefix}_{key}"] == pytest.approx(value), key
        # The error file holds exactly the sentences with a mistake, in TOKEN / GOLD / PRED columns.
        errors = (out / f"{split}_errors.txt").read_text()
        wrong = [i for i, (g, p) in enumerate(zip(gold, pred)) if g != p]
        assert errors.count("# sentence ") == len(wrong)
        assert f"# sentence {wrong[0]}:" in errors and "TOKEN" in errors and "GOLD" in errors and "PRED" in errors


@needs_jnlpba
def test_output_dir_is_a_pipeline_folder(jnlpba_run):
    from transformers import pipeline

    out, _ = jnlpba_run
    ner = pipeline("ner", model=str(out), trust_remote_code=True, aggregation_strategy="simple", device="cpu")
    text = "il-2 receptor expression in t cells and the dna of breast cancer"
    entities = ner(text)
    types = {"protein", "DNA", "RNA", "cell_type", "cell_line"}
    assert all(e["entity_group"] in types and text[e["start"]:e["end"]] for e in entities)
    # The pipeline returns entities exactly when the model tags some token non-O.
    encoded = ner.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        token_ids = ner.model(**encoded).logits.argmax(-1)[0, 1:-1]
    assert bool(entities) == bool((token_ids != 0).any())


@needs_jnlpba
def test_saved_model_is_detected_and_evaluated_again(jnlpba_run, tmp_path):
    out, results = jnlpba_run
    again = run_args(["--model_name_or_path", str(out), "--validation_file", str(JNLPBA / "devel.tsv"),
                  "--max_eval_samples", "24", "--do_eval", "--output_dir", str(tmp_path / "eval_only"),
                  "--per_device_eval_batch_size", "32", "--use_cpu", "true", "--disable_tqdm", "true"])
    assert again["eval_f1"] == pytest.approx(results["eval_f1"])
    assert again["eval_loss"] == pytest.approx(results["eval_loss"], rel=1e-5)
    assert (tmp_path / "eval_only" / "validation_errors.txt").is_file()


class Crash(TrainerCallback):
    """Stops the run like a killed job, right after the first checkpoint is on disk."""

    def on_save(self, args, state, control, **kwargs):
        raise KeyboardInterrupt("simulated interruption after the first checkpoint")


class StepRecorder(TrainerCallback):
    def __init__(self):
        self.steps = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


@needs_jnlpba
def test_interrupted_run_resumes_to_the_same_result(encoder_dir, tmp_path):
    full = run_args(jnlpba_args(encoder_dir, tmp_path / "full"))
    interrupted = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        run_args(jnlpba_args(encoder_dir, interrupted), callbacks=[Crash()])
    assert [p.name for p in interrupted.glob("checkpoint-*")] == ["checkpoint-4"]
    assert not (interrupted / "all_results.json").exists()
    steps = StepRecorder()
    resumed = run_args(jnlpba_args(encoder_dir, interrupted), callbacks=[steps])  # finds checkpoint-4 by itself
    assert steps.steps == [5, 6, 7, 8]  # it resumed: the first epoch was not trained again
    state = json.loads((interrupted / "trainer_state.json").read_text())
    assert state["global_step"] == 8 and state["epoch"] == 2
    assert full["eval_f1"] > 0
    for key in ("eval_f1", "eval_macro_f1", "eval_word_accuracy"):
        assert resumed[key] == pytest.approx(full[key], abs=1e-9), key
    assert resumed["eval_loss"] == pytest.approx(full["eval_loss"], rel=1e-4)


@needs_jnlpba
@pytest.mark.slow
def test_accelerate_launch_two_processes(encoder_dir, tmp_path):
    """`accelerate launch` with two CPU processes (torchrun launcher, gloo): one set of files, predictions gathered
    in order without the duplicates that pad the last batch, the same metrics as medheads.metrics on them."""
    import socket
    import subprocess
    import sys

    accelerate = Path(sys.executable).parent / "accelerate"
    if not accelerate.exists():
        pytest.skip(f"no accelerate CLI next to {sys.executable}")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": str(REPO)}
    command = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
               str(REPO / "scripts" / "train_ner.py"), *jnlpba_args(encoder_dir, out, "--test_file",
                                                                    str(JNLPBA / "devel.tsv"), "--max_predict_samples",
                                                                    "13", "--do_predict",
                                                                    "--dataloader_pin_memory", "false")]
    # 24 validation / 13 test sentences at eval batch 32 per process: the last (only) batch is padded on one process.
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("distributed True") + result.stderr.count("distributed True") == 2
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4  # 64 sentences / (2 processes x 16) = 2 steps per epoch (one process: 4)
    results = json.loads((out / "all_results.json").read_text())
    for split, prefix, limit in (("validation", "eval", 24), ("test", "predict", 13)):
        _, gold, pred = read_predictions(out / f"{split}_predictions.tsv")
        assert gold == read_conll_tags(JNLPBA / "devel.tsv", limit)
        assert results[f"{prefix}_f1"] == pytest.approx(ner_metrics(gold, pred)["f1"])
        assert results[f"{prefix}_samples"] == limit


@needs_ncbi
def test_json_config_invocation(encoder_dir, tmp_path):
    """The shipped NCBI config, pointed at the tiny encoder and a small slice, runs as one JSON argument."""
    config = json.loads((REPO / "configs" / "ner_ncbi_disease.json").read_text())
    config.update(model_name_or_path=str(encoder_dir), train_file=str(NCBI / "train.tsv"),
                  validation_file=str(NCBI / "devel.tsv"), test_file=str(NCBI / "test.tsv"),
                  output_dir=str(tmp_path / "ncbi"), max_train_samples=48, max_eval_samples=16,
                  max_predict_samples=16, num_train_epochs=1, per_device_train_batch_size=16, use_cpu=True,
                  disable_tqdm=True, hidden_layers=[2], label_all_tokens=True)
    path = tmp_path / "args.json"
    path.write_text(json.dumps(config))
    results = run_args([str(path)])
    all_results = json.loads((tmp_path / "ncbi" / "all_results.json").read_text())
    for key in ("eval_f1", "predict_f1", "predict_macro_f1", "predict_f1_Disease", "predict_precision_Disease"):
        assert key in all_results and all_results[key] == pytest.approx(results[key])
    saved = json.loads((tmp_path / "ncbi" / "config.json").read_text())
    assert saved["hidden_layers"] == 2
    from medheads import HiddenLayerTokenClassifier

    assert len(HiddenLayerTokenClassifier.from_pretrained(tmp_path / "ncbi").encoder.encoder.layer) == 2  # runs 2 layers
    assert saved["id2label"] == {"0": "O", "1": "B-Disease", "2": "I-Disease"}
    shipped_configs = sorted(p.name for p in (REPO / "configs").glob("ner_*.json"))
    assert {"ner_jnlpba.json", "ner_ncbi_disease.json"} <= set(shipped_configs)
    for name in shipped_configs:  # every shipped config parses
        shipped = json.loads((REPO / "configs" / name).read_text())
        shipped["output_dir"] = str(tmp_path / "parsed")
        (tmp_path / name).write_text(json.dumps(shipped))
        _, _, training_args = parse_args(ARGUMENT_CLASSES, [str(tmp_path / name)])
        assert training_args.metric_for_best_model == "f1" and training_args.greater_is_better


def test_dataset_folder_with_class_labels(encoder_dir, tmp_path):
    """--dataset_name with a save_to_disk DatasetDict whose tags are ClassLabel ids."""
    import datasets

    names = ["O", "B-Disease", "I-Disease"]
    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names))})
    words = [["breast", "cancer", "is", "a", "disease"], ["the", "patient", "has", "colon", "cancer", "."],
             ["lung", "tumor", "and", "pain"], ["normal", "chest", "x", "ray"]]
    tags = [[1, 2, 0, 0, 0], [0, 0, 0, 1, 2, 0], [1, 2, 0, 0], [0, 0, 0, 0]]
    split = datasets.Dataset.from_dict({"tokens": words * 4, "ner_tags": tags * 4}, features=features)
    datasets.DatasetDict({"train": split, "validation": split.select(range(4))}).save_to_disk(tmp_path / "ds")
    results = run_args(["--model_name_or_path", str(encoder_dir), "--dataset_name", str(tmp_path / "ds"),
                    "--output_dir", str(tmp_path / "out"), "--do_train", "--num_train_epochs", "4", *FAST, *FAST_LR,
                    "--per_device_train_batch_size", "4"])
    _, gold, pred = read_predictions(tmp_path / "out" / "validation_predictions.tsv")
    assert gold == [[names[t] for t in sentence] for sentence in tags]
    assert results["eval_f1"] == pytest.approx(ner_metrics(gold, pred)["f1"])
    assert results["eval_f1"] > 0.8  # 16 steps on 4 sentences repeated: the tiny model learns them


# ---------------------------------------------------------------------------------------------------------------------
# Bad input: one clear error, before training
# ---------------------------------------------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


GOOD = "breast\tB-Disease\ncancer\tI-Disease\n.\tO\n\nthe\tO\npain\tO\n"


def base_args(encoder_dir, tmp_path, train, validation):
    return ["--model_name_or_path", str(encoder_dir), "--train_file", str(train), "--validation_file",
            str(validation), "--output_dir", str(tmp_path / "out"), "--do_train", *FAST, *FAST_LR]


def test_malformed_conll_line_names_file_and_line(encoder_dir, tmp_path):
    train = write(tmp_path / "train.tsv", GOOD + "\nlung\tB-Disease\textra\n")
    with pytest.raises(DataFormatError, match=rf"{train}:8: expected 2 columns"):
        run_args(base_args(encoder_dir, tmp_path, train, write(tmp_path / "dev.tsv", GOOD)))
    assert not (tmp_path / "out").exists()


def test_unknown_label_at_evaluation_names_file_line_and_label(encoder_dir, tmp_path):
    dev = write(tmp_path / "dev.tsv", GOOD + "\nhepatitis\tB-Virus\nb\tI-Virus\n")
    with pytest.raises(DataFormatError) as error:
        run_args(base_args(encoder_dir, tmp_path, write(tmp_path / "train.tsv", GOOD), dev))
    message = str(error.value)
    assert f"{dev}:8:" in message and "'B-Virus'" in message and "I-Virus" in message and "hepatitis" in message
    assert not (tmp_path / "out").exists()


def test_bare_encoder_without_do_train_is_refused(encoder_dir, tmp_path):
    """Evaluating a new, untrained head on a bare encoder would report noise as the model's scores (train-text
    refuses the same)."""
    train = write(tmp_path / "train.tsv", GOOD)
    args = [a for a in base_args(encoder_dir, tmp_path, train, train) if a != "--do_train"] + ["--do_eval"]
    with pytest.raises(InputError, match="encoder without a trained head: pass --do_train"):
        run_args(args)
    assert not (tmp_path / "out").exists()


def test_non_encoder_model_path(tmp_path, encoder_dir):
    from tiny import backbone_config

    train = write(tmp_path / "train.tsv", GOOD)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="is not a model"):
        run_args(base_args(empty, tmp_path, train, train))
    vit = tmp_path / "vit"
    backbone_config("vit").save_pretrained(vit)
    with pytest.raises(InputError, match="is not a text encoder: its config has no vocab_size"):
        run_args(base_args(vit, tmp_path, train, train))
    with pytest.raises(InputError, match="out of range"):
        run_args(base_args(encoder_dir, tmp_path, train, train) + ["--hidden_layers", "9"])


def test_cli_prints_one_line_and_exits_2(encoder_dir, tmp_path, capsys):
    train = write(tmp_path / "train.tsv", GOOD)
    args = base_args(encoder_dir, tmp_path, train, tmp_path / "missing.tsv")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medheads train-ner: error: --validation_file") and "no such file" in err[-1]
    assert "Traceback" not in "\n".join(err)
    no_validation = args[:4] + args[6:]
    assert main(no_validation) == 2
    assert "needs --validation_file" in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--hidden_layers", "--layer_combination", "--label_all_tokens", "--text_column_name",
                 "--dataset_name", "--max_seq_length", "--metric_for_best_model", "--resume_from_checkpoint",
                 "--learning_rate"):
        assert flag in text, flag
