"""ViTPatchClassifier beyond single-label: multi-label (sigmoid, per-label thresholds tuned on validation and shipped in
config.json) and regression, from the model to `medheads train-image` to the shipped image pipeline, checked in a
process where `import medheads` fails. Tiny random ViTs built in code; a tiny synthetic multi-label set written as
8-bit and 16-bit PNGs with a CSV of paths and `;`-joined labels (there is no real multi-label image set here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import backbone_config, make_image_processor

from medheads import ViTPatchClassifier, ViTPatchClassifierConfig
from medheads.training.image_classification import main

QUIET = ["--disable_tqdm", "true", "--dataloader_pin_memory", "false", "--report_to", "none"]
FINDINGS = ("dot", "left", "top")
TINY_VIT = ["--vit_hidden_size", "32", "--vit_layers", "2", "--vit_heads", "4", "--patch_size", "8",
            "--image_size", "32"]


def finding_image(present, rng, sixteen_bit: bool) -> Image.Image:
    pixels = 50 + rng.normal(0, 10, (32, 32))
    if "left" in present:
        pixels[:, :16] += 110
    if "top" in present:
        pixels[:16, :] += 70
    if "dot" in present:
        pixels[12:20, 12:20] += 90
    pixels = np.clip(pixels, 0, 255)
    if sixteen_bit:  # 12 bits stored in a 16-bit PNG, as X-rays exported from DICOM arrive
        return Image.fromarray((pixels * 16).astype(np.uint16))
    return Image.fromarray(pixels.astype(np.uint8), mode="L")


def write_multilabel_split(root: Path, n: int, seed: int, separator: str = ";") -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    rows = ["image,labels"]
    for i in range(n):
        present = [name for name in FINDINGS if rng.random() < 0.45]
        finding_image(present, rng, sixteen_bit=i % 3 == 0).save(root / f"img{i}.png")
        rows.append(f"img{i}.png,{separator.join(present)}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


@pytest.fixture(scope="module")
def multilabel_tables(tmp_path_factory):
    root = tmp_path_factory.mktemp("findings")
    return {split: write_multilabel_split(root / split, n, seed)
            for split, n, seed in (("train", 72, 0), ("val", 30, 1), ("test", 20, 2))}


PIPELINE_SCRIPT = r"""
import json, sys
sys.modules["medheads"] = None  # `import medheads` now fails: only the checkpoint's own code can run
from transformers import pipeline
folder, images = sys.argv[1], json.loads(sys.argv[2])
pipe = pipeline("image-classification", model=folder, trust_remote_code=True)
out = {"class": type(pipe).__module__ + "." + type(pipe).__name__,
       "default": pipe(images), "all": pipe(images[0], top_k=None), "top1": pipe(images[0], top_k=1)}
