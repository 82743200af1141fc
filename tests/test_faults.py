"""Faults and bad input (issue 10): nothing lost, nothing silently wrong.

Each test reproduces one fault as a careless operator or an interrupted machine would cause it, and checks that it now
ends in one clear message or in the right result: a half-written checkpoint, a finished run re-run, a damaged or
concurrently written feature cache, a model folder that could not be loaded after publishing, links and broken files
in a model folder, thresholds of the wrong shape, a text model built on an image backbone, lengths above the encoder's.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from tiny import CUI_LABELS, IMAGE_LABELS, NER_LABELS, backbone_config, encoder_config, make_image_processor
from transformers import AutoModel, DataCollatorWithPadding, ViTModel

from medheads import (
    FrozenEncoderMultiLabel, FrozenEncoderMultiLabelConfig, HiddenLayerTokenClassifier,
    HiddenLayerTokenClassifierConfig, ViTPatchClassifier,
)
from medheads.hub.publishing import PublishError, safetensors_problem, stage_model
from medheads.training import features as feature_module
from medheads.training.common import (
    checkpoint_problem, clear_run_outputs, last_complete_checkpoint, prepare_output_dir, resume_checkpoint,
)
from medheads.training.features import cached_features

TEXTS = ["chest x ray shows mass", "ct of the abdomen and pelvis", "mri brain sagittal view",
         "breast cancer history", "left lower lung lesion shows fracture", "the heart is normal"] * 2

def text_main(args):
    """What `medheads train-text ARGS` does, returning the metrics (input errors raise instead of exiting 2)."""
    from medheads.training.arguments import parse_args
    from medheads.training.text_classification import ARGUMENT_CLASSES, run

    return run(*parse_args(ARGUMENT_CLASSES, [str(a) for a in args]))


def ner_main(args):
    from medheads.training.arguments import parse_args
    from medheads.training.ner import ARGUMENT_CLASSES, run

    return run(*parse_args(ARGUMENT_CLASSES, [str(a) for a in args]))


def image_main(args):
    from medheads.command_line import explicit_keys
    from medheads.training.arguments import parse_args
    from medheads.training.image_classification import ARGUMENT_CLASSES, run

    args = [str(a) for a in args]
    return run(*parse_args(ARGUMENT_CLASSES, args), explicit=explicit_keys(args))



def text_model(**kwargs) -> FrozenEncoderMultiLabel:
    torch.manual_seed(0)
    config = FrozenEncoderMultiLabelConfig(encoder_config=encoder_config("bert"), head_hidden_sizes=[8],
                                           id2label=CUI_LABELS, **kwargs)
    return FrozenEncoderMultiLabel(config).eval()


# ------------------------------------------------------------------------------------------------ checkpoints (1)


class Args:
    """The TrainingArguments fields the output-folder helpers read."""

    def __init__(self, output_dir, do_train=True, overwrite_output_dir=False, resume_from_checkpoint=None):
        self.output_dir = str(output_dir)
        self.do_train = do_train
        self.do_eval = True
        self.overwrite_output_dir = overwrite_output_dir
        self.resume_from_checkpoint = resume_from_checkpoint
        self.process_index = 0
        self.max_steps, self.num_train_epochs = -1, 3.0


def fake_checkpoint(folder: Path, complete: bool) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    if complete:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": int(folder.name.split("-")[1])}))
    return folder


def test_resume_skips_a_half_written_checkpoint_and_says_so(tmp_path, caplog):
    good = fake_checkpoint(tmp_path / "checkpoint-4", complete=True)
    broken = fake_checkpoint(tmp_path / "checkpoint-8", complete=False)
    assert checkpoint_problem(good) is None
    assert "trainer_state.json" in checkpoint_problem(broken)
    with caplog.at_level(logging.WARNING, logger="medheads"):
        assert resume_checkpoint(Args(tmp_path)) == str(good)
    assert "checkpoint-8" in caplog.text and "incomplete" in caplog.text
    # set aside (kept, not deleted) so neither checkpoint rotation nor the next resume picks it up
    assert not broken.exists() and (tmp_path / "incomplete-checkpoint-8" / "model.safetensors").is_file()
    assert last_complete_checkpoint(tmp_path) == str(good)


def test_a_truncated_trainer_state_is_incomplete_too(tmp_path):
    broken = fake_checkpoint(tmp_path / "checkpoint-3", complete=True)
    (broken / "trainer_state.json").write_text('{"global_step": 3, "log_hist')
    assert "unreadable" in checkpoint_problem(broken)
    assert last_complete_checkpoint(tmp_path) is None


def test_an_explicit_incomplete_checkpoint_is_a_clear_error(tmp_path):
    broken = fake_checkpoint(tmp_path / "checkpoint-8", complete=False)
    with pytest.raises(ValueError, match="resume_from_checkpoint .*checkpoint-8.*trainer_state.json"):
        prepare_output_dir(Args(tmp_path / "out", resume_from_checkpoint=str(broken)), ValueError)


# ------------------------------------------------------------------------------------------------ output folder (5)


def finished_run(folder: Path) -> Path:
    folder.mkdir()
    for name in ("all_results.json", "train_results.json", "metrics.json", "predict_results.json", "eval_results.json"):
        (folder / name).write_text('{"train_loss": 0.4}')
    for name in ("predict_results.txt", "confusion_matrix_test.png", "test_predictions.tsv", "test_errors.txt",
                 "classification_report.txt", "config.json", "model.safetensors", "modeling_x.py", "vocab.txt"):
        (folder / name).write_text("old run")
    fake_checkpoint(folder / "checkpoint-30", complete=True)
    (folder / "notes_of_the_user.md").write_text("mine")
    return folder


def test_a_finished_run_is_not_overwritten_by_rerunning_the_same_command(tmp_path):
    out = finished_run(tmp_path / "out")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match="already holds a finished run.*--overwrite_output_dir"):
        prepare_output_dir(Args(out), ValueError)
    with pytest.raises(ValueError, match="finished run .*another --output_dir"):
        prepare_output_dir(Args(out, do_train=False), ValueError)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_overwrite_output_dir_leaves_nothing_of_the_previous_run(tmp_path):
    out = finished_run(tmp_path / "out")
    prepare_output_dir(Args(out, overwrite_output_dir=True), ValueError)
    assert sorted(p.name for p in out.iterdir()) == ["notes_of_the_user.md"]  # the user's own file stays


def test_overwrite_never_clears_the_model_being_loaded(tmp_path):
    out = finished_run(tmp_path / "out")
    with pytest.raises(ValueError, match="would delete"):
        prepare_output_dir(Args(out, do_train=False, overwrite_output_dir=True), ValueError, model_path=out)
    assert (out / "model.safetensors").exists()


def test_clear_run_outputs_ignores_unknown_files(tmp_path):
    (tmp_path / "data.csv").write_text("x")
    assert clear_run_outputs(tmp_path) == [] and (tmp_path / "data.csv").exists()


# ------------------------------------------------------------------------------------------------ feature cache (11)


def cache_inputs(tokenizer):
    encoded = tokenizer(TEXTS)
    return datasets.Dataset.from_dict({"input_ids": encoded["input_ids"],
                                       "attention_mask": encoded["attention_mask"],
                                       "labels": list(range(len(TEXTS)))})


def test_a_damaged_cache_entry_is_recomputed_with_a_warning(tiny_tokenizer, tmp_path, caplog):
    model, dataset, collator = text_model(), cache_inputs(tiny_tokenizer), DataCollatorWithPadding(tiny_tokenizer)
    first = cached_features(model, dataset, collator, feature_name="pooled_features", cache_dir=tmp_path)
    expected = np.asarray(first.with_format("numpy")["pooled_features"]).copy()
    (entry,) = [p for p in tmp_path.iterdir()]
    (arrow,) = list(entry.glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])  # a copy cut short / a full disk
    with caplog.at_level(logging.WARNING, logger="medheads"):
        again = cached_features(model, dataset, collator, feature_name="pooled_features", cache_dir=tmp_path)
    assert "damaged" in caplog.text and entry.name in caplog.text
    np.testing.assert_allclose(np.asarray(again.with_format("numpy")["pooled_features"]), expected, rtol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == [entry.name]  # repaired in place, nothing else left
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="medheads"):
        cached_features(model, dataset, collator, feature_name="pooled_features", cache_dir=tmp_path)
    assert "Loading cached features" in caplog.text and "is damaged" not in caplog.text


def test_a_cache_entry_with_the_wrong_row_count_is_recomputed(tiny_tokenizer, tmp_path, caplog):
    model, dataset, collator = text_model(), cache_inputs(tiny_tokenizer), DataCollatorWithPadding(tiny_tokenizer)
    cached_features(model, dataset, collator, feature_name="pooled_features", cache_dir=tmp_path)
    (entry,) = list(tmp_path.iterdir())
    shutil.rmtree(entry)
    datasets.Dataset.from_dict({"pooled_features": [[0.0] * 32]}).save_to_disk(str(entry))  # someone else's entry
    with caplog.at_level(logging.WARNING, logger="medheads"):
        again = cached_features(model, dataset, collator, feature_name="pooled_features", cache_dir=tmp_path)
    assert "damaged" in caplog.text and len(again) == len(TEXTS)


def test_concurrent_writers_leave_one_complete_entry_and_no_temporary_copy(tmp_path):
    table = datasets.Dataset.from_dict({"pooled_features": np.ones((50, 4), dtype=np.float32).tolist()})
    folder = tmp_path / "pooled_features-abc"
    stale = tmp_path / "pooled_features-abc.tmp999999999"  # left by a process killed mid-write (no such PID)
    stale.mkdir()
    barrier = threading.Barrier(4)
    errors = []

    def write():
        try:
            barrier.wait()
            feature_module._save_entry(table, folder)
        except Exception as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]
    assert len(datasets.load_from_disk(str(folder))) == 50


# ------------------------------------------------------------------------------------------------ models (8, 10, 13)


def test_thresholds_of_the_wrong_length_or_type_fail_on_assignment_naming_them():
    model = text_model()
    for bad in ([0.2, 0.3], "0.3", [0.1, 0.2, "x", 0.3], True, {"a": 0.1}):
        with pytest.raises(ValueError, match="`thresholds`"):
            model.config.thresholds = bad
    assert model.config.thresholds is None  # the failed assignment left the config as it was
    model.config.thresholds = np.array([0.1, 0.2, 0.3, 0.4])  # arrays are fine, and stored JSON-able
    assert model.config.thresholds == [0.1, 0.2, 0.3, 0.4]
    json.loads(model.config.to_json_string())


def test_thresholds_changed_behind_the_configs_back_fail_at_use_naming_them():
    model = text_model()
    model.config.__dict__["thresholds"] = [0.5]  # bypasses __setattr__ (e.g. an old pickled config)
    with pytest.raises(ValueError, match="`thresholds` has 1 values but the model has 4 labels"):
        model.predict_labels(logits=torch.zeros(2, 4))


def test_a_text_model_refuses_an_image_backbone_at_build_time(tmp_path):
    torch.manual_seed(0)
    ViTModel(backbone_config("vit")).save_pretrained(tmp_path / "vit")
    AutoModel.from_config(encoder_config("bert")).save_pretrained(tmp_path / "bert")
    for build in (lambda: FrozenEncoderMultiLabel.from_encoder(tmp_path / "vit", id2label=CUI_LABELS),
                  lambda: HiddenLayerTokenClassifier.from_encoder(tmp_path / "vit", id2label=NER_LABELS)):
        with pytest.raises(ValueError, match="image backbone, not a text encoder"):
            build()
    with pytest.raises(ValueError, match="not a ViT-family image backbone"):
        ViTPatchClassifier.from_backbone(tmp_path / "bert", id2label=IMAGE_LABELS)
    for config_class in (FrozenEncoderMultiLabelConfig, HiddenLayerTokenClassifierConfig):  # the config API too
        with pytest.raises(ValueError, match="needs a text encoder"):
            config_class(encoder_config=backbone_config("vit"), id2label=CUI_LABELS)


def test_a_chunk_length_above_the_encoders_positions_is_refused_when_built():
    with pytest.raises(ValueError, match="max_chunk_length` 1024 is more than the encoder takes .*128"):
        text_model(max_chunk_length=1024)
    # RoBERTa-style position ids start after the padding index: 130 positions hold 128 tokens
    config = FrozenEncoderMultiLabelConfig(encoder_config=encoder_config("roberta"), id2label=CUI_LABELS)
    assert config.chunk_length == 128
    with pytest.raises(ValueError, match="at most 128"):
        FrozenEncoderMultiLabelConfig(encoder_config=encoder_config("roberta"), id2label=CUI_LABELS,
                                      max_chunk_length=130)


def test_long_texts_on_a_roberta_encoder_run_with_the_default_window():
    torch.manual_seed(0)
    model = FrozenEncoderMultiLabel(FrozenEncoderMultiLabelConfig(encoder_config=encoder_config("roberta"),
                                                                  id2label=CUI_LABELS, head_hidden_sizes=[8])).eval()
    ids = torch.randint(5, 60, (1, 300))
    assert model(input_ids=ids).logits.shape == (1, 4)


def test_a_truncated_weights_file_names_the_file(tmp_path):
    text_model().save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(OSError, match=r"model\.safetensors cannot be read: the file is truncated"):
        FrozenEncoderMultiLabel.from_pretrained(tmp_path)
    assert "truncated" in safetensors_problem(weights)


# ------------------------------------------------------------------------------------------------ publishing (4, 6, 13)


@pytest.fixture
def text_folder(tmp_path, tiny_tokenizer):
    folder = tmp_path / "model"
    text_model().save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


def test_publishing_proves_the_staged_folder_loads_without_medheads(text_folder, tmp_path):
    # (a good folder passing the same check: every stage_model / publish call in test_publish.py)
    config = json.loads((text_folder / "config.json").read_text())
    config["feature_layer"] = 99  # out of range for a 4-layer encoder: the config class refuses it on load
    (text_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(PublishError, match=r"step: config.json.*feature_layer 99 is out of range"):
        stage_model(text_folder, "org/model", staging_dir=tmp_path / "staged2")
    assert not (tmp_path / "staged2").exists()  # no half-staged folder blocks a re-run


def test_publishing_refuses_a_truncated_weights_file(text_folder, tmp_path):
    weights = text_folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(PublishError, match="model.safetensors: the file is truncated"):
        stage_model(text_folder, "org/model", staging_dir=tmp_path / "staged", verify=False)


def test_publishing_catches_a_model_that_fails_its_forward_pass(text_folder, tmp_path):
    config = json.loads((text_folder / "config.json").read_text())
    config["encoder_config"]["max_position_embeddings"] = 4  # loads, but no real text fits: fails in the forward
    config["max_chunk_length"] = None
    (text_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(PublishError, match="step: (weights|forward pass)"):
        stage_model(text_folder, "org/model", staging_dir=tmp_path / "staged")
    assert not (tmp_path / "staged").exists()


def test_a_non_json_tokenizer_file_is_a_clear_error_and_a_rerun_works(text_folder, tmp_path, tiny_tokenizer):
    (text_folder / "tokenizer_config.json").write_text("do_lower_case: true\n")  # YAML, not JSON
    staging = tmp_path / "staged"
    with pytest.raises(PublishError, match="tokenizer_config.json is not valid JSON.*tokenizer.save_pretrained"):
        stage_model(text_folder, "org/model", staging_dir=staging)
    assert not staging.exists() or not any(staging.iterdir())
    tiny_tokenizer.save_pretrained(text_folder)
    assert "tokenizer_config.json" in stage_model(text_folder, "org/model", staging_dir=staging, verify=False).files


def test_a_failure_while_staging_leaves_no_half_staged_folder(text_folder, tmp_path, monkeypatch):
    from medheads.hub import publishing

    def broken_copy(src, dst, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(publishing.shutil, "copy2", broken_copy)
    with pytest.raises(OSError, match="No space left"):
        stage_model(text_folder, "org/model", staging_dir=tmp_path / "staged", verify=False)
    assert not (tmp_path / "staged").exists()


def test_a_linked_file_outside_the_model_folder_is_never_staged(text_folder, tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"api_key": "hunter2"}))
    (text_folder / "all_results.json").symlink_to(secret)
    with pytest.raises(PublishError, match="all_results.json is a link to .*outside the model folder"):
        stage_model(text_folder, "org/model", staging_dir=tmp_path / "staged", verify=False)
    assert not (tmp_path / "staged").exists()


def test_a_link_inside_the_model_folder_is_staged_as_a_regular_file(text_folder, tmp_path):
    (text_folder / "run").mkdir()
    (text_folder / "run" / "metrics.json").write_text(json.dumps({"eval_f1": 0.5}))
    (text_folder / "metrics.json").symlink_to(text_folder / "run" / "metrics.json")
    staged = stage_model(text_folder, "org/model", staging_dir=tmp_path / "staged", verify=False)
    copied = staged.folder / "metrics.json"
    assert copied.is_file() and not copied.is_symlink()


def test_a_linked_plot_outside_the_model_folder_is_not_staged(tmp_path, tiny_tokenizer):
    folder = tmp_path / "model"
    model = text_model()
    model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(b"\x89PNG\r\n\x1a\nnot yours")
    (folder / "training_curves.png").symlink_to(outside)
    staged = stage_model(folder, "org/model", staging_dir=tmp_path / "staged", verify=False)
    assert "training_curves.png" not in staged.files


def test_image_folders_are_verified_too(tmp_path):
    torch.manual_seed(0)
    from medheads import ViTPatchClassifierConfig

    folder = tmp_path / "image"
    ViTPatchClassifier(ViTPatchClassifierConfig(backbone_config=backbone_config("vit"), head="patch",
                                                patch_projection_size=8, id2label=IMAGE_LABELS)).save_pretrained(folder)
    make_image_processor(32).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["head"] = "attention"  # not a head the class knows
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(PublishError, match="Unknown head 'attention'"):
        stage_model(folder, "org/xray", staging_dir=tmp_path / "staged2")


def test_the_load_check_runs_without_medheads_on_the_import_path(text_folder, tmp_path, monkeypatch):
    """If the check could import medheads, a folder whose code needs medheads would pass: give it such code."""
    code = text_folder / "modeling_frozen_encoder_multilabel.py"
    text = code.read_text()
    code.write_text(text.replace("from .configuration_frozen_encoder_multilabel import",
                                 "import medheads  # noqa\nfrom .configuration_frozen_encoder_multilabel import", 1))
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    from medheads.hub import publishing

    with pytest.raises(PublishError, match="step: weights.*medheads"):
        publishing.verify_staged(text_folder)
    assert os.environ["PYTHONPATH"]


# ------------------------------------------------------------------------------------------------ training runs (1, 3, 5, 9, 10, 12)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDHEADS_DATA_DIR", REPO.parent / "shared" / "data"))
MTS = DATA / "mtsamples" / "mtsamples_6class.csv"
WORDS = ["chest", "x", "ray", "ct", "mri", "scan", "abdomen", "brain", "lung", "heart", "mass", "lesion", "fracture",
         "pain", "normal", "left", "right", "upper", "lower", "view"]
CUIS = ["C0817096", "C0040405", "C1306645", "C0024485"]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    from tiny import save_tiny_encoder

    return save_tiny_encoder(tmp_path_factory.mktemp("tiny_bert"))


def write_rows(path: Path, rows: list[tuple[str, str]], header=("text", "label")) -> Path:
    import csv

    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def captions(n: int, separator: str = ";", seed: int = 0) -> list[tuple[str, str]]:
    """Captions whose words give their CUIs away (label k <-> word k), 1-3 CUIs each."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        labels = sorted(rng.choice(len(CUIS), size=int(rng.integers(1, 4)), replace=False).tolist())
        words = [WORDS[k] for k in labels] + rng.choice(WORDS[4:], size=4).tolist()
        rng.shuffle(words)
        rows.append((" ".join(words), separator.join(CUIS[k] for k in labels)))
    return rows


