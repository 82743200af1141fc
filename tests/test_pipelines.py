"""The pipelines that ship with the text checkpoints, on raw input: whole entities with exact offsets, long texts
tagged whole, batches; multi-label decisions with the config's thresholds; empty text refused.

The NER checks use a model whose logits are a lookup of the token id (so the expected entities are known exactly);
tests/test_remote_code.py and tests/test_publish.py run the same pipelines from a folder and a Hub repo in a process
where medheads cannot be imported.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest
import torch
from tiny import CUI_LABELS, encoder_config
from transformers import BertTokenizerFast, pipeline
from transformers.modeling_outputs import TokenClassifierOutput

from medheads import (
    FrozenEncoderMultiLabel, FrozenEncoderMultiLabelConfig, HiddenLayerTokenClassifier,
    HiddenLayerTokenClassifierConfig, MedheadsTextClassificationPipeline, MedheadsTokenClassificationPipeline,
)
from medheads.metrics import char_span_metrics, char_spans, detokenize, tag_spans
from medheads.models.pipeline_token_classification import sentence_spans, word_index_per_char

LABELS = {0: "O", 1: "B-protein", 2: "I-protein"}
PIECES = ["il", "-", "2", "##2", "nf", "kappa", "b", "beta", "microglobulin", "ca", "+", "gene", "expression",
          "requires", "activation", ",", "and", "(", ")", ".", "levels", "rise", "in", "t", "cells"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *PIECES]
# The "model": every piece of a protein name is tagged protein, its first piece B-, the rest I-.
TAGS = {"il": 1, "nf": 1, "beta": 1, "ca": 1, "-": 2, "2": 2, "##2": 2, "kappa": 2, "b": 2, "microglobulin": 2,
        "+": 2}
SENTENCE = "IL-2 gene expression requires NF-kappa B activation, and beta-2-microglobulin (Ca2+) levels rise."
ENTITIES = ["IL-2", "NF-kappa B", "beta-2-microglobulin", "Ca2+"]


def expected_spans(text: str, offset: int = 0) -> list[tuple[int, int, str]]:
    spans, position = [], 0
    for name in ENTITIES:
        start = text.index(name, position)
        spans.append((start + offset, start + len(name) + offset, name))
        position = start + len(name)
    return spans


@pytest.fixture(scope="module")
def ner_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ner")
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(VOCAB)}, do_lower_case=True, model_max_length=16)
    assert tokenizer.tokenize("Ca2+") == ["ca", "##2", "+"]
    config = encoder_config("bert", layers=1)
    config.vocab_size = len(VOCAB)
    model = HiddenLayerTokenClassifier(HiddenLayerTokenClassifierConfig(encoder_config=config, id2label=LABELS))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def lookup_pipeline(folder, calls: list | None = None, **kwargs) -> MedheadsTokenClassificationPipeline:
    ner = pipeline("ner", model=str(folder), trust_remote_code=True, **kwargs)
    table = torch.full((len(VOCAB), len(LABELS)), -4.0)
    table[:, 0] = 4.0
    for piece, label in TAGS.items():
        table[VOCAB.index(piece)] = -4.0
        table[VOCAB.index(piece), label] = 4.0

    def forward(input_ids=None, **_):
        if calls is not None:
            calls.append(tuple(input_ids.shape))
        return TokenClassifierOutput(logits=table[input_ids])

    ner.model.forward = forward
    return ner


def spans_of(entities) -> list[tuple[int, int, str]]:
    return [(e["start"], e["end"], e["word"]) for e in entities]


def test_folder_declares_and_carries_the_pipeline(ner_folder):
    import json

    config = json.loads((ner_folder / "config.json").read_text())
    for task in ("ner", "token-classification"):
        assert config["custom_pipelines"][task] == {
            "impl": "pipeline_token_classification.MedheadsTokenClassificationPipeline",
            "pt": ["AutoModelForTokenClassification"], "type": "text"}
    assert (ner_folder / "pipeline_token_classification.py").is_file()
    ner = pipeline("token-classification", model=str(ner_folder), trust_remote_code=True)
    assert type(ner).__name__ == "MedheadsTokenClassificationPipeline"
    assert type(ner).__module__.startswith("transformers_modules")  # the folder's own copy


@pytest.mark.parametrize("strategy", ["first", "simple", "average", "max", None])
def test_one_word_entities_come_back_whole_with_exact_offsets(ner_folder, strategy):
    ner = lookup_pipeline(ner_folder, **({"aggregation_strategy": strategy} if strategy else {}))
    entities = ner(SENTENCE)
    assert spans_of(entities) == expected_spans(SENTENCE)
    for entity in entities:
        assert entity["word"] == SENTENCE[entity["start"]:entity["end"]] and entity["entity_group"] == "protein"


def test_strategy_none_returns_tokens_with_their_text(ner_folder):
    tokens = lookup_pipeline(ner_folder)(SENTENCE, aggregation_strategy="none")
    assert [t["word"] for t in tokens[:3]] == ["IL", "-", "2"]  # case kept: the text's own slice
    assert [t["entity"] for t in tokens[:3]] == ["B-protein", "I-protein", "I-protein"]
    assert all(t["word"] == SENTENCE[t["start"]:t["end"]] for t in tokens)


def test_words_are_the_texts_own_words():
    text = "(IL-2). NF-kappa B, Ca2+"
    index = word_index_per_char(text)
    words = {}
    for i, w in enumerate(index):
        if w >= 0:
            words.setdefault(w, "")
            words[w] += text[i]
    assert list(words.values()) == ["(", "IL-2", ")", ".", "NF-kappa", "B", ",", "Ca2+"]


def test_long_text_is_tagged_whole_by_default_without_warning(ner_folder, caplog):
    calls = []
    ner = lookup_pipeline(ner_folder, calls=calls)
    text = " ".join([SENTENCE] * 12)  # about 300 tokens; the window is 16
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        entities = ner(text)
    assert len(calls) > 20  # overlapping windows
    assert not [w for w in caught if "token" in str(w.message).lower()]
    assert not [r for r in caplog.records if "truncat" in r.getMessage().lower() or "longer" in r.getMessage()]
    shift = len(SENTENCE) + 1
    assert spans_of(entities) == [s for k in range(12) for s in expected_spans(SENTENCE, k * shift)]


def test_explicit_stride_is_honoured(ner_folder):
    text = " ".join([SENTENCE] * 4)
    default_calls, small_calls = [], []
    expected = spans_of(lookup_pipeline(ner_folder, calls=default_calls)(text))
    assert spans_of(lookup_pipeline(ner_folder, calls=small_calls)(text, stride=1)) == expected
    assert len(small_calls) < len(default_calls)  # less overlap, fewer windows
    with pytest.raises(ValueError, match="stride"):
        lookup_pipeline(ner_folder)(text, stride=15)


def test_batches(ner_folder):
    ner = lookup_pipeline(ner_folder)
    texts = [SENTENCE, "gene expression", " ".join([SENTENCE] * 3), ""]
    one_by_one = [ner(text) for text in texts]
    assert ner(texts) == one_by_one
    assert ner(texts, batch_size=3) == one_by_one
    assert one_by_one[1] == [] and one_by_one[3] == []


def test_sentence_spans_are_conservative():
    def sentences(text):
        return [text[start:end] for start, end in sentence_spans(text)]

    assert sentences("IL-2 rises. NF-kappa B falls!  Why? 3 mice (n = 5) died.") == [
        "IL-2 rises.", "NF-kappa B falls!", "Why?", "3 mice (n = 5) died."]
    # Initials, abbreviations and decimals never end a sentence: a wrong cut could split an entity. Biomedical
    # sentences may start in lower case ("mRNA", "p53").
    assert sentences("E. coli and S. aureus grew, e.g. in Fig. 2 at 1.5 mg. per kg i.v. daily. mRNA fell. Cells "
                     "et al. Died. p53 rose") == [
        "E. coli and S. aureus grew, e.g. in Fig. 2 at 1.5 mg. per kg i.v. daily.", "mRNA fell.", "Cells et al. Died.",
        "p53 rose"]
    assert sentences('He said "stop." Then (IL-2) rose.') == ['He said "stop."', "Then (IL-2) rose."]
    assert sentences("HISTORY:\nThe patient, 54, has\nmultiple sclerosis.\n\nPLAN: rest") == [
        "HISTORY:", "The patient, 54, has\nmultiple sclerosis.", "PLAN: rest"]  # a wrapped line is not a boundary
    assert sentences("") == [] and sentences("  \n ") == [] and sentences("no boundary here") == ["no boundary here"]


def test_each_sentence_is_its_own_window_with_whole_text_offsets(ner_folder):
    first, second = "IL-2 gene expression requires activation.", "NF-kappa B levels rise."
    text = f"{first}  {second}"  # 8 + 7 tokens: one window of 16 would hold both sentences but for a special token
    calls = []
    ner = lookup_pipeline(ner_folder, calls=calls)
    windows = []
    forward = ner.model.forward
    ner.model.forward = lambda input_ids=None, **kw: windows.append(input_ids[0].tolist()) or forward(input_ids, **kw)
    entities = ner(text)
    assert spans_of(entities) == [(0, 4, "IL-2"), (len(first) + 2, len(first) + 12, "NF-kappa B")]
    tokenizer = ner.tokenizer
    assert [tokenizer.decode(w, skip_special_tokens=True) for w in windows] == [
        tokenizer.decode(tokenizer(s)["input_ids"], skip_special_tokens=True) for s in (first, second)]
    # The same text read across sentences (the config flag or the call): windows hold both sentences' tokens.
    windows.clear()
    assert spans_of(ner(text, split_sentences=False)) == spans_of(entities)
    assert any(tokenizer.convert_tokens_to_ids("activation") in w and tokenizer.convert_tokens_to_ids("nf") in w
               for w in windows)
    with pytest.raises(ValueError, match="split_sentences"):
        ner(text, split_sentences="yes")


def test_split_sentences_config_flag_is_saved_and_read(ner_folder, tmp_path):
    import json

    assert json.loads((ner_folder / "config.json").read_text())["split_sentences"] is True
    model = HiddenLayerTokenClassifier.from_pretrained(ner_folder)
    model.config.split_sentences = False
    model.save_pretrained(tmp_path)
    ner_tokenizer = BertTokenizerFast.from_pretrained(ner_folder)
    ner_tokenizer.save_pretrained(tmp_path)
    windows = []
    ner = lookup_pipeline(tmp_path)
    forward = ner.model.forward
    ner.model.forward = lambda input_ids=None, **kw: windows.append(input_ids[0].tolist()) or forward(input_ids, **kw)
    ner("IL-2 rises. NF-kappa B falls.")
    assert len(windows) == 1  # one window across both sentences


def test_batched_calls_run_shortest_first_and_answer_in_input_order(ner_folder):
    calls = []
    ner = lookup_pipeline(ner_folder, calls=calls)
    texts = [" ".join([SENTENCE] * 2), "gene expression", SENTENCE, "IL-2 levels rise.", "T cells"]
    one_by_one = [ner(text) for text in texts]
    calls.clear()
    assert ner(texts, batch_size=2) == one_by_one
    lengths = [shape[1] for shape in calls]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]  # padded to texts of about their own length
    calls.clear()
    assert ner(texts, batch_size=1) == one_by_one  # batches of one: the order of the call
    lengths = [shape[1] for shape in calls]
    assert lengths[0] == 16 and lengths != sorted(lengths)  # the windows of the long text come first


def test_registered_with_the_pipeline_registry(ner_folder):
    from transformers.pipelines import PIPELINE_REGISTRY

    assert "medheads-token-classification" in PIPELINE_REGISTRY.get_supported_tasks()
    ner = pipeline("medheads-token-classification", model=str(ner_folder))  # by name, medheads installed
    assert type(ner) is MedheadsTokenClassificationPipeline


# ------------------------------------------------------------------------------------------- character-span metrics


def test_detokenize_and_char_spans():
    words = ["Ataxia", "-", "telangiectasia", "(", "A", "-", "T", ")", "is", "rare", "."]
    tags = ["B-Disease", "I-Disease", "I-Disease", "O", "B-Disease", "I-Disease", "I-Disease", "O", "O", "O", "O"]
    text, offsets = detokenize(words)
    assert text == "Ataxia-telangiectasia (A-T) is rare."
    assert [text[a:b] for a, b in offsets] == words
    assert tag_spans(["I-X", "I-X", "O", "B-X", "B-X", "I-Y"]) == [(0, 2, "X"), (3, 4, "X"), (4, 5, "X"), (5, 6, "Y")]
    spans = char_spans(tags, offsets)
    assert {text[a:b] for a, b, _ in spans} == {"Ataxia-telangiectasia", "A-T"}
    scores = char_span_metrics([spans], [{(0, 21, "Disease"), (0, 6, "Disease")}])
    assert scores["precision"] == 0.5 and scores["recall"] == 0.5 and scores["f1"] == 0.5


# ------------------------------------------------------------------------------------------------ text classification


@pytest.fixture(scope="module")
def text_folder(tmp_path_factory, tiny_tokenizer):
    folder = tmp_path_factory.mktemp("text")
    torch.manual_seed(0)
    model = FrozenEncoderMultiLabel(FrozenEncoderMultiLabelConfig(
        encoder_config=encoder_config("bert"), head_hidden_sizes=[16], id2label=CUI_LABELS)).eval()
    model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder, model, tiny_tokenizer


TEXTS = ["chest x ray shows a mass in the left lung", "axial ct of the brain", "mri of the spine and pelvis"]


def probabilities(model, tokenizer, text):
    with torch.no_grad():
        return torch.sigmoid(model(**tokenizer([text], return_tensors="pt", verbose=False)).logits[0])


def test_default_call_returns_the_thresholded_decision(text_folder):
    folder, model, tokenizer = text_folder
    probs = probabilities(model, tokenizer, TEXTS[0])
    # thresholds just under labels 0 and 2, just over 1 and 3: the decision is exactly {0, 2}
    thresholds = [float(probs[0]) - 1e-3, float(probs[1]) + 1e-3, float(probs[2]) - 1e-3, float(probs[3]) + 1e-3]
    model.config.thresholds = thresholds
    model.save_pretrained(folder)
    classify = pipeline("text-classification", model=str(folder), trust_remote_code=True)
    decision = classify(TEXTS[0])
    assert [row["label"] for row in decision] == sorted([CUI_LABELS[0], CUI_LABELS[2]],
                                                        key=lambda name: -float(probs[list(CUI_LABELS.values()).index(name)]))
    assert [row["score"] for row in decision] == sorted((row["score"] for row in decision), reverse=True)
    batch = classify(TEXTS)
    assert batch[0] == decision and len(batch) == 3 and all(isinstance(rows, list) for rows in batch)
    encoded = tokenizer(TEXTS, return_tensors="pt", padding=True)
    assert [{row["label"] for row in rows} for rows in batch] == [set(names) for names in model.predict_labels(**encoded)]
    everything = classify(TEXTS[0], top_k=None)
    assert len(everything) == 4 and {row["label"] for row in everything} == set(CUI_LABELS.values())
    assert classify(TEXTS[0], top_k=2) == everything[:2]  # the stock meaning of top_k
    assert classify(TEXTS[0], function_to_apply="softmax")[0]["label"] == everything[0]["label"]  # stock top-1
    model.config.thresholds = 1.0
    model.save_pretrained(folder)
    assert pipeline("text-classification", model=str(folder), trust_remote_code=True)(TEXTS[0]) == []


def test_text_batches_run_shortest_first_and_answer_in_input_order(text_folder):
    folder = text_folder[0]
    classify = pipeline("text-classification", model=str(folder), trust_remote_code=True)
    texts = [TEXTS[0], TEXTS[1], " ".join(TEXTS * 3), TEXTS[2], "chest x ray"]
    seen = []
    forward = classify.model.forward

    def recording(input_ids=None, **kwargs):
        seen.append(tuple(input_ids.shape))
        return forward(input_ids=input_ids, **kwargs)

    classify.model.forward = recording
    for kwargs in ({}, {"top_k": None}):
        one_by_one = [classify(text, **kwargs) for text in texts]
        seen.clear()
        batched = classify(texts, batch_size=2, **kwargs)
        assert [[row["label"] for row in rows] for rows in batched] == \
            [[row["label"] for row in rows] for rows in one_by_one]
        for rows, expected in zip(batched, one_by_one):
            assert [row["score"] for row in rows] == pytest.approx([row["score"] for row in expected], abs=1e-5)
        lengths = [shape[1] for shape in seen]
        assert lengths == sorted(lengths) and lengths[0] < lengths[-1]


def test_multi_class_keeps_the_stock_behaviour(tmp_path, tiny_tokenizer):
    torch.manual_seed(0)
    model = FrozenEncoderMultiLabel(FrozenEncoderMultiLabelConfig(
        encoder_config=encoder_config("bert"), head_hidden_sizes=[], id2label=CUI_LABELS,
        problem_type="single_label_classification")).eval()
    model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    classify = pipeline("text-classification", model=str(tmp_path), trust_remote_code=True)
    with torch.no_grad():
        probs = torch.softmax(model(**tiny_tokenizer([TEXTS[0]], return_tensors="pt")).logits[0], -1)
    out = classify(TEXTS[0])
    assert len(out) == 1 and out[0]["label"] == CUI_LABELS[int(probs.argmax())]
    assert out[0]["score"] == pytest.approx(float(probs.max()), abs=1e-5)


def test_long_text_is_pooled_without_the_tokenizer_warning(text_folder, caplog):
    folder, model, tokenizer = text_folder
    classify = pipeline("text-classification", model=str(folder), trust_remote_code=True)
    long_text = " ".join(TEXTS * 40)  # ~400 tokens; the tokenizer says 64, the model's window is 128
    with caplog.at_level(logging.WARNING):
        scores = {row["label"]: row["score"] for row in classify(long_text, top_k=None)}
    assert not [r for r in caplog.records if "longer than the specified maximum" in r.getMessage()]
    with torch.no_grad():
        encoded = tokenizer([long_text], return_tensors="pt", verbose=False)
        assert encoded["input_ids"].shape[1] > 300
        probs = torch.sigmoid(model(**encoded).logits[0])
    assert scores == pytest.approx({CUI_LABELS[i]: float(probs[i]) for i in CUI_LABELS}, abs=1e-5)


@pytest.mark.parametrize("bad", ["", "   \n\t"])
def test_empty_text_is_refused(text_folder, bad):
    folder, _, _ = text_folder
    classify = pipeline("text-classification", model=str(folder), trust_remote_code=True)
    with pytest.raises(ValueError, match="empty or whitespace-only"):
        classify(bad)
    with pytest.raises(ValueError, match="input 1 is empty"):
        classify([TEXTS[0], bad])


def test_text_pipeline_registered(text_folder):
    folder, _, _ = text_folder
    classify = pipeline("medheads-text-classification", model=str(folder))
    assert type(classify) is MedheadsTextClassificationPipeline


# ------------------------------------------------------------- agreement: word-level F1 vs the pipeline on raw text

SAMPLE = Path(__file__).resolve().parents[1] / "scripts" / "sample_data"


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    """`medheads train-ner` on the synthetic sample with a tiny BERT whose vocabulary covers it (every sub-token
    trained, the default), evaluated on the sample's validation file as its test split."""
    from transformers import AutoModel
    from transformers.models.bert.tokenization_bert_legacy import BasicTokenizer

    from medheads.data import read_token_file
    from medheads.training.arguments import parse_args
    from medheads.training.ner import ARGUMENT_CLASSES, run

    encoder = tmp_path_factory.mktemp("sample_encoder")
    basic = BasicTokenizer(do_lower_case=True)
    pieces = sorted({piece for f in ("ner_train.tsv", "ner_validation.tsv")
                     for s in read_token_file(SAMPLE / f) for w in s["tokens"] for piece in basic.tokenize(w)})
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(VOCAB[:5] + pieces)}, do_lower_case=True,
                                  model_max_length=64)
    config = encoder_config("bert", layers=2)
    config.vocab_size = len(tokenizer)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(encoder)
    tokenizer.save_pretrained(encoder)
    out = tmp_path_factory.mktemp("sample_run") / "ner"
    results = run(*parse_args(ARGUMENT_CLASSES, ["--model_name_or_path", str(encoder), "--train_file", str(SAMPLE / "ner_train.tsv"),
                    "--validation_file", str(SAMPLE / "ner_validation.tsv"),
                    "--test_file", str(SAMPLE / "ner_validation.tsv"), "--do_train", "--do_eval", "--do_predict",
                    "--num_train_epochs", "2", "--learning_rate", "5e-3", "--per_device_train_batch_size", "16",
                    "--disable_tqdm", "true", "--use_cpu", "true", "--seed", "3", "--output_dir", str(out),
                    "--report_to", "none"]))
    return out, results


