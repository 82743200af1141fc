"""`medheads bootstrap-ci RUN_DIR`: the main metrics of a finished run with bootstrap 95% confidence intervals, from
the per-item predictions the training commands write (resampling sentences or texts with replacement, 1000 times).

* NER (`train-ner`): `validation_predictions.tsv` / `test_predictions.tsv` -> span micro F1 (conlleval-compatible,
  as the run's own `f1`).
* Text (`train-text`): `validation_predictions.tsv` / `predict_results.txt` -> accuracy (multi-class), or subset
  accuracy and micro F1 (multi-label, at the run's thresholds).
* Image (`train-image`): `predict_results.tsv` (the test split) -> accuracy and ROC AUC (single-label; the AUC is
  one-vs-rest, averaged over classes when there are more than two), or subset accuracy and micro F1 (multi-label).

Writes `confidence_intervals.json` in the run folder and prints one line per metric. With `--paired` and two NER
runs on the same data (e.g. softmax and CRF), also the paired bootstrap CI of F1(second) - F1(first); with two
text runs on the same texts (e.g. plain and adapted encoder from `compare-encoders`), of accuracy (multi-class) or
subset accuracy and micro F1 (multi-label), second - first. The differences go to `paired_intervals.json` in the second
run's folder.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..metrics import (accuracy_ci, accuracy_difference_ci, bootstrap_ci, multilabel_ci, multilabel_difference_ci,
                       ner_f1_ci, ner_f1_difference_ci, roc_auc)
from ..command_line import ArgumentParser


def _ner_file(path: Path):
    gold, pred = [], []
    for block in path.read_text(encoding="utf-8").strip("\n").split("\n\n"):
        rows = [line.split("\t") for line in block.split("\n") if line]
        gold.append([r[1] for r in rows])
        pred.append([r[2] for r in rows])
    return gold, pred


def _text_file(path: Path, with_index: bool = False):
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    gold, pred = [r["gold"] for r in rows], [r["prediction"] for r in rows]
    return (gold, pred, [r["index"] for r in rows]) if with_index else (gold, pred)


def _is_text_file(path: Path) -> bool:
    if not path.is_file():
        return False
    with open(path, encoding="utf-8") as handle:
        return handle.readline().startswith("index\tgold\tprediction")


def _image_file(path: Path):
    """gold and predicted labels and the score rows of an image run's `predict_results.tsv`, or None if it is not
    one (a regression run's `gold` cells are numbers: the callers skip those)."""
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as handle:
        if not handle.readline().startswith("index\timage\tgold\tprediction\tscores"):
            return None
        handle.seek(0)
        rows = list(csv.DictReader(handle, delimiter="\t"))
    gold, pred = [r["gold"] for r in rows], [r["prediction"] for r in rows]
    scores = np.array([[float(v) for v in r["scores"].split(";")] for r in rows], dtype=float)
    return gold, pred, scores


def _image_intervals(run_dir: Path, n_resamples: int, seed: int) -> dict:
    read = _image_file(run_dir / "predict_results.tsv")
    if read is None:
        return {}
    gold, pred, scores = read
    if _problem_type(run_dir) == "multi_label_classification" or any(";" in g for g in gold + pred):
        y_true, y_pred = _label_matrices(gold, pred)
        return {f"test_{name}": ci for name, ci in multilabel_ci(y_true, y_pred, n_resamples, seed).items()}
    try:
        float(gold[0])
        return {}  # regression: no interval here
    except (ValueError, IndexError):
        pass
    out = {"test_accuracy": accuracy_ci(gold, pred, n_resamples, seed)}
    names = json.loads((run_dir / "config.json").read_text()).get("id2label", {}) \
        if (run_dir / "config.json").is_file() else {}
    classes = [names[k] for k in sorted(names, key=int)] if names else sorted(set(gold))
    if len(classes) == scores.shape[1] and set(gold) <= set(classes):
        y = np.array([classes.index(g) for g in gold])

        def auc(idx):  # NaN (left out by bootstrap_ci) on a resample holding one class
            value = roc_auc(y[idx], scores[idx])
            return np.nan if value is None else value

        out["test_roc_auc"] = bootstrap_ci(auc, len(y), n_resamples, seed=seed)
    return out


def _problem_type(run_dir: Path) -> str | None:
    summary = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    return (summary.get("arguments") or {}).get("problem_type")


def _label_matrices(gold: list[str], *preds: list[str]) -> list[np.ndarray]:
    """0/1 matrices of `;`-joined label strings over one shared label index (gold first, then each prediction)."""
    labels = sorted({x for column in (gold, *preds) for s in column for x in s.split(";") if x})
    index = {label: i for i, label in enumerate(labels)}
    matrices = []
    for column in (gold, *preds):
        matrix = np.zeros((len(column), len(labels)), dtype=bool)
        for i, s in enumerate(column):
            matrix[i, [index[x] for x in s.split(";") if x]] = True
        matrices.append(matrix)
    return matrices


def run_intervals(run_dir: str | Path, n_resamples: int = 1000, seed: int = 0) -> dict:
    run_dir = Path(run_dir)
    problem = _problem_type(run_dir)
    out: dict[str, dict] = {}
    for split, ner_name, text_name in (("validation", "validation_predictions.tsv", "validation_predictions.tsv"),
                                       ("test", "test_predictions.tsv", "predict_results.txt")):
        ner_path, text_path = run_dir / ner_name, run_dir / text_name
        if _is_text_file(text_path):
            gold, pred = _text_file(text_path)
            multi_label = problem == "multi_label_classification" or any(";" in g for g in gold + pred)
            if multi_label:
                y_true, y_pred = _label_matrices(gold, pred)
                for name, ci in multilabel_ci(y_true, y_pred, n_resamples, seed).items():
                    out[f"{split}_{name}"] = ci
            else:
                out[f"{split}_accuracy"] = accuracy_ci(gold, pred, n_resamples, seed)
        elif ner_path.is_file():
            out[f"{split}_span_f1"] = ner_f1_ci(*_ner_file(ner_path), n_resamples=n_resamples, seed=seed)
    out.update(_image_intervals(run_dir, n_resamples, seed))
    return out


def paired_intervals(first: str | Path, second: str | Path, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Paired bootstrap CIs of metric(second) - metric(first) for two runs scored on the same items: NER span F1,
    text accuracy / subset accuracy and micro F1, or single-label image accuracy. Raises ValueError when the runs were
    scored on different items."""
    first, second = Path(first), Path(second)
    out: dict[str, dict] = {}
    for split, ner_name, text_name in (("validation", "validation_predictions.tsv", "validation_predictions.tsv"),
                                       ("test", "test_predictions.tsv", "predict_results.txt")):
        if _is_text_file(first / text_name) and _is_text_file(second / text_name):
            gold, pred_a, index_a = _text_file(first / text_name, with_index=True)
            gold_b, pred_b, index_b = _text_file(second / text_name, with_index=True)
            if (gold, index_a) != (gold_b, index_b):
                raise ValueError(f"{text_name}: the two runs were scored on different texts or labels")
            problems = {_problem_type(first), _problem_type(second)}
            if "multi_label_classification" in problems or any(";" in g for g in gold + pred_a + pred_b):
                y_true, y_a, y_b = _label_matrices(gold, pred_a, pred_b)
                for name, ci in multilabel_difference_ci(y_true, y_a, y_b, n_resamples, seed).items():
                    out[f"{split}_{name}_difference"] = ci
            else:
                out[f"{split}_accuracy_difference"] = accuracy_difference_ci(gold, pred_a, pred_b, n_resamples, seed)
        elif (first / ner_name).is_file() and (second / ner_name).is_file() and not (
                _is_text_file(first / ner_name) or _is_text_file(second / ner_name)):
            gold, pred_a = _ner_file(first / ner_name)
            gold_b, pred_b = _ner_file(second / ner_name)
            if gold != gold_b:
                raise ValueError(f"{ner_name}: the two runs were scored on different sentences or tags")
            out[f"{split}_span_f1_difference"] = ner_f1_difference_ci(gold, pred_a, pred_b, n_resamples, seed)
    images = [_image_file(run / "predict_results.tsv") for run in (first, second)]
    if all(images):
        (gold, pred_a, _), (gold_b, pred_b, _) = images
        if gold != gold_b:
            raise ValueError("predict_results.tsv: the two runs were scored on different images or labels")
        if not any(";" in g for g in gold + pred_a + pred_b):
            out["test_accuracy_difference"] = accuracy_difference_ci(gold, pred_a, pred_b, n_resamples, seed)
    return out


def main(argv: Sequence[str] | None = None, prog: str = "medheads bootstrap-ci") -> int:
    import argparse

    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", help="output folders of train-ner / train-text / train-image runs")
    parser.add_argument("--n_resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--paired", action="store_true",
                        help="two runs on the same sentences or texts: CIs of the metric differences (second - first)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.paired and len(args.run_dirs) != 2:
        parser.error("--paired compares exactly two runs")
    for run_dir in args.run_dirs:
        if not Path(run_dir).is_dir():
            parser.error(f"{run_dir}: no such folder")
        intervals = run_intervals(run_dir, args.n_resamples, args.seed)
        if not intervals:
            parser.error(f"{run_dir}: no per-item predictions found (validation_predictions.tsv, test_predictions.tsv, "
                         "predict_results.txt or predict_results.tsv): is it a finished train-ner / train-text / "
                         "train-image run?")
        (Path(run_dir) / "confidence_intervals.json").write_text(json.dumps(intervals, indent=2))
        for name, ci in intervals.items():
            print(f"{run_dir}\t{name}\t{ci['value']:.4f}\t95% CI [{ci['low']:.4f}, {ci['high']:.4f}]\tn={ci['n']}")
    if args.paired:
        first, second = (Path(d) for d in args.run_dirs)
        try:
            differences = paired_intervals(first, second, args.n_resamples, args.seed)
        except ValueError as error:
            parser.error(str(error))
        if not differences:
            parser.error(f"--paired: {first} and {second} share no per-item prediction file of the same kind")
        (second / "paired_intervals.json").write_text(json.dumps(
            {"first": str(first), "second": str(second), "difference": "second - first", **differences}, indent=2))
        for name, ci in differences.items():
            print(f"{second.name} - {first.name}\t{name}\t{ci['value']:+.4f}\t"
                  f"95% CI [{ci['low']:+.4f}, {ci['high']:+.4f}]\tn={ci['n']}")
    return 0


__all__ = ["run_intervals", "paired_intervals", "main"]