print("RESULT " + json.dumps(out))
"""


def run_blocked_pipeline(folder: Path, images: list[str], tmp_path: Path) -> dict:
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", PIPELINE_SCRIPT, str(folder), json.dumps(images)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [row for row in proc.stdout.splitlines() if row.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def test_multilabel_training_tunes_thresholds_and_the_shipped_pipeline_returns_the_same_label_sets(
        multilabel_tables, tmp_path):
    from medheads.training.cli import main as medheads_command

    out = tmp_path / "findings_model"
    status = medheads_command(["train-image", "--train_file", str(multilabel_tables["train"]), "--validation_file", str(multilabel_tables["val"]),
                   "--test_file", str(multilabel_tables["test"]), "--label_column_name", "labels", *TINY_VIT,
                   "--head", "cls_mean", "--output_dir", str(out), "--do_train", "--do_eval", "--do_predict",
                   "--num_train_epochs", "6", "--learning_rate", "3e-3", "--per_device_train_batch_size", "12",
                   "--seed", "0", *QUIET])
    assert status == 0
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"  # inferred from the ';' cells
    assert [config["id2label"][str(i)] for i in range(3)] == list(FINDINGS)
    thresholds = config["thresholds"]
    assert len(thresholds) == 3 and all(0 < t < 1 for t in thresholds)
    assert "pipeline_image_classification.MedheadsImageClassificationPipeline" in json.dumps(config["custom_pipelines"])
    for name in ("pipeline_image_classification.py", "image_loading.py"):
        assert (out / name).is_file()
    results = json.loads((out / "all_results.json").read_text())
    for key in ("eval_micro_f1", "eval_subset_accuracy", "eval_threshold_05_micro_f1", "predict_micro_f1",
                "predict_subset_accuracy", "predict_macro_roc_auc"):
        assert key in results, key
    assert results["predict_macro_roc_auc"] > 0.6  # it learned something from the 8- and 16-bit images

    rows = [line.split("\t") for line in (out / "predict_results.tsv").read_text().splitlines()[1:]]
    assert len(rows) == 20
    images = [row[1] for row in rows]
    script_sets = [set(filter(None, row[3].split(";"))) for row in rows]
    gold_sets = [set(filter(None, row[2].split(";"))) for row in rows]
    subset_accuracy = np.mean([a == b for a, b in zip(script_sets, gold_sets)])
    assert subset_accuracy == pytest.approx(results["predict_subset_accuracy"])

    result = run_blocked_pipeline(out, images, tmp_path)
    assert result["class"].startswith("transformers_modules.")  # the checkpoint's own pipeline code
    pipeline_sets = [{row["label"] for row in decision} for decision in result["default"]]
    assert pipeline_sets == script_sets  # the same decisions, 16-bit PNGs included
    assert len({frozenset(s) for s in pipeline_sets}) > 1  # not one constant answer
    for decision in result["default"]:
        scores = [row["score"] for row in decision]
        assert scores == sorted(scores, reverse=True)
        for row in decision:
            assert row["score"] >= thresholds[FINDINGS.index(row["label"])]
    assert sorted(row["label"] for row in result["all"]) == sorted(FINDINGS)  # top_k=None: every label
    assert len(result["top1"]) == 1 and result["top1"][0] == max(result["all"], key=lambda r: r["score"])

    # the card describes the multi-label model and its thresholds; the staged repo carries the pipeline code
    from medheads.hub.publishing import build_model_card, stage_model

    card = build_model_card(out, "org/findings", revision="0" * 40)
    text = str(card)
    assert "Multi-label image classification: any of 3 findings (dot, left, top)" in text
    assert "tuned for F1 on the validation split" in text and "| F1 | support | threshold |" in text
    assert 'print(classifier("image.png", top_k=None))' in text and "predict_labels(logits=logits)" in text
    index = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert index["Micro F1"] == round(results["predict_micro_f1"], 4)
    assert index["Subset accuracy (exact match)"] == round(results["predict_subset_accuracy"], 4)
    stage_model(out, "org/findings", staging_dir=tmp_path / "staged")
    assert {"pipeline_image_classification.py", "image_loading.py"} <= {p.name for p in (tmp_path / "staged").iterdir()}


def test_cells_joined_by_another_separator_stop_with_a_message_naming_the_flag(tmp_path):
    """Cells joined by '|' hold no ';': instead of training on label *combinations* as classes, the run stops and
    names --label_separator; with it the labels are read as multi-label."""
    from medheads.data import DataFormatError
    from medheads.training.arguments import MedheadsTrainingArguments
    from medheads.training.image_classification import ImageDataArguments, load_image_data

    table = write_multilabel_split(tmp_path / "pipes", 16, 5, separator="|")
    training_args = MedheadsTrainingArguments(output_dir=str(tmp_path / "o"), do_train=True)
    with pytest.raises(DataFormatError, match=r"look like lists joined by '\|'.*--label_separator '\|'"):
        load_image_data(ImageDataArguments(train_file=str(table), label_column_name="labels"), training_args)
    data = load_image_data(ImageDataArguments(train_file=str(table), label_column_name="labels",
                                              label_separator="|", train_val_split=0.25), training_args)
    assert data.problem_type == "multi_label_classification" and data.class_names == list(FINDINGS)
    assert np.asarray(data.splits["train"]["labels"]).shape == (12, 3)


def test_multihot_npz_trains_multilabel(tmp_path):
    """An .npz with a 2-D multi-hot label array (ChestMNIST layout) is multi-label without any flag."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 24), ("val", 12)):
        labels = (rng.random((n, 3)) < 0.5).astype(np.uint8)
        images = np.clip(60 + rng.normal(0, 10, (n, 16, 16)) + 120 * labels[:, :1, None], 0, 255).astype(np.uint8)
        arrays.update({f"{split}_images": images, f"{split}_labels": labels})
    np.savez(tmp_path / "chest.npz", **arrays)
    out = tmp_path / "npz_model"
    assert main(["--train_file", str(tmp_path / "chest.npz"), "--class_names", "effusion,mass,nodule",
                 "--vit_hidden_size", "32", "--vit_layers", "1", "--vit_heads", "4", "--patch_size", "8",
                 "--output_dir", str(out), "--do_train", "--do_eval", "--num_train_epochs", "1", *QUIET]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification" and len(config["thresholds"]) == 3
    assert "eval_subset_accuracy" in json.loads((out / "all_results.json").read_text())


def test_regression_trains_and_the_pipeline_returns_values(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "ages"
    root.mkdir()
    rows = ["image,age"]
    for i in range(30):
        age = float(rng.uniform(20, 80))
        pixels = np.clip(age * 2 + rng.normal(0, 5, (16, 16)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(root / f"{i}.png")
        rows.append(f"{i}.png,{age:.2f}")
    (root / "ages.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "age_model"
    assert main(["--train_file", str(root / "ages.csv"), "--label_column_name", "age", "--problem_type", "regression",
                 "--vit_hidden_size", "32", "--vit_layers", "1", "--vit_heads", "4", "--patch_size", "8",
                 "--output_dir", str(out), "--do_train", "--do_eval", "--num_train_epochs", "1", *QUIET]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["id2label"] == {"0": "age"}
    results = json.loads((out / "all_results.json").read_text())
    assert {"eval_mse", "eval_mae", "eval_rmse"} <= set(results)
    from transformers import pipeline

    pipe = pipeline("image-classification", model=str(out), trust_remote_code=True)
    model = ViTPatchClassifier.from_pretrained(out).eval()
    pixels = pipe.image_processor(Image.open(root / "0.png").convert("RGB"), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        value = float(model(pixel_values=pixels).logits[0, 0])
    output = pipe(str(root / "0.png"))
    assert [row["label"] for row in output] == ["age"]
    assert output[0]["score"] == pytest.approx(value, abs=1e-4)  # the raw value, no sigmoid

    from medheads.hub.publishing import build_model_card

    card = build_model_card(out, "org/age", revision="0" * 40)
    assert "Image regression of 1 value\n(age)" in str(card) or "Image regression of 1 value (age)" in str(card)
    index = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert index["Mean squared error"] == round(results["eval_mse"], 4)


def test_bad_problem_type_input_is_one_clear_error(multilabel_tables, tmp_path, capsys):
    from medheads.training.cli import main as medheads_command

    status = medheads_command(["train-image", "--train_file", str(multilabel_tables["train"]),
                               "--label_column_name", "labels", "--balance", "sampler", *TINY_VIT, "--output_dir", str(tmp_path / "x"), "--do_train", *QUIET])
    assert status == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 1
    assert "medheads train-image: error: --balance sampler balances classes of a single-label problem" in err
    status = main(["--train_file", str(multilabel_tables["train"]), "--label_column_name", "labels",
                   "--problem_type", "regression", *TINY_VIT, "--output_dir", str(tmp_path / "y"), "--do_train",
                   *QUIET])
    assert status == 2
    assert "is not a number" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------------------
# the model and the pipeline, without training
# --------------------------------------------------------------------------------------------------------------------


def tiny_model(problem_type, num_labels=3, thresholds=None, head="cls"):
    torch.manual_seed(0)
    return ViTPatchClassifier(ViTPatchClassifierConfig(
        backbone_config=backbone_config("vit"), head=head, problem_type=problem_type, thresholds=thresholds,
        id2label={i: f"finding_{i}" for i in range(num_labels)})).eval()


@pytest.mark.parametrize("problem_type, labels, reference", [
    ("multi_label_classification", torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]),
     lambda logits, labels: torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)),
    ("single_label_classification", torch.tensor([2, 0]),
     lambda logits, labels: torch.nn.functional.cross_entropy(logits, labels)),
    ("regression", torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.0, 3.0]]),
     lambda logits, labels: torch.nn.functional.mse_loss(logits, labels)),
])
def test_loss_follows_problem_type_and_trains(problem_type, labels, reference):
    """Defect 2 of the user-path issue: the config's problem_type used to be ignored (cross-entropy always)."""
    model = tiny_model(problem_type)
    model.train()
    pixels = torch.randn(2, 3, 32, 32)
    output = model(pixel_values=pixels, labels=labels)
    torch.testing.assert_close(output.loss, reference(output.logits.float(), labels))
    output.loss.backward()
    assert model.head[-1].weight.grad.abs().sum() > 0


def test_single_output_regression_accepts_flat_targets():
    model = tiny_model("regression", num_labels=1)
    out = model(pixel_values=torch.randn(4, 3, 32, 32), labels=torch.tensor([1.0, 2.0, 3.0, 4.0]))
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits[:, 0], torch.tensor([1., 2., 3., 4.])))


