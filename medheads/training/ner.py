"""Train and evaluate a `HiddenLayerTokenClassifier` for NER: the logic behind `scripts/train_ner.py`.

Modelled on transformers' `examples/pytorch/token-classification/run_ner.py`: three argument dataclasses parsed by
`HfArgumentParser` (flags, `--help`, or one JSON file), `Trainer` with dynamic padding, `all_results.json` through
`trainer.save_metrics`. On top of it:

* data from CoNLL/IOB files (`token<TAB>label`), JSON lines, or a `datasets` dataset (Hub id or `save_to_disk`
  folder), with one clear error for a malformed line, an unknown label or a bad model path, before training starts;
* the head reads one hidden layer or a mix of several (`--hidden_layers -1,-2,-3,-4 --layer_combination concat`);
* every sub-token is trained (later sub-tokens carry the I- tag of the word's type), so the pieces the tokenizer cuts
  a word like "IL-2" into at inference all know their entity;
* metrics are computed on *words* (the first sub-token's prediction of each word; words cut off by
  `--max_seq_length` count as predicted `O`): span-level seqeval micro / macro / per type, and word level; beside
  them, the model's own pipeline is run on the raw (detokenized) sentences and scored on exact character spans
  (`*_pipeline_char_f1`), the number a user of `pipeline("ner", ...)` gets;
* reports in `output_dir`: `classification_report.txt`, `validation_errors.txt` / `test_errors.txt` (each sentence
  with a mistake as TOKEN / GOLD / PRED columns), `validation_predictions.tsv` / `test_predictions.tsv`,
  `metrics.json`, and plots (per-type F1, training curves, word-level confusion matrix over entity types);
* the output folder is a complete pipeline folder (model with its remote code + tokenizer):
  `pipeline("ner", model=output_dir, trust_remote_code=True)`.

Runs unchanged under `accelerate launch` / `torchrun`: files are written by the main process only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data import DataFormatError, read_token_file
from ..errors import InputError
from .arguments import DataArguments, MedheadsTrainingArguments, ModelArguments
from .common import (
    dataclass_dict, load_dataset_dict, resume_checkpoint, run_training_command, save_split_metrics, setup_logging,
    write_run_summary,
)
from .common import prepare_output_dir
from .lr_finder import maybe_find_learning_rate

logger = logging.getLogger("medheads.ner")

SCRIPT_NAME = "train_ner.py"
PROG = "medheads train-ner"
VALIDATION_SPLIT_NAMES = ("validation", "valid", "dev", "devel")
# Tokenizers that need add_prefix_space=True to take pre-split words (as in run_ner.py).
PREFIX_SPACE_MODEL_TYPES = {"bloom", "gpt2", "roberta", "deberta", "longformer", "mpnet"}


# --------------------------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class NerModelArguments(ModelArguments):
    """Which encoder (or saved medheads model) to start from, and how the head reads it."""

    model_name_or_path: str = field(metadata={
        "help": "A pretrained encoder (folder or Hub id: BERT, RoBERTa, ModernBERT, ...) to put a new head on, or a "
                "saved HiddenLayerTokenClassifier folder to continue training / evaluate (detected by its config's "
                "model_type)."})
    hidden_layers: list[str] = field(default_factory=lambda: ["-1"], metadata={
        "help": "Hidden state(s) the head reads: one index (-1 = last layer, 0 = embeddings, 4 = output of layer 4), "
                "several ('--hidden_layers -1 -2 -3 -4' or '--hidden_layers=-1,-2,-3,-4'), or 'all' (embeddings "
                "and every layer). Ignored when continuing from a saved medheads model."})
    layer_combination: str = field(default="concat", metadata={
        "help": "How several layers are combined: concat, mean or scalar_mix. Ignored for a single layer.",
        "choices": ["concat", "mean", "scalar_mix"]})
    classifier_dropout: float = field(default=0.1, metadata={"help": "Dropout before the linear classifier."})
    freeze_encoder: bool = field(default=False, metadata={"help": "Train the head only (encoder weights fixed)."})
    use_crf: bool = field(default=False, metadata={
        "help": "Put a linear-chain CRF on the head (learned transitions, BIO constraints, Viterbi decoding over each "
                "word's first sub-token). Needs BIO tags. Ignored when continuing from a saved model (its own "
                "setting is kept)."})
    tokenizer_name: str | None = field(default=None, metadata={
        "help": "Tokenizer folder or Hub id if not the model's own. Must be a fast tokenizer (word_ids)."})


@dataclass
class NerDataArguments(DataArguments):
    """Data files (CoNLL `token<TAB>label`, or JSON lines) or a `datasets` dataset, and how words become tokens."""

    dataset_name: str | None = field(default=None, metadata={
        "help": "A datasets dataset: a Hub id for load_dataset, or a folder written by save_to_disk. Its train / "
                "validation (or valid, dev, devel) / test splits are used; --train_file etc. override a split."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The dataset's configuration name."})
    text_column_name: str = field(default="tokens", metadata={
        "help": "Column (JSON lines field, dataset column) holding each sentence's words."})
    label_column_name: str = field(default="ner_tags", metadata={
        "help": "Column holding each sentence's IOB tags (strings, or ClassLabel ids in a datasets dataset)."})
    max_seq_length: int | None = field(default=None, metadata={
        "help": "Sub-tokens per sentence after tokenization, special tokens included (default: the tokenizer's and "
                "encoder's limit, at most 512). Words beyond it are not seen by the model and count as 'O'."})
    label_all_tokens: bool = field(default=True, metadata={
        "help": "Train on every sub-token of a word, later sub-tokens carrying the I- tag of the word's type (the "
                "default: the pipeline on raw text splits words like 'IL-2' into pieces at the hyphen, and every "
                "piece must know its entity). --label_all_tokens false trains first sub-tokens only (-100 on the "
                "rest). The word-level metrics always read each word's first sub-token."})
    pipeline_metrics: bool = field(default=True, metadata={
        "help": "Also run the model's own ner pipeline on the raw text of the validation / test sentences "
                "(detokenized: 'cells .' -> 'cells.', 'ataxia - telangiectasia' -> 'ataxia-telangiectasia') and "
                "report its exact character-span precision / recall / F1 (eval_pipeline_char_f1, "
                "predict_pipeline_char_f1) beside seqeval's word-level scores."})
    seqeval_strict: bool = field(default=False, metadata={
        "help": "Score spans with seqeval's strict IOB2 mode (default: conlleval-compatible mode, as in the seed "
                "baseline)."})
    preprocessing_num_workers: int | None = field(default=None, metadata={
        "help": "Processes for tokenization (datasets.map num_proc)."})


@dataclass
class NerTrainingArguments(MedheadsTrainingArguments):
    """`MedheadsTrainingArguments` whose best checkpoint is chosen by span micro F1 on the validation set."""

    metric_for_best_model: str | None = field(default="f1", metadata={
        "help": "Metric that picks the best checkpoint (default f1: span-level micro F1; also macro_f1, "
                "word_accuracy, loss, f1_<type>, ...)."})


# --------------------------------------------------------------------------------------------------------------------
# Small pure helpers (unit-tested)
# --------------------------------------------------------------------------------------------------------------------


def parse_hidden_layers(value: str | int | Sequence[int | str], num_layers: int | None = None) -> int | list[int]:
    """`"-1"` or `["-1"]` -> -1; `"-1,-2"`, `["-1", "-2"]` or `[-1, -2]` -> [-1, -2]; `"all"` -> [0, 1, ...,
    num_layers]."""
    if isinstance(value, bool):
        raise InputError(f"--hidden_layers must be integers, got {value!r}")
    if isinstance(value, int):
        return value
    if not isinstance(value, str):  # a list from the command line (strings) or a JSON file (ints or strings)
        if any(isinstance(v, bool) or not isinstance(v, (int, str)) for v in value):
            raise InputError(f"--hidden_layers must be integers, got {value!r}")
        value = ",".join(str(v) for v in value)
    text = value.strip()
    if text.lower() == "all":
        if num_layers is None:
            raise InputError("--hidden_layers all needs the encoder's number of layers")
        return list(range(num_layers + 1))
    parts = [part.strip() for part in text.strip("[]").split(",") if part.strip()]
    try:
        layers = [int(part) for part in parts]
    except ValueError:
        raise InputError(
            f"--hidden_layers {value!r} is not an integer or comma list of integers: use e.g. -1, 4, '-1,-2,-3,-4' "
            "or all"
        ) from None
    if not layers:
        raise InputError("--hidden_layers is empty: use e.g. -1 (last layer)")
    return layers[0] if len(layers) == 1 else layers


def build_label_list(sentences: Sequence[dict]) -> list[str]:
    """Every tag of the training sentences, sorted, with `O` first."""
    labels = {tag for sentence in sentences for tag in sentence["ner_tags"]}
    return (["O"] if "O" in labels else []) + sorted(labels - {"O"})


def b_to_i_map(label_list: Sequence[str]) -> list[int]:
    """For each label id, the id used on a word's later sub-tokens with `--label_all_tokens` (B-X -> I-X)."""
    index = {label: i for i, label in enumerate(label_list)}
    return [index.get("I-" + label[2:], i) if label.startswith("B-") else i for i, label in enumerate(label_list)]


