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
    from transformers.modeling_layers import GradientCheckpointingLayer

    model = ner_model(arch, [1, 2], "mean")
    assert sum(isinstance(module, GradientCheckpointingLayer) for module in model.encoder.modules()) == 2
    assert model.config.encoder_config.num_hidden_layers == 4  # the config still describes the full encoder
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


# -- transformers conventions (issue 9): each defect has its own test ------------------------------------------------
def all_models():
    """One tiny model of each kind; the token classifier reads layer 2 of 4, so its encoder is truncated."""
    torch.manual_seed(0)
    return {"token": ner_model(layers=2), "text": text_model(), "image": image_model()}


def model_inputs(kind, batch=2, length=9):
    if kind == "image":
        return {"pixel_values": torch.randn(batch, 3, 32, 32)}
    ids, mask = random_ids(batch=batch, length=length)
    return {"input_ids": ids, "attention_mask": mask}


def inner(model):
    return model.backbone if isinstance(model, ViTPatchClassifier) else model.encoder


def inner_config(model):
    return getattr(model.config, "encoder_config", None) or model.config.backbone_config


@pytest.mark.parametrize("kind", ["token", "text"])
def test_resize_token_embeddings_writes_the_encoder_config_and_reloads(kind, tiny_tokenizer, tmp_path):
    """Defect 1: `resize_token_embeddings` after `tokenizer.add_tokens` must survive save -> reload."""
    import copy

    model = all_models()[kind].eval()
    tokenizer = copy.deepcopy(tiny_tokenizer)
    old = len(tokenizer)
    assert tokenizer.add_tokens(["il-2r", "nf-kappab", "ca2+"]) == 3
    model.resize_token_embeddings(len(tokenizer))
    assert model.config.get_text_config() is model.config.encoder_config
    assert model.config.encoder_config.vocab_size == old + 3
    assert "vocab_size" not in model.config.to_diff_dict()  # not misplaced on the top-level config
    model.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path).eval()
    assert reloaded.get_input_embeddings().weight.shape[0] == old + 3
    torch.testing.assert_close(reloaded.get_input_embeddings().weight, model.get_input_embeddings().weight)
    ids = tokenizer(["il-2r binds nf-kappab and ca2+"], return_tensors="pt")
    assert int(ids["input_ids"].max()) >= old
    torch.testing.assert_close(reloaded(**ids).logits, model(**ids).logits)


@pytest.mark.parametrize("kind", ["token", "text", "image"])
def test_output_hidden_states_and_attentions_are_returned(kind):
    """Defect 3: `output_hidden_states` / `output_attentions` were dropped (None)."""
    model = all_models()[kind].eval()
    model.set_attn_implementation("eager")  # the implementation that returns attention weights
    inputs = model_inputs(kind)
    out = model(**inputs, output_hidden_states=True, output_attentions=True)
    runs = {"token": 2, "text": 4, "image": 2}[kind]  # layers the model actually runs (the token model reads layer 2)
    assert len(out.hidden_states) == runs + 1 and len(out.attentions) == runs
    # the same tensors as the wrapped encoder's own output
    plain = {k: v for k, v in inputs.items()}
    reference = inner(model)(**plain, output_hidden_states=True, output_attentions=True)
    for mine, theirs in zip(out.hidden_states, reference.hidden_states):
        torch.testing.assert_close(mine, theirs)
    for mine, theirs in zip(out.attentions, reference.attentions):
        torch.testing.assert_close(mine, theirs)
    # the config flags and return_dict=False work too (transformers' tuple order: logits, hidden_states, attentions)
    model.config.output_hidden_states = True
    as_tuple = model(**inputs, return_dict=False)
    assert len(as_tuple) == 2 and len(as_tuple[1]) == runs + 1
    torch.testing.assert_close(as_tuple[0], out.logits)
    model.config.output_hidden_states = False
    assert model(**inputs).hidden_states is None
    if kind == "token":  # and the truncated encoder's states are the full encoder's first ones
        full = AutoModel.from_config(encoder_config()).eval()
        load_encoder_weights(model, full)
        expected = full(**inputs, output_hidden_states=True).hidden_states[:3]
        for mine, theirs in zip(model(**inputs, output_hidden_states=True).hidden_states, expected):
            torch.testing.assert_close(mine, theirs)


