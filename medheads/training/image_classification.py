"""Train and evaluate a `ViTPatchClassifier`: the logic behind `scripts/train_image_classifier.py`.

Modelled on transformers' `examples/pytorch/image-classification/run_image_classification.py`: `HfArgumentParser`
over `ImageModelArguments`, `ImageDataArguments` and `MedheadsTrainingArguments` (`--help`, or one JSON file of arguments),
`Trainer`, and `trainer.save_metrics` writing `all_results.json`. On top of that:

* data from a `datasets` image dataset (Hub id or `load_from_disk` folder), `root/<class>/<image>` folders, or an
  `.npz` archive with `<split>_images` / `<split>_labels` arrays (MedMNIST layout);
* three ways to get a model: a pretrained ViT-family backbone (`--model_name_or_path`), a saved `ViTPatchClassifier`
  to continue from, or a new random ViT sized by `--vit_hidden_size`, `--vit_layers`, `--vit_heads`, `--patch_size`
  (or `--backbone_config_json`, or `--from_scratch` with a backbone's architecture);
* a frozen backbone trains the head on cached token features (`medheads.training.features.cached_features`); an
  unfrozen one trains end to end, optionally with PIL-only augmentation (no torchvision);
* class-balanced batches (`--balance sampler`) or a class-weighted loss (`--balance loss`), and optionally
  (`--prior_correction`) the training class frequencies put back into the output bias afterwards;
* every input problem is reported once, before training, as an `InputError` (or its `DataFormatError`).

The output folder is a complete `image-classification` pipeline folder (model + remote code + image processor) with
`all_results.json`, `metrics.json`, `classification_report.txt` and plots. Never imported by modeling files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoConfig, PreTrainedConfig, Trainer, set_seed

from .. import ViTPatchClassifier, ViTPatchClassifierConfig
from ..command_line import explicit_keys
from ..models.configuration_vit_patch_classifier import HEADS
from ..data import DataFormatError, load_training_image, read_image_folder, read_image_table, read_npz_images
from ..errors import InputError
from .features import cached_features
from ..metrics import classification_metrics, metric_key, multilabel_metrics, sigmoid, softmax
from .arguments import DataArguments, MedheadsTrainingArguments, ModelArguments
from .common import (
    dataclass_dict, load_dataset_dict, resume_checkpoint, run_training_command, save_split_metrics, setup_logging,
    write_run_summary,
)
from .common import prepare_output_dir
from .lr_finder import maybe_find_learning_rate

logger = logging.getLogger("medheads")

SCRIPT = "train_image_classifier.py"
PROG = "medheads train-image"
SPLITS = ("train", "validation", "test")
VALIDATION_SPLIT_NAMES = ("validation", "val", "valid", "dev")
TEST_SPLIT_NAMES = ("test",)
# A new random ViT, when a size option is left out.
NEW_VIT_DEFAULTS = {"vit_hidden_size": 192, "vit_layers": 6, "vit_heads": 3, "patch_size": 4}
SIZE_OPTIONS = ("vit_hidden_size", "vit_layers", "vit_heads", "vit_intermediate_size", "patch_size")
DEFAULT_MEAN_STD = [0.5, 0.5, 0.5]
SINGLE_LABEL, MULTI_LABEL, REGRESSION = "single_label_classification", "multi_label_classification", "regression"
PROBLEM_TYPES = (SINGLE_LABEL, MULTI_LABEL, REGRESSION)
TABLE_EXTENSIONS = (".csv", ".tsv", ".tab", ".json", ".jsonl")
# Part of the feature-cache key: features computed before images went through medheads' own reader (which changed how
# 16-bit PNGs read) must not be reused.
IMAGE_READER = "medheads.models.image_loading/1"
UNTUNED = "threshold_05"  # infix of multi-label metrics at the default 0.5 threshold: eval_threshold_05_micro_f1


# --------------------------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class ImageModelArguments(ModelArguments):
    """Which model to train: a pretrained backbone, a saved medheads model, or a new random ViT."""

    model_name_or_path: str | None = field(default=None, metadata={"help": (
        "A ViT-family backbone (vit, deit, ... folder or Hub id) to put the head on, or a saved ViTPatchClassifier "
        "folder to continue from. Leave it out to train a new small random ViT sized by --vit_hidden_size, "
        "--vit_layers, --vit_heads, --patch_size (no pretrained weights needed).")})
    from_scratch: bool = field(default=False, metadata={"help": (
        "Use only the architecture of --model_name_or_path's backbone, with new random weights.")})
    backbone_config_json: str | None = field(default=None, metadata={"help": (
        "A JSON file holding a ViT-family backbone config (with `model_type`, e.g. vit or deit) for a new random "
        "backbone; the size options override its fields.")})
    vit_hidden_size: int | None = field(default=None, metadata={"help": "New ViT: width (default 192)."})
    vit_layers: int | None = field(default=None, metadata={"help": "New ViT: number of layers (default 6)."})
    vit_heads: int | None = field(default=None, metadata={"help": "New ViT: attention heads (default 3)."})
    vit_intermediate_size: int | None = field(default=None, metadata={"help": "New ViT: MLP width (default 4x "
                                                                              "width)."})
    vit_dropout: float = field(default=0.0, metadata={"help": "New ViT: hidden and attention dropout."})
    patch_size: int | None = field(default=None, metadata={"help": "New ViT: patch side in pixels (default 4)."})
    head: Literal["cls", "cls_mean", "patch"] = field(default="patch", metadata={"help": (
        "cls: linear on the CLS token; cls_mean: linear on CLS + mean of patch tokens; patch: linear over the token "
        "axis (all tokens -> --patch_projection_size), ReLU, flatten, linear.")})
    patch_projection_size: int = field(default=256, metadata={"help": "Width of the patch head's token projection."})
    head_dropout: float = field(default=0.0, metadata={"help": "Dropout before the head's last linear layer."})
    image_size: int | None = field(default=None, metadata={"help": (
        "Input resolution (a multiple of the patch size). Default: the backbone's own; for a new ViT, the larger "
        "side of the first training image.")})
    freeze_backbone: bool = field(default=True, metadata={"help": (
        "Keep the backbone fixed and train the head only. A new random ViT trains end to end unless this flag is "
        "given explicitly.")})
    use_feature_cache: bool | None = field(default=None, metadata={"help": (
        "Compute the frozen backbone's token features once, cache them on disk and train the head on them. Default: "
        "True when the backbone is frozen and --augment is off.")})
    feature_cache_dir: str | None = field(default=None, metadata={"help": (
        "Where cached features go (default $MEDHEADS_FEATURE_CACHE or the datasets cache).")})


@dataclass
class ImageDataArguments(DataArguments):
    """Where the images come from. One of --dataset_name, --train_dir (and --validation_dir, --test_dir) or
    --train_file (an .npz archive; --validation_file / --test_file, or splits of the same archive)."""

    dataset_name: str | None = field(default=None, metadata={"help": (
        "A `datasets` image dataset: Hub id or a folder written by save_to_disk.")})
    problem_type: str | None = field(default=None, metadata={"help": (
        "single_label_classification (one class per image), multi_label_classification (any number of findings "
        "per image: a sigmoid per label, thresholds tuned on validation) or regression (numeric targets). Default: "
        "inferred from the labels (lists, multi-hot rows or cells holding --label_separator: multi-label; "
        "otherwise single-label) and logged.")})
    label_separator: str = field(default=";", metadata={"help": (
        "Multi-label: separator of the label names in one cell of a --train_file table, e.g. effusion;nodule. An "
        "empty cell means no finding.")})
    tune_thresholds: bool = field(default=True, metadata={"help": (
        "Multi-label: after training, tune one decision threshold per label on the validation split (best F1 per "
        "label) and save them in config.thresholds, which the pipeline applies.")})
    threshold_min_positives: int = field(default=1, metadata={"help": (
        "Multi-label: tune a label's threshold only if validation has at least this many images with it; rarer "
        "labels keep 0.5.")})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Its configuration name."})
    train_dir: str | None = field(default=None, metadata={"help": (
        "Training images, root/<class>/<image> (PNG, JPEG, 16-bit PNG/TIFF, DICOM .dcm with medheads[dicom]).")})
    validation_dir: str | None = field(default=None, metadata={"help": "Validation images, root/<class>/<image>."})
    test_dir: str | None = field(default=None, metadata={"help": "Test images (with --do_predict)."})
    train_split: str = field(default="train", metadata={"help": "Training split name (dataset or .npz prefix)."})
    validation_split: str | None = field(default=None, metadata={"help": (
        "Validation split name; default the first of validation, val, valid, dev that exists.")})
    test_split: str | None = field(default=None, metadata={"help": "Test split name; default test."})
    image_column_name: str = field(default="image", metadata={"help": (
        "Image column of --dataset_name or of a --train_file table (paths relative to the table's folder).")})
    label_column_name: str = field(default="label", metadata={"help": (
        "Label column of --dataset_name or of a --train_file table: a class name or id; for multi-label, names "
        "joined by --label_separator (or a list); for regression, a number.")})
    class_names: str | None = field(default=None, metadata={"help": (
        "Comma-separated class names in class-id order, e.g. normal,pneumonia (default: the dataset's ClassLabel "
        "names, the class folder names, or the ids).")})
    train_val_split: float = field(default=0.15, metadata={"help": (
        "Fraction of the training data held out (stratified) for validation when no validation split is given; 0 "
        "trains without evaluation.")})
    hold_out_validation: bool = field(default=False, metadata={"help": (
        "Take the validation data (model selection) from the training data with --train_val_split even when the "
        "data has a validation split, so that split stays untouched for a final --do_predict (--test_split val).")})
    balance: Literal["none", "sampler", "loss"] = field(default="none", metadata={"help": (
        "none; sampler: class-balanced batches (WeightedRandomSampler); loss: class-weighted cross-entropy.")})
    prior_correction: bool = field(default=False, metadata={"help": (
        "With --balance: after training, add log(K x training frequency) to each of the K classes' output bias. A "
        "balanced run learns as if every class were equally common, which tilts its decisions towards the rare "
        "classes; this restores the training data's class frequencies (the scores' ranking within a class, hence "
        "ROC AUC, is unchanged). The shifts are saved in config.prior_correction.")})
    augment: bool = field(default=False, metadata={"help": (
        "Random crop, rotation and horizontal flip of training images (PIL). Implies an uncached backbone.")})
    augment_rotation: float = field(default=10.0, metadata={"help": "Largest rotation in degrees."})
    augment_crop_scale: float = field(default=0.8, metadata={"help": (
        "Smallest area fraction of the random square crop (resized back to the image size); 1 turns it off.")})
    augment_hflip: float = field(default=0.5, metadata={"help": "Probability of a horizontal flip."})

    def names(self) -> list[str] | None:
        if not self.class_names:
            return None
        names = [name.strip() for name in self.class_names.split(",")]
        if any(not name for name in names) or len(set(names)) != len(names):
            raise InputError(f"--class_names {self.class_names!r} must be distinct, non-empty, comma-separated.")
        return names


def check_arguments(model_args: ImageModelArguments, data_args: ImageDataArguments, training_args) -> None:
    """Flag combinations that cannot work, reported before anything is loaded."""
    sources = [name for name in ("dataset_name", "train_dir", "train_file") if getattr(data_args, name)]
    if training_args.do_train and not sources:
        raise InputError("No training data: pass --dataset_name, --train_dir (root/<class>/<image>) or "
                            "--train_file (an .npz archive, or a CSV / TSV / JSON-lines table of image paths and "
                            "labels).")
    if len(sources) > 1:
        raise InputError(f"Pass one training source, not {' and '.join('--' + s for s in sources)}.")
    for name in ("train_file", "validation_file", "test_file"):
        path = getattr(data_args, name)
        if path and not str(path).lower().endswith((".npz", *TABLE_EXTENSIONS)):
            raise InputError(f"--{name} {path}: expected an .npz archive (<split>_images/<split>_labels arrays) or "
                                f"a table of image paths and labels ({', '.join(TABLE_EXTENSIONS)}); use --train_dir "
                                "for image folders or --dataset_name for a dataset.")
    if data_args.problem_type is not None and data_args.problem_type not in PROBLEM_TYPES:
        raise InputError(f"--problem_type {data_args.problem_type!r} is not known: use one of "
                            f"{', '.join(PROBLEM_TYPES)}.")
    if data_args.balance != "none" and data_args.problem_type in (MULTI_LABEL, REGRESSION):
        raise InputError(f"--balance {data_args.balance} balances classes of a single-label problem; drop it for "
                            f"--problem_type {data_args.problem_type}.")
    if data_args.prior_correction and data_args.balance == "none":
        raise InputError("--prior_correction undoes the class balancing of --balance sampler / loss: with --balance "
                         "none there is nothing to correct; drop it or set --balance.")
    if not data_args.label_separator:
        raise InputError("--label_separator must not be empty.")
    if data_args.threshold_min_positives < 1:
        raise InputError(f"--threshold_min_positives must be at least 1, got {data_args.threshold_min_positives}.")
    if not 0 <= data_args.train_val_split < 1:
        raise InputError(f"--train_val_split must be in [0, 1), got {data_args.train_val_split}.")
    if data_args.hold_out_validation:
        if data_args.train_val_split == 0:
            raise InputError("--hold_out_validation needs --train_val_split > 0 (the fraction held out).")
        given = [f"--{name}" for name in ("validation_dir", "validation_file", "validation_split")
                 if getattr(data_args, name)]
        if given:
            raise InputError(f"--hold_out_validation takes validation data from the training data: drop "
                                f"{', '.join(given)}.")
    if not 0 < data_args.augment_crop_scale <= 1:
        raise InputError(f"--augment_crop_scale must be in (0, 1], got {data_args.augment_crop_scale}.")
    if not 0 <= data_args.augment_hflip <= 1:
        raise InputError(f"--augment_hflip must be in [0, 1], got {data_args.augment_hflip}.")
    if model_args.head not in HEADS:
        raise InputError(f"--head must be one of {', '.join(HEADS)}.")
    for name in (*SIZE_OPTIONS, "image_size", "patch_projection_size"):
        value = getattr(model_args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name} must be positive, got {value}.")
    new_backbone = model_args.model_name_or_path is None or model_args.from_scratch
    given_sizes = [name for name in SIZE_OPTIONS if getattr(model_args, name) is not None]
    if given_sizes and not new_backbone and not model_args.backbone_config_json:
        raise InputError(
            f"{', '.join('--' + n for n in given_sizes)} size a new random ViT, but --model_name_or_path "
            f"{model_args.model_name_or_path} is used with its pretrained weights: drop the size options, or add "
            "--from_scratch to train its architecture from random weights (the size options then override it).")
    if model_args.backbone_config_json and model_args.model_name_or_path:
        raise InputError("Pass --backbone_config_json (a new random backbone) or --model_name_or_path, not both.")
    if model_args.use_feature_cache and data_args.augment:
        raise InputError("--use_feature_cache computes each image's features once, so it cannot see --augment's "
                            "random changes: drop one of them.")


# --------------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class ImageData:
    """The splits as `datasets.Dataset`s with columns `image` (datasets.Image, or a file path read by
    `medheads.data.load_training_image`) and `labels` (ClassLabel ids for single-label, multi-hot float rows for
    multi-label, float rows for regression)."""

    splits: dict[str, datasets.Dataset]
    class_names: list[str]
    sources: dict[str, str]  # split -> where it came from, for logs and error messages
    signatures: dict[str, str]  # split -> content signature of image files read by path (feature-cache key)
    problem_type: str = SINGLE_LABEL


def _npz_arrays(path: str) -> list[str]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return sorted(archive.files)
    except FileNotFoundError:
        raise DataFormatError(f"{path}: no such file") from None
    except Exception:  # not an archive: let the reader word the error
        read_npz_images(path, "train")
        raise


def _npz_split(path: str, split: str) -> tuple[datasets.Dataset, str]:
    images, labels = read_npz_images(path, split, label_matrix=True)
    if len(images) == 0:
        raise DataFormatError(f"{path}: split {split!r} has no images")
    value = datasets.Value("float64" if labels.dtype.kind == "f" else "int64")
    label_feature = value if labels.ndim == 1 else datasets.Sequence(value, length=labels.shape[1])
    table = datasets.Dataset.from_dict(
        {"image": list(images), "labels": labels.tolist()},
        features=datasets.Features({"image": datasets.Image(), "labels": label_feature}),
    )
    return table, f"{path} [{split}]"


def _paths_signature(paths: Sequence[str]) -> str:
    stats = [(p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in paths]
    return datasets.fingerprint.Hasher.hash(stats)


def _folder_split(root: str) -> tuple[datasets.Dataset, str, str]:
    """Image paths (read by `load_training_image`, as the pipeline reads them: 16-bit PNG, DICOM) and class names;
    `read_image_folder` has read every image once already."""
    paths, names, ids = read_image_folder(root)
    table = datasets.Dataset.from_dict(
        {"image": paths, "labels": [names[i] for i in ids]},
        features=datasets.Features({"image": datasets.Value("string"), "labels": datasets.Value("string")}),
    )
    return table, str(root), _paths_signature(paths)


def _table_split(path: str, data_args: "ImageDataArguments") -> tuple[datasets.Dataset, str, str]:
    """A CSV / TSV / JSON-lines table of image paths (relative to the table) and label cells."""
    paths, cells = read_image_table(path, data_args.image_column_name, data_args.label_column_name)
    if any(isinstance(cell, list) for cell in cells):
        cells = [cell if isinstance(cell, list) else [cell] for cell in cells]
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for cell in cells for x in cell):
            feature = datasets.Sequence(datasets.Value("float64"))
        else:
            cells = [[str(x) for x in cell] for cell in cells]
            feature = datasets.Sequence(datasets.Value("string"))
    elif cells and all(isinstance(cell, (int, float)) and not isinstance(cell, bool) for cell in cells):
        feature = datasets.Value("float64" if any(isinstance(c, float) for c in cells) else "int64")
    else:
        cells, feature = [str(cell) for cell in cells], datasets.Value("string")
    table = datasets.Dataset.from_dict(
        {"image": paths, "labels": cells},
        features=datasets.Features({"image": datasets.Value("string"), "labels": feature}))
    return table, str(path), _paths_signature(paths)


def _dataset_split(loaded, name: str, split: str, data_args: ImageDataArguments) -> tuple[datasets.Dataset, str]:
    table = loaded[split]
    image_column, label_column = data_args.image_column_name, data_args.label_column_name
    for column, flag in ((image_column, "--image_column_name"), (label_column, "--label_column_name")):
        if column not in table.column_names:
            raise DataFormatError(f"{name} [{split}]: no column {column!r}; columns present: {table.column_names} "
                                  f"(pass {flag})")
    table = table.select_columns([image_column, label_column])
    image_feature = table.features[image_column]
    if isinstance(image_feature, datasets.Value) and image_feature.dtype in ("string", "large_string"):
        pass  # image paths, read by load_training_image (16-bit PNG, DICOM) like the pipeline reads them
    elif not isinstance(image_feature, datasets.Image):
        raise DataFormatError(f"{name} [{split}]: column {image_column!r} holds {image_feature}, not images or image "
                              "paths (pass --image_column_name)")
    label_feature = table.features[label_column]
    if not (isinstance(label_feature, datasets.ClassLabel) or _is_list_feature(label_feature) or (
            isinstance(label_feature, datasets.Value) and (label_feature.dtype.startswith(("int", "float"))
                                                           or label_feature.dtype in ("string", "large_string")))):
        raise DataFormatError(f"{name} [{split}]: label column {label_column!r} holds {label_feature}; expected one "
                              "class id or class name per image, a list of labels (multi-label) or numbers "
                              "(regression) (pass --label_column_name)")
    if image_column != "image":
        table = table.rename_column(image_column, "image")
    if label_column != "labels":
        table = table.rename_column(label_column, "labels")
    return table, f"{name} [{split}]"


def _first_present(names: Sequence[str], present: Sequence[str]) -> str | None:
    return next((name for name in names if name in present), None)


def _unify_labels(splits: dict[str, datasets.Dataset], sources: dict[str, str],
                  given: list[str] | None) -> tuple[dict[str, datasets.Dataset], list[str]]:
    """Map every split's labels to ids of one class list and cast them to `ClassLabel`."""
    kinds = {split: table.features["labels"] for split, table in splits.items()}
    string_labels = any(isinstance(f, datasets.Value) and "string" in f.dtype for f in kinds.values())
    if string_labels:
        if not all(isinstance(f, datasets.Value) and "string" in f.dtype for f in kinds.values()):
            raise DataFormatError("Some splits label images by class name and others by class id: use one kind "
                                  f"({', '.join(f'{sources[s]}: {kinds[s]}' for s in splits)}).")
        first = "train" if "train" in splits else next(iter(splits))
        names = given or sorted(set(splits[first]["labels"]))
        index = {name: i for i, name in enumerate(names)}
        for split, table in splits.items():
            unknown = sorted(set(table["labels"]) - set(index))
            if unknown:
                raise DataFormatError(f"{sources[split]}: classes {unknown} are not among {names} "
                                      f"({'--class_names' if given else 'the training classes'})")
        mapping = lambda batch: {"labels": [index[label] for label in batch["labels"]]}  # noqa: E731
        splits = {split: table.map(mapping, batched=True, desc=f"Class ids ({split})",
                                   features=datasets.Features({**table.features, "labels": datasets.Value("int64")}))
                  for split, table in splits.items()}
    else:
        label_names = next((f.names for f in kinds.values() if isinstance(f, datasets.ClassLabel)), None)
        largest = max(int(np.max(table["labels"])) for table in splits.values())
        smallest = min(int(np.min(table["labels"])) for table in splits.values())
        names = given or label_names or [str(i) for i in range(largest + 1)]
        if smallest < 0 or largest >= len(names):
            worst = min(splits, key=lambda s: min(splits[s]["labels"])) if smallest < 0 else \
                max(splits, key=lambda s: max(splits[s]["labels"]))
            raise DataFormatError(f"{sources[worst]}: class id {smallest if smallest < 0 else largest} is outside "
                                  f"0..{len(names) - 1} ({len(names)} classes: {names}); fix --class_names")
    label_feature = datasets.ClassLabel(names=list(names))
    return ({split: table.cast(datasets.Features({"image": table.features["image"], "labels": label_feature}))
             for split, table in splits.items()}, list(names))


