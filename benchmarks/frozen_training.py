"""Benchmark 2: training a head on a frozen encoder for 10 epochs, cached features vs re-encoding every epoch.

Three sides train the same `FrozenEncoderMultiLabel` (MiniLM, mean pooling, MLP head of two 384-wide ReLU layers with
dropout 0.2 like the MTSamples seed) with the same Trainer hyperparameters and seed, evaluating every epoch:

* medheads: `medheads.training.features.cached_features` encodes the training and validation texts once (length-sorted dynamic
  batches) and the Trainer trains the head alone on the cached pooled vectors. Measured in full: feature computation,
  10 epochs, 10 evaluations.
* seed recipe (a): the Trainer runs every batch through the frozen encoder, texts padded to the maximum length
  (MTSamples 512, ROCOv2 256, as the seeds did), so every epoch re-encodes everything.
* (b): the same with dynamic padding (each batch padded to its longest text).

All sides truncate at the same length. A full 10-epoch baseline would take over an hour on a 2-core CPU, so the
baselines are measured on samples and extrapolated: a Trainer set up for the full 10 epochs is stopped after
`baseline_steps` steps of epoch 1 and then evaluates `baseline_eval_examples` validation texts; this is done once
before and once after the cached run, so that a change in the machine's load hits every side. Estimate: mean duration
of the measured steps (each run's first step, which includes start-up, left out) x the 10-epoch step count + 10 x the
validation pass scaled linearly from the measured examples. The baselines compute the same features (only padding
differs), so their training follows the same trajectory: every measured step's loss is checked against the cached
run's, which is why the cached run's final validation metric is the baselines' too.
"""

from __future__ import annotations

import copy
import math
import tempfile
import time

import numpy as np
import torch

from benchmarks import common

DATASETS = {
    "mtsamples": dict(max_length=512, problem_type="single_label_classification", metric="accuracy",
                      n_train=288, n_val=72, baseline_steps=4, baseline_eval_examples=12),
    "rocov2": dict(max_length=256, problem_type="multi_label_classification", metric="micro_f1",
                   n_train=1600, n_val=400, baseline_steps=8, baseline_eval_examples=48),
}
HYPERPARAMETERS = dict(num_train_epochs=10, per_device_train_batch_size=24, per_device_eval_batch_size=24,
                       learning_rate=1e-3, weight_decay=0.0, lr_scheduler_type="linear", seed=42)
DEFAULTS = dict(encoder=None, data_dir=None, datasets=["mtsamples", "rocov2"], head_hidden_size=384)


# -- data --------------------------------------------------------------------------------------------------------------
def load_mtsamples(data_dir, n_train: int, n_val: int, seed: int = 0):
    from medheads.data import read_text_table

    rows = read_text_table(common.data_dir(data_dir) / "mtsamples" / "mtsamples_6class.csv", "transcription",
                           "medical_specialty", drop_empty_text=True, extra_columns=["split"])
    names = sorted({row["label"] for row in rows})
    ids = {name: i for i, name in enumerate(names)}
    rng = np.random.default_rng(seed)

    def pick(split, n):
        chosen = [row for row in rows if row["split"] == split]
        index = rng.permutation(len(chosen))[:n]
        return [chosen[i]["text"] for i in index], [ids[chosen[i]["label"]] for i in index]

    return pick("train", n_train), pick("validation", n_val), names


def load_rocov2(data_dir, n_train: int, n_val: int, seed: int = 0):
    from medheads.data import read_text_table

    rows = read_text_table(common.data_dir(data_dir) / "rocov2" / "rocov2_valid.csv", "caption", "cuis_manual",
                           label_separator=";", drop_empty_text=True)
    names = sorted({cui for row in rows for cui in row["labels"]})
    ids = {name: i for i, name in enumerate(names)}
    index = np.random.default_rng(seed).permutation(len(rows))

    def multi_hot(row):
        vector = [0.0] * len(names)
        for cui in row["labels"]:
            vector[ids[cui]] = 1.0
        return vector

    def take(part):
        return [rows[i]["text"] for i in part], [multi_hot(rows[i]) for i in part]

    return take(index[:n_train]), take(index[n_train:n_train + n_val]), names


LOADERS = {"mtsamples": load_mtsamples, "rocov2": load_rocov2}


def tokenized(tokenizer, texts, labels, max_length: int, pad_to_max: bool):
    import datasets

    encoded = tokenizer(texts, truncation=True, max_length=max_length,
                        padding="max_length" if pad_to_max else False)
    return datasets.Dataset.from_dict({**encoded, "labels": labels})


