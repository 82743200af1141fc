"""Evaluation and training plots, each saved as a PNG (dpi 120) whose path is returned.

Figures are built with :class:`matplotlib.figure.Figure` and rendered by the
Agg canvas directly, never through ``pyplot``: nothing here selects or changes
matplotlib's global backend, opens a window, or keeps figures alive, so the
functions are safe on headless machines and inside notebooks alike.
matplotlib is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "label_cooccurrence",
    "plot_label_cooccurrence",
    "project_2d",
    "plot_embedding_map",
    "plot_confusion_matrix",
    "plot_multilabel_confusion",
    "plot_per_label_f1",
    "plot_training_curves",
]

DPI = 120
FONT_SIZE = 10  # cell labels and small titles; matplotlib's default for the rest
MAX_MULTILABEL_PANELS = 30
# Keys of Trainer's evaluation logs that are bookkeeping, not metrics.
_EVAL_BOOKKEEPING = ("eval_loss", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second")
# Preferred main metric for the training-curve plot, first match wins.
_MAIN_METRICS = ("eval_f1", "eval_micro_f1", "eval_macro_f1", "eval_accuracy", "eval_weighted_f1")


def _figure(width: float, height: float) -> Figure:
    """A new figure drawn by the Agg canvas, with tight layout."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="tight")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` as a PNG, creating parent folders, and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, format="png")
    return path


def _annotated_matrix(ax: Axes, matrix: np.ndarray, x_labels: Sequence[str], y_labels: Sequence[str],
                      font_size: float = FONT_SIZE) -> None:
    """Draw ``matrix`` as a heat map, colour by row share, cell text = counts."""
    row_totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, row_totals, out=np.zeros(matrix.shape), where=row_totals > 0)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(int(count)), ha="center", va="center", fontsize=font_size,
                color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(x_labels)), x_labels)
    ax.set_yticks(range(len(y_labels)), y_labels)


def plot_confusion_matrix(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    label_names: Sequence[str],
    path: str | Path,
    title: str = "Confusion matrix",
) -> Path:
    """Confusion matrix of class ids: rows gold, columns predicted.

    Cells show counts; colour is the share of the gold row, so rare classes
    stay readable.
    """
    from sklearn.metrics import confusion_matrix

    n = len(label_names)
    matrix = confusion_matrix(np.asarray(y_true), np.asarray(y_pred), labels=np.arange(n))
    side = max(4.0, 1.5 + 0.6 * n)
    figure = _figure(side + 1.0, side)
    ax = figure.add_subplot()
    _annotated_matrix(ax, matrix, label_names, label_names)
    ax.tick_params(axis="x", labelrotation=45)
    for tick in ax.get_xticklabels():
        tick.set_horizontalalignment("right")
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title)
    return _save(figure, path)


def plot_multilabel_confusion(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    label_names: Sequence[str],
    path: str | Path,
    title: str = "Per-label confusion",
) -> Path:
    """A grid of 2x2 confusion matrices (gold 0/1 x predicted 0/1), one per label.

    Only the 30 labels with most gold positives are drawn, in that order; the
    title says so when labels were left out.

    Args:
        y_true: ``[N, L]`` 0/1 gold labels.
        y_pred: ``[N, L]`` 0/1 predictions.
        label_names: ``L`` names.
        path: where to write the PNG.
        title: figure title.
    """
    from sklearn.metrics import multilabel_confusion_matrix

    y_true = np.asarray(y_true).astype(int)
    y_pred = np.asarray(y_pred).astype(int)
    order = np.argsort(-y_true.sum(axis=0), kind="stable")[:MAX_MULTILABEL_PANELS]
    if len(order) < len(label_names):
        title = f"{title} ({len(order)} most frequent of {len(label_names)} labels)"
    matrices = multilabel_confusion_matrix(y_true[:, order], y_pred[:, order])

    columns = min(6, len(order))
    rows = math.ceil(len(order) / columns)
    figure = _figure(2.2 * columns, 2.3 * rows + 0.6)
    for panel, (j, matrix) in enumerate(zip(order, matrices), start=1):
        ax = figure.add_subplot(rows, columns, panel)
        _annotated_matrix(ax, matrix, ["0", "1"], ["0", "1"], font_size=FONT_SIZE - 1)
        ax.set_title(str(label_names[j])[:28], fontsize=FONT_SIZE - 1)
        ax.set_xlabel("pred", fontsize=FONT_SIZE - 2)
        ax.set_ylabel("gold", fontsize=FONT_SIZE - 2)
    figure.suptitle(title)
    return _save(figure, path)


