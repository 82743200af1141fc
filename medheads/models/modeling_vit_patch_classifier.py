"""`ViTPatchClassifier`: image classification with a head that reads all tokens of a ViT-family backbone.

`forward_features` returns the backbone's normalised tokens the head reads (CLS followed by every patch token; extra
prefix tokens such as DeiT's distillation token are sliced off by count, never assumed), and `forward_head` maps them
to logits, so features of a frozen backbone can be cached. Resolutions other than the backbone's work by
interpolating position embeddings. This file imports torch, transformers and medheads' own modules only, so it works
as Hub remote code.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_outputs import ImageClassifierOutput

from .configuration_vit_patch_classifier import ViTPatchClassifierConfig
# Imported so that save_pretrained copies the pipeline (and its image reader) into every checkpoint, and remote-code
# loading fetches them: config.json's custom_pipelines names this class.
from .pipeline_image_classification import MedheadsImageClassificationPipeline  # noqa: F401
from .modeling_common import (
    MedheadsPreTrainedModel, build_encoder, copy_encoder_weights, grad_context, load_pretrained_encoder,
    mark_head, select_hidden_states, split_load_kwargs,
)


class PatchHead(nn.Module):
    """The seed's model2: linear over the token axis (tokens -> projection), ReLU, flatten, linear to labels."""

    def __init__(self, num_tokens: int, hidden_size: int, projection_size: int, num_labels: int, dropout: float):
        super().__init__()
        self.num_tokens = num_tokens
        self.token_projection = nn.Linear(num_tokens, projection_size)
        self.activation = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size * projection_size, num_labels)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # [batch, tokens, hidden]
        projected = self.activation(self.token_projection(tokens.transpose(1, 2)))  # [batch, hidden, projection]
        return self.classifier(self.dropout(projected.flatten(1)))


class ViTPatchClassifierPreTrainedModel(MedheadsPreTrainedModel):
    config_class = ViTPatchClassifierConfig
    base_model_prefix = "backbone"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _frozen_module = ("backbone", "freeze_backbone")