def test_thresholds_are_validated_and_applied():
    with pytest.raises(ValueError, match="`thresholds` has 2 values but the model has 3 labels"):
        tiny_model("multi_label_classification", thresholds=[0.5, 0.5])
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        tiny_model("multi_label_classification", thresholds=1.5)
    with pytest.raises(ValueError, match="Unknown problem_type"):
        ViTPatchClassifierConfig(backbone_config=backbone_config(), problem_type="multilabel")
    model = tiny_model("multi_label_classification", thresholds=[0.0, 1.0, 0.5])
    logits = torch.tensor([[-3.0, 3.0, 0.1], [2.0, 5.0, -0.1]])
    assert model.predict_labels(logits=logits) == [["finding_0", "finding_2"], ["finding_0"]]


def test_pipeline_decisions_for_each_problem_type(tmp_path):
    """In-process pipeline (medheads imported, in-memory model via PIPELINE_REGISTRY) on a path, a PIL image and a
    numpy array: multi-label returns the decided set (or []), top_k keeps its stock meaning; single-label is stock."""
    from transformers import pipeline

    processor = make_image_processor(32)
    image = (np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8)
    Image.fromarray(image, mode="L").save(tmp_path / "x.png")
    inputs = [str(tmp_path / "x.png"), Image.fromarray(image, mode="L"), image]

    multi = tiny_model("multi_label_classification")
    pipe = pipeline("image-classification", model=multi, image_processor=processor)
    assert type(pipe).__name__ == "MedheadsImageClassificationPipeline"
    pixels = processor(Image.fromarray(image, mode="L").convert("RGB"), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        probs = torch.sigmoid(multi(pixel_values=pixels).logits[0]).tolist()
    ranked = sorted(probs, reverse=True)
    for value in inputs:  # the same pixels every way in
        assert [row["score"] for row in pipe(value, top_k=None)] == pytest.approx(ranked, abs=1e-5)
    middle = ranked[1] - 1e-6  # float32 vs float64 sigmoid
    multi.config.thresholds = [middle] * 3  # exactly the two best labels reach it
    decided = pipe(inputs[0])
    assert [row["score"] for row in decided] == pytest.approx(ranked[:2], abs=1e-5)
    multi.config.thresholds = 1.0  # nothing reaches it
    assert pipe(inputs[0]) == []
    assert len(pipe(inputs[0], top_k=2)) == 2 and len(pipe(inputs[0], top_k=None)) == 3
    assert pipe(inputs, top_k=None)[2] == pipe(inputs[2], top_k=None)  # batches

    single = tiny_model("single_label_classification", num_labels=2)
    pipe = pipeline("image-classification", model=single, image_processor=processor)
    output = pipe(inputs[0])
    assert len(output) == 2 and sum(row["score"] for row in output) == pytest.approx(1.0)


def test_pipeline_reads_16bit_png_and_dicom_and_names_unreadable_files(tmp_path):
    from transformers import pipeline

    from medheads.models.image_loading import ImageLoadingError

    model = tiny_model("multi_label_classification")
    pipe = pipeline("image-classification", model=model, image_processor=make_image_processor(32))
    gradient = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)
    Image.fromarray(gradient).save(tmp_path / "x16.png")
    eight = np.clip(np.rint(gradient / 4095 * 255), 0, 255).astype(np.uint8)
    Image.fromarray(eight, mode="L").save(tmp_path / "x8.png")
    # the 16-bit file scores as its correctly scaled 8-bit version (not as a mostly white image)
    assert pipe(str(tmp_path / "x16.png"), top_k=None) == pipe(str(tmp_path / "x8.png"), top_k=None)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ImageLoadingError, match=r"broken\.png: unreadable or corrupt image"):
        pipe(str(tmp_path / "broken.png"))
    pytest.importorskip("pydicom")
    from test_image_loading import write_dicom

    write_dicom(tmp_path / "x.dcm", gradient)  # no window: the stored range, i.e. the same pixels as x8.png
    assert pipe(str(tmp_path / "x.dcm"), top_k=None) == pipe(str(tmp_path / "x8.png"), top_k=None)


