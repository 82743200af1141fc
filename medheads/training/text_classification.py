"""Train a `FrozenEncoderMultiLabel` head on text: multi-label (ROCOv2 captions -> CUIs) or multi-class (MTSamples).

The logic behind `scripts/train_text_classifier.py`, importable and testable: `run(model_args, data_args,
training_args)` does the whole job and returns the metrics; `main(args)` parses flags (or one JSON file) and turns
input errors into one clear message. Like transformers' `examples/pytorch/text-classification/run_classification.py`
(HfArgumentParser, every TrainingArguments flag, `all_results.json`), with what a frozen encoder allows:

* The encoder never trains, so each text's pooled vector is computed once
  (`medheads.training.features.cached_features`, length-sorted batches, cached on disk keyed on the texts and the
  encoder weights) and the Trainer trains only the head on
  `pooled_features`. A 20-epoch run costs about one encoder pass; other heads on the same texts reuse the cache.
  `--use_feature_cache false` trains through the frozen encoder instead (same losses, slower).
* Texts are not truncated by default: a text longer than the encoder's window is encoded window by window and pooled
  over all windows (`--max_chunk_length`), so long clinical notes keep their ends. `--max_seq_length` truncates.
* Multi-label: after training, per-label thresholds are tuned on the validation split (best F1 per label) and stored
  in the saved config (`config.thresholds`), so `pipeline(...)` users and `predict_labels` apply them. Validation
  and test metrics are reported with the tuned thresholds (`eval_*`, `predict_*`) and at 0.5
  (`eval_threshold_05_*`, `predict_threshold_05_*`). Tuned validation numbers are optimistic (tuned on that split);
  the test split is the honest one.

Label policy at evaluation (decided here, documented in `--help`): a multi-class validation/test row whose class the
model does not know is an error naming the file, line and label. A multi-label row keeps its known labels; labels
the model does not know (rare in training, below `--min_label_count`, or unseen) are dropped and counted in one log
line per split, because long-tailed CUI sets always have such labels and the row's other labels still count.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data import DataFormatError, filter_rare_labels, read_text_table
from ..errors import InputError
from ..metrics import sigmoid, softmax
from .arguments import DataArguments, MedheadsTrainingArguments, ModelArguments
from .common import dataclass_dict, resume_checkpoint, run_training_command, setup_logging, write_run_summary
from .common import prepare_output_dir
from .lr_finder import maybe_find_learning_rate

logger = logging.getLogger("medheads")

SCRIPT_NAME = "train_text_classifier.py"
PROG = "medheads train-text"
MULTI_LABEL = "multi_label_classification"
SINGLE_LABEL = "single_label_classification"
PROBLEM_TYPE_ALIASES = {
    "multi_label_classification": MULTI_LABEL, "multi_label": MULTI_LABEL, "multilabel": MULTI_LABEL,
    "single_label_classification": SINGLE_LABEL, "single_label": SINGLE_LABEL,
    "multi_class_classification": SINGLE_LABEL, "multi_class": SINGLE_LABEL, "multiclass": SINGLE_LABEL,
}
SPLIT_NAMES = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
               "val": "validation", "dev": "validation", "devel": "validation", "test": "test"}
MULTILABEL_SUMMARY = ("micro_f1", "micro_precision", "micro_recall", "macro_f1", "samples_f1", "subset_accuracy",
                      "hamming_loss", "micro_roc_auc", "macro_roc_auc")
MULTICLASS_SUMMARY = ("accuracy", "macro_f1", "macro_precision", "macro_recall", "weighted_f1", "weighted_precision",
                      "weighted_recall")
UNTUNED = "threshold_05"  # infix of metrics at the default 0.5 threshold: eval_threshold_05_micro_f1


# ---------------------------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class TextModelArguments(ModelArguments):
    """Which encoder (or saved medheads model) to start from, and the head to put on it."""

    model_name_or_path: str = field(metadata={"help": (
        "A text encoder (folder or Hub id: BERT, RoBERTa, ModernBERT, MiniLM, ...) to put a new head on, or a saved "
        "FrozenEncoderMultiLabel folder to continue training / evaluate (its labels, pooling and head are kept).")})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer, if not the model's own."})
    pooling: str = field(default="mean", metadata={"help": "How token states become one vector: mean, cls or max."})
    feature_layer: int = field(default=-1, metadata={
        "help": "Which hidden_states entry is pooled: -1 the last layer, 0 the embeddings, k the k-th layer."})
    head_hidden_sizes: str = field(default="256", metadata={
        "help": "Comma-separated widths of the MLP head's hidden layers, e.g. '512,256'; '' gives a linear head."})
    head_activation: str = field(default="relu", metadata={"help": "Activation of the head: relu, gelu, tanh, silu."})
    head_dropout: float = field(default=0.2, metadata={"help": "Dropout before every linear layer of the head."})
    max_chunk_length: int | None = field(default=None, metadata={"help": (
        "Token window of one encoder pass. Longer texts are split into windows of this length, each encoded on its "
        "own, and pooled over all windows. Default: the encoder's max_position_embeddings, at most 512.")})
    max_seq_length: int | None = field(default=None, metadata={"help": (
        "Truncate texts to this many tokens. Default: no truncation (long texts are pooled over windows).")})
    use_feature_cache: bool = field(default=True, metadata={"help": (
        "Compute the frozen encoder's pooled features once, cache them on disk, and train only the head on them. "
        "False: run the frozen encoder on every batch of every epoch (same losses, much slower).")})
    feature_cache_dir: str | None = field(default=None, metadata={"help": (
        "Feature cache folder (default: $MEDHEADS_FEATURE_CACHE, else the datasets cache's medheads_features).")})
    feature_batch_size: int = field(default=16, metadata={
        "help": "Texts per encoder batch when computing features (batches are length-sorted, padded per batch)."})


@dataclass
class TextDataArguments(DataArguments):
    """Data options of the text classification script."""

    text_column_name: str = field(default="text", metadata={"help": "Column holding the text."})
    label_column_name: str = field(default="label", metadata={"help": "Column holding the label(s)."})
    problem_type: str | None = field(default=None, metadata={"help": (
        "multi_label_classification (several labels per text, separated by --label_separator; sigmoid per label) or "
        "single_label_classification (one class per text, a.k.a. multi_class; softmax). Default: the saved model's "
        "when continuing, else inferred from the training file's label column (as transformers' "
        "run_classification.py does): multi-label when --label_separator is given, a cell holds several labels "
        "separated by ';' or cells are JSON lists; otherwise single-label. The choice and its reason are logged.")})
    label_separator: str | None = field(default=None, metadata={
        "help": "Separator of the labels in one multi-label cell. Default ';' for multi-label, unused for multi-class."})
    split_column_name: str | None = field(default=None, metadata={"help": (
        "Column of --train_file naming each row's split (train, validation/valid/dev, test), for datasets shipped as "
        "one file with a split column (MTSamples).")})
    min_label_count: int = field(default=1, metadata={"help": (
        "Keep only labels seen in at least this many training rows. Multi-label: rarer labels are removed from the "
        "rows (and dropped, with a count, from validation/test). Multi-class: rows of rarer classes are dropped "
        "from training; a validation/test row of such a class is an error.")})
    validation_split_percentage: float = field(default=10.0, metadata={"help": (
        "Without a validation file (or split column), this percentage of the training file becomes the validation "
        "split, chosen reproducibly with --seed. 0: no validation split.")})
    test_split_percentage: float = field(default=0.0, metadata={"help": (
        "This percentage of the training file becomes a test split (for --do_predict), chosen reproducibly with "
        "--seed, when no test file is given.")})
    tune_thresholds: bool | None = field(default=None, metadata={"help": (
        "Multi-label: after training, tune one decision threshold per label on the validation split (best F1 per "
        "label) and store them in the saved config. Default: on for multi-label training.")})
    threshold_min_positives: int = field(default=1, metadata={"help": (
        "Tune a label's threshold only if the validation split has at least this many rows with the label; rarer "
        "labels keep 0.5 (a threshold fitted to one or two positives rarely carries over to new data).")})
    drop_empty_texts: bool = field(default=False, metadata={
        "help": "Drop rows whose text is empty (with a warning) instead of stopping with an error naming them."})


@dataclass
class TextTrainingArguments(MedheadsTrainingArguments):
    """Training arguments with defaults for a small head on cached features: it trains in seconds, so a high
    learning rate and many epochs are cheap; the best epoch (by `metric_for_best_model`) is restored at the end."""

    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate of the head (AdamW)."})
    num_train_epochs: float = field(default=20.0, metadata={"help": "Epochs over the training split."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Training batch size per device."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch size per device."})
    metric_for_best_model: str | None = field(default=None, metadata={"help": (
        "Metric that picks the best epoch. Default: micro_f1 for multi-label, accuracy for multi-class.")})

    def __post_init__(self):
        self.main_metric_from_default = self.metric_for_best_model is None
        super().__post_init__()


ARGUMENT_CLASSES = (TextModelArguments, TextDataArguments, TextTrainingArguments)


def parse_head_sizes(value) -> list[int]:
    """`'512,256'` -> `[512, 256]`; `''` -> `[]` (a linear head). Lists (from a JSON file) pass through."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        items = [str(v) for v in value]
    else:
        items = [part for part in str(value).replace(" ", "").split(",") if part]
    try:
        sizes = [int(item) for item in items]
    except ValueError:
        raise InputError(f"--head_hidden_sizes {value!r}: expected comma-separated integers like '512,256' "
                         "(or '' for a linear head).") from None
    if any(size <= 0 for size in sizes):
        raise InputError(f"--head_hidden_sizes {value!r}: widths must be positive.")
    return sizes


