"""Invariant 1: a saved folder loads with trust_remote_code in a fresh process where medheads cannot be imported."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import CUI_LABELS, IMAGE_LABELS, NER_LABELS, backbone_config, encoder_config, make_image_processor

from medheads import (
    FrozenEncoderMultiLabel, FrozenEncoderMultiLabelConfig, HiddenLayerTokenClassifier,
    HiddenLayerTokenClassifierConfig, ViTPatchClassifier, ViTPatchClassifierConfig,
)

TEXT = "the patient has breast cancer and il-2 receptor expression in t cells"
LOADER = Path(__file__).with_name("remote_loader.py")
LONG_REPEATS = 30


def build_saved_models(root: Path, tokenizer) -> tuple[dict, dict]:
    """Save one tiny model of each kind (with tokenizer / image processor); return the loader spec and the models."""
    torch.manual_seed(0)
    token_model = HiddenLayerTokenClassifier(HiddenLayerTokenClassifierConfig(
        encoder_config=encoder_config("bert"), hidden_layers=[-1, -2], layer_combination="scalar_mix",
        id2label=NER_LABELS)).eval()
    text_model = FrozenEncoderMultiLabel(FrozenEncoderMultiLabelConfig(
        encoder_config=encoder_config("bert"), pooling="mean", head_hidden_sizes=[16], id2label=CUI_LABELS,
        thresholds=[0.4, 0.5, 0.6, 0.5])).eval()
    image_model = ViTPatchClassifier(ViTPatchClassifierConfig(
        backbone_config=backbone_config("deit"), head="patch", patch_projection_size=8, id2label=IMAGE_LABELS)).eval()
    encoded = tokenizer([TEXT], return_tensors="pt")
    image = (np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8)
    processor = make_image_processor(32)
    pixel_values = processor(images=[np.stack([image] * 3, -1)], return_tensors="pt")["pixel_values"]
    spec, models = {}, {"token": token_model, "text": text_model, "image": image_model}
    for kind, model in models.items():
        folder = root / kind
        model.save_pretrained(folder)
        (processor if kind == "image" else tokenizer).save_pretrained(folder)
        spec[kind] = {"path": str(folder)}
        if kind == "image":
            spec[kind].update(pixel_values=pixel_values.tolist(), image=image.tolist())
        else:
            spec[kind].update(input_ids=encoded["input_ids"].tolist(),
                              attention_mask=encoded["attention_mask"].tolist(), text=TEXT)
            if kind == "token":
                spec[kind]["long_text"] = " ".join([TEXT] * LONG_REPEATS)  # ~8 windows of the tokenizer's 64
    return spec, models


def expected_logits(models: dict, spec: dict) -> dict:
    """Logits of each model reloaded from its folder with the medheads classes.

    They are compared exactly with the remote-code load (same weights, same memory layout); the freshly built model
    can differ from any reloaded one in the last bit, because BLAS picks kernels by the weights' alignment.
    """
    out = {}
    with torch.no_grad():
        for kind, original in models.items():
            model = type(original).from_pretrained(spec[kind]["path"]).eval()
            item = spec[kind]
            if kind == "image":
                out[kind] = model(pixel_values=torch.tensor(item["pixel_values"])).logits
            else:
                out[kind] = model(input_ids=torch.tensor(item["input_ids"]),
                                  attention_mask=torch.tensor(item["attention_mask"])).logits
            inputs = {key: torch.tensor(item[key]) for key in ("pixel_values", "input_ids", "attention_mask")
                      if key in item}
            torch.testing.assert_close(original(**inputs).logits, out[kind], rtol=1e-5, atol=1e-6)
    return out


def run_loader(spec: dict, tmp_path: Path, *flags, env_extra=None) -> dict:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", **(env_extra or {})}
    proc = subprocess.run([sys.executable, str(LOADER), str(spec_file), *flags], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [row for row in proc.stdout.splitlines() if row.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("saved")
    spec, models = build_saved_models(root, tiny_tokenizer)
    return root, spec, models, expected_logits(models, spec)


def check_pipeline_outputs(result, models, expected):
    token = result["token"]["pipeline"]
    entity_types = {label.split("-", 1)[-1] for label in NER_LABELS.values()}
    assert isinstance(token, list)
    for entity in token:
        assert {"entity_group", "score", "word", "start", "end"} <= set(entity)
        assert entity["entity_group"] in entity_types
        assert TEXT[entity["start"]:entity["end"]].lower().replace(" ", "") == entity["word"].replace(" ", "")

    text = result["text"]["pipeline"]
    assert sorted(row["label"] for row in text) == sorted(CUI_LABELS.values())  # a score for every label
    sigmoid = torch.sigmoid(expected["text"][0])
    by_label = {row["label"]: row["score"] for row in text}
    for index, label in CUI_LABELS.items():  # multi-label: independent sigmoids, not a softmax
        assert by_label[label] == pytest.approx(float(sigmoid[index]), abs=1e-5)

    for kind in ("token", "text"):  # the checkpoint's own pipeline (config.custom_pipelines) ran
        assert result[kind]["pipeline_class"].startswith("transformers_modules"), result[kind]["pipeline_class"]
    for entity in result["token"]["default_call"]:
        assert entity["word"] == TEXT[entity["start"]:entity["end"]]
    if result["token"]["long_default_call"] is not None:  # tagged to the end, not truncated at the window
        long_text = " ".join([TEXT] * LONG_REPEATS)
        ends = [entity["end"] for entity in result["token"]["long_default_call"]]
        assert all(entity["word"] == long_text[entity["start"]:entity["end"]]
                   for entity in result["token"]["long_default_call"])
        last_copy = len(long_text) - len(TEXT)
        assert any(end > last_copy for end in ends) == any(e["end"] > 0 for e in result["token"]["default_call"])
    thresholds = models["text"].config.thresholds
    decided = {CUI_LABELS[i] for i in CUI_LABELS if float(sigmoid[i]) >= thresholds[i]}
    assert {row["label"] for row in result["text"]["default_call"]} == decided
    scores = [row["score"] for row in result["text"]["default_call"]]
    assert scores == sorted(scores, reverse=True)

    image = result["image"]["pipeline"]
    assert {row["label"] for row in image} == set(IMAGE_LABELS.values())
    assert sum(row["score"] for row in image) == pytest.approx(1.0, abs=1e-5)


def test_loads_without_medheads(saved, tmp_path):
    root, spec, models, expected = saved
    for kind in spec:
        config = json.loads((root / kind / "config.json").read_text())
        assert config["model_type"].startswith("medheads-") and "auto_map" in config
        assert (root / kind / "modeling_common.py").exists()
    result = run_loader(spec, tmp_path, "--block-medheads")
    assert result["medheads_importable"] is False
    for kind, model in models.items():
        assert result[kind]["model_class"] == type(model).__name__
        assert result[kind]["model_module"].startswith("transformers_modules")  # the checkpoint's own code
        assert torch.equal(torch.tensor(result[kind]["logits"]), expected[kind]), kind
    check_pipeline_outputs(result, models, expected)


def test_same_with_medheads_installed(saved, tmp_path):
    root, spec, models, expected = saved
    result = run_loader(spec, tmp_path)
    assert result["medheads_importable"] is True
    for kind, model in models.items():
        assert result[kind]["model_class"] == result[kind]["pipeline_model_class"] == type(model).__name__
        assert torch.equal(torch.tensor(result[kind]["logits"]), expected[kind]), kind
    check_pipeline_outputs(result, models, expected)


def test_bfloat16_loading(saved, tmp_path):
    root, spec, models, expected = saved
    result = run_loader(spec, tmp_path, "--block-medheads", "--dtype", "bfloat16")
    for kind, model in models.items():
        assert result[kind]["dtype"] == "torch.bfloat16"
        assert result[kind]["model_class"] == type(model).__name__
        torch.testing.assert_close(torch.tensor(result[kind]["logits"]), expected[kind], atol=0.1, rtol=0.1)


def test_local_auto_classes_load_medheads_classes(saved):
    from transformers import AutoModelForImageClassification, AutoModelForSequenceClassification, \
        AutoModelForTokenClassification

    root, spec, models, expected = saved
    for kind, auto in (("token", AutoModelForTokenClassification), ("text", AutoModelForSequenceClassification),
                       ("image", AutoModelForImageClassification)):
        model = auto.from_pretrained(root / kind).eval()
        assert type(model) is type(models[kind])
        assert model.config.to_dict()["model_type"] == models[kind].config.model_type
    text = AutoModelForSequenceClassification.from_pretrained(root / "text")
    assert text.config.thresholds == [0.4, 0.5, 0.6, 0.5]