def _is_list_feature(feature) -> bool:
    return isinstance(feature, (datasets.Sequence, list)) or type(feature).__name__ in ("List", "LargeList")


def _inner_dtype(feature) -> str:
    inner = getattr(feature, "feature", None)
    if inner is None and isinstance(feature, list) and feature:
        inner = feature[0]
    return str(getattr(inner, "dtype", "")) or type(inner).__name__


def infer_problem_type(splits: dict[str, datasets.Dataset], sources: dict[str, str],
                       data_args: ImageDataArguments) -> tuple[str, str]:
    """(problem type, why): --problem_type when given; list-valued or multi-hot labels, or string cells holding
    --label_separator: multi-label; otherwise single-label. Numbers with fractions without the flag are refused."""
    if data_args.problem_type:
        return data_args.problem_type, "--problem_type"
    first = "train" if "train" in splits else next(iter(splits))
    feature = splits[first].features["labels"]
    if _is_list_feature(feature):
        return MULTI_LABEL, f"the labels of {_display(sources[first])} are lists / multi-hot rows"
    if isinstance(feature, datasets.Value) and "string" in feature.dtype:
        separator = data_args.label_separator
        listed = [cell for cell in splits[first]["labels"] if separator in cell]
        if listed:
            return MULTI_LABEL, f"{len(listed)} label cells hold {separator!r} (e.g. {listed[0]!r})"
        cells = set(splits[first]["labels"])
        for other in ("|", ",", ";"):
            if other == separator:
                continue
            joined = [cell for cell in cells if other in cell]
            parts = {part.strip() for cell in joined for part in cell.split(other)}
            if joined and (parts & cells or len(parts) < len(joined)):
                raise DataFormatError(
                    f"{sources[first]}: label cells such as {joined[0]!r} look like lists joined by {other!r}, not "
                    f"{separator!r}: pass --label_separator {other!r} (multi-label), or --problem_type "
                    "single_label_classification if each cell is one class name")
        if "" in cells:
            raise DataFormatError(
                f"{sources[first]}: some label cells are empty and none holds {separator!r}: if an empty cell means "
                "'no finding', pass --problem_type multi_label_classification; otherwise give every image its class")
        return SINGLE_LABEL, f"one label per image and no {separator!r} in any cell"
    if isinstance(feature, datasets.Value) and feature.dtype.startswith("float"):
        values = np.asarray(splits[first]["labels"], dtype=float)
        if np.any(values != np.round(values)):
            raise DataFormatError(f"{sources[first]}: the labels are numbers with fractions ({values[:3].tolist()} "
                                  "...): pass --problem_type regression, or give class ids / names")
    return SINGLE_LABEL, "one class id per image"


