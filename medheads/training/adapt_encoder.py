"""Domain adaptation of an encoder: continue masked-language-model (MLM) pretraining on the domain's text (seed 001),
and save an encoder folder every medheads command takes as `--model_name_or_path`.

    medheads adapt-encoder --model_name_or_path "$MINILM" --output_dir outputs/minilm-mtsamples \\
        --train_file ../shared/data/mtsamples/mtsamples_6class.csv --text_column transcription --num_train_epochs 1
    medheads adapt-encoder --model_name_or_path "$MINILM" --train_file ../shared/data/rocov2/rocov2_valid.csv \\
        --text_column caption --output_dir outputs/minilm-rocov2
    medheads adapt-encoder --model_name_or_path "$MINILM" --train_file ../shared/data/jnlpba/train.tsv \\
        --output_dir outputs/minilm-jnlpba             # an NER token file: its sentences, words joined by spaces

Text comes from a plain text file (one text per line), a CSV / TSV / JSON-lines table (`--text_column`), or a
CoNLL token file (`--file_format conll`, the default for `.tsv`/`.conll`/`.iob` files whose lines are
`token<TAB>tag`). A held-out share (`--validation_split_percentage`, default 5) is masked once with a fixed seed, and
its MLM loss is measured before and after training on the same masks, so the two numbers compare.

An encoder saved without an MLM head (sentence-transformers checkpoints such as all-MiniLM-L6-v2 hold only the
`BertModel`) gets a new one: its transform (dense + LayerNorm) is randomly initialised and its decoder is tied to the
word embeddings (BERT's own layout), so only the transform and an output bias start from scratch. The command logs
this and writes it into `adapt_results.json`.

Outputs in `--output_dir`: the `*ForMaskedLM` model (config, weights; `AutoModel` loads its encoder, so train-ner /
train-text take the folder as `--model_name_or_path`) and tokenizer, `adapt_results.json` (held-out MLM loss and
perplexity before / after, the head note), `mlm_loss.png` (training and held-out loss).
"""

from __future__ import annotations

import json
import logging
import math
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .arguments import MedheadsTrainingArguments, parse_args
from ..command_line import run_command
from ..errors import InputError
from .common import setup_logging, write_json

logger = logging.getLogger("medheads.adapt_encoder")

SCRIPT_NAME = "adapt-encoder"


AdaptInputError = InputError  # the package's one input-error class (kept as a name for readers of this module)


