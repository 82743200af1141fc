"""`medheads`: one command for the whole workflow, installed by pip.

    medheads train-ner configs/ner_jnlpba.json --num_train_epochs 1
    medheads train-text --help
    medheads publish --model_dir outputs/ner --repo_id org/name --dry_run

Each subcommand is a module's `main(argv, prog) -> int`; the table below is the only place a command is named, so a
new subcommand is one line here. Modules are imported only when their command runs, so `medheads --help` is instant.

Every subcommand keeps one contract (`medheads.command_line`): `--help`; flags or a JSON file of arguments first
(flags after it override it); an input error - unknown flag or JSON key (with the closest valid name), bad value,
missing `--output_dir`, unusable data or model path - is ONE line `medheads <command>: error: ...` on stderr and exit
status 2, before any model is loaded. `medheads publish` exits 1 when the upload itself fails (the staged folder is
kept). `scripts/*.py` call `main` with their command name, so they behave identically.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

PROG = "medheads"

#: command -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train-ner": ("medheads.training.ner", "main",
                  "train a HiddenLayerTokenClassifier (NER on one hidden layer or a mix of layers)"),
    "train-text": ("medheads.training.text_classification", "main",
                   "train a FrozenEncoderMultiLabel (multi-label or multi-class text classification)"),
    "train-image": ("medheads.training.image_classification", "main",
                    "train a ViTPatchClassifier (chest X-ray and other image classification)"),
    "export": ("medheads.deploy.export", "main",
               "export a model folder to ONNX (fp32, --int8) that pipeline() loads without medheads"),
    "predict": ("medheads.deploy.predict", "main",
                "annotate a corpus (texts or images) with a model folder or ONNX export, resumable and sharded"),
    "find-lr": ("medheads.training.lr_finder", "main",
                "learning-rate range test for a training command (ner, text, image): plot and suggested rate"),
    "adapt-encoder": ("medheads.training.adapt_encoder", "main",
                      "continue masked-language-model pretraining of an encoder on domain text"),
    "compare-encoders": ("medheads.training.compare", "main",
                         "train the same head on several encoders (plain vs adapted) and write one comparison report"),
    "bootstrap-ci": ("medheads.training.confidence", "main",
                     "bootstrap 95% confidence intervals of a finished run's main metrics"),
    "publish": ("medheads.hub.publishing", "main",
                "stage a trained model folder with its model card and push it to the Hub"),
    "publish": ("medheads.hub.publishing", "main",
                "stage a trained model folder with its model card and push it to the Hub"),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"usage: {PROG} <command> [<args>] | {PROG} <command> ARGS.json [<overriding args>]", "",
             "Custom Hugging Face heads for medical text and images.", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_text}" for name, (_, _, help_text) in COMMANDS.items()]
    lines += ["", f"Run '{PROG} <command> --help' for a command's flags (every TrainingArguments flag for training)."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from .. import __version__

        print(f"{PROG} {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        print(f"{PROG}: error: unknown command {name!r}{hint}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    from ..command_line import run_command

    module, function, _ = COMMANDS[name]
    entry = getattr(importlib.import_module(module), function)
    prog = f"{PROG} {name}"
    status = {}
    # Every command keeps the contract even where its own code lets an InputError or argparse's exit through.
    failed = run_command(lambda: status.setdefault("code", entry(rest, prog=prog)), prog)
    return int(failed or status.get("code") or 0)


if __name__ == "__main__":
    sys.exit(main())
