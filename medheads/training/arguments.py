"""The arguments every training command shares, and the one way they are read.

Like transformers' `examples/pytorch/*/run_*.py`: `HfArgumentParser` over dataclasses (`--help`), every
`TrainingArguments` flag, and a JSON file of arguments that flags after it override. The parsing itself is
`medheads.command_line` (shared with `medheads publish`): unknown flags and JSON keys, bad values and missing required
flags are one `InputError` with the closest valid name suggested.

`ModelArguments` holds what every command needs to load a model (path, revision, token, cache, remote code); each task
module subclasses it with the options of its head only, so `--help` of one command never lists another's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from transformers import TrainingArguments

from ..command_line import json_to_flags
from ..command_line import parse_args as _parse_command_line
from ..errors import InputError


@dataclass
class ModelArguments:
    """Which model to start from, and how to load it (Hub revision, token, cache, remote code)."""

    model_name_or_path: str = field(metadata={"help": (
        "A pretrained encoder or backbone (folder or Hub id) to put a new head on, or a saved medheads model folder "
        "of the same kind to continue training / evaluate (detected by its config's model_type).")})
    cache_dir: str | None = field(default=None, metadata={"help": "Where Hub downloads (models, datasets) are "
                                                                  "stored."})
    model_revision: str = field(default="main", metadata={"help": "Hub revision (branch, tag or commit) to load."})
    token: str | None = field(default=None, metadata={"help": "Hub token for private models (default: the saved "
                                                              "login); never written to metrics.json."})
    trust_remote_code: bool = field(default=False, metadata={"help": (
        "Allow an encoder or backbone whose code lives with the checkpoint (passed to its config, model, tokenizer "
        "and processor loading).")})

    def hub_kwargs(self) -> dict:
        """The keyword arguments of every `from_pretrained` call of the run."""
        return {"cache_dir": self.cache_dir, "revision": self.model_revision, "token": self.token,
                "trust_remote_code": self.trust_remote_code}


@dataclass
class MedheadsTrainingArguments(TrainingArguments):
    """`TrainingArguments` with defaults that suit head training: evaluate and save every epoch, keep the best
    checkpoint (by the script's main metric) and restore it at the end, log often, report to no tracker.
    `--output_dir` is required: a run never writes into a default folder it was not told about."""

    output_dir: str | None = field(default=None, metadata={
        "required": True, "help": "Where the model, metrics and plots are written (required)."})
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate: no, steps, epoch."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to save a checkpoint: no, steps, epoch, best."})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "Restore the best checkpoint at the end."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept (the best is always kept)."})
    logging_steps: float = field(default=10, metadata={"help": "Log the training loss every N steps."})
    report_to: None | str | list[str] = field(default="none", metadata={"help": "Trackers: none, tensorboard, ..."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start afresh: first remove the previous run's outputs (checkpoints, results, "
                                         "plots, model files) from output_dir. Without it, checkpoints there are "
                                         "resumed from and a finished run there is refused."}
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

    def __post_init__(self):
        if not self.output_dir:  # TrainingArguments would fall back to ./trainer_output
            raise InputError("--output_dir is required: pass the folder the model, metrics and plots go to "
                             "(e.g. --output_dir outputs/my-run)")
        super().__post_init__()


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


def parse_args(dataclass_types: tuple, args: Sequence[str] | None = None, prog: str | None = None,
               description: str | None = None):
    """Parse command-line flags into the given dataclasses. A first argument ending in `.json` is a file of
    arguments; flags after it override its values (`configs/ner_jnlpba.json --num_train_epochs 1`). Any problem is
    one `medheads.errors.InputError`."""
    return _parse_command_line(dataclass_types, args, prog=prog, description=description)


__all__ = ["ModelArguments", "MedheadsTrainingArguments", "DataArguments", "json_to_flags", "parse_args"]
