"""Plumbing shared by the training commands: logging, checkpoints, results files.

Never imported by the shipped model code (`medheads.models`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import transformers
from transformers import TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

logger = logging.getLogger("medheads")


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


def resume_checkpoint(training_args: TrainingArguments) -> str | None:
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
    "exit_on_input_error",
    "setup_logging", "resume_checkpoint", "require_output_dir", "write_json", "save_split_metrics", "write_run_summary", "dataclass_dict", "logger",
]