def normalize_problem_type(value: str | None) -> str | None:
    if value is None:
        return None
    key = str(value).strip().lower().replace("-", "_")
    if key not in PROBLEM_TYPE_ALIASES:
        raise InputError(f"--problem_type {value!r} is not known: use multi_label_classification or "
                         "single_label_classification (multi_class).")
    return PROBLEM_TYPE_ALIASES[key]


# ---------------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------------


def row_location(row: dict) -> str:
    """`file:line` of a row (`read_text_table` keeps the line each row starts on)."""
    return f"{row['_file']}:{row['line']}" if row.get("line") else f"{row['_file']} (data row {row['_index'] + 1})"


def _read_file(path: str, flag: str, data_args: TextDataArguments, multi_label: bool,
               extra_columns: tuple[str, ...] = ()) -> list[dict]:
    if not Path(path).is_file():
        raise InputError(f"{flag} {path}: no such file.")
    try:
        rows = read_text_table(path, data_args.text_column_name, data_args.label_column_name,
                               data_args.label_separator if multi_label else None,
                               drop_empty_text=data_args.drop_empty_texts, extra_columns=extra_columns,
                               line_numbers=True)
    except DataFormatError as error:
        message = str(error).replace("drop_empty_text=True", "--drop_empty_texts")
        message = message.replace("(for multi-label data pass label_separator)",
                                  "(for multi-label data pass --problem_type multi_label_classification)")
        if "no column" in message:
            message += " (set --text_column_name / --label_column_name)"
        raise InputError(message) from None
    for index, row in enumerate(rows):
        row["_file"], row["_index"] = str(path), index
    return rows


def _take(rows: list, limit: int | None) -> list:
    return rows if limit is None else rows[:limit]