def text_args(encoder_dir, train, out, cache, *extra):
    return ["--model_name_or_path", str(encoder_dir), "--train_file", str(train), "--output_dir", str(out),
            "--feature_cache_dir", str(cache), "--head_hidden_sizes", "16", "--learning_rate", "5e-3",
            "--per_device_train_batch_size", "8", "--disable_tqdm", "true", "--seed", "3",
            "--dataloader_pin_memory", "false", "--use_cpu", "true", "--do_train", "--do_eval", *extra]


def test_an_interrupted_checkpoint_write_resumes_from_the_last_complete_one(encoder_dir, tmp_path, monkeypatch,
                                                                            caplog):
    """Ctrl-C while checkpoint-N is written (weights and optimizer on disk, trainer_state.json not yet): re-running
    the same command resumes from the checkpoint before it and ends where an uninterrupted run ends."""
    from transformers.trainer_callback import TrainerState

    main = text_main

    train = write_rows(tmp_path / "train.csv", captions(60))
    args = ["--num_train_epochs", "4", "--validation_split_percentage", "20", "--save_total_limit", "5"]
    full = main(text_args(encoder_dir, train, tmp_path / "full", tmp_path / "cache", *args))

    original, writes = TrainerState.save_to_json, []

    def interrupted_save(self, path):
        if "checkpoint-" in str(path):
            writes.append(path)
            if len(writes) == 3:  # the third epoch's checkpoint: everything but its trainer_state.json is written
                raise KeyboardInterrupt
        return original(self, path)

    monkeypatch.setattr(TrainerState, "save_to_json", interrupted_save)
    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        main(text_args(encoder_dir, train, out, tmp_path / "cache", *args))
    monkeypatch.setattr(TrainerState, "save_to_json", original)
    half = Path(writes[-1]).parent
    assert (half / "model.safetensors").is_file() and not (half / "trainer_state.json").exists()

    with caplog.at_level(logging.INFO, logger="medheads"):
        resumed = main(text_args(encoder_dir, train, out, tmp_path / "cache", *args))  # the same command again
    assert f"Skipping the incomplete checkpoint {half}" in caplog.text
    assert f"Resuming from {Path(writes[1]).parent}" in caplog.text
    for key in ("eval_micro_f1", "eval_subset_accuracy", "eval_loss", "eval_macro_roc_auc"):
        assert resumed[key] == pytest.approx(full[key], rel=1e-5), key
    from safetensors.torch import load_file

    a, b = (load_file(folder / "model.safetensors") for folder in (tmp_path / "full", out))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_rerunning_into_a_finished_run_is_refused_and_overwrite_starts_clean(encoder_dir, tmp_path):
    from medheads.errors import InputError
    main = text_main

    train = write_rows(tmp_path / "train.csv", captions(50))
    out = tmp_path / "out"
    common = text_args(encoder_dir, train, out, tmp_path / "cache", "--num_train_epochs", "2",
                       "--test_split_percentage", "20")
    first = main([*common, "--do_predict"])
    assert "predict_micro_f1" in first and (out / "predict_results.txt").is_file()
    before = (out / "all_results.json").read_bytes(), (out / "metrics.json").read_bytes()
    with pytest.raises(InputError, match="already holds a finished run .*--overwrite_output_dir"):
        main([*common, "--do_predict"])
    assert ((out / "all_results.json").read_bytes(), (out / "metrics.json").read_bytes()) == before

    again = main([*common, "--overwrite_output_dir"])  # a fresh run, this time without --do_predict
    assert not any(key.startswith("predict_") for key in again)
    assert not (out / "predict_results.txt").exists()
    written = json.loads((out / "all_results.json").read_text())
    assert not any(key.startswith("predict_") for key in written) and written["train_loss"] > 0
    summary = json.loads((out / "metrics.json").read_text())["metrics"]
    assert not any(key.startswith("predict_") for key in summary)


