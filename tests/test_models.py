"""Shapes, fast path == slow path, freezing, losses and bad input for the three models."""

import pytest
import torch
from transformers import AutoModel
from tiny import (
    BACKBONE_ARCHS, CUI_LABELS, ENCODER_ARCHS, IMAGE_LABELS, NER_LABELS, backbone_config, encoder_config, random_ids,
)

from medheads import (
    FrozenEncoderMultiLabel, FrozenEncoderMultiLabelConfig, HiddenLayerTokenClassifier,
    HiddenLayerTokenClassifierConfig, ViTPatchClassifier, ViTPatchClassifierConfig,
)


def ner_model(arch="bert", layers=-1, combination="concat", **kwargs):
    config = HiddenLayerTokenClassifierConfig(encoder_config=encoder_config(arch), hidden_layers=layers,
                                              layer_combination=combination, id2label=NER_LABELS, **kwargs)
    return HiddenLayerTokenClassifier(config)


def load_encoder_weights(model, full):
    state = full.state_dict()
    model.encoder.load_state_dict({key: state[key] for key in model.encoder.state_dict()})


# -- HiddenLayerTokenClassifier ------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ENCODER_ARCHS)
@pytest.mark.parametrize("layer", [0, 1, 2, 3, -1, -2])
def test_truncated_encoder_matches_full_hidden_state(arch, layer):
    torch.manual_seed(0)
    full = AutoModel.from_config(encoder_config(arch)).eval()
    ids, mask = random_ids(length=20)
    expected = full(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer]
    model = ner_model(arch, layer).eval()
    load_encoder_weights(model, full)
    torch.testing.assert_close(model.forward_features(input_ids=ids, attention_mask=mask), expected, rtol=0, atol=0)


@pytest.mark.parametrize("arch", ENCODER_ARCHS)
def test_encoder_is_built_only_as_deep_as_read(arch, tmp_path):
    model = ner_model(arch, [1, 2], "mean")
    assert model.encoder.config.num_hidden_layers == 2
    model.save_pretrained(tmp_path)
    from safetensors import safe_open

    with safe_open(tmp_path / "model.safetensors", "pt") as weights:
        names = list(weights.keys())
    layer_ids = {int(part) for name in names for prev, part in zip(name.split("."), name.split(".")[1:])
                 if prev == "layer" or prev == "layers" if part.isdigit()}
    assert layer_ids == {0, 1}, layer_ids


@pytest.mark.parametrize("combination", ["concat", "mean", "scalar_mix"])
def test_layer_combinations(combination):
    torch.manual_seed(0)
    model = ner_model("bert", [-1, -2, -3, -4], combination).eval()
    ids, mask = random_ids()
    features = model.forward_features(input_ids=ids, attention_mask=mask)
    hidden = model.encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    layers = [hidden[k] for k in (4, 3, 2, 1)]
    if combination == "concat":
        assert features.shape[-1] == 4 * 32
        torch.testing.assert_close(features, torch.cat(layers, -1))
    else:  # scalar_mix starts as an equal-weight mean with gamma 1
        torch.testing.assert_close(features, torch.stack(layers).mean(0))
    out = model(input_ids=ids, attention_mask=mask)
    assert out.logits.shape == (2, 9, len(NER_LABELS))
    if combination == "scalar_mix":
        assert {n for n, _ in model.named_parameters() if "scalar_mix" in n} == {"scalar_mix.weights",
                                                                                  "scalar_mix.gamma"}


def test_token_loss_ignores_minus_100():
    torch.manual_seed(0)
    model = ner_model().eval()
    ids, mask = random_ids()
    labels = torch.randint(0, len(NER_LABELS), ids.shape)
    labels[:, 0] = -100
    labels[mask == 0] = -100
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    keep = labels != -100
    expected = torch.nn.functional.cross_entropy(out.logits[keep], labels[keep])
    torch.testing.assert_close(out.loss, expected)


