"""`medheads export MODEL_DIR OUTPUT_DIR [--int8]`: an ONNX folder that loads without medheads.

The folder holds `model.onnx` (fp32; `model_int8.onnx` too with `--int8`, dynamically quantized by ONNX Runtime),
the config (model type `<model type>-onnx`, `auto_map` pointing at the shipped `modeling_onnx.py`), the
tokenizer or image processor, and a README with the export check: ONNX logits against PyTorch logits on real
inputs of several lengths, and, given validation data, the quality of PyTorch / ONNX fp32 / ONNX int8.

What the graphs compute, exactly as PyTorch does:
- token classification: the encoder truncated to the deepest layer read, the layer(s) combined, the classifier;
  dynamic batch and sequence axes.
- text classification: input `[batch, windows, window]` (the runtime class splits texts longer than the model's
  window as `forward_features` does); every window is encoded, states pooled over all real tokens of all windows,
  then the MLP head. Dynamic batch, window count and window length.
- image classification: `[batch, 3, S, S]` at the model's `image_size` (the `patch` head reads a fixed token
  count); dynamic batch.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from ..command_line import ArgumentParser

logger = logging.getLogger("medheads")

HERE = Path(__file__).resolve().parent
RUNTIME_FILE = HERE / "modeling_onnx.py"
KINDS = {
    "HiddenLayerTokenClassifier": ("token", "AutoModelForTokenClassification", "MedheadsOnnxForTokenClassification",
                                   "token-classification"),
    "FrozenEncoderMultiLabel": ("text", "AutoModelForSequenceClassification", "MedheadsOnnxForSequenceClassification",
                                "text-classification"),
    "ViTPatchClassifier": ("image", "AutoModelForImageClassification", "MedheadsOnnxForImageClassification",
                           "image-classification"),
}
FP32_TOLERANCE = 1e-4
OPSET = 17


class ExportError(ValueError):
    """A problem with the export's input (folder, data), reported as one line."""


# -- graph wrappers ---------------------------------------------------------------------------------------------------
class TokenGraph(nn.Module):
    """The token classifier's scores per token. For a CRF model these are the emissions (the linear layer's scores):
    Viterbi and forward-backward are loops over the sequence, so the folder's runtime class runs the model's own CRF
    code on them (`LinearChainCRF.path_scores`, with the transitions from `config.crf_parameters`)."""

    def __init__(self, model, with_token_types: bool):
        super().__init__()
        self.model, self.with_token_types = model, with_token_types

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {"token_type_ids": token_type_ids} if self.with_token_types else {}
        crf, self.model.crf = self.model.crf, None
        try:
            return self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits
        finally:
            self.model.crf = crf


class TextGraph(nn.Module):
    """`FrozenEncoderMultiLabel.forward` on input already split into windows: `[batch, windows, window]`.

    Windows that are all padding are encoded too (PyTorch skips them); they add nothing to any pooling here because
    every pooling selects real tokens with `torch.where`, never by multiplying (a masked-out NaN cannot leak).
    """

    def __init__(self, model, with_token_types: bool):
        super().__init__()
        self.model, self.with_token_types = model, with_token_types

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        model = self.model
        batch, chunks, window = input_ids.shape
        kwargs = {"token_type_ids": token_type_ids.reshape(-1, window)} if self.with_token_types else {}
        flat_mask = attention_mask.reshape(-1, window)
        hidden = model.encoder(input_ids=input_ids.reshape(-1, window), attention_mask=flat_mask,
                               output_hidden_states=True, return_dict=True, **kwargs).hidden_states
        states = hidden[model.feature_index].reshape(batch, chunks * window, -1)
        mask = attention_mask.reshape(batch, chunks * window, 1) > 0
        pooling = model.config.pooling
        if pooling == "mean":
            total = torch.where(mask, states, torch.zeros_like(states)).sum(dim=1)
            pooled = total / mask.sum(dim=1).to(states.dtype).clamp(min=1.0)
        elif pooling == "max":
            pooled = states.masked_fill(~mask, torch.finfo(states.dtype).min).amax(dim=1)
        else:  # cls: the first token of every window holding text, averaged over those windows
            firsts = states.reshape(batch, chunks, window, -1)[:, :, 0]
            first_mask = mask.reshape(batch, chunks, window, 1)[:, :, 0]
            total = torch.where(first_mask, firsts, torch.zeros_like(firsts)).sum(dim=1)
            pooled = total / first_mask.sum(dim=1).to(states.dtype).clamp(min=1.0)
        return model.forward_head(pooled)


class ImageGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model(pixel_values=pixel_values).logits


# -- loading ----------------------------------------------------------------------------------------------------------
def load_medheads_model(model_dir: str | Path):
    """The PyTorch medheads model saved in `model_dir`, its kind and its preprocessor."""
    import medheads  # noqa: F401  (registers the Auto classes)
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ExportError(f"{model_dir} is not a model folder (no config.json): pass the output folder of a "
                          "medheads training command or a save_pretrained folder.")
    config = AutoConfig.from_pretrained(model_dir)
    name = next((n for n in KINDS if type(config).__name__ == f"{n}Config"), None)
    if name is None:
        raise ExportError(f"{model_dir} holds a {config.model_type!r} model, not a medheads model "
                          f"({', '.join(KINDS)}).")
    if not any((model_dir / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")):
        raise ExportError(f"{model_dir} has no weights (model.safetensors).")
    kind, auto_name, _, _ = KINDS[name]
    import transformers

    model = getattr(transformers, auto_name).from_pretrained(model_dir, dtype=torch.float32,
                                                              attn_implementation="eager").eval()
    try:
        processor = (AutoImageProcessor if kind == "image" else AutoTokenizer).from_pretrained(model_dir)
    except (OSError, ValueError) as error:
        what = "image processor" if kind == "image" else "tokenizer"
        raise ExportError(f"{model_dir} has no {what} ({error}); save it into the folder first.") from error
    return model, kind, processor


def _takes_token_types(model) -> bool:
    encoder = getattr(model, "encoder", None)
    return encoder is not None and "token_type_ids" in inspect.signature(encoder.forward).parameters


# -- export -----------------------------------------------------------------------------------------------------------
def export_graph(model, kind: str, path: Path) -> list[str]:
    """Write the fp32 ONNX graph; return its input names."""
    if kind == "image":
        size = int(model.config.image_size)
        channels = int(model.config.backbone_config.num_channels)
        wrapper, names = ImageGraph(model), ["pixel_values"]
        example = (torch.randn(2, channels, size, size),)
        axes = {"pixel_values": {0: "batch"}, "logits": {0: "batch"}}
    else:
        types = _takes_token_types(model)
        names = ["input_ids", "attention_mask"] + (["token_type_ids"] if types else [])
        # a padded example, so no "nothing is padded" shortcut is traced into the graph
        shape = (2, 2, 7) if kind == "text" else (2, 7)
        ids = torch.randint(5, 20, shape)
        mask = torch.ones_like(ids)
        mask[-1, ..., -3:] = 0
        example = (ids, mask) + ((torch.zeros_like(ids),) if types else ())
        if kind == "text":
            wrapper = TextGraph(model, types)
            seq_axes = {0: "batch", 1: "windows", 2: "window"}
        else:
            wrapper = TokenGraph(model, types)
            seq_axes = {0: "batch", 1: "sequence"}
        axes = {name: seq_axes for name in names}
        axes["logits"] = {0: "batch", 1: "sequence"} if kind == "token" else {0: "batch"}
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer flags the models' shape checks; the shapes they check are fixed (image) or checked at run time
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(wrapper.eval(), example, str(path), input_names=names, output_names=["logits"],
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False, do_constant_folding=True)
    return names


def head_matmuls(graph) -> list[str]:
    """Names of the MatMul / Gemm nodes of the last linear layer: the one that produces `logits` (through at most a
    few element-wise or shape nodes, e.g. its bias Add)."""
    producer = {output: node for node in graph.node for output in node.output}
    node, steps = producer.get("logits"), 0
    while node is not None and steps < 4:
        if node.op_type in ("MatMul", "Gemm"):
            return [node.name]
        inputs = [name for name in node.input if name in producer]
        node, steps = (producer[inputs[0]] if inputs else None), steps + 1
    return []


def quantize(fp32_path: Path, int8_path: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process the model is for static quantization
    try:
        # per-channel weight scales: on a JNLPBA NER model they kept 98.7% of token decisions against 94.9% with one
        # scale per tensor, at the same speed
        # The last linear layer (a few thousand weights) stays fp32, the usual practice, at no measurable speed
        # cost. Its effect on quality is within rounding noise: on the deploy benchmark's JNLPBA layer-3 model the
        # int8 cost in word-level span F1 (1739 devel sentences) is 0.17 points with it kept and 0.33 with it
        # quantized, through the pipeline (character spans) 0.32 and 0.29. Per-tensor scales cost 1.70 points.
        # (the quantizer first rewrites a Gemm as `<name>_MatMul` + `<name>_Add`: both names are excluded)
        head = head_matmuls(onnx.load(str(fp32_path)).graph)
        quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8, per_channel=True,
                         nodes_to_exclude=head + [f"{name}_MatMul" for name in head])
    finally:
        root.setLevel(level)


CONFIG_TEMPLATE = '''"""Config of an ONNX export of a medheads model: the model's own config class under its own model type, so the
ONNX runtime classes in modeling_onnx.py load it (written by `medheads export`)."""

from .{module} import {base} as _Base


class MedheadsOnnxConfig(_Base):
    model_type = "{model_type}"


__all__ = ["MedheadsOnnxConfig"]
'''


def copy_pipeline_code(config: dict, model_dir: Path, output_dir: Path) -> None:
    """The pipelines `custom_pipelines` names ship too (they use the model's config and forward only, so they run on
    the ONNX Runtime model unchanged): copied from the model folder, else from medheads' own models package."""
    models_dir = Path(inspect.getfile(load_medheads_model)).resolve().parents[1] / "models"
    for info in (config.get("custom_pipelines") or {}).values():
        module = str(info.get("impl", "")).split(".")[0]
        for folder in (model_dir, models_dir):
            if module and (folder / f"{module}.py").is_file():
                shutil.copy2(folder / f"{module}.py", output_dir / f"{module}.py")
                break
        else:
            raise ExportError(f"config.custom_pipelines names {info.get('impl')!r} but {module}.py is not in "
                              f"{model_dir}.")
    copy_relative_imports(output_dir, (model_dir, models_dir))


def copy_relative_imports(output_dir: Path, sources: tuple[Path, ...]) -> None:
    """Every module the folder's code imports relatively (`from .image_loading import ...`), transitively, copied
    from the first of `sources` that has it: remote-code loading fetches each of them."""
    from transformers.dynamic_module_utils import get_relative_imports

    pending = sorted(output_dir.glob("*.py"))
    while pending:
        for name in get_relative_imports(str(pending.pop())):
            target = output_dir / f"{name}.py"
            if target.is_file():
                continue
            source = next((folder / f"{name}.py" for folder in sources if (folder / f"{name}.py").is_file()), None)
            if source is None:
                raise ExportError(f"the exported code imports {name}.py, which is in none of {[str(f) for f in sources]}.")
            shutil.copy2(source, target)
            pending.append(target)


def write_folder(model, kind: str, processor, output_dir: Path, variants: list[str], model_dir: Path) -> None:
    name = type(model).__name__
    _, auto_name, runtime_class, _ = KINDS[name]
    config_cls = type(model.config)
    config_file = Path(inspect.getfile(config_cls))
    shutil.copy2(config_file, output_dir / config_file.name)
    shutil.copy2(RUNTIME_FILE, output_dir / "modeling_onnx.py")
    model_type = f"{config_cls.model_type}-onnx"
    (output_dir / "configuration_onnx.py").write_text(CONFIG_TEMPLATE.format(
        module=config_file.stem, base=config_cls.__name__, model_type=model_type))
    config = model.config.to_dict()
    config.update(model_type=model_type, architectures=[runtime_class], onnx_variants=variants,
                  onnx_default="int8" if "int8" in variants else "fp32",
                  auto_map={"AutoConfig": "configuration_onnx.MedheadsOnnxConfig",
                            auto_name: f"modeling_onnx.{runtime_class}"})
    config.pop("dtype", None)
    if getattr(model, "crf", None) is not None:  # the runtime class decodes the graph's emissions with these
        config["crf_parameters"] = {name: parameter.detach().float().tolist()
                                    for name, parameter in model.crf.named_parameters()}
    copy_pipeline_code(config, model_dir, output_dir)
    (output_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    processor.save_pretrained(output_dir)


# -- checks -----------------------------------------------------------------------------------------------------------
def load_onnx_model(folder: str | Path, variant: str):
    """The exported runtime model, loaded from the folder's own code (as a user without medheads does)."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=True)
    auto_name = next(k for k in config.auto_map if k.startswith("AutoModelFor"))
    return getattr(transformers, auto_name).from_pretrained(folder, trust_remote_code=True, onnx_variant=variant)


def _check_batches(kind: str, processor, samples: list, window: int | None) -> list[dict]:
    """Model inputs of several lengths and batch sizes built from real samples (texts or images)."""
    batches = []
    if kind == "image":
        for size in (1, 3, 8):
            chunk = samples[:size]
            if chunk:
                batches.append(dict(processor(images=chunk, return_tensors="pt")))
        return batches
    texts = sorted(samples, key=len)
    picks = [texts[0], texts[len(texts) // 2], texts[-1]]
    batches += [dict(processor([t], return_tensors="pt")) for t in picks]  # batch 1, short / median / long
    mixed = texts[:: max(1, len(texts) // 8)][:8]
    batches.append(dict(processor(mixed, return_tensors="pt", padding=True)))  # padded mixed-length batch
    if kind == "text" and window:
        long_text = " ".join(texts[::-1])
        while len(processor(long_text)["input_ids"]) <= 2 * window + 10:
            long_text += " " + long_text
        batches.append(dict(processor([long_text, texts[0], texts[-1]], return_tensors="pt", padding=True)))
    elif kind == "token":
        limit = int(getattr(processor, "model_max_length", 512) or 512)
        batches.append(dict(processor(texts[-3:], return_tensors="pt", padding=True, truncation=True,
                                      max_length=min(limit, 512))))
    return batches


def compare_logits(model, onnx_models: dict, batches: list[dict]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = {}
    for variant, onnx_model in onnx_models.items():
        worst, shapes = 0.0, []
        for batch in batches:
            inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids",
                                                              "pixel_values")}
            with torch.no_grad():
                expected = model(**inputs).logits.float()
                got = onnx_model(**inputs).logits.float()
            if got.shape != expected.shape:
                raise AssertionError(f"ONNX {variant} logits have shape {tuple(got.shape)}, PyTorch "
                                     f"{tuple(expected.shape)}")
            if "attention_mask" in inputs and expected.dim() == 3:  # token logits: only real tokens count
                keep = inputs["attention_mask"].bool()
                expected, got = expected[keep], got[keep]
            worst = max(worst, float((got - expected).abs().max()))
            first = next(iter(inputs.values()))
            shapes.append(list(first.shape))
        result[variant] = {"max_abs_diff": worst, "input_shapes": shapes}
    return result


# -- quality on a validation split ------------------------------------------------------------------------------------
@dataclass
class Validation:
    """Real data for the export check."""

    path: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    label_separator: str | None = None
    image_split: str = "val"
    max_samples: int = 1000
    source: str = ""
    samples: list = field(default_factory=list)  # texts, word lists or images
    gold: list = field(default_factory=list)


def read_validation(kind: str, spec: Validation, config) -> Validation:
    from ..data import DataFormatError, read_npz_images, read_text_table, read_token_file

    path = Path(spec.path)
    if not path.exists():
        raise ExportError(f"--validation_file {path} does not exist.")
    try:
        if kind == "token":
            rows = read_token_file(path)[: spec.max_samples]
            spec.samples = [row["tokens"] for row in rows]
            spec.gold = [row["ner_tags"] for row in rows]
        elif kind == "text":
            multi = config.problem_type == "multi_label_classification"
            separator = spec.label_separator or (";" if multi else None)
            rows = read_text_table(path, spec.text_column, spec.label_column, separator, drop_empty_text=True)
            rows = rows[: spec.max_samples]
            spec.samples = [row["text"] for row in rows]
            spec.gold = [row["labels"] if multi else row["label"] for row in rows]
        else:
            images, labels = read_npz_images(path, spec.image_split)
            from PIL import Image

            spec.samples = [Image.fromarray(a) for a in images[: spec.max_samples]]
            spec.gold = [int(v) for v in labels[: spec.max_samples]]
    except DataFormatError as error:
        raise ExportError(str(error)) from error
    spec.source = f"{path} ({spec.image_split + ' split, ' if kind == 'image' else ''}first {len(spec.samples)})"
    return spec


def _batched_logits(model, kind: str, processor, samples: list, batch_size: int = 32):
    """Logits per sample, computed in length-sorted batches; token kinds also return word ids."""
    order = np.argsort([len(s) if kind != "image" else 0 for s in samples], kind="stable")
    out: list = [None] * len(samples)
    for start in range(0, len(samples), batch_size):
        index = order[start:start + batch_size]
        chunk = [samples[i] for i in index]
        if kind == "image":
            inputs = dict(processor(images=chunk, return_tensors="pt"))
        elif kind == "token":
            limit = min(int(getattr(processor, "model_max_length", 512) or 512), 512)
            encoded = processor(chunk, is_split_into_words=True, truncation=True, max_length=limit,
                                padding=True, return_tensors="pt")
            inputs = {k: v for k, v in encoded.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        else:
            inputs = dict(processor(chunk, return_tensors="pt", padding=True))
        with torch.no_grad():
            logits = model(**inputs).logits.float().numpy()
        for j, i in enumerate(index):
            out[i] = (logits[j], encoded.word_ids(j)) if kind == "token" else logits[j]
    return out


def quality(model, kind: str, processor, spec: Validation) -> dict[str, float]:
    from ..metrics import ner_metrics
    from .decisions import classify, word_tags

    config = model.config
    outputs = _batched_logits(model, kind, processor, spec.samples)
    if kind == "token":
        preds = [word_tags(logits, word_ids, len(words), config)
                 for (logits, word_ids), words in zip(outputs, spec.samples)]
        scores = ner_metrics(spec.gold, preds)
        return {"span_f1": scores["f1"], "span_precision": scores["precision"], "span_recall": scores["recall"]}
    decisions = classify(np.stack(outputs), config)
    if kind == "text" and config.problem_type == "multi_label_classification":
        names = [config.id2label[i] for i in range(config.num_labels)]
        gold = np.array([[n in set(labels) for n in names] for labels in spec.gold])
        pred = np.array([[n in set(d["labels"]) for n in names] for d in decisions])
        tp = float((gold & pred).sum())
        micro_f1 = 2 * tp / max(1.0, float(gold.sum() + pred.sum()))
        return {"micro_f1": micro_f1, "subset_accuracy": float((gold == pred).all(axis=1).mean())}
    if kind == "image":
        names = [config.id2label[i] for i in range(config.num_labels)]
        gold = [names[g] for g in spec.gold]
    else:
        gold = spec.gold
    return {"accuracy": float(np.mean([d["label"] == g for d, g in zip(decisions, gold)]))}


# -- the whole export -------------------------------------------------------------------------------------------------
def export(model_dir: str | Path, output_dir: str | Path, *, int8: bool = False, validation: Validation | None = None,
           overwrite: bool = False, check_samples: list | None = None) -> dict:
    """Export the medheads model in `model_dir` to an ONNX folder `output_dir`; check it; return the check report.

    `validation` (a `Validation` naming a file) gives real inputs for the logit check and the int8 quality check;
    without it the logit check runs on `check_samples` (texts or PIL images), which must then be given.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise ExportError(f"{output_dir} exists and is not empty: choose a new folder or pass --overwrite.")
    model, kind, processor = load_medheads_model(model_dir)
    if validation is not None and (validation.path or validation.samples):
        if validation.path:
            validation = read_validation(kind, validation, model.config)
        samples = validation.samples
        if kind == "token":
            samples = [" ".join(words) for words in samples]
    elif check_samples:
        samples, validation = list(check_samples), None
    else:
        raise ExportError("the export check needs real inputs: pass --validation_file (or check_samples=[...]).")
    output_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    inputs = export_graph(model, kind, output_dir / "model.onnx")
    variants = ["fp32"]
    if int8:
        quantize(output_dir / "model.onnx", output_dir / "model_int8.onnx")
        variants.append("int8")
    write_folder(model, kind, processor, output_dir, variants, Path(model_dir))
    onnx_models = {v: load_onnx_model(output_dir, v) for v in variants}
    window = model.config.chunk_length if kind == "text" else None
    logits = compare_logits(model, onnx_models, _check_batches(kind, processor, samples[:256], window))
    report: dict[str, Any] = {"kind": kind, "source": str(model_dir), "inputs": inputs, "variants": variants,
                              "logits": logits, "fp32_tolerance": FP32_TOLERANCE}
    if logits["fp32"]["max_abs_diff"] > FP32_TOLERANCE:
        raise AssertionError(f"ONNX fp32 logits differ from PyTorch by {logits['fp32']['max_abs_diff']:.2e} "
                             f"(> {FP32_TOLERANCE}); the export is wrong, please report it.")
    if validation is not None:
        report["validation"] = validation.source
        report["quality"] = {"pytorch": quality(model, kind, processor, validation)}
        for variant, onnx_model in onnx_models.items():
            report["quality"][f"onnx_{variant}"] = quality(onnx_model, kind, processor, validation)
    report["seconds"] = round(time.time() - started, 1)
    (output_dir / "export_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (output_dir / "README.md").write_text(render_readme(model, kind, report))
    return report


def render_readme(model, kind: str, report: dict) -> str:
    task = KINDS[type(model).__name__][3]
    variants = report["variants"]
    lines = [
        f"# ONNX export of a medheads {type(model).__name__}", "",
        f"Exported by `medheads export` from `{Path(report['source']).name}`. Runs with ONNX Runtime; medheads is "
        "not needed:", "",
        "```python", "from transformers import pipeline", "",
        f"pipe = pipeline(\"{task}\", model=\"path/to/this/folder\", trust_remote_code=True)",
    ]
    if "int8" in variants:
        lines += ["# int8 is the default here; the fp32 graph: model_kwargs={\"onnx_variant\": \"fp32\"}"]
    lines += ["```", "", "Needs `pip install onnxruntime transformers torch`.", "", "## Files", "",
              "| file | what |", "|---|---|",
              "| `model.onnx` | fp32 graph (opset %d), inputs %s |" % (OPSET, ", ".join(f"`{n}`" for n in report["inputs"]))]
    if "int8" in variants:
        lines += ["| `model_int8.onnx` | the same graph, weights dynamically quantized to int8 "
                  "(`onnxruntime.quantization.quantize_dynamic`, per-channel scales; the last linear layer stays fp32) |"]
    lines += ["| `modeling_onnx.py`, `configuration_*.py` | the ONNX Runtime model classes `pipeline()` loads |",
              "| `export_check.json` | the numbers below |", ""]
    shapes = {"token": "`[batch, sequence]`", "text": "`[batch, windows, window]` (the model class splits texts "
              f"longer than {getattr(model.config, 'chunk_length', '')} tokens into windows, as PyTorch does)",
              "image": f"`[batch, 3, {getattr(model.config, 'image_size', '')}, "
                       f"{getattr(model.config, 'image_size', '')}]`"}
    lines += [f"Graph input shape: {shapes[kind]}; batch" + (" and sequence axes are" if kind != "image" else
              " axis is") + " dynamic.", "", "## Export check", "",
              "Largest absolute difference of the logits from PyTorch's (fp32 model, real tokens only) on inputs of "
              "shapes " + ", ".join(str(s) for s in report["logits"]["fp32"]["input_shapes"]) + ":", "",
              "| graph | max abs diff |", "|---|---|"]
    for variant in variants:
        lines.append(f"| {variant} | {report['logits'][variant]['max_abs_diff']:.2e} |")
    note = f"fp32 tolerance: {report['fp32_tolerance']:g} (the export fails beyond it)."
    if "int8" in variants:
        note += (" int8 logits move further (weights are rounded to 8 bits); " +
                 ("what counts is the decisions, measured below." if "quality" in report else
                  "no validation data was given, so its effect on decisions was not measured."))
    lines += ["", note, ""]
    if "quality" in report:
        metrics = list(next(iter(report["quality"].values())))
        lines += [f"Quality on {report['validation']}:", "", "| model | " + " | ".join(metrics) + " |",
                  "|---|" + "---|" * len(metrics)]
        for name, scores in report["quality"].items():
            lines.append(f"| {name} | " + " | ".join(f"{scores[m]:.4f}" for m in metrics) + " |")
        lines.append("")
    return "\n".join(lines)


# -- command line -----------------------------------------------------------------------------------------------------
def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=prog, description=(
        "Export a medheads model folder to ONNX (fp32, and int8 with --int8), check the graphs against PyTorch on "
        "real inputs and write a folder that pipeline(..., trust_remote_code=True) loads without medheads."))
    parser.add_argument("model_dir", help="a medheads model folder (output of a training command)")
    parser.add_argument("output_dir", help="where to write the ONNX folder (must be new or empty)")
    parser.add_argument("--int8", action="store_true", help="also write a dynamically quantized int8 graph "
                        "(the folder's default when present)")
    parser.add_argument("--validation_file", help="real data for the checks: CoNLL/JSON-lines NER file, CSV/TSV/"
                        "JSON-lines text table, or .npz images; default: the validation file the model was trained "
                        "with (from metrics.json), if it exists")
    parser.add_argument("--text_column", default=None, help="text column of a text table (default: as trained, or text)")
    parser.add_argument("--label_column", default=None, help="label column of a text table (default: as trained, "
                        "or label)")
    parser.add_argument("--label_separator", default=None, help="separator of multi-label cells (default ';')")
    parser.add_argument("--image_split", default="val", help="split prefix inside an .npz archive (default val)")
    parser.add_argument("--max_samples", type=int, default=1000, help="validation examples to score (default 1000)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output_dir")
    return parser


def _training_arguments(model_dir: Path) -> dict:
    try:
        return json.loads((model_dir / "metrics.json").read_text()).get("arguments", {})
    except (OSError, ValueError):
        return {}


def resolve_trained_path(path: str | None, model_dir: Path) -> str | None:
    """A data path from a model's training arguments: as given (relative to the current directory), else relative
    to a folder above the model folder (training commands run from the repository root, outputs sit below it)."""
    if not path:
        return None
    if Path(path).is_file() or Path(path).is_absolute():
        return path
    for base in Path(model_dir).resolve().parents:
        if (base / path).is_file():
            return str(base / path)
    return path


def trained_script(model_dir: Path) -> str:
    try:
        return str(json.loads((model_dir / "metrics.json").read_text()).get("script", ""))
    except (OSError, ValueError):
        return ""


def trained_text_validation(trained: dict, config, max_samples: int, model_dir: Path) -> Validation | None:
    """The validation split a text model was trained with, rebuilt from its metrics.json arguments (the same files,
    split column or seeded percentage split), or None when its data is not reachable from here."""
    import dataclasses

    from ..training.text_classification import InputError, TextDataArguments, load_splits

    names = {f.name for f in dataclasses.fields(TextDataArguments)}
    data_args = TextDataArguments(**{k: v for k, v in trained.items() if k in names})
    for name in ("train_file", "validation_file", "test_file"):
        setattr(data_args, name, resolve_trained_path(getattr(data_args, name), model_dir))
    for path in (data_args.train_file, data_args.validation_file):
        if path and not Path(path).is_file():
            return None
    if not (data_args.train_file or data_args.validation_file):
        return None
    multi = config.problem_type == "multi_label_classification"
    if multi and data_args.label_separator is None:
        data_args.label_separator = ";"
    try:
        rows = load_splits(data_args, multi, int(trained.get("seed", 42))).get("validation")
    except (InputError, ValueError):
        return None
    if not rows:
        return None
    rows = rows[:max_samples]
    source = data_args.validation_file or f"{data_args.train_file} (validation split as trained)"
    return Validation(path=None, source=f"{source}, first {len(rows)}", samples=[r["text"] for r in rows],
                      gold=[r["labels"] if multi else r["label"] for r in rows], max_samples=max_samples)


def main(argv: list[str] | None = None, prog: str = "medheads export") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        parser.error("ONNX export needs onnx and onnxruntime: pip install 'medheads[onnx]'")
    model_dir = Path(args.model_dir)
    trained = _training_arguments(model_dir)
    validation_file = args.validation_file or resolve_trained_path(trained.get("validation_file"), model_dir)
    if args.validation_file is None and validation_file and not Path(validation_file).exists():
        validation_file = None
    ready = None
    if not validation_file and "train_text" in str(trained_script(model_dir)):
        from transformers import AutoConfig

        import medheads  # noqa: F401

        try:
            ready = trained_text_validation(trained, AutoConfig.from_pretrained(model_dir), args.max_samples,
                                            model_dir)
        except (OSError, ValueError):
            ready = None
    if not validation_file and ready is None:
        parser.error("no validation data for the export check: pass --validation_file (the model's metrics.json "
                     "names none that exists here)")
    validation = ready or Validation(
        path=validation_file, text_column=args.text_column or trained.get("text_column_name") or "text",
        label_column=args.label_column or trained.get("label_column_name") or "label",
        label_separator=args.label_separator or trained.get("label_separator"), image_split=args.image_split,
        max_samples=args.max_samples)
    try:
        report = export(model_dir, args.output_dir, int8=args.int8, validation=validation, overwrite=args.overwrite)
    except ExportError as error:
        parser.error(str(error))
    print((Path(args.output_dir) / "README.md").read_text())
    print(f"Wrote {args.output_dir} in {report['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
