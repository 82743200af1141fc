"""Benchmark 6: deployed inference through the pipelines on raw real inputs, medheads (layer k, ONNX int8) vs the
stock transformers pipeline with the stock model on the same encoder (fp32 PyTorch).

Both sides are `transformers.pipeline(...)` objects called on the same list of raw inputs with the same
`batch_size`, so tokenization / image preprocessing, padding, the model and post-processing are all timed: what a
user running the pipeline gets. Sides alternate from repeat to repeat in one process (medians).

* NER: JNLPBA devel sentences as raw text (words joined by spaces). Stock: `BertForTokenClassification` (all 6
  MiniLM layers). medheads: `HiddenLayerTokenClassifier` reading layer k, exported by `medheads export --int8`.
  Also timed for the decomposition: the medheads PyTorch fp32 model (layer k) and its ONNX fp32 graph. Every medheads
  side is loaded from its folder (`pipeline(task, model=FOLDER, trust_remote_code=True)`), so it runs the model's own
  pipeline (length-sorted batches, whole words) as a user's call does.
  Both NER models are trained here first (`medheads train-ner`, the same recipe for both: the first
  `ner_train_sentences` JNLPBA training sentences, `ner_train_epochs` epoch(s), lr `ner_learning_rate`, batch 16, every
  sub-token labelled; reused when the work folder already holds them): the medheads model reads layer k, the stock
  side's model reads the last layer, and its weights are loaded into a `BertForTokenClassification`, which is the same
  network. `--ner_model` / `--ner_stock_model` pass folders trained elsewhere instead; `--ner_train_sentences 0`
  keeps random heads (speed only). Span F1 on raw devel sentences is measured for both sides through the pipelines
  (character spans of `aggregation_strategy="first"`, the word-level decision the training scripts train for,
  against the gold spans), for the medheads model in PyTorch fp32, ONNX fp32 and ONNX int8.
* multi-label text: ROCOv2 captions. Stock: `BertForSequenceClassification` (`problem_type=multi_label_classification`,
  the 18 `cuis_manual` labels). medheads: `FrozenEncoderMultiLabel` (mean pooling, MLP 256) ONNX int8. Random heads
  (speed only; the decisions of int8 and fp32 medheads are compared).
* image: PneumoniaMNIST `val` images (28x28 grayscale). Both on the same ViT backbone (the scratch recipe: width 128,
  4 layers, patch 4, 28 px, random weights). Stock: `ViTForImageClassification`. medheads: `ViTPatchClassifier`
  (`patch` head) ONNX int8.

ONNX Runtime and torch both get the same thread count (`common.set_threads`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks import common

DEFAULTS = dict(encoder=None, data_dir=None, ner_model=None, ner_stock_model=None, ner_layer=3,
                ner_train_sentences=2000, ner_train_epochs=1.0, ner_learning_rate=2e-4, n_sentences=256,
                n_quality=2000, n_captions=256, n_images=512, batch_size=32, repeats=5, tasks=["ner", "text", "image"],
                ner_extra_models=[""], work_dir=None)
TARGETS = {"ner": 4.0, "text": 2.5, "image": 2.0}


def onnx_pipeline(task: str, folder: Path, variant: str, batch_size: int):
    from transformers import pipeline

    return pipeline(task, model=str(folder), trust_remote_code=True, batch_size=batch_size,
                    model_kwargs={"onnx_variant": variant, "num_threads": torch.get_num_threads()})


def folder_pipeline(task: str, folder: Path, batch_size: int):
    """The pipeline a user gets from a saved medheads folder: the model's own pipeline class (custom_pipelines)."""
    from transformers import pipeline

    return pipeline(task, model=str(folder), trust_remote_code=True, batch_size=batch_size)


def torch_pipeline(task: str, model, processor, batch_size: int):
    """The stock side: transformers' own pipeline class for the task, as a user without medheads gets it. (Importing
    medheads makes its pipeline classes the task's implementation, stepping aside for other models but sharing its
    faster preprocessing with them; runs before 2026-12-01 07:25 UTC timed that class here, which understated the
    stock pipeline's time.)"""
    from transformers import (
        ImageClassificationPipeline, TextClassificationPipeline, TokenClassificationPipeline, pipeline,
    )

    classes = {"token-classification": TokenClassificationPipeline, "text-classification": TextClassificationPipeline,
               "image-classification": ImageClassificationPipeline}
    key = "image_processor" if task == "image-classification" else "tokenizer"
    return pipeline(task, model=model.eval(), batch_size=batch_size, pipeline_class=classes[task],
                    **{key: processor})