def test_dataset_with_lists_of_class_ids_is_multilabel(tmp_path):
    import datasets

    from medheads.training.arguments import MedheadsTrainingArguments
    from medheads.training.image_classification import ImageDataArguments, load_image_data

    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random((16, 16)) * 255).astype(np.uint8)) for _ in range(10)]
    lists = [[0, 2], [1], [], [2], [0], [1, 2], [0], [2], [1], [0, 1]]
    table = datasets.Dataset.from_dict({"image": images, "label": lists}, features=datasets.Features(
        {"image": datasets.Image(), "label": datasets.Sequence(datasets.ClassLabel(names=["a", "b", "c"]))}))
    datasets.DatasetDict({"train": table, "validation": table}).save_to_disk(tmp_path / "ds")
    data = load_image_data(ImageDataArguments(dataset_name=str(tmp_path / "ds")),
                           MedheadsTrainingArguments(output_dir=str(tmp_path / "o"), do_train=True))
    assert data.problem_type == "multi_label_classification" and data.class_names == ["a", "b", "c"]
    expected = np.zeros((10, 3))
    for i, row in enumerate(lists):
        expected[i, row] = 1
    np.testing.assert_array_equal(np.asarray(data.splits["train"]["labels"]), expected)


def test_with_medheads_installed_a_folder_needs_no_remote_code(tmp_path):
    """config.json names the shipped pipeline (custom_pipelines, for users without medheads); with medheads imported
    the local classes and the registered pipeline serve the folder, so trust_remote_code is not required."""
    from transformers import pipeline

    model = tiny_model("multi_label_classification", thresholds=[0.2, 0.5, 0.8])
    model.save_pretrained(tmp_path / "m")
    make_image_processor(32).save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["custom_pipelines"]["image-classification"] == {
        "impl": "pipeline_image_classification.MedheadsImageClassificationPipeline",
        "pt": ["AutoModelForImageClassification"], "type": "image"}
    pipe = pipeline("image-classification", model=str(tmp_path / "m"))
    assert type(pipe).__module__ == "medheads.models.pipeline_image_classification"
    image = (np.random.default_rng(1).random((32, 32)) * 255).astype(np.uint8)
    assert pipe(image, top_k=None) == pipeline("image-classification", model=model,
                                               image_processor=make_image_processor(32))(image, top_k=None)
    pipe.save_pretrained(tmp_path / "again")  # a pipeline saved by a medheads user still ships its pipeline
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    assert again["custom_pipelines"] == saved["custom_pipelines"]
    assert (tmp_path / "again" / "pipeline_image_classification.py").is_file()


