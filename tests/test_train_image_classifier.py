"""scripts/train_image_classifier.py (medheads.training.image_classification): tiny random ViT / DeiT backbones, tiny image
folders written with PIL, a `datasets` folder and small slices of PneumoniaMNIST. Metrics are checked against cases
worked out by hand and against the saved model's own predictions."""

from __future__ import annotations

import json
import os
import runpy
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image
from tiny import backbone_config, encoder_config, make_image_processor
from transformers import AutoModel

from medheads.command_line import explicit_keys
from medheads.data import DataFormatError
from medheads.errors import InputError
from medheads.training.image_classification import (
    ARGUMENT_CLASSES, EpochWeightedRandomSampler, apply_prior_correction, augment_image, class_weights, confusion,
    image_metrics, main, run,
)
from medheads.training.arguments import parse_args

REPO = Path(__file__).resolve().parents[1]


def run_args(args) -> dict:
    """What `medheads train-image ARGS` does, returning the metrics (input errors raise instead of exiting 2)."""
    args = [str(arg) for arg in args]
    return run(*parse_args(ARGUMENT_CLASSES, args), explicit=explicit_keys(args))

SCRIPT = REPO / "scripts" / "train_image_classifier.py"
DATA = Path(os.environ.get("MEDHEADS_DATA_DIR", REPO.parent / "shared" / "data"))
PNEUMONIA = DATA / "pneumoniamnist" / "pneumoniamnist.npz"
needs_data = pytest.mark.skipif(not PNEUMONIA.is_file(), reason=f"PneumoniaMNIST not found under {DATA}")
QUIET = ["--disable_tqdm", "true", "--dataloader_pin_memory", "false", "--report_to", "none"]


# ----------------------------------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------------------------------


def save_backbone(folder: Path, arch: str) -> Path:
    torch.manual_seed(0)
    AutoModel.from_config(backbone_config(arch)).save_pretrained(folder)  # 32 px, patch 8
    make_image_processor(32).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    return save_backbone(tmp_path_factory.mktemp("tiny_vit"), "vit")


@pytest.fixture(scope="module")
def deit_dir(tmp_path_factory):
    return save_backbone(tmp_path_factory.mktemp("tiny_deit"), "deit")


def xray(bright: bool, seed: int, mode: str = "L", size=(20, 24)) -> Image.Image:
    """A small image whose class shows in its brightness, grayscale or RGB, not square."""
    rng = np.random.default_rng(seed)
    base = 170 if bright else 70
    pixels = np.clip(base + rng.normal(0, 25, size[::-1]), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, mode="L")
    return image.convert(mode)