def time_sides(pipes: dict, inputs: list, repeats: int, **call_kwargs) -> dict[str, list[float]]:
    sides = {name: (lambda p=pipe: p(inputs, **call_kwargs)) for name, pipe in pipes.items()}
    warm = {name: (lambda p=pipe: p(inputs[:8], **call_kwargs)) for name, pipe in pipes.items()}
    return common.alternate(sides, repeats, warmups=warm)


def summarize(times: dict, count: int, unit: str, stock: str, fast: str, target: float) -> tuple[dict, dict]:
    sides = {name: {"seconds_per_pass": t, "median_seconds": common.median(t),
                    f"{unit}_per_second": count / common.median(t)} for name, t in times.items()}
    speedup = common.ratio(sides[stock]["median_seconds"], sides[fast]["median_seconds"])
    result = common.target_result(speedup, target)
    return sides, {"fast": fast, "slow": stock, "speedup": speedup, "target": target, "target_met": result["met"]}


# -- NER -------------------------------------------------------------------------------------------------------------
def gold_spans(words: list[str], tags: list[str]) -> set[tuple[int, int, str]]:
    """Character spans of the entities of a sentence written as `" ".join(words)` (conlleval-style: I- may open)."""
    spans, start, kind, offset, end = set(), None, None, 0, 0
    for word, tag in zip(words, tags):
        begin = offset
        if tag == "O" or tag.startswith("B-") or (tag.startswith("I-") and tag[2:] != kind):
            if kind is not None:
                spans.add((start, end, kind))
            start, kind = (begin, tag[2:]) if tag != "O" else (None, None)
        end = begin + len(word)
        offset = end + 1
    if kind is not None:
        spans.add((start, end, kind))
    return spans


def span_f1(pipe, sentences: list[dict], batch_size: int) -> dict:
    texts = [" ".join(s["tokens"]) for s in sentences]
    predicted = pipe(texts, batch_size=batch_size, aggregation_strategy="first")
    tp = n_pred = n_gold = 0
    for sentence, entities in zip(sentences, predicted):
        gold = gold_spans(sentence["tokens"], sentence["ner_tags"])
        pred = {(int(e["start"]), int(e["end"]), e["entity_group"]) for e in entities}
        tp, n_pred, n_gold = tp + len(gold & pred), n_pred + len(pred), n_gold + len(gold)
    precision, recall = tp / max(1, n_pred), tp / max(1, n_gold)
    return {"span_f1": 2 * precision * recall / max(1e-12, precision + recall), "precision": precision,
            "recall": recall, "sentences": len(sentences), "gold_spans": n_gold}


def stock_from_medheads(folder: str):
    """A `BertForTokenClassification` holding the weights of a medheads model that reads the last layer: the same
    network (encoder without pooler + dropout + linear), so the stock pipeline runs the trained model."""
    from transformers import AutoModelForTokenClassification

    import medheads  # noqa: F401

    source = AutoModelForTokenClassification.from_pretrained(folder)
    if source.layers != [source.config.encoder_config.num_hidden_layers]:
        raise ValueError(f"{folder} reads layers {source.layers}; the stock side needs a model on the last layer.")
    config = source.config.encoder_config.__class__.from_dict(source.config.encoder_config.to_dict())
    config.id2label, config.label2id = dict(source.config.id2label), dict(source.config.label2id)
    config.num_labels = len(config.id2label)
    from transformers import BertForTokenClassification

    stock = BertForTokenClassification(config)
    state = {f"bert.{k}": v for k, v in source.encoder.state_dict().items()}
    state.update({f"classifier.{k}": v for k, v in source.classifier.state_dict().items()})
    missing, unexpected = stock.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if "pooler" not in k]:
        raise ValueError(f"weights do not map onto BertForTokenClassification: {missing[:3]} {unexpected[:3]}")
    return stock.eval()


