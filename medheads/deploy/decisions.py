"""The decision each medheads model makes from its logits: one function per task, used by `medheads predict` and by
the export quality check, so both report what the pipelines report.

Until the shipped pipelines (medheads/models/pipeline_*.py) land, these mirror the stock transformers pipelines
plus the model's own thresholds: multi-label text -> every label whose sigmoid reaches its threshold (config
`thresholds`, default 0.5); single-label text and images -> the argmax class; token classification -> per-token
argmax, grouped into entities with the stock pipeline's `aggregation_strategy="simple"`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def label_thresholds(config) -> np.ndarray:
    """Per-label decision thresholds of a multi-label text model, in id order."""
    n = int(config.num_labels)
    values = getattr(config, "thresholds", None)
    if values is None:
        return np.full(n, 0.5, dtype=np.float64)
    if isinstance(values, (int, float)):
        return np.full(n, float(values), dtype=np.float64)
    return np.asarray([float(v) for v in values], dtype=np.float64)


def softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def classify_scores(scores: dict[str, float], config) -> dict:
    """THE decision of a text or image classifier, from its per-label probabilities (sigmoid for multi-label,
    softmax otherwise; what the stock pipeline returns with `top_k=None`).

    Multi-label: `{"labels": [...], "scores": {label: probability}}` with the labels whose probability reaches its
    threshold, in id order. Single-label: `{"label": ..., "score": ..., "scores": {...}}`.
    """
    id2label = {int(k): v for k, v in config.id2label.items()}
    names = [id2label[i] for i in range(len(id2label))]
    ordered = {name: float(scores[name]) for name in names}
    if getattr(config, "problem_type", None) == "multi_label_classification":
        thresholds = label_thresholds(config)
        return {"labels": [n for n, t in zip(names, thresholds) if ordered[n] >= t], "scores": ordered}
    best = max(names, key=lambda n: ordered[n])
    return {"label": best, "score": ordered[best], "scores": ordered}


def classify(logits: np.ndarray, config) -> list[dict]:
    """`classify_scores` for every row of `logits` ([batch, num_labels])."""
    id2label = {int(k): v for k, v in config.id2label.items()}
    names = [id2label[i] for i in range(len(id2label))]
    multi = getattr(config, "problem_type", None) == "multi_label_classification"
    probs = sigmoid(logits) if multi else softmax(logits)
    return [classify_scores(dict(zip(names, row)), config) for row in probs]


def word_tags(logits: np.ndarray, word_ids: Sequence[int | None], num_words: int, config) -> list[str]:
    """The tag of every word: the argmax label of its first sub-token ("O" for a word with no token left)."""
    id2label = {int(k): v for k, v in config.id2label.items()}
    tags = ["O"] * num_words
    seen = set()
    for position, word in enumerate(word_ids):
        if word is None or word in seen or word >= num_words:
            continue
        seen.add(word)
        tags[word] = id2label[int(np.argmax(logits[position]))]
    return tags


__all__ = ["classify_scores", "classify", "word_tags", "label_thresholds", "softmax", "sigmoid"]