def plot_per_label_f1(
    metrics: Mapping[str, Any],
    path: str | Path,
    title: str = "F1 per label",
    max_labels: int = 60,
) -> Path:
    """Horizontal bars of per-label F1, sorted, best at the top.

    Args:
        metrics: either a metrics dict from :mod:`medheads.metrics` (its
            ``f1_<name>`` entries are used, an ``eval_`` prefix is allowed) or a
            plain ``{name: f1}`` dict.
        path: where to write the PNG.
        title: figure title.
        max_labels: with more labels than this, only the ``max_labels // 2``
            best and worst are drawn, and the title says so.
    """
    per_label = {
        key.split("f1_", 1)[1]: float(value)
        for key, value in metrics.items()
        if key.startswith(("f1_", "eval_f1_", "test_f1_"))
    } or {str(key): float(value) for key, value in metrics.items()}
    ranked = sorted(per_label.items(), key=lambda item: item[1])
    if len(ranked) > max_labels:
        half = max_labels // 2
        title = f"{title} (worst {half} and best {half} of {len(ranked)})"
        ranked = ranked[:half] + ranked[-half:]
    names = [name for name, _ in ranked]
    values = [value for _, value in ranked]

    figure = _figure(7.0, max(2.5, 0.6 + 0.28 * len(ranked)))
    ax = figure.add_subplot()
    bars = ax.barh(range(len(ranked)), values, color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], padding=2, fontsize=FONT_SIZE - 1)
    ax.set_yticks(range(len(ranked)), names)
    ax.set_xlim(0, 1.1)
    ax.margins(y=0.01)
    ax.set_xlabel("F1")
    ax.set_title(title)
    return _save(figure, path)


def _main_metric(eval_logs: Sequence[Mapping[str, Any]]) -> str | None:
    """The evaluation metric to plot: a preferred one if logged, else the first other."""
    logged = [key for log in eval_logs for key in log if key.startswith("eval_")]
    for key in _MAIN_METRICS:
        if key in logged:
            return key
    return next((key for key in logged if key not in _EVAL_BOOKKEEPING), None)


def plot_training_curves(
    log_history: Sequence[Mapping[str, Any]],
    path: str | Path,
    metric: str | None = None,
    title: str = "Training",
) -> Path:
    """Two panels from ``Trainer.state.log_history``: losses, and the main evaluation metric.

    Left: training ``loss`` and ``eval_loss`` against the global step. Right:
    ``metric`` against epoch (step when epochs were not logged). A panel with
    nothing logged says so instead of failing.

    Args:
        log_history: ``trainer.state.log_history`` (a list of dicts).
        path: where to write the PNG.
        metric: evaluation key to plot, e.g. ``"eval_f1"``; by default the first
            of ``eval_f1``, ``eval_micro_f1``, ``eval_macro_f1``,
            ``eval_accuracy``, ``eval_weighted_f1`` that was logged, else any other
            ``eval_*`` metric.
        title: figure title.
    """
    train_logs = [log for log in log_history if "loss" in log and "step" in log]
    eval_logs = [log for log in log_history if any(key.startswith("eval_") for key in log)]
    metric = metric or _main_metric(eval_logs)

    figure = _figure(11.0, 4.2)
    loss_ax, metric_ax = figure.subplots(1, 2)
    if train_logs:
        loss_ax.plot([log["step"] for log in train_logs], [log["loss"] for log in train_logs],
                     label="train loss", color="tab:blue")
    with_eval_loss = [log for log in eval_logs if "eval_loss" in log and "step" in log]
    if with_eval_loss:
        loss_ax.plot([log["step"] for log in with_eval_loss], [log["eval_loss"] for log in with_eval_loss],
                     "o-", label="eval loss", color="tab:orange")
    if train_logs or with_eval_loss:
        loss_ax.legend()
    else:
        _nothing_logged(loss_ax, "no loss logged")
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("loss")
    loss_ax.set_title("Loss")

    with_metric = [log for log in eval_logs if metric and metric in log]
    use_epoch = bool(with_metric) and all("epoch" in log for log in with_metric)
    x_key = "epoch" if use_epoch else "step"
    points = [(log[x_key], log[metric]) for log in with_metric if x_key in log]
    if points:
        metric_ax.plot(*zip(*points), "o-", color="tab:green")
        metric_ax.set_ylabel(metric)
    else:
        _nothing_logged(metric_ax, "no evaluation metric logged")
    metric_ax.set_xlabel(x_key)
    metric_ax.set_title(metric or "Evaluation")
    for ax in (loss_ax, metric_ax):
        ax.grid(alpha=0.3)
    figure.suptitle(title)
    return _save(figure, path)


def _nothing_logged(ax: Axes, message: str) -> None:
    """Mark an empty panel with ``message``."""
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)


# --------------------------------------------------------------------------------------------------------------------
# Analysis views (seed 000): label co-occurrence, 2-D map of pooled hidden states
# --------------------------------------------------------------------------------------------------------------------

MAX_MAP_COLOURS = 10  # labels given their own colour on the 2-D map; the rest are "other"


