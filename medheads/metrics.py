"""Evaluation metrics for medheads' three tasks, as plain ``dict[str, float]``.

Every metric function returns a dict of Python floats (JSON-serialisable,
ready for ``Trainer`` logs and result files). Per-label keys use
:func:`metric_key` to make label names safe (``"Cardiovascular / Pulmonary"``
-> ``f1_Cardiovascular_Pulmonary``).

* NER (:func:`ner_metrics`): span-level precision, recall and F1 with seqeval,
  plus word-level accuracy and macro F1.
* Multi-label (:func:`multilabel_metrics`, :func:`tune_thresholds`).
* Multi-class / binary (:func:`multiclass_metrics`,
  :func:`classification_metrics`, which adds ROC AUC).

Undefined ratios (e.g. precision of a label never predicted) count as 0, as
sklearn's and seqeval's ``zero_division=0``; no warnings are emitted for them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from seqeval.metrics import classification_report as seqeval_report
from seqeval.scheme import IOB2
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    hamming_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)

__all__ = [
    "detokenize", "tag_spans", "char_spans", "char_span_metrics", "pipeline_char_span_metrics",
    "accuracy_ci",
    "accuracy_difference_ci",
    "bootstrap_ci",
    "multilabel_ci",
    "multilabel_difference_ci",
    "ner_f1_ci",
    "ner_f1_difference_ci",
    "ner_span_counts",
    "classification_metrics",
    "metric_key",
    "multiclass_metrics",
    "multilabel_metrics",
    "ner_classification_report",
    "ner_error_sentences",
    "ner_metrics",
    "sigmoid",
    "softmax",
    "tune_thresholds",
]

DEFAULT_THRESHOLD_GRID = np.linspace(0.05, 0.95, 19)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function of ``logits`` (float64): multi-label probabilities."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis of ``logits`` (float64, max-shifted so large logits do not overflow)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def metric_key(name: str) -> str:
    """Make a label name safe for a metric key.

    Every run of characters other than letters, digits and ``_`` becomes one
    ``_``; leading and trailing ``_`` are dropped
    (``"Consult - History and Phy."`` -> ``"Consult_History_and_Phy"``).
    """
    return re.sub(r"\W+", "_", str(name)).strip("_") or "_"


def _label_keys(label_names: Sequence[str]) -> list[str]:
    """Sanitised keys for ``label_names``; raises if two names collide."""
    keys = [metric_key(name) for name in label_names]
    if len(set(keys)) != len(keys):
        seen: dict[str, str] = {}
        for name, key in zip(label_names, keys):
            if key in seen:
                raise ValueError(
                    f"label names {seen[key]!r} and {name!r} both become metric key "
                    f"{key!r}; rename one of them"
                )
            seen[key] = name
    return keys


# --------------------------------------------------------------------------- #
# NER
# --------------------------------------------------------------------------- #


def _check_sequences(
    first: Sequence[Sequence[str]],
    second: Sequence[Sequence[str]],
    names: tuple[str, str] = ("gold tags", "predicted tags"),
) -> None:
    """Raise ``ValueError`` unless both nested sequences have the same shape."""
    if len(first) != len(second):
        raise ValueError(
            f"{len(first)} sentences of {names[0]} but {len(second)} of {names[1]}"
        )
    for i, (a, b) in enumerate(zip(first, second)):
        if len(a) != len(b):
            raise ValueError(
                f"sentence {i}: {len(a)} {names[0]} but {len(b)} {names[1]} "
                "(was the input truncated? give one tag per word)"
            )


def _seqeval_kwargs(strict: bool) -> dict:
    """seqeval arguments for strict IOB2 scoring, or none for its default (conlleval) mode."""
    return {"mode": "strict", "scheme": IOB2} if strict else {}


def ner_metrics(
    true_tags: Sequence[Sequence[str]],
    pred_tags: Sequence[Sequence[str]],
    strict: bool = False,
) -> dict[str, float]:
    """Span-level and word-level NER metrics.

    Spans are scored with seqeval. By default (``strict=False``) seqeval's
    conlleval-compatible mode is used, as in the seed baseline, so the numbers
    compare with it: a span may start with an ``I-`` tag. ``strict=True`` uses
    seqeval's strict IOB2 mode, where such ill-formed spans count as errors.
    The macro averages run over every entity type seen in gold or predictions.

    Args:
        true_tags: gold tags, one list per sentence (e.g. ``["B-DNA", "I-DNA", "O"]``).
        pred_tags: predicted tags, same shape.
        strict: score with seqeval's strict IOB2 mode.

    Returns:
        ``precision``, ``recall``, ``f1`` (micro over spans), ``macro_precision``,
        ``macro_recall``, ``macro_f1``; per type ``precision_<T>``,
        ``recall_<T>``, ``f1_<T>``, ``support_<T>`` (gold spans); and
        ``word_accuracy`` (share of tokens tagged right) and ``word_macro_f1``
        (token-level F1 averaged over the non-``O`` tags present).

    Raises:
        ValueError: the two inputs differ in sentence count or a sentence length.
    """
    _check_sequences(true_tags, pred_tags)
    report = seqeval_report(
        [list(s) for s in true_tags],
        [list(s) for s in pred_tags],
        output_dict=True,
        zero_division=0,
        **_seqeval_kwargs(strict),
    )
    metrics: dict[str, float] = {
        "precision": float(report["micro avg"]["precision"]),
        "recall": float(report["micro avg"]["recall"]),
        "f1": float(report["micro avg"]["f1-score"]),
        "macro_precision": float(report["macro avg"]["precision"]),
        "macro_recall": float(report["macro avg"]["recall"]),
        "macro_f1": float(report["macro avg"]["f1-score"]),
    }
    types = [name for name in report if not name.endswith(" avg")]
    for name, key in zip(types, _label_keys(types)):
        scores = report[name]
        metrics[f"precision_{key}"] = float(scores["precision"])
        metrics[f"recall_{key}"] = float(scores["recall"])
        metrics[f"f1_{key}"] = float(scores["f1-score"])
        metrics[f"support_{key}"] = float(scores["support"])

    flat_true = [tag for sentence in true_tags for tag in sentence]
    flat_pred = [tag for sentence in pred_tags for tag in sentence]
    metrics["word_accuracy"] = float(accuracy_score(flat_true, flat_pred)) if flat_true else 0.0
    entity_tags = sorted((set(flat_true) | set(flat_pred)) - {"O"})
    metrics["word_macro_f1"] = (
        float(f1_score(flat_true, flat_pred, labels=entity_tags, average="macro", zero_division=0))
        if entity_tags
        else 0.0
    )
    return metrics


def ner_classification_report(
    true_tags: Sequence[Sequence[str]],
    pred_tags: Sequence[Sequence[str]],
    strict: bool = False,
) -> str:
    """seqeval's text report (per type and averages, 4 digits), same modes as :func:`ner_metrics`."""
    _check_sequences(true_tags, pred_tags)
    return seqeval_report(
        [list(s) for s in true_tags],
        [list(s) for s in pred_tags],
        digits=4,
        zero_division=0,
        **_seqeval_kwargs(strict),
    )


