"""The CRF of HiddenLayerTokenClassifier: BIO-valid Viterbi, exact NLL, -100 positions skipped, remote-code reload."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import NER_LABELS, encoder_config, random_ids

from medheads import HiddenLayerTokenClassifier, HiddenLayerTokenClassifierConfig
from medheads.models.crf import LinearChainCRF, bio_constraints

LABELS = [NER_LABELS[i] for i in range(len(NER_LABELS))]  # O, B-protein, I-protein, B-cell_type, I-cell_type


def random_crf(seed=0):
    torch.manual_seed(seed)
    crf = LinearChainCRF(LABELS)
    with torch.no_grad():
        for parameter in crf.parameters():
            parameter.normal_()
    return crf


def valid_bio(tags):
    previous = "O"
    for tag in (LABELS[t] for t in tags):
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return False
        previous = tag
    return True


def brute_force(crf, emissions):
    """Every valid path's score, by enumeration (one sequence)."""
    start, transitions, end = crf.constrained("cpu")
    scores = {}
    for path in itertools.product(range(crf.num_tags), repeat=emissions.shape[0]):
        if not valid_bio(path):
            continue
        score = start[path[0]] + end[path[-1]] + sum(emissions[t, k] for t, k in enumerate(path))
        score = score + sum(transitions[a, b] for a, b in zip(path, path[1:]))
        scores[path] = score
    return scores


def test_constraints_table():
    allowed, allowed_start, repair = bio_constraints(LABELS)
    assert not allowed_start[2] and not allowed_start[4] and allowed_start[1]
    assert allowed[1][2] and allowed[2][2] and not allowed[0][2] and not allowed[3][2] and not allowed[4][2]
    assert repair[2] == 1 and repair[4] == 3


def test_viterbi_never_decodes_invalid_bio_even_when_emissions_prefer_it():
    crf = random_crf()
    # emissions that shout "O I-protein I-cell_type": every position's argmax is an invalid continuation
    emissions = torch.full((1, 3, 5), -5.0)
    emissions[0, 0, 2] = emissions[0, 1, 2] = emissions[0, 2, 4] = 5.0
    assert not valid_bio(emissions[0].argmax(-1).tolist())
    path = crf.decode(emissions)[0].tolist()
    assert valid_bio(path), path
    for seed in range(20):  # random emissions and transitions
        crf = random_crf(seed)
        emissions = torch.randn(3, 7, 5) * 4
        for row in crf.decode(emissions).tolist():
            assert valid_bio(row), row
            assert crf.is_valid(row)


def test_viterbi_is_the_best_valid_path_and_nll_matches_enumeration():
    crf = random_crf(1)
    emissions = torch.randn(4, 5)
    scores = brute_force(crf, emissions)
    best = max(scores, key=lambda p: scores[p])
    assert tuple(crf.decode(emissions.unsqueeze(0))[0].tolist()) == best
    log_z = torch.logsumexp(torch.stack(list(scores.values())), 0)
    gold = (1, 2, 0, 3)
    nll = crf.neg_log_likelihood(emissions.unsqueeze(0), torch.tensor([gold]))
    torch.testing.assert_close(nll, (log_z - scores[gold]) / 4)
    # marginals: sum of path probabilities through each (position, tag)
    marginals = crf.marginals(emissions.unsqueeze(0), torch.ones(1, 4, dtype=torch.bool))[0].exp()
    expected = torch.zeros(4, 5)
    for path, score in scores.items():
        for t, k in enumerate(path):
            expected[t, k] += (score - log_z).exp()
    torch.testing.assert_close(marginals, expected, rtol=1e-4, atol=1e-5)