def label_cooccurrence(y_true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Co-occurrence counts (``Y^T Y``: diagonal = each label's count) and the Pearson (phi) correlation of the 0/1
    label columns of ``[N, L]`` multi-label targets. A label present in every row or in none has no variance: its
    correlations are 0 (1 on the diagonal)."""
    y = np.asarray(y_true, dtype=float)
    counts = (y.T @ y).round().astype(int)
    centered = y - y.mean(axis=0)
    std = centered.std(axis=0)
    covariance = centered.T @ centered / max(len(y), 1)
    denominator = np.outer(std, std)
    correlation = np.divide(covariance, denominator, out=np.zeros_like(covariance), where=denominator > 0)
    np.fill_diagonal(correlation, 1.0)
    return counts, correlation


def plot_label_cooccurrence(y_true: np.ndarray, label_names: Sequence[str], path: str | Path,
                            title: str = "Training labels") -> Path:
    """Two heat maps of the training labels: co-occurrence counts (how many rows carry both labels) and their
    correlation (-1..1). The 30 most frequent labels are shown when there are more."""
    y = np.asarray(y_true)
    order = np.argsort(-y.sum(axis=0), kind="stable")[:MAX_MULTILABEL_PANELS]
    if len(order) < len(label_names):
        title = f"{title} ({len(order)} most frequent of {len(label_names)} labels)"
    counts, correlation = label_cooccurrence(y[:, order])
    names = [str(label_names[j])[:24] for j in order]
    size = max(5.0, 0.32 * len(order) + 2.5)
    figure = _figure(2 * size + 1, size)
    for panel, (matrix, name, cmap, limits) in enumerate(
            ((counts, "co-occurrence (rows with both)", "Blues", (0, max(int(counts.max()), 1))),
             (correlation, "correlation (phi)", "coolwarm", (-1, 1))), start=1):
        ax = figure.add_subplot(1, 2, panel)
        image = ax.imshow(matrix, cmap=cmap, vmin=limits[0], vmax=limits[1])
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=FONT_SIZE - 2)
        ax.set_yticks(range(len(names)), names, fontsize=FONT_SIZE - 2)
        if len(names) <= 20:
            for i in range(len(names)):
                for j in range(len(names)):
                    text = f"{matrix[i, j]:d}" if matrix.dtype.kind == "i" else f"{matrix[i, j]:.2f}"
                    ax.text(j, i, text, ha="center", va="center", fontsize=FONT_SIZE - 3)
        ax.set_title(name)
        figure.colorbar(image, ax=ax, shrink=0.7)
    figure.suptitle(title)
    return _save(figure, path)


def project_2d(features: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """``[N, D]`` vectors -> ``[N, 2]`` coordinates and the method used: UMAP (umap-learn) when installed and
    ``method`` is ``auto`` or ``umap`` (and N >= 20), else PCA (the top two principal components, signs fixed so
    each component's largest loading is positive)."""
    x = np.asarray(features, dtype=np.float64)
    if method in ("auto", "umap") and len(x) >= 20:
        try:
            import umap  # type: ignore[import-not-found]
        except ImportError:
            if method == "umap":
                raise ImportError("method='umap' needs umap-learn: pip install umap-learn") from None
        else:
            reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(x) - 1), random_state=seed)
            return np.asarray(reducer.fit_transform(x), dtype=np.float64), "umap"
    centered = x - x.mean(axis=0)
    if len(x) < 2:
        return np.zeros((len(x), 2)), "pca"
    _, singular, vt = np.linalg.svd(centered, full_matrices=False)
    components = vt[:2]
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    coords = centered @ (components * signs[:, None]).T
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return coords, "pca"


def plot_embedding_map(coords: np.ndarray, point_labels: Sequence[str | None], path: str | Path,
                       title: str = "Pooled hidden states", method: str = "pca") -> Path:
    """Scatter of 2-D coordinates, one colour per label (the 10 most common; the rest 'other', None 'no label')."""
    from collections import Counter

    coords = np.asarray(coords)
    common = [name for name, _ in Counter(p for p in point_labels if p is not None).most_common(MAX_MAP_COLOURS)]
    groups = {name: [] for name in common}
    for i, label in enumerate(point_labels):
        key = label if label in groups else ("no label" if label is None else "other")
        groups.setdefault(key, []).append(i)
    figure = _figure(7.5, 5.5)
    ax = figure.add_subplot(1, 1, 1)
    for k, (name, rows) in enumerate(groups.items()):
        if not rows:
            continue
        colour = f"C{k}" if name in common else "0.7"
        ax.scatter(coords[rows, 0], coords[rows, 1], s=10, alpha=0.7, color=colour,
                   label=f"{str(name)[:28]} ({len(rows)})")
    ax.set_xlabel(f"{method.upper()} 1")
    ax.set_ylabel(f"{method.upper()} 2")
    ax.legend(fontsize=7, markerscale=1.5, loc="best")
    ax.set_title(title)
    return _save(figure, path)