def test_the_problem_type_is_inferred_from_the_labels(tmp_path, caplog):
    from medheads.training.text_classification import (
        MULTI_LABEL, SINGLE_LABEL, TextDataArguments, check_label_cells, infer_problem_type,
    )

    single = write_rows(tmp_path / "single.csv", [("a", "Surgery"), ("b", "Cardiovascular / Pulmonary")])
    multi = write_rows(tmp_path / "multi.csv", [("a", "C1;C2"), ("b", "C1")])
    assert infer_problem_type(TextDataArguments(train_file=str(single)))[0] == SINGLE_LABEL
    problem, why = infer_problem_type(TextDataArguments(train_file=str(multi)))
    assert problem == MULTI_LABEL and "separated by ';'" in why and "'C1;C2'" in why
    problem, why = infer_problem_type(TextDataArguments(train_file=str(single), label_separator="/"))
    assert problem == MULTI_LABEL and "--label_separator" in why
    check_label_cells(TextDataArguments(train_file=str(single)), SINGLE_LABEL)  # '/' inside a class name is fine


@pytest.mark.parametrize("separator", ["|", ","])
def test_list_cells_under_another_separator_stop_with_the_flag_to_use(encoder_dir, tmp_path, separator):
    from medheads.errors import InputError
    main = text_main

    train = write_rows(tmp_path / "train.csv", captions(60, separator))
    for extra in (["--label_separator", ";"], ["--problem_type", "multi_label_classification"]):
        with pytest.raises(InputError, match=rf"look like lists joined by '\{separator}'.*--label_separator "
                                             rf"'\{separator}'"):
            main(text_args(encoder_dir, train, tmp_path / "out", tmp_path / "cache", *extra))
    # without any flag the cells hold no ';', so the run would be single-label on label combinations: refused too
    with pytest.raises(InputError, match=r"several labels joined by .*single-label.*--problem_type "
                                         r"multi_label_classification"):
        main(text_args(encoder_dir, train, tmp_path / "out", tmp_path / "cache"))
    assert not (tmp_path / "out").exists()


