"""`medheads`: one command for the whole workflow, installed by pip.

    medheads train-ner configs/ner_jnlpba.json --num_train_epochs 1
    medheads train-text --help
    medheads publish --model_dir outputs/ner --repo_id org/name --dry_run

Each subcommand is a module's `main(argv) -> int`; the table below is the only place a command is named, so a new
subcommand is one line here. Modules are imported only when their command runs, so `medheads --help` is instant.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

PROG = "medheads"

#: command -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train-ner": ("medheads.training.ner", "cli",
                  "train a HiddenLayerTokenClassifier (NER on one hidden layer or a mix of layers)"),
    "train-text": ("medheads.training.text_classification", "cli",
                   "train a FrozenEncoderMultiLabel (multi-label or multi-class text classification)"),
    "train-image": ("medheads.training.image_classification", "main",
                    "train a ViTPatchClassifier (chest X-ray and other image classification)"),
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
    module, function, _ = COMMANDS[name]
    entry = getattr(importlib.import_module(module), function)
    status = entry(rest, prog=f"{PROG} {name}")
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