def test_minus_100_positions_are_skipped():
    crf = random_crf(2)
    emissions = torch.randn(4, 5)
    labels = torch.tensor([[1, 2, 0, 3]])
    reference = crf.neg_log_likelihood(emissions.unsqueeze(0), labels)
    # the same chain spread over 7 positions with -100 in between: same loss, whatever the skipped emissions hold
    spread = torch.randn(1, 7, 5) * 10
    spread[0, [1, 2, 4, 6]] = emissions
    spread_labels = torch.tensor([[-100, 1, 2, -100, 0, -100, 3]])
    torch.testing.assert_close(crf.neg_log_likelihood(spread, spread_labels), reference)
    spread[0, [0, 3, 5]] = torch.randn(3, 5) * 10
    torch.testing.assert_close(crf.neg_log_likelihood(spread, spread_labels), reference)
    # decoding over the labelled positions equals decoding the packed chain; -100 elsewhere
    decoded = crf.decode(spread, spread_labels != -100)[0]
    assert decoded[[0, 3, 5]].tolist() == [-100] * 3
    assert decoded[[1, 2, 4, 6]].tolist() == crf.decode(emissions.unsqueeze(0))[0].tolist()
    # batches of different lengths, one without any labelled position
    batch = torch.randn(3, 7, 5)
    batch[0] = spread[0]
    batch_labels = torch.full((3, 7), -100)
    batch_labels[0] = spread_labels[0]
    batch_labels[1, :2] = torch.tensor([0, 1])
    single = crf.neg_log_likelihood(batch[1:2, :2], batch_labels[1:2, :2])
    both = crf.neg_log_likelihood(batch, batch_labels)
    torch.testing.assert_close(both, (reference * 4 + single * 2) / 6)


def test_gold_paths_breaking_bio_are_read_as_iob2():
    crf = random_crf(3)
    emissions = torch.randn(1, 3, 5)
    loss = crf.neg_log_likelihood(emissions, torch.tensor([[0, 2, 2]]))  # O I-protein I-protein (IOB1)
    assert loss < 100  # not the -10000 of a forbidden move
    torch.testing.assert_close(loss, crf.neg_log_likelihood(emissions, torch.tensor([[0, 1, 2]])))


def crf_model(**kwargs):
    config = HiddenLayerTokenClassifierConfig(encoder_config=encoder_config("bert"), id2label=NER_LABELS,
                                              use_crf=True, **kwargs)
    torch.manual_seed(0)
    model = HiddenLayerTokenClassifier(config).eval()
    with torch.no_grad():
        model.crf.transitions.normal_()
        model.classifier.weight.normal_(std=2.0)
    return model


def test_model_logits_argmax_is_the_viterbi_path_and_loss_trains():
    model = crf_model()
    ids, mask = random_ids(batch=3, length=12)
    labels = torch.randint(0, 5, ids.shape)
    labels[:, 0] = -100
    labels[:, 3] = -100
    labels[mask == 0] = -100
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    emissions = model.forward_head(model.forward_features(input_ids=ids, attention_mask=mask))
    path = model.decode(emissions, labels != -100)
    chosen = labels != -100
    assert torch.equal(out.logits.argmax(-1)[chosen], path[chosen])
    # without labels, over every attended position by default, and over a given word-start mask
    plain = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
    assert torch.equal(plain[mask.bool()], model.decode(emissions, attention_mask=mask)[mask.bool()])
    with_mask = model(input_ids=ids, attention_mask=mask, decode_mask=chosen).logits.argmax(-1)
    assert torch.equal(with_mask[chosen], path[chosen])
    for row, row_mask in zip(with_mask, mask):  # the whole token sequence, sub-tokens included, is valid BIO
        assert valid_bio(row[row_mask.bool()].tolist())
    # the loss is the CRF's and it is differentiable into the transitions
    assert out.loss > 0
    out.loss.backward()
    assert model.crf.transitions.grad is not None and model.crf.transitions.grad.abs().sum() > 0


def test_crf_model_saves_and_reloads(tmp_path):
    model = crf_model()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["use_crf"] is True
    assert (tmp_path / "crf.py").is_file()
    reloaded = HiddenLayerTokenClassifier.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(reloaded.crf.transitions, model.crf.transitions)
    ids, mask = random_ids()
    torch.testing.assert_close(reloaded(input_ids=ids, attention_mask=mask).logits,
                               model(input_ids=ids, attention_mask=mask).logits)