@dataclass
class AdaptArguments:
    model_name_or_path: str = field(metadata={"help": "The encoder to adapt (folder or Hub id)."})
    train_file: str = field(metadata={"help": "Domain text: .txt (one text per line), .csv/.tsv/.jsonl table with "
                                              "--text_column, or a CoNLL token file."})
    text_column: str = field(default="text", metadata={"help": "Column of the table holding the text."})
    file_format: str = field(default="auto", metadata={
        "help": "How to read --train_file: auto (by extension and content), text, table, conll.",
        "choices": ["auto", "text", "table", "conll"]})
    validation_split_percentage: float = field(default=5.0, metadata={
        "help": "Share of the texts held out to measure the MLM loss before and after."})
    max_seq_length: int = field(default=128, metadata={"help": "Tokens per text (longer texts are cut into pieces)."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of tokens masked."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N texts."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer if not the encoder's own."})


@dataclass
class AdaptTrainingArguments(MedheadsTrainingArguments):
    learning_rate: float = field(default=5e-5, metadata={"help": "AdamW learning rate."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over the domain text."})
    metric_for_best_model: str | None = field(default="loss", metadata={"help": "Held-out MLM loss."})
    greater_is_better: bool | None = field(default=False, metadata={"help": "Lower loss is better."})


def read_texts(path: str, file_format: str = "auto", text_column: str = "text") -> list[str]:
    """The texts of `path` (see the module doc); empty texts dropped."""
    from ..data import _table_records, read_conll

    file = Path(path)
    if not file.is_file():
        raise AdaptInputError(f"--train_file {path}: no such file")
    suffix = file.suffix.lower()
    if file_format == "auto":
        if suffix in (".conll", ".iob"):
            file_format = "conll"
        elif suffix == ".tsv":
            first = next((line for line in file.read_text(encoding="utf-8-sig").splitlines() if line.strip()), "")
            fields = first.split("\t")
            file_format = "conll" if len(fields) == 2 and text_column not in fields else "table"
        elif suffix in (".csv", ".json", ".jsonl", ".tab"):
            file_format = "table"
        else:
            file_format = "text"
    if file_format == "conll":
        texts = [" ".join(sentence["tokens"]) for sentence in read_conll(file)]
    elif file_format == "table":
        columns, records = _table_records(file)
        if text_column not in columns:
            raise AdaptInputError(f"--train_file {path} has no column {text_column!r} (--text_column); columns: "
                                  f"{', '.join(map(str, columns))}")
        texts = [str(record.get(text_column) or "") for _, record in records]
    else:
        texts = file.read_text(encoding="utf-8-sig").splitlines()
    texts = [text.strip() for text in texts if text and text.strip()]
    if not texts:
        raise AdaptInputError(f"--train_file {path}: no non-empty text found ({file_format} format)")
    return texts


def load_masked_lm(path: str):
    """`AutoModelForMaskedLM` from `path`; a missing MLM head is initialised with the decoder tied to the word
    embeddings. Returns (model, note) where note says what was initialised (None when the head was loaded)."""
    from transformers import AutoConfig, AutoModelForMaskedLM

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise AdaptInputError(f"--model_name_or_path {path!r} is not a model folder or Hub id ({str(error).splitlines()[0]})") from None
    if str(getattr(config, "model_type", "")).startswith("medheads-"):
        raise AdaptInputError(f"--model_name_or_path {path!r} is a saved medheads model, not an encoder: pass the "
                              "encoder it was built on")
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)
    except ValueError as error:
        raise AdaptInputError(f"--model_name_or_path {path!r} ({config.model_type}) has no masked-LM class in "
                              f"transformers: {str(error).splitlines()[0]}") from None
    base = getattr(model, model.base_model_prefix, None)
    base_names = {f"{model.base_model_prefix}.{name}" for name, _ in base.named_parameters()} if base else set()
    missing_head = sorted(key for key in info.get("missing_keys", []) if key not in base_names)
    missing_body = sorted(key for key in info.get("missing_keys", []) if key in base_names)
    if missing_body:
        raise AdaptInputError(f"--model_name_or_path {path!r}: the encoder's own weights are missing "
                              f"({missing_body[:3]}...): is this the right folder?")
    output, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    tied = output is not None and output.weight is embeddings.weight
    if not tied and output is not None and missing_head:
        model.config.tie_word_embeddings = True
        model.tie_weights()
        tied = output.weight is embeddings.weight
    note = None
    if missing_head:
        note = (f"{path} has no masked-LM head: a new one was initialised ({len(missing_head)} tensors: "
                f"{', '.join(missing_head[:4])}{'...' if len(missing_head) > 4 else ''}); "
                + ("its decoder is tied to the word embeddings, so only the transform and output bias start random."
                   if tied else "its decoder is NOT tied to the word embeddings (the architecture does not tie)."))
        logger.warning(note)
    return model, note


def encode(texts: list[str], tokenizer, max_seq_length: int) -> list[list[int]]:
    """Token ids of each text cut into pieces of at most `max_seq_length` (special tokens included): a long text
    gives several pieces (the tokenizer's overflowing tokens), none of it is dropped."""
    encoded = tokenizer(texts, truncation=True, max_length=max_seq_length, return_overflowing_tokens=True)
    special = set(tokenizer.all_special_ids)
    return [list(ids) for ids in encoded["input_ids"] if any(token not in special for token in ids)]


def fixed_masks(pieces: list[list[int]], tokenizer, probability: float, seed: int) -> list[dict]:
    """BERT masking (80% [MASK], 10% random, 10% kept) drawn once with `seed`: held-out examples with labels."""
    rng = random.Random(seed)
    special = set(tokenizer.all_special_ids)
    out = []
    for ids in pieces:
        inputs, labels = list(ids), [-100] * len(ids)
        for i, token in enumerate(ids):
            if token in special or rng.random() >= probability:
                continue
            labels[i] = token
            draw = rng.random()
            if draw < 0.8:
                inputs[i] = tokenizer.mask_token_id
            elif draw < 0.9:
                inputs[i] = rng.randrange(len(tokenizer))
        if any(label != -100 for label in labels):
            out.append({"input_ids": inputs, "labels": labels})
    return out


class MaskingCollator:
    """Random masking for training batches; held-out batches (which carry labels) are only padded."""

    def __init__(self, tokenizer, probability: float):
        from transformers import DataCollatorForLanguageModeling

        self.tokenizer = tokenizer
        self.mlm = DataCollatorForLanguageModeling(tokenizer, mlm_probability=probability)

    def __call__(self, features):
        import torch

        if "labels" not in features[0]:
            return self.mlm([{"input_ids": f["input_ids"]} for f in features])
        width = max(len(f["input_ids"]) for f in features)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(features), width), pad, dtype=torch.long)
        labels = torch.full((len(features), width), -100, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            ids[row, :n] = torch.as_tensor(f["input_ids"])
            labels[row, :n] = torch.as_tensor(f["labels"])
            mask[row, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def run(args: AdaptArguments, training_args: AdaptTrainingArguments) -> dict:
    import datasets
    from transformers import AutoTokenizer, Trainer, set_seed

    from ..plots import plot_training_curves

    if not training_args.output_dir:
        raise AdaptInputError("--output_dir is required (where the adapted encoder is written)")
    out = Path(training_args.output_dir)
    if (out / "adapt_results.json").is_file() and not training_args.overwrite_output_dir:
        raise AdaptInputError(f"--output_dir {out} already holds an adapted encoder (adapt_results.json): choose "
                              "another folder or pass --overwrite_output_dir")
    if not 0 < args.validation_split_percentage < 100:
        raise AdaptInputError("--validation_split_percentage must be in (0, 100): the held-out MLM loss is the "
                              "measure of the adaptation")
    setup_logging(training_args)
    texts = read_texts(args.train_file, args.file_format, args.text_column)
    if args.max_train_samples:
        texts = texts[: args.max_train_samples]
    model, note = load_masked_lm(args.model_name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_name or args.model_name_or_path)
    except (OSError, ValueError) as error:
        raise AdaptInputError(f"no tokenizer at {args.tokenizer_name or args.model_name_or_path!r}: pass "
                              f"--tokenizer_name ({str(error).splitlines()[0]})") from None
    if tokenizer.mask_token_id is None:
        raise AdaptInputError(f"the tokenizer of {args.model_name_or_path!r} has no mask token: MLM needs one")
    set_seed(training_args.seed)

    order = list(range(len(texts)))
    random.Random(training_args.seed).shuffle(order)
    held = max(1, round(len(texts) * args.validation_split_percentage / 100))
    if held >= len(texts):
        raise AdaptInputError(f"--train_file has {len(texts)} texts: too few to hold {held} out and train on the rest")
    held_texts = [texts[i] for i in order[:held]]
    train_texts = [texts[i] for i in order[held:]]
    train = datasets.Dataset.from_dict({"input_ids": encode(train_texts, tokenizer, args.max_seq_length)})
    validation = datasets.Dataset.from_list(
        fixed_masks(encode(held_texts, tokenizer, args.max_seq_length), tokenizer, args.mlm_probability,
                    training_args.seed))
    logger.info("MLM on %d texts (%d pieces of <= %d tokens); %d held-out texts (%d pieces)", len(train_texts),
                len(train), args.max_seq_length, len(held_texts), len(validation))

    trainer = Trainer(model=model, args=training_args, train_dataset=train, eval_dataset=validation,
                      data_collator=MaskingCollator(tokenizer, args.mlm_probability), processing_class=tokenizer)
    before = trainer.evaluate(metric_key_prefix="before")["before_loss"]
    logger.warning("Held-out MLM loss before adaptation: %.4f", before)
    trainer.train()
    after = trainer.evaluate(metric_key_prefix="after")["after_loss"]
    logger.warning("Held-out MLM loss after adaptation: %.4f (before %.4f)", after, before)
    trainer.save_model()
    results = {"model_name_or_path": args.model_name_or_path, "train_file": args.train_file,
               "train_texts": len(train_texts), "held_out_texts": len(held_texts), "train_pieces": len(train),
               "held_out_pieces": len(validation), "max_seq_length": args.max_seq_length,
               "mlm_probability": args.mlm_probability, "epochs": training_args.num_train_epochs,
               "learning_rate": training_args.learning_rate,
               "held_out_mlm_loss_before": before, "held_out_mlm_loss_after": after,
               "held_out_perplexity_before": math.exp(min(before, 50)),
               "held_out_perplexity_after": math.exp(min(after, 50)), "new_mlm_head": note}
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(out)
        write_json(out / "adapt_results.json", results)
        plot_training_curves(trainer.state.log_history, out / "mlm_loss.png", metric=None,
                             title=f"MLM adaptation of {Path(args.model_name_or_path).name}")
    return results


def main(argv: Sequence[str] | None = None, prog: str = "medheads adapt-encoder") -> int:
    def go(arguments):
        args, training_args = parse_args((AdaptArguments, AdaptTrainingArguments), arguments, prog=prog,
                                         description=(__doc__ or "").strip().split("\n\n")[0])
        result = run(args, training_args)
        print(json.dumps({k: result[k] for k in ("held_out_mlm_loss_before", "held_out_mlm_loss_after")}, indent=2))

    return run_command(lambda: go(list(sys.argv[1:] if argv is None else argv)), prog)


__all__ = ["AdaptArguments", "AdaptTrainingArguments", "read_texts", "load_masked_lm", "encode", "fixed_masks",
           "MaskingCollator", "run", "main"]
