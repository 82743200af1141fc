"""How consistently a NER corpus annotates the same words, and where a finished run's errors fall.

No model is needed for the first part. Every entity string of the evaluation split (its exact word sequence) is
looked up in the training split: how often those words occur there, and how the training annotators tagged them
(the same entity with the same type, another type, or not as an entity of their own). An evaluation mention is

- **unseen**: the word sequence never occurs in train on its own (only inside longer entities, or not at all);
- **consistent**: it occurs in train and every occurrence there is the same entity with the same type;
- **train majority agrees** / **differs**: it occurs in train, at least one occurrence there is tagged otherwise
  (another type, not tagged, or tagged across its boundary), and the most frequent training decision for these words
  is / is not this mention's.

Occurrences inside a longer entity ("cancer" in "breast cancer") are a different context, not a disagreement, and
are left out of every comparison.

The **agreement rate** compares the two annotation sets where they can be compared: over every occurrence in the
evaluation split of a word sequence that train tags as an entity at least once, whether the evaluation annotation
(entity type, or no entity of its own) equals the training majority for those words. A model that learns train's
habit exactly disagrees with the evaluation gold on the remaining occurrences; it is a measured property of the
annotations, not a hard ceiling (context can justify a different decision).

With `--predictions RUN/validation_predictions.tsv` (or `test_predictions.tsv`; token, gold, predicted per line, as
`medheads train-ner` writes them) the run's errors are sorted: missed entities, type errors (right words, wrong
type), boundary errors (overlapping a predicted entity of the same type), spurious entities; and its recall on the
mentions of each kind.

    python scripts/ner_consistency.py ../shared/data/jnlpba/train.tsv ../shared/data/jnlpba/devel.tsv \
        --predictions outputs/jnlpba-crf-1ep/validation_predictions.tsv --output_dir outputs/jnlpba-consistency
"""
from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

from medheads.data import read_conll
from medheads.metrics import tag_spans

NONE = "(no entity)"  # no word of the sequence is tagged
INSIDE = "(inside a longer entity)"  # a different context, not a disagreement: left out of every comparison
PARTIAL = "(crosses an entity boundary)"
STATUSES = ("unseen", "consistent", "train majority agrees", "train majority differs")


def annotation_index(sentences: list[dict], strings: set[tuple[str, ...]]) -> dict[tuple[str, ...], Counter]:
    """For each word sequence in `strings`: Counter of how its occurrences in `sentences` are tagged: the entity type
    when the words are exactly one entity, else NONE, INSIDE or PARTIAL."""
    lengths = sorted({len(s) for s in strings})
    index: dict[tuple[str, ...], Counter] = defaultdict(Counter)
    for sentence in sentences:
        words = sentence["tokens"]
        spans = tag_spans(sentence["ner_tags"])
        entities = {(a, b): kind for a, b, kind in spans}
        for n in lengths:
            for start in range(len(words) - n + 1):
                key = tuple(words[start:start + n])
                if key in strings:
                    index[key][occurrence_tag(start, start + n, entities, spans, sentence["ner_tags"])] += 1
    return index


def occurrence_tag(start: int, end: int, entities: dict, spans: list, tags: list[str]) -> str:
    if (start, end) in entities:
        return entities[(start, end)]
    if any(a <= start and end <= b for a, b, _ in spans):
        return INSIDE
    return NONE if all(tag == "O" for tag in tags[start:end]) else PARTIAL


def standalone(counter: Counter | None) -> Counter:
    return Counter({k: v for k, v in (counter or {}).items() if k != INSIDE})


def mention_status(key: tuple[str, ...], kind: str, train_index: dict) -> str:
    seen = standalone(train_index.get(key))
    if not seen:
        return "unseen"
    if set(seen) == {kind}:
        return "consistent"
    return "train majority agrees" if majority(seen) == kind else "train majority differs"


