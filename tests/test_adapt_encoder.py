"""`medheads adapt-encoder` (MLM on domain text) and `medheads compare-encoders` (same head, plain vs adapted)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoModelForMaskedLM

from medheads import HiddenLayerTokenClassifier
from medheads.training.adapt_encoder import fixed_masks, read_texts
from medheads.training.cli import main as medheads

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "scripts" / "sample_data"
FAST = ["--disable_tqdm", "true", "--use_cpu", "true", "--seed", "3", "--dataloader_pin_memory", "false",
        "--per_device_train_batch_size", "32", "--logging_steps", "5"]
NO_CHECKPOINTS = ["--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false"]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    """A tiny random BERT saved as a bare BertModel (no MLM head), like all-MiniLM-L6-v2."""
    from test_train_ner import save_tiny_word_encoder

    return save_tiny_word_encoder(tmp_path_factory.mktemp("tiny_bert"), layers=2)


@pytest.fixture(scope="module")
def domain_text(tmp_path_factory):
    """Template sentences over the tiny vocabulary: a 'domain' with strong regularities an MLM can learn."""
    rng = random.Random(0)
    organs = ["chest", "abdomen", "pelvis", "brain", "spine", "lung", "heart"]
    modalities = ["ct", "mri", "x ray"]
    lines = [f"{rng.choice(modalities)} scan of the {rng.choice(['left', 'right'])} {rng.choice(organs)} shows "
             f"a {rng.choice(['mass', 'lesion', 'fracture'])} ." for _ in range(400)]
    path = tmp_path_factory.mktemp("domain") / "reports.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_texts_from_every_format(tmp_path):
    assert read_texts(str(SAMPLE / "ner_train.tsv"))[0] == "Stimulation of erythroid cells increased CD28 activity ."
    captions = read_texts(str(SAMPLE / "captions.csv"), text_column="caption")
    assert captions[0] == "Ultrasound of the elbow after treatment." and len(captions) == 600
    (tmp_path / "a.txt").write_text("one\n\n two \n")
    assert read_texts(str(tmp_path / "a.txt")) == ["one", "two"]


def test_fixed_masks_are_reproducible(encoder_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    pieces = [tokenizer("ct scan of the left lung shows a mass")["input_ids"]] * 20
    first, second = fixed_masks(pieces, tokenizer, 0.3, 1), fixed_masks(pieces, tokenizer, 0.3, 1)
    assert first == second and first != fixed_masks(pieces, tokenizer, 0.3, 2)
    masked = sum(label != -100 for example in first for label in example["labels"])
    assert 0.15 < masked / sum(len(p) - 2 for p in pieces) < 0.45
    for example in first:  # special tokens are never masked
        assert example["labels"][0] == example["labels"][-1] == -100


@pytest.fixture(scope="module")
def adapted(encoder_dir, domain_text, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapt") / "adapted"
    status = medheads(["adapt-encoder", "--model_name_or_path", str(encoder_dir), "--train_file", str(domain_text),
                       "--output_dir", str(out), "--num_train_epochs", "3", "--learning_rate", "3e-3",
                       "--max_seq_length", "32", "--validation_split_percentage", "10", *FAST, *NO_CHECKPOINTS])
    assert status == 0
    return out


def test_adapt_encoder_lowers_held_out_mlm_loss_and_saves_a_usable_encoder(encoder_dir, domain_text, adapted):
    out = adapted
    results = json.loads((out / "adapt_results.json").read_text())
    assert results["held_out_mlm_loss_after"] < results["held_out_mlm_loss_before"] - 0.5, results
    assert "no masked-LM head" in results["new_mlm_head"] and "tied to the word embeddings" in results["new_mlm_head"]
    assert (out / "mlm_loss.png").is_file()
    # the folder is an encoder for every command, and the decoder stays tied to the word embeddings
    mlm = AutoModelForMaskedLM.from_pretrained(out)
    assert mlm.get_output_embeddings().weight.data_ptr() == mlm.get_input_embeddings().weight.data_ptr()
    ner = HiddenLayerTokenClassifier.from_encoder(out, id2label={0: "O", 1: "B-x", 2: "I-x"})
    torch.testing.assert_close(ner.encoder.embeddings.word_embeddings.weight, mlm.get_input_embeddings().weight)
    plain = AutoModel.from_pretrained(encoder_dir)
    assert not torch.equal(ner.encoder.embeddings.word_embeddings.weight, plain.embeddings.word_embeddings.weight)
    # a finished adaptation is not overwritten
    assert medheads(["adapt-encoder", "--model_name_or_path", str(encoder_dir), "--train_file", str(domain_text),
                     "--output_dir", str(out)]) == 2


def test_adapt_encoder_input_errors(encoder_dir, tmp_path, capsys):
    assert medheads(["adapt-encoder", "--model_name_or_path", str(encoder_dir), "--train_file",
                     str(SAMPLE / "captions.csv"), "--text_column", "text", "--output_dir", str(tmp_path / "x")]) == 2
    assert "no column 'text'" in capsys.readouterr().err
    assert medheads(["adapt-encoder", "--model_name_or_path", str(tmp_path), "--train_file",
                     str(SAMPLE / "captions.csv"), "--text_column", "caption", "--output_dir", str(tmp_path / "y")]) == 2
    assert "not a model" in capsys.readouterr().err


def test_compare_encoders_writes_one_report(encoder_dir, adapted, tmp_path):
    out = tmp_path / "compare"
    status = medheads(["compare-encoders", "--command", "train-ner", "--encoders", f"plain={encoder_dir}",
                       f"adapted={adapted}", "--output_dir", str(out), "--",
                       "--train_file", str(SAMPLE / "ner_train.tsv"), "--validation_file",
                       str(SAMPLE / "ner_validation.tsv"), "--max_train_samples", "32", "--max_eval_samples", "16",
                       "--do_train", "--do_eval", "--num_train_epochs", "1", "--learning_rate", "5e-3", *FAST])
    assert status == 0
    report = (out / "comparison.md").read_text()
    plain = json.loads((out / "plain" / "all_results.json").read_text())
    other = json.loads((out / "adapted" / "all_results.json").read_text())
    row = next(line for line in report.splitlines() if line.startswith("| eval_f1 |"))
    assert row == (f"| eval_f1 | {plain['eval_f1']:.4f} | {other['eval_f1']:.4f} | "
                   f"{other['eval_f1'] - plain['eval_f1']:+.4f} |")
    assert (out / "comparison.png").stat().st_size > 5_000
    assert json.loads((out / "comparison.json").read_text())["encoders"] == {"plain": str(encoder_dir),
                                                                             "adapted": str(adapted)}


def test_comparison_table_puts_headline_metrics_first_and_drops_supports():
    from medheads.training.compare import comparison_table

    results = {name: {"eval_subset_accuracy": acc, "eval_f1_C1": acc - 0.1, "eval_support_C1": 40.0,
                      "eval_threshold_05_support_C1": 40.0, "predict_micro_f1": acc + 0.1, "eval_runtime": 1.0,
                      "epoch": 20.0, "train_loss": 0.3}
               for name, acc in (("plain", 0.70), ("adapted", 0.60))}
    keys, table = comparison_table(results)
    assert keys == ["eval_subset_accuracy", "predict_micro_f1", "eval_f1_C1"]
    assert "support" not in table and "runtime" not in table
    assert "| eval_subset_accuracy | 0.7000 | 0.6000 | -0.1000 |" in table.splitlines()
