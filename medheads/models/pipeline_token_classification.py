"""The `ner` / `token-classification` pipeline that ships with every `HiddenLayerTokenClassifier` checkpoint.

`config.json` names it in `custom_pipelines`, so the stock `pipeline("ner", model=<folder or Hub id>,
trust_remote_code=True)` runs this class, medheads installed or not. It is transformers' `TokenClassificationPipeline`
with three changes, all about raw text:

* **Words are the text's own words.** A word is a whitespace-delimited piece of the input, with opening brackets and
  quotes split off its start and closing punctuation (`.,;:!?)]}` and quotes) split off its end; so "IL-2", "NF-kappa"
  or "Ca2+" stay one word even though the tokenizer splits them at the hyphen or plus sign. Every strategy decides
  per word, as the model was trained (every sub-token of a training word carries the word's label): `first`,
  `average` and `max` as in transformers, and `simple` gives a word's later pieces its first piece's entity (so a
  word is never split; entity scores are the mean over the entity's tokens). Every entity's `word` is the exact
  slice `text[start:end]` (case kept). `none` returns each token with its own prediction.
* **Text is read sentence by sentence, as the model was trained.** Training examples are sentences, so a raw text
  is split into sentences (after `.`, `!` or `?` and whitespace, at blank lines and after a line ending in `:`;
  never after an abbreviation such as "e.g.", "et al.", "i.v." or an initial as in "E. coli") and each
  sentence is its own window, batched like separate texts; offsets stay those of the whole text. A model trained on
  longer passages sets `config.split_sentences = False` (or a call passes `split_sentences=False`), and then windows
  run across sentences.
* **Long texts are tagged whole.** A sentence (or, without splitting, a text) longer than the encoder's window is
  cut into overlapping windows (`stride` tokens of overlap, default a quarter of the window); every token's scores
  are taken from the window where it sits farthest from an edge, and entities are built once over the whole text.
  No truncation, no warning; an explicit `stride` is honoured, and it works with every `aggregation_strategy`,
  `"none"` included.
* **The default `aggregation_strategy` is `"first"`** (the stock default `"none"` returns sub-word tokens, not
  entities); pass `aggregation_strategy="none"` for per-token output.
* **Batched calls sort texts by length.** A list of texts run with `batch_size` > 1 is fed shortest first, so each
  batch is padded to texts of about its own length (on JNLPBA sentences, batches of 32 carry about 40% fewer tokens),
  and the results come back in input order.

This file imports numpy (a transformers dependency), torch and transformers only: it is Hub remote code.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from transformers import TokenClassificationPipeline
from transformers.pipelines.token_classification import AggregationStrategy

from .modeling_common import call_shortest_first

OPENING = "([{\"'"
CLOSING = ".,;:!?)]}\"'"
# RoBERTa-style encoders number positions from padding_idx + 1, so two positions are not usable.
_POSITION_OFFSET_TYPES = {"roberta", "xlm-roberta", "camembert", "longformer"}


def word_index_per_char(text: str) -> list[int]:
    """For every character of `text`, the index of the word it belongs to (-1 for whitespace).

    Words are whitespace-delimited pieces with leading `OPENING` and trailing `CLOSING` characters split off one
    character each: "(IL-2)." -> "(", "IL-2", ")", ".".
    """
    index = [-1] * len(text)
    word = -1
    position, length = 0, len(text)
    while position < length:
        if text[position].isspace():
            position += 1
            continue
        end = position
        while end < length and not text[end].isspace():
            end += 1
        start, stop = position, end
        while start < stop and text[start] in OPENING:
            word += 1
            index[start] = word
            start += 1
        trailing = stop
        while trailing > start and text[trailing - 1] in CLOSING:
            trailing -= 1
        if start < trailing:
            word += 1
            for i in range(start, trailing):
                index[i] = word
        for i in range(trailing, stop):
            word += 1
            index[i] = word
        position = end
    return index


# A sentence ends at . ! or ? (closing quotes/brackets may follow) before whitespace and more text (biomedical
# sentences may start in lower case: "mRNA levels ...", "p53 binds ..."); at a blank line; or at a line break after a
# colon (a heading of a clinical note).
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s+(?=\S)|\n[ \t]*\n\s*|:[ \t]*\n\s*")
# Words whose final period is not a sentence end: an initial ("E. coli", "J. Smith"), a dotted abbreviation ("i.v.",
# "U.S.") and common abbreviations.
_ABBREVIATION = re.compile(
    r"(?:(?:^|[\s(\[])(?:[A-Za-z]|e\.g|i\.e|et al|etc|vs|cf|ca|approx|resp|incl|Fig|Figs|fig|figs|Tab|Eq|Ref|Vol|No|"
    r"Nos|no|pp|sp|spp|subsp|var|cv|Dr|Mr|Mrs|Ms|Prof|St|Jr|Sr|Inc|Ltd|Co|Corp|Dept|Univ|Jan|Feb|Mar|Apr|Jun|Jul|Aug|"
    r"Sep|Sept|Oct|Nov|Dec|min|max|mg|ml|mol|wt|aa|nt|bp|kb|vol)|(?:[A-Za-z]\.)+[A-Za-z])\.$")
_CLOSING_PUNCTUATION = re.compile(r"[.!?:][\"')\]]*")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """`(start, end)` character spans of the sentences of `text`, surrounding whitespace left out.

    Conservative where it matters: a missed boundary only gives the model some extra context, a wrong one could cut
    an entity in two, so a period after an initial, a dotted abbreviation or a listed abbreviation never ends a
    sentence, nor does one inside a token ("1.5", "p.5"). A text with no boundary is one span (an empty or blank
    text: no span).
    """
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        if match.group(0)[0] == "." and _ABBREVIATION.search(text[max(0, match.start() - 12):match.start() + 1]):
            continue
        punctuation = _CLOSING_PUNCTUATION.match(match.group(0))  # the end mark and quotes/brackets after it
        spans.append((start, match.start() + (punctuation.end() if punctuation else 0)))
        start = match.end()
    spans.append((start, len(text)))
    trimmed = []
    for first, last in spans:
        while first < last and text[first].isspace():
            first += 1
        while last > first and text[last - 1].isspace():
            last -= 1
        if last > first:
            trimmed.append((first, last))
    return trimmed


def encoder_window(tokenizer, config) -> int:
    """Tokens one forward pass may take: the tokenizer's `model_max_length` capped by the encoder's positions."""
    limits = []
    if isinstance(getattr(tokenizer, "model_max_length", None), int) and 0 < tokenizer.model_max_length < 10**6:
        limits.append(int(tokenizer.model_max_length))
    encoder = getattr(config, "encoder_config", None) or config
    positions = getattr(encoder, "max_position_embeddings", None)
    if positions:
        offset = 2 if getattr(encoder, "model_type", "") in _POSITION_OFFSET_TYPES else 0
        limits.append(int(positions) - offset)
    return min(limits) if limits else 512


class MedheadsTokenClassificationPipeline(TokenClassificationPipeline):
    """`TokenClassificationPipeline` that returns whole entities of raw text of any length (see the module doc).

    Example:

    ```python
    >>> from transformers import pipeline
    >>> ner = pipeline("ner", model="path/or/hub-id", trust_remote_code=True)
    >>> ner("IL-2 gene expression requires NF-kappa B activation.")
    [{'entity_group': 'protein', 'score': 0.98, 'word': 'IL-2', 'start': 0, 'end': 4},
     {'entity_group': 'protein', 'score': 0.97, 'word': 'NF-kappa B', 'start': 30, 'end': 40}]
    ```
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self._is_medheads and "aggregation_strategy" not in self._postprocess_params:
            strategy = AggregationStrategy.FIRST if self.tokenizer.is_fast else AggregationStrategy.SIMPLE
            self._postprocess_params["aggregation_strategy"] = strategy

    @property
    def _is_medheads(self) -> bool:
        """Only medheads models get the changes above; any other model (the class may serve the stock task names when
        medheads is imported) gets transformers' own behaviour."""
        return str(getattr(self.model.config, "model_type", "")).startswith("medheads-")

    @property
    def window(self) -> int:
        return encoder_window(self.tokenizer, self.model.config)

    def __call__(self, inputs, **kwargs):
        if "offset_mapping" in kwargs or kwargs.get("is_split_into_words"):
            return super().__call__(inputs, **kwargs)
        return call_shortest_first(lambda texts: super(MedheadsTokenClassificationPipeline, self).__call__(
            texts, **kwargs), inputs, kwargs.get("batch_size") or self._batch_size)

    def _sanitize_parameters(self, ignore_labels=None, aggregation_strategy=None, offset_mapping=None,
                             is_split_into_words=False, stride=None, delimiter=None, split_sentences=None):
        if not self._is_medheads:
            if split_sentences is not None:
                raise ValueError("`split_sentences` applies to medheads models; this model reads text the stock way.")
            return super()._sanitize_parameters(
                ignore_labels=ignore_labels, aggregation_strategy=aggregation_strategy, offset_mapping=offset_mapping,
                is_split_into_words=is_split_into_words, stride=stride, delimiter=delimiter)
        # The windows are built here for any strategy, so the stock checks on `stride` are not used.
        preprocess_params, forward_params, postprocess_params = super()._sanitize_parameters(
            ignore_labels=ignore_labels, aggregation_strategy=aggregation_strategy, offset_mapping=offset_mapping,
            is_split_into_words=is_split_into_words, stride=None, delimiter=delimiter)
        if split_sentences is not None:
            if not isinstance(split_sentences, bool):
                raise ValueError(f"`split_sentences` is True or False, got {split_sentences!r}.")
            preprocess_params["split_sentences"] = split_sentences
        if stride is not None:
            specials = self.tokenizer.num_special_tokens_to_add(pair=False)
            if isinstance(stride, bool) or not isinstance(stride, int) or not 0 <= stride < self.window - specials:
                raise ValueError(
                    f"`stride` is the number of tokens consecutive windows share: an integer in [0, "
                    f"{self.window - specials}) for this model's window of {self.window} tokens, got {stride!r}."
                )
            preprocess_params["stride"] = stride
        return preprocess_params, forward_params, postprocess_params

    def preprocess(self, sentence, offset_mapping=None, stride=None, split_sentences=None, **preprocess_params):
        if not self._is_medheads:
            yield from super().preprocess(sentence, offset_mapping=offset_mapping, **preprocess_params)
            return
        window = self.window
        if stride is None:
            stride = window // 4
        if preprocess_params.get("is_split_into_words") or not self.tokenizer.is_fast or offset_mapping is not None:
            # Pre-split words, a slow tokenizer or given offsets: the stock path, still windowed when possible.
            if self.tokenizer.is_fast:
                preprocess_params["tokenizer_params"] = {
                    "return_overflowing_tokens": True, "padding": True, "stride": stride, "max_length": window}
            yield from super().preprocess(sentence, offset_mapping=offset_mapping, **preprocess_params)
            return
        if not isinstance(sentence, str):
            raise ValueError(f"The ner pipeline takes a string (or a list of strings), got {type(sentence).__name__}.")
        if split_sentences is None:
            split_sentences = getattr(self.model.config, "split_sentences", True)
        spans = (sentence_spans(sentence) if split_sentences else []) or [(0, len(sentence))]
        inputs = self.tokenizer(
            [sentence[start:end] for start, end in spans], truncation=True, max_length=window, stride=stride,
            return_overflowing_tokens=True, return_special_tokens_mask=True, return_offsets_mapping=True,
        )
        pieces = inputs.pop("overflow_to_sample_mapping")
        num_chunks = len(inputs["input_ids"])
        for i in range(num_chunks):
            model_inputs = {key: torch.tensor([value[i]]) for key, value in inputs.items()}
            # Offsets into the whole text (special tokens keep their empty (0, 0)).
            shift = spans[pieces[i]][0]
            offsets = model_inputs["offset_mapping"]
            offsets[0, model_inputs["special_tokens_mask"][0] == 0] += shift
            model_inputs["sentence"] = sentence if i == 0 else None
            model_inputs["is_last"] = i == num_chunks - 1
            yield model_inputs

    def _forward(self, model_inputs):
        if not getattr(self.model.config, "use_crf", False):
            return super()._forward(model_inputs)
        # A CRF model decodes one tag chain: run it over the text's tokens (no special tokens, no padding), the
        # positions it was trained on (every sub-token is labelled by default), so its Viterbi path is the argmax.
        kept = {key: model_inputs.pop(key, None) for key in (
            "special_tokens_mask", "offset_mapping", "sentence", "is_last", "word_ids", "word_to_chars_map")}
        decode_mask = torch.ones_like(model_inputs["input_ids"], dtype=torch.bool)
        if kept["special_tokens_mask"] is not None:
            decode_mask &= kept["special_tokens_mask"] == 0
        if model_inputs.get("attention_mask") is not None:
            decode_mask &= model_inputs["attention_mask"].bool()
        output = self.model(**model_inputs, decode_mask=decode_mask)
        logits = output["logits"] if isinstance(output, dict) else output[0]
        return {"logits": logits, **kept, **model_inputs}

    def postprocess(self, all_outputs, aggregation_strategy=AggregationStrategy.NONE, ignore_labels=None):
        if (not self._is_medheads or all_outputs[0].get("word_to_chars_map") is not None
                or all_outputs[0].get("offset_mapping") is None):
            return super().postprocess(all_outputs, aggregation_strategy=aggregation_strategy,
                                       ignore_labels=ignore_labels)
        if ignore_labels is None:
            ignore_labels = ["O"]
        sentence = all_outputs[0]["sentence"]
        input_ids, scores, offsets = self._merge_windows(all_outputs)
        words = word_index_per_char(sentence)
        pre_entities, previous_word = [], None
        for position, (token_id, token_scores, (start, end)) in enumerate(zip(input_ids, scores, offsets)):
            start, end = int(start), int(end)
            word = words[start] if start < len(words) else -1
            pre_entities.append({
                "word": self.tokenizer.convert_ids_to_tokens(int(token_id)), "scores": token_scores,
                "start": start, "end": end,
                "index": position + 1,  # position among the text's tokens (0 would be the leading special token)
                "is_subword": word >= 0 and word == previous_word,
            })
            previous_word = word
        if aggregation_strategy == AggregationStrategy.SIMPLE:
            grouped = self.group_entities(self._continue_inside_words(pre_entities))
        else:
            grouped = self.aggregate(pre_entities, aggregation_strategy)
        entities = [
            entity for entity in grouped
            if entity.get("entity", None) not in ignore_labels and entity.get("entity_group", None) not in ignore_labels
        ]
        for entity in entities:
            entity["word"] = sentence[entity["start"]:entity["end"]]
        return entities

    def _continue_inside_words(self, pre_entities):
        """Token entities for the `simple` strategy, which never splits a word of the text: the later pieces of a word
        take its first piece's entity (`I-` of its type, or `O`), each scored by its own probability of that label;
        tokens of consecutive words are grouped as usual."""
        entities = self.aggregate(pre_entities, AggregationStrategy.NONE)
        label2id = self.model.config.label2id
        first = None
        for entity, pre_entity in zip(entities, pre_entities):
            if not pre_entity["is_subword"] or first is None:
                first = entity["entity"]
                continue
            label = first if first == "O" or "-" not in first else "I-" + first.split("-", 1)[1]
            if label in label2id:
                entity["entity"] = label
                entity["score"] = pre_entity["scores"][label2id[label]]
        return entities

    @staticmethod
    def _merge_windows(all_outputs):
        """One row per token of the text: its id, class probabilities and character offsets, each token's scores
        taken from the window where it is farthest from an edge."""
        best: dict[tuple[int, int], tuple[int, int, np.ndarray]] = {}
        for output in all_outputs:
            logits = output["logits"][0].to(torch.float32).numpy()
            shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
            probabilities = shifted / shifted.sum(axis=-1, keepdims=True)
            special = output["special_tokens_mask"][0].numpy().astype(bool)
            attention = output.get("attention_mask")
            if attention is not None:
                special |= attention[0].numpy() == 0
            offsets = output["offset_mapping"][0].numpy()
            ids = output["input_ids"][0].numpy()
            real = np.flatnonzero(~special)
            if not len(real):
                continue
            first, last = int(real[0]), int(real[-1])
            for position in real:
                start, end = int(offsets[position][0]), int(offsets[position][1])
                if end <= start:
                    continue
                centrality = min(position - first, last - position)
                key = (start, end)
                if key not in best or centrality > best[key][0]:
                    best[key] = (centrality, int(ids[position]), probabilities[position])
        keys = sorted(best)
        num_labels = all_outputs[0]["logits"].shape[-1]
        input_ids = np.array([best[key][1] for key in keys], dtype=np.int64)
        scores = np.stack([best[key][2] for key in keys]) if keys else np.zeros((0, num_labels), dtype=np.float32)
        offsets = np.array(keys, dtype=np.int64).reshape(-1, 2)
        return input_ids, scores, offsets


TASKS = ("ner", "token-classification")


def custom_pipelines() -> dict:
    """What `config.custom_pipelines` holds: this pipeline (as `module.Class`, how remote code is named) for each task
    name, with the stock Auto class as `pt` (transformers looks `pt` names up in its own namespace, #33272)."""
    impl = f"{__name__.rsplit('.', 1)[-1]}.MedheadsTokenClassificationPipeline"
    return {task: {"impl": impl, "pt": ["AutoModelForTokenClassification"], "type": "text"} for task in TASKS}


__all__ = ["custom_pipelines", "TASKS", "MedheadsTokenClassificationPipeline", "word_index_per_char", "encoder_window",
           "sentence_spans"]