def train_ner_models(encoder, data_dir, layer: int, sentences: int, epochs: float, learning_rate: float,
                     work: Path) -> dict:
    """Train the medheads (layer k) and the stock-side (last layer) NER models with one recipe; reuse finished ones."""
    import time

    from medheads.training.ner import main as train_ner

    train_file = common.data_dir(data_dir) / "jnlpba" / "train.tsv"
    runs = {}
    for side, layers in (("medheads", layer), ("stock", -1)):
        folder = work / f"ner_trained_layer{layers}_{sentences}x{epochs:g}_lr{learning_rate:g}"
        started = time.time()
        reused = (folder / "model.safetensors").is_file()
        if not reused:
            argv = ["--model_name_or_path", str(encoder), "--hidden_layers", str(layers), "--train_file", str(train_file),
                    "--max_train_samples", str(sentences), "--num_train_epochs", str(epochs),
                    "--learning_rate", str(learning_rate), "--warmup_steps", "0.1", "--per_device_train_batch_size",
                    "16", "--label_all_tokens", "true", "--seed", "42", "--output_dir", str(folder), "--do_train",
                    "--save_strategy", "no", "--eval_strategy", "no", "--load_best_model_at_end", "false",
                    "--report_to", "none", "--disable_tqdm", "true", "--dataloader_pin_memory", "false"]
            if train_ner(argv, "medheads train-ner") != 0:
                raise RuntimeError(f"training the {side} NER model failed: medheads train-ner {' '.join(argv)}")
            common.set_threads()
        runs[side] = {"folder": str(folder), "layers": layers, "seconds": round(time.time() - started, 1),
                      "reused": reused}
    return {"data": "jnlpba/train.tsv", "sentences": sentences, "epochs": epochs, "learning_rate": learning_rate,
            "batch_size": 16, "label_all_tokens": True, "runs": runs}