def write_folder(root: Path, per_class: int, seed: int) -> Path:
    for c, name in enumerate(("normal", "pneumonia")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            xray(bool(c), seed * 100 + c * 50 + i, mode="RGB" if i % 3 == 0 else "L").save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def image_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("xray_folders")
    return {split: write_folder(root / split, n, seed)
            for split, n, seed in (("train", 12, 1), ("val", 6, 2), ("test", 5, 3))}


@pytest.fixture(scope="module")
def pneumonia_slice(tmp_path_factory):
    """96 training images, and the first 80 validation images split into val (40) and test (40)."""
    arrays = np.load(PNEUMONIA)
    path = tmp_path_factory.mktemp("pneumonia") / "slice.npz"
    np.savez(path, train_images=arrays["train_images"][:96], train_labels=arrays["train_labels"][:96],
             val_images=arrays["val_images"][:40], val_labels=arrays["val_labels"][:40],
             test_images=arrays["val_images"][40:80], test_labels=arrays["val_labels"][40:80])
    return path


def results(folder: Path) -> dict:
    return json.loads((folder / "all_results.json").read_text())


# ----------------------------------------------------------------------------------------------------------------
# units: metrics, balancing, augmentation, arguments
# ----------------------------------------------------------------------------------------------------------------


def test_metrics_against_a_hand_worked_case():
    labels = [0, 0, 1, 1, 1]
    logits = np.array([[2, 0], [0, 1], [0, 2], [1, 0], [0, 3]], dtype=float)
    # predictions 0 1 1 0 1: class 0 TP 1 FP 1 FN 1; class 1 TP 2 FP 1 FN 1.
    metrics = image_metrics(labels, logits, ["normal", "pneumonia"])
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    assert metrics["f1_normal"] == pytest.approx(0.5)
    assert metrics["f1_pneumonia"] == pytest.approx(2 / 3)
    assert metrics["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    # P(pneumonia) = sigmoid(l1 - l0): positives 0.88, 0.27, 0.95 against negatives 0.12, 0.73 -> 5 of 6 pairs.
    assert metrics["roc_auc"] == pytest.approx(5 / 6)
    assert confusion(labels, logits, 2) == [[1, 1], [1, 2]]


def test_three_classes_macro_auc_and_confusion():
    labels = [0, 1, 2, 2]
    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.3, 0.45, 0.25], [0.1, 0.1, 0.8]]))
    metrics = image_metrics(labels, logits, ["a", "b", "c"])
    assert metrics["accuracy"] == pytest.approx(3 / 4)
    # one-vs-rest AUCs: a 1.0; b: positive 0.6 vs 0.2, 0.45, 0.1 -> 1.0; c: positives 0.25, 0.8 vs 0.1, 0.3 -> 3/4.
    assert metrics["roc_auc"] == pytest.approx((1 + 1 + 3 / 4) / 3)
    assert confusion(labels, logits, 3) == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_class_weights_and_the_balanced_sampler():
    weights = class_weights([0, 1, 1, 1], 2)
    assert weights.tolist() == pytest.approx([4 / 2, 4 / 6])  # n / (classes * n_c)
    assert class_weights([0, 0, 2], 3).tolist() == pytest.approx([0.5, 0.0, 1.0])  # absent class: 0

    labels = np.array([0] * 20 + [1] * 180)
    per_example = class_weights(labels, 2)[torch.as_tensor(labels)].double()
    sampler = EpochWeightedRandomSampler(per_example, len(labels), seed=5)
    first = list(sampler)
    assert list(sampler) == first  # same epoch, same draws (what resuming needs)
    sampler.set_epoch(1)
    assert list(sampler) != first
    draws = []
    for epoch in range(10):
        sampler.set_epoch(epoch)
        draws.extend(labels[list(sampler)])
    draws = np.array(draws)
    assert abs(draws.mean() - 0.5) < 0.05  # balanced on average, though only 10% of the data is class 0


@pytest.mark.parametrize("head", ["cls", "patch"])
def test_prior_correction_shifts_each_class_logit_by_its_log_frequency(head):
    """Class c's logit moves by exactly log(K * frequency_c) on every image, so decisions move towards the common
    class while the ranking of images by any one class's score (hence ROC AUC) is unchanged."""
    from medheads import ViTPatchClassifier, ViTPatchClassifierConfig

    torch.manual_seed(0)
    model = ViTPatchClassifier(ViTPatchClassifierConfig(backbone_config=backbone_config("vit"), head=head,
                                                        id2label={0: "normal", 1: "pneumonia"})).eval()
    pixels = torch.randn(6, 3, model.config.image_size, model.config.image_size)
    with torch.no_grad():
        before = model(pixel_values=pixels).logits
    shifts = apply_prior_correction(model, [0, 1, 1, 1], 2)  # frequencies 1/4, 3/4
    assert shifts == pytest.approx([np.log(0.5), np.log(1.5)])
    with torch.no_grad():
        after = model(pixel_values=pixels).logits
    torch.testing.assert_close(after - before, torch.tensor(shifts, dtype=torch.float32).expand(6, 2))
    with pytest.raises(InputError, match=r"classes \[1\] have no training image"):
        apply_prior_correction(model, [0, 0], 2)


