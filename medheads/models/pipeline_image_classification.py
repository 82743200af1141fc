"""The `image-classification` pipeline that ships with every ViTPatchClassifier checkpoint.

`config.json` names it in `custom_pipelines`, so the stock call
`pipeline("image-classification", model=<folder or Hub id>, trust_remote_code=True)` builds it, medheads installed or
not (`import medheads` also registers it with transformers' `PIPELINE_REGISTRY` for in-memory models). It is
transformers' `ImageClassificationPipeline` with two differences:

* Images are read by `image_loading.load_image`: paths, URLs, PIL images, numpy arrays and tensors, with 16-bit and
  12-bit-in-16 grayscale kept in their real range and DICOM files (`.dcm`, with pydicom) windowed as a viewer shows
  them; an unreadable input raises one `ImageLoadingError` naming it.
* The output is the model's decision for its `config.problem_type`:
  - single-label: as the stock pipeline (the `top_k` best classes with softmax scores, 5 by default);
  - multi-label: every label whose sigmoid reaches its threshold in `config.thresholds` (0.5 when unset), as
    `[{"label", "score"}]` sorted by score, `[]` when none does; `top_k=None` returns every label with its score and
    `top_k=k` the k best (the stock meaning);
  - regression: `[{"label", "score"}]` with the predicted value of every output in `id2label` order.

Preprocessing is the image processor's, computed faster: after `load_image` every image is 8-bit RGB, and rescaling
and normalizing map each (channel, value) pair to one float, so the pipeline asks the processor once for the floats
of all 256 values of each channel (`pixel_table`) and then looks every pixel up in that table (resizing first with
PIL, as the processor's PIL backend does, when the image is not already the model's size). The pixel values are the
processor's own, bit for bit; processors this does not cover (cropping, padding, aspect-preserving sizes, the
torchvision backend on images that need resizing) run as before.

Remote code: imports torch, transformers, numpy and its sibling `image_loading` only.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import ImageClassificationPipeline

from .image_loading import load_image

MODEL_TYPE = "medheads-vit-patch-classifier"
_UNSET = object()


def pixel_table(image_processor) -> np.ndarray | None:
    """The processor's output for every 8-bit value of every channel, `[3, 256]` (float32), or None when its
    processing of an 8-bit RGB image is not a per-pixel lookup after an optional resize (see `fast_pixel_values`)."""
    from PIL import Image

    if getattr(image_processor, "do_center_crop", False) or getattr(image_processor, "do_pad", False):
        return None
    size = getattr(image_processor, "size", None) or {}
    if getattr(image_processor, "do_resize", False) and not (_get(size, "height") and _get(size, "width")):
        return None
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)  # 1 x 256 RGB, every value
    try:
        table = image_processor(images=Image.fromarray(ramp), do_resize=False, return_tensors="np")["pixel_values"]
    except Exception:  # a processor with other arguments: not covered
        return None
    table = np.asarray(table)
    if table.shape != (1, 3, 1, 256) or table.dtype != np.float32:
        return None
    return np.ascontiguousarray(table[0, :, 0, :])


def _get(size, key):
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def fast_pixel_values(image, image_processor, table: np.ndarray) -> np.ndarray | None:
    """`image_processor(images=image)["pixel_values"]` for an 8-bit RGB PIL image, `[1, 3, H, W]`, computed with the
    processor's `pixel_table`; None when the image would need a resize that is not PIL's (torchvision backend)."""
    if image.mode != "RGB":
        return None
    if getattr(image_processor, "do_resize", False):
        size = image_processor.size
        target = (int(_get(size, "width")), int(_get(size, "height")))
        if image.size != target:
            if getattr(image_processor, "backend", None) != "pil":
                return None
            from PIL import Image

            resample = getattr(image_processor, "resample", None)
            image = image.resize(target, resample=int(resample) if resample is not None else Image.Resampling.BILINEAR)
    values = np.asarray(image)  # H x W x 3, uint8
    pixels = np.empty((1, 3) + values.shape[:2], dtype=np.float32)
    for channel in range(3):
        np.take(table[channel], values[:, :, channel], out=pixels[0, channel])
    return pixels


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-values))


def _softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class MedheadsImageClassificationPipeline(ImageClassificationPipeline):
    """`ImageClassificationPipeline` that reads medical images correctly and returns multi-label decisions (see the
    module docstring). Models other than ViTPatchClassifier get the stock behaviour."""

    def check_model_type(self, supported_models):
        if self._is_medheads:
            return  # a custom model: not in transformers' own mapping, and that is fine
        super().check_model_type(supported_models)

    @property
    def _is_medheads(self) -> bool:
        """A ViTPatchClassifier, in PyTorch or exported (`medheads export` names it `<model type>-onnx`)."""
        # cached per model object: a config attribute read costs microseconds in transformers 5, per image adds up
        cached = self.__dict__.get("_medheads_model")
        if cached is None or cached[0] is not self.model:
            cached = (self.model, str(getattr(self.model.config, "model_type", "")).startswith(MODEL_TYPE))
            self.__dict__["_medheads_model"] = cached
        return cached[1]

    def _sanitize_parameters(self, top_k=_UNSET, function_to_apply=None, timeout=None):
        preprocess_params, forward_params, postprocess_params = super()._sanitize_parameters(
            top_k=None, function_to_apply=function_to_apply, timeout=timeout)
        if top_k is not _UNSET:  # `top_k=None` (every label) is not the same as no top_k (the model's decision)
            if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
                raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}.")
            postprocess_params["top_k"] = top_k
        if getattr(self, "model", None) is not None and self._is_medheads:
            # read from the model once per call, not once per image (a config edited between calls is honoured)
            preprocess_params["dtype"] = self.dtype
            postprocess_params["plan"] = self._label_plan()
        return preprocess_params, forward_params, postprocess_params

    def _label_plan(self) -> dict:
        """What post-processing reads from the config: the problem type, the label names and the thresholds."""
        config = self.model.config
        problem_type = config.problem_type
        num_labels = len(config.id2label)
        if problem_type is None and self._is_medheads:
            problem_type = "regression" if num_labels == 1 else "single_label_classification"
        names = [config.id2label[i] for i in range(num_labels)]
        thresholds = None
        if problem_type == "multi_label_classification" and self._is_medheads:
            thresholds = self._thresholds(num_labels)
        return {"problem_type": problem_type, "names": names, "thresholds": thresholds,
                "medheads": self._is_medheads}

    def preprocess(self, image, timeout=None, dtype=None):
        if not self._is_medheads and hasattr(image, "shape"):  # stock: arrays go to the image processor as they are
            return super().preprocess(image, timeout=timeout)
        dtype = dtype or self.dtype
        image = load_image(image, timeout=timeout)
        if not hasattr(self, "_pixel_table"):  # once per pipeline, not per image
            self._pixel_table = pixel_table(self.image_processor)
        if self._pixel_table is not None:
            pixels = fast_pixel_values(image, self.image_processor, self._pixel_table)
            if pixels is not None:  # a plain dict: BatchFeature's conversions cost as much as the lookup
                return {"pixel_values": torch.from_numpy(pixels).to(dtype)}
        return self.image_processor(images=image, return_tensors="pt").to(dtype)

    def postprocess(self, model_outputs, function_to_apply=None, top_k=_UNSET, plan=None):
        plan = plan or self._label_plan()
        problem_type, names = plan["problem_type"], plan["names"]
        logits = model_outputs["logits"][0].float().cpu().numpy().astype(np.float64)
        if len(names) != len(logits):
            raise ValueError(f"the model returned {len(logits)} scores for {len(names)} labels in config.id2label.")

        if problem_type == "regression" and function_to_apply is None:
            return [{"label": name, "score": float(value)} for name, value in zip(names, logits)]
        if function_to_apply is None:
            multi = problem_type == "multi_label_classification" or len(names) == 1
            scores = _sigmoid(logits) if multi else _softmax(logits)
        else:
            function = str(getattr(function_to_apply, "value", function_to_apply)).lower()
            if function not in ("sigmoid", "softmax", "none"):
                raise ValueError(f"Unrecognized `function_to_apply` argument: {function_to_apply}")
            scores = {"sigmoid": _sigmoid, "softmax": _softmax, "none": lambda x: x}[function](logits)
        ranked = sorted(({"label": name, "score": float(score)} for name, score in zip(names, scores)),
                        key=lambda row: row["score"], reverse=True)
        if top_k is _UNSET:
            if plan["thresholds"] is not None and function_to_apply is None:
                thresholds = plan["thresholds"]
                decided = {name for name, score, threshold in zip(names, scores, thresholds) if score >= threshold}
                return [row for row in ranked if row["label"] in decided]
            top_k = 5  # the stock default
        return ranked if top_k is None else ranked[:top_k]

    def _thresholds(self, num_labels: int) -> list[float]:
        thresholds = getattr(self.model.config, "thresholds", None)
        if thresholds is None:
            return [0.5] * num_labels
        if isinstance(thresholds, (int, float)):
            return [float(thresholds)] * num_labels
        if len(thresholds) != num_labels:
            raise ValueError(f"config.thresholds has {len(thresholds)} values for {num_labels} labels.")
        return [float(t) for t in thresholds]


__all__ = ["MedheadsImageClassificationPipeline", "pixel_table", "fast_pixel_values"]
