"""Configuration of `HiddenLayerTokenClassifier`: a token-classification head on an intermediate hidden layer."""

from __future__ import annotations

from typing import Literal

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

# The pipeline ships with the checkpoint: save_pretrained copies the modules imported here by single-dot imports into
# the folder, and `custom_pipelines` (set in __post_init__) makes the stock `pipeline(task, ...,
# trust_remote_code=True)` run it.
from .pipeline_token_classification import custom_pipelines

LAYER_COMBINATIONS = ("concat", "mean", "scalar_mix")


class HiddenLayerTokenClassifierConfig(PreTrainedConfig):
    r"""
    Configuration of a [`HiddenLayerTokenClassifier`].

    The model reads `hidden_states[k]` of an encoder (the same indexing as a full forward with
    `output_hidden_states=True`: 0 is the embedding output, `num_hidden_layers` the last layer, negative values count
    from the end) for one layer or several layers combined, and puts dropout + a linear layer on top. The encoder is
    only built and run as deep as the deepest layer read.

    Args:
        encoder_config (`dict` or `PreTrainedConfig`):
            Configuration of the encoder (any `AutoConfig` model type: BERT, RoBERTa, ModernBERT, ...). Required.
        hidden_layers (`int` or `list[int]`, *optional*, defaults to -1):
            The hidden state(s) the head reads, like LLaVA's `vision_feature_layer`.
        layer_combination (`str`, *optional*, defaults to `"concat"`):
            How several layers are combined: `"concat"` (feature axis), `"mean"`, or `"scalar_mix"` (learned softmax
            weights and a scale gamma, as in ELMo). Ignored for a single layer.
        classifier_dropout (`float`, *optional*, defaults to 0.1):
            Dropout before the linear layer.
        freeze_encoder (`bool`, *optional*, defaults to `False`):
            Keep the encoder's weights fixed (no gradients, eval mode) and train the head only.
        use_crf (`bool`, *optional*, defaults to `False`):
            Put a linear-chain CRF on the linear layer's scores: learned tag transitions with hard BIO constraints,
            negative log-likelihood loss, Viterbi decoding (the model's `logits` then give the Viterbi path under
            argmax). Needs BIO (IOB2) labels for the constraints; other label names are left unconstrained.
        split_sentences (`bool`, *optional*, defaults to `True`):
            How the shipped `ner` pipeline reads raw text: sentence by sentence, each sentence its own window, as the
            training examples were sentences. Set `False` for a model trained on longer passages: windows then run
            across sentence boundaries. A pipeline call may override it (`split_sentences=...`).

    Example:

    ```python
    >>> from transformers import BertConfig
    >>> from medheads import HiddenLayerTokenClassifierConfig, HiddenLayerTokenClassifier
    >>> config = HiddenLayerTokenClassifierConfig(encoder_config=BertConfig(), hidden_layers=5,
    ...                                           id2label={0: "O", 1: "B-Disease", 2: "I-Disease"})
    >>> model = HiddenLayerTokenClassifier(config)  # runs 5 of BERT's 12 layers
    ```
    """

    model_type = "medheads-hidden-layer-token-classifier"
    sub_configs_defaults = {"encoder_config": SubConfigSpec(config_class=AutoConfig, model_type="bert", optional=True)}

    encoder_config: dict | PreTrainedConfig | None = None
    hidden_layers: int | list[int] = -1
    layer_combination: Literal["concat", "mean", "scalar_mix"] = "concat"
    classifier_dropout: float | int = 0.1
    freeze_encoder: bool = False
    use_crf: bool = False
    split_sentences: bool = True

    def __post_init__(self, **kwargs):
        if self.encoder_config is None:
            raise ValueError(
                "HiddenLayerTokenClassifierConfig needs `encoder_config`: pass the encoder's config, e.g. "
                "`encoder_config=AutoConfig.from_pretrained(path)`, or build the model with "
                "`HiddenLayerTokenClassifier.from_encoder(path, ...)`."
            )
        if isinstance(self.encoder_config, dict) and "model_type" not in self.encoder_config:
            raise ValueError("`encoder_config` is a dict without `model_type`: pass a config object or its to_dict().")
        super().__post_init__(**kwargs)
        if not getattr(self, "custom_pipelines", None):
            self.custom_pipelines = custom_pipelines()
        if self.id2label is not None and not self.label2id:
            self.label2id = {label: i for i, label in self.id2label.items()}
        model_type = getattr(self.encoder_config, "model_type", "")
        if getattr(self.encoder_config, "vocab_size", None) is None or (
                hasattr(self.encoder_config, "patch_size") and hasattr(self.encoder_config, "num_channels")):
            raise ValueError(
                f"HiddenLayerTokenClassifier needs a text encoder (BERT, RoBERTa, ModernBERT, ...), but the encoder "
                f"config is a {model_type or 'model'} without a vocabulary (an image backbone?)."
            )
        if isinstance(self.hidden_layers, tuple):
            self.hidden_layers = list(self.hidden_layers)
        if self.layer_combination not in LAYER_COMBINATIONS:
            raise ValueError(
                f"Unknown layer_combination {self.layer_combination!r}: choose one of {', '.join(LAYER_COMBINATIONS)}."
            )
        self.absolute_layers()  # validates the indices

    def get_text_config(self, decoder=None, encoder=None) -> PreTrainedConfig:
        """The nested encoder's config, whichever end is asked for (like a composite model's `text_config`):
        transformers looks `vocab_size` and friends up here, e.g. `resize_token_embeddings` writes the new
        vocabulary size into it and the pipelines read it."""
        return self.encoder_config

    @property
    def num_encoder_layers(self) -> int:
        return int(self.encoder_config.num_hidden_layers)

    def absolute_layers(self) -> list[int]:
        """The read hidden-state indices as non-negative positions in `hidden_states` (0 = embeddings)."""
        layers = self.hidden_layers if isinstance(self.hidden_layers, list) else [self.hidden_layers]
        if not layers:
            raise ValueError("`hidden_layers` is an empty list: name at least one layer, e.g. -1 for the last.")
        n = self.num_encoder_layers
        absolute = []
        for layer in layers:
            if isinstance(layer, bool) or not isinstance(layer, int):
                raise ValueError(f"`hidden_layers` must hold integers, got {layer!r}.")
            if not -(n + 1) <= layer <= n:
                raise ValueError(
                    f"hidden layer {layer} is out of range for an encoder with {n} layers: hidden_states has {n + 1} "
                    f"entries (0 = embeddings, {n} = last layer), so use an index in [{-(n + 1)}, {n}]."
                )
            absolute.append(layer if layer >= 0 else n + 1 + layer)
        if len(set(absolute)) != len(absolute):
            raise ValueError(f"`hidden_layers` {layers} names the same layer twice.")
        return absolute

    @property
    def encoder_depth(self) -> int:
        """How many encoder layers the model builds and runs (the deepest layer it reads)."""
        return max(self.absolute_layers())


__all__ = ["HiddenLayerTokenClassifierConfig", "LAYER_COMBINATIONS"]