def test_augmentation_keeps_size_and_mode_and_flips_exactly():
    image = xray(True, 0, size=(20, 24))
    flipped = augment_image(image, rotation=0, crop_scale=1.0, hflip=1.0)
    assert np.array_equal(np.asarray(flipped), np.asarray(image)[:, ::-1])
    torch.manual_seed(0)
    for mode in ("L", "RGB"):
        out = augment_image(image.convert(mode), rotation=15, crop_scale=0.6, hflip=0.5)
        assert out.size == (20, 24) and out.mode == mode
    assert not np.array_equal(np.asarray(augment_image(image, 15, 0.6, 0.0)), np.asarray(image))


def test_explicit_keys(tmp_path):
    assert explicit_keys(["--freeze_backbone", "false", "--no-use_cache", "--x=1"]) == {"freeze_backbone",
                                                                                       "use_cache", "x"}
    config = tmp_path / "a.json"
    config.write_text(json.dumps({"metric_for_best_model": "accuracy"}))
    assert explicit_keys([str(config)]) == {"metric_for_best_model"}


def test_help_lists_every_kind_of_flag(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--model_name_or_path", "--vit_hidden_size", "--head {cls,cls_mean,patch}", "--freeze_backbone",
                 "--use_feature_cache", "--train_dir", "--train_file", "--balance {none,sampler,loss}", "--augment",
                 "--class_names", "--learning_rate", "--per_device_train_batch_size", "--eval_strategy"):
        assert flag in text, flag


def test_shipped_configs_parse():
    configs = sorted((REPO / "configs").glob("image_*.json"))
    assert configs
    for config in configs:
        model_args, data_args, training_args = parse_args(ARGUMENT_CLASSES, [str(config)])
        assert training_args.do_train and (data_args.train_file or data_args.train_dir or data_args.dataset_name)


# ----------------------------------------------------------------------------------------------------------------
# end to end
# ----------------------------------------------------------------------------------------------------------------


def test_frozen_vit_on_image_folders_is_a_complete_pipeline_folder(vit_dir, image_folders, tmp_path):
    out = tmp_path / "out"
    run_args(["--model_name_or_path", str(vit_dir), "--train_dir", str(image_folders["train"]),
         "--validation_dir", str(image_folders["val"]), "--test_dir", str(image_folders["test"]),
         "--head", "patch", "--patch_projection_size", "8", "--num_train_epochs", "3", "--learning_rate", "5e-3",
         "--per_device_train_batch_size", "8", "--feature_cache_dir", str(tmp_path / "cache"), "--seed", "1",
         "--do_train", "--do_eval", "--do_predict", "--output_dir", str(out), *QUIET])
    metrics = results(out)
    for key in ("eval_accuracy", "eval_roc_auc", "eval_f1_normal", "eval_f1_pneumonia", "predict_accuracy",
                "predict_roc_auc", "train_loss"):
        assert key in metrics, key
    assert any((tmp_path / "cache").iterdir())  # the head trained on cached token features
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["script"] == "train_image_classifier.py"
    assert np.sum(summary["metrics"]["eval_confusion_matrix"]) == 12
    assert np.sum(summary["metrics"]["predict_confusion_matrix"]) == 10
    for plot in ("confusion_matrix_eval.png", "per_class_f1_eval.png", "roc_curve_eval.png", "training_curves.png",
                 "confusion_matrix_predict.png"):
        assert plot in summary["plots"] and (out / plot).is_file(), plot
    report = (out / "classification_report.txt").read_text()
    assert "== validation: val, 12 images ==" in report and "== test: test, 10 images ==" in report

    # The saved folder is a pipeline folder; its predictions reproduce the reported validation accuracy.
    from transformers import pipeline

    pipe = pipeline("image-classification", model=str(out), trust_remote_code=True)
    gray = Image.open(image_folders["val"] / "normal" / "1.png")
    assert gray.mode == "L"
    scores = pipe(gray)
    assert {row["label"] for row in scores} == {"normal", "pneumonia"}
    assert sum(row["score"] for row in scores) == pytest.approx(1.0, abs=1e-5)
    gold, predicted = [], []
    for c, name in enumerate(("normal", "pneumonia")):
        for path in sorted((image_folders["val"] / name).glob("*.png")):
            gold.append(name)
            predicted.append(pipe(Image.open(path))[0]["label"])
    assert np.mean(np.array(gold) == np.array(predicted)) == pytest.approx(metrics["eval_accuracy"])

    # Evaluating the saved folder again (continuing from a medheads model) reproduces the numbers.
    again = tmp_path / "again"
    run_args(["--model_name_or_path", str(out), "--validation_dir", str(image_folders["val"]), "--do_eval",
         "--feature_cache_dir", str(tmp_path / "cache"), "--output_dir", str(again), *QUIET])
    for key in ("eval_accuracy", "eval_roc_auc", "eval_loss"):
        assert results(again)[key] == pytest.approx(metrics[key], rel=1e-5), key