def _cast_labels(table: datasets.Dataset, values: list, feature, desc: str) -> datasets.Dataset:
    features = datasets.Features({"image": table.features["image"], "labels": feature})
    return table.remove_columns("labels").add_column("labels", values).cast(features)


def _multi_label_targets(splits: dict[str, datasets.Dataset], sources: dict[str, str], given: list[str] | None,
                         separator: str) -> tuple[dict[str, datasets.Dataset], list[str]]:
    """Multi-hot float rows from `a;b` cells, lists of names, or 0/1 rows."""
    per_split, kinds = {}, {}
    for split, table in splits.items():
        feature, cells = table.features["labels"], table["labels"]
        inner = getattr(feature, "feature", None)
        if _is_list_feature(feature) and isinstance(inner, datasets.ClassLabel):  # lists of class ids
            given = given or list(inner.names)
            per_split[split], kinds[split] = [[inner.names[int(i)] for i in cell] for cell in cells], "names"
        elif _is_list_feature(feature) and not _inner_dtype(feature).startswith(("string", "large_string")):
            rows = np.asarray(cells, dtype=float)
            if rows.ndim != 2 or not np.isin(rows, (0.0, 1.0)).all():
                raise DataFormatError(f"{sources[split]}: multi-label rows must be multi-hot 0/1 vectors of one "
                                      "length")
            per_split[split], kinds[split] = rows, "hot"
        elif _is_list_feature(feature):
            per_split[split], kinds[split] = [[str(x).strip() for x in cell if str(x).strip()] for cell in cells],                 "names"
        elif isinstance(feature, datasets.Value) and "string" in feature.dtype:
            per_split[split] = [[part.strip() for part in cell.split(separator) if part.strip()] for cell in cells]
            kinds[split] = "names"
        else:
            raise DataFormatError(f"{sources[split]}: labels of type {feature} cannot be multi-label: give label "
                                  f"names joined by {separator!r}, lists of names, or multi-hot rows")
    if len(set(kinds.values())) > 1:
        raise DataFormatError("Some splits give multi-label targets as names and others as multi-hot rows: use one "
                              f"kind ({', '.join(f'{sources[s]}: {kinds[s]}' for s in splits)}).")
    first = "train" if "train" in splits else next(iter(splits))
    if kinds[first] == "hot":
        width = per_split[first].shape[1]
        names = given or [str(j) for j in range(width)]
        for split, rows in per_split.items():
            if rows.shape[1] != len(names):
                raise DataFormatError(f"{sources[split]}: multi-hot rows have {rows.shape[1]} columns but there are "
                                      f"{len(names)} labels ({'--class_names' if given else sources[first]})")
        hot = {split: rows.astype(np.float32) for split, rows in per_split.items()}
    else:
        names = given or sorted({name for row in per_split[first] for name in row})
        index = {name: j for j, name in enumerate(names)}
        hot = {}
        for split, rows in per_split.items():
            unknown = sorted({name for row in rows for name in row} - set(index))
            if unknown:
                raise DataFormatError(f"{sources[split]}: labels {unknown[:10]} are not among the "
                                      f"{'--class_names' if given else 'training labels'} {names[:20]}")
            matrix = np.zeros((len(rows), len(names)), dtype=np.float32)
            for i, row in enumerate(rows):
                matrix[i, [index[name] for name in row]] = 1.0
            hot[split] = matrix
    feature = datasets.Sequence(datasets.Value("float32"), length=len(names))
    return ({split: _cast_labels(table, hot[split].tolist(), feature, split) for split, table in splits.items()},
            list(names))