def test_training_reports_the_pipeline_char_f1_and_it_agrees(sample_run):
    out, results = sample_run
    for prefix in ("eval", "predict"):
        assert {f"{prefix}_pipeline_char_precision", f"{prefix}_pipeline_char_recall",
                f"{prefix}_pipeline_char_f1"} <= set(results)
    assert results["predict_f1"] > 0.6  # the model learned something: the comparison is not 0 == 0
    assert abs(results["predict_pipeline_char_f1"] - results["predict_f1"]) <= 0.01, results
    import json

    assert json.loads((out / "metrics.json").read_text())["metrics"]["predict_pipeline_char_f1"] == \
        results["predict_pipeline_char_f1"]


def test_eval_pipeline_script_without_medheads(sample_run):
    """scripts/eval_pipeline.py: the folder's own pipeline in a process without medheads, on raw sentences and on
    documents of 40 sentences, agrees with the word-level F1 within a point."""
    import json
    import subprocess
    import sys

    out, results = sample_run
    script = SAMPLE.parent / "eval_pipeline.py"
    proc = subprocess.run([sys.executable, str(script), "ner", str(out), str(SAMPLE / "ner_validation.tsv"),
                           "--strategies", "simple"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "pipeline_eval_ner.json").read_text())
    assert report["pipeline_class"].startswith("transformers_modules")
    assert report["document_chars_mean"] > 1000
    word_f1 = report["training_script"]["predict_f1"]
    for name, scores in report["pipeline"].items():
        if name.startswith("sentences"):  # the words the model decides on are the dataset's words
            assert abs(scores["f1"] - word_f1) <= 0.01, (name, scores, word_f1)
    # Documents (~10 windows of the tokenizer's 64 tokens each) are read sentence by sentence, as the model was
    # trained: a truncating pipeline would find about a tenth of the entities, and windows across sentences give this
    # tiny model context it never saw (it scored 0.37-0.39 against 0.43 on sentences before the split).
    documents = report["pipeline"]["documents of 40 sentences, default call"]
    assert abs(documents["f1"] - word_f1) <= 0.01, (documents, word_f1)