@needs_data
def test_new_vit_from_scratch_on_pneumoniamnist_resumes_to_the_same_result(pneumonia_slice, tmp_path):
    common = ["--train_file", str(pneumonia_slice), "--class_names", "normal,pneumonia", "--image_size", "28",
              "--patch_size", "7", "--vit_hidden_size", "16", "--vit_layers", "1", "--vit_heads", "2",
              "--head", "cls_mean", "--balance", "sampler", "--augment", "--num_train_epochs", "2",
              "--per_device_train_batch_size", "16", "--learning_rate", "3e-3", "--seed", "4",
              "--save_total_limit", "3", "--logging_steps", "1", "--do_train", "--do_eval", "--do_predict", *QUIET]
    full = tmp_path / "full"
    run_args([*common, "--output_dir", str(full)])
    first = results(full)
    for key in ("eval_accuracy", "eval_roc_auc", "predict_accuracy", "predict_roc_auc"):
        assert 0 <= first[key] <= 1, key
    assert first["train_samples"] == 96 and first["eval_samples"] == 40 and first["predict_samples"] == 40
    config = json.loads((full / "config.json").read_text())
    assert config["freeze_backbone"] is False  # a new random ViT trains end to end by default
    assert config["backbone_config"]["hidden_size"] == 16 and config["id2label"] == {"0": "normal",
                                                                                     "1": "pneumonia"}
    state = json.loads((full / "trainer_state.json").read_text())
    assert state["best_metric"] == max(log["eval_roc_auc"] for log in state["log_history"] if "eval_roc_auc" in log)
    # The saved model is the best checkpoint's (transformers' own reload of ViT checkpoints would miss the backbone).
    best = Path(state["best_model_checkpoint"]).name
    saved, kept = (safetensors.torch.load_file(p / "model.safetensors") for p in (full, full / best))
    assert saved.keys() == kept.keys() and all(torch.equal(saved[k], kept[k]) for k in saved)

    resumed = tmp_path / "resumed"
    run_args([*common, "--output_dir", str(resumed), "--resume_from_checkpoint", str(full / "checkpoint-6")])
    second = results(resumed)
    for key in ("eval_accuracy", "eval_roc_auc", "eval_loss", "predict_roc_auc"):
        assert second[key] == pytest.approx(first[key], rel=1e-5), key
    # (train_loss averages only the steps a session ran, so compare the logged loss of the resumed epoch instead)
    logged = [{log["step"]: log["loss"] for log in json.loads((folder / "trainer_state.json").read_text())[
        "log_history"] if "loss" in log and log["step"] > 6} for folder in (full, resumed)]
    assert len(logged[0]) == 6 and logged[1] == pytest.approx(logged[0], rel=1e-5)
    weights = safetensors.torch.load_file(resumed / "model.safetensors")
    assert all(torch.allclose(weights[k], saved[k], atol=1e-6) for k in saved)