def test_multi_label_cells_in_a_multi_class_run_name_the_problem_type(encoder_dir, tmp_path):
    from medheads.errors import InputError
    main = text_main

    train = write_rows(tmp_path / "train.csv", captions(40, ";"))
    with pytest.raises(InputError, match=r"several labels joined by ';'.*--problem_type multi_label_classification"):
        main(text_args(encoder_dir, train, tmp_path / "out", tmp_path / "cache", "--problem_type",
                       "single_label_classification"))
    with pytest.raises(InputError, match=r"--label_separator ';' splits multi-label cells, but this is a single-label"):
        main(text_args(encoder_dir, train, tmp_path / "out", tmp_path / "cache", "--problem_type",
                       "single_label_classification", "--label_separator", ";"))


def test_a_chunk_length_above_the_encoder_is_an_input_error_before_training(encoder_dir, tmp_path):
    from medheads.errors import InputError
    main = text_main

    train = write_rows(tmp_path / "train.csv", captions(20))
    with pytest.raises(InputError, match="max_chunk_length` 1024 is more than the encoder takes .*at most 128"):
        main(text_args(encoder_dir, train, tmp_path / "out", tmp_path / "cache", "--max_chunk_length", "1024"))
    assert not (tmp_path / "cache").exists()  # stopped before any feature was computed