def _regression_targets(splits: dict[str, datasets.Dataset], sources: dict[str, str], given: list[str] | None,
                        separator: str, column: str) -> tuple[dict[str, datasets.Dataset], list[str]]:
    """Float rows (one value per output) from numbers, number lists or `1.5;2` cells."""
    values = {}
    for split, table in splits.items():
        cells = table["labels"]
        rows = []
        for i, cell in enumerate(cells):
            parts = cell if isinstance(cell, list) else str(cell).split(separator) if isinstance(cell, str) else [cell]
            try:
                rows.append([float(part) for part in parts])
            except (TypeError, ValueError):
                raise DataFormatError(f"{sources[split]}: row {i}: regression target {cell!r} is not a number "
                                      f"(several outputs: join them with {separator!r})") from None
        widths = {len(row) for row in rows}
        if len(widths) != 1:
            raise DataFormatError(f"{sources[split]}: regression rows have different numbers of outputs {widths}")
        array = np.asarray(rows, dtype=np.float64)
        if not np.isfinite(array).all():
            raise DataFormatError(f"{sources[split]}: regression targets hold NaN or infinite values")
        values[split] = array
    first = "train" if "train" in splits else next(iter(splits))
    width = values[first].shape[1]
    names = given or ([column] if width == 1 else [f"{column}_{j}" for j in range(width)])
    for split, array in values.items():
        if array.shape[1] != len(names):
            raise DataFormatError(f"{sources[split]}: {array.shape[1]} regression outputs but {len(names)} names "
                                  f"({names})")
    feature = datasets.Sequence(datasets.Value("float32"), length=len(names))
    return ({split: _cast_labels(table, values[split].tolist(), feature, split) for split, table in splits.items()},
            list(names))


def load_image_data(data_args: ImageDataArguments, training_args, model_args: ImageModelArguments | None = None
                    ) -> ImageData:
    """Read the splits the run needs (train with --do_train, validation with --do_train/--do_eval, test with
    --do_predict), with one clear `DataFormatError` for anything unreadable."""
    model_args = model_args or ImageModelArguments()
    wanted = [split for split, on in (("train", training_args.do_train),
                                      ("validation", training_args.do_train or training_args.do_eval),
                                      ("test", training_args.do_predict)) if on]
    splits, sources, signatures = {}, {}, {}
    to_check = []  # splits read from image files (npz arrays need no check)
    loaded = load_dataset_dict(data_args.dataset_name, data_args.dataset_config_name, cache_dir=model_args.cache_dir,
                               token=model_args.token, single_split=data_args.train_split) \
        if data_args.dataset_name else None
    archive = data_args.train_file if str(data_args.train_file or "").lower().endswith(".npz") else None
    archive_arrays = _npz_arrays(archive) if archive and (set(wanted) - {"train"}) else []
    split_names = {"train": data_args.train_split,
                   "validation": data_args.validation_split,
                   "test": data_args.test_split}
    defaults = {"validation": VALIDATION_SPLIT_NAMES, "test": TEST_SPLIT_NAMES}
    for split in wanted:
        if split == "validation" and data_args.hold_out_validation and "train" in splits:
            continue  # held out from train below
        folder, npz = getattr(data_args, f"{split}_dir"), getattr(data_args, f"{split}_file")
        if folder:
            splits[split], sources[split], signatures[split] = _folder_split(folder)  # every image read once
        elif npz and str(npz).lower().endswith(TABLE_EXTENSIONS):
            splits[split], sources[split], signatures[split] = _table_split(npz, data_args)
            to_check.append(split)
        elif npz:
            present = _npz_arrays(npz) if split != "train" else []
            name = split_names[split] or (
                split if split == "train" else
                _first_present(defaults[split], [a[:-len("_images")] for a in present if a.endswith("_images")])
                or defaults[split][0])
            splits[split], sources[split] = _npz_split(npz, name)
        elif loaded is not None:
            name = split_names[split] or _first_present(defaults[split], list(loaded))
            if name is None or name not in loaded:
                if split == "validation" and "train" in splits:
                    continue  # held out from train below
                raise DataFormatError(f"--dataset_name {data_args.dataset_name}: no {split} split "
                                      f"{(split_names[split] or '')!r}; splits present: {list(loaded)} "
                                      f"(pass --{split}_split)")
            splits[split], sources[split] = _dataset_split(loaded, data_args.dataset_name, name, data_args)
            to_check.append(split)
        elif archive and split != "train":
            prefixes = [a[:-len("_images")] for a in archive_arrays if a.endswith("_images")]
            name = split_names[split] or _first_present(defaults[split], prefixes)
            if name is None:
                if split == "validation" and "train" in splits:
                    continue
                raise DataFormatError(f"{archive}: no {split} split for --do_predict; arrays present: {archive_arrays} "
                                      f"(pass --{split}_split, or --{split}_file)")
            splits[split], sources[split] = _npz_split(archive, name)
        elif split == "validation" and "train" in splits:
            continue
        else:
            flag = {"train": "--train_dir / --train_file / --dataset_name", "validation": "--validation_dir",
                    "test": "--test_dir / --test_file"}[split]
            raise InputError(f"No {split} data for {'--do_predict' if split == 'test' else '--do_eval'}: pass "
                                f"{flag}.")

    for split in to_check:
        check_images(splits[split], sources[split])
    problem_type, reason = infer_problem_type(splits, sources, data_args)
    logger.info("Problem type: %s (%s).", problem_type, reason)
    if problem_type == MULTI_LABEL:
        splits, class_names = _multi_label_targets(splits, sources, data_args.names(), data_args.label_separator)
    elif problem_type == REGRESSION:
        splits, class_names = _regression_targets(splits, sources, data_args.names(), data_args.label_separator,
                                                  data_args.label_column_name)
    else:
        for split, table in splits.items():
            feature = table.features["labels"]
            if isinstance(feature, datasets.Value) and "string" in feature.dtype and "" in set(table["labels"]):
                raise DataFormatError(f"{sources[split]}: empty label cells in a single-label run: give every image "
                                      "its class (or pass --problem_type multi_label_classification if an empty "
                                      "cell means no finding)")
            if _is_list_feature(feature):
                raise DataFormatError(f"{sources[split]}: the labels are lists (multi-label) but --problem_type is "
                                      "single_label_classification: pass --problem_type multi_label_classification")
        splits, class_names = _unify_labels(splits, sources, data_args.names())
    if problem_type == SINGLE_LABEL and len(class_names) < 2:
        raise DataFormatError(f"{sources.get('train', next(iter(sources.values())))}: only one class "
                              f"({class_names}); classification needs at least two")

    if "validation" in wanted and "validation" not in splits:
        if data_args.train_val_split > 0:
            held_out = splits["train"].train_test_split(
                test_size=data_args.train_val_split, seed=training_args.seed,
                stratify_by_column="labels" if problem_type == SINGLE_LABEL else None)
            splits["train"], splits["validation"] = held_out["train"], held_out["test"]
            sources["validation"] = f"{sources['train']} (held-out {data_args.train_val_split:.0%})"
            signatures["validation"] = signatures.get("train", "")
            logger.info("No validation split given: holding out %d training images%s.",
                        len(splits["validation"]), " (stratified)" if problem_type == SINGLE_LABEL else "")
        elif training_args.do_eval and not training_args.do_train:
            raise InputError("--do_eval needs validation data: pass --validation_dir / --validation_file / "
                                "--validation_split.")
    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples,
              "test": data_args.max_predict_samples}
    for split, limit in limits.items():
        if split in splits and limit is not None:
            splits[split] = splits[split].select(range(min(limit, len(splits[split]))))
    for split, table in splits.items():
        if problem_type == REGRESSION:
            logger.info("%s: %d images from %s; target means %s", split, len(table), sources[split],
                        np.round(np.asarray(table["labels"]).mean(axis=0), 4).tolist())
            continue
        counts = (np.asarray(table["labels"]).sum(axis=0).astype(int) if problem_type == MULTI_LABEL else
                  np.bincount(np.asarray(table["labels"]), minlength=len(class_names)))
        logger.info("%s: %d images from %s; per %s %s", split, len(table), sources[split],
                    "label" if problem_type == MULTI_LABEL else "class", dict(zip(class_names, counts.tolist())))
    return ImageData(splits, class_names, sources, signatures, problem_type)


def check_images(table: datasets.Dataset, source: str) -> None:
    """Read every image once with the pipeline's own loader (`load_training_image`: 16-bit PNG, DICOM, ...), so an
    unreadable one is reported (by file or row) before training starts."""
    feature = table.features["image"]
    raw = table if not isinstance(feature, datasets.Image) else table.cast_column("image", datasets.Image(decode=False))
    for row, item in enumerate(tqdm(raw["image"], desc=f"Checking images of {source}", unit="img",
                                    disable=len(raw) < 1000)):
        where = item if isinstance(item, str) else item.get("path") if isinstance(item, dict) else None
        data = item.get("bytes") if isinstance(item, dict) else None
        name = f"{source}: {where or f'row {row}'}"
        if data is None and not where:
            raise DataFormatError(f"{name}: no image data; replace or remove it")
        load_training_image(data if data is not None else where, name=name)