def load_splits(data_args: TextDataArguments, multi_label: bool, seed: int) -> dict[str, list[dict]]:
    """Rows of every split: `{"text", "labels" (multi-label) | "label", "line", "_file", "_index"}`.

    Train rows come from `--train_file`; a split column, or `--validation_split_percentage` /
    `--test_split_percentage`, carve validation and test rows out of it (reproducibly, by `seed`).
    """
    splits: dict[str, list[dict]] = {}
    if data_args.train_file:
        extra = (data_args.split_column_name,) if data_args.split_column_name else ()
        rows = _read_file(data_args.train_file, "--train_file", data_args, multi_label, extra)
        if data_args.split_column_name:
            column = data_args.split_column_name
            unknown = sorted({row[column] for row in rows if row[column].strip().lower() not in SPLIT_NAMES})
            if unknown:
                raise InputError(f"{data_args.train_file}: column {column!r} holds split names {unknown[:5]} that are "
                                 f"not one of {sorted(set(SPLIT_NAMES))}; fix them or drop --split_column_name.")
            for row in rows:
                splits.setdefault(SPLIT_NAMES[row.pop(column).strip().lower()], []).append(row)
            splits.setdefault("train", [])
        else:
            splits["train"] = rows
    for name, path, flag in (("validation", data_args.validation_file, "--validation_file"),
                             ("test", data_args.test_file, "--test_file")):
        if path:
            if name in splits:
                raise InputError(f"{flag} {path} given, but the split column {data_args.split_column_name!r} of "
                                 f"{data_args.train_file} already holds {name} rows: use one or the other.")
            splits[name] = _read_file(path, flag, data_args, multi_label)

    carve = [("test", data_args.test_split_percentage), ("validation", data_args.validation_split_percentage)]
    for name, percentage in carve:
        if not 0 <= percentage < 100:
            raise InputError(f"--{name}_split_percentage must be in [0, 100), got {percentage}.")
    if "train" in splits:
        if data_args.test_split_percentage > 0 and "test" in splits:
            raise InputError("--test_split_percentage carves a test split out of the training file, but a test split "
                             "is already given (--test_file or the split column): drop one of them.")
        wanted = [(name, pct) for name, pct in carve if pct > 0 and name not in splits]
        if wanted:
            rows = splits["train"]
            order = np.random.default_rng(seed).permutation(len(rows))
            start = 0
            for name, percentage in wanted:
                count = int(round(len(rows) * percentage / 100))
                if count == 0 or count >= len(rows) - start:
                    raise InputError(f"--{name}_split_percentage {percentage} of {len(rows)} training rows leaves "
                                     f"{count} {name} rows: use a larger file or another percentage.")
                splits[name] = [rows[i] for i in sorted(order[start:start + count])]
                start += count
            splits["train"] = [rows[i] for i in sorted(order[start:])]
            logger.info("Split %s reproducibly (seed %d): %s", data_args.train_file, seed,
                        ", ".join(f"{name} {len(rows)}" for name, rows in splits.items()))
    splits = {name: rows for name, rows in splits.items() if rows or name == "train"}
    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples,
              "test": data_args.max_predict_samples}
    return {name: _take(rows, limits[name]) for name, rows in splits.items()}


def multilabel_label_set(train_rows: list[dict], min_count: int) -> tuple[list[str], dict[str, int]]:
    """Labels seen in at least `min_count` training rows (sorted), and every label's training count."""
    _, kept, counts = filter_rare_labels(train_rows, max(1, min_count))
    return kept, counts


def restrict_multilabel(rows: list[dict], labels: list[str], split: str, reason: str) -> list[dict]:
    """Drop labels not in `labels` from each row (rows are kept), logging how many were dropped."""
    known = set(labels)
    dropped: Counter = Counter()
    emptied = 0
    for row in rows:
        kept = [label for label in row["labels"] if label in known]
        dropped.update(label for label in row["labels"] if label not in known)
        if row["labels"] and not kept:
            emptied += 1
        row["labels"] = kept
    if dropped:
        logger.warning("%s: dropped %d label occurrences (%d distinct labels, e.g. %s) that are not among the %d "
                       "labels of the model (%s); the rows are kept with their other labels (%d rows now have none).",
                       split, sum(dropped.values()), len(dropped), ", ".join(label for label, _ in
                                                                             dropped.most_common(5)),
                       len(labels), reason, emptied)
    return rows


def check_multiclass(rows: list[dict], classes: list[str], split: str, text_column: str, label_column: str,
                     rare: dict[str, int]) -> None:
    """One error naming the file, line and label when a row's class is not one of the model's classes."""
    known = set(classes)
    bad = [row for row in rows if row["label"] not in known]
    if not bad:
        return
    first = bad[0]
    label = first["label"]
    why = (f"class {label!r} has only {rare[label]} training rows and was dropped by --min_label_count"
           if label in rare else f"class {label!r} (column {label_column!r}) never occurs in training")
    others = sorted({row["label"] for row in bad} - {label})
    raise InputError(
        f"{row_location(first)}: {why}; the model knows {len(classes)} classes: {classes}. "
        f"{len(bad)} {split} rows have unknown classes" + (f" (also {others[:5]})" if others else "") +
        ". Add training rows of these classes, lower --min_label_count, or remove those rows.")


# ---------------------------------------------------------------------------------------------------------------------
# Model and features
# ---------------------------------------------------------------------------------------------------------------------


def inspect_model_path(model_args: TextModelArguments) -> str:
    """'saved' for a saved FrozenEncoderMultiLabel, 'encoder' for a text encoder; anything else is an InputError."""
    from transformers import AutoConfig

    from ..models.configuration_frozen_encoder_multilabel import FrozenEncoderMultiLabelConfig

    try:
        config = AutoConfig.from_pretrained(model_args.model_name_or_path, **model_args.hub_kwargs())
    except (OSError, ValueError, KeyError) as error:
        raise InputError(f"--model_name_or_path {model_args.model_name_or_path!r}: not a model folder or Hub id with "
                         f"a readable config.json ({type(error).__name__}: {str(error).splitlines()[0]}).") from None
    model_type = str(getattr(config, "model_type", ""))
    if model_type == FrozenEncoderMultiLabelConfig.model_type:
        return "saved"
    if model_type.startswith("medheads-"):
        raise InputError(f"--model_name_or_path {model_args.model_name_or_path!r} is a saved {model_type} model, not "
                         "a text encoder or a FrozenEncoderMultiLabel: pass the encoder it was built on.")
    if getattr(config, "num_hidden_layers", None) is None or getattr(config, "hidden_size", None) is None:
        raise InputError(f"--model_name_or_path {model_args.model_name_or_path!r} ({model_type or 'no model_type'}) "
                         "is not a transformer text encoder: its config has no num_hidden_layers / hidden_size.")
    if getattr(config, "vocab_size", None) is None:
        raise InputError(f"--model_name_or_path {model_args.model_name_or_path!r} ({model_type}) is not a text "
                         "encoder (no vocab_size): pass a text model such as BERT, RoBERTa or MiniLM.")
    return "encoder"


