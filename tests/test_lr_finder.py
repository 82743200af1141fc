"""`medheads find-lr` and `--learning_rate auto`: the suggestion on synthetic curves, and runs on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medheads.command_line import auto_learning_rate_flags
from medheads.training.cli import main as medheads
from medheads.training.lr_finder import centered_smooth as smooth, suggest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "scripts" / "sample_data"
FAST = ["--per_device_train_batch_size", "8", "--disable_tqdm", "true", "--use_cpu", "true", "--seed", "3",
        "--dataloader_pin_memory", "false"]


def synthetic_curve(seed=0, fall=(1e-4, 1e-2)):
    """Flat loss, a fall between fall[0] and fall[1] (log-linear), then divergence; with batch noise."""
    rng = np.random.default_rng(seed)
    lrs = np.logspace(-7, 0, 100)
    x = np.log10(lrs)
    a, b = np.log10(fall[0]), np.log10(fall[1])
    loss = np.where(x < a, 2.3, np.where(x < b, 2.3 - 1.8 * (x - a) / (b - a), 0.5 + 3.0 * (x - b) ** 2))
    return lrs, loss + rng.normal(0, 0.05, len(lrs))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("fall", [(1e-4, 1e-2), (1e-6, 1e-5), (1e-3, 1e-1)])
def test_suggestion_lies_in_the_falling_part(seed, fall):
    lrs, losses = synthetic_curve(seed, fall)
    result = suggest(lrs, smooth(losses))
    assert fall[0] <= result["steepest"] <= fall[1], (fall, result["steepest"])
    assert result["suggested"] == result["steepest"]
    assert result["min_div_10"] == pytest.approx(result["minimum"] / 10)
    assert result["min_div_10"] < result["minimum"]


def test_a_flat_curve_is_not_mistaken_for_a_fall():
    """Guard on the test above: the suggestion follows the fall, so it moves when the fall moves."""
    early = suggest(*(lambda l, y: (l, smooth(y)))(*synthetic_curve(0, (1e-6, 1e-5))))["steepest"]
    late = suggest(*(lambda l, y: (l, smooth(y)))(*synthetic_curve(0, (1e-3, 1e-1))))["steepest"]
    assert late / early > 100


def test_learning_rate_auto_flags():
    assert auto_learning_rate_flags(["--learning_rate", "auto", "--seed", "1"]) == \
        ["--auto_learning_rate", "true", "--seed", "1"]
    assert auto_learning_rate_flags(["--learning_rate=auto"]) == ["--auto_learning_rate", "true"]
    assert auto_learning_rate_flags(["--learning_rate", "1e-3"]) == ["--learning_rate", "1e-3"]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    from test_train_ner import save_tiny_word_encoder

    return save_tiny_word_encoder(tmp_path_factory.mktemp("tiny_bert"), layers=2)


def ner_args(encoder_dir, out):
    return ["--model_name_or_path", str(encoder_dir), "--train_file", str(SAMPLE / "ner_train.tsv"),
            "--validation_file", str(SAMPLE / "ner_validation.tsv"), "--max_train_samples", "96",
            "--max_eval_samples", "16", "--output_dir", str(out), *FAST]


def check_range_test(out: Path, steps: int, falls: bool = True) -> dict:
    result = json.loads((out / "lr_find" / "lr_find.json").read_text())
    lrs = np.asarray(result["learning_rates"])
    assert 5 < len(lrs) <= steps
    ratios = lrs[1:] / lrs[:-1]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-6)  # exponential sweep
    assert lrs[0] == pytest.approx(result["start_lr"])
    assert lrs[0] <= result["suggested"] <= lrs[-1]
    losses = np.asarray(result["smoothed_losses"])
    # the suggested rate is where the smoothed loss falls (fastest): a negative slope against log(lr)
    index = result["steepest_index"]
    if falls:
        assert np.gradient(losses, np.log10(lrs))[index] < 0
        assert losses.min() < losses[0]
    assert (out / "lr_find" / "lr_find.png").stat().st_size > 10_000
    return result


def test_find_lr_ner_writes_curve_and_stops_before_training(encoder_dir, tmp_path, capsys):
    out = tmp_path / "ner"
    status = medheads(["find-lr", "ner", *ner_args(encoder_dir, out), "--lr_find_steps", "40",
                       "--lr_find_start", "1e-5", "--lr_find_end", "10"])
    assert status == 0
    result = check_range_test(out, 40)
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.index("{"):])["suggested_learning_rate"] == result["suggested"]
    assert not (out / "model.safetensors").exists() and not list(out.glob("checkpoint-*"))
    # a diverging sweep stops early
    assert result["steps_run"] <= 40


def test_learning_rate_auto_trains_with_the_suggestion(encoder_dir, tmp_path):
    out = tmp_path / "auto"
    status = medheads(["train-ner", *ner_args(encoder_dir, out), "--do_train", "--num_train_epochs", "1",
                       "--learning_rate", "auto", "--lr_find_steps", "30", "--lr_find_start", "1e-5",
                       "--lr_find_end", "10", "--lr_scheduler_type", "constant", "--logging_steps", "2"])
    assert status == 0
    result = check_range_test(out, 30)
    state = json.loads((out / "trainer_state.json").read_text())
    logged = [log["learning_rate"] for log in state["log_history"] if "learning_rate" in log]
    assert logged and np.allclose(logged, result["suggested"])  # a constant schedule at the suggested rate
    assert (out / "model.safetensors").is_file()


def test_find_lr_text_on_cached_features(tmp_path):
    from tiny import save_tiny_encoder

    encoder = save_tiny_encoder(tmp_path / "enc")
    out = tmp_path / "text"
    status = medheads(["find-lr", "text", "--model_name_or_path", str(encoder), "--train_file",
                       str(SAMPLE / "captions.csv"), "--text_column_name", "caption", "--label_column_name", "cuis_manual",
                       "--label_separator", ";", "--output_dir", str(out), "--feature_cache_dir", str(tmp_path / "c"),
                       "--lr_find_steps", "40", "--lr_find_start", "1e-5", "--lr_find_end", "10", *FAST])
    assert status == 0
    check_range_test(out, 40)


def test_find_lr_unknown_task(capsys):
    assert medheads(["find-lr", "audio"]) == 2
    assert "unknown task 'audio'" in capsys.readouterr().err


def test_find_lr_image_vit_from_scratch(tmp_path):
    out = tmp_path / "image"
    status = medheads(["find-lr", "image", "--train_file", str(SAMPLE / "xray_sample.npz"), "--class_names",
                       "normal,pneumonia", "--image_size", "28", "--patch_size", "7", "--vit_hidden_size", "16",
                       "--vit_layers", "1", "--vit_heads", "2", "--head", "cls", "--output_dir", str(out),
                       "--lr_find_steps", "40", "--lr_find_start", "1e-5", "--lr_find_end", "10", *FAST])
    assert status == 0
    # a ViT from scratch barely moves in 40 batches of 240 images: the curve's shape is not checked here
    result = check_range_test(out, 40, falls=False)
    assert result["steps_run"] < 40  # but it diverges at the high rates and the sweep stops early
