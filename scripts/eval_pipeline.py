"""Score a trained folder's shipped pipeline where users meet it: a fresh process in which `import medheads` fails.

    python scripts/eval_pipeline.py ner  MODEL_DIR TEST_FILE [--sentences_per_text 40] [--strategies first simple]
    python scripts/eval_pipeline.py text MODEL_DIR [--split test]

`ner`: the test words are detokenized into raw sentences (gold entities kept as character spans), a child process
without medheads runs `pipeline("ner", model=MODEL_DIR, trust_remote_code=True)` on them with a default call (and
each strategy in --strategies), and on documents of --sentences_per_text sentences joined into one text, and the
exact character-span P/R/F1 is printed next to the word-level F1 the training script wrote (all_results.json).

`text`: the run's own split (rebuilt from the arguments in MODEL_DIR/metrics.json) goes through the default
`pipeline("text-classification", model=MODEL_DIR, trust_remote_code=True)` call in the child, and through the
model's `predict_labels` here; the script prints both subset accuracies and how many decisions agree.

Prints one JSON object (and writes it to MODEL_DIR/pipeline_eval.json unless --no_write).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKER_FLAG = "--worker"


def worker(spec_file: str) -> None:
    """The user's side: medheads cannot be imported; only transformers and the folder's own code run."""
    sys.modules["medheads"] = None
    spec = json.loads(Path(spec_file).read_text())
    from transformers import pipeline

    try:
        import medheads  # noqa: F401

        blocked = False
    except ImportError:
        blocked = True
    pipe = pipeline(spec["task"], model=spec["model"], trust_remote_code=True)
    results = {"medheads_importable": not blocked, "pipeline_class": f"{type(pipe).__module__}.{type(pipe).__name__}",
               "runs": {}}
    for name, run in spec["runs"].items():
        started = time.perf_counter()
        output = pipe(run["texts"], batch_size=spec.get("batch_size", 16), **run.get("kwargs", {}))
        results["runs"][name] = {"output": json.loads(json.dumps(output, default=float)),
                                 "seconds": time.perf_counter() - started}
    Path(spec["out"]).write_text(json.dumps(results))


def run_worker(spec: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        spec = {**spec, "out": str(Path(tmp) / "out.json")}
        (Path(tmp) / "spec.json").write_text(json.dumps(spec))
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.run([sys.executable, __file__, WORKER_FLAG, str(Path(tmp) / "spec.json")], env=env,
                              cwd=tmp, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"eval_pipeline.py: error: the pipeline process failed:\n{proc.stderr[-3000:]}")
        result = json.loads(Path(spec["out"]).read_text())
    if result["medheads_importable"]:
        raise SystemExit("eval_pipeline.py: error: medheads was importable in the pipeline process")
    return result


def word_level_f1(model_dir: Path) -> dict:
    path = model_dir / "all_results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    return {key: results[key] for key in ("predict_f1", "eval_f1", "predict_pipeline_char_f1",
                                          "eval_pipeline_char_f1") if key in results}


def evaluate_ner(args) -> dict:
    from medheads.data import read_token_file
    from medheads.metrics import char_span_metrics, char_spans, detokenize

    sentences = read_token_file(args.test_file)
    if args.max_sentences:
        sentences = sentences[:args.max_sentences]
    words = [s["tokens"] for s in sentences]
    tags = [s["ner_tags"] for s in sentences]

    def texts_and_gold(per_text: int):
        texts, gold = [], []
        for first in range(0, len(words), per_text):
            text, spans = "", set()
            for sentence_words, sentence_tags in zip(words[first:first + per_text], tags[first:first + per_text]):
                text += " " if text else ""
                sentence, offsets = detokenize(sentence_words)
                spans |= char_spans(sentence_tags, offsets, shift=len(text))
                text += sentence
            texts.append(text)
            gold.append(spans)
        return texts, gold

    sentence_texts, sentence_gold = texts_and_gold(1)
    document_texts, document_gold = texts_and_gold(args.sentences_per_text)
    runs = {"sentences, default call": {"texts": sentence_texts},
            f"documents of {args.sentences_per_text} sentences, default call": {"texts": document_texts}}
    for strategy in args.strategies:
        runs[f"sentences, aggregation_strategy={strategy}"] = {
            "texts": sentence_texts, "kwargs": {"aggregation_strategy": strategy}}
    result = run_worker({"task": "ner", "model": str(args.model_dir), "runs": runs, "batch_size": args.batch_size})
    report = {"model_dir": str(args.model_dir), "test_file": str(args.test_file), "sentences": len(words),
              "documents": len(document_texts),
              "document_chars_mean": sum(map(len, document_texts)) / max(1, len(document_texts)),
              "pipeline_class": result["pipeline_class"], "training_script": word_level_f1(args.model_dir),
              "pipeline": {}}
    for name, run in result["runs"].items():
        gold = document_gold if name.startswith("documents") else sentence_gold
        predicted = [{(int(e["start"]), int(e["end"]), e["entity_group"]) for e in entities}
                     for entities in run["output"]]
        report["pipeline"][name] = {**char_span_metrics(gold, predicted), "seconds": round(run["seconds"], 1)}
    return report


def evaluate_text(args) -> dict:
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from medheads import FrozenEncoderMultiLabel
    from medheads.metrics import multilabel_metrics
    from medheads.training.text_classification import TextDataArguments, load_splits

    summary = json.loads((args.model_dir / "metrics.json").read_text())
    arguments = summary["arguments"]
    fields = TextDataArguments.__dataclass_fields__
    data_args = TextDataArguments(**{k: v for k, v in arguments.items() if k in fields and fields[k].init})
    rows = load_splits(data_args, multi_label=True, seed=arguments.get("seed", 42))[args.split]
    if args.max_texts:
        rows = rows[:args.max_texts]
    texts = [row["text"] for row in rows]

    model = FrozenEncoderMultiLabel.from_pretrained(args.model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    script_sets = []
    with torch.no_grad():
        for first in range(0, len(texts), args.batch_size):
            batch = tokenizer(texts[first:first + args.batch_size], padding=True, truncation=False,
                              return_tensors="pt", verbose=False)
            script_sets += [set(names) for names in model.predict_labels(**batch)]
    result = run_worker({"task": "text-classification", "model": str(args.model_dir), "batch_size": args.batch_size,
                         "runs": {"default call": {"texts": texts}}})
    pipeline_sets = [{row["label"] for row in decision} for decision in result["runs"]["default call"]["output"]]
    gold = np.array([[label in row["labels"] for label in labels] for row in rows], dtype=float)

    def as_matrix(sets):
        return np.array([[label in chosen for label in labels] for chosen in sets], dtype=float)

    script_metrics = multilabel_metrics(gold, as_matrix(script_sets), thresholds=0.5, label_names=labels)
    pipeline_metrics = multilabel_metrics(gold, as_matrix(pipeline_sets), thresholds=0.5, label_names=labels)
    all_results = json.loads((args.model_dir / "all_results.json").read_text())
    prefix = "predict" if args.split == "test" else "eval"
    return {"model_dir": str(args.model_dir), "split": args.split, "texts": len(texts),
            "pipeline_class": result["pipeline_class"],
            "training_script_subset_accuracy": all_results.get(f"{prefix}_subset_accuracy"),
            "predict_labels_subset_accuracy": script_metrics["subset_accuracy"],
            "pipeline_subset_accuracy": pipeline_metrics["subset_accuracy"],
            "predict_labels_micro_f1": script_metrics["micro_f1"], "pipeline_micro_f1": pipeline_metrics["micro_f1"],
            "identical_decisions": sum(a == b for a, b in zip(script_sets, pipeline_sets)),
            "seconds": round(result["runs"]["default call"]["seconds"], 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="eval_pipeline.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    ner = sub.add_parser("ner", help="character-span F1 of the ner pipeline on raw test sentences and documents")
    ner.add_argument("model_dir", type=Path)
    ner.add_argument("test_file", type=Path)
    ner.add_argument("--sentences_per_text", type=int, default=40)
    ner.add_argument("--strategies", nargs="*", default=["simple", "first", "average", "max"])
    ner.add_argument("--max_sentences", type=int, default=None)
    text = sub.add_parser("text", help="subset accuracy of the default text-classification call vs predict_labels")
    text.add_argument("model_dir", type=Path)
    text.add_argument("--split", default="test", choices=["test", "validation"])
    text.add_argument("--max_texts", type=int, default=None)
    for p in (ner, text):
        p.add_argument("--batch_size", type=int, default=16)
        p.add_argument("--no_write", action="store_true", help="do not write MODEL_DIR/pipeline_eval.json")
    args = parser.parse_args(argv)
    args.model_dir = args.model_dir.resolve()  # the child runs elsewhere: a relative folder would read as a Hub id
    if not (args.model_dir / "config.json").is_file():
        parser.error(f"{args.model_dir}: no config.json (pass a folder written by a medheads training command)")
    if args.kind == "ner" and not args.test_file.is_file():
        parser.error(f"{args.test_file}: no such file")
    report = evaluate_ner(args) if args.kind == "ner" else evaluate_text(args)
    print(json.dumps(report, indent=2))
    if not args.no_write:
        (args.model_dir / f"pipeline_eval_{args.kind}.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == WORKER_FLAG:
        worker(sys.argv[2])
    else:
        sys.exit(main())
