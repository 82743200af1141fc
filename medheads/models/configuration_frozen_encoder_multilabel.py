"""Configuration of `FrozenEncoderMultiLabel`: an MLP head on pooled features of a frozen text encoder."""

from __future__ import annotations

import numbers
from typing import Literal

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

# The pipeline ships with the checkpoint: save_pretrained copies the modules imported here by single-dot imports into
# the folder, and `custom_pipelines` (set in __post_init__) makes the stock `pipeline(task, ...,
# trust_remote_code=True)` run it.
from .pipeline_text_classification import custom_pipelines

POOLINGS = ("cls", "mean", "max")
ACTIVATIONS = ("relu", "gelu", "tanh", "silu")
PROBLEM_TYPES = ("multi_label_classification", "single_label_classification")
# Encoders whose position ids start after the padding index (position = padding_idx + 1 + i), so only
# max_position_embeddings - pad_token_id - 1 positions are usable.
PADDING_OFFSET_MODEL_TYPES = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "roberta-prelayernorm",
                              "data2vec-text", "ibert", "longformer", "mpnet", "luke", "markuplm", "esm")


def usable_positions(encoder_config) -> int | None:
    """How many tokens one encoder pass can take (None if the config does not say)."""
    limit = getattr(encoder_config, "max_position_embeddings", None)
    if not limit:
        return None
    if getattr(encoder_config, "model_type", "") in PADDING_OFFSET_MODEL_TYPES:
        limit -= int(getattr(encoder_config, "pad_token_id", None) or 1) + 1
    return int(limit)


def check_text_encoder_config(encoder_config, model_name: str) -> None:
    """A text model needs a text encoder: refuse image backbones (ViT, DeiT, ...) when the model is built, not at the
    first forward pass."""
    model_type = getattr(encoder_config, "model_type", "")
    if getattr(encoder_config, "vocab_size", None) is None or (
            hasattr(encoder_config, "patch_size") and hasattr(encoder_config, "num_channels")):
        raise ValueError(
            f"{model_name} needs a text encoder (BERT, RoBERTa, ModernBERT, ...), but the encoder config is a "
            f"{model_type or 'model'} without a vocabulary (an image backbone?): for images use ViTPatchClassifier."
        )


