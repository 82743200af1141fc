"""The arguments every training command shares, and the one way they are read.

Like transformers' `examples/pytorch/*/run_*.py`: `HfArgumentParser` over dataclasses (`--help`), every
`TrainingArguments` flag, and a JSON file of arguments that flags after it override.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser, TrainingArguments


@dataclass
class MedheadsTrainingArguments(TrainingArguments):
    """`TrainingArguments` with defaults that suit head training: evaluate and save every epoch, keep the best
    checkpoint (by the script's main metric) and restore it at the end, log often, report to no tracker."""

    output_dir: str | None = field(default=None, metadata={"help": "Where the model, metrics and plots are written."})
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate: no, steps, epoch."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to save a checkpoint: no, steps, epoch, best."})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "Restore the best checkpoint at the end."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept (the best is always kept)."})
    logging_steps: float = field(default=10, metadata={"help": "Log the training loss every N steps."})
    report_to: None | str | list[str] = field(default="none", metadata={"help": "Trackers: none, tensorboard, ..."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start afresh even if output_dir holds checkpoints (else resume from them)."}
    )
    # learning-rate range test (medheads.training.lr_finder): `--learning_rate auto` sets auto_learning_rate
    auto_learning_rate: bool = field(default=False, metadata={
        "help": "Run the learning-rate range test before training and train with its suggestion (what "
                "'--learning_rate auto' means)."})
    lr_find_only: bool = field(default=False, metadata={
        "help": "Run the learning-rate range test, write output_dir/lr_find/ and stop (set by 'medheads find-lr')."})
    lr_find_start: float = field(default=1e-7, metadata={"help": "Range test: first learning rate."})
    lr_find_end: float = field(default=1.0, metadata={"help": "Range test: last learning rate."})
    lr_find_steps: int = field(default=100, metadata={"help": "Range test: batches (exponential steps)."})


@dataclass
class DataArguments:
    """Data options common to every script."""

    train_file: str | None = field(default=None, metadata={"help": "Training data file."})
    validation_file: str | None = field(default=None, metadata={"help": "Validation data file (model selection, "
                                                                        "threshold tuning)."})
    test_file: str | None = field(default=None, metadata={"help": "Test data file, evaluated with --do_predict."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training examples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only the first N validation examples."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Keep only the first N test examples."})


def json_to_flags(path: str | os.PathLike) -> list[str]:
    """The command-line flags a JSON argument file stands for (`{"num_train_epochs": 3}` -> `--num_train_epochs 3`),
    so flags given after the file can override its values."""
    try:
        values = json.loads(Path(path).read_text())
    except OSError as error:
        raise ValueError(f"argument file {path} cannot be read: {error.strerror or error}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"argument file {path} is not valid JSON: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(f"argument file {path} must hold one JSON object of argument names and values")
    flags: list[str] = []
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            flags += [f"--{key}", *(str(item) for item in value)]
        else:  # `--key=value`: a value like "-1,-2" must not be read as a flag
            text = str(value).lower() if isinstance(value, bool) else json.dumps(value) if isinstance(value, dict) \
                else str(value)
            flags.append(f"--{key}={text}")
    return flags


def parse_args(dataclass_types: tuple, args: list[str] | None = None):
    """Parse command-line flags into the given dataclasses. A first argument ending in `.json` is a file of
    arguments; flags after it override its values (`configs/ner_jnlpba.json --num_train_epochs 1`)."""
    parser = HfArgumentParser(dataclass_types)
    args = sys.argv[1:] if args is None else [str(arg) for arg in args]
    if args and args[0].endswith(".json") and not args[0].startswith("-"):
        try:
            args = json_to_flags(args[0]) + args[1:]
        except ValueError as error:
            parser.error(str(error))
    return parser.parse_args_into_dataclasses(args=auto_learning_rate_flags(args))


def auto_learning_rate_flags(args: list[str]) -> list[str]:
    """`--learning_rate auto` (or `=auto`, also from a JSON file) becomes `--auto_learning_rate true`."""
    out, i = [], 0
    while i < len(args):
        arg = args[i]
        if arg == "--learning_rate" and i + 1 < len(args) and args[i + 1].lower() == "auto":
            out += ["--auto_learning_rate", "true"]
            i += 2
            continue
        if arg.lower() == "--learning_rate=auto":
            out += ["--auto_learning_rate", "true"]
        else:
            out.append(arg)
        i += 1
    return out


__all__ = ["MedheadsTrainingArguments", "DataArguments", "json_to_flags", "parse_args", "auto_learning_rate_flags"]
