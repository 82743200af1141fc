"""`medheads bootstrap-ci RUN_DIR`: the main metrics of a finished run with bootstrap 95% confidence intervals, from
the per-item predictions the training commands write (resampling sentences or texts with replacement, 1000 times).

* NER (`train-ner`): `validation_predictions.tsv` / `test_predictions.tsv` -> span micro F1 (conlleval-compatible,
  as the run's own `f1`).
* Text (`train-text`): `validation_predictions.tsv` / `predict_results.txt` -> accuracy (multi-class), or subset
  accuracy and micro F1 (multi-label, at the run's thresholds).

Writes `confidence_intervals.json` in the run folder and prints one line per metric. With `--paired` and two NER
runs on the same data (e.g. softmax and CRF), also the paired bootstrap CI of F1(second) - F1(first).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..metrics import accuracy_ci, multilabel_ci, ner_f1_ci, ner_f1_difference_ci
from ..command_line import ArgumentParser


def _ner_file(path: Path):
    gold, pred = [], []
    for block in path.read_text(encoding="utf-8").strip("\n").split("\n\n"):
        rows = [line.split("\t") for line in block.split("\n") if line]
        gold.append([r[1] for r in rows])
        pred.append([r[2] for r in rows])
    return gold, pred


def _text_file(path: Path):
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [r["gold"] for r in rows], [r["prediction"] for r in rows]


def run_intervals(run_dir: str | Path, n_resamples: int = 1000, seed: int = 0) -> dict:
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    problem = (summary.get("arguments") or {}).get("problem_type")
    out: dict[str, dict] = {}
    for split, ner_name, text_name in (("validation", "validation_predictions.tsv", "validation_predictions.tsv"),
                                       ("test", "test_predictions.tsv", "predict_results.txt")):
        ner_path, text_path = run_dir / ner_name, run_dir / text_name
        header = text_path.read_text().split("\n", 1)[0] if text_path.is_file() else ""
        if header.startswith("index\tgold\tprediction"):
            gold, pred = _text_file(text_path)
            multi_label = problem == "multi_label_classification" or any(";" in g for g in gold + pred)
            if multi_label:
                labels = sorted({x for s in gold + pred for x in s.split(";") if x})
                index = {label: i for i, label in enumerate(labels)}
                y_true = np.zeros((len(gold), len(labels)), dtype=bool)
                y_pred = np.zeros_like(y_true)
                for i, (g, p) in enumerate(zip(gold, pred)):
                    y_true[i, [index[x] for x in g.split(";") if x]] = True
                    y_pred[i, [index[x] for x in p.split(";") if x]] = True
                for name, ci in multilabel_ci(y_true, y_pred, n_resamples, seed).items():
                    out[f"{split}_{name}"] = ci
            else:
                out[f"{split}_accuracy"] = accuracy_ci(gold, pred, n_resamples, seed)
        elif ner_path.is_file():
            out[f"{split}_span_f1"] = ner_f1_ci(*_ner_file(ner_path), n_resamples=n_resamples, seed=seed)
    return out


def main(argv: Sequence[str] | None = None, prog: str = "medheads bootstrap-ci") -> int:
    import argparse

    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", help="output folders of train-ner / train-text runs")
    parser.add_argument("--n_resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--paired", action="store_true",
                        help="two NER runs on the same sentences: CI of the span-F1 difference (second - first)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    for run_dir in args.run_dirs:
        if not Path(run_dir).is_dir():
            parser.error(f"{run_dir}: no such folder")
        intervals = run_intervals(run_dir, args.n_resamples, args.seed)
        if not intervals:
            parser.error(f"{run_dir}: no per-item predictions found (validation_predictions.tsv, test_predictions.tsv "
                         "or predict_results.txt): is it a finished train-ner / train-text run?")
        (Path(run_dir) / "confidence_intervals.json").write_text(json.dumps(intervals, indent=2))
        for name, ci in intervals.items():
            print(f"{run_dir}\t{name}\t{ci['value']:.4f}\t95% CI [{ci['low']:.4f}, {ci['high']:.4f}]\tn={ci['n']}")
    if args.paired:
        if len(args.run_dirs) != 2:
            parser.error("--paired compares exactly two runs")
        first, second = (Path(d) for d in args.run_dirs)
        for name in ("validation_predictions.tsv", "test_predictions.tsv"):
            if (first / name).is_file() and (second / name).is_file():
                gold, pred_a = _ner_file(first / name)
                gold_b, pred_b = _ner_file(second / name)
                if gold != gold_b:
                    parser.error(f"{name}: the two runs were scored on different sentences or tags")
                ci = ner_f1_difference_ci(gold, pred_a, pred_b, args.n_resamples, args.seed)
                print(f"{second.name} - {first.name}\t{name.split('_')[0]}_span_f1_difference\t{ci['value']:+.4f}\t"
                      f"95% CI [{ci['low']:+.4f}, {ci['high']:+.4f}]\tn={ci['n']}")
    return 0


__all__ = ["run_intervals", "main"]
