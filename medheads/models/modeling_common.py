"""Encoder plumbing shared by the medheads models, and the batching helper their text pipelines share.

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

    At least one layer is kept: an encoder with none reports no hidden states at all. (The models build their encoder
    with `build_encoder(config, depth)`, which shares the config object instead; this copy is for other callers.)
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


def build_encoder(encoder_config, depth: int | None = None) -> PreTrainedModel:
    """The bare encoder for `encoder_config` (no pooler where the architecture has one), built `depth` layers deep.

    The encoder shares the `encoder_config` object itself (as transformers' composite models do), so
    `set_attn_implementation`, `resize_token_embeddings` and `config.encoder_config` always agree. A truncated encoder
    is built by sizing the layer stack from a temporarily shortened config; the config keeps the full encoder's
    `num_hidden_layers` (so `hidden_layers=-1` keeps its meaning after a reload) and gets
    `tie_last_hidden_states=False`, so its `hidden_states[depth]` is the layer's raw output, as in the full encoder.
    """
    full_depth = int(encoder_config.num_hidden_layers)
    depth = full_depth if depth is None else max(1, min(int(depth), full_depth))
    saved = {}
    if depth < full_depth:
        # Only the layer count changes: per-layer settings (`layer_types`) stay whole, since the encoder's forward
        # reads them from the shared config after it is built (ModernBERT's rotary tables per layer type).
        saved["num_hidden_layers"] = full_depth
        encoder_config.num_hidden_layers = depth
        encoder_config.tie_last_hidden_states = False
    try:
        try:
            return AutoModel.from_config(encoder_config, add_pooling_layer=False)
        except TypeError:
            return AutoModel.from_config(encoder_config)
    finally:
        for key, value in saved.items():
            setattr(encoder_config, key, value)


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
    # (submodule, config flag): the wrapped encoder or backbone, and the config flag that freezes it
    _frozen_module: tuple[str, str] = ("encoder", "freeze_encoder")

    # -- freezing: one API on every medheads model, always in step with the config flag ---------------------------
    @property
    def encoder_frozen(self) -> bool:
        """Whether the wrapped encoder (or backbone) is frozen: the config flag named by `_frozen_module`."""
        return bool(getattr(self.config, self._frozen_module[1]))

    def freeze_encoder(self):
        """Fix the encoder's (backbone's) weights: no gradients, no activations kept, eval mode even while the model
        trains. Sets the config flag, so a saved model reloads frozen."""
        name, flag = self._frozen_module
        setattr(self.config, flag, True)
        freeze(getattr(self, name))
        return self

    def unfreeze_encoder(self):
        """Train the encoder (backbone) with the head: gradients on, dropout on in `train()`. Clears the config flag."""
        name, flag = self._frozen_module
        setattr(self.config, flag, False)
        module = getattr(self, name)
        module.requires_grad_(True)
        module.train(self.training)
        return self

    def requires_grad_(self, requires_grad: bool = True):
        """`model.requires_grad_(flag)` acts on the whole model, encoder included, and keeps the freezing flag in step
        (so `requires_grad_(True)` really trains the encoder). To freeze or unfreeze the encoder alone, use
        `freeze_encoder()` / `unfreeze_encoder()`; `model.encoder.requires_grad_(True)` on a frozen encoder makes
        the next forward raise an error that says so."""
        super().requires_grad_(requires_grad)
        if requires_grad and self.encoder_frozen:
            self.unfreeze_encoder()
        elif not requires_grad and not self.encoder_frozen:
            self.freeze_encoder()
        return self

    def resize_token_embeddings(self, *args, **kwargs):
        # The new embedding matrix of a frozen encoder stays frozen like the rest of it (unfreeze_encoder() to train)
        embeddings = super().resize_token_embeddings(*args, **kwargs)
        if self.encoder_frozen:
            freeze(getattr(self, self._frozen_module[0]))
        return embeddings

    def output_flags(self, output_attentions=None, output_hidden_states=None, return_dict=None) -> tuple:
        """A forward's `output_attentions`, `output_hidden_states` and `return_dict`, the config's where not given."""
        config = self.config
        return (config.output_attentions if output_attentions is None else output_attentions,
                config.output_hidden_states if output_hidden_states is None else output_hidden_states,
                config.return_dict if return_dict is None else return_dict)

    def _check_frozen(self):
        """A frozen encoder whose weights were set to require grad behind the flag's back fails loudly, not silently."""
        if self.encoder_frozen and any(p.requires_grad for p in getattr(self, self._frozen_module[0]).parameters()):
            name, flag = self._frozen_module
            raise ValueError(
                f"The {name} is frozen (config.{flag}=True: it runs without gradients and in eval mode) but some of "
                f"its parameters require grad, e.g. after `model.{name}.requires_grad_(True)`. Call "
                f"`model.unfreeze_encoder()` to train it, or `model.freeze_encoder()` to keep it frozen."
            )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`, with the frozen part frozen again after loading; a weights file that
        cannot be read (truncated by an interrupted copy or download) raises an `OSError` naming the file instead of
        safetensors' bare header error."""
        try:
            loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
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
        # Loading puts fresh parameters (requires_grad=True) in place of the ones __init__ froze: freeze them again,
        # or a reloaded frozen model would hand its whole encoder to the optimizer.
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        if model.encoder_frozen:
            freeze(getattr(model, model._frozen_module[0]))
        return loaded

    def train(self, mode: bool = True):
        super().train(mode)
        if self.encoder_frozen:
            getattr(self, self._frozen_module[0]).eval()  # frozen features are deterministic: no dropout, ever
        return self

    # -- AutoModel ----------------------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory, *args, **kwargs):
        # `AutoModel.from_pretrained(folder, trust_remote_code=True)` loads the same class as the task Auto class
        # (a medheads model has no separate headless base model): add its `auto_map` entry next to the task's.
        if self._auto_class is not None:
            reference = f"{type(self).__module__.split('.')[-1]}.{type(self).__name__}"
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), "AutoModel": reference}
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _init_weights(self, module):
        if isinstance(module, nn.Linear) and getattr(module, "_is_medheads_head", False):
            inner = getattr(self.config, "encoder_config", None) or getattr(self.config, "backbone_config", None)
            nn.init.trunc_normal_(module.weight, std=getattr(inner, "initializer_range", 0.02))
            nn.init.zeros_(module.bias)


def select_hidden_states(hidden_states, request):
    """`hidden_states` as `output_hidden_states=request` asks: all (True), none (False/None), or only the listed
    indices (transformers 5's `output_hidden_states=[0, 2, -1]`: the others are None; negative indices count from the
    end of what the model returns)."""
    if not request or hidden_states is None:
        return None
    if request is True:
        return tuple(hidden_states)
    kept = {int(i) % len(hidden_states) for i in request}
    return tuple(state if i in kept else None for i, state in enumerate(hidden_states))


def mark_head(*layers: nn.Module) -> None:
    """Flag head layers so `_init_weights` initialises them (the wrapped encoder keeps its own initialisation)."""
    for layer in layers:
        for module in layer.modules():
            if isinstance(module, nn.Linear):
                module._is_medheads_head = True


# -- shared by the shipped text pipelines (batched calls fed shortest first) --------------------------------------
def length_order(inputs, batch_size) -> list[int] | None:
    """The order that feeds a list of texts shortest first (stable), or None when sorting cannot help or is not safe:
    one text, batches of one, or inputs that are not all strings (pre-split words, text pairs, generators)."""
    if not isinstance(inputs, (list, tuple)) or len(inputs) < 2 or not batch_size or int(batch_size) < 2:
        return None
    if not all(isinstance(text, str) for text in inputs):
        return None
    return sorted(range(len(inputs)), key=lambda i: len(inputs[i]))


def in_input_order(order: list[int], results) -> list:
    """`results` of the inputs taken in `order`, put back in input order."""
    ordered = [None] * len(order)
    for position, result in zip(order, results):
        ordered[position] = result
    return ordered


def call_shortest_first(call, inputs, batch_size):
    """`call(inputs)`, with a list of texts fed shortest first (so each batch is padded to texts of about its own
    length) and the results returned in input order; anything `length_order` declines goes through as it is."""
    order = length_order(inputs, batch_size)
    if order is None:
        return call(inputs)
    return in_input_order(order, call([inputs[i] for i in order]))


__all__ = [
    "length_order", "in_input_order", "call_shortest_first",
    "MedheadsPreTrainedModel", "mark_head",
    "split_load_kwargs", "truncated_encoder_config", "build_encoder", "load_pretrained_encoder",
    "copy_encoder_weights", "freeze", "grad_context", "select_hidden_states",
]