def majority(counter: Counter) -> str | None:
    counter = standalone(counter)
    return sorted(counter.items(), key=lambda item: (-item[1], item[0]))[0][0] if counter else None


def consistency(train: list[dict], evaluation: list[dict]) -> dict:
    train_strings = {tuple(s["tokens"][a:b]) for s in train for a, b, _ in tag_spans(s["ner_tags"])}
    eval_mentions = [(tuple(s["tokens"][a:b]), kind) for s in evaluation for a, b, kind in tag_spans(s["ner_tags"])]
    eval_strings = {key for key, _ in eval_mentions}
    train_index = annotation_index(train, eval_strings | train_strings)
    status = Counter(mention_status(key, kind, train_index) for key, kind in eval_mentions)
    by_type: dict[str, Counter] = defaultdict(Counter)
    for key, kind in eval_mentions:
        by_type[kind][mention_status(key, kind, train_index)] += 1

    # agreement where both splits can be compared: word sequences train tags as an entity at least once
    comparable = {key for key in train_strings if key in train_index}
    eval_index = annotation_index(evaluation, comparable)
    agree = total = 0
    disagreements: Counter = Counter()
    for key, tagged in eval_index.items():
        expected = majority(train_index[key])
        if expected is None:
            continue
        for kind, count in standalone(tagged).items():
            total += count
            if kind == expected:
                agree += count
            else:
                disagreements[(expected, kind)] += count
    examples = sorted(((sum(standalone(eval_index[k]).values()), k) for k in eval_index
                       if majority(train_index[k]) is not None and standalone(eval_index[k])
                       and set(standalone(eval_index[k])) != {majority(train_index[k])}),
                      reverse=True)[:15]
    return {
        "evaluation_mentions": len(eval_mentions),
        "mention_status": dict(status),
        "mention_status_share": {k: v / max(1, len(eval_mentions)) for k, v in status.items()},
        "mention_status_by_type": {k: dict(v) for k, v in sorted(by_type.items())},
        "comparable_occurrences": total,
        "agreement_rate": agree / max(1, total),
        "disagreements_train_majority_vs_eval": [
            {"train_majority": a, "evaluation": b, "occurrences": n} for (a, b), n in disagreements.most_common(12)],
        "examples": [{"words": " ".join(k), "train": dict(train_index[k]), "evaluation": dict(eval_index[k])}
                     for _, k in examples],
    }, train_index