def load_tokenizer(model_args: TextModelArguments):
    from transformers import AutoTokenizer

    name = model_args.tokenizer_name or model_args.model_name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **model_args.hub_kwargs())
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise InputError(f"No tokenizer could be loaded from {name!r} ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''}); pass --tokenizer_name.") from None
    if not callable(tokenizer) or not hasattr(tokenizer, "pad"):
        raise InputError(f"{name!r} did not give a text tokenizer; pass --tokenizer_name.")
    return tokenizer


def build_model(model_args: TextModelArguments, kind: str, problem_type: str, id2label: dict[int, str]):
    from ..models.modeling_frozen_encoder_multilabel import FrozenEncoderMultiLabel

    if kind == "saved":
        try:
            return FrozenEncoderMultiLabel.from_pretrained(model_args.model_name_or_path, **model_args.hub_kwargs())
        except (OSError, ValueError) as error:  # a truncated weights file, a config out of range
            raise InputError(f"--model_name_or_path {model_args.model_name_or_path!r}: {error}") from None
    try:
        return FrozenEncoderMultiLabel.from_encoder(
            model_args.model_name_or_path, pooling=model_args.pooling, feature_layer=model_args.feature_layer,
            head_hidden_sizes=parse_head_sizes(model_args.head_hidden_sizes),
            head_activation=model_args.head_activation, head_dropout=model_args.head_dropout,
            max_chunk_length=model_args.max_chunk_length, problem_type=problem_type, id2label=id2label,
            **model_args.hub_kwargs())
    except ValueError as error:
        raise InputError(str(error)) from None


def tokenize(tokenizer, texts: list[str], max_seq_length: int | None) -> dict[str, list]:
    if max_seq_length is None:
        # Long texts are pooled over windows by the model: the "longer than the maximum" warning does not apply.
        tokenizer.deprecation_warnings["sequence-length-is-longer-than-the-specified-maximum"] = True
        return dict(tokenizer(texts, truncation=False))
    return dict(tokenizer(texts, truncation=True, max_length=max_seq_length))


# ---------------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------------


def split_metrics(problem_type: str, y_true: np.ndarray, probs: np.ndarray, label_names: list[str],
                  thresholds=0.5) -> dict[str, float]:
    """Every metric of one split (summary and per label), from gold labels and probabilities."""
    from ..metrics import multiclass_metrics, multilabel_metrics

    if problem_type == MULTI_LABEL:
        return multilabel_metrics(y_true, probs, thresholds=np.asarray(thresholds, dtype=float),
                                  label_names=label_names)
    return multiclass_metrics(y_true, probs, label_names)


