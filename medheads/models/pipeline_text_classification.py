"""The `text-classification` pipeline that ships with every `FrozenEncoderMultiLabel` checkpoint.

`config.json` names it in `custom_pipelines`, so the stock `pipeline("text-classification", model=<folder or Hub id>,
trust_remote_code=True)` runs this class, medheads installed or not. It is transformers' `TextClassificationPipeline`
with these changes:

* **Multi-label models return their decision.** A call without `top_k` returns every label whose sigmoid
  probability reaches its threshold in `config.thresholds` (one per label, one for all, or 0.5 when unset), as a
  list of `{"label", "score"}` sorted by score, `[]` when no label passes; one such list per text for a list of
  texts. `top_k=None` returns every label with its score and `top_k=k` the `k` best, as in transformers.
  Multi-class models keep the stock behaviour.
* **Long texts are not cut.** The model encodes a text longer than its window window by window and pools over all
  of them, so the text is tokenized whole, without the tokenizer's "sequence length is longer than the specified
  maximum" warning.
* **Batched calls sort texts by length.** A list of texts run with `batch_size` > 1 is fed shortest first, so each
  batch is padded to texts of about its own length; the results come back in input order.
* **Empty or whitespace-only text is refused** with a `ValueError` naming the input: there is nothing to classify,
  and any label the model gave it would be a guess.

This file imports numpy (a transformers dependency) and transformers only: it is Hub remote code.
"""

from __future__ import annotations

import numpy as np
from transformers import Pipeline, TextClassificationPipeline
from transformers.pipelines.text_classification import ClassificationFunction

from .modeling_common import call_shortest_first


def label_thresholds(config) -> np.ndarray:
    """One decision threshold per label from `config.thresholds` (None: 0.5; a float: the same for every label)."""
    thresholds = getattr(config, "thresholds", None)
    if thresholds is None:
        thresholds = 0.5
    if isinstance(thresholds, (int, float)):
        return np.full(config.num_labels, float(thresholds))
    values = np.asarray([float(value) for value in thresholds])
    if values.shape != (config.num_labels,):
        raise ValueError(
            f"config.thresholds holds {values.size} values but the model has {config.num_labels} labels: set one "
            "threshold per label (in id2label order), a single float for all, or None for 0.5."
        )
    return values


class MedheadsTextClassificationPipeline(TextClassificationPipeline):
    """`TextClassificationPipeline` whose default call on a multi-label model returns the thresholded label set.

    Example:

    ```python
    >>> from transformers import pipeline
    >>> classify = pipeline("text-classification", model="path/or/hub-id", trust_remote_code=True)
    >>> classify("CT scan of the chest shows a mass in the left lung.")
    [{'label': 'C0040405', 'score': 0.97}, {'label': 'C0024109', 'score': 0.81}]
    >>> classify(["Axial MRI of the brain.", "Chest X-ray."])  # one decision per text
    [[{'label': 'C0024485', 'score': 0.93}], [{'label': 'C1306645', 'score': 0.95}]]
    >>> classify("Chest X-ray.", top_k=None)  # every label with its probability
    ```
    """

    @property
    def _is_medheads(self) -> bool:
        """Only medheads models get the changes above; any other model (the class may serve the stock task name when
        medheads is imported) gets transformers' own behaviour."""
        return str(getattr(self.model.config, "model_type", "")).startswith("medheads-")

    @property
    def multi_label(self) -> bool:
        return self._is_medheads and self.model.config.problem_type == "multi_label_classification"

    def _sanitize_parameters(self, function_to_apply=None, top_k="", **tokenizer_kwargs):
        if self._is_medheads:
            # Long texts are windowed by the model: tokenize them whole, without the too-long-sequence warning.
            tokenizer_kwargs.setdefault("verbose", False)
        return super()._sanitize_parameters(function_to_apply=function_to_apply, top_k=top_k, **tokenizer_kwargs)

    def _returns_decision(self, call_kwargs: dict) -> bool:
        """A multi-label model called without `top_k` (here or when the pipeline was built) returns its decision."""
        function = call_kwargs.get("function_to_apply", self._postprocess_params.get("function_to_apply"))
        if isinstance(function, str):
            function = ClassificationFunction[function.upper()]
        return (self.multi_label and "top_k" not in call_kwargs and "top_k" not in self._postprocess_params
                and function in (None, ClassificationFunction.SIGMOID))

    def __call__(self, inputs, **kwargs):
        if not self._is_medheads:
            return super().__call__(inputs, **kwargs)
        texts = [inputs] if isinstance(inputs, (str, dict)) else inputs
        if isinstance(texts, (list, tuple)):
            for number, text in enumerate(texts):
                check_text(text, None if isinstance(inputs, (str, dict)) else number)
        run = Pipeline.__call__ if self._returns_decision(kwargs) else TextClassificationPipeline.__call__
        # (the decision: one list per text, not the stock [top-1 dict])
        return call_shortest_first(lambda texts: run(self, texts, **kwargs), inputs,
                                   kwargs.get("batch_size") or self._batch_size)

    def preprocess(self, inputs, **tokenizer_kwargs):
        if self._is_medheads:
            check_text(inputs)
        return super().preprocess(inputs, **tokenizer_kwargs)

    def postprocess(self, model_outputs, function_to_apply=None, top_k=1, _legacy=True):
        decide = _legacy and self.multi_label and function_to_apply in (None, ClassificationFunction.SIGMOID)
        if not decide:
            return super().postprocess(model_outputs, function_to_apply=function_to_apply, top_k=top_k,
                                       _legacy=_legacy)
        logits = model_outputs["logits"][0].float().numpy()
        probabilities = 1.0 / (1.0 + np.exp(-logits))
        passed = np.flatnonzero(probabilities >= label_thresholds(self.model.config))
        names = self.model.config.id2label
        decision = [{"label": names[int(i)], "score": float(probabilities[i])} for i in passed]
        return sorted(decision, key=lambda row: row["score"], reverse=True)


def check_text(text, number: int | None = None) -> None:
    """Refuse an empty or whitespace-only text (or text pair) with a message naming it."""
    values = [text.get("text"), text.get("text_pair")] if isinstance(text, dict) else [text]
    if any(isinstance(value, str) and not value.strip() for value in values):
        where = f"input {number}" if number is not None else "the input"
        raise ValueError(
            f"text-classification: {where} is empty or whitespace-only ({text!r}); there is nothing to classify. "
            "Drop empty texts before calling the pipeline (a label for them would be a guess)."
        )


TASKS = ("text-classification",)


def custom_pipelines() -> dict:
    """What `config.custom_pipelines` holds: this pipeline (as `module.Class`, how remote code is named) for each task
    name, with the stock Auto class as `pt` (transformers looks `pt` names up in its own namespace, #33272)."""
    impl = f"{__name__.rsplit('.', 1)[-1]}.MedheadsTextClassificationPipeline"
    return {task: {"impl": impl, "pt": ["AutoModelForSequenceClassification"], "type": "text"} for task in TASKS}


__all__ = ["custom_pipelines", "TASKS", "MedheadsTextClassificationPipeline", "label_thresholds", "check_text"]
