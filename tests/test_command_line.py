"""One command-line contract for every `medheads` subcommand: `--help`, flags or a JSON file of arguments, and every
input error as ONE line `medheads <command>: error: ...` with exit status 2 before any heavy work, with the closest
valid name suggested for a mistyped flag or JSON key; `scripts/*.py` behave exactly like `medheads <command>`."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medheads.command_line import explicit_keys, parse_args
from medheads.data import DataFormatError
from medheads.errors import InputError
from medheads.hub.constants import PublishError, PushError
from medheads.training.cli import COMMANDS, main

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = {"train-ner": "train_ner.py", "train-text": "train_text_classifier.py",
           "train-image": "train_image_classifier.py", "publish": "publish.py"}
# command -> (module, the function that does the heavy work after parsing)
WORK = {"train-ner": ("medheads.training.ner", "run"), "train-text": ("medheads.training.text_classification", "run"),
        "train-image": ("medheads.training.image_classification", "run"), "publish": ("medheads.hub.publishing",
                                                                                       "publish")}
TRAINING = ("train-ner", "train-text", "train-image")
# Commands whose flags are dataclasses with TrainingArguments (or publish's): the full contract incl. JSON files
FLAG_FILE_COMMANDS = (*TRAINING, "publish")
# Commands with a few plain flags of their own: one-line errors, exit 2, --help
PLAIN_COMMANDS = tuple(command for command in COMMANDS if command not in FLAG_FILE_COMMANDS)


@pytest.fixture
def no_heavy_work(monkeypatch):
    """Fail the test if a command gets past argument parsing to its real work."""
    for module, function in WORK.values():
        def refuse(*args, **kwargs):
            raise AssertionError("the command started its work despite an input error")
        monkeypatch.setattr(importlib.import_module(module), function, refuse)


def one_error_line(capsys, command: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"medheads {command}: error: "), lines[0]
    assert "Traceback" not in captured.err
    return lines[0]


def test_one_error_class():
    assert issubclass(DataFormatError, InputError) and issubclass(PublishError, InputError)
    assert issubclass(InputError, ValueError) and InputError.exit_code == 2
    assert not issubclass(PushError, InputError) and PushError.exit_code == 1
    for module in ("medheads.training.ner", "medheads.training.text_classification",
                   "medheads.training.image_classification"):
        for old in ("NerInputError", "ArgumentError", "cli"):
            assert not hasattr(importlib.import_module(module), old), (module, old)


@pytest.mark.parametrize("command", FLAG_FILE_COMMANDS)
def test_unknown_flag_is_one_line_with_a_suggestion(command, capsys, no_heavy_work):
    flag, meant = ("--dryrun", "--dry_run") if command == "publish" else ("--learning_rte", "--learning_rate")
    assert main([command, flag, "0.01"]) == 2
    line = one_error_line(capsys, command)
    assert f"unknown flag {flag} (did you mean '{meant}'?)" in line
    # also in --flag=value form, and before a missing required flag is complained about
    assert main([command, f"{flag}=1"]) == 2
    assert f"did you mean '{meant}'" in one_error_line(capsys, command)


@pytest.mark.parametrize("command", FLAG_FILE_COMMANDS)
def test_unknown_json_key_names_the_file_and_the_closest_key(command, tmp_path, capsys, no_heavy_work):
    arguments = {"model_dir": "m", "repo_id": "o/n", "dryrun": True} if command == "publish" else \
        {"model_name_or_path": "m", "output_dir": str(tmp_path / "o"), "num_train_epoch": 2}
    path = tmp_path / "args.json"
    path.write_text(json.dumps(arguments))
    assert main([command, str(path)]) == 2
    line = one_error_line(capsys, command)
    wrong, right = ("dryrun", "dry_run") if command == "publish" else ("num_train_epoch", "num_train_epochs")
    assert f"{path}: unknown key '{wrong}' (did you mean '{right}'?)" in line


@pytest.mark.parametrize("command", FLAG_FILE_COMMANDS)
def test_bad_values_and_unreadable_files_are_one_line(command, tmp_path, capsys, no_heavy_work):
    required = ["--model_dir", "m", "--repo_id", "o/n"] if command == "publish" else \
        ["--model_name_or_path", "m", "--output_dir", str(tmp_path / "o")]
    bad_value = ["--private", "maybe"] if command == "publish" else ["--num_train_epochs", "three"]
    assert main([command, *required, *bad_value]) == 2
    assert f"argument {bad_value[0]}: " in one_error_line(capsys, command)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert main([command, str(broken)]) == 2
    assert "is not valid JSON" in one_error_line(capsys, command)
    assert main([command, *required, "stray"]) == 2
    assert "unexpected argument 'stray'" in one_error_line(capsys, command)


@pytest.mark.parametrize("command", TRAINING)
def test_output_dir_is_required(command, capsys, no_heavy_work):
    assert main([command, "--model_name_or_path", "m", "--do_train"]) == 2
    line = one_error_line(capsys, command)
    assert "required" in line and "--output_dir" in line


def test_output_dir_is_required_from_code_too():
    from medheads.training.arguments import MedheadsTrainingArguments

    with pytest.raises(InputError, match="--output_dir is required"):
        MedheadsTrainingArguments()


@pytest.mark.parametrize("command", FLAG_FILE_COMMANDS)
def test_help(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: medheads {command}")
    assert ("--repo_id" in out) if command == "publish" else ("--output_dir" in out and "--learning_rate" in out)


@pytest.mark.parametrize("command", PLAIN_COMMANDS)
def test_every_other_command_keeps_the_contract(command, capsys):
    """export, predict, find-lr, adapt-encoder, compare-encoders, bootstrap-ci: --help exits 0 with the command's
    usage; an unknown flag is ONE line `medheads <command>: error: ...` with status 2, never argparse's usage block."""
    assert main([command, "--help"]) == 0
    assert f"usage: medheads {command}" in capsys.readouterr().out
    bogus = ["ner", "--no_such_flag", "1"] if command == "find-lr" else ["--no_such_flag", "1"]
    assert main([command, *bogus]) == 2
    line = one_error_line(capsys, command)
    assert "--no_such_flag" in line or "required" in line, line


