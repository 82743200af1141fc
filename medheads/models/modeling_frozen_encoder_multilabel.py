"""`FrozenEncoderMultiLabel`: multi-label or multi-class text classification with an MLP on a frozen encoder.

`forward_features` (encoder -> one pooled vector per text) and `forward_head` (pooled vector -> logits) are separate,
so features can be computed once, cached, and the head trained alone. Texts longer than the encoder's window are
encoded window by window and pooled over all of them. This file imports torch, transformers and medheads' own
modeling/configuration modules only, so it works as Hub remote code.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from .configuration_frozen_encoder_multilabel import FrozenEncoderMultiLabelConfig
from .modeling_common import (
    MedheadsPreTrainedModel, build_encoder, copy_encoder_weights, freeze, load_pretrained_encoder, mark_head,
    split_load_kwargs, truncated_encoder_config,
)

ACTIVATION_MODULES = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


class FrozenEncoderMultiLabelPreTrainedModel(MedheadsPreTrainedModel):
    config_class = FrozenEncoderMultiLabelConfig
    base_model_prefix = "encoder"
    main_input_name = "input_ids"
    input_modalities = ("text",)
    supports_gradient_checkpointing = False  # the encoder never trains, and the head is tiny


class FrozenEncoderMultiLabel(FrozenEncoderMultiLabelPreTrainedModel):
    """MLP head on a pooled hidden state of a frozen encoder (sigmoid per label, or softmax over classes)."""

    def __init__(self, config: FrozenEncoderMultiLabelConfig):
        super().__init__(config)
        n = int(config.encoder_config.num_hidden_layers)
        self.feature_index = config.feature_layer if config.feature_layer >= 0 else n + 1 + config.feature_layer
        self.encoder = build_encoder(truncated_encoder_config(config.encoder_config, self.feature_index))
        self._no_split_modules = list(getattr(self.encoder, "_no_split_modules", None) or [])
        layers, width = [], config.encoder_config.hidden_size
        for size in config.head_hidden_sizes:
            layers += [nn.Dropout(config.head_dropout), nn.Linear(width, size), ACTIVATION_MODULES[config.head_activation]()]
            width = size
        layers += [nn.Dropout(config.head_dropout), nn.Linear(width, config.num_labels)]
        self.head = nn.Sequential(*layers)
        mark_head(self.head)
        self.post_init()
        freeze(self.encoder)

    def get_input_embeddings(self):
        return self.encoder.get_input_embeddings()

    @classmethod
    def from_encoder(cls, encoder_name_or_path, **config_kwargs) -> "FrozenEncoderMultiLabel":
        """Build the model around a pretrained encoder (folder or Hub id), loading its weights.

        `config_kwargs` go to [`FrozenEncoderMultiLabelConfig`] (`pooling`, `id2label`, `problem_type`, ...);
        `dtype`, `revision`, `token`, `trust_remote_code` and `attn_implementation` go to the encoder's loading.
        """
        encoder = load_pretrained_encoder(encoder_name_or_path, **split_load_kwargs(config_kwargs))
        model = cls(FrozenEncoderMultiLabelConfig(encoder_config=encoder.config, **config_kwargs))
        copy_encoder_weights(model.encoder, encoder, encoder_name_or_path)
        model.config.name_or_path = str(encoder_name_or_path)
        return model.to(encoder.dtype)

    @property
    def feature_size(self) -> int:
        """Width of the pooled vector `forward_features` returns."""
        return int(self.config.encoder_config.hidden_size)

    # -- features ---------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def forward_features(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs) -> torch.Tensor:
        """Pooled encoder features, `[batch, hidden_size]`; texts longer than the window are pooled over windows."""
        if input_ids is None:
            raise ValueError("forward_features needs `input_ids` (tokenize the texts with the model's tokenizer).")
        if input_ids.dim() != 2:
            raise ValueError(f"`input_ids` must be [batch, sequence], got shape {tuple(input_ids.shape)}.")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        batch, length = input_ids.shape
        window = self.config.chunk_length
        if length > window:  # [batch, n * window] -> [batch * n, window], dropping windows that are all padding
            chunks = -(-length // window)
            pad = chunks * window - length
            input_ids = nn.functional.pad(input_ids, (0, pad), value=self.config.encoder_config.pad_token_id or 0)
            attention_mask = nn.functional.pad(attention_mask, (0, pad), value=0)
            input_ids = input_ids.reshape(batch * chunks, window)
            attention_mask = attention_mask.reshape(batch * chunks, window)
            if token_type_ids is not None:
                token_type_ids = nn.functional.pad(token_type_ids, (0, pad)).reshape(batch * chunks, window)
        else:
            chunks = 1
        used = attention_mask.any(dim=1)
        encoder_kwargs = dict(input_ids=input_ids[used], attention_mask=attention_mask[used], **kwargs)
        if token_type_ids is not None:
            encoder_kwargs["token_type_ids"] = token_type_ids[used]
        hidden = self.encoder(**encoder_kwargs, output_hidden_states=True, return_dict=True).hidden_states
        states = hidden[self.feature_index]
        full = states.new_zeros(batch * chunks, states.shape[1], states.shape[2])
        full[used] = states
        states = full.reshape(batch, chunks * window if chunks > 1 else length, -1)
        mask = attention_mask.reshape(batch, -1)
        return self.pool(states, mask, chunks, window)

    def pool(self, states: torch.Tensor, mask: torch.Tensor, chunks: int, window: int) -> torch.Tensor:
        mask = mask.to(states.dtype).unsqueeze(-1)
        if self.config.pooling == "mean":
            return (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        if self.config.pooling == "max":
            return states.masked_fill(mask == 0, torch.finfo(states.dtype).min).amax(dim=1)
        # cls: the first token of every window that holds text, averaged over windows
        firsts = states[:, ::window] if chunks > 1 else states[:, :1]
        first_mask = mask[:, ::window] if chunks > 1 else mask[:, :1]
        return (firsts * first_mask).sum(dim=1) / first_mask.sum(dim=1).clamp(min=1.0)

    def forward_head(self, pooled_features: torch.Tensor) -> torch.Tensor:
        if pooled_features.dim() != 2 or pooled_features.shape[-1] != self.feature_size:
            raise ValueError(
                f"pooled_features must be [batch, {self.feature_size}] (what forward_features returns), "
                f"got shape {tuple(pooled_features.shape)}."
            )
        head_dtype = self.head[-1].weight.dtype
        return self.head(pooled_features.to(head_dtype))

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, pooled_features=None, labels=None,
                return_dict=None, **kwargs) -> SequenceClassifierOutput:
        r"""
        pooled_features (`torch.FloatTensor` of shape `(batch_size, hidden_size)`, *optional*):
            Precomputed `forward_features` output, used in place of `input_ids` (cached-feature training).
        labels (`torch.Tensor`, *optional*):
            Multi-label: `(batch_size, num_labels)` multi-hot floats (0/1). Single-label: `(batch_size,)` class ids.
        """
        for key in ("output_hidden_states", "output_attentions"):
            kwargs.pop(key, None)
        if pooled_features is None:
            if input_ids is None:
                raise ValueError("Pass `input_ids` (tokenized text) or `pooled_features` (cached forward_features).")
            pooled_features = self.forward_features(input_ids, attention_mask, token_type_ids, **kwargs)
        logits = self.forward_head(pooled_features)
        loss = None if labels is None else self.loss(logits, labels)
        if return_dict is False:
            return (loss, logits) if loss is not None else (logits,)
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        batch, num_labels = logits.shape
        labels = labels.to(logits.device)
        if self.config.problem_type == "multi_label_classification":
            if tuple(labels.shape) != (batch, num_labels):
                raise ValueError(
                    f"Multi-label labels must be multi-hot of shape (batch, num_labels) = ({batch}, {num_labels}), "
                    f"got {tuple(labels.shape)}. For one class id per example use "
                    "problem_type='single_label_classification'."
                )
            if not labels.dtype.is_floating_point and labels.dtype not in (torch.bool, torch.int64, torch.int32,
                                                                             torch.int8, torch.uint8):
                raise ValueError(f"Multi-label labels must be 0/1 floats, got dtype {labels.dtype}.")
            return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(
                f"Single-label labels must be integer class ids of shape (batch,), got dtype {labels.dtype}. For "
                "multi-hot targets use problem_type='multi_label_classification'."
            )
        if tuple(labels.shape) != (batch,):
            raise ValueError(f"Single-label labels must have shape (batch,) = ({batch},), got {tuple(labels.shape)}.")
        if int(labels.min()) < 0 or int(labels.max()) >= num_labels:
            raise ValueError(
                f"labels hold class ids outside [0, {num_labels}) (found {int(labels.min())}..{int(labels.max())})."
            )
        return nn.functional.cross_entropy(logits.float(), labels)

    # -- prediction -------------------------------------------------------------------------------------------------
    def threshold_tensor(self, device=None) -> torch.Tensor:
        self.config.validate_thresholds()  # names `thresholds` when they do not fit the labels
        thresholds = self.config.thresholds
        if thresholds is None:
            thresholds = 0.5
        if hasattr(thresholds, "tolist"):
            thresholds = thresholds.tolist()
        if isinstance(thresholds, (int, float)):
            thresholds = [float(thresholds)] * self.config.num_labels
        return torch.tensor([float(t) for t in thresholds], dtype=torch.float32, device=device)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        if self.config.problem_type == "multi_label_classification":
            return torch.sigmoid(logits.float())
        return torch.softmax(logits.float(), dim=-1)

    @torch.no_grad()
    def predict_labels(self, logits=None, **inputs) -> list[list[str]]:
        """Label names per example: every label whose probability reaches its threshold (multi-label; config
        `thresholds`), or the arg-max class (single-label). Pass `logits`, or model inputs (`input_ids`, ...)."""
        if logits is None:
            logits = self(**inputs).logits
        probs = self.probabilities(logits)
        names = self.config.id2label
        if self.config.problem_type != "multi_label_classification":
            return [[names[int(i)]] for i in probs.argmax(dim=-1)]
        hits = probs >= self.threshold_tensor(probs.device)
        return [[names[int(i)] for i in row.nonzero().flatten()] for row in hits]


__all__ = ["FrozenEncoderMultiLabel", "FrozenEncoderMultiLabelPreTrainedModel"]