def test_pre_split_words_still_work(ner_folder):
    ner = lookup_pipeline(ner_folder)
    words = ["IL-2", "gene", "expression", "requires", "NF-kappa", "B", "activation"]
    entities, = ner(words, is_split_into_words=True)  # transformers returns one list per pre-split text
    text = " ".join(words)
    assert [(e["start"], e["end"]) for e in entities] == [(0, 4), (30, 40)]
    assert [text[e["start"]:e["end"]] for e in entities] == ["IL-2", "NF-kappa B"]


def test_pipeline_save_pretrained_keeps_the_declaration(ner_folder, tmp_path):
    import json

    for ner in (pipeline("ner", model=str(ner_folder), trust_remote_code=True),  # the folder's own class
                pipeline("medheads-token-classification", model=str(ner_folder))):  # medheads' registered class
        target = tmp_path / type(ner).__module__.split(".")[0]
        ner.save_pretrained(target)
        config = json.loads((target / "config.json").read_text())
        assert set(config["custom_pipelines"]) == {"ner", "token-classification"}
        assert (target / "pipeline_token_classification.py").is_file()


# ----------------------------------------------------- the stock task names: medheads models in memory, other models

def test_stock_task_names_serve_medheads_models_in_memory(ner_folder, text_folder, tmp_path):
    """With medheads imported, `pipeline("ner", model=<model object>)` (no folder, no remote code) is the medheads
    pipeline: whole entities, thresholded label sets; and saving it writes the full declaration."""
    import json

    model = HiddenLayerTokenClassifier.from_pretrained(ner_folder)
    tokenizer = BertTokenizerFast.from_pretrained(ner_folder)
    for task in ("ner", "token-classification"):
        ner = pipeline(task, model=model, tokenizer=tokenizer)
        assert type(ner) is MedheadsTokenClassificationPipeline
    table_pipe = lookup_pipeline(ner_folder)
    ner.model.forward = table_pipe.model.forward
    assert spans_of(ner(SENTENCE)) == expected_spans(SENTENCE)
    ner.save_pretrained(tmp_path / "ner")
    saved = json.loads((tmp_path / "ner" / "config.json").read_text())
    assert set(saved["custom_pipelines"]) == {"ner", "token-classification"}

    folder, text_model, text_tokenizer = text_folder
    classify = pipeline("text-classification", model=text_model, tokenizer=text_tokenizer)
    assert type(classify) is MedheadsTextClassificationPipeline
    decision = classify(TEXTS[0])
    assert isinstance(decision, list) and all(set(row) == {"label", "score"} for row in decision)
    assert classify([TEXTS[0]]) == [decision]  # one decision per text, not the stock top-1 dict


