"""ONNX Runtime models for exported medheads folders (shipped in every folder `medheads export` writes).

`pipeline(task, model=<exported folder>, trust_remote_code=True)` loads these classes through `auto_map`, medheads
not installed. They are `PreTrainedModel`s without weights: `from_pretrained` opens `model.onnx` (or
`model_int8.onnx`) in an `onnxruntime.InferenceSession`, and `forward` feeds it the tokenizer's or image processor's
tensors and returns the usual `ModelOutput` with torch logits, so the stock pipelines (and medheads' own) run
unchanged. The text classifier's long-text windows are split here exactly as the PyTorch model splits them; the
graph encodes every window and pools over all windows of a text.

This file imports torch, transformers, numpy, onnxruntime and its siblings `configuration_onnx` and `crf`
(CRF models) only.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import (
    ImageClassifierOutput, SequenceClassifierOutput, TokenClassifierOutput,
)
from transformers.utils import cached_file

from .configuration_onnx import MedheadsOnnxConfig

FILES = {"fp32": "model.onnx", "int8": "model_int8.onnx"}
HUB_KWARGS = ("cache_dir", "force_download", "proxies", "token", "revision", "local_files_only", "subfolder")


class MedheadsOnnxPreTrainedModel(PreTrainedModel):
    """A medheads model whose computation is an ONNX graph run by ONNX Runtime (CPU by default).

    `from_pretrained(folder, onnx_variant="int8")` picks the dynamically quantized graph; `provider=` (or
    `providers=`) names ONNX Runtime execution providers; `num_threads=` sets its intra-op threads (default: ONNX
    Runtime's, one per physical core); `session_options=` passes a whole `onnxruntime.SessionOptions`, or (through
    `pipeline(model_kwargs=...)` / the Auto classes, which copy their arguments) a dict of its attributes and config
    entries (default: ONNX Runtime's, except that worker threads stop spin-waiting at the end of
    each run, see `from_pretrained`).
    """

    config_class = MedheadsOnnxConfig
    base_model_prefix = "onnx"
    _supports_sdpa = True
    _output_kind = None  # the ModelOutput class

    def __init__(self, config, session=None, onnx_path: str | None = None):
        super().__init__(config)
        # No weights: one empty parameter gives `model.device` / `model.dtype` the answers pipelines expect.
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)
        self.session = session
        self.onnx_path = onnx_path
        self.input_names = [i.name for i in session.get_inputs()] if session is not None else []
        self.post_init()

    def _init_weights(self, module):  # nothing to initialise
        pass

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, onnx_variant=None,
                        provider=None, providers=None, session_options=None, num_threads=None, **kwargs):
        import onnxruntime as ort

        hub_kwargs = {key: kwargs.pop(key) for key in HUB_KWARGS if key in kwargs}
        if config is None:
            config = MedheadsOnnxConfig.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        variant = onnx_variant or os.environ.get("MEDHEADS_ONNX_VARIANT") or getattr(config, "onnx_default", "fp32")
        if variant not in FILES:
            raise ValueError(f"onnx_variant must be one of {sorted(FILES)}, got {variant!r}.")
        if variant not in getattr(config, "onnx_variants", ["fp32"]):
            raise ValueError(
                f"{pretrained_model_name_or_path!s} has no {variant} graph (it has {config.onnx_variants}): export "
                "it with `medheads export MODEL_DIR OUTPUT_DIR --int8`."
            )
        path = cached_file(str(pretrained_model_name_or_path), FILES[variant], **hub_kwargs)
        if isinstance(session_options, dict):
            # the Auto classes deep-copy their keyword arguments and a SessionOptions cannot be copied: a dict of
            # its attributes and config entries goes through, e.g. {"session.intra_op.allow_spinning": "1"}
            options = ort.SessionOptions()
            for key, value in session_options.items():
                if hasattr(options, key):
                    setattr(options, key, value)
                else:
                    options.add_session_config_entry(key, str(value))
            session_options = options
        if session_options is None:
            session_options = ort.SessionOptions()
            # The pipelines tokenize / preprocess and post-process in Python between graph runs, on the same cores:
            # worker threads that keep spin-waiting after a run take those cores from that work. They spin within a
            # run (fast hand-offs between the graph's many small ops) and stop at its end. (Pass your own
            # session_options to choose otherwise.)
            session_options.add_session_config_entry("session.force_spinning_stop", "1")
        if num_threads is not None:
            session_options.intra_op_num_threads = int(num_threads)
            session_options.inter_op_num_threads = 1
        if providers is None:
            providers = [provider] if provider else ["CPUExecutionProvider"]
        session = ort.InferenceSession(path, sess_options=session_options, providers=providers)
        return cls(config, session=session, onnx_path=path).eval()

    def to(self, *args, **kwargs):  # the graph runs where ONNX Runtime runs it; tensors come back on the CPU
        return self

    def _run(self, feeds: dict) -> torch.Tensor:
        feeds = {name: np.ascontiguousarray(value.detach().cpu().numpy()) for name, value in feeds.items()
                 if name in self.input_names}
        (logits,) = self.session.run(["logits"], feeds)
        return torch.from_numpy(logits)

    def _text_feeds(self, input_ids, attention_mask, token_type_ids):
        if input_ids is None:
            raise ValueError("Pass `input_ids` (tokenize the text with the folder's tokenizer).")
        if input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None and "token_type_ids" in self.input_names:
            token_type_ids = torch.zeros_like(input_ids)
        feeds = {"input_ids": input_ids.long(), "attention_mask": attention_mask.long()}
        if token_type_ids is not None:
            feeds["token_type_ids"] = token_type_ids.long()
        return feeds

    def _output(self, logits, return_dict):
        if return_dict is False:
            return (logits,)
        return self._output_kind(logits=logits)


class MedheadsOnnxForTokenClassification(MedheadsOnnxPreTrainedModel):
    """For a CRF model (`config.use_crf`) the graph returns the emissions and the CRF decodes here, with the
    model's own code (`crf.py`, torch) and its transitions (`config.crf_parameters`), so `logits` are the PyTorch
    model's: the log marginals with the Viterbi path as argmax. `decode_mask` works as in the PyTorch model."""

    main_input_name = "input_ids"
    _output_kind = TokenClassifierOutput

    def __init__(self, config, session=None, onnx_path: str | None = None):
        super().__init__(config, session=session, onnx_path=onnx_path)
        self.crf = None
        if getattr(config, "use_crf", False):
            from .crf import LinearChainCRF

            parameters = getattr(config, "crf_parameters", None)
            if not parameters:
                raise ValueError("config.use_crf is set but config.crf_parameters is missing: re-export the model "
                                 "with `medheads export`.")
            self.crf = LinearChainCRF([config.id2label[i] for i in range(config.num_labels)])
            with torch.no_grad():
                for name, values in parameters.items():
                    getattr(self.crf, name).copy_(torch.tensor(values, dtype=torch.float32))

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, return_dict=None, decode_mask=None,
                **kwargs):
        feeds = self._text_feeds(input_ids, attention_mask, token_type_ids)
        limit = getattr(self.config.encoder_config, "max_position_embeddings", None)
        if limit and feeds["input_ids"].shape[1] > int(limit):
            raise ValueError(
                f"The input has {feeds['input_ids'].shape[1]} tokens but the encoder has {limit} positions: split "
                "the text (the pipeline's `stride` does) or truncate it."
            )
        logits = self._run(feeds)
        if self.crf is not None:
            mask = decode_mask if decode_mask is not None else feeds["attention_mask"]
            logits = self.crf.path_scores(logits, mask.bool())
        return self._output(logits, return_dict)