class ViTPatchClassifier(ViTPatchClassifierPreTrainedModel):
    """ViT-family backbone + a `cls`, `cls_mean` or `patch` head; frozen backbone by default."""

    def __init__(self, config: ViTPatchClassifierConfig):
        super().__init__(config)
        self.backbone = build_encoder(config.backbone_config)
        self._no_split_modules = list(getattr(self.backbone, "_no_split_modules", None) or [])
        hidden_size = config.backbone_config.hidden_size
        if config.head == "patch":
            self.head = PatchHead(config.num_head_tokens, hidden_size, config.patch_projection_size,
                                  config.num_labels, config.head_dropout)
        else:
            width = hidden_size * (2 if config.head == "cls_mean" else 1)
            self.head = nn.Sequential(nn.Dropout(config.head_dropout), nn.Linear(width, config.num_labels))
        mark_head(self.head)
        self.post_init()
        if config.freeze_backbone:
            self.freeze_encoder()

    # freeze_encoder() / unfreeze_encoder() (MedheadsPreTrainedModel) act on the backbone and `config.freeze_backbone`
    def freeze_backbone(self):
        """Same as `freeze_encoder()`."""
        return self.freeze_encoder()

    def unfreeze_backbone(self):
        """Same as `unfreeze_encoder()`."""
        return self.unfreeze_encoder()

    @classmethod
    def from_backbone(cls, backbone_name_or_path, head="patch", **config_kwargs) -> "ViTPatchClassifier":
        """Build the model around a pretrained ViT-family backbone (folder or Hub id), loading its weights.

        `config_kwargs` go to [`ViTPatchClassifierConfig`] (`id2label`, `image_size`, `freeze_backbone`, ...);
        `dtype`, `revision`, `token` and `attn_implementation` go to the backbone's loading.
        """
        backbone = load_pretrained_encoder(backbone_name_or_path, role="backbone", **split_load_kwargs(config_kwargs))
        model = cls(ViTPatchClassifierConfig(backbone_config=backbone.config, head=head, **config_kwargs))
        copy_encoder_weights(model.backbone, backbone, backbone_name_or_path)
        model.config.name_or_path = str(backbone_name_or_path)
        return model.to(backbone.dtype)

    # -- features ---------------------------------------------------------------------------------------------------
    def _check_pixels(self, pixel_values: torch.Tensor):
        if pixel_values is None or pixel_values.dim() != 4:
            shape = None if pixel_values is None else tuple(pixel_values.shape)
            raise ValueError(f"pixel_values must be [batch, channels, height, width], got {shape}.")
        channels = self.config.backbone_config.num_channels
        height, width = pixel_values.shape[-2:]
        if pixel_values.shape[1] != channels:
            raise ValueError(
                f"pixel_values have {pixel_values.shape[1]} channels but the backbone expects {channels}: convert "
                "images with the model's image processor (do_convert_rgb=True turns grayscale X-rays into RGB)."
            )
        size = self.config.image_size
        if self.config.head == "patch" and (height, width) != (size, size):
            raise ValueError(
                f"The 'patch' head was built for {size}x{size} images ({self.config.num_head_tokens} tokens) and "
                f"cannot read {height}x{width}: resize to {size}x{size} (the saved image processor does), or build "
                f"a model with image_size={height} if that is the resolution you want."
            )
        patch = self.config.patch_size
        if height % patch or width % patch:
            raise ValueError(f"Image size {height}x{width} is not a multiple of the patch size {patch}.")

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The tokens the head reads, `[batch, 1 + num_patches, hidden]`: CLS, then every patch token."""
        return self._encode(pixel_values)[0]

    def _encode(self, pixel_values: torch.Tensor, output_hidden_states=False, output_attentions=False):
        """(head tokens, the backbone's outputs)."""
        self._check_pixels(pixel_values)
        self._check_frozen()
        pixel_values = pixel_values.to(self.backbone.dtype)
        interpolate = tuple(pixel_values.shape[-2:]) != (self.config.backbone_size,) * 2
        flags = {key: True for key, on in (("output_hidden_states", output_hidden_states),
                                           ("output_attentions", output_attentions)) if on}
        with grad_context(self.encoder_frozen):
            outputs = self.backbone(pixel_values=pixel_values, interpolate_pos_encoding=interpolate, return_dict=True,
                                    **flags)
        tokens = outputs.last_hidden_state
        patch = self.config.patch_size
        num_patches = (pixel_values.shape[-2] // patch) * (pixel_values.shape[-1] // patch)
        num_prefix = tokens.shape[1] - num_patches  # 1 for ViT, 2 for DeiT (CLS + distillation), more with registers
        if num_prefix < 1:
            raise ValueError(f"The backbone returned {tokens.shape[1]} tokens for {num_patches} patches: no CLS token.")
        return torch.cat([tokens[:, :1], tokens[:, num_prefix:]], dim=1), outputs

    def forward_head(self, token_features: torch.Tensor) -> torch.Tensor:
        if self.config.head == "cls":
            return self.head(token_features[:, 0])
        if self.config.head == "cls_mean":
            return self.head(torch.cat([token_features[:, 0], token_features[:, 1:].mean(dim=1)], dim=-1))
        if token_features.shape[1] != self.head.num_tokens:
            raise ValueError(
                f"The 'patch' head reads {self.head.num_tokens} tokens (image_size {self.config.image_size}) but got "
                f"{token_features.shape[1]}: features were computed at another resolution."
            )
        return self.head(token_features)

    def forward(self, pixel_values=None, labels=None, token_features=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, **kwargs) -> ImageClassifierOutput:
        r"""
        token_features (`torch.FloatTensor` of shape `(batch_size, 1 + num_patches, hidden_size)`, *optional*):
            Precomputed `forward_features` output, used in place of `pixel_values` (cached-feature training).
        labels (`torch.Tensor`, *optional*):
            By `config.problem_type`: class ids `(batch_size,)` (single-label), multi-hot 0/1 `(batch_size,
            num_labels)` (multi-label), or targets `(batch_size,)` / `(batch_size, num_labels)` (regression). With
            `problem_type=None` it is inferred as transformers' classification heads do (one output: regression;
            integer labels: single-label; otherwise multi-label).
        output_hidden_states (`bool`, *optional*): return the backbone's `hidden_states` (every layer).
        output_attentions (`bool`, *optional*): return the backbone's attentions (`attn_implementation="eager"`).
        """
        output_attentions, output_hidden_states, return_dict = self.output_flags(
            output_attentions, output_hidden_states, return_dict)
        hidden_states = attentions = None
        if token_features is None:
            if pixel_values is None:
                raise ValueError("Pass `pixel_values` (from the image processor) or `token_features`.")
            token_features, outputs = self._encode(pixel_values, output_hidden_states, output_attentions)
            hidden_states = select_hidden_states(outputs.hidden_states, output_hidden_states)
            attentions = outputs.attentions if output_attentions else None
        logits = self.forward_head(token_features.to(self.dtype))
        loss = None if labels is None else self.loss(logits, labels)
        if not return_dict:
            output = tuple(item for item in (logits, hidden_states, attentions) if item is not None)
            return ((loss,) + output) if loss is not None else output
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states, attentions=attentions)

    @property
    def resolved_problem_type(self) -> str:
        """`config.problem_type`, with `None` read as single-label classification (regression for one output)."""
        if self.config.problem_type is not None:
            return self.config.problem_type
        return "regression" if self.config.num_labels == 1 else "single_label_classification"

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy, BCE with logits or MSE by `config.problem_type`, with one clear error for labels that do
        not fit it."""
        batch, num_labels = logits.shape
        labels = labels.to(logits.device)
        problem_type = self.config.problem_type
        if problem_type is None:  # as transformers' *ForImageClassification heads infer it
            if num_labels == 1:
                problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                problem_type = "single_label_classification"
            else:
                problem_type = "multi_label_classification"
        if problem_type == "multi_label_classification":
            if tuple(labels.shape) != (batch, num_labels):
                raise ValueError(
                    f"Multi-label labels must be multi-hot of shape (batch, num_labels) = ({batch}, {num_labels}), "
                    f"got {tuple(labels.shape)}. For one class id per image use "
                    "problem_type='single_label_classification'."
                )
            return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())
        if problem_type == "regression":
            if num_labels == 1 and labels.numel() == batch:
                return nn.functional.mse_loss(logits.float().reshape(batch), labels.float().reshape(batch))
            if tuple(labels.shape) != (batch, num_labels):
                raise ValueError(
                    f"Regression targets must have shape (batch, num_labels) = ({batch}, {num_labels}), got "
                    f"{tuple(labels.shape)}."
                )
            return nn.functional.mse_loss(logits.float(), labels.float())
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.dim() != 1:
            raise ValueError(
                f"Single-label labels must be integer class ids of shape (batch,), got {labels.dtype} "
                f"{tuple(labels.shape)}. For multi-hot targets use problem_type='multi_label_classification'."
            )
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_labels):
            raise ValueError(f"labels hold class ids outside [0, {num_labels}).")
        return nn.functional.cross_entropy(logits.float(), labels)

    # -- prediction -------------------------------------------------------------------------------------------------
    def threshold_tensor(self, device=None) -> torch.Tensor:
        """The multi-label decision threshold of every label (`config.thresholds`; `None` means 0.5)."""
        self.config.validate_thresholds()
        thresholds = self.config.thresholds
        if thresholds is None:
            thresholds = 0.5
        if isinstance(thresholds, (int, float)):
            thresholds = [float(thresholds)] * self.config.num_labels
        return torch.tensor([float(t) for t in thresholds], dtype=torch.float32, device=device)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Sigmoids (multi-label), softmax (single-label) or the raw outputs (regression)."""
        problem_type = self.resolved_problem_type
        if problem_type == "multi_label_classification":
            return torch.sigmoid(logits.float())
        if problem_type == "regression":
            return logits.float()
        return torch.softmax(logits.float(), dim=-1)

    @torch.no_grad()
    def predict_labels(self, logits=None, **inputs) -> list[list[str]]:
        """Label names per image: every label whose probability reaches its threshold (multi-label), or the arg-max
        class (single-label). Pass `logits`, or model inputs (`pixel_values` / `token_features`)."""
        if self.resolved_problem_type == "regression":
            raise ValueError("predict_labels is for classification; a regression model's outputs are its logits.")
        if logits is None:
            logits = self(**inputs).logits
        probs = self.probabilities(logits)
        names = self.config.id2label
        if self.resolved_problem_type != "multi_label_classification":
            return [[names[int(i)]] for i in probs.argmax(dim=-1)]
        hits = probs >= self.threshold_tensor(probs.device)
        return [[names[int(i)] for i in row.nonzero().flatten()] for row in hits]


__all__ = ["ViTPatchClassifier", "ViTPatchClassifierPreTrainedModel", "PatchHead"]
