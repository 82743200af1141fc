"""MTSamples-6 levers on one encoder pass: pooling, layer, layer concatenation, head, class weighting.

The frozen recipe (`configs/text_mtsamples.json`) pools one layer one way; trying each choice through `train-text`
costs one 25-minute encoder pass each on a 2-core CPU. This script runs the frozen encoder once (the same model,
tokenizer and 512-token windows as `train-text`, through `FrozenEncoderMultiLabel._encode`), keeps the mean, max and
first-token (cls) pooling of every hidden layer, and then fits heads on those features in seconds.

Selection is honest: every setting (layer or layer concatenation, pooling, class weighting, ridge strength) is scored
by leave-one-out accuracy on the *training* split only (a ridge classifier's closed form: one SVD per setting); the
validation split is touched once, to report the chosen settings and the plain recipe's features with the same head
trainer, with bootstrap 95% CIs and paired differences.

    python scripts/mtsamples_levers.py encode --model_name_or_path "$MINILM" --output_dir outputs/mtsamples-levers
    python scripts/mtsamples_levers.py select --output_dir outputs/mtsamples-levers

`select` writes `levers.json` (every setting's CV accuracy, the chosen ones' validation numbers) and `levers.md`.
The label-noise ceiling (notes that appear verbatim under several specialties) is written by `ceiling`.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import numpy as np

CONFIG = "configs/text_mtsamples.json"
POOLINGS = ("mean", "max", "cls")


def _splits(train_file: str | None):
    from medheads.training.arguments import parse_args
    from medheads.training.text_classification import ARGUMENT_CLASSES, load_splits

    extra = ["--output_dir", "/tmp/mtsamples-levers-unused"] + (["--train_file", train_file] if train_file else [])
    model_args, data_args, training_args = parse_args(ARGUMENT_CLASSES, [CONFIG] + extra)
    return model_args, load_splits(data_args, False, training_args.seed)


def encode(args) -> None:
    import torch

    from medheads.training.text_classification import build_model, load_tokenizer, tokenize

    torch.set_num_threads(2)
    model_args, splits = _splits(args.train_file)
    model_args.model_name_or_path = args.model_name_or_path
    tokenizer = load_tokenizer(model_args)
    labels = sorted({row["label"] for row in splits["train"]})
    model = build_model(model_args, "encoder", "single_label_classification", dict(enumerate(labels))).eval()
    window = model.config.chunk_length
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    # MTSamples lists many notes under several specialties: each distinct text is encoded once
    texts = sorted({row["text"] for split in ("train", "validation") for row in splits[split]})
    ids = tokenize(tokenizer, texts, None)
    order = np.argsort([-len(x) for x in ids["input_ids"]])
    feats = None
    start = time.perf_counter()
    for b in range(0, len(order), args.batch_size):
        idx = order[b:b + args.batch_size]
        batch = tokenizer.pad({k: [ids[k][i] for i in idx] for k in ids}, return_tensors="pt")
        with torch.inference_mode():
            pooled, states, _ = model._encode(**batch, output_hidden_states=True)
        mask = batch["attention_mask"].bool().unsqueeze(-1)
        if feats is None:
            feats = np.zeros((len(texts), len(states), len(POOLINGS), states[0].shape[-1]), dtype=np.float32)
        for layer, h in enumerate(states):
            h = torch.where(mask, h, torch.zeros((), dtype=h.dtype))
            mean = h.sum(1) / mask.sum(1).clamp(min=1)
            mx = h.masked_fill(~mask, torch.finfo(h.dtype).min).amax(1)
            firsts, first_mask = h[:, ::window], mask[:, ::window].to(h.dtype)
            cls = firsts.sum(1) / first_mask.sum(1).clamp(min=1)
            feats[idx, layer] = torch.stack([mean, mx, cls], 1).numpy()
        # the last layer's mean pooling is train-text's feature (the plain recipe's), checked on every batch
        np.testing.assert_allclose(feats[idx, -1, 0], pooled.numpy(), rtol=1e-4, atol=1e-5)
        print(f"{min(b + args.batch_size, len(order))}/{len(order)} distinct notes, {time.perf_counter() - start:.0f} s",
              flush=True)
    position = {text: i for i, text in enumerate(texts)}
    result = {}
    for split in ("train", "validation"):
        rows = splits[split]
        result[f"{split}_features"] = feats[[position[row["text"]] for row in rows]]
        result[f"{split}_labels"] = np.array([labels.index(row["label"]) for row in rows])
    np.savez(out / "features.npz", labels=np.array(labels), **result)
    print(f"wrote {out / 'features.npz'}")


def _select_features(feats: np.ndarray, layers: tuple, poolings: tuple) -> np.ndarray:
    return np.concatenate([feats[:, layer, POOLINGS.index(p)] for layer in layers for p in poolings], axis=1)


ALPHAS = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6)


def _loo_accuracies(x, y, class_weight) -> dict[float, float]:
    """Leave-one-out accuracy of a ridge classifier on standardised features for every alpha, from one SVD
    (the closed form RidgeClassifierCV uses): cheap enough for every setting on a shared 2-core CPU."""
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit_transform(x)
    classes = np.unique(y)
    targets = np.where(y[:, None] == classes[None, :], 1.0, -1.0)
    weights = np.ones(len(y))
    if class_weight == "balanced":
        counts = np.bincount(np.searchsorted(classes, y), minlength=len(classes))
        weights = (len(y) / (len(classes) * counts))[np.searchsorted(classes, y)]
    sw = np.sqrt(weights)[:, None]
    xc = np.hstack([x, np.ones((len(x), 1))]) * sw  # intercept as a (weighted) column, penalised lightly
    u, sing, _ = np.linalg.svd(xc, full_matrices=False)
    ut_y = u.T @ (targets * sw)
    out = {}
    for alpha in ALPHAS:
        shrink = sing ** 2 / (sing ** 2 + alpha)
        fitted = u @ (shrink[:, None] * ut_y)
        leverage = (u ** 2) @ shrink
        loo = (targets * sw - fitted) / (1 - leverage)[:, None]  # LOO residuals of the weighted problem
        loo_pred = (targets * sw - loo) / sw
        out[alpha] = float((classes[loo_pred.argmax(1)] == y).mean())
    return out


def _fit(x, y, alpha, class_weight):
    from sklearn.linear_model import RidgeClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), RidgeClassifier(alpha=alpha, class_weight=class_weight)).fit(x, y)


def select(args) -> None:
    from medheads.metrics import accuracy_ci, accuracy_difference_ci

    out = Path(args.output_dir)
    data = np.load(out / "features.npz", allow_pickle=False)
    xtr, ytr, xva, yva = (data["train_features"], data["train_labels"], data["validation_features"],
                          data["validation_labels"])
    n_layers = xtr.shape[1]
    last = n_layers - 1
    layer_sets = {f"layer {k}": (k,) for k in range(1, n_layers)}
    layer_sets.update({"concat last 2": (last - 1, last), "concat last 4": tuple(range(last - 3, last + 1)),
                       "concat layers 1-6": tuple(range(1, n_layers))})
    pooling_sets = {"mean": ("mean",), "max": ("max",), "cls": ("cls",), "mean+max": ("mean", "max")}
    weights = {"none": None, "balanced": "balanced"}
    rows = []
    start = time.perf_counter()
    for lname, layers in layer_sets.items():
        for pname, pools in pooling_sets.items():
            x = _select_features(xtr, layers, pools)
            for wname, weight in weights.items():
                for alpha, acc in _loo_accuracies(x, ytr, weight).items():
                    rows.append({"layers": lname, "pooling": pname, "alpha": alpha, "class_weight": wname,
                                 "cv_accuracy": acc})
        print(f"{lname}: best so far {max(r['cv_accuracy'] for r in rows):.4f} ({time.perf_counter() - start:.0f} s)",
              flush=True)

    def best(**fixed):
        chosen = [r for r in rows if all(r[k] == v for k, v in fixed.items())]
        return max(chosen, key=lambda r: r["cv_accuracy"])

    def evaluate(setting):
        layers, pools = layer_sets[setting["layers"]], pooling_sets[setting["pooling"]]
        model = _fit(_select_features(xtr, layers, pools), ytr, setting["alpha"], weights[setting["class_weight"]])
        return model.predict(_select_features(xva, layers, pools))

    plain_setting = best(layers=f"layer {last}", pooling="mean", class_weight="none")
    levers = {
        "plain features (last layer, mean), ridge head": plain_setting,
        "+ class weighting only": best(layers=f"layer {last}", pooling="mean", class_weight="balanced"),
        "+ pooling chosen (last layer)": best(layers=f"layer {last}", class_weight="none"),
        "+ layer chosen (mean pooling)": best(pooling="mean", class_weight="none"),
        "all levers chosen together": best(),
    }
    plain_pred = evaluate(plain_setting)
    report = {}
    for name, setting in levers.items():
        pred = evaluate(setting)
        report[name] = {"setting": setting, "validation_accuracy": accuracy_ci(yva, pred, 1000, 0),
                        "difference_to_plain": accuracy_difference_ci(yva, plain_pred, pred, 1000, 0),
                        "predictions": pred.tolist()}
    # accuracy on the validation notes that appear verbatim under another specialty vs on the rest
    if args.train_file or Path(CONFIG).is_file():
        _, splits = _splits(args.train_file)
        copies = collections.defaultdict(set)
        for split in ("train", "validation"):
            for row in splits[split]:
                copies[" ".join(row["text"].lower().split())].add(row["label"])
        duplicated = np.array([len(copies[" ".join(r["text"].lower().split())]) > 1 for r in splits["validation"]])
        if len(duplicated) == len(yva):
            for r in report.values():
                pred = np.array(r["predictions"])
                r["accuracy_on_notes_with_a_copy_under_another_label"] = float((pred == yva)[duplicated].mean())
                r["accuracy_on_the_other_notes"] = float((pred == yva)[~duplicated].mean())
                r["notes_with_a_copy_under_another_label"] = int(duplicated.sum())
    (out / "levers.json").write_text(json.dumps({"labels": data["labels"].tolist(), "cv_grid": rows,
                                                 "chosen": report}, indent=2))
    lines = ["| lever | chosen on train (leave-one-out) | LOO accuracy (train) | validation accuracy (95% CI) | "
             "minus plain, paired (95% CI) | accuracy: notes with a verbatim copy under another label / the others |",
             "|---|---|---|---|---|---|"]
    for name, r in report.items():
        s, a, d = r["setting"], r["validation_accuracy"], r["difference_to_plain"]
        lines.append(f"| {name} | {s['layers']}, {s['pooling']}, ridge alpha={s['alpha']:g}, class weight {s['class_weight']} | "
                     f"{s['cv_accuracy']:.3f} | {a['value']:.3f} ({a['low']:.3f}-{a['high']:.3f}) | "
                     f"{d['value']:+.3f} ({d['low']:+.3f} to {d['high']:+.3f}) |"
                     + (f" {r['accuracy_on_notes_with_a_copy_under_another_label']:.3f} "
                        f"({r['notes_with_a_copy_under_another_label']} notes) / {r['accuracy_on_the_other_notes']:.3f} |"
                        if "accuracy_on_the_other_notes" in r else " |"))
    (out / "levers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def ceiling(args) -> None:
    """Notes that appear verbatim under several specialties: the best accuracy any text-only classifier can expect."""
    _, splits = _splits(args.train_file)

    def key(text):
        return " ".join(text.lower().split())

    copies = collections.defaultdict(list)
    for split in ("train", "validation"):
        for row in splits[split]:
            copies[key(row["text"])].append(row["label"])
    train_labels = collections.defaultdict(set)
    for row in splits["train"]:
        train_labels[key(row["text"])].add(row["label"])
    val = splits["validation"]
    in_groups = [row for row in val if len(set(copies[key(row["text"])])) > 1]
    in_train = [row for row in val if key(row["text"]) in train_labels]
    same_label_in_train = [row for row in in_train if row["label"] in train_labels[key(row["text"])]]
    expected = sum(collections.Counter(copies[key(r["text"])])[r["label"]] / len(copies[key(r["text"])]) for r in val)
    inside_train = collections.defaultdict(set)
    for row in splits["train"]:
        inside_train[key(row["text"])].add(row["label"])
    train_conflicts = [t for t, labs in inside_train.items() if len(labs) > 1]
    pairs = collections.Counter(tuple(sorted(set(copies[key(r["text"])]))) for r in in_groups)
    result = {
        "validation_notes": len(val),
        "validation_notes_with_a_verbatim_copy_under_another_label": len(in_groups),
        "validation_notes_whose_text_is_in_train": len(in_train),
        "of_those_with_the_same_label_in_train": len(same_label_in_train),
        "ceiling_label_drawn_from_the_copies": expected / len(val),
        "training_rows": len(splits["train"]),
        "distinct_training_texts": len(inside_train),
        "training_texts_with_several_labels_inside_train": len(train_conflicts),
        "training_rows_of_those_texts": sum(1 for r in splits["train"] if key(r["text"]) in set(train_conflicts)),
        "label_sets_of_the_validation_duplicates": {" | ".join(k): v for k, v in pairs.most_common()},
    }
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ceiling.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("step", choices=["encode", "select", "ceiling"])
    parser.add_argument("--model_name_or_path")
    parser.add_argument("--output_dir", default="outputs/mtsamples-levers")
    parser.add_argument("--train_file", help="the MTSamples CSV, if not where the config says")
    parser.add_argument("--batch_size", type=int, default=4)
    args = parser.parse_args(argv)
    if args.step == "encode" and not args.model_name_or_path:
        parser.error("encode needs --model_name_or_path")
    {"encode": encode, "select": select, "ceiling": ceiling}[args.step](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