def ner_error_sentences(
    tokens: Sequence[Sequence[str]],
    true_tags: Sequence[Sequence[str]],
    pred_tags: Sequence[Sequence[str]],
) -> str:
    """Show every sentence with at least one wrong tag, as aligned columns.

    Each such sentence is a ``# sentence <i>: <wrong>/<n> tags wrong`` line, a
    ``TOKEN GOLD PRED`` header, and one row per token; wrong rows start with
    ``*``. Sentences are separated by a blank line.

    Returns:
        The text, or ``""`` when every tag is right.
    """
    _check_sequences(true_tags, pred_tags)
    _check_sequences(tokens, true_tags, names=("tokens", "gold tags"))
    blocks = []
    for i, (words, gold, pred) in enumerate(zip(tokens, true_tags, pred_tags)):
        wrong = [g != p for g, p in zip(gold, pred)]
        if not any(wrong):
            continue
        rows = [("TOKEN", "GOLD", "PRED"), *zip(words, gold, pred)]
        widths = [max(len(row[col]) for row in rows) for col in range(2)]
        lines = [f"# sentence {i}: {sum(wrong)}/{len(gold)} tags wrong"]
        for row, is_wrong in zip(rows, [False, *wrong]):
            marker = "*" if is_wrong else " "
            lines.append(
                f"{marker} {row[0].ljust(widths[0])}  {row[1].ljust(widths[1])}  {row[2]}".rstrip()
            )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