class FrozenEncoderMultiLabelConfig(PreTrainedConfig):
    r"""
    Configuration of a [`FrozenEncoderMultiLabel`].

    A frozen encoder turns a text into one pooled vector (`forward_features`); an MLP head maps it to label logits
    (`forward_head`). Because the encoder never changes, the pooled vectors can be computed once and cached.

    Args:
        encoder_config (`dict` or `PreTrainedConfig`):
            Configuration of the encoder (any `AutoConfig` model type). Required.
        pooling (`str`, *optional*, defaults to `"mean"`):
            `"cls"` (first token), `"mean"` (mean over real tokens) or `"max"` (max over real tokens).
        feature_layer (`int`, *optional*, defaults to -1):
            Which entry of `hidden_states` is pooled (-1: the encoder's output).
        head_hidden_sizes (`list[int]`, *optional*, defaults to `[768, 768]`):
            Widths of the MLP's hidden layers; `[]` gives a linear (logistic-regression) head.
        head_activation (`str`, *optional*, defaults to `"relu"`): one of `relu`, `gelu`, `tanh`, `silu`.
        head_dropout (`float`, *optional*, defaults to 0.2): dropout before every linear layer of the head.
        problem_type (`str`, *optional*, defaults to `"multi_label_classification"`):
            `"multi_label_classification"` (sigmoid per label, BCE loss) or `"single_label_classification"`
            (softmax, cross-entropy).
        thresholds (`float` or `list[float]`, *optional*):
            Decision thresholds for multi-label prediction: `None` means 0.5, a float applies to every label, a list
            gives one per label (as tuned on a validation split).
        max_chunk_length (`int`, *optional*):
            Texts longer than this many tokens are split into windows of this length, each encoded on its own, and
            pooled over all windows (long clinical notes are not cut off). `None`: the encoder's
            `max_position_embeddings`, capped at 512.
        freeze_encoder (`bool`, *optional*, defaults to `True`):
            Keep the encoder's weights fixed (no gradients, eval mode) and train the head only, so features can be
            cached. `False` fine-tunes the encoder with the head (`model.unfreeze_encoder()` sets it).
    """

    model_type = "medheads-frozen-encoder-multilabel"
    sub_configs_defaults = {"encoder_config": SubConfigSpec(config_class=AutoConfig, model_type="bert", optional=True)}

    encoder_config: dict | PreTrainedConfig | None = None
    pooling: Literal["cls", "mean", "max"] = "mean"
    feature_layer: int = -1
    head_hidden_sizes: list[int] | tuple[int, ...] = (768, 768)
    head_activation: Literal["relu", "gelu", "tanh", "silu"] = "relu"
    head_dropout: float | int = 0.2
    thresholds: float | list[float] | None = None
    max_chunk_length: int | None = None
    freeze_encoder: bool = True

    def __post_init__(self, **kwargs):
        if self.encoder_config is None:
            raise ValueError(
                "FrozenEncoderMultiLabelConfig needs `encoder_config`: pass the encoder's config, e.g. "
                "`encoder_config=AutoConfig.from_pretrained(path)`, or build the model with "
                "`FrozenEncoderMultiLabel.from_encoder(path, ...)`."
            )
        if isinstance(self.encoder_config, dict) and "model_type" not in self.encoder_config:
            raise ValueError("`encoder_config` is a dict without `model_type`: pass a config object or its to_dict().")
        if self.problem_type is None:
            self.problem_type = "multi_label_classification"
        super().__post_init__(**kwargs)
        if not getattr(self, "custom_pipelines", None):
            self.custom_pipelines = custom_pipelines()
        if self.id2label is not None and not self.label2id:
            self.label2id = {label: i for i, label in self.id2label.items()}
        self.head_hidden_sizes = [int(size) for size in self.head_hidden_sizes]
        if any(size <= 0 for size in self.head_hidden_sizes):
            raise ValueError(f"`head_hidden_sizes` must be positive widths, got {self.head_hidden_sizes}.")
        if self.pooling not in POOLINGS:
            raise ValueError(f"Unknown pooling {self.pooling!r}: choose one of {', '.join(POOLINGS)}.")
        if self.head_activation not in ACTIVATIONS:
            raise ValueError(
                f"Unknown head_activation {self.head_activation!r}: choose one of {', '.join(ACTIVATIONS)}."
            )
        if self.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"Unknown problem_type {self.problem_type!r}: choose one of {', '.join(PROBLEM_TYPES)}.")
        n = int(self.encoder_config.num_hidden_layers)
        if not -(n + 1) <= self.feature_layer <= n:
            raise ValueError(
                f"feature_layer {self.feature_layer} is out of range for an encoder with {n} layers: "
                f"use an index in [{-(n + 1)}, {n}] (0 = embeddings, -1 = last layer)."
            )
        check_text_encoder_config(self.encoder_config, "FrozenEncoderMultiLabel")
        if self.max_chunk_length is not None and self.max_chunk_length < 2:
            raise ValueError(f"`max_chunk_length` must be at least 2 tokens, got {self.max_chunk_length}.")
        limit = usable_positions(self.encoder_config)
        if self.max_chunk_length is not None and limit is not None and self.max_chunk_length > limit:
            raise ValueError(
                f"`max_chunk_length` {self.max_chunk_length} is more than the encoder takes in one pass ({limit} "
                f"positions, {self.encoder_config.model_type}): use at most {limit} (longer texts are split into "
                "windows anyway)."
            )
        self.validate_thresholds()

    def __setattr__(self, key, value):
        if key == "thresholds" and hasattr(value, "tolist"):  # numpy array / tensor: keep the config JSON-able
            value = value.tolist()
        if key == "thresholds" and self.__dict__.get("_post_init_done", False):
            # a wrong value set after construction fails here, naming `thresholds`, not later in a tensor op
            previous = self.__dict__.get("thresholds")
            super().__setattr__(key, value)
            try:
                self.validate_thresholds()
            except ValueError:
                super().__setattr__(key, previous)
                raise
            return
        super().__setattr__(key, value)

    def validate_thresholds(self):
        """`thresholds` must be None, one probability, or one probability per label; ValueError otherwise."""
        thresholds = self.thresholds
        if thresholds is None:
            return
        if isinstance(thresholds, bool) or isinstance(thresholds, (str, bytes, dict)):
            raise ValueError(f"`thresholds` must be None, a float or a list of floats (one per label), got "
                             f"{type(thresholds).__name__} {thresholds!r}.")
        scalar = isinstance(thresholds, numbers.Real)
        if not scalar and hasattr(thresholds, "tolist"):  # a numpy array or tensor
            thresholds = thresholds.tolist()
            scalar = isinstance(thresholds, numbers.Real)
        try:
            values = [thresholds] if scalar else list(thresholds)
        except TypeError:
            raise ValueError(f"`thresholds` must be None, a float or a list of floats (one per label), got "
                             f"{type(thresholds).__name__}.") from None
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, numbers.Real)]
        if bad:
            raise ValueError(f"`thresholds` must hold numbers, got {bad[0]!r} ({type(bad[0]).__name__}).")
        if not scalar and len(values) != self.num_labels:
            raise ValueError(
                f"`thresholds` has {len(values)} values but the model has {self.num_labels} labels: give one "
                "threshold per label (in id2label order), a single float for all, or None for 0.5."
            )
        if any(not 0.0 <= float(v) <= 1.0 for v in values):
            raise ValueError(f"`thresholds` are probabilities and must lie in [0, 1], got {thresholds}.")

    def get_text_config(self, decoder=None, encoder=None) -> PreTrainedConfig:
        """The nested encoder's config, whichever end is asked for (like a composite model's `text_config`):
        transformers looks `vocab_size` and friends up here, e.g. `resize_token_embeddings` writes the new
        vocabulary size into it and the pipelines read it."""
        return self.encoder_config

    @property
    def chunk_length(self) -> int:
        """Token window of one encoder pass."""
        if self.max_chunk_length is not None:
            return int(self.max_chunk_length)
        return int(min(usable_positions(self.encoder_config) or 512, 512))


__all__ = ["FrozenEncoderMultiLabelConfig", "POOLINGS", "ACTIVATIONS", "usable_positions", "check_text_encoder_config"]