class MedheadsOnnxForSequenceClassification(MedheadsOnnxPreTrainedModel):
    """Texts longer than `config.chunk_length` tokens go in as `[batch, windows, window]`, as the PyTorch model
    splits them; shorter ones as `[batch, 1, length]`."""

    main_input_name = "input_ids"
    _output_kind = SequenceClassifierOutput

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, return_dict=None, **kwargs):
        feeds = self._text_feeds(input_ids, attention_mask, token_type_ids)
        batch, length = feeds["input_ids"].shape
        window = int(self.config.chunk_length)
        chunks = -(-length // window) if length > window else 1
        width = window if length > window else length
        pad = chunks * width - length
        pad_id = self.config.encoder_config.pad_token_id or 0
        for name, value in feeds.items():
            fill = pad_id if name == "input_ids" else 0
            if pad:
                value = nn.functional.pad(value, (0, pad), value=fill)
            feeds[name] = value.reshape(batch, chunks, width)
        return self._output(self._run(feeds), return_dict)


class MedheadsOnnxForImageClassification(MedheadsOnnxPreTrainedModel):
    main_input_name = "pixel_values"
    _output_kind = ImageClassifierOutput

    def forward(self, pixel_values=None, return_dict=None, **kwargs):
        if pixel_values is None or pixel_values.dim() != 4:
            shape = None if pixel_values is None else tuple(pixel_values.shape)
            raise ValueError(f"pixel_values must be [batch, channels, height, width], got {shape}.")
        size = int(self.config.image_size)
        if tuple(pixel_values.shape[-2:]) != (size, size):
            raise ValueError(
                f"The exported graph reads {size}x{size} images, got {tuple(pixel_values.shape[-2:])}: use the "
                "folder's image processor (it resizes to the model's image_size)."
            )
        return self._output(self._run({"pixel_values": pixel_values.float()}), return_dict)


__all__ = [
    "MedheadsOnnxPreTrainedModel", "MedheadsOnnxForTokenClassification", "MedheadsOnnxForSequenceClassification",
    "MedheadsOnnxForImageClassification",
]