def test_frozen_encoder_trains_head_only_and_gradient_checkpointing():
    model = ner_model(freeze_encoder=True)
    model.train()
    assert not model.encoder.training and model.classifier.weight.requires_grad
    assert not any(p.requires_grad for p in model.encoder.parameters())
    ids, mask = random_ids()
    model(input_ids=ids, attention_mask=mask, labels=torch.zeros_like(ids)).loss.backward()
    assert model.classifier.weight.grad is not None

    tuned = ner_model()
    tuned.activation_checkpointing_enable()
    tuned.train()
    assert tuned.is_activation_checkpointing
    assert all(layer.gradient_checkpointing for layer in tuned.encoder.encoder.layer)
    tuned(input_ids=ids, attention_mask=mask, labels=torch.zeros_like(ids)).loss.backward()
    assert tuned.encoder.embeddings.word_embeddings.weight.grad is not None


@pytest.mark.parametrize("bad, message", [
    (dict(hidden_layers=5), "out of range"),
    (dict(hidden_layers=-6), "out of range"),
    (dict(hidden_layers=[1, 1]), "same layer twice"),
    (dict(hidden_layers=[]), "empty"),
    (dict(layer_combination="sum"), "concat, mean, scalar_mix"),
    (dict(encoder_config=None), "needs `encoder_config`"),
])
def test_token_config_errors(bad, message):
    kwargs = dict(encoder_config=encoder_config(), id2label=NER_LABELS)
    kwargs.update(bad)
    with pytest.raises(ValueError, match=message):
        HiddenLayerTokenClassifierConfig(**kwargs)


def test_token_label_errors():
    model = ner_model()
    ids, mask = random_ids()
    with pytest.raises(ValueError, match="integer class ids"):
        model(input_ids=ids, labels=torch.zeros(ids.shape))
    with pytest.raises(ValueError, match="shape"):
        model(input_ids=ids, labels=torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        model(input_ids=ids, labels=torch.full(ids.shape, 7))


# -- FrozenEncoderMultiLabel ---------------------------------------------------------------------------------------
def text_model(problem="multi_label_classification", **kwargs):
    labels = CUI_LABELS if problem == "multi_label_classification" else {0: "Surgery", 1: "Radiology", 2: "Other"}
    config = FrozenEncoderMultiLabelConfig(encoder_config=encoder_config(kwargs.pop("arch", "bert")),
                                           problem_type=problem, id2label=labels,
                                           head_hidden_sizes=kwargs.pop("head_hidden_sizes", [16]), **kwargs)
    return FrozenEncoderMultiLabel(config)


@pytest.mark.parametrize("pooling", ["cls", "mean", "max"])
@pytest.mark.parametrize("arch", ENCODER_ARCHS)
def test_pooling_matches_hand_computed(pooling, arch):
    torch.manual_seed(0)
    model = text_model(pooling=pooling, arch=arch)
    ids, mask = random_ids(length=12)
    states = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    pooled = model.forward_features(ids, mask)
    for row in range(2):
        real = states[row, mask[row].bool()]
        expected = {"cls": real[0], "mean": real.mean(0), "max": real.amax(0)}[pooling]
        torch.testing.assert_close(pooled[row], expected, rtol=1e-5, atol=1e-5)


def test_long_texts_are_pooled_over_windows():
    torch.manual_seed(0)
    model = text_model(pooling="mean", max_chunk_length=8)
    ids, mask = random_ids(batch=2, length=21, pad_last=10)  # row 0: 3 windows, row 1: 11 tokens -> 2 windows
    pooled = model.forward_features(ids, mask)
    for row in range(2):
        n = int(mask[row].sum())
        windows = [ids[row, start:min(start + 8, n)] for start in range(0, n, 8)]
        states = torch.cat([model.encoder(input_ids=w[None]).last_hidden_state[0] for w in windows])
        torch.testing.assert_close(pooled[row], states.mean(0), rtol=1e-5, atol=1e-5)


def test_encoder_stays_frozen_and_in_eval_mode():
    model = text_model(head_dropout=0.5)
    model.train()
    assert not model.encoder.training and model.head.training
    assert not any(p.requires_grad for p in model.encoder.parameters())
    ids, mask = random_ids()
    assert torch.equal(model.forward_features(ids, mask), model.forward_features(ids, mask))


def test_forward_accepts_cached_features_and_multilabel_loss():
    torch.manual_seed(0)
    model = text_model().eval()
    ids, mask = random_ids()
    labels = torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 1]])
    direct = model(input_ids=ids, attention_mask=mask, labels=labels)
    cached = model(pooled_features=model.forward_features(ids, mask), labels=labels)
    torch.testing.assert_close(direct.logits, cached.logits)
    torch.testing.assert_close(direct.loss, torch.nn.functional.binary_cross_entropy_with_logits(direct.logits, labels))