def test_long_text_hidden_states_follow_the_input_order():
    torch.manual_seed(0)
    model = text_model(max_chunk_length=8).eval()
    ids, mask = random_ids(batch=2, length=21, pad_last=10)
    states = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    assert len(states) == 5 and states[-1].shape == (2, 21, 32)
    window = model.encoder(input_ids=ids[:1, 8:16]).last_hidden_state  # row 0's second window, encoded alone
    torch.testing.assert_close(states[-1][:1, 8:16], window, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["token", "text", "image"])
def test_one_freezing_api_kept_in_step_with_the_config(kind, tmp_path):
    """Defect 4: unfreezing with requires_grad_(True) silently did nothing; one API on all three models."""
    model = all_models()[kind]
    flag = {"token": "freeze_encoder", "text": "freeze_encoder", "image": "freeze_backbone"}[kind]
    inputs = model_inputs(kind)
    labels = {"token": torch.zeros_like(inputs.get("input_ids", torch.zeros(1))),
              "text": torch.zeros(2, len(CUI_LABELS)), "image": torch.tensor([0, 1])}[kind]

    def encoder_gets_gradients():
        model.zero_grad(set_to_none=True)
        model(**inputs, labels=labels).loss.backward()
        return any(p.grad is not None for p in inner(model).parameters())

    model.freeze_encoder()
    assert getattr(model.config, flag) is True and model.encoder_frozen
    model.train()
    assert not inner(model).training and not encoder_gets_gradients()

    model.unfreeze_encoder()
    assert getattr(model.config, flag) is False and not model.encoder_frozen
    model.train()
    assert inner(model).training and encoder_gets_gradients()

    model.freeze_encoder()  # requires_grad_ on the whole model works, and moves the flag with it
    model.requires_grad_(True)
    assert getattr(model.config, flag) is False
    model.train()
    assert inner(model).training and encoder_gets_gradients()
    model.requires_grad_(False)
    assert getattr(model.config, flag) is True

    model.freeze_encoder()  # requires_grad_ on the frozen part behind the flag's back fails loudly
    inner(model).requires_grad_(True)
    with pytest.raises(ValueError, match=r"frozen .*unfreeze_encoder\(\)"):
        model(**inputs)

    model.unfreeze_encoder()  # the flag is saved: a reloaded model is as frozen as the saved one
    model.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path)
    assert getattr(reloaded.config, flag) is False
    assert all(p.requires_grad for p in inner(reloaded).parameters())


def test_text_model_freezes_by_default():
    model = text_model()
    assert model.config.freeze_encoder is True
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert FrozenEncoderMultiLabelConfig(encoder_config=encoder_config(), id2label=CUI_LABELS,
                                         freeze_encoder=False).freeze_encoder is False


@pytest.mark.parametrize("kind", ["token", "text", "image"])
def test_set_attn_implementation_reaches_the_shared_encoder_config(kind, caplog):
    """Defect 5: the nested encoder config was a copy, so set_attn_implementation warned of undefined behaviour."""
    import logging

    from transformers.utils import logging as hf_logging

    model = all_models()[kind].eval()
    assert inner(model).config is inner_config(model)
    hf_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING, logger="transformers"):
            model.set_attn_implementation("eager")
    finally:
        hf_logging.disable_propagation()
    assert "undefined behavio" not in caplog.text
    assert inner_config(model)._attn_implementation == "eager" == inner(model).config._attn_implementation
    assert model(**model_inputs(kind), output_attentions=True).attentions[0] is not None
    model.set_attn_implementation("sdpa")
    assert inner_config(model)._attn_implementation == "sdpa"


def test_truncated_encoder_keeps_the_full_encoder_config(tmp_path):
    """Sharing the config must not change what `hidden_layers=-k` means after a reload."""
    model = ner_model("modernbert", [-3], "concat")  # layer 2 of 4
    assert model.config.encoder_config.num_hidden_layers == 4 and model.config.encoder_depth == 2
    model.save_pretrained(tmp_path)
    reloaded = HiddenLayerTokenClassifier.from_pretrained(tmp_path)
    assert reloaded.config.encoder_depth == 2 and reloaded.layers == [2]


AUTOMODEL_SCRIPT = r"""
import json, sys
sys.modules["medheads"] = None  # a user without medheads
import torch
from transformers import AutoModel
out = {}
for kind, folder in json.loads(sys.argv[1]).items():
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    inputs = {k: torch.tensor(v) for k, v in json.loads(sys.argv[2])[kind].items()}
    with torch.no_grad():
        out[kind] = {"class": type(model).__name__, "logits": model(**inputs).logits.tolist()}
print("RESULT " + json.dumps(out))
"""