# --------------------------------------------------------------------------------------------------------------------
# Augmentation and image processing
# --------------------------------------------------------------------------------------------------------------------


def augment_image(image, rotation: float = 10.0, crop_scale: float = 0.8, hflip: float = 0.5,
                  generator: torch.Generator | None = None):
    """A random square crop (area fraction in [crop_scale, 1], resized back), rotation in [-rotation, rotation] and
    horizontal flip with probability `hflip`, using torch's RNG (so `Trainer` checkpoints restore it)."""
    from PIL import Image

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand(1, generator=generator))

    width, height = image.size
    if crop_scale < 1:
        side = max(1, round(math.sqrt(uniform(crop_scale, 1.0)) * min(width, height)))
        left = int(uniform(0, width - side + 1)) if width > side else 0
        top = int(uniform(0, height - side + 1)) if height > side else 0
        image = image.crop((left, top, left + side, top + side)).resize((width, height), Image.Resampling.BILINEAR)
    if rotation > 0:
        image = image.rotate(uniform(-rotation, rotation), resample=Image.Resampling.BILINEAR)
    if hflip > 0 and float(torch.rand(1, generator=generator)) < hflip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image


class ImageTransform:
    """`datasets` on-the-fly transform: {"image", "labels"} -> {"pixel_values", "labels"}, augmenting if asked."""

    def __init__(self, image_processor, augment: dict | None = None):
        self.image_processor = image_processor
        self.augment = augment

    def __call__(self, batch: dict) -> dict:
        images = [load_training_image(image) for image in batch["image"]]
        if self.augment:
            images = [augment_image(image, **self.augment) for image in images]
        pixels = self.image_processor(images, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixels, "labels": batch["labels"]}


def make_image_processor(image_size: int, image_mean=None, image_std=None, resample=None):
    """A ViT image processor at `image_size` that turns grayscale (and RGBA) images into RGB first.

    Without torchvision, transformers' `ViTImageProcessor` is its PIL backend; that class is used directly.
    """
    try:
        import torchvision  # noqa: F401
        from transformers import ViTImageProcessor as processor_class
    except ImportError:
        from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil as processor_class
    kwargs = {"resample": resample} if resample is not None else {}
    return processor_class(size={"height": image_size, "width": image_size}, do_convert_rgb=True,
                           image_mean=list(image_mean or DEFAULT_MEAN_STD),
                           image_std=list(image_std or DEFAULT_MEAN_STD), **kwargs)


# --------------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------------


def _is_vit_family(config) -> bool:
    return all(getattr(config, name, None) is not None
               for name in ("image_size", "patch_size", "hidden_size", "num_hidden_layers"))


_side = ViTPatchClassifierConfig._side  # an int or [height, width] size -> its side: the config's one definition


def inspect_model_source(model_args: ImageModelArguments) -> tuple[str, PreTrainedConfig | None]:
    """('medheads', config) for a saved ViTPatchClassifier, ('backbone', config) for a ViT-family backbone,
    ('new', config or None) for a new random backbone; an `InputError` for anything else."""
    if model_args.backbone_config_json:
        path = Path(model_args.backbone_config_json)
        try:
            payload = json.loads(path.read_text())
            config = AutoConfig.for_model(**payload)
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise InputError(f"--backbone_config_json {path}: not a readable backbone config JSON with a "
                                f"`model_type` ({type(error).__name__}: {error})") from None
        if not _is_vit_family(config):
            raise InputError(f"--backbone_config_json {path} ({config.model_type}) is not a ViT-family backbone "
                                "config: it needs image_size, patch_size, hidden_size and num_hidden_layers.")
        return "new", config
    path = model_args.model_name_or_path
    if path is None:
        return "new", None
    try:
        config = AutoConfig.from_pretrained(path, **model_args.hub_kwargs())
    except (OSError, ValueError) as error:
        raise InputError(f"--model_name_or_path {path}: not a model folder or Hub id with a config.json "
                            f"({type(error).__name__}: {str(error).splitlines()[0]})") from None
    if config.model_type == ViTPatchClassifierConfig.model_type:
        if model_args.from_scratch:
            return "new", config.backbone_config
        return "medheads", config
    what = (f"a saved {config.model_type} model, not a ViTPatchClassifier or a ViT-family backbone"
            if str(config.model_type).startswith("medheads-") else
            f"a {config.model_type} model, not a ViT-family backbone (its config has no image_size / patch_size)")
    if not _is_vit_family(config):
        raise InputError(
            f"--model_name_or_path {path}: {what}. Pass a ViT, DeiT or other ViT-family backbone (folder or Hub id), "
            "a saved ViTPatchClassifier folder to continue from, or leave it out to train a new small ViT "
            "(--vit_hidden_size, --vit_layers, --vit_heads, --patch_size).")
    return ("new" if model_args.from_scratch else "backbone"), config


def _new_backbone_config(model_args: ImageModelArguments, base, image_size: int):
    from transformers import ViTConfig

    values = {key: getattr(model_args, key) for key in SIZE_OPTIONS if getattr(model_args, key) is not None}
    if base is None:
        values = {**NEW_VIT_DEFAULTS, **values}
    config = ViTConfig() if base is None else base.__class__.from_dict(base.to_dict())
    for option, attribute in (("vit_hidden_size", "hidden_size"), ("vit_layers", "num_hidden_layers"),
                              ("vit_heads", "num_attention_heads"), ("vit_intermediate_size", "intermediate_size"),
                              ("patch_size", "patch_size")):
        if option in values:
            setattr(config, attribute, values[option])
    if base is None or "vit_hidden_size" in values and "vit_intermediate_size" not in values:
        config.intermediate_size = values.get("vit_intermediate_size", 4 * config.hidden_size)
    if base is None or model_args.vit_dropout:
        config.hidden_dropout_prob = config.attention_probs_dropout_prob = model_args.vit_dropout
    config.image_size = image_size
    if config.hidden_size % config.num_attention_heads:
        raise InputError(f"--vit_hidden_size {config.hidden_size} is not a multiple of --vit_heads "
                            f"{config.num_attention_heads}.")
    return config


def _check_image_size(image_size: int, patch_size: int, where: str) -> None:
    if image_size % patch_size:
        lower = max(patch_size, image_size // patch_size * patch_size)
        raise InputError(f"--image_size {image_size} is not a multiple of the patch size {patch_size} ({where}): "
                            f"use e.g. {lower} or {lower + patch_size}.")


def build_model(model_args: ImageModelArguments, class_names: list[str], default_image_size: int | None = None,
                freeze_explicit: bool = True, problem_type: str = SINGLE_LABEL):
    """The model and its image processor. `default_image_size` is the image side a new ViT uses when --image_size is
    not given; `freeze_explicit` says whether --freeze_backbone was given (a new ViT otherwise trains end to end)."""
    kind, config = inspect_model_source(model_args)
    id2label = dict(enumerate(class_names))
    label2id = {name: i for i, name in id2label.items()}
    head_kwargs = dict(head=model_args.head, patch_projection_size=model_args.patch_projection_size,
                       head_dropout=model_args.head_dropout, id2label=id2label, label2id=label2id,
                       problem_type=problem_type)

    if kind == "medheads":
        path = model_args.model_name_or_path
        saved = [config.id2label[i] for i in sorted(config.id2label)]
        if saved != list(class_names):
            raise InputError(f"--model_name_or_path {path} was trained on classes {saved} but the data has "
                                f"{list(class_names)}: pass --class_names in the saved order, or start from its "
                                "backbone.")
        saved_problem = config.problem_type or SINGLE_LABEL
        if saved_problem != problem_type:
            raise InputError(f"--model_name_or_path {path} is a {saved_problem} model but the data is "
                                f"{problem_type}: pass --problem_type {saved_problem}, or start from its backbone.")
        if model_args.image_size and model_args.image_size != config.image_size:
            raise InputError(f"--model_name_or_path {path} was built for {config.image_size}px images; drop "
                                f"--image_size {model_args.image_size} or start from its backbone.")
        try:
            model = ViTPatchClassifier.from_pretrained(path, **model_args.hub_kwargs())
        except (OSError, ValueError) as error:  # a truncated weights file
            raise InputError(f"--model_name_or_path {path}: {error}") from None
        if freeze_explicit and model_args.freeze_backbone != model.config.freeze_backbone:
            model.config.freeze_backbone = model_args.freeze_backbone
            model.backbone.requires_grad_(not model_args.freeze_backbone)
        processor = _load_processor(path, model_args, model.config.image_size)
        return model, processor

    if kind == "backbone":
        image_size = model_args.image_size or _side(config.image_size)
        _check_image_size(image_size, _side(config.patch_size), f"backbone {model_args.model_name_or_path}")
        model = ViTPatchClassifier.from_backbone(
            model_args.model_name_or_path, image_size=image_size, freeze_backbone=model_args.freeze_backbone,
            **head_kwargs, **model_args.hub_kwargs())
        return model, _load_processor(model_args.model_name_or_path, model_args, image_size)

    # A new random backbone.
    base_size = _side(config.image_size) if config is not None else None
    image_size = model_args.image_size or (base_size if model_args.backbone_config_json else None) \
        or default_image_size or base_size
    if image_size is None:
        raise InputError("Pass --image_size for a new ViT (no training image to take it from).")
    patch_size = model_args.patch_size or (_side(config.patch_size) if config is not None
                                           else NEW_VIT_DEFAULTS["patch_size"])
    _check_image_size(image_size, patch_size, "new ViT")
    backbone = _new_backbone_config(model_args, config, image_size)
    freeze = model_args.freeze_backbone if freeze_explicit else False
    if freeze:
        logger.warning("The new backbone has random weights and --freeze_backbone is on: only the head trains "
                       "(a random-features baseline).")
    model = ViTPatchClassifier(ViTPatchClassifierConfig(backbone_config=backbone, image_size=image_size,
                                                        freeze_backbone=freeze, **head_kwargs))
    logger.info("New random %s backbone: width %d, %d layers, %d heads, patch %d, %dpx (%d tokens), %.2fM "
                "parameters.", backbone.model_type, backbone.hidden_size, backbone.num_hidden_layers,
                backbone.num_attention_heads, patch_size, image_size, model.config.num_head_tokens,
                sum(p.numel() for p in model.parameters()) / 1e6)
    return model, make_image_processor(image_size)


def _load_processor(path: str, model_args: ImageModelArguments, image_size: int):
    """The backbone's normalisation (mean, std, resampling) when it ships an image processor, at `image_size`."""
    from transformers import AutoImageProcessor

    try:
        saved = AutoImageProcessor.from_pretrained(path, **model_args.hub_kwargs())
    except (OSError, ValueError) as error:
        logger.warning("No image processor with %s (%s): normalising with mean = std = 0.5.", path,
                       str(error).splitlines()[0])
        return make_image_processor(image_size)
    return make_image_processor(image_size, getattr(saved, "image_mean", None), getattr(saved, "image_std", None),
                                getattr(saved, "resample", None))


# --------------------------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------------------------


def class_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """`n / (num_classes * n_c)` per class ("balanced"); a class absent from `labels` gets weight 0."""
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=num_classes).astype(float)
    weights = np.divide(len(labels), num_classes * counts, out=np.zeros_like(counts), where=counts > 0)
    return torch.tensor(weights, dtype=torch.float32)


