"""`HiddenLayerTokenClassifier`: token classification from an intermediate hidden layer (or a mix of layers).

The encoder is built only as deep as the deepest layer the head reads, so a head on layer 3 of a 6-layer encoder runs
half the encoder and stores half its weights. This file imports torch, transformers and its configuration only, so it
works as Hub remote code.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_outputs import TokenClassifierOutput

from .configuration_hidden_layer_token_classifier import HiddenLayerTokenClassifierConfig
from .crf import LinearChainCRF
from .modeling_common import (
    MedheadsPreTrainedModel, build_encoder, copy_encoder_weights, grad_context, load_pretrained_encoder,
    mark_head, select_hidden_states, split_load_kwargs,
)


class ScalarMix(nn.Module):
    """ELMo's scalar mix: gamma * sum_k softmax(w)_k * h_k."""

    def __init__(self, num_layers: int):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_layers))
        self.gamma = nn.Parameter(torch.ones(()))

    def forward(self, layers: list[torch.Tensor]) -> torch.Tensor:
        weights = torch.softmax(self.weights, dim=0).to(layers[0].dtype)
        mixed = sum(w * h for w, h in zip(weights, layers))
        return self.gamma.to(mixed.dtype) * mixed


class HiddenLayerTokenClassifierPreTrainedModel(MedheadsPreTrainedModel):
    config_class = HiddenLayerTokenClassifierConfig
    base_model_prefix = "encoder"
    main_input_name = "input_ids"
    input_modalities = ("text",)
    supports_gradient_checkpointing = True
    _frozen_module = ("encoder", "freeze_encoder")

    def _init_weights(self, module):
        if isinstance(module, ScalarMix):
            nn.init.zeros_(module.weights)
            nn.init.ones_(module.gamma)
        elif isinstance(module, LinearChainCRF):
            module.reset_parameters()
        else:
            super()._init_weights(module)