# -- training ----------------------------------------------------------------------------------------------------------
def compute_metrics_for(problem_type: str, names: list[str]):
    from medheads.metrics import multiclass_metrics, multilabel_metrics

    def compute(prediction):
        logits, labels = prediction.predictions, prediction.label_ids
        if problem_type == "multi_label_classification":
            metrics = multilabel_metrics(labels, 1 / (1 + np.exp(-logits)), 0.5, names)
            return {k: metrics[k] for k in ("micro_f1", "macro_f1", "subset_accuracy")}
        metrics = multiclass_metrics(labels, logits, names)
        return {k: metrics[k] for k in ("accuracy", "weighted_f1", "macro_f1")}

    return compute


def make_recorder(stop_after: int | None = None):
    from transformers import TrainerCallback

    class Recorder(TrainerCallback):
        """End-of-step times and evaluation metrics; optionally stops training after `stop_after` steps."""

        def __init__(self):
            self.step_ends, self.step_cpu_ends, self.evaluations = [], [], []

        def on_train_begin(self, args, state, control, **kwargs):
            self.start, self.cpu_start = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            self.step_ends.append(time.perf_counter())
            self.step_cpu_ends.append(time.process_time())
            if stop_after is not None and state.global_step >= stop_after:
                control.should_training_stop = True

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            self.evaluations.append({k.removeprefix("eval_"): v for k, v in (metrics or {}).items()})

    return Recorder()


def make_trainer(callbacks, **kwargs):
    """A `Trainer` (the same class for every side) that keeps every step's loss, without logging every step."""
    from transformers import Trainer
    from transformers.trainer_callback import PrinterCallback

    class LossRecordingTrainer(Trainer):
        def training_step(self, *args, **kw):
            loss = super().training_step(*args, **kw)
            self.step_losses.append(float(loss))
            return loss

    trainer = LossRecordingTrainer(callbacks=callbacks, **kwargs)
    trainer.step_losses = []
    trainer.remove_callback(PrinterCallback)  # no log lines on stdout: the recorder keeps the numbers
    return trainer


def training_arguments(output_dir, evaluate: bool, **overrides):
    from transformers import TrainingArguments

    return TrainingArguments(output_dir=output_dir, eval_strategy="epoch" if evaluate else "no", save_strategy="no",
                             logging_strategy="steps", logging_steps=50, report_to="none", use_cpu=True,
                             disable_tqdm=True, dataloader_num_workers=0, **{**HYPERPARAMETERS, **overrides})


def new_model(encoder: str, names: list[str], problem_type: str, head_hidden_size: int):
    from medheads import FrozenEncoderMultiLabel

    torch.manual_seed(HYPERPARAMETERS["seed"])
    return FrozenEncoderMultiLabel.from_encoder(
        encoder, pooling="mean", head_hidden_sizes=[head_hidden_size, head_hidden_size], head_activation="relu",
        head_dropout=0.2, problem_type=problem_type, id2label=dict(enumerate(names)))


def run_medheads(base_model, train, val, collator, compute_metrics, workdir, feature_name="pooled_features",
                 length_column="input_ids", **overrides) -> dict:
    """Features of both splits computed once into a fresh cache folder (timed), then the head trained on them."""
    from transformers import default_data_collator

    from medheads.training.features import cached_features

    model = copy.deepcopy(base_model)
    start, cpu_start = time.perf_counter(), time.process_time()
    train_features = cached_features(model, train, collator, feature_name=feature_name, length_column=length_column,
                                      cache_dir=f"{workdir}/cache", desc="Features of the training split")
    val_features = cached_features(model, val, collator, feature_name=feature_name, length_column=length_column,
                                   cache_dir=f"{workdir}/cache", desc="Features of the validation split")
    features_done, features_cpu = time.perf_counter(), time.process_time()
    recorder = make_recorder()
    trainer = make_trainer([recorder], model=model, args=training_arguments(f"{workdir}/medheads", True, **overrides),
                           train_dataset=train_features, eval_dataset=val_features,
                           data_collator=default_data_collator, compute_metrics=compute_metrics)
    trainer.train()
    end, end_cpu = time.perf_counter(), time.process_time()
    return {"seconds": end - start, "feature_seconds": features_done - start, "head_training_seconds":
            end - features_done, "cpu_seconds": end_cpu - cpu_start, "feature_cpu_seconds": features_cpu - cpu_start,
            "head_training_cpu_seconds": end_cpu - features_cpu, "steps": trainer.state.global_step,
            "losses": trainer.step_losses,
            "evaluations": recorder.evaluations, "measured": "in full"}