def align_labels(word_ids: Sequence[int | None], word_label_ids: Sequence[int], label_all_tokens: bool = False,
                 b_to_i: Sequence[int] | None = None) -> list[int]:
    """Token-level label ids for one sentence: the word's label on its first sub-token; -100 on special tokens and
    (unless `label_all_tokens`) on later sub-tokens, which otherwise get the I- form of a B- label."""
    labels: list[int] = []
    previous = None
    for word in word_ids:
        if word is None:
            labels.append(-100)
        elif word != previous:
            labels.append(int(word_label_ids[word]))
        elif label_all_tokens:
            label = int(word_label_ids[word])
            labels.append(int(b_to_i[label]) if b_to_i is not None else label)
        else:
            labels.append(-100)
        previous = word
    return labels


def first_token_positions(word_ids: Sequence[int | None], num_words: int) -> list[int]:
    """Position of each word's first sub-token, -1 for a word with none (truncated away, or empty after
    normalisation)."""
    positions = [-1] * num_words
    for position, word in enumerate(word_ids):
        if word is not None and positions[word] == -1:
            positions[word] = position
    return positions


def word_predictions(token_predictions: np.ndarray, positions: Sequence[Sequence[int]], id2label: dict,
                     missing: str = "O") -> list[list[str]]:
    """Word tags from token-level predicted ids (`[N, L]`, padded with anything): the id at each word's first
    sub-token; `missing` for a word without one."""
    if len(token_predictions) != len(positions):
        raise ValueError(f"{len(token_predictions)} predicted sequences for {len(positions)} sentences")
    sentences = []
    for row, word_positions in zip(token_predictions, positions):
        sentences.append([id2label[int(row[p])] if 0 <= p < len(row) else missing for p in word_positions])
    return sentences