def make_compute_metrics(problem_type: str, label_names: list[str]):
    """`compute_metrics` for the Trainer's per-epoch evaluation: summary metrics at threshold 0.5."""
    summary = MULTILABEL_SUMMARY if problem_type == MULTI_LABEL else MULTICLASS_SUMMARY

    def compute_metrics(prediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        probs = sigmoid(logits) if problem_type == MULTI_LABEL else softmax(logits)
        metrics = split_metrics(problem_type, prediction.label_ids, probs, label_names)
        return {key: metrics[key] for key in summary if key in metrics}

    return compute_metrics


def summary_of(metrics: dict, prefix: str, problem_type: str) -> dict:
    keys = MULTILABEL_SUMMARY if problem_type == MULTI_LABEL else MULTICLASS_SUMMARY
    extra = ("loss", "samples", "runtime")
    return {k: v for k, v in metrics.items()
            if k.startswith(prefix) and k[len(prefix):].lstrip("_") in keys + extra}


# ---------------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------------


def resolve_arguments(model_args: TextModelArguments, data_args: TextDataArguments,
                      training_args: TextTrainingArguments, kind: str, saved_config=None) -> str:
    """Fill argument defaults that depend on each other; returns the problem type."""
    problem_type = normalize_problem_type(data_args.problem_type)
    if saved_config is not None:
        if problem_type is not None and problem_type != saved_config.problem_type:
            raise InputError(f"--problem_type {problem_type} differs from the saved model's "
                             f"{saved_config.problem_type} ({model_args.model_name_or_path}).")
        problem_type = saved_config.problem_type
    if problem_type is None:
        problem_type, reason = infer_problem_type(data_args)
        logger.info("Problem type: %s (inferred: %s; pass --problem_type to choose).", problem_type, reason)
    data_args.problem_type = problem_type
    if problem_type == SINGLE_LABEL and data_args.label_separator is not None:
        raise InputError(f"--label_separator {data_args.label_separator!r} splits multi-label cells, but this is a "
                         "single-label run: drop it, or pass --problem_type multi_label_classification.")
    if problem_type == MULTI_LABEL and data_args.label_separator is None:
        data_args.label_separator = ";"
    if data_args.tune_thresholds is None:
        data_args.tune_thresholds = problem_type == MULTI_LABEL and training_args.do_train
    if data_args.tune_thresholds and problem_type != MULTI_LABEL:
        logger.warning("--tune_thresholds applies to multi-label classification only; ignored.")
        data_args.tune_thresholds = False
    if getattr(training_args, "main_metric_from_default", False) or training_args.metric_for_best_model is None:
        training_args.metric_for_best_model = "micro_f1" if problem_type == MULTI_LABEL else "accuracy"
        training_args.greater_is_better = True
    check_main_metric(training_args.metric_for_best_model, problem_type)
    if training_args.dataloader_pin_memory and training_args.device.type == "cpu":
        training_args.dataloader_pin_memory = False  # nothing to pin for; torch warns on every epoch otherwise
    parse_head_sizes(model_args.head_hidden_sizes)
    if model_args.max_seq_length is not None and model_args.max_seq_length < 2:
        raise InputError(f"--max_seq_length must be at least 2, got {model_args.max_seq_length}.")
    if model_args.feature_batch_size < 1:
        raise InputError(f"--feature_batch_size must be positive, got {model_args.feature_batch_size}.")
    if data_args.threshold_min_positives < 1:
        raise InputError(f"--threshold_min_positives must be at least 1, got {data_args.threshold_min_positives}.")
    if data_args.min_label_count < 1:
        raise InputError(f"--min_label_count must be at least 1, got {data_args.min_label_count}.")
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        raise InputError("Nothing to do: pass --do_train, --do_eval and/or --do_predict.")
    return problem_type


#: Characters that separate labels in a list-like cell; checked against the separator in use (item: wrong separator).
LIST_SEPARATORS = (";", ",", "|", "+")
DEFAULT_SEPARATOR = ";"


def label_cells(path: str | None, label_column: str) -> list | None:
    """The raw cells of `label_column` in `path` (strings, or lists for JSON-lines lists); None when the file
    cannot be read here (the real read then reports why)."""
    from ..data import _cell_text, _table_records

    if not path or not Path(path).is_file():
        return None
    try:
        columns, records = _table_records(Path(path))
    except DataFormatError:
        return None
    if label_column not in columns:
        return None
    return [value if isinstance(value := record.get(label_column), list) else _cell_text(value).strip()
            for _, record in records]


def infer_problem_type(data_args: TextDataArguments) -> tuple[str, str]:
    """(problem type, why) from the training file's label column when --problem_type is not given.

    Like transformers' run_classification.py (list-typed labels are multi-label, others single-label), for tables:
    multi-label when --label_separator is given, when any cell holds several labels separated by ';' (the default
    separator) or when cells are JSON lists; single-label when every row holds one label and no separator.
    """
    if data_args.label_separator is not None:
        return MULTI_LABEL, f"--label_separator {data_args.label_separator!r} is given"
    cells = label_cells(data_args.train_file, data_args.label_column_name)
    if cells is None:
        return SINGLE_LABEL, "no readable training file to look at"
    lists = [cell for cell in cells if isinstance(cell, list)]
    if lists:
        return MULTI_LABEL, f"{len(lists)} of {len(cells)} label cells are JSON lists"
    several = [cell for cell in cells if DEFAULT_SEPARATOR in cell]
    if several:
        return MULTI_LABEL, (f"{len(several)} of {len(cells)} cells of column {data_args.label_column_name!r} hold "
                             f"several labels separated by {DEFAULT_SEPARATOR!r} (e.g. {several[0]!r})")
    return SINGLE_LABEL, (f"every cell of column {data_args.label_column_name!r} holds one label and no "
                          f"{DEFAULT_SEPARATOR!r} separator ({len(set(cells))} distinct labels)")


def _list_like(labels: set[str], separator: str) -> tuple[list[str], set[str]] | None:
    """Labels that look like lists joined by `separator`: (examples, pieces), or None.

    Labels containing `separator` count as lists when there are fewer distinct pieces than combinations (17 labels
    combined into 46 cells), or when most of them consist only of pieces that are labels on their own elsewhere
    (`A|B` beside `A` and `B`). A class name that merely contains the character (`Neoplasms, malignant`) does not.
    """
    split = {label: [p.strip() for p in label.split(separator) if p.strip()] for label in labels}
    compound = sorted(label for label, parts in split.items() if len(parts) >= 2)
    if not compound:
        return None
    pieces = {p for label in compound for p in split[label]}
    standalone = labels - set(compound)
    decomposable = sum(all(p in standalone for p in split[label]) for label in compound)
    if len(pieces) < len(compound) or decomposable * 2 > len(compound):
        return compound, pieces
    return None


def check_label_cells(data_args: TextDataArguments, problem_type: str) -> None:
    """Stop when label cells look like lists under another separator or problem type than the run uses.

    Multi-label with separator s: cells joined by another separator (`A|B` while s is ';') would train on label
    combinations instead of labels. Single-label: cells holding several labels (`A;B`) are multi-label data.
    """
    files = [(flag, path) for flag, path in (("--train_file", data_args.train_file),
                                              ("--validation_file", data_args.validation_file),
                                              ("--test_file", data_args.test_file)) if path]
    column = data_args.label_column_name
    for flag, path in files:
        cells = label_cells(path, column)
        if not cells:
            continue
        if problem_type == MULTI_LABEL:
            separator = data_args.label_separator or DEFAULT_SEPARATOR
            labels = {part.strip() for cell in cells for part in
                      (cell if isinstance(cell, list) else cell.split(separator)) if part.strip()}
            for other in LIST_SEPARATORS:
                if other == separator:
                    continue
                found = _list_like(labels, other)
                if found:
                    compound, pieces = found
                    raise InputError(
                        f"{flag} {path}: {len(compound)} labels of column {column!r} look like lists joined by "
                        f"{other!r}, not by the separator {separator!r} (e.g. {compound[0]!r}): the model would "
                        f"learn label combinations instead of {len(pieces)} labels. Pass --label_separator "
                        f"{other!r}.")
        else:
            labels = {cell for cell in cells if isinstance(cell, str) and cell}
            for other in LIST_SEPARATORS:
                found = _list_like(labels, other)
                if found:
                    compound, pieces = found
                    raise InputError(
                        f"{flag} {path}: {len(compound)} cells of column {column!r} hold several labels joined by "
                        f"{other!r} (e.g. {compound[0]!r}), but this is a single-label (multi-class) run. For "
                        f"multi-label data pass --problem_type multi_label_classification --label_separator "
                        f"{other!r}.")


def check_main_metric(metric: str | None, problem_type: str) -> None:
    """`--metric_for_best_model` must name a metric the per-epoch evaluation reports; otherwise the Trainer fails
    with a KeyError only after the first epoch."""
    if not metric:
        return
    names = (MULTILABEL_SUMMARY if problem_type == MULTI_LABEL else MULTICLASS_SUMMARY) + ("loss",)
    if metric.removeprefix("eval_") not in names:
        raise InputError(f"--metric_for_best_model {metric!r} is not reported by the evaluation of a {problem_type} "
                         f"run; use one of: {', '.join(names)}.")


def prepare_labels(splits: dict[str, list[dict]], problem_type: str, data_args: TextDataArguments,
                   saved_labels: list[str] | None) -> list[str]:
    """The model's label list (sorted, or the saved model's), with every split's rows checked or restricted to it."""
    if problem_type == MULTI_LABEL:
        if saved_labels is not None:
            labels, reason = saved_labels, "the saved model's labels"
        else:
            if not splits.get("train"):
                raise InputError("No training rows to take the labels from: pass --train_file.")
            labels, counts = multilabel_label_set(splits["train"], data_args.min_label_count)
            if not labels:
                raise InputError(f"No label of column {data_args.label_column_name!r} occurs in at least "
                                 f"--min_label_count {data_args.min_label_count} training rows (most common: "
                                 f"{Counter(counts).most_common(3)}); lower --min_label_count or check "
                                 f"--label_separator {data_args.label_separator!r}.")
            reason = f"seen fewer than {data_args.min_label_count} times in training" \
                if data_args.min_label_count > 1 else "unseen in training"
            logger.info("%d labels seen in at least %d training rows (of %d distinct).", len(labels),
                        data_args.min_label_count, len(counts))
        for name, rows in splits.items():
            restrict_multilabel(rows, labels, name, reason)
        return labels

    rare: dict[str, int] = {}
    if saved_labels is not None:
        classes = saved_labels
    else:
        if not splits.get("train"):
            raise InputError("No training rows to take the classes from: pass --train_file.")
        counts = Counter(row["label"] for row in splits["train"])
        classes = sorted(label for label, count in counts.items() if count >= data_args.min_label_count)
        rare = {label: count for label, count in counts.items() if count < data_args.min_label_count}
        if rare:
            before = len(splits["train"])
            splits["train"] = [row for row in splits["train"] if row["label"] not in rare]
            logger.warning("Dropped %d training rows of %d classes seen fewer than %d times: %s", before -
                           len(splits["train"]), len(rare), data_args.min_label_count, sorted(rare))
        if len(classes) < 2:
            raise InputError(f"Multi-class training needs at least 2 classes in column "
                             f"{data_args.label_column_name!r}, found {classes}.")
    for name, rows in splits.items():
        check_multiclass(rows, classes, name, data_args.text_column_name, data_args.label_column_name, rare)
    return classes


def encode_targets(rows: list[dict], labels: list[str], problem_type: str):
    index = {label: i for i, label in enumerate(labels)}
    if problem_type == MULTI_LABEL:
        targets = np.zeros((len(rows), len(labels)), dtype=np.float32)
        for i, row in enumerate(rows):
            for label in row["labels"]:
                targets[i, index[label]] = 1.0
        return targets
    return np.array([index[row["label"]] for row in rows], dtype=np.int64)


def gold_strings(rows: list[dict], problem_type: str) -> list[str]:
    return [";".join(row["labels"]) if problem_type == MULTI_LABEL else row["label"] for row in rows]


def _features_for(model, split: str, inputs, labeled, model_args, training_args, collator):
    """Cached pooled features of `inputs` (a dataset of token ids only, so the cache is keyed on the texts and the
    encoder, not on the label set), with the labels of `labeled` attached."""
    from .features import cached_features

    start = time.perf_counter()
    features = cached_features(model, inputs, collator, feature_name="pooled_features", keep_columns=(),
                               batch_size=model_args.feature_batch_size, cache_dir=model_args.feature_cache_dir,
                               training_args=training_args, desc=f"Encoder features ({split})")
    elapsed = time.perf_counter() - start
    features = features.with_format(None).add_column("labels", labeled["labels"], feature=labeled.features["labels"])
    return features.with_format("torch"), elapsed


def run(model_args: TextModelArguments, data_args: TextDataArguments, training_args: TextTrainingArguments) -> dict:
    """Train / evaluate / predict as the flags say; returns every metric (also written to all_results.json)."""
    import datasets
    from transformers import DataCollatorWithPadding, Trainer, default_data_collator, set_seed

    from ..metrics import tune_thresholds

    setup_logging(training_args)
    datasets.utils.logging.set_verbosity(training_args.get_process_log_level())
    logger.info("Training arguments: do_train=%s do_eval=%s do_predict=%s output_dir=%s", training_args.do_train,
                training_args.do_eval, training_args.do_predict, training_args.output_dir)

    # --- everything that can be wrong with the input is found here, before any training -----------------------------
    kind = inspect_model_path(model_args)
    saved_config = None
    if kind == "saved":
        from transformers import AutoConfig
        saved_config = AutoConfig.from_pretrained(model_args.model_name_or_path, **model_args.hub_kwargs())
        logger.info("Continuing from the saved model %s: its labels, pooling and head are kept (head flags ignored).",
                    model_args.model_name_or_path)
    problem_type = resolve_arguments(model_args, data_args, training_args, kind, saved_config)
    multi_label = problem_type == MULTI_LABEL
    prepare_output_dir(training_args, InputError, model_args.model_name_or_path)
    if training_args.do_train and not data_args.train_file:
        raise InputError("--do_train needs --train_file.")
    if kind == "encoder" and not training_args.do_train:
        raise InputError(f"{model_args.model_name_or_path!r} is an encoder without a trained head: pass --do_train, "
                         "or a saved FrozenEncoderMultiLabel folder to evaluate.")
    tokenizer = load_tokenizer(model_args)
    check_label_cells(data_args, problem_type)
    splits = load_splits(data_args, multi_label, training_args.seed)
    saved_labels = [saved_config.id2label[i] for i in range(saved_config.num_labels)] if saved_config else None
    labels = prepare_labels(splits, problem_type, data_args, saved_labels)
    if training_args.do_train and not splits.get("train"):
        raise InputError(f"--do_train: {data_args.train_file} has no training rows.")
    if training_args.do_eval and "validation" not in splits:
        raise InputError("--do_eval needs a validation split: --validation_file, a split column with validation rows, "
                         "or --validation_split_percentage > 0.")
    if training_args.do_predict and "test" not in splits:
        raise InputError("--do_predict needs a test split: --test_file, a split column with test rows, or "
                         "--test_split_percentage > 0.")
    logger.info("%s with %d labels; rows: %s", problem_type, len(labels),
                ", ".join(f"{name} {len(rows)}" for name, rows in splits.items()))

    # --- model and inputs ----------------------------------------------------------------------------------------------
    set_seed(training_args.seed)
    model = build_model(model_args, kind, problem_type, dict(enumerate(labels)))
    if kind == "saved" and model_args.max_chunk_length not in (None, model.config.max_chunk_length):
        logger.warning("--max_chunk_length is ignored when continuing from a saved model (it keeps its own).")
    encoded, unlabeled = {}, {}
    for name, rows in splits.items():
        inputs = tokenize(tokenizer, [row["text"] for row in rows], model_args.max_seq_length)
        targets = encode_targets(rows, labels, problem_type)
        features = datasets.Features({key: datasets.Sequence(datasets.Value("int32")) for key in inputs})
        unlabeled[name] = datasets.Dataset.from_dict(inputs, features=features)
        features["labels"] = (datasets.Sequence(datasets.Value("float32"), length=len(labels)) if multi_label
                              else datasets.Value("int64"))
        encoded[name] = datasets.Dataset.from_dict({**inputs, "labels": targets.tolist()}, features=features)
    collator = DataCollatorWithPadding(tokenizer)
    feature_seconds = {}
    if model_args.use_feature_cache:
        model.to(training_args.device)
        data = {}
        for name, dataset in encoded.items():
            data[name], feature_seconds[name] = _features_for(model, name, unlabeled[name], dataset, model_args,
                                                              training_args, collator)
        data_collator = default_data_collator
    else:
        data, data_collator = encoded, collator

    if "validation" not in data and training_args.eval_strategy != "no":
        from transformers.trainer_utils import IntervalStrategy
        logger.warning("No validation split: evaluating never and keeping the last epoch's model.")
        training_args.eval_strategy = IntervalStrategy.NO
        training_args.load_best_model_at_end = False
    trainer = Trainer(model=model, args=training_args, train_dataset=data.get("train"),
                      eval_dataset=data.get("validation"), data_collator=data_collator,
                      processing_class=tokenizer, compute_metrics=make_compute_metrics(problem_type, labels))

    all_metrics: dict[str, Any] = {}
    if training_args.do_train:
        checkpoint = resume_checkpoint(training_args)
        maybe_find_learning_rate(trainer, training_args)
        result = trainer.train(resume_from_checkpoint=checkpoint)
        metrics = dict(result.metrics)
        metrics["train_samples"] = len(data["train"])
        if feature_seconds:
            metrics["train_feature_seconds"] = round(sum(feature_seconds.values()), 2)
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        all_metrics.update(metrics)

    # --- validation: thresholds, metrics ---------------------------------------------------------------------------
    predictions: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}

    def predict(split: str):
        output = trainer.predict(data[split], metric_key_prefix="eval" if split == "validation" else "predict")
        logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
        probs = sigmoid(logits) if multi_label else softmax(logits)
        loss = output.metrics.get("eval_loss" if split == "validation" else "predict_loss")
        return encode_targets(splits[split], labels, problem_type), probs, loss

    tuned = False
    if "validation" in data and (training_args.do_eval or data_args.tune_thresholds):
        predictions["validation"] = predict("validation")
    if data_args.tune_thresholds and multi_label and "validation" in predictions:
        y_true, probs, _ = predictions["validation"]
        thresholds = tune_thresholds(y_true, probs)
        rare = y_true.sum(axis=0) < data_args.threshold_min_positives
        thresholds[rare] = 0.5
        model.config.thresholds = [round(float(t), 4) for t in thresholds]
        tuned = True
        logger.info("Tuned per-label thresholds on validation (min %.2f, median %.2f, max %.2f); %d labels with "
                    "fewer than %d validation positives keep 0.5.", thresholds.min(), float(np.median(thresholds)),
                    thresholds.max(), int(rare.sum()), data_args.threshold_min_positives)
    if training_args.do_train or tuned:
        trainer.save_model()
        if trainer.is_world_process_zero():
            tokenizer.save_pretrained(training_args.output_dir)

    thresholds = model.config.thresholds if multi_label else None
    thresholds = 0.5 if thresholds is None else thresholds

    def report(split: str, prefix: str) -> dict:
        y_true, probs, loss = predictions[split]
        metrics = {f"{prefix}_{k}": v for k, v in split_metrics(problem_type, y_true, probs, labels,
                                                                thresholds).items()}
        if multi_label:
            metrics.update({f"{prefix}_{UNTUNED}_{k}": v for k, v in
                            split_metrics(problem_type, y_true, probs, labels, 0.5).items()})
        if loss is not None:
            metrics[f"{prefix}_loss"] = loss
        metrics[f"{prefix}_samples"] = len(y_true)
        trainer.log_metrics(prefix, summary_of(metrics, prefix, problem_type))
        trainer.save_metrics(prefix, metrics)
        return metrics

    if training_args.do_eval:
        all_metrics.update(report("validation", "eval"))
    if training_args.do_predict:
        predictions["test"] = predict("test")
        all_metrics.update(report("test", "predict"))

    if trainer.is_world_process_zero():
        plots = write_reports(training_args.output_dir, trainer.state.log_history, predictions, splits, labels,
                              problem_type, thresholds, training_args.metric_for_best_model, all_metrics)
        plots += write_analysis_views(training_args.output_dir, splits, labels, problem_type,
                                      data if model_args.use_feature_cache else None, training_args.seed)
        write_run_summary(training_args.output_dir, SCRIPT_NAME, dataclass_dict(model_args, data_args, training_args),
                          {**all_metrics, **{f"{k}_feature_seconds": v for k, v in feature_seconds.items()}}, plots)
    return all_metrics