def measure_baseline(base_model, train, val, collator, workdir, steps: int, eval_examples: int,
                     **overrides) -> dict:
    """One sample of the Trainer through the frozen encoder: `steps` steps of epoch 1, then `eval_examples`
    validation examples evaluated."""
    epochs = overrides.get("num_train_epochs", HYPERPARAMETERS["num_train_epochs"])
    batch = overrides.get("per_device_train_batch_size", HYPERPARAMETERS["per_device_train_batch_size"])
    steps_per_epoch = math.ceil(len(train) / batch)
    # Stay inside epoch 1: the cached run evaluates at each epoch's end, and an evaluation draws from the global RNG
    # (a new DataLoader iterator), so later steps would be shuffled differently and the losses no longer comparable.
    steps = max(1, min(steps, steps_per_epoch))
    model = copy.deepcopy(base_model)
    recorder = make_recorder(stop_after=steps)
    trainer = make_trainer([recorder], model=model, args=training_arguments(workdir, False, **overrides),
                           train_dataset=train, data_collator=collator)
    trainer.train()
    durations = np.diff(recorder.step_ends)  # steps 2..N: step 1 includes the data loader's start-up
    cpu_durations = np.diff(recorder.step_cpu_ends)
    if len(durations) == 0:
        durations = np.array([recorder.step_ends[0] - recorder.start])
        cpu_durations = np.array([recorder.step_cpu_ends[0] - recorder.cpu_start])
    sample = val.select(range(min(eval_examples, len(val))))
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.evaluate(eval_dataset=sample)
    return {"step_seconds": durations.tolist(), "step_cpu_seconds": cpu_durations.tolist(),
            "measured_steps": len(recorder.step_ends), "losses": trainer.step_losses, "eval_examples": len(sample),
            "eval_seconds": time.perf_counter() - start, "eval_cpu_seconds": time.process_time() - cpu_start,
            "total_steps": epochs * steps_per_epoch, "epochs": epochs, "validation_examples": len(val)}


def combine_baseline(samples: list[dict]) -> dict:
    """Extrapolate the samples (taken before and after the cached run) linearly to the full run."""
    durations = np.concatenate([sample["step_seconds"] for sample in samples])
    per_step = float(durations.mean())
    cpu_per_step = float(np.concatenate([sample["step_cpu_seconds"] for sample in samples]).mean())
    examples = sum(s["eval_examples"] for s in samples)
    first = samples[0]
    eval_full = sum(s["eval_seconds"] for s in samples) / examples * first["validation_examples"]
    eval_cpu_full = sum(s["eval_cpu_seconds"] for s in samples) / examples * first["validation_examples"]
    measured = sum(s["measured_steps"] for s in samples)
    return {"seconds": per_step * first["total_steps"] + first["epochs"] * eval_full, "seconds_per_step": per_step,
            "cpu_seconds": cpu_per_step * first["total_steps"] + first["epochs"] * eval_cpu_full,
            "cpu_seconds_per_step": cpu_per_step,
            "total_steps": first["total_steps"], "measured_steps": measured, "step_seconds": durations.tolist(),
            "eval_examples_measured": sum(s["eval_examples"] for s in samples),
            "eval_seconds_measured": sum(s["eval_seconds"] for s in samples),
            "eval_seconds_per_epoch_estimated": eval_full, "losses": first["losses"],
            "samples_losses": [s["losses"] for s in samples],
            "measured": f"{len(samples)} runs of {first['measured_steps']} steps (before and after the cached run) of "
                        f"{first['total_steps']} training steps, and {first['eval_examples']} of "
                        f"{first['validation_examples']} validation examples per run; extrapolated linearly"}


def run_sides(base, medheads_args: tuple, baselines: dict, steps: int, eval_examples: int, workdir: str,
              overrides: dict, medheads_kwargs: dict | None = None) -> dict:
    """Baseline samples, the full cached run, baseline samples again: a change in the machine's load hits all sides.

    `baselines`: {side: (train, val, collator)}.
    """
    samples = {side: [] for side in baselines}
    for side, (train, val, collator) in baselines.items():
        samples[side].append(measure_baseline(base, train, val, collator, f"{workdir}/{side}-1", steps,
                                              eval_examples, **overrides))
    sides = {"medheads_cached": run_medheads(base, *medheads_args, workdir, **(medheads_kwargs or {}), **overrides)}
    for side, (train, val, collator) in reversed(list(baselines.items())):
        samples[side].append(measure_baseline(base, train, val, collator, f"{workdir}/{side}-2", steps,
                                              eval_examples, **overrides))
    for side in baselines:
        sides[side] = combine_baseline(samples[side])
    return sides


def training_comparison(sides: dict, fast: str, slow: str, target: float | None) -> dict:
    """Wall-time speed-up (judged against the target) and, as a load-independent cross-check, the CPU-time ratio."""
    speedup = common.ratio(sides[slow]["seconds"], sides[fast]["seconds"])
    result = common.target_result(speedup, target)
    return {"fast": fast, "slow": slow, "speedup": speedup, "target": result["target"], "target_met": result["met"],
            "cpu_time_ratio": common.ratio(sides[slow]["cpu_seconds"], sides[fast]["cpu_seconds"])}