@pytest.mark.skipif(not MTS.is_file(), reason=f"MTSamples not found under {DATA} (set MEDHEADS_DATA_DIR)")
def test_mtsamples_without_problem_type_trains_single_label_and_reports_accuracy(encoder_dir, tmp_path, caplog):
    import csv

    main = text_main

    with open(MTS, newline="") as handle:  # the real file's columns and labels, 12 + 4 notes of each specialty
        rows = list(csv.DictReader(handle))
    subset, taken = [], {}
    for row in rows:
        key = (row["medical_specialty"], row["split"])
        if row["split"] in ("train", "validation") and taken.get(key, 0) < (12 if row["split"] == "train" else 4):
            taken[key] = taken.get(key, 0) + 1
            subset.append([row["transcription"][:600], row["medical_specialty"], row["split"]])
    train = tmp_path / "mtsamples_subset.csv"
    with open(train, "w", newline="") as handle:
        csv.writer(handle).writerows([["transcription", "medical_specialty", "split"], *subset])
    args = ["--model_name_or_path", str(encoder_dir), "--train_file", str(train), "--split_column_name", "split",
            "--text_column_name", "transcription", "--label_column_name", "medical_specialty",
            "--num_train_epochs", "2", "--output_dir", str(tmp_path / "out"), "--feature_cache_dir",
            str(tmp_path / "cache"), "--head_hidden_sizes", "16", "--disable_tqdm", "true", "--use_cpu", "true",
            "--do_train", "--do_eval"]
    with caplog.at_level(logging.INFO, logger="medheads"):
        results = main(args)
    assert "Problem type: single_label_classification (inferred: every cell of column 'medical_specialty' holds " \
           "one label" in caplog.text
    assert 0 <= results["eval_accuracy"] <= 1 and "eval_micro_f1" not in results
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["problem_type"] == "single_label_classification" and config.get("thresholds") is None
    assert len(config["id2label"]) == 6
    explicit = main([*args, "--output_dir", str(tmp_path / "explicit"), "--problem_type",
                     "single_label_classification"])  # later flags win
    assert explicit["eval_accuracy"] == pytest.approx(results["eval_accuracy"])