class EpochWeightedRandomSampler(torch.utils.data.WeightedRandomSampler):
    """A `WeightedRandomSampler` whose draws depend only on (seed, epoch): a run resumed from a checkpoint sees the
    same batches as one that never stopped (`Trainer` calls `set_epoch`)."""

    def __init__(self, weights, num_samples: int, seed: int = 0):
        super().__init__(weights, num_samples, replacement=True)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        yield from torch.multinomial(self.weights, self.num_samples, True, generator=generator).tolist()


class ImageClassificationTrainer(Trainer):
    """`Trainer` with class balancing: `balance="sampler"` draws training examples with probability inverse to their
    class frequency (so batches are balanced on average); `balance="loss"` weights the training loss by class."""

    def __init__(self, *args, balance: str = "none", train_labels: Sequence[int] | None = None,
                 num_classes: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.balance = balance
        self.train_labels = None if train_labels is None else np.asarray(train_labels, dtype=int)
        self.num_classes = num_classes
        if balance != "none" and (self.train_labels is None or num_classes is None):
            raise ValueError("balance needs train_labels and num_classes")
        self.loss_weights = class_weights(self.train_labels, num_classes) if balance == "loss" else None
        # The model's loss is a plain batch mean: let Trainer scale it for gradient accumulation.
        self.model_accepts_loss_kwargs = False

    def _get_train_sampler(self, train_dataset=None):
        if self.balance != "sampler":
            return super()._get_train_sampler(train_dataset)
        per_example = class_weights(self.train_labels, self.num_classes)[torch.as_tensor(self.train_labels)]
        return EpochWeightedRandomSampler(per_example.double(), len(self.train_labels), seed=self.args.seed)

    # transformers 5.x saves ViT/DeiT weights under their legacy checkpoint names (`save_pretrained` reverts the
    # renaming `from_pretrained` applies), but Trainer reloads checkpoints with a raw `load_state_dict(strict=False)`,
    # which then matches no backbone weight and silently keeps the current ones. Load through `from_pretrained`.
    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        model = self.accelerator.unwrap_model(model if model is not None else self.model)
        logger.info("Loading model weights from %s.", resume_from_checkpoint)
        saved = type(model).from_pretrained(resume_from_checkpoint, dtype=model.dtype)
        model.load_state_dict(saved.state_dict(), strict=True)

    def _load_best_model(self):
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return super()._load_best_model()
        logger.info("Loading best model from %s (%s %s).", self.state.best_model_checkpoint,
                    self.args.metric_for_best_model, self.state.best_metric)
        self._load_from_checkpoint(self.state.best_model_checkpoint)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.loss_weights is None or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = torch.nn.functional.cross_entropy(outputs.logits.float(), labels.to(outputs.logits.device),
                                                 weight=self.loss_weights.to(outputs.logits.device))
        return (loss, outputs) if return_outputs else loss


def apply_prior_correction(model, train_labels: Sequence[int], num_classes: int) -> np.ndarray:
    """Add `log(num_classes * frequency_c)` to class c's bias in the model's output layer (the last `nn.Linear` of its
    head), in place: a classifier trained on class-balanced data (uniform prior) then scores as if trained on the
    training data's own class frequencies. Returns the shifts."""
    counts = np.bincount(np.asarray(train_labels, dtype=int), minlength=num_classes).astype(float)
    if (counts == 0).any():
        missing = [int(c) for c in np.flatnonzero(counts == 0)]
        raise InputError(f"--prior_correction: classes {missing} have no training image, so their frequency is 0: "
                         "drop --prior_correction or add images of those classes.")
    shifts = np.log(num_classes * counts / counts.sum())
    layers = [m for m in model.head.modules() if isinstance(m, torch.nn.Linear)]
    output = layers[-1]
    if output.out_features != num_classes or output.bias is None:
        raise InputError(f"--prior_correction: the head's last linear layer has {output.out_features} outputs "
                         f"{'and no bias ' if output.bias is None else ''}for {num_classes} classes.")
    with torch.no_grad():
        output.bias.add_(torch.as_tensor(shifts, dtype=output.bias.dtype, device=output.bias.device))
    return shifts


def image_metrics(labels: Sequence[int], logits: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """`medheads.metrics.classification_metrics` of the softmax of `logits`: accuracy, macro/weighted and per-class
    F1, precision, recall, support, and ROC AUC (class 1 for binary, one-vs-rest macro otherwise)."""
    return classification_metrics(np.asarray(labels), softmax(logits), list(class_names))


def confusion(labels: Sequence[int], logits: np.ndarray, num_classes: int) -> list[list[int]]:
    """Rows gold, columns predicted (argmax)."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(np.asarray(labels), np.asarray(logits).argmax(axis=1),
                            labels=np.arange(num_classes)).tolist()


def check_computable_metrics(data: "ImageData", training_args) -> None:
    """ROC AUC needs both positives and negatives: with a one-class validation split, model selection by
    `roc_auc` would fail only after the first epoch (`KeyError 'eval_roc_auc'`), so stop before training; a one-class
    test split only loses its ROC AUC, which is said in the log (the metric is left out, not made up)."""
    metric = (training_args.metric_for_best_model or "").removeprefix("eval_")
    if metric and training_args.do_train and training_args.eval_strategy != "no":
        # what the per-epoch evaluation reports, from a made-up prediction where every class occurs
        labels = list(range(len(data.class_names))) * 2
        reported = {*image_metrics(labels, np.eye(len(data.class_names))[labels], data.class_names), "loss"}
        if metric not in reported:
            raise InputError(f"--metric_for_best_model {training_args.metric_for_best_model!r} is not reported by "
                                f"the evaluation; use one of: {', '.join(sorted(reported))}.")
    for split in ("validation", "test"):
        if split not in data.splits:
            continue
        present = sorted(set(data.splits[split]["labels"]))
        if len(present) > 1:
            continue
        only = [data.class_names[i] for i in present]
        selects = (split == "validation" and metric == "roc_auc" and training_args.do_train
                   and training_args.eval_strategy != "no")
        if selects:
            raise InputError(
                f"The validation split ({data.sources.get(split) or split}) holds only class {only}: ROC AUC, the "
                "metric that picks the best checkpoint, cannot be computed on it. Use validation data with both "
                "classes, or pass --metric_for_best_model accuracy.")
        logger.warning("The %s split holds only class %s: ROC AUC cannot be computed on it and is left out of its "
                       "metrics.", split, only)


def main_metric(num_classes: int, problem_type: str = SINGLE_LABEL) -> str:
    if problem_type == MULTI_LABEL:
        return "micro_f1"  # always defined (a macro ROC AUC is not when a label has no validation positive)
    if problem_type == REGRESSION:
        return "mse"
    return "roc_auc" if num_classes == 2 else "accuracy"


def regression_metrics(targets: np.ndarray, outputs: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """`mse`, `rmse`, `mae` (means over outputs), `r2` (uniform average; omitted for constant targets) and per output
    `mae_<name>`."""
    from sklearn.metrics import r2_score

    targets = np.asarray(targets, dtype=np.float64).reshape(len(targets), -1)
    outputs = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    errors = outputs - targets
    metrics = {"mse": float(np.mean(errors ** 2)), "rmse": float(np.sqrt(np.mean(errors ** 2))),
               "mae": float(np.mean(np.abs(errors)))}
    if len(targets) > 1 and np.all(targets.std(axis=0) > 0):
        metrics["r2"] = float(r2_score(targets, outputs))
    for j, name in enumerate(names):
        metrics[f"mae_{metric_key(name)}"] = float(np.mean(np.abs(errors[:, j])))
    return metrics


def problem_metrics(problem_type: str, labels: np.ndarray, logits: np.ndarray, names: Sequence[str],
                  thresholds=0.5) -> dict[str, float]:
    """The metrics of one split for its problem type (multi-label: at `thresholds`)."""
    if problem_type == MULTI_LABEL:
        return multilabel_metrics(np.asarray(labels), sigmoid(logits), np.asarray(thresholds, dtype=float),
                                  list(names))
    if problem_type == REGRESSION:
        return regression_metrics(labels, logits, names)
    return image_metrics(labels, logits, names)


def _feature_dataset(model, table: datasets.Dataset, processor, model_args: ImageModelArguments, training_args,
                     split: str, signature: str) -> datasets.Dataset:
    """The frozen backbone's token features for `table`, computed once and cached on disk."""
    def collate(rows):
        images = [load_training_image(row["pixel_values"]) for row in rows]
        return {"pixel_values": processor(images, return_tensors="pt")["pixel_values"]}

    inputs = table.select_columns(["image", "labels"]).rename_column("image", "pixel_values")
    return cached_features(model, inputs, collate, feature_name="token_features", keep_columns=("labels",),
                           batch_size=training_args.per_device_eval_batch_size, length_column=None,
                           cache_dir=model_args.feature_cache_dir, training_args=training_args,
                           desc=f"Backbone features ({split})",
                           extra_fingerprint=processor.to_json_string() + signature + IMAGE_READER)


MULTILABEL_KEYS = ("micro_f1", "micro_precision", "micro_recall", "macro_f1", "samples_f1", "subset_accuracy",
                   "hamming_loss")


def decide(problem_type: str, logits: np.ndarray, class_names: Sequence[str], thresholds=0.5) -> list:
    """The model's decision per image, as the pipeline returns it: label sets (multi-label), class names
    (single-label) or output values (regression)."""
    logits = np.asarray(logits, dtype=np.float64)
    if problem_type == MULTI_LABEL:
        hits = sigmoid(logits) >= np.asarray(thresholds, dtype=float)
        return [[class_names[j] for j in np.flatnonzero(row)] for row in hits]
    if problem_type == REGRESSION:
        return logits.reshape(len(logits), -1).tolist()
    return [class_names[int(j)] for j in logits.argmax(axis=1)]


def write_predictions(path: Path, table: datasets.Dataset, problem_type: str, labels: np.ndarray, logits: np.ndarray,
                      class_names: Sequence[str], thresholds=0.5) -> Path:
    """One row per test image: index, image (its path when read from a file), gold, prediction (labels joined by
    `;` for multi-label), scores."""
    images = table["image"] if isinstance(table.features["image"], datasets.Value) else [""] * len(table)
    decided = decide(problem_type, logits, class_names, thresholds)
    gold = decide(problem_type, np.where(np.asarray(labels) > 0.5, 50.0, -50.0), class_names) \
        if problem_type == MULTI_LABEL else (np.asarray(labels).reshape(len(labels), -1).tolist()
                                             if problem_type == REGRESSION else
                                             [class_names[int(j)] for j in labels])
    scores = sigmoid(logits) if problem_type == MULTI_LABEL else softmax(logits) if problem_type == SINGLE_LABEL \
        else np.asarray(logits).reshape(len(logits), -1)

    def text(value):
        return ";".join(map(str, value)) if isinstance(value, list) else str(value)

    with open(path, "w") as handle:
        handle.write("index\timage\tgold\tprediction\tscores\n")
        for i, (image, g, d, row) in enumerate(zip(images, gold, decided, scores)):
            handle.write(f"{i}\t{image}\t{text(g)}\t{text(d)}\t{';'.join(f'{v:.4f}' for v in row)}\n")
    return path


def report_split_other(problem_type: str, split: str, labels: np.ndarray, logits: np.ndarray,
                       class_names: list[str], output_dir: Path, metrics: dict, thresholds=0.5,
                       source: str | None = None) -> tuple[str, list[Path]]:
    """The report section and plots of a multi-label or regression split."""
    from ..plots import plot_per_label_f1

    title = {"eval": "validation", "predict": "test"}.get(split, split)
    if source:
        title = f"{title}: {_display(source)}"
    if problem_type == REGRESSION:
        lines = [f"== {title}, {len(labels)} images (regression) ==", ""]
        lines += [f"{key}: {metrics[f'{split}_{key}']:.6g}" for key in ("mse", "rmse", "mae", "r2")
                  if f"{split}_{key}" in metrics]
        return "\n".join(lines) + "\n\n", []
    from sklearn.metrics import classification_report

    from ..plots import plot_multilabel_confusion

    predictions = (sigmoid(logits) >= np.asarray(thresholds, dtype=float)).astype(int)
    labels = np.asarray(labels).astype(int)
    plots = [plot_multilabel_confusion(labels, predictions, class_names, output_dir / f"confusion_matrix_{split}.png",
                                       title=f"Per-label confusion ({title})"),
             plot_per_label_f1({name: metrics[f"{split}_f1_{metric_key(name)}"] for name in class_names},
                               output_dir / f"per_label_f1_{split}.png", title=f"F1 per label ({title})")]
    tuned = "tuned per-label thresholds" if not np.isscalar(thresholds) else f"threshold {thresholds}"
    lines = [f"== {title}, {len(labels)} images (multi-label, {tuned}) ==", "",
             classification_report(labels, predictions, target_names=class_names, digits=4, zero_division=0),
             f"subset accuracy: {metrics[f'{split}_subset_accuracy']:.4f}"]
    if f"{split}_macro_roc_auc" in metrics:
        lines.append(f"macro ROC AUC: {metrics[f'{split}_macro_roc_auc']:.4f}")
    return "\n".join(lines) + "\n\n", plots


def plot_roc_curve(labels: Sequence[int], logits: np.ndarray, path, title: str = "ROC curve") -> Path:
    """ROC curve of class 1 for a binary classifier, with its AUC."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_auc_score, roc_curve

    labels, scores = np.asarray(labels), softmax(logits)[:, 1]
    fpr, tpr, _ = roc_curve(labels, scores)
    figure = Figure(figsize=(4.8, 4.5), layout="tight")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    ax.plot(fpr, tpr, color="tab:blue", label=f"AUC {roc_auc_score(labels, scores):.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, format="png")
    return path


def _display(source: str) -> str:
    """`/long/path/data.npz [val]` -> `data.npz [val]`."""
    head, sep, tail = source.partition(" [")
    return Path(head).name + sep + tail


def report_split(split: str, labels: np.ndarray, logits: np.ndarray, class_names: list[str], output_dir: Path,
                 metrics: dict, source: str | None = None) -> tuple[str, list[Path]]:
    """The classification report section and the plots of one evaluated split (`eval` or `predict`)."""
    from sklearn.metrics import classification_report

    from ..plots import plot_confusion_matrix, plot_per_label_f1

    predictions = logits.argmax(axis=1)
    title = {"eval": "validation", "predict": "test"}.get(split, split)
    if source:
        title = f"{title}: {_display(source)}"
    plots = [plot_confusion_matrix(labels, predictions, class_names, output_dir / f"confusion_matrix_{split}.png",
                                   title=f"Confusion matrix ({title})"),
             plot_per_label_f1({name: metrics[f"{split}_f1_{metric_key(name)}"] for name in class_names},
                               output_dir / f"per_class_f1_{split}.png", title=f"F1 per class ({title})")]
    if len(class_names) == 2 and len(set(labels.tolist())) == 2:
        plots.append(plot_roc_curve(labels, logits, output_dir / f"roc_curve_{split}.png", f"ROC curve ({title})"))
    matrix = confusion(labels, logits, len(class_names))
    width = max(len(name) for name in class_names) + 2
    lines = [f"== {title}, {len(labels)} images ==", "",
             classification_report(labels, predictions, labels=list(range(len(class_names))),
                                   target_names=class_names, digits=4, zero_division=0)]
    if f"{split}_roc_auc" in metrics:
        lines.append(f"ROC AUC: {metrics[f'{split}_roc_auc']:.4f}\n")
    lines.append("Confusion matrix (rows gold, columns predicted):")
    lines.append(" " * width + "".join(f"{name:>{width}}" for name in class_names))
    lines += [f"{name:<{width}}" + "".join(f"{count:>{width}}" for count in row)
              for name, row in zip(class_names, matrix)]
    return "\n".join(lines) + "\n\n", plots


def run(model_args: ImageModelArguments, data_args: ImageDataArguments, training_args: MedheadsTrainingArguments,
        explicit: set[str] | None = None) -> dict:
    """Check the inputs, train / evaluate / predict, and write the outputs. Returns all metrics.

    `explicit` names the arguments the user gave (`main` reads them from the command line): a new ViT trains end to
    end unless `freeze_backbone` is among them, and the main metric picks the best checkpoint unless
    `metric_for_best_model` is. `None` (a call from code): `freeze_backbone` counts as given, and
    `metric_for_best_model` does unless it is left at None or TrainingArguments' fallback "loss"."""
    if explicit is None:
        explicit = {"freeze_backbone"} | ({"metric_for_best_model"} if training_args.metric_for_best_model not in
                                          (None, "loss", "eval_loss") else set())
    given = explicit
    setup_logging(training_args)
    check_arguments(model_args, data_args, training_args)
    prepare_output_dir(training_args, InputError, model_args.model_name_or_path)
    set_seed(training_args.seed)

    # 1. Data and model: every input problem is raised here, before any training.
    data = load_image_data(data_args, training_args, model_args)
    first = data.splits.get("train", next(iter(data.splits.values())))
    first_size = max(load_training_image(first[0]["image"]).size)
    model, processor = build_model(model_args, data.class_names, default_image_size=first_size,
                                   freeze_explicit="freeze_backbone" in given, problem_type=data.problem_type)
    frozen = model.config.freeze_backbone
    use_cache = model_args.use_feature_cache
    if use_cache is None:
        use_cache = frozen and not data_args.augment
    elif use_cache and not frozen:
        raise InputError("--use_feature_cache needs a frozen backbone (--freeze_backbone True): an unfrozen one "
                            "changes its features while training.")
    if data_args.augment and frozen:
        logger.info("--augment with a frozen backbone: features are recomputed for every batch (no cache).")
    num_classes = len(data.class_names)
    problem_type = data.problem_type
    data_args.problem_type = problem_type  # recorded in metrics.json (the card reads it)
    if data_args.balance != "none" and problem_type != SINGLE_LABEL:
        raise InputError(f"--balance {data_args.balance} balances classes of a single-label problem, but the data "
                            f"is {problem_type}: drop --balance.")
    metric = main_metric(num_classes, problem_type)
    if "metric_for_best_model" not in given:
        training_args.metric_for_best_model = metric
        training_args.greater_is_better = problem_type != REGRESSION
    if problem_type == SINGLE_LABEL:
        check_computable_metrics(data, training_args)
    training_args.remove_unused_columns = False  # the on-the-fly transform needs the image column
    if "validation" not in data.splits and training_args.eval_strategy != "no":
        logger.warning("No validation data (--train_val_split 0): training without evaluation or best-model "
                       "selection.")
        training_args.eval_strategy = "no"
        training_args.load_best_model_at_end = False
        training_args.do_eval = False

    # 2. Datasets the Trainer reads: cached features, or images transformed on the fly.
    if use_cache:
        model.to(training_args.device)
        datasets_for = {split: _feature_dataset(model, table, processor, model_args, training_args, split,
                                                data.signatures.get(split, ""))
                        for split, table in data.splits.items()}
    else:
        augment = dict(rotation=data_args.augment_rotation, crop_scale=data_args.augment_crop_scale,
                       hflip=data_args.augment_hflip) if data_args.augment else None
        datasets_for = {split: table.with_transform(ImageTransform(processor, augment if split == "train" else None))
                        for split, table in data.splits.items()}
    logger.info("Training %s (%s head, backbone %s%s), main metric %s.", type(model).__name__, model.config.head,
                "frozen" if frozen else "trained", ", cached features" if use_cache else "", metric)

    def compute_metrics(prediction):  # per-epoch evaluation; multi-label at threshold 0.5
        return problem_metrics(problem_type, prediction.label_ids, prediction.predictions, data.class_names)

    trainer = ImageClassificationTrainer(
        model=model, args=training_args, train_dataset=datasets_for.get("train") if training_args.do_train else None,
        eval_dataset=datasets_for.get("validation"), processing_class=processor, compute_metrics=compute_metrics,
        balance=data_args.balance if training_args.do_train else "none",
        train_labels=data.splits["train"]["labels"] if "train" in data.splits and problem_type == SINGLE_LABEL
        else None, num_classes=num_classes)

    output_dir = Path(training_args.output_dir)
    results: dict[str, Any] = {}
    plots: list[Path] = []
    report = ""
    # 3. Train.
    if training_args.do_train:
        maybe_find_learning_rate(trainer, training_args)
        train_result = trainer.train(resume_from_checkpoint=resume_checkpoint(training_args))
        if data_args.prior_correction:  # on the restored best model, before the one save
            shifts = apply_prior_correction(model, data.splits["train"]["labels"], num_classes)
            model.config.prior_correction = dict(zip(data.class_names, [round(float(v), 6) for v in shifts]))
            logger.info("Prior correction added to the output bias: %s.", model.config.prior_correction)
        trainer.save_model()  # model, remote code and image processor: a pipeline folder
        train_metrics = {**train_result.metrics, "train_samples": len(data.splits["train"])}
        save_split_metrics(trainer, "train", train_metrics)
        trainer.save_state()
        results.update(train_metrics)
        from ..plots import plot_training_curves
        plots.append(plot_training_curves(trainer.state.log_history, output_dir / "training_curves.png",
                                          metric=f"eval_{metric}" if "validation" in data.splits else None,
                                          title="ViTPatchClassifier training"))
    elif training_args.should_save:
        output_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(output_dir)
        processor.save_pretrained(output_dir)

    # 4. Multi-label: one decision threshold per label, tuned on validation, saved in config.thresholds (the
    #    pipeline applies them).
    outputs: dict[str, Any] = {}
    if (problem_type == MULTI_LABEL and training_args.do_train and data_args.tune_thresholds
            and "validation" in datasets_for):
        from ..metrics import tune_thresholds

        outputs["validation"] = trainer.predict(datasets_for["validation"], metric_key_prefix="eval")
        y_true = np.asarray(outputs["validation"].label_ids)
        thresholds = tune_thresholds(y_true, sigmoid(outputs["validation"].predictions))
        rare = y_true.sum(axis=0) < data_args.threshold_min_positives
        thresholds[rare] = 0.5
        model.config.thresholds = [round(float(t), 4) for t in thresholds]
        logger.info("Tuned per-label thresholds on validation: %s (%d labels with fewer than %d positives keep 0.5).",
                    dict(zip(data.class_names, model.config.thresholds)), int(rare.sum()),
                    data_args.threshold_min_positives)
        trainer.save_model()
    thresholds = model.config.thresholds if model.config.thresholds is not None else 0.5

    # 5. Evaluate (validation) and predict (test).
    for split, prefix, on in (("validation", "eval", training_args.do_eval), ("test", "predict",
                                                                             training_args.do_predict)):
        if not on or split not in datasets_for:
            continue
        output = outputs.get(split) or trainer.predict(datasets_for[split], metric_key_prefix=prefix)
        split_metrics = {**output.metrics, f"{prefix}_samples": len(data.splits[split])}
        labels, logits = np.asarray(output.label_ids), np.asarray(output.predictions)
        if problem_type == MULTI_LABEL:  # the trainer's metrics were at 0.5: keep them apart, report the decisions
            split_metrics = {(f"{prefix}_{UNTUNED}_{key[len(prefix) + 1:]}" if key[len(prefix) + 1:] in
                              MULTILABEL_KEYS or key[len(prefix) + 1:].startswith(("f1_", "precision_", "recall_"))
                              else key): value for key, value in split_metrics.items()}
            split_metrics.update({f"{prefix}_{key}": value for key, value in
                                  problem_metrics(problem_type, labels, logits, data.class_names, thresholds).items()})
        save_split_metrics(trainer, prefix, split_metrics)
        results.update(split_metrics)
        if trainer.is_world_process_zero():
            if problem_type == SINGLE_LABEL:
                section, split_plots = report_split(prefix, labels, logits, data.class_names, output_dir,
                                                    split_metrics, data.sources[split])
                results[f"{prefix}_confusion_matrix"] = confusion(labels, logits, num_classes)
            else:
                section, split_plots = report_split_other(problem_type, prefix, labels, logits, data.class_names,
                                                          output_dir, split_metrics, thresholds, data.sources[split])
            report += section
            plots += split_plots
            if split == "test":
                write_predictions(output_dir / "predict_results.tsv", data.splits[split], problem_type, labels,
                                  logits, data.class_names, thresholds)

    if trainer.is_world_process_zero():
        if report:
            (output_dir / "classification_report.txt").write_text(report)
        arguments = dataclass_dict(model_args, data_args, training_args)
        arguments["class_names"] = data.class_names
        write_run_summary(str(output_dir), SCRIPT, arguments, results, [str(p) for p in plots])
    return results


ARGUMENT_CLASSES = (ImageModelArguments, ImageDataArguments, MedheadsTrainingArguments)


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """`medheads train-image ARGS`: parse flags (or one JSON file of them) and `run`. 0 on success; an input error
    prints one line `PROG: error: ...` (no traceback) and gives exit status 2, before any model is loaded."""
    argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    return run_training_command(run, ARGUMENT_CLASSES, argv, prog, explicit=explicit_keys(argv))


__all__ = [
    "ImageModelArguments", "ImageDataArguments", "ARGUMENT_CLASSES", "ImageData", "check_arguments", "load_image_data",
    "check_images", "augment_image", "ImageTransform", "make_image_processor", "inspect_model_source", "build_model",
    "class_weights", "EpochWeightedRandomSampler", "ImageClassificationTrainer", "image_metrics", "confusion",
    "main_metric", "plot_roc_curve", "report_split", "explicit_keys", "run", "main",
]