def compare_losses(sides: dict, reference_side: str, others, name: str) -> dict:
    """The baselines' per-step losses must equal the cached run's first steps (same weights at every step)."""
    reference = np.array(sides[reference_side]["losses"])
    checks = {}
    for side in others:
        losses = np.array(sides[side]["losses"])
        for run_losses in sides[side].get("samples_losses", [losses]):
            run_losses = np.array(run_losses)
            np.testing.assert_allclose(run_losses, reference[:len(run_losses)], rtol=1e-4, atol=1e-6,
                                       err_msg=f"{name} {side}: training losses differ from the cached-feature run")
        checks[f"{side}_losses_match_steps"] = len(losses)
        checks[f"{side}_max_abs_loss_diff"] = float(np.abs(losses - reference[:len(losses)]).max())
    return checks


def run_dataset(name: str, encoder: str, data_dir, head_hidden_size: int, n_train: int, n_val: int, max_length: int,
                problem_type: str, metric: str, baseline_steps: int, baseline_eval_examples: int,
                **overrides) -> dict:
    from transformers import AutoTokenizer, DataCollatorWithPadding, default_data_collator

    (train_texts, train_labels), (val_texts, val_labels), names = LOADERS[name](data_dir, n_train, n_val)
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    dynamic = {split: tokenized(tokenizer, texts, labels, max_length, False)
               for split, texts, labels in (("train", train_texts, train_labels), ("val", val_texts, val_labels))}
    padded = {split: tokenized(tokenizer, texts, labels, max_length, True)
              for split, texts, labels in (("train", train_texts, train_labels), ("val", val_texts, val_labels))}
    lengths = np.array([len(ids) for ids in dynamic["train"]["input_ids"]])
    base = new_model(encoder, names, problem_type, head_hidden_size)
    collator = DataCollatorWithPadding(tokenizer)
    compute = compute_metrics_for(problem_type, names)

    with tempfile.TemporaryDirectory(prefix="medheads-bench-") as workdir:
        sides = run_sides(base, (dynamic["train"], dynamic["val"], collator, compute),
                          {"seed_padded_to_max": (padded["train"], padded["val"], default_data_collator),
                           "dynamic_padding": (dynamic["train"], dynamic["val"], collator)},
                          baseline_steps, baseline_eval_examples, workdir, overrides)

    checks = compare_losses(sides, "medheads_cached", ("seed_padded_to_max", "dynamic_padding"), name)
    final = sides["medheads_cached"]["evaluations"][-1]
    best = max(sides["medheads_cached"]["evaluations"], key=lambda m: m.get(metric, -1))
    comparisons = []
    targets = {"mtsamples": {"seed_padded_to_max": 9.0, "dynamic_padding": 8.0},
               "rocov2": {"seed_padded_to_max": 50.0, "dynamic_padding": 8.0}}.get(name, {})
    for side in ("seed_padded_to_max", "dynamic_padding"):
        comparisons.append(training_comparison(sides, "medheads_cached", side, targets.get(side)))
    return {
        "settings": {"train_texts": len(train_texts), "validation_texts": len(val_texts), "labels": len(names),
                     "max_length": max_length, "problem_type": problem_type, "mean_tokens": float(lengths.mean()),
                     "median_tokens": float(np.median(lengths)),
                     "texts_at_max_length": int((lengths >= max_length).sum()),
                     "hyperparameters": {**HYPERPARAMETERS, **overrides}},
        "sides": sides,
        "comparisons": comparisons,
        "quality": {"metric": metric, "final": {k: v for k, v in final.items() if k in (metric, "accuracy",
                    "weighted_f1", "macro_f1", "micro_f1", "subset_accuracy", "loss", "epoch")},
                    "best_epoch": best.get("epoch"), "best": best.get(metric),
                    "baselines": "identical: same features and the same loss at every measured step (checks)"},
        "checks": checks,
    }


def run(encoder=None, data_dir=None, datasets=("mtsamples", "rocov2"), head_hidden_size=384, sizes=None,
        **overrides) -> dict:
    """`sizes`: per-dataset overrides of `DATASETS` (n_train, n_val, max_length, baseline_steps, ...)."""
    encoder = encoder or common.minilm_path()
    results = {}
    for name in datasets:
        settings = {**DATASETS[name], **(sizes or {}).get(name, {})}
        results[name] = run_dataset(name, encoder, data_dir, head_hidden_size, **settings, **overrides)
    return {"name": "frozen_training", "title": "Frozen-encoder head training, 10 epochs: cached features vs "
            "re-encoding every epoch", "settings": {"encoder": encoder}, "datasets": results}


if __name__ == "__main__":
    common.main_for("benchmarks.frozen_training", DEFAULTS)
