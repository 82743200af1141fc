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
    MedheadsPreTrainedModel, build_encoder, copy_encoder_weights, grad_context, load_pretrained_encoder, mark_head,
    select_hidden_states, split_load_kwargs,
)

ACTIVATION_MODULES = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


class FrozenEncoderMultiLabelPreTrainedModel(MedheadsPreTrainedModel):
    config_class = FrozenEncoderMultiLabelConfig
    base_model_prefix = "encoder"
    main_input_name = "input_ids"
    input_modalities = ("text",)
    supports_gradient_checkpointing = True  # for an unfrozen encoder (`unfreeze_encoder()`)
    _frozen_module = ("encoder", "freeze_encoder")


class FrozenEncoderMultiLabel(FrozenEncoderMultiLabelPreTrainedModel):
    """MLP head on a pooled hidden state of a frozen encoder (sigmoid per label, or softmax over classes)."""

    def __init__(self, config: FrozenEncoderMultiLabelConfig):
        super().__init__(config)
        n = int(config.encoder_config.num_hidden_layers)
        self.feature_index = config.feature_layer if config.feature_layer >= 0 else n + 1 + config.feature_layer
        self.encoder = build_encoder(config.encoder_config, self.feature_index)  # shares config.encoder_config
        self._no_split_modules = list(getattr(self.encoder, "_no_split_modules", None) or [])
        layers, width = [], config.encoder_config.hidden_size
        for size in config.head_hidden_sizes:
            layers += [nn.Dropout(config.head_dropout), nn.Linear(width, size), ACTIVATION_MODULES[config.head_activation]()]
            width = size
        layers += [nn.Dropout(config.head_dropout), nn.Linear(width, config.num_labels)]
        self.head = nn.Sequential(*layers)
        mark_head(self.head)
        self.post_init()
        if config.freeze_encoder:
            self.freeze_encoder()

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
    def forward_features(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs) -> torch.Tensor:
        """Pooled encoder features, `[batch, hidden_size]`; texts longer than the window are pooled over windows."""
        kwargs.pop("output_hidden_states", None)
        kwargs.pop("output_attentions", None)
        return self._encode(input_ids, attention_mask, token_type_ids, **kwargs)[0]

    def _encode(self, input_ids=None, attention_mask=None, token_type_ids=None, output_attentions=False,
                output_hidden_states=False, **kwargs):
        """(pooled features, the encoder's hidden states, its attentions).

        Texts longer than the window are reshaped into `[batch * windows, window]` and encoded window by window; the
        hidden states are put back in input order (`[batch, sequence, hidden]`, each window encoded on its own) and
        the attentions are per window (`[batch * windows, heads, window, window]`). Eagerly, windows that are all
        padding are skipped; under `torch.export` / `torch.compile` every window runs (no data-dependent shapes),
        with the same result. `torch.export` with a dynamic batch and sequence length gives one program for
        texts up to the window (`config.chunk_length`; explicit `Dim` ranges work) and, from a longer example, one
        for texts longer than the window; declare the latter's sizes `Dim.DYNAMIC` (or `Dim.AUTO`): an explicit
        `Dim` range fails with torch's "Constraints violated", as torch cannot prove the window reshape's size
        identities for every length.
        """
        if input_ids is None:
            raise ValueError("forward_features needs `input_ids` (tokenize the texts with the model's tokenizer).")
        if input_ids.dim() != 2:
            raise ValueError(f"`input_ids` must be [batch, sequence], got shape {tuple(input_ids.shape)}.")
        self._check_frozen()
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        batch, length = input_ids.shape
        window = self.config.chunk_length
        tracing = torch.compiler.is_compiling() or torch.compiler.is_exporting()
        chunked = length > window
        if chunked:  # [batch, n * window] -> [batch * n, window]
            chunks = -(-length // window)

            def cut(tensor, value=0):  # [batch, n * window] -> [batch * n, window]; each pad from its own length
                size = tensor.shape[1]
                tensor = nn.functional.pad(tensor, (0, -(-size // window) * window - size), value=value)
                return tensor.reshape(-1, window)

            input_ids = cut(input_ids, self.config.encoder_config.pad_token_id or 0)
            attention_mask = cut(attention_mask)
            if token_type_ids is not None:
                token_type_ids = cut(token_type_ids)
        else:
            chunks = 1
        encoder_kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                              **kwargs)
        if token_type_ids is None:
            del encoder_kwargs["token_type_ids"]
        if output_attentions:
            encoder_kwargs["output_attentions"] = True
        used = None
        if chunked and not tracing:  # skip the windows that are all padding (eager only: a data-dependent shape)
            used = attention_mask.any(dim=1)
            encoder_kwargs = {key: value[used] if torch.is_tensor(value) and value.shape[:1] == used.shape else value
                              for key, value in encoder_kwargs.items()}
        with grad_context(self.encoder_frozen):
            outputs = self.encoder(**encoder_kwargs, output_hidden_states=True, return_dict=True)
        hidden_states = []
        for states in outputs.hidden_states[: self.feature_index + 1]:
            if used is not None:
                full = states.new_zeros(batch * chunks, states.shape[1], states.shape[2])
                states = full.index_put((used,), states)
            # unchunked: the encoder's own tensors (gradients reach them, as in transformers' models)
            hidden_states.append(states.reshape(batch, -1, states.shape[-1]) if chunked else states)
        mask = attention_mask.reshape(batch, -1)
        pooled = self.pool(hidden_states[self.feature_index], mask, chunks, window if chunked else length)
        if not output_hidden_states:
            return pooled, None, outputs.attentions if output_attentions else None
        if chunked:  # back to the input's length
            hidden_states = [states[:, :length] for states in hidden_states]
        return pooled, tuple(hidden_states), outputs.attentions if output_attentions else None

    def pool(self, states: torch.Tensor, mask: torch.Tensor, chunks: int, window: int) -> torch.Tensor:
        keep = mask.bool().unsqueeze(-1)
        # where(), not a product: a window that is all padding may hold NaNs (fully masked attention)
        states = torch.where(keep, states, torch.zeros((), dtype=states.dtype, device=states.device))
        mask = keep.to(states.dtype)
        if self.config.pooling == "mean":
            return states.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        if self.config.pooling == "max":
            return states.masked_fill(~keep, torch.finfo(states.dtype).min).amax(dim=1)
        # cls: the first token of every window that holds text, averaged over windows
        firsts, first_mask = states[:, ::window], mask[:, ::window]
        return firsts.sum(dim=1) / first_mask.sum(dim=1).clamp(min=1.0)

    def forward_head(self, pooled_features: torch.Tensor) -> torch.Tensor:
        if pooled_features.dim() != 2 or pooled_features.shape[-1] != self.feature_size:
            raise ValueError(
                f"pooled_features must be [batch, {self.feature_size}] (what forward_features returns), "
                f"got shape {tuple(pooled_features.shape)}."
            )
        head_dtype = self.head[-1].weight.dtype
        return self.head(pooled_features.to(head_dtype))

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, pooled_features=None, labels=None,
                output_attentions=None, output_hidden_states=None, return_dict=None,
                **kwargs) -> SequenceClassifierOutput:
        r"""
        pooled_features (`torch.FloatTensor` of shape `(batch_size, hidden_size)`, *optional*):
            Precomputed `forward_features` output, used in place of `input_ids` (cached-feature training).
        labels (`torch.Tensor`, *optional*):
            Multi-label: `(batch_size, num_labels)` multi-hot floats (0/1). Single-label: `(batch_size,)` class ids.
        output_hidden_states (`bool`, *optional*):
            Return the encoder's `hidden_states` up to the pooled layer (`feature_layer`; the encoder is built only
            that deep), each `(batch_size, sequence_length, hidden_size)`; long texts are encoded window by window.
        output_attentions (`bool`, *optional*):
            Return the encoder's attention weights (per window for long texts); needs `attn_implementation="eager"`.
        """
        output_attentions, output_hidden_states, return_dict = self.output_flags(
            output_attentions, output_hidden_states, return_dict)
        hidden_states = attentions = None
        if pooled_features is None:
            if input_ids is None:
                raise ValueError("Pass `input_ids` (tokenized text) or `pooled_features` (cached forward_features).")
            pooled_features, hidden_states, attentions = self._encode(
                input_ids, attention_mask, token_type_ids, output_attentions=output_attentions,
                output_hidden_states=output_hidden_states, **kwargs
            )
        logits = self.forward_head(pooled_features)
        loss = None if labels is None else self.loss(logits, labels)
        hidden_states = select_hidden_states(hidden_states, output_hidden_states)
        if not return_dict:
            output = tuple(item for item in (logits, hidden_states, attentions) if item is not None)
            return ((loss,) + output) if loss is not None else output
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states, attentions=attentions)

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
