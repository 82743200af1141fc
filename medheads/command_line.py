"""The one command-line contract of every `medheads` command (training and publishing alike).

* Arguments are dataclasses read by transformers' `HfArgumentParser` (`--help` lists every flag), from flags or from
  a JSON file of arguments given first, which flags after it override (`configs/ner_jnlpba.json --seed 7`).
* Every input error - an unknown flag or JSON key (with the closest valid name suggested), a bad value, a missing
  required flag, an unreadable argument file, and any `medheads.errors.InputError` the command raises later - ends
  in ONE line `medheads <command>: error: ...` on stderr and exit status 2, before any heavy work.

Used by `medheads.training` (through `medheads.training.arguments`) and by `medheads.hub`, which must not import the
training side; so it lives at the top of the package and imports transformers only when parsing.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from .errors import InputError

logger = logging.getLogger("medheads")


def suggestion(name: str, valid: Iterable[str], prefix: str = "") -> str:
    """`" (did you mean '--learning_rate'?)"` for the closest valid name, or `""`."""
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


def _value_to_flags(key: str, value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [f"--{key}", *(str(item) for item in value)]
    # `--key=value`: a value like "-1,-2" must not be read as a flag
    text = str(value).lower() if isinstance(value, bool) else json.dumps(value) if isinstance(value, dict) \
        else str(value)
    return [f"--{key}={text}"]


def json_to_flags(path: str | os.PathLike, known: Iterable[str] | None = None) -> list[str]:
    """The command-line flags a JSON argument file stands for (`{"num_train_epochs": 3}` -> `--num_train_epochs=3`),
    so flags given after the file can override its values. With `known` (the valid argument names), an unknown key is
    an `InputError` naming the file, the key and the closest valid name."""
    try:
        values = json.loads(Path(path).read_text())
    except OSError as error:
        raise InputError(f"argument file {path} cannot be read: {error.strerror or error}") from None
    except json.JSONDecodeError as error:
        raise InputError(f"argument file {path} is not valid JSON: {error}") from None
    if not isinstance(values, dict):
        raise InputError(f"argument file {path} must hold one JSON object of argument names and values")
    if known is not None:
        known = set(known)
        for key in values:
            if key not in known:
                raise InputError(f"argument file {path}: unknown key {key!r}{suggestion(key, known)}; "
                                 "see --help for the valid names")
    flags: list[str] = []
    for key, value in values.items():
        flags += _value_to_flags(key, value)
    return flags


def is_argument_file(argv: Sequence[str]) -> bool:
    return bool(argv) and str(argv[0]).endswith(".json") and not str(argv[0]).startswith("-")


class ArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` for the commands that take plain flags (export, predict, bootstrap-ci, ...): every
    error is one `InputError` line (an unknown flag with the closest valid one suggested), never usage + exit."""

    def error(self, message: str):
        unknown = re.match(r"unrecognized arguments: (.*)", message)
        if unknown:
            first = unknown.group(1).split()[0]
            name = first.split("=", 1)[0]
            if name.startswith("-"):
                valid = [option for action in self._actions for option in action.option_strings]
                raise InputError(f"unknown flag {name}{suggestion(name, valid)}; see --help for the valid flags")
            raise InputError(f"unexpected argument {first!r}; see --help")
        raise InputError(message)


def make_parser(dataclass_types, prog: str | None = None, description: str | None = None):
    """An `HfArgumentParser` whose errors raise `InputError` (one line) instead of printing usage and exiting."""
    from transformers import HfArgumentParser

    class Parser(HfArgumentParser):
        def error(self, message: str):  # argparse: bad value, missing required flag, invalid choice, ...
            # "--output_dir/--output-dir" -> "--output_dir": HfArgumentParser's dashed aliases are noise here
            raise InputError(re.sub(r"(--\w+)/--[\w-]+", r"\1", message))

    return Parser(dataclass_types, prog=prog, description=description)


