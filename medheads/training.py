"""Plumbing shared by the training scripts in `scripts/`: arguments, logging, checkpoints, results.

The scripts follow transformers' `examples/pytorch/*/run_*.py`: `HfArgumentParser` over dataclasses (`--help`, or one
JSON file of arguments), every `TrainingArguments` flag, `trainer.save_metrics` writing `all_results.json`.
Never imported by modeling files.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import transformers
from transformers import HfArgumentParser, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

logger = logging.getLogger("medheads")


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
    return parser.parse_args_into_dataclasses(args=args)


def exit_on_input_error(run, args, errors: tuple[type[BaseException], ...], script: str) -> int:
    """Run a script's `run(args)`; an input error (one of `errors`) prints one line `SCRIPT: error: ...` instead of a
    traceback and gives exit status 2, as argparse does for bad flags."""
    try:
        run(args)
    except errors as error:
        logger.debug("input error", exc_info=True)
        print(f"{script}: error: {error}", file=sys.stderr)
        return 2
    return 0


def setup_logging(training_args: TrainingArguments) -> None:
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)])
    level = training_args.get_process_log_level()
    # medheads' own progress lines (splits, labels, thresholds, cache hits) show on the main process; transformers
    # keeps the verbosity TrainingArguments gives it (--log_level).
    logger.setLevel(min(level, logging.INFO) if training_args.should_log else level)
    transformers.utils.logging.set_verbosity(level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()


def resume_checkpoint(training_args: MedheadsTrainingArguments) -> str | None:
    """The checkpoint to resume from: `--resume_from_checkpoint`, else the last one in output_dir (if any)."""
    if training_args.resume_from_checkpoint:
        return training_args.resume_from_checkpoint
    output_dir = Path(training_args.output_dir)
    if not (training_args.do_train and output_dir.is_dir()) or training_args.overwrite_output_dir:
        return None
    last = get_last_checkpoint(str(output_dir))
    if last is not None:
        logger.info("Resuming from %s (pass --overwrite_output_dir to start afresh).", last)
    return last


def require_output_dir(training_args: TrainingArguments, default: str) -> None:
    if training_args.output_dir is None:
        training_args.output_dir = default


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=float) + "\n")
    return path


def save_split_metrics(trainer, split: str, metrics: dict) -> None:
    """Log, and save to `<split>_results.json` and `all_results.json` (as transformers' examples do)."""
    trainer.log_metrics(split, metrics)
    trainer.save_metrics(split, metrics)


def write_run_summary(output_dir: str, script: str, arguments: dict, metrics: dict, plots: list[str]) -> Path:
    """`metrics.json`: every metric of the run, the arguments that produced it and the plots, for model cards."""
    return write_json(Path(output_dir) / "metrics.json", {
        "script": script,
        "arguments": {k: v for k, v in arguments.items() if k not in ("hub_token", "token")},
        "metrics": metrics,
        "plots": [Path(p).name for p in plots],
    })


def dataclass_dict(*objects) -> dict:
    """JSON-safe arguments of the run (TrainingArguments' own serialisation drops secrets)."""
    merged: dict = {}
    for obj in objects:
        merged.update(json.loads(obj.to_json_string()) if hasattr(obj, "to_json_string") else
                      {k: v for k, v in vars(obj).items()})
    return json.loads(json.dumps(merged, default=str))


__all__ = [
    "MedheadsTrainingArguments", "DataArguments", "json_to_flags", "parse_args", "exit_on_input_error",
    "setup_logging", "resume_checkpoint", "require_output_dir", "write_json", "save_split_metrics", "write_run_summary", "dataclass_dict", "logger",
]