def test_ner_validation_without_entities_stops_before_training(encoder_dir, tmp_path):
    from medheads.errors import InputError as NerInputError
    main = ner_main

    train = tmp_path / "train.tsv"
    train.write_text("breast\tB-Disease\ncancer\tI-Disease\n.\tO\n\nthe\tO\npain\tO\n")
    dev = tmp_path / "dev.tsv"
    dev.write_text("the\tO\npain\tO\n\nleft\tO\nlung\tO\n")
    args = ["--model_name_or_path", str(encoder_dir), "--train_file", str(train), "--validation_file", str(dev),
            "--output_dir", str(tmp_path / "out"), "--do_train", "--use_cpu", "true", "--disable_tqdm", "true"]
    with pytest.raises(NerInputError, match=r"dev.tsv: the validation split has no entity .*--eval_strategy no"):
        main(args)
    assert not (tmp_path / "out").exists()


def test_image_validation_with_one_class_stops_before_training(tmp_path):
    from PIL import Image

    from medheads.errors import InputError as ArgumentError
    run = image_main

    root = tmp_path / "images"
    for split, classes in (("train", ("normal", "pneumonia")), ("val", ("normal",))):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(np.full((16, 16), 60 + 120 * c, dtype=np.uint8)).save(root / split / name / f"{i}.png")
    args = ["--train_dir", str(root / "train"), "--validation_dir", str(root / "val"), "--class_names",
            "normal,pneumonia", "--image_size", "16", "--patch_size", "8", "--vit_hidden_size", "16", "--vit_layers",
            "1", "--vit_heads", "2", "--do_train", "--output_dir", str(tmp_path / "out"), "--use_cpu", "true",
            "--disable_tqdm", "true", "--report_to", "none"]
    with pytest.raises(ArgumentError, match=r"holds only class \['normal'\].*--metric_for_best_model accuracy"):
        run(args)
    with pytest.raises(ArgumentError, match=r"--metric_for_best_model 'auc' is not reported .*roc_auc"):
        run([*args, "--metric_for_best_model", "auc"])
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("checkpoint-*"))