@needs_data
def test_prior_correction_after_balanced_training_is_saved_and_shown(pneumonia_slice, tmp_path):
    """The saved model is the best checkpoint's with the class-frequency shifts added to its output bias; the shifts
    are in config.json and the model card; validation and test metrics are the corrected model's."""
    out = tmp_path / "out"
    run_args(["--train_file", str(pneumonia_slice), "--class_names", "normal,pneumonia", "--image_size", "28",
              "--patch_size", "7", "--vit_hidden_size", "16", "--vit_layers", "1", "--vit_heads", "2",
              "--head", "cls", "--balance", "sampler", "--prior_correction", "--num_train_epochs", "1",
              "--per_device_train_batch_size", "16", "--seed", "4", "--do_train", "--do_eval", "--do_predict",
              "--output_dir", str(out), *QUIET])
    labels = np.load(pneumonia_slice)["train_labels"][:96].ravel()
    frequency = np.bincount(labels, minlength=2) / len(labels)
    config = json.loads((out / "config.json").read_text())
    assert list(config["prior_correction"]) == ["normal", "pneumonia"]
    assert list(config["prior_correction"].values()) == pytest.approx(np.log(2 * frequency), abs=1e-5)
    state = json.loads((out / "trainer_state.json").read_text())
    best = safetensors.torch.load_file(Path(state["best_model_checkpoint"]) / "model.safetensors")
    saved = safetensors.torch.load_file(out / "model.safetensors")
    bias = next(k for k in saved if k.startswith("head") and k.endswith("bias") and saved[k].numel() == 2)
    torch.testing.assert_close(saved[bias] - best[bias], torch.tensor(np.log(2 * frequency), dtype=torch.float32))
    assert all(torch.equal(saved[k], best[k]) for k in saved if k != bias)
    from medheads.hub.publishing import build_model_card

    card = str(build_model_card(out, "medheads/pneumonia-prior"))
    assert "prior correction" in card and f"normal {np.log(2 * frequency[0]):+.3f}" in card


@needs_data
def test_deit_trained_end_to_end_from_a_json_config_and_a_saved_dataset(deit_dir, pneumonia_slice, tmp_path):
    arrays = np.load(pneumonia_slice)
    table = lambda split: datasets.Dataset.from_dict(  # noqa: E731
        {"xray": [Image.fromarray(a) for a in arrays[f"{split}_images"]],
         "finding": ["pneumonia" if y else "normal" for y in arrays[f"{split}_labels"][:, 0]]},
        features=datasets.Features({"xray": datasets.Image(), "finding": datasets.Value("string")}))
    saved = tmp_path / "dataset"
    datasets.DatasetDict({"train": table("train"), "validation": table("val"), "test": table("test")}) \
        .save_to_disk(str(saved))
    config = tmp_path / "args.json"
    out = tmp_path / "out"
    config.write_text(json.dumps({
        "model_name_or_path": str(deit_dir), "dataset_name": str(saved), "image_column_name": "xray",
        "label_column_name": "finding", "freeze_backbone": False, "head": "cls", "image_size": 32,
        "balance": "loss", "num_train_epochs": 1, "per_device_train_batch_size": 16, "learning_rate": 1e-3,
        "hold_out_validation": True, "train_val_split": 0.25, "max_train_samples": 64, "do_train": True,
        "do_eval": True, "do_predict": True, "output_dir": str(out),
        "disable_tqdm": True, "dataloader_pin_memory": False}))
    run_args([str(config), "--seed", "7"])  # a JSON file of arguments, then flags that override it
    metrics = results(out)
    assert json.loads((out / "metrics.json").read_text())["arguments"]["seed"] == 7
    assert {"eval_accuracy", "eval_roc_auc", "predict_accuracy", "predict_roc_auc"} <= set(metrics)
    assert metrics["train_samples"] == 64 and metrics["eval_samples"] == 24  # a quarter of 96 held out
    assert metrics["predict_samples"] == 40
    saved_config = json.loads((out / "config.json").read_text())
    assert saved_config["backbone_config"]["model_type"] == "deit" and saved_config["freeze_backbone"] is False
    assert saved_config["id2label"] == {"0": "normal", "1": "pneumonia"}  # sorted class names