def test_crf_model_loads_as_remote_code_without_medheads(tmp_path, tiny_tokenizer):
    model = crf_model()
    model.save_pretrained(tmp_path / "model")
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    ids, mask = random_ids()
    expected = model(input_ids=ids, attention_mask=mask).logits
    torch.save({"ids": ids, "mask": mask}, tmp_path / "inputs.pt")
    script = f"""
import sys
sys.modules['medheads'] = None  # importing medheads fails: only the checkpoint's own code can be used
import torch
from transformers import AutoModelForTokenClassification, pipeline
model = AutoModelForTokenClassification.from_pretrained({str(tmp_path / 'model')!r}, trust_remote_code=True).eval()
assert type(model).__module__.startswith('transformers_modules'), type(model).__module__
inputs = torch.load({str(tmp_path / 'inputs.pt')!r})
with torch.no_grad():
    logits = model(input_ids=inputs['ids'], attention_mask=inputs['mask']).logits
torch.save(logits, {str(tmp_path / 'logits.pt')!r})
ner = pipeline('ner', model={str(tmp_path / 'model')!r}, trust_remote_code=True)
print(len(ner('the protein il-2 gene expression in t cells')))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), expected)


def test_ner_pipeline_decodes_the_chain_over_the_text_tokens(tiny_tokenizer):
    """The shipped pipeline runs a CRF model's Viterbi over the text's tokens (no [CLS]/[SEP]), as training does:
    its per-token tags equal `decode` over exactly those positions, and every grouped entity is a valid BIO run."""
    from medheads.models.pipeline_token_classification import MedheadsTokenClassificationPipeline

    model = crf_model()
    ner = MedheadsTokenClassificationPipeline(model=model, tokenizer=tiny_tokenizer, aggregation_strategy="none")
    text = "the protein il-2 gene expression in t cells"
    tokens = ner(text)
    encoded = tiny_tokenizer(text, return_tensors="pt", return_special_tokens_mask=True)
    text_tokens = encoded["special_tokens_mask"] == 0
    with torch.no_grad():
        emissions = model.forward_head(model.forward_features(input_ids=encoded["input_ids"],
                                                              attention_mask=encoded["attention_mask"]))
    path = model.decode(emissions, text_tokens)[text_tokens].tolist()
    expected = [NER_LABELS[i] for i in path]
    assert valid_bio(path)
    assert [t["entity"] for t in tokens] == [tag for tag in expected if tag != "O"]


def test_train_ner_with_crf(tmp_path):
    """`--use_crf` end to end: the saved model has the CRF, the report names the decoding, every predicted sentence
    is valid BIO."""
    from test_train_ner import tiny_word_tokenizer
    from transformers import AutoModel

    from medheads.training.arguments import parse_args
    from medheads.training.ner import ARGUMENT_CLASSES, run

    sample = Path(__file__).resolve().parents[1] / "scripts" / "sample_data"
    encoder = tmp_path / "enc"
    torch.manual_seed(0)
    AutoModel.from_config(encoder_config("bert", layers=2)).save_pretrained(encoder)
    tiny_word_tokenizer(encoder).save_pretrained(encoder)
    out = tmp_path / "run"
    metrics = run(*parse_args(ARGUMENT_CLASSES, ["--model_name_or_path", str(encoder), "--train_file", str(sample / "ner_train.tsv"),
                    "--validation_file", str(sample / "ner_validation.tsv"), "--max_train_samples", "128",
                    "--max_eval_samples", "32", "--output_dir", str(out), "--do_train", "--do_eval",
                    "--num_train_epochs", "2", "--learning_rate", "5e-3", "--per_device_train_batch_size", "16",
                    "--disable_tqdm", "true", "--use_cpu", "true", "--seed", "3", "--use_crf"]))
    assert json.loads((out / "config.json").read_text())["use_crf"] is True
    assert "decoding=CRF (Viterbi)" in (out / "classification_report.txt").read_text()
    assert "eval_f1" in metrics
    model = HiddenLayerTokenClassifier.from_pretrained(out)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    crf = LinearChainCRF(labels)
    blocks = (out / "validation_predictions.tsv").read_text().strip().split("\n\n")
    for block in blocks:
        predicted = [line.split("\t")[2] for line in block.split("\n")]
        assert crf.is_valid([labels.index(tag) for tag in predicted]), predicted
    # the bootstrap CI's point value is the run's own span F1
    from medheads.training.cli import main as medheads

    assert medheads(["bootstrap-ci", str(out), "--n_resamples", "100"]) == 0
    intervals = json.loads((out / "confidence_intervals.json").read_text())
    assert intervals["validation_span_f1"]["value"] == pytest.approx(metrics["eval_f1"])
    # the model card says the decoding is CRF
    from medheads.hub.publishing import build_model_card

    card = str(build_model_card(out, "org/tiny-crf", revision="0" * 40))
    assert "**Decoding:** **CRF (Viterbi)**" in card and "decode_mask" in card