def test_single_label_loss_and_predict_labels():
    torch.manual_seed(0)
    model = text_model("single_label_classification").eval()
    ids, mask = random_ids()
    out = model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 2]))
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 2])))
    predicted = model.predict_labels(input_ids=ids, attention_mask=mask)
    assert predicted == [[model.config.id2label[int(i)]] for i in out.logits.argmax(-1)]


def test_thresholds_drive_predict_labels():
    model = text_model(thresholds=[0.1, 0.5, 0.9, 0.6])
    logits = torch.logit(torch.tensor([[0.2, 0.4, 0.95, 0.6], [0.05, 0.5, 0.5, 0.59]]))
    assert model.predict_labels(logits) == [["C0817096", "C1306645", "C0024485"], ["C0040405"]]
    model.config.thresholds = 0.3
    assert model.predict_labels(logits) == [["C0040405", "C1306645", "C0024485"], ["C0040405", "C1306645",
                                                                                    "C0024485"]]


@pytest.mark.parametrize("bad, message", [
    (dict(pooling="sum"), "cls, mean, max"),
    (dict(thresholds=[0.5, 0.5]), "has 2 values but the model has 4 labels"),
    (dict(thresholds=1.5), r"\[0, 1\]"),
    (dict(head_activation="swish"), "relu, gelu, tanh, silu"),
    (dict(problem_type="regression"), "multi_label_classification, single_label_classification"),
    (dict(feature_layer=9), "out of range"),
    (dict(encoder_config=None), "needs `encoder_config`"),
])
def test_text_config_errors(bad, message):
    kwargs = dict(encoder_config=encoder_config(), id2label=CUI_LABELS)
    kwargs.update(bad)
    with pytest.raises(ValueError, match=message):
        FrozenEncoderMultiLabelConfig(**kwargs)


def test_text_label_errors():
    multi, single = text_model(), text_model("single_label_classification")
    ids, mask = random_ids()
    with pytest.raises(ValueError, match=r"multi-hot of shape \(batch, num_labels\)"):
        multi(input_ids=ids, labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="integer class ids"):
        single(input_ids=ids, labels=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="outside"):
        single(input_ids=ids, labels=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="pooled_features must be"):
        multi(pooled_features=torch.zeros(2, 7))


# -- ViTPatchClassifier --------------------------------------------------------------------------------------------
def image_model(arch="vit", head="patch", **kwargs):
    config = ViTPatchClassifierConfig(backbone_config=backbone_config(arch), head=head, id2label=IMAGE_LABELS,
                                      patch_projection_size=kwargs.pop("patch_projection_size", 8), **kwargs)
    return ViTPatchClassifier(config)


@pytest.mark.parametrize("arch", BACKBONE_ARCHS)
@pytest.mark.parametrize("head", ["cls", "cls_mean", "patch"])
def test_image_heads_read_cls_and_patches(arch, head):
    torch.manual_seed(0)
    model = image_model(arch, head).eval()
    pixels = torch.randn(2, 3, 32, 32)
    tokens = model.backbone(pixel_values=pixels).last_hidden_state
    prefix = 2 if arch == "deit" else 1  # DeiT: CLS + distillation token
    assert tokens.shape[1] == 16 + prefix
    features = model.forward_features(pixels)
    torch.testing.assert_close(features, torch.cat([tokens[:, :1], tokens[:, prefix:]], 1))
    logits = model(pixel_values=pixels).logits
    assert logits.shape == (2, 2)
    if head == "cls_mean":
        expected = model.head(torch.cat([tokens[:, 0], tokens[:, prefix:].mean(1)], -1))
        torch.testing.assert_close(logits, expected)