def test_automodel_loads_a_saved_folder_in_process_and_as_remote_code(tmp_path):
    """Defect 6: `AutoModel.from_pretrained(<a saved medheads folder>)` failed ("Unrecognized configuration class")."""
    import json
    import subprocess
    import sys

    folders, inputs, expected = {}, {}, {}
    for kind, model in all_models().items():
        model.eval().save_pretrained(tmp_path / kind)
        config = json.loads((tmp_path / kind / "config.json").read_text())
        assert config["auto_map"]["AutoModel"] == config["auto_map"][
            {"token": "AutoModelForTokenClassification", "text": "AutoModelForSequenceClassification",
             "image": "AutoModelForImageClassification"}[kind]]
        loaded = AutoModel.from_pretrained(tmp_path / kind).eval()  # in-process: medheads registered AutoModel
        assert type(loaded) is type(model)
        folders[kind], inputs[kind] = str(tmp_path / kind), {k: v.tolist() for k, v in model_inputs(kind).items()}
        with torch.no_grad():
            expected[kind] = loaded(**{k: torch.tensor(v) for k, v in inputs[kind].items()}).logits
    done = subprocess.run([sys.executable, "-c", AUTOMODEL_SCRIPT, json.dumps(folders), json.dumps(inputs)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    for kind, model in all_models().items():
        assert result[kind]["class"] == type(model).__name__
        torch.testing.assert_close(torch.tensor(result[kind]["logits"]), expected[kind], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["token", "text", "image"])
def test_torch_export_with_dynamic_batch_and_sequence(kind):
    """Defect 7: torch.export with a dynamic batch / sequence size failed on the text model (boolean indexing)."""
    from torch.export import Dim

    torch.manual_seed(0)
    model = {"token": lambda: ner_model(layers=2), "text": text_model, "image": image_model}[kind]().eval()
    batch = Dim("batch", min=1, max=64)
    if kind == "image":  # the patch head is sized for one resolution: only the batch is dynamic
        sample, other = model_inputs(kind, batch=2), model_inputs(kind, batch=3)
        shapes = {"pixel_values": {0: batch}}
    else:  # any length up to the encoder's window (the text model's chunk_length, 128 here)
        sequence = Dim("sequence", min=2, max=128)
        sample, other = model_inputs(kind, batch=2, length=9), model_inputs(kind, batch=5, length=128)
        shapes = {"input_ids": {0: batch, 1: sequence}, "attention_mask": {0: batch, 1: sequence}}
    with torch.no_grad():
        exported = torch.export.export(model, args=(), kwargs=sample, dynamic_shapes=shapes, strict=False)
        for inputs in (sample, other, model_inputs(kind, batch=1, length=3)):
            torch.testing.assert_close(exported.module()(**inputs).logits, model(**inputs).logits,
                                       rtol=1e-5, atol=1e-5)


def test_torch_export_of_texts_longer_than_the_window():
    """Texts longer than the window export too (one program for them, sizes declared Dim.DYNAMIC), with the same
    logits: a guard that the export-friendly window logic kept the long-text path (this one passed before as well)."""
    from torch.export import Dim

    torch.manual_seed(0)
    model = text_model(max_chunk_length=8).eval()
    ids, mask = random_ids(batch=2, length=21, pad_last=3)
    shapes = {"input_ids": {0: Dim.DYNAMIC, 1: Dim.DYNAMIC}, "attention_mask": {0: Dim.DYNAMIC, 1: Dim.DYNAMIC}}
    with torch.no_grad():
        exported = torch.export.export(model, args=(), kwargs={"input_ids": ids, "attention_mask": mask},
                                       dynamic_shapes=shapes, strict=False).module()
        for batch, length, pad in ((3, 21, 10), (2, 16, 0), (1, 9, 0), (4, 60, 30)):  # 10 pads: an empty window
            ids, mask = random_ids(batch=batch, length=length, pad_last=pad)
            torch.testing.assert_close(exported(input_ids=ids, attention_mask=mask).logits,
                                       model(input_ids=ids, attention_mask=mask).logits, rtol=1e-5, atol=1e-5)