def entity_type(tag: str) -> str:
    """`B-protein` / `I-protein` -> `protein`; `O` stays `O`."""
    return tag[2:] if len(tag) > 2 and tag[1] == "-" and tag[0] in "BIESLU" else tag


# --------------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class NerSplit:
    """One split of words and IOB tags, with where it came from (for error messages and reports)."""

    name: str  # train / validation / test
    source: str  # a file path, or "dataset <name> split <split>"
    sentences: list[dict]  # {"tokens": [...], "ner_tags": [...]} with string tags
    path: Path | None = None  # the file, when read from one

    @property
    def tokens(self) -> list[list[str]]:
        return [s["tokens"] for s in self.sentences]

    @property
    def tags(self) -> list[list[str]]:
        return [s["ner_tags"] for s in self.sentences]


def _dataset_split_rows(split_dataset, source: str, text_column: str, label_column: str) -> list[dict]:
    """Rows of a `datasets` split as {"tokens", "ner_tags"} with string tags (ClassLabel ids mapped to names)."""
    from datasets import ClassLabel

    columns = list(split_dataset.column_names)
    for column, flag in ((text_column, "--text_column_name"), (label_column, "--label_column_name")):
        if column not in columns:
            raise DataFormatError(f"{source}: no column {column!r} ({flag}); columns present: {columns}")
    feature = split_dataset.features[label_column]
    inner = getattr(feature, "feature", None)
    if inner is None and isinstance(feature, list) and feature:
        inner = feature[0]
    names = inner.names if isinstance(inner, ClassLabel) else None
    rows = []
    for index, (tokens, tags) in enumerate(zip(split_dataset[text_column], split_dataset[label_column])):
        if not isinstance(tokens, (list, tuple)) or not isinstance(tags, (list, tuple)):
            raise DataFormatError(
                f"{source}, example {index}: columns {text_column!r} and {label_column!r} must hold lists (words "
                "and their tags)"
            )
        if names is not None:
            tags = [names[int(t)] for t in tags]
        elif any(not isinstance(t, str) for t in tags):
            raise DataFormatError(
                f"{source}, example {index}: column {label_column!r} holds ids but the dataset has no ClassLabel "
                "names for them; cast the column to Sequence(ClassLabel(names=[...])) or store the tag strings"
            )
        if len(tokens) != len(tags):
            raise DataFormatError(f"{source}, example {index}: {len(tokens)} words but {len(tags)} tags")
        if tokens:
            rows.append({"tokens": [str(t) for t in tokens], "ner_tags": [str(t) for t in tags]})
    return rows


def load_splits(data_args: NerDataArguments, cache_dir: str | None = None, token: str | None = None
                ) -> dict[str, NerSplit]:
    """Read the train / validation / test splits that were given, each cut to its `max_*_samples`."""
    splits: dict[str, NerSplit] = {}
    if data_args.dataset_name:
        dataset = load_dataset_dict(data_args.dataset_name, data_args.dataset_config_name, cache_dir=cache_dir,
                                    token=token)
        available = {"train": ["train"], "validation": list(VALIDATION_SPLIT_NAMES), "test": ["test"]}
        for split, candidates in available.items():
            found = next((c for c in candidates if c in dataset), None)
            if found is not None:
                source = f"dataset {data_args.dataset_name} split {found!r}"
                rows = _dataset_split_rows(dataset[found], source, data_args.text_column_name,
                                           data_args.label_column_name)
                splits[split] = NerSplit(split, source, rows)
    for split, path in (("train", data_args.train_file), ("validation", data_args.validation_file),
                        ("test", data_args.test_file)):
        if path:
            if not Path(path).is_file():
                raise InputError(f"--{split}_file {path}: no such file")
            rows = read_token_file(path, tokens_key=data_args.text_column_name,
                                   tags_key=data_args.label_column_name, line_numbers=True)
            splits[split] = NerSplit(split, str(path), rows, Path(path))
    for split, limit in (("train", data_args.max_train_samples), ("validation", data_args.max_eval_samples),
                         ("test", data_args.max_predict_samples)):
        if split in splits and limit is not None:
            splits[split].sentences = splits[split].sentences[:limit]
    return splits


def check_known_labels(split: NerSplit, known: Sequence[str], known_from: str, tags_key: str = "ner_tags") -> None:
    """Raise a `DataFormatError` naming the file and line (the readers keep them in `"lines"`; a `datasets`
    split: the sentence) of the first tag in `split` the model cannot predict."""
    known_set = set(known)
    for index, sentence in enumerate(split.sentences):
        for position, (word, tag) in enumerate(zip(sentence["tokens"], sentence["ner_tags"])):
            if tag not in known_set:
                unknown = sorted({t for s in split.sentences for t in s["ner_tags"]} - known_set)
                lines = sentence.get("lines")
                where = f"{split.source}:{lines[position]}" if lines else f"{split.source}, sentence {index + 1}"
                raise DataFormatError(
                    f"{where}: label {tag!r} (on word {word!r}) is not among the {len(known_set)} labels "
                    f"{known_from} ({', '.join(known)}); unknown labels in this {split.name} data: "
                    f"{', '.join(unknown)}. Fix the tag, or train on data that has it."
                )