def test_empty_label_cells_without_separator_name_the_flag(tmp_path):
    """Multi-label data where every image has at most one finding holds no ';': the empty cells ('no finding') must
    not become a class named ''."""
    from medheads.data import DataFormatError
    from medheads.training.arguments import MedheadsTrainingArguments
    from medheads.training.image_classification import ImageDataArguments, load_image_data

    root = tmp_path / "sparse"
    root.mkdir()
    rows = ["image,labels"]
    for i, label in enumerate(["effusion", "", "nodule", "", "effusion", "nodule", "", "effusion"]):
        Image.fromarray(np.full((8, 8), 30 * i, dtype=np.uint8), mode="L").save(root / f"{i}.png")
        rows.append(f"{i}.png,{label}")
    (root / "t.csv").write_text("\n".join(rows) + "\n")
    args = MedheadsTrainingArguments(output_dir=str(tmp_path / "o"), do_train=True)
    with pytest.raises(DataFormatError, match="--problem_type multi_label_classification"):
        load_image_data(ImageDataArguments(train_file=str(root / "t.csv"), label_column_name="labels"), args)
    data = load_image_data(ImageDataArguments(train_file=str(root / "t.csv"), label_column_name="labels",
                                              problem_type="multi_label_classification", train_val_split=0.25), args)
    assert data.class_names == ["effusion", "nodule"]
    labels = np.asarray(list(data.splits["train"]["labels"]) + list(data.splits["validation"]["labels"]))
    assert labels.sum() == 5 and (labels.sum(axis=1) == 0).sum() == 3