def test_other_models_keep_transformers_own_pipelines(tmp_path, tiny_tokenizer):
    """The medheads classes serving the stock task names change nothing for a stock model: same outputs as
    transformers' own pipeline classes, the same errors, and a stock folder saved through them stays stock."""
    import json

    from transformers import (
        BertForSequenceClassification, BertForTokenClassification, TextClassificationPipeline,
        TokenClassificationPipeline,
    )

    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(VOCAB)}, do_lower_case=True, model_max_length=16)
    torch.manual_seed(0)
    config = encoder_config("bert", layers=1)
    config.vocab_size, config.id2label = len(VOCAB), LABELS
    config.label2id = {v: k for k, v in LABELS.items()}
    tagger = BertForTokenClassification(config).eval()
    ner = pipeline("ner", model=tagger, tokenizer=tokenizer)
    stock = TokenClassificationPipeline(model=tagger, tokenizer=tokenizer)
    short = "IL-2 gene expression requires activation."
    for kwargs in ({}, {"aggregation_strategy": "simple"}, {"aggregation_strategy": "first"}):
        assert ner(short, **kwargs) == stock(short, **kwargs), kwargs
    long_text = " ".join([SENTENCE] * 3)
    assert ner(long_text, stride=4, aggregation_strategy="first") == stock(long_text, stride=4,
                                                                           aggregation_strategy="first")
    with pytest.raises(ValueError, match="split_sentences"):
        ner(short, split_sentences=True)
    ner.save_pretrained(tmp_path / "tagger")
    assert "custom_pipelines" not in json.loads((tmp_path / "tagger" / "config.json").read_text())
    assert not list((tmp_path / "tagger").glob("*.py"))

    classifier = BertForSequenceClassification(encoder_config("bert", layers=1)).eval()
    classifier.config.num_labels, classifier.config.problem_type = 2, "multi_label_classification"
    classify = pipeline("text-classification", model=classifier, tokenizer=tiny_tokenizer)
    stock_classify = TextClassificationPipeline(model=classifier, tokenizer=tiny_tokenizer)
    assert classify(TEXTS[0]) == stock_classify(TEXTS[0])  # the stock top-1 dict, not a thresholded list
    assert classify(TEXTS, top_k=None) == stock_classify(TEXTS, top_k=None)
    assert classify("") == stock_classify("")  # stock models are not refused empty text either