class HiddenLayerTokenClassifier(HiddenLayerTokenClassifierPreTrainedModel):
    """Token classifier on `hidden_states[k]` of an encoder run only up to layer k."""

    def __init__(self, config: HiddenLayerTokenClassifierConfig):
        super().__init__(config)
        self.layers = config.absolute_layers()
        self.encoder = build_encoder(config.encoder_config, config.encoder_depth)  # shares config.encoder_config
        self._no_split_modules = list(getattr(self.encoder, "_no_split_modules", None) or [])
        hidden_size = config.encoder_config.hidden_size
        many = len(self.layers) > 1
        self.scalar_mix = ScalarMix(len(self.layers)) if many and config.layer_combination == "scalar_mix" else None
        width = hidden_size * len(self.layers) if many and config.layer_combination == "concat" else hidden_size
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(width, config.num_labels)
        mark_head(self.classifier)
        labels = [config.id2label[i] for i in range(config.num_labels)]
        self.crf = LinearChainCRF(labels) if getattr(config, "use_crf", False) else None
        self.post_init()
        if config.freeze_encoder:
            self.freeze_encoder()

    # get/set_input_embeddings: PreTrainedModel's defaults reach the encoder through base_model_prefix = "encoder";
    # freeze_encoder / unfreeze_encoder: MedheadsPreTrainedModel
    @classmethod
    def from_encoder(cls, encoder_name_or_path, hidden_layers=-1, **config_kwargs) -> "HiddenLayerTokenClassifier":
        """Build the model around a pretrained encoder (folder or Hub id), loading the weights of the layers it uses.

        `config_kwargs` go to [`HiddenLayerTokenClassifierConfig`] (`id2label`, `layer_combination`, ...); `dtype`,
        `revision`, `token`, `trust_remote_code` and `attn_implementation` go to the encoder's loading.
        """
        encoder = load_pretrained_encoder(encoder_name_or_path, **split_load_kwargs(config_kwargs))
        config = HiddenLayerTokenClassifierConfig(
            encoder_config=encoder.config, hidden_layers=hidden_layers, **config_kwargs
        )
        model = cls(config)
        copy_encoder_weights(model.encoder, encoder, encoder_name_or_path)
        model.config.name_or_path = str(encoder_name_or_path)
        return model.to(encoder.dtype)

    # -- forward ----------------------------------------------------------------------------------------------------
    def _encode(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
                output_attentions=False, **kwargs):
        """The encoder's outputs (always with `hidden_states`), for the layers the model runs."""
        self._check_frozen()
        encoder_kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                              position_ids=position_ids, output_hidden_states=True, return_dict=True, **kwargs)
        if output_attentions:
            encoder_kwargs["output_attentions"] = True
        if token_type_ids is not None:
            encoder_kwargs["token_type_ids"] = token_type_ids
        with grad_context(self.encoder_frozen):
            return self.encoder(**encoder_kwargs)

    def combine_layers(self, hidden_states) -> torch.Tensor:
        """The read entries of `hidden_states`, combined (`[batch, seq, width]`)."""
        layers = [hidden_states[k] for k in self.layers]
        if len(layers) == 1:
            return layers[0]
        if self.config.layer_combination == "concat":
            return torch.cat(layers, dim=-1)
        if self.config.layer_combination == "mean":
            return torch.stack(layers, dim=0).mean(dim=0)
        return self.scalar_mix(layers)

    def forward_features(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                         inputs_embeds=None, **kwargs) -> torch.Tensor:
        """The combined hidden state(s) the head reads, `[batch, seq, width]` (before dropout)."""
        kwargs.pop("output_hidden_states", None)
        kwargs.pop("output_attentions", None)
        outputs = self._encode(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                               position_ids=position_ids, inputs_embeds=inputs_embeds, **kwargs)
        return self.combine_layers(outputs.hidden_states)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(features))

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                decode_mask=None, **kwargs) -> TokenClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Label ids in `[0, num_labels)`; -100 marks positions the loss ignores (special tokens, later sub-tokens).
        output_hidden_states (`bool`, *optional*):
            Return the encoder's `hidden_states` for the layers the model runs: `encoder_depth + 1` entries (the
            embeddings, then every layer up to the deepest one the head reads, equal to a full encoder's
            `hidden_states[:encoder_depth + 1]`), not the full encoder's `num_hidden_layers + 1`.
        output_attentions (`bool`, *optional*):
            Return the attention weights of the layers the model runs (`encoder_depth` entries); needs an attention
            implementation that returns them (`attn_implementation="eager"`).
        decode_mask (`torch.BoolTensor` of shape `(batch_size, sequence_length)`, *optional*):
            CRF models only: the positions the tag chain runs over, normally each word's first sub-token (what the
            model was trained on). Default: the positions whose label is not -100 when `labels` are given, else every
            attended position. See [`~HiddenLayerTokenClassifier.decode`].

        With `config.use_crf`, the loss is the CRF's negative log-likelihood (per labelled position) and `logits` are
        the CRF's decisions: at each decoded position the log marginal probability of each tag, with the Viterbi
        tag as the argmax; at other attended positions (later sub-tokens, special tokens) the tag of the preceding
        decoded position (B-X continued as I-X; O before the first) with log-probability 0. So `logits.argmax(-1)` is
        the Viterbi path. A pipeline should pass `decode_mask` (each word's first sub-token, from the fast tokenizer's
        `word_ids()`) so that inference decodes over words exactly as training did.
        """
        output_attentions, output_hidden_states, return_dict = self.output_flags(
            output_attentions, output_hidden_states, return_dict)
        outputs = self._encode(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                               position_ids=position_ids, inputs_embeds=inputs_embeds,
                               output_attentions=output_attentions, **kwargs)
        logits = self.forward_head(self.combine_layers(outputs.hidden_states))
        loss = None
        if labels is not None:
            self._check_labels(labels, logits)
            if self.crf is not None:
                loss = self.crf.neg_log_likelihood(logits, labels.to(logits.device))
            else:
                loss = nn.functional.cross_entropy(
                    logits.view(-1, self.config.num_labels).float(), labels.to(logits.device).view(-1),
                    ignore_index=-100
                )
        if self.crf is not None:
            if decode_mask is None and labels is not None:
                decode_mask = labels.to(logits.device) != -100
            logits = self.crf_scores(logits, decode_mask, attention_mask)
        hidden_states = select_hidden_states(outputs.hidden_states, output_hidden_states)
        attentions = outputs.attentions if output_attentions else None
        if not return_dict:
            output = tuple(item for item in (logits, hidden_states, attentions) if item is not None)
            return ((loss,) + output) if loss is not None else output
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states, attentions=attentions)

    # -- CRF decoding -----------------------------------------------------------------------------------------------
    @staticmethod
    def _chain_mask(emissions, decode_mask=None, attention_mask=None) -> torch.Tensor:
        if decode_mask is None:
            decode_mask = attention_mask
        if decode_mask is None:
            return torch.ones(emissions.shape[:2], dtype=torch.bool, device=emissions.device)
        return decode_mask.to(emissions.device).bool()

    def decode(self, emissions: torch.Tensor, decode_mask: torch.Tensor | None = None,
               attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The model's tag ids, `[batch, seq]`, -100 outside `decode_mask`.

        `emissions` are the head's scores (`model.forward_head(model.forward_features(...))`). With a CRF: the
        Viterbi path over the positions in `decode_mask` (each word's first sub-token; default `attention_mask`, else
        every position), always valid BIO. Without: the per-position argmax. `model(..., decode_mask=...)` gives the
        same path as `outputs.logits.argmax(-1)` at the decoded positions.
        """
        mask = self._chain_mask(emissions, decode_mask, attention_mask)
        if self.crf is None:
            return emissions.argmax(-1).masked_fill(~mask, -100)
        return self.crf.decode(emissions, mask)

    def crf_scores(self, emissions: torch.Tensor, decode_mask=None, attention_mask=None) -> torch.Tensor:
        """Per-position tag scores whose argmax is the Viterbi path (see `forward` and `LinearChainCRF.path_scores`)."""
        return self.crf.path_scores(emissions, self._chain_mask(emissions, decode_mask, attention_mask))

    def _check_labels(self, labels: torch.Tensor, logits: torch.Tensor):
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(
                f"Token-classification labels must be integer class ids (torch.long), got {labels.dtype}: map label "
                "names through config.label2id and use -100 for ignored positions."
            )
        if tuple(labels.shape) != tuple(logits.shape[:2]):
            raise ValueError(
                f"labels have shape {tuple(labels.shape)} but the input is {tuple(logits.shape[:2])} "
                "(batch, sequence): give one label id per token, -100 on padding and ignored tokens."
            )
        valid = labels[labels != -100]
        if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= self.config.num_labels):
            raise ValueError(
                f"labels hold ids outside [0, {self.config.num_labels}) (found {int(valid.min())}..{int(valid.max())}): "
                f"the model knows {self.config.num_labels} labels {list(self.config.id2label.values())[:10]}; "
                "use -100 for positions to ignore."
            )


__all__ = ["HiddenLayerTokenClassifier", "HiddenLayerTokenClassifierPreTrainedModel"]