# --------------------------------------------------------------------------------------------------------------------
# Model and tokenizer
# --------------------------------------------------------------------------------------------------------------------


def load_model_config(model_args: NerModelArguments):
    """The config at `--model_name_or_path`, with one clear error when it is not a model folder / Hub id."""
    from transformers import AutoConfig

    import medheads  # noqa: F401  (registers the medheads model types with AutoConfig)

    try:
        return AutoConfig.from_pretrained(model_args.model_name_or_path, **model_args.hub_kwargs())
    except (OSError, ValueError, KeyError) as error:
        raise InputError(
            f"--model_name_or_path {model_args.model_name_or_path!r} is not a model: it must be a folder or Hub id "
            "with a transformers config.json (a text encoder such as BERT, or a saved HiddenLayerTokenClassifier) "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from None


def is_saved_token_classifier(config) -> bool:
    from ..models.configuration_hidden_layer_token_classifier import HiddenLayerTokenClassifierConfig

    return getattr(config, "model_type", None) == HiddenLayerTokenClassifierConfig.model_type


def encoder_config_of(config):
    """The encoder's config: nested in a saved medheads model, else the config itself."""
    return config.encoder_config if is_saved_token_classifier(config) else config


def check_entities(splits: dict, training_args) -> None:
    """Span F1 needs gold entities: a validation split (model selection, --do_eval) or a test split (--do_predict)
    whose tags are all `O` would train a full epoch and then have no span metric; stop before training instead."""
    uses = {"validation": training_args.do_eval or (training_args.do_train and training_args.eval_strategy != "no"),
            "test": training_args.do_predict}
    for name, used in uses.items():
        split = splits.get(name)
        if not used or split is None:
            continue
        if not any(tag != "O" for tags in split.tags for tag in tags):
            raise InputError(
                f"{split.source}: the {name} split has no entity (every tag is O), so span precision, recall and F1 "
                "cannot be computed" + (" and no best checkpoint can be chosen" if name == "validation" else "") +
                f": use {name} data with entities" + (", or --eval_strategy no --load_best_model_at_end false to "
                                                      "train without evaluation" if name == "validation" else ""))


def check_encoder_config(config, path: str) -> None:
    """Refuse configs that are not text encoders, with what to pass instead."""
    model_type = str(getattr(config, "model_type", ""))
    if model_type.startswith("medheads-") and not is_saved_token_classifier(config):
        raise InputError(
            f"--model_name_or_path {path!r} is a saved {model_type} model, not a HiddenLayerTokenClassifier: pass a "
            "text encoder (e.g. a BERT folder) or a model saved by this script"
        )
    if is_saved_token_classifier(config):
        return
    if getattr(config, "is_encoder_decoder", False):
        raise InputError(
            f"--model_name_or_path {path!r} is an encoder-decoder ({model_type}); pass an encoder such as BERT, "
            "RoBERTa or ModernBERT"
        )
    missing = [name for name in ("vocab_size", "hidden_size", "num_hidden_layers") if getattr(config, name, None)
               is None]
    if missing:
        raise InputError(
            f"--model_name_or_path {path!r} ({model_type or 'unknown type'}) is not a text encoder: its config has "
            f"no {', '.join(missing)}. Pass a text encoder such as BERT, RoBERTa or ModernBERT"
        )


def load_tokenizer(model_args: NerModelArguments, encoder_config):
    """The fast tokenizer (word_ids are needed to map sub-tokens back to words)."""
    from transformers import AutoTokenizer

    name = model_args.tokenizer_name or model_args.model_name_or_path
    kwargs = model_args.hub_kwargs()
    if getattr(encoder_config, "model_type", None) in PREFIX_SPACE_MODEL_TYPES:
        kwargs["add_prefix_space"] = True
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
    except (OSError, ValueError, TypeError) as error:
        raise InputError(
            f"could not load a tokenizer from {name!r} ({type(error).__name__}: {str(error).splitlines()[0]}); "
            "pass --tokenizer_name with a folder or Hub id holding one"
        ) from None
    require_fast_tokenizer(tokenizer, name)
    return tokenizer


def require_fast_tokenizer(tokenizer, name: str) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise InputError(
            f"the tokenizer of {name!r} ({type(tokenizer).__name__}) is not a fast tokenizer: this script needs "
            "word_ids() to map sub-tokens back to words. Use a model with a tokenizer.json, or pass "
            "--tokenizer_name with a fast tokenizer"
        )


def build_model(model_args: NerModelArguments, config, label_list: list[str] | None):
    """A new head on a pretrained encoder, or the saved medheads model to continue from."""
    from ..models.modeling_hidden_layer_token_classifier import HiddenLayerTokenClassifier

    path = model_args.model_name_or_path
    load_kwargs = model_args.hub_kwargs()
    if is_saved_token_classifier(config):
        try:
            model = HiddenLayerTokenClassifier.from_pretrained(path, **load_kwargs)
        except (OSError, ValueError) as error:  # a truncated weights file
            raise InputError(f"--model_name_or_path {path!r}: {error}") from None
        logger.info("Continuing from the saved model %s (hidden_layers=%s, layer_combination=%s; "
                    "--hidden_layers/--layer_combination/--classifier_dropout are taken from it).",
                    path, model.config.hidden_layers, model.config.layer_combination)
        if model_args.freeze_encoder and not model.config.freeze_encoder:
            model.freeze_encoder()
        if model_args.use_crf and not getattr(model.config, "use_crf", False):
            logger.warning("--use_crf is ignored: the saved model %s was trained without a CRF (softmax decoding); "
                           "start from its encoder to train one with a CRF.", path)
        return model
    layers = parse_hidden_layers(model_args.hidden_layers, int(config.num_hidden_layers))
    id2label = dict(enumerate(label_list))
    try:
        return HiddenLayerTokenClassifier.from_encoder(
            path, hidden_layers=layers, layer_combination=model_args.layer_combination,
            classifier_dropout=model_args.classifier_dropout, freeze_encoder=model_args.freeze_encoder,
            use_crf=model_args.use_crf, id2label=id2label, label2id={label: i for i, label in id2label.items()},
            **load_kwargs,
        )
    except ValueError as error:  # out-of-range layer, not an encoder, missing weights: the messages say what to do
        raise InputError(f"--model_name_or_path {path!r}: {error}") from None


def resolve_max_seq_length(requested: int | None, tokenizer, encoder_config) -> int:
    limits = [512]
    if isinstance(getattr(tokenizer, "model_max_length", None), int) and tokenizer.model_max_length < 10**6:
        limits.append(tokenizer.model_max_length)
    if getattr(encoder_config, "max_position_embeddings", None):
        # RoBERTa-style position ids start after the padding index.
        offset = 2 if getattr(encoder_config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else 0
        limits.append(int(encoder_config.max_position_embeddings) - offset)
    limit = min(limits)
    if requested is None:
        return limit
    if requested > limit:
        logger.warning("--max_seq_length %d is above what the tokenizer/encoder take (%d); using %d.",
                       requested, limit, limit)
        return limit
    return requested


# --------------------------------------------------------------------------------------------------------------------
# Tokenization and metrics
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class EncodedSplit:
    split: NerSplit
    dataset: Any  # datasets.Dataset with input_ids, attention_mask, (token_type_ids), labels
    positions: list[list[int]]  # first sub-token position of every word, -1 if none
    truncated_sentences: int = 0
    unseen_words: int = 0


def encode_split(split: NerSplit, tokenizer, label2id: dict[str, int], max_seq_length: int,
                 label_all_tokens: bool, training_args=None, num_proc: int | None = None) -> EncodedSplit:
    """Tokenize a split's words (truncating to `max_seq_length`) and align the label ids."""
    import contextlib

    import datasets

    b_to_i = b_to_i_map([label for label, _ in sorted(label2id.items(), key=lambda item: item[1])])
    rows = {"tokens": split.tokens,
            "tag_ids": [[label2id.get(tag, -100) for tag in tags] for tags in split.tags]}
    raw = datasets.Dataset.from_dict(rows)

    def tokenize(batch):
        encoded = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True, max_length=max_seq_length)
        labels, positions = [], []
        for i, tag_ids in enumerate(batch["tag_ids"]):
            word_ids = encoded.word_ids(batch_index=i)
            labels.append(align_labels(word_ids, tag_ids, label_all_tokens, b_to_i))
            positions.append(first_token_positions(word_ids, len(tag_ids)))
        encoded["labels"] = labels
        encoded["word_positions"] = positions
        return encoded

    context = (training_args.main_process_first(desc=f"{split.name} tokenization") if training_args is not None
               else contextlib.nullcontext())
    with context:
        encoded = raw.map(tokenize, batched=True, remove_columns=raw.column_names, num_proc=num_proc,
                          desc=f"Tokenizing {split.name}")
    positions = [list(p) for p in encoded["word_positions"]]
    encoded = encoded.remove_columns("word_positions")
    truncated = sum(1 for p in positions if p and p[-1] == -1)
    unseen = sum(1 for p in positions for q in p if q == -1)
    if unseen:
        logger.warning(
            "%s: %d words of %d sentences have no sub-token within --max_seq_length %d (or vanish in the tokenizer's "
            "normalisation, e.g. zero-width characters); they count as predicted 'O'.",
            split.source, unseen, truncated, max_seq_length)
    return EncodedSplit(split, encoded, positions, truncated, unseen)


def preprocess_logits_for_metrics(logits, labels):
    """Keep only the argmax ids, so evaluation does not gather [N, L, num_labels] float logits."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=-1)


class NerMetrics:
    """`compute_metrics` for `Trainer`: maps first-sub-token predictions back to words and scores them with
    `medheads.metrics.ner_metrics`. Point it at the split being evaluated with `use()`; the last word-level
    predictions stay in `last_predictions`."""

    def __init__(self, id2label: dict[int, str], strict: bool = False):
        self.id2label = {int(k): v for k, v in id2label.items()}
        self.strict = strict
        self.encoded: EncodedSplit | None = None
        self.last_predictions: list[list[str]] | None = None

    def use(self, encoded: EncodedSplit) -> "NerMetrics":
        self.encoded = encoded
        return self

    def __call__(self, eval_prediction) -> dict[str, float]:
        from ..metrics import ner_metrics

        if self.encoded is None:
            raise RuntimeError("NerMetrics.use(split) must be called before evaluation")
        predictions = eval_prediction.predictions
        if isinstance(predictions, tuple):
            predictions = predictions[0]
        predictions = np.asarray(predictions)
        if predictions.ndim == 3:  # raw logits (no preprocess_logits_for_metrics)
            predictions = predictions.argmax(-1)
        self.last_predictions = word_predictions(predictions, self.encoded.positions, self.id2label)
        return ner_metrics(self.encoded.split.tags, self.last_predictions, strict=self.strict)


# --------------------------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------------------------


def pipeline_char_metrics(model, tokenizer, split: NerSplit, prefix: str, batch_size: int = 16) -> dict[str, float]:
    """The shipped pipeline's exact character-span P/R/F1 on the split's detokenized raw sentences (default call:
    aggregation "first", long sentences windowed), as `<prefix>_pipeline_char_{precision,recall,f1}`."""
    from ..metrics import pipeline_char_span_metrics
    from ..models.pipeline_token_classification import MedheadsTokenClassificationPipeline

    model.eval()
    ner = MedheadsTokenClassificationPipeline(model=model, tokenizer=tokenizer)
    scores = pipeline_char_span_metrics(ner, split.tokens, split.tags, batch_size=batch_size)
    logger.info("%s: pipeline on raw sentences, exact character spans: P %.4f R %.4f F1 %.4f", split.source,
                scores["precision"], scores["recall"], scores["f1"])
    return {f"{prefix}_pipeline_char_{key}": value for key, value in scores.items()
            if key in ("precision", "recall", "f1")}


def write_predictions_tsv(path: Path, tokens, gold, pred) -> Path:
    """`token<TAB>gold<TAB>pred` lines, a blank line between sentences."""
    blocks = ["\n".join(f"{t}\t{g}\t{p}" for t, g, p in zip(*sentence)) for sentence in zip(tokens, gold, pred)]
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


def word_level_report(gold, pred, label_list: Sequence[str]) -> str:
    from sklearn.metrics import classification_report

    flat_gold = [t for s in gold for t in s]
    flat_pred = [t for s in pred for t in s]
    labels = [label for label in label_list if label != "O"] + (["O"] if "O" in label_list else [])
    return classification_report(flat_gold, flat_pred, labels=labels, digits=4, zero_division=0)


def type_confusion(gold, pred, label_list: Sequence[str]) -> tuple[list[int], list[int], list[str]]:
    """Word-level (gold, predicted) entity-type ids and the type names (`O` first), for a confusion matrix."""
    types = list(dict.fromkeys(["O"] + [entity_type(label) for label in label_list if label != "O"]))
    types += sorted({entity_type(t) for s in list(gold) + list(pred) for t in s} - set(types))
    index = {name: i for i, name in enumerate(types)}
    y_true = [index[entity_type(t)] for s in gold for t in s]
    y_pred = [index[entity_type(t)] for s in pred for t in s]
    return y_true, y_pred, types


def best_checkpoint_summary(state) -> str:
    """Where the best checkpoint is and how it scored (from `trainer.state`)."""
    if not state.best_model_checkpoint:
        return "Best checkpoint: none selected (no evaluation during training)."
    step = state.best_global_step or int(str(state.best_model_checkpoint).rsplit("-", 1)[-1])
    eval_log = next((log for log in state.log_history if log.get("step") == step and "eval_loss" in log), {})
    train_losses = [log["loss"] for log in state.log_history if "loss" in log and log.get("step", 0) <= step]
    parts = [f"Best checkpoint: {Path(state.best_model_checkpoint).name} (epoch {eval_log.get('epoch', '?')}, "
             f"step {step}), best metric {state.best_metric:.4f}"]
    if "eval_loss" in eval_log:
        parts.append(f"validation loss at that epoch: {eval_log['eval_loss']:.4f}")
    if train_losses:
        parts.append(f"last logged training loss up to it: {train_losses[-1]:.4f}")
    return "; ".join(parts) + "."


def write_split_reports(output_dir: Path, split_label: str, prefix: str, encoded: EncodedSplit,
                        predictions: list[list[str]], metrics: dict, label_list: Sequence[str],
                        strict: bool) -> tuple[str, list[str]]:
    """Error sentences, predictions TSV, per-type F1 bars and type confusion matrix for one split.

    Returns the split's section of `classification_report.txt` and the plot paths."""
    from ..metrics import ner_classification_report, ner_error_sentences
    from ..plots import plot_confusion_matrix, plot_per_label_f1

    split = encoded.split
    tokens, gold = split.tokens, split.tags
    errors = ner_error_sentences(tokens, gold, predictions)
    (output_dir / f"{split_label}_errors.txt").write_text(
        f"# {split.source}: sentences with at least one wrong tag ({errors.count('# sentence')} of "
        f"{len(tokens)}); '*' marks a wrong row\n\n" + (errors + "\n" if errors else ""), encoding="utf-8")
    write_predictions_tsv(output_dir / f"{split_label}_predictions.tsv", tokens, gold, predictions)

    types = [entity_type(label) for label in label_list if label != "O"]
    per_type = {t: metrics[f"{prefix}_f1_{t}"] for t in dict.fromkeys(types) if f"{prefix}_f1_{t}" in metrics}
    plots = []
    if per_type:
        plots.append(str(plot_per_label_f1(
            per_type, output_dir / f"f1_per_type_{split_label}.png",
            title=f"Span F1 per entity type, {split_label} (micro {metrics[f'{prefix}_f1']:.3f}, "
                  f"macro {metrics[f'{prefix}_macro_f1']:.3f})")))
    y_true, y_pred, type_names = type_confusion(gold, predictions, label_list)
    plots.append(str(plot_confusion_matrix(y_true, y_pred, type_names,
                                           output_dir / f"confusion_matrix_{split_label}.png",
                                           title=f"Word-level entity types, {split_label}")))

    mode = "strict IOB2" if strict else "conlleval-compatible"
    notes = ""
    if encoded.unseen_words:
        notes = (f"Note: {encoded.unseen_words} words of {encoded.truncated_sentences} sentences had no sub-token "
                 "within --max_seq_length and count as predicted O.\n")
    section = (f"== {split_label}: {split.source} ({len(tokens)} sentences, {sum(map(len, tokens))} words) ==\n"
               f"{notes}\nSpan level (seqeval, {mode} mode):\n"
               f"{ner_classification_report(gold, predictions, strict=strict)}\n"
               f"Word level (first sub-token of each word):\n{word_level_report(gold, predictions, label_list)}\n")
    return section, plots


# --------------------------------------------------------------------------------------------------------------------
# The script
# --------------------------------------------------------------------------------------------------------------------


def check_arguments(model_args: NerModelArguments, data_args: NerDataArguments,
                    training_args: NerTrainingArguments, splits: dict[str, NerSplit]) -> None:
    if training_args.do_train and "train" not in splits:
        raise InputError("--do_train needs --train_file (or a --dataset_name with a train split)")
    if training_args.do_predict and "test" not in splits:
        raise InputError("--do_predict needs --test_file (or a --dataset_name with a test split)")
    needs_validation = training_args.do_train and (
        training_args.eval_strategy != "no" or training_args.load_best_model_at_end)
    if needs_validation and "validation" not in splits:
        raise InputError(
            "training evaluates every epoch and keeps the best checkpoint, which needs --validation_file (or a "
            "validation split); without one pass --eval_strategy no --save_strategy epoch "
            "--load_best_model_at_end false"
        )
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        raise InputError("nothing to do: pass --do_train, --do_eval and/or --do_predict")
    if not getattr(training_args, "eval_do_concat_batches", True):
        raise InputError("--eval_do_concat_batches false is not supported: the metrics need all predictions")
    if getattr(training_args, "batch_eval_metrics", False):
        raise InputError("--batch_eval_metrics is not supported: NER metrics are computed over whole sentences")
    if data_args.max_seq_length is not None and data_args.max_seq_length < 3:
        raise InputError(f"--max_seq_length {data_args.max_seq_length} is too small (special tokens need 2)")


def run(model_args: NerModelArguments, data_args: NerDataArguments, training_args: NerTrainingArguments,
        callbacks: Sequence | None = None) -> dict[str, float]:
    """Train / evaluate / predict as the arguments say; returns every metric written to all_results.json."""
    import torch
    from transformers import DataCollatorForTokenClassification, Trainer, set_seed

    from ..plots import plot_training_curves

    setup_logging(training_args)
    output_dir = Path(training_args.output_dir)
    logger.warning("Process rank %s, device %s, n_gpu %s, distributed %s, bf16 %s, fp16 %s",
                   training_args.process_index, training_args.device, training_args.n_gpu,
                   training_args.parallel_mode.value == "distributed", training_args.bf16, training_args.fp16)

    # 1. Everything that can be wrong with the input, before any training.
    splits = load_splits(data_args, cache_dir=model_args.cache_dir, token=model_args.token)
    check_arguments(model_args, data_args, training_args, splits)
    prepare_output_dir(training_args, InputError, model_args.model_name_or_path)
    config = load_model_config(model_args)
    check_encoder_config(config, model_args.model_name_or_path)
    encoder_config = encoder_config_of(config)
    tokenizer = load_tokenizer(model_args, encoder_config)
    if is_saved_token_classifier(config):
        label_list = [config.id2label[i] for i in range(len(config.id2label))]
        known_from = f"of the saved model {model_args.model_name_or_path}"
        if "train" in splits:
            check_known_labels(splits["train"], label_list, known_from, data_args.label_column_name)
    else:
        if "train" not in splits:
            raise InputError(
                "a new head needs training data to define its labels: pass --train_file (and --do_train), or "
                "evaluate a model saved by this script"
            )
        if not training_args.do_train:
            raise InputError(
                f"{model_args.model_name_or_path!r} is an encoder without a trained head: pass --do_train, or a "
                "folder saved by train-ner to evaluate (an untrained head's scores would be noise)"
            )
        label_list = build_label_list(splits["train"].sentences)
        known_from = f"seen in the training data {splits['train'].source}"
    for name in ("validation", "test"):
        if name in splits:
            check_known_labels(splits[name], label_list, known_from, data_args.label_column_name)
    check_entities(splits, training_args)
    label2id = {label: i for i, label in enumerate(label_list)}
    logger.info("%d labels: %s", len(label_list), ", ".join(label_list))

    set_seed(training_args.seed)
    model = build_model(model_args, config, label_list)
    max_seq_length = resolve_max_seq_length(data_args.max_seq_length, tokenizer, encoder_config)
    # The saved tokenizer states the window the model was trained on; the pipeline reads long texts in windows of
    # this many tokens (context like training's, rather than the encoder's full 512 positions).
    tokenizer.model_max_length = max_seq_length
    encoded = {name: encode_split(split, tokenizer, label2id, max_seq_length, data_args.label_all_tokens,
                                  training_args, data_args.preprocessing_num_workers)
               for name, split in splits.items()}
    logger.info("Sentences: %s", {name: len(split.sentences) for name, split in splits.items()})

    metrics_fn = NerMetrics(model.config.id2label, strict=data_args.seqeval_strict)
    if "validation" in encoded:
        metrics_fn.use(encoded["validation"])
    collator = DataCollatorForTokenClassification(
        tokenizer, pad_to_multiple_of=8 if (training_args.fp16 or training_args.bf16) else None)
    trainer = Trainer(
        model=model, args=training_args,
        train_dataset=encoded["train"].dataset if training_args.do_train else None,
        eval_dataset=encoded["validation"].dataset if "validation" in encoded else None,
        processing_class=tokenizer, data_collator=collator, compute_metrics=metrics_fn,
        preprocess_logits_for_metrics=preprocess_logits_for_metrics, callbacks=list(callbacks or []),
    )

    all_metrics: dict[str, float] = {}
    plots: list[str] = []
    report_sections: list[str] = []
    main_process = trainer.is_world_process_zero()

    # 2. Train.
    if training_args.do_train:
        checkpoint = resume_checkpoint(training_args)
        maybe_find_learning_rate(trainer, training_args)
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()  # model (+ its remote code) and tokenizer: a complete pipeline folder
        train_metrics = dict(train_result.metrics)
        train_metrics["train_samples"] = len(splits["train"].sentences)
        save_split_metrics(trainer, "train", train_metrics)
        trainer.save_state()
        all_metrics.update(train_metrics)
        if main_process:
            plots.append(str(plot_training_curves(
                trainer.state.log_history, output_dir / "training_curves.png", metric="eval_f1"
                if training_args.metric_for_best_model in (None, "f1", "eval_f1") else None,
                title=f"{Path(model_args.model_name_or_path).name}, hidden_layers={model.config.hidden_layers}")))
            report_sections.append(best_checkpoint_summary(trainer.state) + "\n")
    elif main_process:
        output_dir.mkdir(parents=True, exist_ok=True)

    # 3. Evaluate (the restored best checkpoint) on validation, then on test.
    for name, prefix, label, wanted in (("validation", "eval", "validation", training_args.do_eval),
                                        ("test", "predict", "test", training_args.do_predict)):
        if not wanted or name not in encoded:
            if wanted:
                logger.info("No %s split: skipping %s.", name, "evaluation" if prefix == "eval" else "prediction")
            continue
        metrics_fn.use(encoded[name])
        if prefix == "eval":
            metrics = trainer.evaluate(eval_dataset=encoded[name].dataset, metric_key_prefix=prefix)
        else:
            metrics = trainer.predict(encoded[name].dataset, metric_key_prefix=prefix).metrics
        metrics[f"{prefix}_samples"] = len(splits[name].sentences)
        if data_args.pipeline_metrics and main_process:
            metrics.update(pipeline_char_metrics(trainer.model, tokenizer, splits[name], prefix,
                                                 training_args.per_device_eval_batch_size))
        save_split_metrics(trainer, prefix, metrics)
        all_metrics.update(metrics)
        if main_process:
            section, split_plots = write_split_reports(
                output_dir, label, prefix, encoded[name], metrics_fn.last_predictions, metrics, label_list,
                data_args.seqeval_strict)
            report_sections.append(section)
            plots.extend(split_plots)

    if main_process:
        header = (f"{SCRIPT_NAME}: {model_args.model_name_or_path}, hidden_layers={model.config.hidden_layers}, "
                  f"layer_combination={model.config.layer_combination}, "
                  f"freeze_encoder={model.config.freeze_encoder}, "
                  f"decoding={'CRF (Viterbi)' if getattr(model.config, 'use_crf', False) else 'softmax (argmax)'}\n\n")
        (output_dir / "classification_report.txt").write_text(header + "\n".join(report_sections), encoding="utf-8")
        arguments = dataclass_dict(model_args, data_args, training_args)
        arguments["label_list"] = label_list
        arguments["max_seq_length_used"] = max_seq_length
        write_run_summary(str(output_dir), SCRIPT_NAME, arguments, all_metrics, plots)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return all_metrics


ARGUMENT_CLASSES = (NerModelArguments, NerDataArguments, NerTrainingArguments)


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """`medheads train-ner ARGS`: parse flags (or one JSON file of them) and `run`. An input error prints one line
    `PROG: error: ...` (no traceback) and gives exit status 2, before any model is loaded."""
    return run_training_command(run, ARGUMENT_CLASSES, argv, prog)


__all__ = [
    "NerModelArguments", "NerDataArguments", "NerTrainingArguments", "ARGUMENT_CLASSES", "NerSplit", "EncodedSplit",
    "NerMetrics", "parse_hidden_layers", "build_label_list", "b_to_i_map", "align_labels", "first_token_positions",
    "word_predictions", "entity_type", "load_splits", "check_known_labels", "load_model_config",
    "check_encoder_config", "load_tokenizer", "require_fast_tokenizer", "build_model", "encode_split",
    "type_confusion", "pipeline_char_metrics", "write_predictions_tsv", "run", "main",
]
