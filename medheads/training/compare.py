"""Train the same head on several encoders (e.g. the plain body and the domain-adapted one from `adapt-encoder`) with
one training command and its arguments, and write one comparison report (seed 001's plain vs adapted table).

    medheads compare-encoders --command train-text --encoders plain="$MINILM" adapted=outputs/minilm-mtsamples \\
        --output_dir outputs/compare-mtsamples -- configs/text_mtsamples.json

Everything after `--` is passed to the command for every encoder (a JSON argument file first, then flags);
`--model_name_or_path` and `--output_dir` are set per encoder (`<output_dir>/<name>`). A run already finished there
is read, not redone. Writes `<output_dir>/comparison.md` (every metric the runs share, side by side, with the
difference to the first encoder), `comparison.json` and `comparison.png` (the headline metrics as grouped bars).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from ..command_line import ArgumentParser

HEADLINE = ("accuracy", "f1", "macro_f1", "micro_f1", "weighted_f1", "subset_accuracy", "roc_auc", "loss")


def parse_encoders(values: Sequence[str]) -> dict[str, str]:
    encoders = {}
    for i, value in enumerate(values):
        name, sep, path = value.partition("=")
        if not sep:
            name, path = ("plain" if i == 0 else f"encoder{i}"), value
        if not name or not path:
            raise ValueError(f"--encoders {value!r}: write NAME=PATH (e.g. adapted=outputs/minilm-mtsamples)")
        if name in encoders:
            raise ValueError(f"--encoders names {name!r} twice")
        encoders[name] = path
    if len(encoders) < 2:
        raise ValueError("--encoders needs at least two encoders to compare (e.g. plain=PATH adapted=PATH)")
    return encoders


def comparison_table(results: dict[str, dict]) -> tuple[list[str], str]:
    """Markdown table of the numeric eval_/predict_ metrics every run has, first run's values as the reference:
    headline metrics first; label supports (counts, the same for every encoder) left out."""
    names = list(results)
    shared = set.intersection(*(set(k for k, v in r.items() if isinstance(v, (int, float))) for r in results.values()))
    keys = [k for k in shared if k.startswith(("eval_", "predict_")) and "_support_" not in k and not k.endswith(
        ("_runtime", "_samples_per_second", "_steps_per_second", "_samples", "_epoch"))]
    # the headline metrics (accuracy, F1, subset accuracy ...) first, then per-label and untuned-threshold rows
    keys.sort(key=lambda k: (k.split("_", 1)[1] not in HEADLINE, k))
    header = "| metric | " + " | ".join(names) + " | " + " | ".join(f"{n} - {names[0]}" for n in names[1:]) + " |"
    lines = [header, "|" + "---|" * (1 + 2 * len(names) - 1)]
    for key in keys:
        values = [float(results[n][key]) for n in names]
        lines.append(f"| {key} | " + " | ".join(f"{v:.4f}" for v in values) + " | "
                     + " | ".join(f"{v - values[0]:+.4f}" for v in values[1:]) + " |")
    return keys, "\n".join(lines)


def plot_comparison(results: dict[str, dict], keys: Sequence[str], path) -> Path:
    import numpy as np

    from ..plots import _figure, _save

    shown = [k for k in keys if k.split("_", 1)[1] in HEADLINE and not k.endswith("loss")][:8]
    figure = _figure(max(5.0, 1.2 * len(shown) + 2), 4.0)
    ax = figure.add_subplot(1, 1, 1)
    width = 0.8 / len(results)
    x = np.arange(len(shown))
    for i, (name, result) in enumerate(results.items()):
        values = [float(result[k]) for k in shown]
        bars = ax.bar(x + i * width, values, width, label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(x + width * (len(results) - 1) / 2, shown, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title("Same head, different encoder bodies")
    ax.legend(fontsize=8)
    return _save(figure, path)


def main(argv: Sequence[str] | None = None, prog: str = "medheads compare-encoders") -> int:
    from .cli import COMMANDS

    argv = list(sys.argv[1:] if argv is None else argv)
    passed: list[str] = []
    if "--" in argv:
        index = argv.index("--")
        argv, passed = argv[:index], argv[index + 1:]
    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--command", required=True, choices=["train-ner", "train-text", "train-image"])
    parser.add_argument("--encoders", nargs="+", required=True, help="NAME=PATH for each encoder (two or more)")
    parser.add_argument("--output_dir", required=True)
    args = parser.parse_args(argv)
    try:
        encoders = parse_encoders(args.encoders)
    except ValueError as error:
        parser.error(str(error))
    for flag in ("--model_name_or_path", "--output_dir"):
        if any(a == flag or a.startswith(flag + "=") for a in passed):
            parser.error(f"{flag} is set per encoder: remove it from the arguments after --")
    module, function, _ = COMMANDS[args.command]
    entry = getattr(importlib.import_module(module), function)
    out = Path(args.output_dir)
    results = {}
    for name, path in encoders.items():
        run_dir = out / name
        if not (run_dir / "all_results.json").is_file():
            status = entry(passed + ["--model_name_or_path", path, "--output_dir", str(run_dir)],
                           prog=f"{prog} ({name})")
            if status:
                return int(status)
        results[name] = json.loads((run_dir / "all_results.json").read_text())
    keys, table = comparison_table(results)
    plot = plot_comparison(results, keys, out / "comparison.png")
    lines = [f"# {args.command}: the same head on {len(encoders)} encoders", "",
             "| name | encoder | run folder |", "|---|---|---|"]
    lines += [f"| {name} | `{path}` | `{out / name}` |" for name, path in encoders.items()]
    lines += ["", f"Arguments for every run: `{' '.join(passed)}`", "", table, "", f"![comparison]({plot.name})", ""]
    for name in encoders:
        pngs = sorted((out / name).glob("*.png"))
        if pngs:
            lines.append(f"{name}: " + ", ".join(f"[{p.name}]({name}/{p.name})" for p in pngs))
    (out / "comparison.md").write_text("\n".join(lines) + "\n")
    (out / "comparison.json").write_text(json.dumps({"encoders": encoders, "arguments": passed,
                                                     "results": results}, indent=2))
    print(table)
    return 0


__all__ = ["parse_encoders", "comparison_table", "plot_comparison", "main"]