def _known_names(parser) -> tuple[set[str], set[str]]:
    """(argument names a JSON file may use, long flags without the dashes)."""
    dests = {action.dest for action in parser._actions if action.dest != "help"}
    flags = {option[2:] for action in parser._actions for option in action.option_strings if option.startswith("--")}
    return dests, flags


def auto_learning_rate_flags(args: list[str]) -> list[str]:
    """`--learning_rate auto` (or `=auto`, also from a JSON file) becomes `--auto_learning_rate true`: the training
    commands then run the learning-rate range test first and train at its suggestion."""
    out, i = [], 0
    while i < len(args):
        arg = args[i]
        if arg == "--learning_rate" and i + 1 < len(args) and args[i + 1].lower() == "auto":
            out += ["--auto_learning_rate", "true"]
            i += 2
            continue
        out += ["--auto_learning_rate", "true"] if arg.lower() == "--learning_rate=auto" else [arg]
        i += 1
    return out


def parse_args(dataclass_types, argv: Sequence[str] | None = None, prog: str | None = None,
               description: str | None = None) -> tuple:
    """Parse `argv` (default `sys.argv[1:]`) into instances of `dataclass_types`. A first argument ending in `.json`
    is a file of arguments; flags after it override its values. Every problem is one `InputError`."""
    parser = make_parser(dataclass_types, prog=prog, description=description)
    argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    dests, flags = _known_names(parser)
    if is_argument_file(argv):
        argv = json_to_flags(argv[0], known=dests) + argv[1:]
    if "auto_learning_rate" in dests:
        argv = auto_learning_rate_flags(argv)
    _check_unknown(parser, argv, flags)
    try:
        *parsed, remaining = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    except InputError:
        raise
    except ValueError as error:  # a dataclass' __post_init__ refusing a combination (TrainingArguments does)
        raise InputError(str(error).strip().splitlines()[0]) from None
    _raise_unknown(remaining, flags)
    return tuple(parsed)


def _raise_unknown(remaining: Sequence[str], flags: set[str]) -> None:
    if not remaining:
        return
    unknown = next((arg for arg in remaining if arg.startswith("-")), None)
    if unknown is None:
        raise InputError(f"unexpected argument {remaining[0]!r} (an argument file, if any, must come first)")
    name = unknown.lstrip("-").split("=", 1)[0]
    raise InputError(f"unknown flag {unknown.split('=', 1)[0]}{suggestion(name, flags, '--')}; "
                     "see --help for the valid flags")


def _check_unknown(parser, argv: list[str], flags: set[str]) -> None:
    """Report a mistyped flag first: argparse would otherwise complain about a missing required flag instead (the
    flag the user meant to give may be the one that is missing)."""
    required = [action for action in parser._actions if action.required]
    for action in required:
        action.required = False
    try:
        _, remaining = parser.parse_known_args(args=argv)
    finally:
        for action in required:
            action.required = True
    _raise_unknown(remaining, flags)


def explicit_keys(argv: Sequence[str] | None) -> set[str]:
    """The argument names the user gave (as flags or in the JSON file), so defaults can depend on them."""
    argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    if is_argument_file(argv):
        try:
            argv = json_to_flags(argv[0]) + argv[1:]
        except InputError:
            return set()  # parse_args reports the unreadable file
    keys = set()
    for arg in argv:
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0].replace("-", "_")
            keys.add(name[3:] if name.startswith("no_") else name)
    return keys


def run_command(function: Callable[[], object], prog: str) -> int:
    """Run a command's work; an `InputError` prints ONE line `PROG: error: ...` (no traceback) and gives its exit
    status (2). `--help` (argparse's exit) returns its status instead of leaving the process."""
    try:
        function()
    except InputError as error:
        logger.debug("input error", exc_info=True)
        message = " ".join(str(error).split("\n")) if str(error) else type(error).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return getattr(error, "exit_code", 2)
    except SystemExit as exit_:  # --help, --version
        return exit_.code if isinstance(exit_.code, int) else 0
    return 0


__all__ = ["ArgumentParser", "suggestion", "json_to_flags", "auto_learning_rate_flags", "is_argument_file", "make_parser", "parse_args", "explicit_keys",
           "run_command"]
