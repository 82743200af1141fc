"""Configuration of `ViTPatchClassifier`: an image-classification head reading all tokens of a ViT-family backbone."""

from __future__ import annotations

import copy
from typing import Literal

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

HEADS = ("cls", "cls_mean", "patch")
PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")
# The pipeline that ships with the checkpoint (remote code): the stock `pipeline("image-classification", ...)` call
# finds it in config.json (transformers' custom_pipelines convention; `pt` names the Auto class).
CUSTOM_PIPELINES = {
    "image-classification": {
        "impl": "pipeline_image_classification.MedheadsImageClassificationPipeline",
        "pt": ["AutoModelForImageClassification"],
        "type": "image",
    }
}


class ViTPatchClassifierConfig(PreTrainedConfig):
    r"""
    Configuration of a [`ViTPatchClassifier`].

    Args:
        backbone_config (`dict` or `PreTrainedConfig`):
            Configuration of a ViT-family backbone (`vit`, `deit`, ...). Required.
        head (`str`, *optional*, defaults to `"patch"`):
            `"cls"`: linear layer on the CLS token. `"cls_mean"`: linear layer on CLS concatenated with the mean of the
            patch tokens (as `Dinov2ForImageClassification`). `"patch"`: a linear map over the token axis (CLS + all
            patch tokens -> `patch_projection_size`), ReLU, flatten, linear layer to the labels.
        patch_projection_size (`int`, *optional*, defaults to 256): width of the token-axis projection of `"patch"`.
        head_dropout (`float`, *optional*, defaults to 0.0): dropout before the final linear layer.
        freeze_backbone (`bool`, *optional*, defaults to `True`):
            Keep the backbone fixed (eval mode, no gradients): only the head trains, and backbone features can be
            cached. `False` trains the whole model.
        image_size (`int`, *optional*):
            Input resolution. `None`: the backbone's own. Another size works by interpolating the position embeddings;
            the `"patch"` head is sized for the token count at this resolution.
        problem_type (`str`, *optional*):
            `"single_label_classification"` (softmax, cross-entropy; also what `None` means when labels are class
            ids), `"multi_label_classification"` (a sigmoid per label, BCE loss, a decision per label by
            `thresholds`: findings on a chest X-ray) or `"regression"` (one output per `id2label` entry, MSE loss).
        thresholds (`float` or `list[float]`, *optional*):
            Multi-label decision thresholds: `None` means 0.5, a float applies to every label, a list gives one per
            label (as tuned on a validation split by `medheads train-image`). The image pipeline applies them.
    """

    model_type = "medheads-vit-patch-classifier"
    sub_configs_defaults = {"backbone_config": SubConfigSpec(config_class=AutoConfig, model_type="vit", optional=True)}

    backbone_config: dict | PreTrainedConfig | None = None
    head: Literal["cls", "cls_mean", "patch"] = "patch"
    patch_projection_size: int = 256
    head_dropout: float | int = 0.0
    freeze_backbone: bool = True
    image_size: int | None = None
    thresholds: float | list[float] | None = None

    def __post_init__(self, **kwargs):
        if self.backbone_config is None:
            raise ValueError(
                "ViTPatchClassifierConfig needs `backbone_config`: pass a ViT-family config, e.g. "
                "`backbone_config=ViTConfig(...)`, or build the model with `ViTPatchClassifier.from_backbone(path)`."
            )
        if isinstance(self.backbone_config, dict) and "model_type" not in self.backbone_config:
            raise ValueError("`backbone_config` is a dict without `model_type`: pass a config object or its to_dict().")
        super().__post_init__(**kwargs)
        if type(self).__module__.startswith("medheads."):
            # medheads is installed: `import medheads` registered the same pipeline for the task, so a folder loads
            # with the local classes and needs no trust_remote_code (transformers demands it for custom_pipelines).
            # The saved config.json still names the shipped pipeline (to_dict), for everyone else.
            self.__dict__.pop("custom_pipelines", None)
        elif not getattr(self, "custom_pipelines", None):
            self.custom_pipelines = copy.deepcopy(CUSTOM_PIPELINES)
        if self.id2label is not None and not self.label2id:
            self.label2id = {label: i for i, label in self.id2label.items()}
        if self.head not in HEADS:
            raise ValueError(f"Unknown head {self.head!r}: choose one of {', '.join(HEADS)}.")
        for name in ("image_size", "patch_size"):
            if not hasattr(self.backbone_config, name):
                raise ValueError(
                    f"backbone_config ({self.backbone_config.model_type}) has no `{name}`: ViTPatchClassifier needs a "
                    "ViT-family backbone (vit, deit, ...)."
                )
        if self.image_size is None:
            self.image_size = self.backbone_size
        if self.image_size % self.patch_size != 0:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of the backbone's patch size {self.patch_size}: "
                f"use e.g. {max(self.patch_size, self.image_size // self.patch_size * self.patch_size)}."
            )
        if self.patch_projection_size < 1:
            raise ValueError(f"`patch_projection_size` must be positive, got {self.patch_projection_size}.")
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"Unknown problem_type {self.problem_type!r}: choose one of {', '.join(PROBLEM_TYPES)}.")
        self.validate_thresholds()

    def validate_thresholds(self):
        """`thresholds` is None, one probability, or one probability per label (ValueError naming it otherwise)."""
        thresholds = self.thresholds
        if thresholds is None:
            return
        if isinstance(thresholds, bool) or not isinstance(thresholds, (int, float, list, tuple)):
            raise ValueError(f"`thresholds` must be None, a float or a list of floats, got {thresholds!r}.")
        values = [thresholds] if isinstance(thresholds, (int, float)) else list(thresholds)
        if not isinstance(thresholds, (int, float)) and len(values) != self.num_labels:
            raise ValueError(
                f"`thresholds` has {len(values)} values but the model has {self.num_labels} labels: give one "
                "threshold per label (in id2label order), a single float for all, or None for 0.5."
            )
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0 for v in values):
            raise ValueError(f"`thresholds` are probabilities and must lie in [0, 1], got {thresholds}.")

    def to_dict(self):
        output = super().to_dict()
        output.setdefault("custom_pipelines", copy.deepcopy(CUSTOM_PIPELINES))
        return output

    @staticmethod
    def _side(value) -> int:
        return int(value[0] if isinstance(value, (list, tuple)) else value)

    @property
    def backbone_size(self) -> int:
        return self._side(self.backbone_config.image_size)

    @property
    def patch_size(self) -> int:
        return self._side(self.backbone_config.patch_size)

    @property
    def num_patches(self) -> int:
        """Patch tokens at `image_size`."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_head_tokens(self) -> int:
        """Tokens the `patch` head reads: the CLS token and every patch token."""
        return self.num_patches + 1


__all__ = ["ViTPatchClassifierConfig", "HEADS", "PROBLEM_TYPES"]