def test_a_run_that_stopped_after_its_last_checkpoint_is_not_resumed_with_zero_steps(tmp_path):
    folder = fake_checkpoint(tmp_path / "out" / "checkpoint-8", complete=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 8, "max_steps": 8, "num_train_epochs": 2}))
    args = Args(tmp_path / "out")
    args.max_steps, args.num_train_epochs = -1, 2.0
    with pytest.raises(ValueError, match=r"already finished the training \(step 8 of 8\).*0 steps"):
        prepare_output_dir(args, ValueError)
    args.num_train_epochs = 4.0  # asking for more epochs continues the run
    prepare_output_dir(args, ValueError)


def test_class_names_that_contain_a_separator_character_are_not_taken_for_lists(tmp_path):
    from medheads.training.text_classification import SINGLE_LABEL, TextDataArguments, check_label_cells

    names = ["Neoplasms, malignant", "Neoplasms", "Fracture", "Infection | viral"]
    data = write_rows(tmp_path / "d.csv", [(f"text {i}", names[i % 4]) for i in range(12)])
    check_label_cells(TextDataArguments(train_file=str(data)), SINGLE_LABEL)  # no error
    lists = write_rows(tmp_path / "l.csv", [("a", "A|B"), ("b", "A"), ("c", "B"), ("d", "C")])
    with pytest.raises(Exception, match=r"several labels joined by '\|'"):
        check_label_cells(TextDataArguments(train_file=str(lists)), SINGLE_LABEL)


def test_a_main_metric_the_evaluation_never_reports_is_refused_before_training(encoder_dir, tmp_path):
    from medheads.errors import InputError
    main = text_main

    train = write_rows(tmp_path / "train.csv", captions(20))
    with pytest.raises(InputError, match=r"--metric_for_best_model 'f1' is not reported .*micro_f1"):
        main(text_args(encoder_dir, train, tmp_path / "out", tmp_path / "cache", "--metric_for_best_model", "f1"))
    assert not (tmp_path / "cache").exists()