@pytest.mark.parametrize("settings", [
    {},  # the tiny processor: 32 px, resize
    {"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "size": {"height": 28, "width": 28}},
    {"do_normalize": False},
    {"size": {"height": 20, "width": 24}, "resample": 3},  # non-square, bicubic
])
def test_fast_preprocessing_gives_the_processors_pixels_bit_for_bit(settings):
    """The pipeline's table-lookup preprocessing equals the image processor on what load_image returns: images of
    other sizes (resized), grayscale, RGBA, palette, 16-bit and array inputs."""
    from transformers import pipeline

    from medheads.models.image_loading import load_image
    from medheads.models.pipeline_image_classification import fast_pixel_values, pixel_table

    processor = make_image_processor(32)
    for key, value in settings.items():
        setattr(processor, key, value)
    table = pixel_table(processor)
    assert table is not None and table.shape == (3, 256)
    rng = np.random.default_rng(0)
    gray = (rng.random((28, 28)) * 255).astype(np.uint8)
    sources = [Image.fromarray(gray, mode="L"), gray, Image.fromarray((rng.random((40, 33, 3)) * 255).astype(np.uint8)),
               Image.fromarray((rng.random((32, 32, 4)) * 255).astype(np.uint8), mode="RGBA"),
               Image.fromarray(gray, mode="L").convert("P"), Image.fromarray((gray.astype(np.uint16) * 16))]
    pipe = pipeline("image-classification", model=tiny_model("single_label_classification", num_labels=2),
                    image_processor=processor)
    for source in sources:
        image = load_image(source)
        expected = processor(images=image, return_tensors="np")["pixel_values"]
        fast = fast_pixel_values(image, processor, table)
        assert fast.dtype == expected.dtype and np.array_equal(fast, expected)
        assert torch.equal(pipe.preprocess(source)["pixel_values"], torch.from_numpy(expected))


def test_fast_preprocessing_steps_aside_for_what_it_does_not_cover():
    from medheads.models.pipeline_image_classification import fast_pixel_values, pixel_table

    processor = make_image_processor(32)
    processor.do_center_crop, processor.crop_size = True, {"height": 16, "width": 16}
    assert pixel_table(processor) is None  # cropping: the processor runs as before
    processor = make_image_processor(32)
    processor.size = {"shortest_edge": 32}
    assert pixel_table(processor) is None
    processor = make_image_processor(32)
    assert fast_pixel_values(Image.new("L", (32, 32)), processor, pixel_table(processor)) is None  # not RGB
