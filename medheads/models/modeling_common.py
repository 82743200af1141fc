"""Encoder plumbing shared by the medheads models.

`save_pretrained` copies this module next to each model's code (it is imported by a single-dot relative import), so
it too must import nothing but torch and transformers.
"""

from __future__ import annotations

import contextlib
import copy
import os

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel

LOAD_KWARGS = ("dtype", "revision", "token", "trust_remote_code", "attn_implementation", "cache_dir")


def split_load_kwargs(kwargs: dict) -> dict:
    """Pop the keyword arguments meant for loading the pretrained encoder out of `kwargs`."""
    return {key: kwargs.pop(key) for key in LOAD_KWARGS if key in kwargs}


def truncated_encoder_config(encoder_config, depth: int):
    """A copy of `encoder_config` with only `depth` layers, whose `hidden_states[k]` match the full encoder's.

    At least one layer is kept: an encoder with none reports no hidden states at all.
    """
    config = copy.deepcopy(encoder_config)
    full_depth = int(config.num_hidden_layers)
    depth = max(1, min(depth, full_depth))
    if depth == full_depth:
        return config
    config.num_hidden_layers = depth
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, (list, tuple)) and len(layer_types) == full_depth:
        config.layer_types = list(layer_types[:depth])
    # The full model's hidden_states[depth] is a layer's raw output; a truncated model would otherwise report its
    # last entry after the final norm (ModernBERT and other pre-norm encoders).
    config.tie_last_hidden_states = False
    return config


def build_encoder(encoder_config) -> PreTrainedModel:
    """The bare encoder for `encoder_config`, without a pooler where the architecture has one."""
    try:
        return AutoModel.from_config(encoder_config, add_pooling_layer=False)
    except TypeError:
        return AutoModel.from_config(encoder_config)


def load_pretrained_encoder(name_or_path, role: str = "encoder", **load_kwargs) -> PreTrainedModel:
    """Load a pretrained encoder or backbone, with one clear error when `name_or_path` is not one."""
    config_kwargs = {k: v for k, v in load_kwargs.items() if k not in ("dtype", "attn_implementation")}
    try:
        config = AutoConfig.from_pretrained(name_or_path, **config_kwargs)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"Could not load an {role} from {str(name_or_path)!r}: it must be a folder or Hub id holding a "
            f"transformers config.json and weights ({type(error).__name__}: {error})."
        ) from error
    if str(getattr(config, "model_type", "")).startswith("medheads-"):
        raise ValueError(
            f"{str(name_or_path)!r} is a saved medheads model, not an {role}: load it with "
            "AutoModelFor*.from_pretrained(...) (or the model class's from_pretrained) instead."
        )
    if getattr(config, "num_hidden_layers", None) is None or getattr(config, "hidden_size", None) is None:
        raise ValueError(
            f"{str(name_or_path)!r} ({config.model_type}) is not a transformer {role}: its config has no "
            "num_hidden_layers / hidden_size."
        )
    is_image = hasattr(config, "image_size") and hasattr(config, "patch_size")
    if role == "encoder" and (is_image or getattr(config, "vocab_size", None) is None):
        raise ValueError(
            f"{str(name_or_path)!r} ({config.model_type}) is an image backbone, not a text encoder: text models need "
            "a text encoder such as BERT, RoBERTa or ModernBERT (images go to ViTPatchClassifier.from_backbone)."
        )
    if role == "backbone" and not is_image:
        raise ValueError(
            f"{str(name_or_path)!r} ({config.model_type}) is not a ViT-family image backbone (its config has no "
            "image_size / patch_size): text encoders go to HiddenLayerTokenClassifier / FrozenEncoderMultiLabel."
        )
    return AutoModel.from_pretrained(name_or_path, **load_kwargs)


def copy_encoder_weights(target: nn.Module, source: nn.Module, name) -> None:
    """Load every weight `target` has (possibly fewer layers, no pooler) from the pretrained `source`."""
    source_state = source.state_dict()
    target_keys = list(target.state_dict())
    missing = [key for key in target_keys if key not in source_state]
    if missing:
        raise ValueError(f"The pretrained {name!r} lacks weights the model needs: {missing[:5]}.")
    target.load_state_dict({key: source_state[key] for key in target_keys}, strict=True)


def freeze(module: nn.Module) -> None:
    """No gradients and eval mode (dropout off), so the module's outputs are deterministic features."""
    module.requires_grad_(False)
    module.eval()


def grad_context(frozen: bool):
    """`torch.no_grad()` around a frozen module's forward, so no activations are kept for backward."""
    return torch.no_grad() if frozen else contextlib.nullcontext()


class MedheadsPreTrainedModel(PreTrainedModel):
    """What every medheads model shares: attention back-ends are the wrapped encoder's, and head layers (linear
    layers flagged `_is_medheads_head`) start from a truncated normal with the encoder's `initializer_range`.

    Subclasses set `config_class`, `base_model_prefix`, `main_input_name` and the rest of their own flags.
    """

    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _no_split_modules = []
    # The losses are means over the batch; Trainer must scale them for gradient accumulation itself rather than
    # pass `num_items_in_batch` through `**kwargs` (which would reach the encoder and leave the loss unscaled).
    accepts_loss_kwargs = False
    # (submodule, config flag): the submodule stays in eval mode while the flag is set (no flag: always frozen)
    _frozen_module: tuple[str, str | None] = ("encoder", None)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`; a weights file that cannot be read (truncated by an interrupted copy or
        download) raises an `OSError` naming the file instead of safetensors' bare header error."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        except Exception as error:
            if type(error).__name__ != "SafetensorError":
                raise
            where = str(pretrained_model_name_or_path)
            local = os.path.join(where, "model.safetensors")
            name = local if os.path.isfile(local) else f"model.safetensors (or a shard) of {where!r}"
            raise OSError(
                f"{name} cannot be read: the file is truncated or corrupt ({error}). Download or copy it again, or "
                "re-save the model with save_pretrained."
            ) from error

    def train(self, mode: bool = True):
        super().train(mode)
        name, flag = self._frozen_module
        if flag is None or getattr(self.config, flag):
            getattr(self, name).eval()  # frozen features are deterministic: no dropout in the encoder, ever
        return self

    def _init_weights(self, module):
        if isinstance(module, nn.Linear) and getattr(module, "_is_medheads_head", False):
            inner = getattr(self.config, "encoder_config", None) or getattr(self.config, "backbone_config", None)
            nn.init.trunc_normal_(module.weight, std=getattr(inner, "initializer_range", 0.02))
            nn.init.zeros_(module.bias)


def mark_head(*layers: nn.Module) -> None:
    """Flag head layers so `_init_weights` initialises them (the wrapped encoder keeps its own initialisation)."""
    for layer in layers:
        for module in layer.modules():
            if isinstance(module, nn.Linear):
                module._is_medheads_head = True


__all__ = [
    "MedheadsPreTrainedModel", "mark_head",
    "split_load_kwargs", "truncated_encoder_config", "build_encoder", "load_pretrained_encoder",
    "copy_encoder_weights", "freeze", "grad_context",
]