def run_ner(encoder, data_dir, ner_model, ner_stock_model, ner_layer, n_sentences, n_quality, batch_size, repeats,
            work: Path, ner_train_sentences=0, ner_train_epochs=1.0, ner_learning_rate=2e-4,
            ner_extra_models=()) -> dict:
    """`ner_extra_models`: more trained medheads folders (other layers, same recipe) timed and scored as ONNX int8
    sides `medheads_layer<k>_onnx_int8` next to the main one, against the same stock side (no target)."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from medheads import HiddenLayerTokenClassifier
    from medheads.data import read_conll
    from medheads.deploy.export import export

    sentences = read_conll(common.data_dir(data_dir) / "jnlpba" / "devel.tsv")
    labels = sorted({tag for s in sentences for tag in s["ner_tags"]})
    id2label = dict(enumerate(labels))
    training = None
    if not (ner_model and ner_stock_model) and ner_train_sentences:
        training = train_ner_models(encoder, data_dir, ner_layer, ner_train_sentences, ner_train_epochs,
                                    ner_learning_rate, work)
        ner_model, ner_stock_model = training["runs"]["medheads"]["folder"], training["runs"]["stock"]["folder"]
    trained = bool(ner_model and ner_stock_model)
    if trained:
        medheads_dir = Path(ner_model)
        stock = stock_from_medheads(ner_stock_model)
        tokenizer = AutoTokenizer.from_pretrained(ner_stock_model)
    else:
        torch.manual_seed(0)
        tokenizer = AutoTokenizer.from_pretrained(encoder)
        medheads_dir = work / "ner_medheads"
        HiddenLayerTokenClassifier.from_encoder(encoder, hidden_layers=ner_layer, id2label=id2label) \
            .save_pretrained(medheads_dir)
        tokenizer.save_pretrained(medheads_dir)
        stock = AutoModelForTokenClassification.from_pretrained(
            encoder, id2label=id2label, label2id={v: k for k, v in id2label.items()}).eval()
    medheads_model = AutoModelForTokenClassification.from_pretrained(medheads_dir).eval()
    layer = max(medheads_model.layers)
    onnx_dir = work / "ner_onnx"
    texts = [" ".join(s["tokens"]) for s in sentences[:n_sentences]]
    report = export(medheads_dir, onnx_dir, int8=True, check_samples=texts[:64], overwrite=True)
    task = "token-classification"
    pipes = {"stock_fp32": torch_pipeline(task, stock, tokenizer, batch_size),
             "medheads_torch_fp32": folder_pipeline(task, medheads_dir, batch_size),
             "medheads_onnx_fp32": onnx_pipeline(task, onnx_dir, "fp32", batch_size),
             "medheads_onnx_int8": onnx_pipeline(task, onnx_dir, "int8", batch_size)}
    extra_sides = []
    for folder in [f for f in ner_extra_models if f]:
        k = max(AutoModelForTokenClassification.from_pretrained(folder).layers)
        name = f"medheads_layer{k}_onnx_int8"
        if name in pipes or k == layer:
            raise ValueError(f"{folder} reads layer {k}, as another NER side does: give one model per layer.")
        export(folder, work / f"ner_onnx_layer{k}", int8=True, check_samples=texts[:64], overwrite=True)
        pipes[name] = onnx_pipeline(task, work / f"ner_onnx_layer{k}", "int8", batch_size)
        extra_sides.append(name)
    times = time_sides(pipes, texts, repeats, aggregation_strategy="first")
    sides, comparison = summarize(times, len(texts), "sentences", "stock_fp32", "medheads_onnx_int8", TARGETS["ner"])
    extra = [summarize(times, len(texts), "sentences", "stock_fp32", name, None)[1]
             for name in ("medheads_torch_fp32", "medheads_onnx_fp32", *extra_sides)]
    result = {"settings": {"data": "jnlpba/devel.tsv", "sentences": len(texts), "layer": layer,
                           "encoder_layers": int(stock.config.num_hidden_layers), "batch_size": batch_size,
                           "repeats": repeats, "trained": trained, "medheads_model": str(medheads_dir),
                           "stock_model": ner_stock_model or encoder,
                           **({"extra_models": ", ".join(ner_extra_models)} if extra_sides else {})},
              "training": training,
              "sides": sides, "comparisons": [comparison] + extra,
              "export_check": {v: report["logits"][v]["max_abs_diff"] for v in report["variants"]}}
    if trained:
        quality_sentences = sentences[:n_quality]
        quality = {name: span_f1(pipes[name], quality_sentences, batch_size)
                   for name in ("stock_fp32", "medheads_torch_fp32", "medheads_onnx_fp32", "medheads_onnx_int8",
                                *extra_sides)}
        result["quality"] = quality
        drop = 100 * (quality["stock_fp32"]["span_f1"] - quality["medheads_onnx_int8"]["span_f1"])
        int8_cost = 100 * (quality["medheads_onnx_fp32"]["span_f1"] - quality["medheads_onnx_int8"]["span_f1"])
        result["quality_check"] = {"span_f1_drop_points": drop, "target_max_drop": 0.5, "met": bool(drop <= 0.5),
                                   "int8_cost_points": int8_cost}
        if extra_sides:
            result["quality_check"]["extra_span_f1_drop_points"] = {
                name: 100 * (quality["stock_fp32"]["span_f1"] - quality[name]["span_f1"]) for name in extra_sides}
    return result


# -- multi-label text ------------------------------------------------------------------------------------------------
def run_text(encoder, data_dir, n_captions, batch_size, repeats, work: Path) -> dict:
    import csv

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from medheads import FrozenEncoderMultiLabel
    from medheads.deploy.decisions import classify_scores
    from medheads.deploy.export import export

    with open(common.data_dir(data_dir) / "rocov2" / "rocov2_valid.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["caption"].strip()]
    labels = sorted({c for r in rows for c in r["cuis_manual"].split(";") if c})
    id2label = dict(enumerate(labels))
    rng = np.random.default_rng(1)
    texts = [rows[i]["caption"] for i in rng.choice(len(rows), size=min(n_captions, len(rows)), replace=False)]
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    torch.manual_seed(0)
    folder = work / "text_medheads"
    FrozenEncoderMultiLabel.from_encoder(encoder, pooling="mean", head_hidden_sizes=[256], id2label=id2label,
                                         problem_type="multi_label_classification").save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    stock = AutoModelForSequenceClassification.from_pretrained(
        encoder, id2label=id2label, label2id={v: k for k, v in id2label.items()},
        problem_type="multi_label_classification").eval()
    onnx_dir = work / "text_onnx"
    report = export(folder, onnx_dir, int8=True, check_samples=texts[:64], overwrite=True)
    task = "text-classification"
    medheads_model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    pipes = {"stock_fp32": torch_pipeline(task, stock, tokenizer, batch_size),
             "medheads_torch_fp32": folder_pipeline(task, folder, batch_size),
             "medheads_onnx_int8": onnx_pipeline(task, onnx_dir, "int8", batch_size)}
    times = time_sides(pipes, texts, repeats, top_k=None)
    sides, comparison = summarize(times, len(texts), "texts", "stock_fp32", "medheads_onnx_int8", TARGETS["text"])
    extra = summarize(times, len(texts), "texts", "stock_fp32", "medheads_torch_fp32", None)[1]
    decide = lambda outs: [classify_scores({r["label"]: r["score"] for r in o}, medheads_model.config)["labels"]
                           for o in outs]  # noqa: E731
    fp32 = decide(pipes["medheads_torch_fp32"](texts, top_k=None))
    int8 = decide(pipes["medheads_onnx_int8"](texts, top_k=None))
    agreement = float(np.mean([a == b for a, b in zip(fp32, int8)]))
    return {"settings": {"data": "rocov2/rocov2_valid.csv (random sample, seed 1)", "texts": len(texts),
                         "labels": len(labels), "batch_size": batch_size, "repeats": repeats, "trained": False},
            "sides": sides, "comparisons": [comparison, extra],
            "export_check": {v: report["logits"][v]["max_abs_diff"] for v in report["variants"]},
            "int8_decisions_equal_fp32": agreement}


# -- image -----------------------------------------------------------------------------------------------------------
def run_image(data_dir, n_images, batch_size, repeats, work: Path) -> dict:
    from PIL import Image
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    from medheads import ViTPatchClassifier, ViTPatchClassifierConfig
    from medheads.data import read_npz_images
    from medheads.deploy.export import export

    images, _ = read_npz_images(common.data_dir(data_dir) / "pneumoniamnist" / "pneumoniamnist.npz", "val")
    inputs = [Image.fromarray(a) for a in images[:n_images]]
    id2label = {0: "normal", 1: "pneumonia"}
    backbone = ViTConfig(image_size=28, patch_size=4, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                         intermediate_size=512, id2label=id2label, label2id={v: k for k, v in id2label.items()})
    torch.manual_seed(0)
    stock = ViTForImageClassification(backbone).eval()
    model = ViTPatchClassifier(ViTPatchClassifierConfig(backbone_config=backbone, head="patch",
                                                        patch_projection_size=64, id2label=id2label)).eval()
    model.backbone.load_state_dict({k[len("vit."):]: v for k, v in stock.state_dict().items()
                                    if k.startswith("vit.") and not k.startswith("vit.pooler")}, strict=False)
    processor = ViTImageProcessor(size={"height": 28, "width": 28}, do_convert_rgb=True,
                                  image_mean=[0.5] * 3, image_std=[0.5] * 3)
    folder = work / "image_medheads"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    onnx_dir = work / "image_onnx"
    report = export(folder, onnx_dir, int8=True, check_samples=inputs[:16], overwrite=True)
    task = "image-classification"
    pipes = {"stock_fp32": torch_pipeline(task, stock, processor, batch_size),
             "medheads_torch_fp32": folder_pipeline(task, folder, batch_size),
             "medheads_onnx_int8": onnx_pipeline(task, onnx_dir, "int8", batch_size)}
    times = time_sides(pipes, inputs, repeats)
    sides, comparison = summarize(times, len(inputs), "images", "stock_fp32", "medheads_onnx_int8", TARGETS["image"])
    extra = summarize(times, len(inputs), "images", "stock_fp32", "medheads_torch_fp32", None)[1]
    return {"settings": {"data": "pneumoniamnist.npz val split", "images": len(inputs), "batch_size": batch_size,
                         "repeats": repeats, "backbone": "ViT 28 px, patch 4, width 128, 4 layers (random weights)",
                         "trained": False},
            "sides": sides, "comparisons": [comparison, extra],
            "export_check": {v: report["logits"][v]["max_abs_diff"] for v in report["variants"]}}


def run(encoder=None, data_dir=None, ner_model=None, ner_stock_model=None, ner_layer=3, ner_train_sentences=2000,
        ner_train_epochs=1.0, ner_learning_rate=2e-4, n_sentences=256, n_quality=2000, n_captions=256, n_images=512,
        batch_size=32, repeats=5, tasks=("ner", "text", "image"), ner_extra_models=(),
        work_dir=None) -> dict:
    common.quiet_transformers()
    encoder = encoder or common.minilm_path()
    work = Path(work_dir or tempfile.mkdtemp(prefix="medheads-deploy-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    if "ner" in tasks:
        results["ner"] = run_ner(encoder, data_dir, ner_model, ner_stock_model, ner_layer, n_sentences, n_quality,
                                 batch_size, repeats, work, ner_train_sentences, ner_train_epochs, ner_learning_rate,
                                 tuple(ner_extra_models or ()))
    if "text" in tasks:
        results["text"] = run_text(encoder, data_dir, n_captions, batch_size, repeats, work)
    if "image" in tasks:
        results["image"] = run_image(data_dir, n_images, batch_size, repeats, work)
    import onnxruntime

    return {"name": "deploy_pipelines",
            "title": "Deployed inference through the pipelines: medheads (layer k, ONNX int8) vs the stock pipeline",
            "settings": {"encoder": encoder, "onnxruntime": onnxruntime.__version__, "threads": torch.get_num_threads(),
                         "timed": "pipe(list of raw inputs, batch_size=B): preprocessing, model, post-processing; "
                                  "sides alternate from repeat to repeat, medians", "work_dir": str(work),
                         "pid": os.getpid()},
            "datasets": results}


if __name__ == "__main__":
    common.main_for("benchmarks.deploy_pipelines", DEFAULTS)