# --------------------------------------------------------------------------- #
# Multi-label
# --------------------------------------------------------------------------- #


def _check_matrix(y_true: np.ndarray, y_prob: np.ndarray, label_names: Sequence[str]) -> None:
    if y_true.ndim != 2 or y_true.shape != y_prob.shape:
        raise ValueError(
            f"y_true {y_true.shape} and y_prob {y_prob.shape} must both be [N, L]"
        )
    if len(label_names) != y_true.shape[1]:
        raise ValueError(f"{len(label_names)} label names for {y_true.shape[1]} label columns")


def multilabel_metrics(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    thresholds: float | np.ndarray = 0.5,
    label_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """Metrics for multi-label predictions.

    A label is predicted when its probability is ``>=`` its threshold.

    Args:
        y_true: ``[N, L]`` 0/1 gold labels.
        y_prob: ``[N, L]`` probabilities (e.g. sigmoid outputs).
        thresholds: one threshold for all labels, or ``[L]`` per-label
            thresholds (see :func:`tune_thresholds`).
        label_names: ``L`` names for the per-label keys (default ``label_<j>``).

    Returns:
        ``micro_f1``, ``micro_precision``, ``micro_recall``, ``macro_f1`` (mean
        over all L labels), ``samples_f1`` (mean per-row F1; a row with no gold
        and no predicted label scores 0, as in sklearn), ``subset_accuracy``
        (exact-match rows), ``hamming_loss``; per label ``f1_<name>``,
        ``precision_<name>``, ``recall_<name>``, ``support_<name>``; and
        ``micro_roc_auc`` / ``macro_roc_auc`` where defined (macro over labels
        that have both classes in ``y_true``; keys omitted otherwise).
    """
    y_true = np.asarray(y_true).astype(int)
    y_prob = np.asarray(y_prob, dtype=float)
    if label_names is None:
        label_names = [f"label_{j}" for j in range(y_true.shape[1] if y_true.ndim == 2 else 0)]
    _check_matrix(y_true, y_prob, label_names)
    y_pred = (y_prob >= np.asarray(thresholds, dtype=float)).astype(int)

    metrics: dict[str, float] = {}
    for average in ("micro", "macro"):
        precision, recall, f1, _ = precision_recall_fscore_support(
            y_true, y_pred, average=average, zero_division=0
        )
        metrics[f"{average}_f1"] = float(f1)
        if average == "micro":
            metrics["micro_precision"] = float(precision)
            metrics["micro_recall"] = float(recall)
    metrics["samples_f1"] = float(f1_score(y_true, y_pred, average="samples", zero_division=0))
    metrics["subset_accuracy"] = float(accuracy_score(y_true, y_pred))
    metrics["hamming_loss"] = float(hamming_loss(y_true, y_pred))

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, average=None, zero_division=0
    )
    for j, key in enumerate(_label_keys(label_names)):
        metrics[f"f1_{key}"] = float(f1[j])
        metrics[f"precision_{key}"] = float(precision[j])
        metrics[f"recall_{key}"] = float(recall[j])
        metrics[f"support_{key}"] = float(support[j])

    flat = y_true.ravel()
    if 0 < flat.sum() < flat.size:
        metrics["micro_roc_auc"] = float(roc_auc_score(flat, y_prob.ravel()))
    positives = y_true.sum(axis=0)
    defined = np.flatnonzero((positives > 0) & (positives < len(y_true)))
    if defined.size:
        metrics["macro_roc_auc"] = float(
            np.mean([roc_auc_score(y_true[:, j], y_prob[:, j]) for j in defined])
        )
    return metrics


