"""Learning-rate range test (Smith, "Cyclical Learning Rates for Training Neural Networks"; seed 003's
`find_learning_rate.py` through pytorch-lr-finder), on the model and batches a training command builds.

    medheads find-lr ner  configs/ner_jnlpba.json --model_name_or_path "$MINILM"
    medheads find-lr text configs/text_mtsamples.json --model_name_or_path "$MINILM"
    medheads find-lr image configs/image_pneumoniamnist_scratch.json
    medheads train-ner configs/ner_jnlpba.json --learning_rate auto      # runs the test first, then trains with it

The task's own command reads the data and builds the model and its `Trainer` (so every data and model flag means
what it means for training); just before training, the test takes over: it trains a copy of the trainable weights
for `--lr_find_steps` batches with AdamW while the learning rate grows exponentially from `--lr_find_start` to
`--lr_find_end`, stops when the loss, smoothed by an exponential moving average (beta 0.9, bias-corrected), exceeds 4x its
minimum (divergence). The weights and random state are restored afterwards.

The suggested rate is the one at the **steepest descent** of the loss against log(learning rate) (what
pytorch-lr-finder suggests), on the loss smoothed by a centred moving average (no lag) and ignoring the first 10%
and last 5 points; `min/10` (the rate at the minimum smoothed
loss divided by 10, fastai's older rule) is reported beside it. Outputs in `<output_dir>/lr_find/`: `lr_find.png`
(loss vs learning rate, both marked) and `lr_find.json` (the curve and both suggestions).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

logger = logging.getLogger("medheads.lr_finder")

TASKS = {
    "ner": ("medheads.training.ner", "main"),
    "text": ("medheads.training.text_classification", "main"),
    "image": ("medheads.training.image_classification", "main"),
}


class LearningRateFound(Exception):
    """Raised by the hook in find-lr mode to stop the task command before training (carries the result)."""

    def __init__(self, result: dict):
        super().__init__("learning-rate range test done")
        self.result = result


def smooth(losses: Sequence[float], beta: float = 0.9) -> list[float]:
    """Bias-corrected exponential moving average: causal, used to detect divergence while the sweep runs."""
    average, out = 0.0, []
    for i, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta**i))
    return out


def centered_smooth(losses: Sequence[float], window: int | None = None) -> list[float]:
    """Centred moving average (window ~ 1/10 of the points, odd, at least 3; shrinking at the ends). Unlike an
    exponential average it does not lag, so the steepest point is not pushed towards higher rates."""
    values = np.asarray(losses, dtype=float)
    n = len(values)
    window = window or max(3, (n // 10) | 1)
    half = window // 2
    return [float(values[max(0, i - half): i + half + 1].mean()) for i in range(n)]


def suggest(lrs: Sequence[float], smoothed: Sequence[float], skip_start: float = 0.1, skip_end: int = 5) -> dict:
    """Suggestions from a smoothed loss curve: `steepest` (most negative d loss / d log lr, the default) and
    `min_div_10` (lr at the minimum / 10)."""
    lrs = np.asarray(lrs, dtype=float)
    losses = np.asarray(smoothed, dtype=float)
    if len(lrs) < 3:
        raise ValueError(f"the range test recorded only {len(lrs)} points: raise --lr_find_steps or lower "
                         "--lr_find_start")
    minimum = int(np.nanargmin(losses))
    start = int(len(lrs) * skip_start)
    end = max(start + 3, len(lrs) - skip_end)
    window_l, window_y = np.log10(lrs[start:end]), losses[start:end]
    if len(window_l) < 3:
        window_l, window_y, start = np.log10(lrs), losses, 0
    gradient = np.gradient(window_y, window_l)
    steepest = start + int(np.nanargmin(gradient))
    return {"steepest": float(lrs[steepest]), "steepest_index": steepest,
            "min_div_10": float(lrs[minimum] / 10), "minimum": float(lrs[minimum]), "minimum_index": minimum,
            "suggested": float(lrs[steepest]), "rule": "steepest descent of the smoothed loss"}


def plot_lr_find(lrs, losses, smoothed, result: dict, path) -> Path:
    from ..plots import _figure, _save

    figure = _figure(6.5, 4.2)
    ax = figure.add_subplot(1, 1, 1)
    ax.plot(lrs, losses, color="0.75", linewidth=0.8, label="loss per batch")
    ax.plot(lrs, smoothed, color="C0", linewidth=1.6, label="smoothed (centred moving average)")
    ax.axvline(result["steepest"], color="C3", linestyle="--",
               label=f"steepest descent {result['steepest']:.2e} (suggested)")
    ax.axvline(result["min_div_10"], color="C2", linestyle=":", label=f"min/10 {result['min_div_10']:.2e}")
    ax.set_xscale("log")
    finite = [v for v in list(smoothed) + list(losses) if math.isfinite(v)]
    if finite:  # from the lowest loss to a little above the starting loss (the divergence is cut off)
        low, start = min(finite), max(smoothed[: max(1, len(smoothed) // 10)])
        ax.set_ylim(low - 0.05 * abs(low) - 1e-3, max(start, low + 1e-3) + 0.3 * abs(start - low) + 1e-3)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title("Learning-rate range test")
    ax.legend(fontsize=8)
    return _save(figure, path)


def range_test(trainer, start_lr: float = 1e-7, end_lr: float = 1.0, num_steps: int = 100,
               diverge: float = 4.0) -> dict:
    """Run the test on `trainer`'s model and training batches; restores the weights. Returns the curve and the
    suggestions."""
    import torch

    model = trainer.model
    args = trainer.args
    saved_state = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(parameters, lr=start_lr, weight_decay=args.weight_decay,
                                  betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
    factor = (end_lr / start_lr) ** (1 / max(1, num_steps - 1))
    loader = trainer.get_train_dataloader()
    lrs, losses = [], []
    model.train()
    best = math.inf
    iterator = iter(loader)
    try:
        for step in range(num_steps):
            try:
                batch = next(iterator)
            except StopIteration:
                iterator = iter(loader)
                batch = next(iterator)
            lr = start_lr * factor**step
            for group in optimizer.param_groups:
                group["lr"] = lr
            inputs = trainer._prepare_inputs(batch)
            loss = trainer.compute_loss(model, inputs)
            if isinstance(loss, tuple):
                loss = loss[0]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if args.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(parameters, args.max_grad_norm)
            optimizer.step()
            value = float(loss.detach())
            lrs.append(lr)
            losses.append(value)
            smoothed_now = smooth(losses)[-1]
            if not math.isfinite(value):
                break
            best = min(best, smoothed_now)
            if step > 5 and smoothed_now > diverge * best:
                logger.info("Range test: loss diverged at lr %.2e (step %d); stopping.", lr, step)
                break
    finally:
        model.load_state_dict(saved_state)
        torch.set_rng_state(rng)
        optimizer.zero_grad(set_to_none=True)
    finite = [i for i, v in enumerate(losses) if math.isfinite(v)]
    lrs, losses = [lrs[i] for i in finite], [losses[i] for i in finite]
    smoothed = centered_smooth(losses)
    result = suggest(lrs, smoothed)
    result.update({"learning_rates": lrs, "losses": losses, "smoothed_losses": smoothed, "start_lr": start_lr,
                   "end_lr": end_lr, "steps_run": len(lrs), "num_steps": num_steps})
    return result


def maybe_find_learning_rate(trainer, training_args) -> None:
    """The hook the task commands call just before `trainer.train()`: with `--learning_rate auto` it runs the range
    test and sets the suggested rate; in `medheads find-lr` mode it runs the test and stops the command
    (`LearningRateFound`)."""
    if not (training_args.auto_learning_rate or training_args.lr_find_only):
        return
    result = range_test(trainer, training_args.lr_find_start, training_args.lr_find_end, training_args.lr_find_steps)
    out = Path(training_args.output_dir) / "lr_find"
    if trainer.is_world_process_zero():
        out.mkdir(parents=True, exist_ok=True)
        plot = plot_lr_find(result["learning_rates"], result["losses"], result["smoothed_losses"], result,
                            out / "lr_find.png")
        (out / "lr_find.json").write_text(json.dumps(result, indent=2))
        result["plot"] = str(plot)
    logger.warning("Learning-rate range test: suggested %.3g (steepest descent of the smoothed loss); min/10 %.3g; "
                   "%d steps; plot %s", result["suggested"], result["min_div_10"], result["steps_run"],
                   out / "lr_find.png")
    if training_args.lr_find_only:
        raise LearningRateFound(result)
    trainer.args.learning_rate = result["suggested"]
    training_args.learning_rate = result["suggested"]


def main(argv: Sequence[str] | None = None, prog: str = "medheads find-lr") -> int:
    import importlib

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: {prog} {{{','.join(TASKS)}}} [ARGS.json] [training flags]\n\n" + __doc__)
        return 0
    task, rest = argv[0], argv[1:]
    if task not in TASKS:
        print(f"{prog}: error: unknown task {task!r}: choose one of {', '.join(TASKS)} (then the training flags)",
              file=sys.stderr)
        return 2
    module, function = TASKS[task]
    entry = getattr(importlib.import_module(module), function)
    extra = ["--lr_find_only", "true"]
    if "--do_train" not in rest:
        extra += ["--do_train"]
    try:
        status = entry(rest + extra, prog=prog)
    except LearningRateFound as found:
        result = found.result
        print(json.dumps({"suggested_learning_rate": result["suggested"], "rule": result["rule"],
                          "min_div_10": result["min_div_10"], "steps_run": result["steps_run"],
                          "plot": result.get("plot")}, indent=2))
        return 0
    return int(status or 0)


__all__ = ["smooth", "centered_smooth", "suggest", "range_test", "plot_lr_find", "maybe_find_learning_rate", "LearningRateFound",
           "main"]