def read_predictions(path: Path) -> list[dict]:
    sentences, words, gold, pred = [], [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if words:
                sentences.append({"tokens": words, "gold": gold, "pred": pred})
            words, gold, pred = [], [], []
            continue
        parts = line.split("\t")
        if len(parts) < 3:
            raise SystemExit(f"{path}: expected 'token<TAB>gold<TAB>predicted' lines, got {line!r}")
        words.append(parts[0])
        gold.append(parts[1])
        pred.append(parts[2])
    if words:
        sentences.append({"tokens": words, "gold": gold, "pred": pred})
    return sentences


def error_analysis(predictions: list[dict], train_index: dict) -> dict:
    kinds: Counter = Counter()
    found: dict[str, Counter] = defaultdict(Counter)
    spurious = 0
    for sentence in predictions:
        gold = tag_spans(sentence["gold"])
        pred = tag_spans(sentence["pred"])
        pred_set = set(pred)
        for a, b, kind in gold:
            status = mention_status(tuple(sentence["tokens"][a:b]), kind, train_index)
            found[status]["mentions"] += 1
            if (a, b, kind) in pred_set:
                kinds["correct"] += 1
                found[status]["correct"] += 1
                continue
            overlapping = [p for p in pred if p[0] < b and a < p[1]]
            if any((p[0], p[1]) == (a, b) for p in overlapping):
                kinds["type error (right words)"] += 1
            elif any(p[2] == kind for p in overlapping):
                kinds["boundary error (same type)"] += 1
            elif overlapping:
                kinds["boundary and type error"] += 1
            else:
                kinds["missed (no overlapping prediction)"] += 1
        for a, b, _ in pred:
            if not any(g[0] < b and a < g[1] for g in gold):
                spurious += 1
    gold_total = sum(kinds.values())
    errors = gold_total - kinds["correct"]
    return {
        "gold_mentions": gold_total,
        "outcome": dict(kinds),
        "error_share": {k: v / max(1, errors) for k, v in kinds.items() if k != "correct"},
        "spurious_predictions_without_overlap": spurious,
        "recall_by_status": {k: {"mentions": v["mentions"], "recall": v["correct"] / max(1, v["mentions"])}
                             for k, v in found.items()},
    }


def render(report: dict) -> str:
    c = report["consistency"]
    lines = [f"# Annotation consistency: {report['train']} -> {report['evaluation']}", "",
             f"{c['evaluation_mentions']:,} entity mentions in the evaluation split.", "",
             "| mention | count | share |", "|---|---|---|"]
    for key in STATUSES:
        lines.append(f"| {key} | {c['mention_status'].get(key, 0):,} | {c['mention_status_share'].get(key, 0):.1%} |")
    lines += ["", f"Agreement with the training majority on {c['comparable_occurrences']:,} comparable occurrences: "
              f"**{c['agreement_rate']:.1%}**.", "", "| train majority | evaluation | occurrences |", "|---|---|---|"]
    lines += [f"| {d['train_majority']} | {d['evaluation']} | {d['occurrences']} |"
              for d in c["disagreements_train_majority_vs_eval"]]
    lines += ["", "Most frequent disagreeing strings:", ""]
    lines += [f"- `{e['words']}`: train {e['train']}, evaluation {e['evaluation']}" for e in c["examples"]]
    if "errors" in report:
        e = report["errors"]
        lines += ["", f"## Errors of `{report['predictions']}`", "", "| outcome | mentions | share of errors |",
                  "|---|---|---|"]
        for key, count in sorted(e["outcome"].items(), key=lambda item: -item[1]):
            share = "" if key == "correct" else f"{e['error_share'][key]:.1%}"
            lines.append(f"| {key} | {count:,} | {share} |")
        lines += ["", f"Predicted entities overlapping no gold entity: {e['spurious_predictions_without_overlap']:,}.",
                  "", "| mention | count | recall |", "|---|---|---|"]
        for key in STATUSES:
            if key in e["recall_by_status"]:
                row = e["recall_by_status"][key]
                lines.append(f"| {key} | {row['mentions']:,} | {row['recall']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train_file", type=Path, help="training split, CoNLL token<TAB>tag")
    parser.add_argument("eval_file", type=Path, help="evaluation split, CoNLL token<TAB>tag")
    parser.add_argument("--predictions", type=Path, help="a run's *_predictions.tsv on the evaluation split")
    parser.add_argument("--output_dir", type=Path, help="write consistency.json and consistency.md here")
    args = parser.parse_args(argv)
    for path in (args.train_file, args.eval_file, args.predictions):
        if path is not None and not path.is_file():
            parser.error(f"{path}: no such file")
    train, evaluation = read_conll(args.train_file), read_conll(args.eval_file)
    result, train_index = consistency(train, evaluation)
    report = {"train": str(args.train_file), "evaluation": str(args.eval_file), "consistency": result}
    if args.predictions is not None:
        predictions = read_predictions(args.predictions)
        gold_words = [s["tokens"] for s in evaluation if s["tokens"]]
        if [s["tokens"] for s in predictions] != gold_words:
            parser.error(f"{args.predictions} does not hold the sentences of {args.eval_file} in order")
        report["predictions"] = str(args.predictions)
        report["errors"] = error_analysis(predictions, train_index)
    text = render(report)
    print(text)
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        (args.output_dir / "consistency.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.output_dir / "consistency.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