def tune_thresholds(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    grid: Sequence[float] | np.ndarray = DEFAULT_THRESHOLD_GRID,
) -> np.ndarray:
    """Per-label thresholds that maximise each label's F1 on the given split.

    For each label, every threshold in ``grid`` is tried (predict when
    ``prob >= threshold``). Among thresholds with the best F1 the one closest
    to 0.5 wins (the lower one if two are equally close). Labels without a
    positive example get 0.5. Tune on a validation split, not the test split.

    Args:
        y_true: ``[N, L]`` 0/1 gold labels.
        y_prob: ``[N, L]`` probabilities.
        grid: candidate thresholds (default 0.05, 0.10, ..., 0.95).

    Returns:
        ``[L]`` float array of thresholds.
    """
    y_true = np.asarray(y_true).astype(bool)
    y_prob = np.asarray(y_prob, dtype=float)
    if y_true.ndim != 2 or y_true.shape != y_prob.shape:
        raise ValueError(f"y_true {y_true.shape} and y_prob {y_prob.shape} must both be [N, L]")
    grid = np.sort(np.asarray(grid, dtype=float))
    if grid.size == 0:
        raise ValueError("grid must hold at least one threshold")

    f1 = np.empty((grid.size, y_true.shape[1]))
    for g, threshold in enumerate(grid):
        pred = y_prob >= threshold
        tp = (pred & y_true).sum(axis=0)
        fp = (pred & ~y_true).sum(axis=0)
        fn = (~pred & y_true).sum(axis=0)
        denominator = 2 * tp + fp + fn
        f1[g] = np.divide(2 * tp, denominator, out=np.zeros(len(tp)), where=denominator > 0)

    is_best = f1 >= f1.max(axis=0, keepdims=True) - 1e-12
    # Rounding makes e.g. 0.45 and 0.55 of a linspace grid equally close despite float noise;
    # argmin then takes the first of equal distances, i.e. the lower threshold (grid is sorted).
    distance = np.where(is_best, np.round(np.abs(grid - 0.5), 9)[:, None], np.inf)
    thresholds = grid[np.argmin(distance, axis=0)]
    thresholds[~y_true.any(axis=0)] = 0.5
    return thresholds


# --------------------------------------------------------------------------- #
# Multi-class and binary
# --------------------------------------------------------------------------- #


def multiclass_metrics(
    y_true: np.ndarray, y_prob: np.ndarray, label_names: Sequence[str]
) -> dict[str, float]:
    """Metrics for single-label classification; the prediction is the argmax of ``y_prob``.

    Args:
        y_true: ``[N]`` class ids in ``[0, C)``.
        y_prob: ``[N, C]`` class scores (probabilities or logits).
        label_names: ``C`` class names for the per-class keys.

    Returns:
        ``accuracy``, ``macro_f1``, ``macro_precision``, ``macro_recall``,
        ``weighted_f1``, ``weighted_precision``, ``weighted_recall``; per class
        ``f1_<name>``, ``precision_<name>``, ``recall_<name>``,
        ``support_<name>``. Averages run over all C classes.
    """
    y_true = np.asarray(y_true).astype(int).ravel()
    y_prob = np.asarray(y_prob, dtype=float)
    if y_prob.ndim != 2 or len(y_prob) != len(y_true):
        raise ValueError(f"y_prob {y_prob.shape} must be [N, C] with N = len(y_true) = {len(y_true)}")
    if len(label_names) != y_prob.shape[1]:
        raise ValueError(f"{len(label_names)} label names for {y_prob.shape[1]} classes")
    labels = np.arange(y_prob.shape[1])
    y_pred = y_prob.argmax(axis=1)

    metrics: dict[str, float] = {"accuracy": float(accuracy_score(y_true, y_pred))}
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0
        )
        metrics[f"{average}_f1"] = float(f1)
        metrics[f"{average}_precision"] = float(precision)
        metrics[f"{average}_recall"] = float(recall)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    for c, key in enumerate(_label_keys(label_names)):
        metrics[f"f1_{key}"] = float(f1[c])
        metrics[f"precision_{key}"] = float(precision[c])
        metrics[f"recall_{key}"] = float(recall[c])
        metrics[f"support_{key}"] = float(support[c])
    return metrics