@pytest.mark.parametrize("arch", BACKBONE_ARCHS)
def test_other_resolution_interpolates_and_sizes_patch_head(arch):
    model = image_model(arch, "patch", image_size=48).eval()
    assert model.head.num_tokens == 1 + 36
    assert model(pixel_values=torch.randn(1, 3, 48, 48)).logits.shape == (1, 2)
    with pytest.raises(ValueError, match="built for 48x48"):
        model(pixel_values=torch.randn(1, 3, 32, 32))
    cls_model = image_model(arch, "cls").eval()  # a CLS head reads any resolution
    assert cls_model(pixel_values=torch.randn(1, 3, 48, 48)).logits.shape == (1, 2)


def test_backbone_frozen_by_default_and_trainable_on_request():
    frozen = image_model()
    frozen.train()
    assert not frozen.backbone.training
    assert not any(p.requires_grad for p in frozen.backbone.parameters())
    trainable = image_model(freeze_backbone=False)
    trainable.activation_checkpointing_enable()
    trainable.train()
    out = trainable(pixel_values=torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 1]))
    out.loss.backward()
    assert trainable.backbone.embeddings.patch_embeddings.projection.weight.grad is not None


def test_image_cached_features_equal_direct():
    model = image_model().eval()
    pixels = torch.randn(2, 3, 32, 32)
    labels = torch.tensor([1, 0])
    direct = model(pixel_values=pixels, labels=labels)
    cached = model(token_features=model.forward_features(pixels), labels=labels)
    torch.testing.assert_close(direct.logits, cached.logits)
    torch.testing.assert_close(direct.loss, cached.loss)


@pytest.mark.parametrize("bad, message", [
    (dict(head="linear"), "cls, cls_mean, patch"),
    (dict(image_size=30), "multiple of the backbone's patch size 8"),
    (dict(backbone_config=None), "needs `backbone_config`"),
])
def test_image_config_errors(bad, message):
    kwargs = dict(backbone_config=backbone_config(), id2label=IMAGE_LABELS)
    kwargs.update(bad)
    with pytest.raises(ValueError, match=message):
        ViTPatchClassifierConfig(**kwargs)


def test_image_input_errors():
    model = image_model()
    with pytest.raises(ValueError, match="1 channels but the backbone expects 3"):
        model(pixel_values=torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="multi-hot of shape"):  # problem_type None: float labels read as multi-hot
        model(pixel_values=torch.randn(2, 3, 32, 32), labels=torch.tensor([0.0, 1.0]))
    model.config.problem_type = "single_label_classification"
    with pytest.raises(ValueError, match="integer class ids"):
        model(pixel_values=torch.randn(2, 3, 32, 32), labels=torch.tensor([0.0, 1.0]))


def test_model_types_are_namespaced_and_do_not_collide():
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    for config_class in (HiddenLayerTokenClassifierConfig, FrozenEncoderMultiLabelConfig, ViTPatchClassifierConfig):
        assert config_class.model_type.startswith("medheads-")
        assert config_class.model_type not in CONFIG_MAPPING_NAMES


def test_trainer_scales_losses_for_gradient_accumulation(tmp_path):
    """One step of batch 4 equals two accumulated steps of batch 2 (the loss is a batch mean, not a sum)."""
    import datasets
    from transformers import Trainer, TrainingArguments

    ids, mask = random_ids(batch=4, length=9, pad_last=0)
    data = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": mask.tolist(),
                                       "labels": torch.randint(0, len(NER_LABELS), ids.shape).tolist()})
    weights = []
    for batch, accumulation in ((4, 1), (2, 2)):
        torch.manual_seed(0)
        model = ner_model(classifier_dropout=0.0, freeze_encoder=True)  # no dropout anywhere: same forward
        args = TrainingArguments(output_dir=str(tmp_path / str(batch)), per_device_train_batch_size=batch,
                                 gradient_accumulation_steps=accumulation, max_steps=1, learning_rate=0.1, optim="sgd",
                                 report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True)
        Trainer(model=model, args=args, train_dataset=data).train()
        weights.append(model.classifier.weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-4, atol=1e-6)