def test_top_level_help_and_unknown_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(command in out for command in COMMANDS)
    assert main(["train-nre"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean 'train-ner'" in err[0]


def test_task_errors_after_parsing_are_one_line_too(tmp_path, capsys):
    """An `InputError` raised by the command's own checks (here: a model path that is no model) is one line and
    status 2 as well, and nothing is written."""
    train = tmp_path / "train.tsv"
    train.write_text("IL-2\tB-protein\n\n")
    out = tmp_path / "out"
    assert main(["train-ner", "--model_name_or_path", str(tmp_path / "nowhere"), "--train_file", str(train),
                 "--do_train", "--eval_strategy", "no", "--save_strategy", "epoch", "--load_best_model_at_end",
                 "false", "--output_dir", str(out)]) == 2
    assert "is not a model" in one_error_line(capsys, "train-ner")
    assert not out.exists() or not any(out.iterdir())


def test_explicit_keys_reads_flags_and_the_json_file(tmp_path):
    config = tmp_path / "a.json"
    config.write_text(json.dumps({"metric_for_best_model": "accuracy"}))
    assert explicit_keys([str(config), "--no_freeze_backbone", "--seed=3"]) == {"metric_for_best_model",
                                                                                "freeze_backbone", "seed"}


def test_json_file_then_overriding_flags(tmp_path):
    from medheads.training.ner import ARGUMENT_CLASSES

    config = tmp_path / "a.json"
    config.write_text(json.dumps({"model_name_or_path": "m", "output_dir": str(tmp_path / "o"), "seed": 1,
                                  "hidden_layers": [-1, -2]}))
    model_args, _, training_args = parse_args(ARGUMENT_CLASSES, [str(config), "--seed", "7"])
    assert training_args.seed == 7 and model_args.hidden_layers == ["-1", "-2"]


def test_scripts_behave_exactly_like_the_command(tmp_path, capsys):
    """`python scripts/X.py ARGS` == `medheads <command> ARGS`: same single stderr line, same status (the four
    scripts run at once, each in its own process)."""
    flags = {command: "--dryrun" if command == "publish" else "--learning_rte" for command in SCRIPTS}
    processes = {command: subprocess.Popen([sys.executable, str(REPO / "scripts" / script), flags[command], "0.01"],
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                                           env={**os.environ, "PYTHONPATH": ""})
                 for command, script in SCRIPTS.items()}
    for command, process in processes.items():
        stdout, stderr = process.communicate(timeout=300)
        status = main([command, flags[command], "0.01"])
        captured = capsys.readouterr()
        assert process.returncode == status == 2, (command, stderr)
        assert stderr == captured.err
        assert len(stderr.strip().splitlines()) == 1 and stderr.startswith(f"medheads {command}: error: unknown flag")
        assert stdout == captured.out == ""


def test_publish_exits_1_when_the_push_fails(tmp_path, monkeypatch, capsys):
    """Bad input is 2; a failed upload (network, HTTP, token) is 1, and its message says where the staged folder is."""
    import medheads.hub.publishing as publishing

    def staged(*args, **kwargs):
        class Staged:
            folder, files, config = tmp_path / "staged", ["config.json"], {}

            def describe(self):
                return "staged"
        return Staged()

    def fail(*args, **kwargs):
        raise PushError("Could not push to http://hub (ConnectionError: refused); check the network.\n"
                        f"Nothing was lost: the staged repository is intact at {tmp_path / 'staged'}")

    monkeypatch.setattr(publishing, "stage_model", staged)
    monkeypatch.setattr(publishing, "push_staged", fail)
    assert main(["publish", "--model_dir", str(tmp_path), "--repo_id", "org/name"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("medheads publish: error: Could not push") and "Nothing was lost" in err