def classification_metrics(
    y_true: np.ndarray, y_prob: np.ndarray, label_names: Sequence[str]
) -> dict[str, float]:
    """:func:`multiclass_metrics` plus ``roc_auc``.

    With two classes ``roc_auc`` is the AUC of ``y_prob[:, 1]`` for class 1.
    With more, it is the one-vs-rest macro average over classes that have
    both positives and negatives in ``y_true`` (scores need not sum to 1).
    The key is omitted when no class has both.
    """
    metrics = multiclass_metrics(y_true, y_prob, label_names)
    auc = roc_auc(y_true, y_prob)
    if auc is not None:
        metrics["roc_auc"] = auc
    return metrics


def roc_auc(y_true, y_prob) -> float | None:
    """ROC AUC as :func:`classification_metrics` reports it (class 1's scores for two classes, else the one-vs-rest
    macro average over classes with both positives and negatives); None when no class has both."""
    y_true = np.asarray(y_true).astype(int).ravel()
    y_prob = np.asarray(y_prob, dtype=float)
    classes = [1] if y_prob.shape[1] == 2 else range(y_prob.shape[1])
    aucs = [roc_auc_score(y_true == c, y_prob[:, c]) for c in classes if 0 < np.sum(y_true == c) < len(y_true)]
    return float(np.mean(aucs)) if aucs else None


# ------------------------------------------------------------------------------ NER on raw text (character spans)

OPENING_PUNCTUATION = "([{"
CLOSING_PUNCTUATION = ".,;:!?)]}"
JOINING_PUNCTUATION = "-/"


def detokenize(words: Sequence[str], attach: str = JOINING_PUNCTUATION) -> tuple[str, list[tuple[int, int]]]:
    """Raw text from a sentence's words, and each word's character span in it.

    Words are joined by one space, except: no space before a word made only of closing punctuation (``cells .``
    -> ``cells.``), none after one made only of opening brackets (``( IL-2`` -> ``(IL-2``), and none on either side
    of a word in ``attach`` (default hyphen and slash: ``ataxia - telangiectasia`` -> ``ataxia-telangiectasia``),
    as the words were written before the corpus was tokenized.
    """
    text, offsets = "", []
    previous = None
    for word in words:
        glue = previous is not None and not (
            (word and all(c in CLOSING_PUNCTUATION for c in word))
            or (previous and all(c in OPENING_PUNCTUATION for c in previous))
            or word in attach or previous in attach)
        if glue:
            text += " "
        offsets.append((len(text), len(text) + len(word)))
        text += word
        previous = word
    return text, offsets