def write_reports(output_dir: str, log_history: list, predictions: dict, splits: dict, labels: list[str],
                  problem_type: str, thresholds, main_metric: str, metrics: dict) -> list[str]:
    """Plots (confusion, per-label F1, training curves), classification_report.txt, predict_results.txt."""
    from sklearn.metrics import classification_report

    from ..plots import plot_confusion_matrix, plot_multilabel_confusion, plot_per_label_f1, plot_training_curves

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots, report_parts = [], []
    multi_label = problem_type == MULTI_LABEL
    names = {"validation": "eval", "test": "predict"}
    for split, (y_true, probs, _) in predictions.items():
        prefix = names[split]
        if multi_label:
            y_pred = (probs >= np.asarray(thresholds, dtype=float)).astype(int)
            plots.append(plot_multilabel_confusion(y_true, y_pred, labels, out / f"confusion_matrix_{split}.png",
                                                   title=f"Per-label confusion ({split}, tuned thresholds)"))
            text = classification_report(y_true.astype(int), y_pred, target_names=labels, digits=4, zero_division=0)
        else:
            y_pred = probs.argmax(axis=1)
            plots.append(plot_confusion_matrix(y_true, y_pred, labels, out / f"confusion_matrix_{split}.png",
                                               title=f"Confusion matrix ({split})"))
            text = classification_report(y_true, y_pred, labels=list(range(len(labels))), target_names=labels,
                                         digits=4, zero_division=0)
        per_label = {key[len(prefix) + 4:]: value for key, value in metrics.items() if key.startswith(f"{prefix}_f1_")}
        if per_label:
            plots.append(plot_per_label_f1(per_label, out / f"per_label_f1_{split}.png", title=f"F1 per label ({split})"))
        threshold_note = " (tuned per-label thresholds)" if multi_label and not np.isscalar(thresholds) else ""
        report_parts.append(f"== {split} ({len(y_true)} rows){threshold_note} ==\n{text}")
        if split in ("test", "validation"):  # per-text rows: bootstrap CIs (medheads bootstrap-ci) and error reading
            name = "predict_results.txt" if split == "test" else "validation_predictions.tsv"
            with open(out / name, "w") as handle:
                handle.write("index\tgold\tprediction\tscore\n")
                for i, (row_probs, gold) in enumerate(zip(probs, gold_strings(splits[split], problem_type))):
                    if multi_label:
                        hits = np.flatnonzero(row_probs >= np.asarray(thresholds, dtype=float))
                        predicted = ";".join(labels[j] for j in hits)
                        score = ";".join(f"{row_probs[j]:.3f}" for j in hits)
                    else:
                        j = int(row_probs.argmax())
                        predicted, score = labels[j], f"{row_probs[j]:.3f}"
                    handle.write(f"{i}\t{gold}\t{predicted}\t{score}\n")
    if report_parts:
        (out / "classification_report.txt").write_text("\n".join(report_parts))
    if any("loss" in log or "eval_loss" in log for log in log_history):
        plots.append(plot_training_curves(log_history, out / "training_curves.png", metric=f"eval_{main_metric}"
                                          if not main_metric.startswith("eval_") else main_metric,
                                          title="Head training"))
    return [str(p) for p in plots]


