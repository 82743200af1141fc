"""Tiny random encoders, backbones, tokenizers and image processors built in code (no downloads)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    BertConfig, BertTokenizerFast, DeiTConfig, ModernBertConfig, RobertaConfig, ViTConfig, ViTImageProcessor,
)

WORDS = (
    "the of and in a to with was is has il 2 for patient chest x ray ct mri scan abdomen pelvis brain spine lung heart "
    "protein dna rna cell line type il-2 gene expression receptor kinase t cells b human cancer tumor disease "
    "breast colon syndrome deficiency mutation pain history normal left right lower upper anterior posterior view "
    "axial sagittal image shows mass lesion fracture . , ( ) - ; :"
).split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = SPECIAL + sorted(set(WORDS))
HIDDEN = 32


def make_tokenizer(folder: Path) -> BertTokenizerFast:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n")
    return BertTokenizerFast(vocab=str(vocab_file), do_lower_case=True, model_max_length=64)


def save_tiny_encoder(folder: Path) -> Path:
    """A tiny random BERT (seeded) with the tiny tokenizer, saved as a bare encoder folder that every training
    command accepts as --model_name_or_path."""
    from transformers import AutoModel

    folder = Path(folder)
    torch.manual_seed(0)
    AutoModel.from_config(encoder_config()).save_pretrained(folder)
    make_tokenizer(folder).save_pretrained(folder)
    return folder


def encoder_config(arch: str = "bert", layers: int = 4):
    common = dict(vocab_size=len(VOCAB), hidden_size=HIDDEN, num_hidden_layers=layers, num_attention_heads=4,
                  intermediate_size=48, pad_token_id=0)
    if arch == "bert":
        return BertConfig(max_position_embeddings=128, **common)
    if arch == "roberta":
        return RobertaConfig(max_position_embeddings=130, **{**common, "pad_token_id": 1})
    if arch == "modernbert":
        return ModernBertConfig(max_position_embeddings=128, global_attn_every_n_layers=2, local_attention=8,
                                bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3, **common)
    raise ValueError(arch)


ENCODER_ARCHS = ("bert", "roberta", "modernbert")


def backbone_config(arch: str = "vit", image_size: int = 32, patch_size: int = 8):
    common = dict(image_size=image_size, patch_size=patch_size, hidden_size=HIDDEN, num_hidden_layers=2,
                  num_attention_heads=4, intermediate_size=48)
    if arch == "vit":
        return ViTConfig(**common)
    if arch == "deit":
        return DeiTConfig(**common)
    raise ValueError(arch)


BACKBONE_ARCHS = ("vit", "deit")


def make_image_processor(image_size: int = 32) -> ViTImageProcessor:
    return ViTImageProcessor(size={"height": image_size, "width": image_size}, do_convert_rgb=True,
                             image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])


def random_ids(batch: int = 2, length: int = 9, seed: int = 0, pad_last: int = 3):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(len(SPECIAL), len(VOCAB), (batch, length), generator=generator)
    mask = torch.ones_like(ids)
    if pad_last:
        ids[-1, -pad_last:] = 0
        mask[-1, -pad_last:] = 0
    return ids, mask


NER_LABELS = {0: "O", 1: "B-protein", 2: "I-protein", 3: "B-cell_type", 4: "I-cell_type"}
CUI_LABELS = {0: "C0817096", 1: "C0040405", 2: "C1306645", 3: "C0024485"}
IMAGE_LABELS = {0: "normal", 1: "pneumonia"}