def tag_spans(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """``(first word, last word + 1, type)`` of each entity in IOB tags, as seqeval's default (conlleval) mode reads
    them: an entity starts at ``B-X``, or at ``I-X`` after anything but ``B-X``/``I-X``."""
    spans, start, kind = [], None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, name = tag.partition("-") if tag != "O" else ("O", "", "")
        if kind is not None and (prefix in ("O", "B") or name != kind):
            spans.append((start, i, kind))
            kind = None
        if prefix in ("B", "I") and kind is None:
            start, kind = i, name
    return spans


def char_spans(tags: Sequence[str], offsets: Sequence[tuple[int, int]], shift: int = 0) -> set[tuple[int, int, str]]:
    """Gold entities of one sentence as ``(start, end, type)`` character spans of its detokenized text."""
    return {(offsets[a][0] + shift, offsets[b - 1][1] + shift, kind) for a, b, kind in tag_spans(tags)}


def char_span_metrics(gold: Sequence[set], predicted: Sequence[set]) -> dict[str, float]:
    """Exact-match micro precision, recall and F1 over ``(start, end, type)`` character spans (one set per text)."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold texts but {len(predicted)} predicted")
    tp = sum(len(g & p) for g, p in zip(gold, predicted))
    n_gold, n_pred = sum(map(len, gold)), sum(map(len, predicted))
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1),
            "gold_spans": float(n_gold), "predicted_spans": float(n_pred)}


def pipeline_char_span_metrics(ner, sentences: Sequence[Sequence[str]], tags: Sequence[Sequence[str]],
                               sentences_per_text: int = 1, batch_size: int = 16, **call_kwargs) -> dict[str, float]:
    """Run an ``ner`` pipeline on the detokenized raw text of `sentences` (``sentences_per_text`` of them joined by
    a space into one text) and score its entities as exact character spans against the gold IOB `tags`."""
    texts, gold = [], []
    for first in range(0, len(sentences), sentences_per_text):
        text, spans = "", set()
        for words, sentence_tags in zip(sentences[first:first + sentences_per_text],
                                        tags[first:first + sentences_per_text]):
            if text:
                text += " "
            sentence, offsets = detokenize(words)
            spans |= char_spans(sentence_tags, offsets, shift=len(text))
            text += sentence
        texts.append(text)
        gold.append(spans)
    outputs = ner(texts, batch_size=batch_size, **call_kwargs) if texts else []
    predicted = [{(int(e["start"]), int(e["end"]), e.get("entity_group") or e.get("entity", "").partition("-")[2])
                  for e in entities} for entities in outputs]
    return char_span_metrics(gold, predicted)


# --------------------------------------------------------------------------------------------------------------------
# Bootstrap confidence intervals
# --------------------------------------------------------------------------------------------------------------------


def bootstrap_ci(
    statistic,
    n_items: int,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Percentile bootstrap over items (sentences, texts): ``statistic(indices)`` on the whole set and on
    ``n_resamples`` resamples drawn with replacement.

    Returns ``value`` (on all items), ``low`` / ``high`` (the ``(1 - confidence) / 2`` and ``1 - (1 - confidence) / 2``
    percentiles), ``std`` (bootstrap standard error) and ``n``. Resamples where the statistic is undefined (NaN, e.g.
    a ROC AUC on a resample holding one class) are left out.
    """
    if n_items < 1:
        raise ValueError("bootstrap_ci needs at least one item")
    rng = np.random.default_rng(seed)
    value = float(statistic(np.arange(n_items)))
    samples = np.array([statistic(rng.integers(0, n_items, n_items)) for _ in range(n_resamples)], dtype=float)
    samples = samples[np.isfinite(samples)]
    if len(samples) < 2:
        raise ValueError("the statistic is undefined on almost every bootstrap resample: too few items")
    tail = (1 - confidence) / 2 * 100
    return {"value": value, "low": float(np.percentile(samples, tail)), "high": float(np.percentile(samples, 100 - tail)),
            "std": float(samples.std(ddof=1)), "n": int(n_items), "confidence": confidence}


def ner_span_counts(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> np.ndarray:
    """Per sentence ``[true positives, predicted spans, gold spans]`` with seqeval's conlleval-compatible span
    extraction (the default of :func:`ner_metrics`), so sums over sentences give its micro F1."""
    from seqeval.metrics.sequence_labeling import get_entities

    _check_sequences(true_tags, pred_tags)
    counts = np.zeros((len(true_tags), 3), dtype=np.int64)
    for i, (gold, pred) in enumerate(zip(true_tags, pred_tags)):
        gold_spans, pred_spans = set(get_entities(list(gold))), set(get_entities(list(pred)))
        counts[i] = (len(gold_spans & pred_spans), len(pred_spans), len(gold_spans))
    return counts


def _f1_from_counts(tp: float, predicted: float, gold: float) -> float:
    return 2 * tp / (predicted + gold) if predicted + gold else 0.0


def ner_f1_ci(true_tags, pred_tags, n_resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    """Span micro F1 (conlleval-compatible, as :func:`ner_metrics`) with a sentence-level bootstrap 95% CI."""
    counts = ner_span_counts(true_tags, pred_tags)
    return bootstrap_ci(lambda idx: _f1_from_counts(*counts[idx].sum(axis=0)), len(counts), n_resamples, seed=seed)


def multilabel_ci(y_true: np.ndarray, y_pred: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> dict[str, dict]:
    """Subset accuracy and micro F1 of 0/1 label matrices with text-level bootstrap 95% CIs."""
    y_true, y_pred = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    exact = (y_true == y_pred).all(axis=1)
    tp = (y_true & y_pred).sum(axis=1)
    npred, ngold = y_pred.sum(axis=1), y_true.sum(axis=1)
    return {
        "subset_accuracy": bootstrap_ci(lambda idx: exact[idx].mean(), len(exact), n_resamples, seed=seed),
        "micro_f1": bootstrap_ci(lambda idx: _f1_from_counts(tp[idx].sum(), npred[idx].sum(), ngold[idx].sum()),
                                 len(exact), n_resamples, seed=seed),
    }


def accuracy_ci(y_true, y_pred, n_resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    """Accuracy with a bootstrap 95% CI."""
    correct = np.asarray(y_true) == np.asarray(y_pred)
    return bootstrap_ci(lambda idx: correct[idx].mean(), len(correct), n_resamples, seed=seed)


def accuracy_difference_ci(y_true, pred_a, pred_b, n_resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    """Paired bootstrap of accuracy(b) - accuracy(a) on the same items (both systems scored on each resample)."""
    y_true = np.asarray(y_true)
    a, b = np.asarray(pred_a) == y_true, np.asarray(pred_b) == y_true
    if a.shape != b.shape:
        raise ValueError(f"paired predictions differ in length: {a.shape} vs {b.shape}")
    difference = b.astype(float) - a.astype(float)
    return bootstrap_ci(lambda idx: difference[idx].mean(), len(difference), n_resamples, seed=seed)


def multilabel_difference_ci(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n_resamples: int = 1000,
                             seed: int = 0) -> dict[str, dict]:
    """Paired bootstrap of subset accuracy(b) - (a) and micro F1(b) - (a) of 0/1 label matrices on the same texts."""
    y_true = np.asarray(y_true).astype(bool)
    pred_a, pred_b = np.asarray(pred_a).astype(bool), np.asarray(pred_b).astype(bool)
    if not y_true.shape == pred_a.shape == pred_b.shape:
        raise ValueError(f"label matrices differ in shape: {y_true.shape}, {pred_a.shape}, {pred_b.shape}")
    exact = (y_true == pred_b).all(axis=1).astype(float) - (y_true == pred_a).all(axis=1).astype(float)
    ngold = y_true.sum(axis=1)
    tp_a, tp_b = (y_true & pred_a).sum(axis=1), (y_true & pred_b).sum(axis=1)
    npred_a, npred_b = pred_a.sum(axis=1), pred_b.sum(axis=1)

    def micro_f1_difference(idx):
        gold = ngold[idx].sum()
        return _f1_from_counts(tp_b[idx].sum(), npred_b[idx].sum(), gold) - _f1_from_counts(
            tp_a[idx].sum(), npred_a[idx].sum(), gold)

    n = len(exact)
    return {"subset_accuracy": bootstrap_ci(lambda idx: exact[idx].mean(), n, n_resamples, seed=seed),
            "micro_f1": bootstrap_ci(micro_f1_difference, n, n_resamples, seed=seed)}


def ner_f1_difference_ci(true_tags, pred_a, pred_b, n_resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    """Paired bootstrap of span micro F1(b) - F1(a) on the same sentences (both systems scored on each resample)."""
    a, b = ner_span_counts(true_tags, pred_a), ner_span_counts(true_tags, pred_b)
    return bootstrap_ci(lambda idx: _f1_from_counts(*b[idx].sum(axis=0)) - _f1_from_counts(*a[idx].sum(axis=0)),
                        len(a), n_resamples, seed=seed)