def write_analysis_views(output_dir: str, splits: dict, labels: list[str], problem_type: str, data: dict | None,
                         seed: int = 0) -> list[str]:
    """Seed 000's analysis views: the co-occurrence / correlation heat map of the training labels (multi-label), and
    a 2-D map (UMAP where umap-learn is installed, else PCA) of the pooled hidden states of the validation split (else
    train), coloured by label (a multi-label row by its most frequent training label). The numbers behind both go
    to `analysis_views.json`. The map needs the cached features (the default); without them it is skipped."""
    from ..plots import label_cooccurrence, plot_embedding_map, plot_label_cooccurrence, project_2d

    out = Path(output_dir)
    plots, views = [], {}
    multi_label = problem_type == MULTI_LABEL
    train_targets = encode_targets(splits["train"], labels, problem_type) if splits.get("train") else None
    if multi_label and train_targets is not None and len(labels) > 1:
        counts, correlation = label_cooccurrence(train_targets)
        plots.append(plot_label_cooccurrence(train_targets, labels, out / "label_cooccurrence.png",
                                             title=f"Training labels ({len(train_targets)} rows)"))
        views["label_cooccurrence"] = {"labels": labels, "counts": counts.tolist(),
                                       "correlation": np.round(correlation, 6).tolist()}
    split = "validation" if data and "validation" in data else "train" if data and "train" in data else None
    if split is not None:
        features = np.asarray(data[split]["pooled_features"], dtype=np.float32)
        targets = encode_targets(splits[split], labels, problem_type)
        if multi_label:
            frequency = (train_targets if train_targets is not None else targets).sum(axis=0)
            point_labels = [labels[max(np.flatnonzero(row), key=lambda j: (frequency[j], -j))] if row.any() else None
                            for row in targets]
        else:
            point_labels = [labels[int(t)] for t in targets]
        coords, method = project_2d(features, seed=seed)
        plots.append(plot_embedding_map(coords, point_labels, out / f"embedding_map_{split}.png", method=method,
                                        title=f"Pooled hidden states, {split} ({len(coords)} texts, {method.upper()})"))
        views["embedding_map"] = {"split": split, "method": method, "labels": point_labels,
                                  "coordinates": np.round(coords, 6).tolist()}
    if views:
        (out / "analysis_views.json").write_text(json.dumps(views))
    return [str(p) for p in plots]


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """`medheads train-text ARGS`: flags, or one JSON file of arguments optionally followed by flags that override it
    (`configs/text_mtsamples.json --model_name_or_path /models/minilm`). An input error prints one line
    `PROG: error: ...` (no traceback) and gives exit status 2, before any model is loaded."""
    return run_training_command(run, ARGUMENT_CLASSES, argv, prog)


__all__ = [
    "TextModelArguments", "TextDataArguments", "TextTrainingArguments", "ARGUMENT_CLASSES", "run", "main", "load_splits",
    "prepare_labels", "split_metrics", "make_compute_metrics", "parse_head_sizes", "inspect_model_path",
]