# ----------------------------------------------------------------------------------------------------------------
# bad input: one clear error, before training
# ----------------------------------------------------------------------------------------------------------------


def test_corrupt_image_is_named_before_training(vit_dir, image_folders, tmp_path, capsys):
    train = tmp_path / "train"
    write_folder(train, 3, 9)
    (train / "pneumonia" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    out = tmp_path / "out"
    args = ["--model_name_or_path", str(vit_dir), "--train_dir", str(train), "--validation_dir",
            str(image_folders["val"]), "--do_train", "--output_dir", str(out), *QUIET]
    with pytest.raises(DataFormatError, match=r"broken\.png.*(corrupt|unreadable)"):
        run_args(args)
    assert main(args) == 2
    assert "broken.png" in capsys.readouterr().err
    assert not list(out.glob("checkpoint-*"))


@pytest.mark.parametrize("case", ["npz_arrays", "column", "not_a_backbone", "image_size", "test_split", "hold_out",
                                  "prior_correction"])
def test_bad_input_gets_one_clear_error(case, vit_dir, image_folders, tmp_path):
    out = ["--output_dir", str(tmp_path / "out"), "--do_train", *QUIET]
    if case == "npz_arrays":
        archive = tmp_path / "odd.npz"
        np.savez(archive, x_images=np.zeros((2, 8, 8), np.uint8), x_labels=np.zeros(2, np.int64))
        error, pattern = DataFormatError, r"no array 'train_images'.*arrays present: \['x_images', 'x_labels'\]"
        args = ["--train_file", str(archive), "--image_size", "8"]
    elif case == "column":
        saved = tmp_path / "ds"
        datasets.Dataset.from_dict({"img": [Image.new("L", (8, 8))] * 2, "label": [0, 1]}).save_to_disk(str(saved))
        error, pattern = DataFormatError, r"no column 'image'; columns present: \['img', 'label'\].*--image_column_name"
        args = ["--dataset_name", str(saved), "--model_name_or_path", str(vit_dir)]
    elif case == "not_a_backbone":
        bert = tmp_path / "bert"
        AutoModel.from_config(encoder_config()).save_pretrained(bert)
        error, pattern = InputError, r"a bert model, not a ViT-family backbone"
        args = ["--model_name_or_path", str(bert), "--train_dir", str(image_folders["train"])]
    elif case == "image_size":
        error, pattern = InputError, r"--image_size 30 is not a multiple of the patch size 8.*24 or 32"
        args = ["--model_name_or_path", str(vit_dir), "--train_dir", str(image_folders["train"]),
                "--image_size", "30"]
    elif case == "hold_out":
        error, pattern = InputError, r"--hold_out_validation takes validation data from the training data: drop " \
                                        r"--validation_dir"
        args = ["--train_dir", str(image_folders["train"]), "--validation_dir", str(image_folders["val"]),
                "--hold_out_validation"]
    elif case == "prior_correction":
        error, pattern = InputError, r"--prior_correction undoes the class balancing.*--balance none"
        args = ["--train_dir", str(image_folders["train"]), "--prior_correction"]
    else:
        error, pattern = DataFormatError, r"no test split.*arrays present: \['train_images', 'train_labels'\]"
        archive = tmp_path / "train_only.npz"
        np.savez(archive, train_images=np.zeros((4, 8, 8), np.uint8), train_labels=np.array([0, 1, 0, 1]))
        args = ["--train_file", str(archive), "--do_predict", "--image_size", "8"]
    with pytest.raises(error, match=pattern):
        run_args([*args, *out])
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("checkpoint-*"))
