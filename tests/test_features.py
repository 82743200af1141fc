"""Invariant 3 (second half): training the head on cached features equals training through the frozen encoder."""

import datasets
import numpy as np
import pytest
import torch
from tiny import IMAGE_LABELS, backbone_config, encoder_config
from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments, default_data_collator

from medheads import FrozenEncoderMultiLabel, FrozenEncoderMultiLabelConfig, ViTPatchClassifier, \
    ViTPatchClassifierConfig
from medheads.training.features import cached_features, compute_features

TEXTS = ["chest x ray shows mass", "ct of the abdomen and pelvis", "mri brain sagittal view",
         "breast cancer history", "left lower lung lesion shows fracture", "the heart is normal",
         "axial ct of the spine", "upper anterior chest pain history with mass lesion in the lung"] * 3


class LossRecorder(TrainerCallback):
    def __init__(self):
        self.losses = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(logs["loss"])


def train(model, dataset, collator, tmp_path, name):
    recorder = LossRecorder()
    args = TrainingArguments(output_dir=str(tmp_path / name), num_train_epochs=3, per_device_train_batch_size=4,
                             learning_rate=5e-3, logging_steps=1, save_strategy="no", report_to="none", seed=7,
                             use_cpu=True, disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator, callbacks=[recorder]).train()
    return recorder.losses


def text_dataset(tokenizer):
    rng = np.random.default_rng(0)
    labels = (rng.random((len(TEXTS), 3)) > 0.5).astype(np.float32)
    encoded = tokenizer(TEXTS)
    return datasets.Dataset.from_dict({**encoded, "labels": labels.tolist()})


def new_text_model():
    torch.manual_seed(3)
    return FrozenEncoderMultiLabel(FrozenEncoderMultiLabelConfig(
        encoder_config=encoder_config(), id2label={0: "a", 1: "b", 2: "c"}, head_hidden_sizes=[16], head_dropout=0.3))


def test_cached_text_features_give_the_same_losses(tiny_tokenizer, tmp_path):
    dataset = text_dataset(tiny_tokenizer)
    collator = DataCollatorWithPadding(tiny_tokenizer)
    direct = train(new_text_model(), dataset, collator, tmp_path, "direct")

    model = new_text_model()
    cached = cached_features(model, dataset, collator, feature_name="pooled_features", cache_dir=tmp_path / "cache")
    assert cached.column_names == ["pooled_features", "labels"]
    assert cached[0]["pooled_features"].shape == (32,)
    fast = train(model, cached, default_data_collator, tmp_path, "cached")
    assert len(direct) == len(fast) == 18
    np.testing.assert_allclose(fast, direct, rtol=1e-4)


def test_cache_is_reused_and_keyed_on_weights(tiny_tokenizer, tmp_path, monkeypatch):
    dataset = text_dataset(tiny_tokenizer)
    collator = DataCollatorWithPadding(tiny_tokenizer)
    model = new_text_model()
    first = cached_features(model, dataset, collator, feature_name="pooled_features", cache_dir=tmp_path)
    calls = []
    monkeypatch.setattr(model, "forward_features", lambda **kw: calls.append(1))
    again = cached_features(model, dataset, collator, feature_name="pooled_features", cache_dir=tmp_path)
    assert not calls and torch.equal(first[:]["pooled_features"], again[:]["pooled_features"])
    monkeypatch.undo()
    with torch.no_grad():
        model.encoder.embeddings.word_embeddings.weight.add_(0.1)
    changed = cached_features(model, dataset, collator, feature_name="pooled_features", cache_dir=tmp_path)
    assert not torch.equal(first[:]["pooled_features"], changed[:]["pooled_features"])
    assert len(list(tmp_path.iterdir())) == 2


def test_length_sorted_batches_keep_dataset_order(tiny_tokenizer):
    dataset = text_dataset(tiny_tokenizer)
    model = new_text_model().eval()
    features = compute_features(model, dataset, DataCollatorWithPadding(tiny_tokenizer), batch_size=5)
    for i in (0, 4, 7, 23):
        row = tiny_tokenizer(TEXTS[i], return_tensors="pt")
        np.testing.assert_allclose(features[i], model.forward_features(**row)[0].numpy(), rtol=1e-5, atol=1e-6)


def test_cached_image_features_give_the_same_losses(tmp_path):
    rng = np.random.default_rng(0)
    dataset = datasets.Dataset.from_dict({"pixel_values": rng.standard_normal((16, 3, 32, 32)).astype(np.float32),
                                          "labels": rng.integers(0, 2, 16)}).with_format("torch")

    def new_model():
        torch.manual_seed(5)
        return ViTPatchClassifier(ViTPatchClassifierConfig(backbone_config=backbone_config("deit"), head="patch",
                                                           patch_projection_size=8, head_dropout=0.2,
                                                           id2label=IMAGE_LABELS))

    direct = train(new_model(), dataset, default_data_collator, tmp_path, "direct")
    model = new_model()
    cached = cached_features(model, dataset, default_data_collator, feature_name="token_features",
                             length_column=None, cache_dir=tmp_path / "cache")
    assert cached[0]["token_features"].shape == (17, 32)
    np.testing.assert_allclose(train(model, cached, default_data_collator, tmp_path, "cached"), direct, rtol=1e-4)


def test_a_new_head_or_label_set_reuses_the_cached_features(tiny_tokenizer, tmp_path):
    dataset = text_dataset(tiny_tokenizer)
    collator = DataCollatorWithPadding(tiny_tokenizer)
    model = new_text_model()
    cached_features(model, dataset, collator, feature_name="pooled_features", cache_dir=tmp_path)
    other_head = FrozenEncoderMultiLabel(FrozenEncoderMultiLabelConfig(
        encoder_config=model.config.encoder_config, id2label={0: "x", 1: "y"}, head_hidden_sizes=[], thresholds=0.3))
    other_head.encoder.load_state_dict(model.encoder.state_dict())
    cached_features(other_head, dataset, collator, feature_name="pooled_features", cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 1
    other_pooling = FrozenEncoderMultiLabel(FrozenEncoderMultiLabelConfig(
        encoder_config=model.config.encoder_config, id2label={0: "x", 1: "y"}, pooling="max"))
    other_pooling.encoder.load_state_dict(model.encoder.state_dict())
    cached_features(other_pooling, dataset, collator, feature_name="pooled_features", cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 2
