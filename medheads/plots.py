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
