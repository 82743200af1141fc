"""transformers' own conformance tests, run against tiny versions of the three medheads models.

`ModelTesterMixin` (tests/test_modeling_common.py), `ConfigTester` (tests/test_configuration_common.py) and
`PipelineTesterMixin` (tests/test_pipeline_mixin.py) come from the sdist of the *installed* transformers version: it is
downloaded once with `pip download --no-binary :all: --no-deps transformers==<version>` into
`~/.cache/medheads/transformers-tests/<version>` (override: MEDHEADS_TRANSFORMERS_TESTS) and imported from there, never
copied into this repository. Offline with an empty cache, the whole module is skipped, saying why.

The sdist ships only the top-level files of transformers' tests/ folder. Modules those files import from sub-folders
that the sdist lacks are replaced in the cache by stand-ins, each saying what it replaces:
- `exporters.test_export.ExportTesterMixin` -> empty (ModelTesterMixin's torch.export tests live there; our own
  torch.export test with dynamic batch and sequence is tests/test_models.py::test_torch_export_*),
- `generation.test_utils.GenerationTesterMixin` -> empty (our models do not generate; the common tests check that a
  tester of a non-generative model does not inherit it),
- `utils.test_configuration_utils.config_common_kwargs` -> {} (read only by `check_config_arguments_init`, which
  returns early for configs with sub-configs, as ours are),
- `pipelines.test_pipelines_<task>` -> the task checks `PipelineTesterMixin` hands the pipeline to (the originals
  are not in the sdist): output schema and values checked against the model's own forward.
`PipelineTesterMixin` itself runs unchanged: it loads each model, tokenizer and image processor from a local tiny-model
folder (its documented TRANSFORMERS_TINY_MODEL_PATH layout), validates them, builds the pipeline, runs the checks and
its own batched run (10 inputs, batch_size=4).

Skipped, each with its reason (they cannot apply to a head on a nested encoder): a config built with no arguments
(the encoder's config is required, and a missing one is a clear error); loading a bare encoder checkpoint into the
head class (it must fail with the error that points to `from_encoder` / `from_backbone`, which is asserted here).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
import unittest
from pathlib import Path

import pytest
import torch
import transformers
from tiny import CUI_LABELS, IMAGE_LABELS, NER_LABELS, VOCAB, backbone_config, encoder_config, make_image_processor
from tiny import make_tokenizer

from medheads import (
    FrozenEncoderMultiLabel, FrozenEncoderMultiLabelConfig, HiddenLayerTokenClassifier,
    HiddenLayerTokenClassifierConfig, ViTPatchClassifier, ViTPatchClassifierConfig,
)

VERSION = transformers.__version__
CACHE = Path(os.environ.get("MEDHEADS_TRANSFORMERS_TESTS", Path.home() / ".cache" / "medheads" / "transformers-tests"))
ROOT = CACHE / VERSION
PACKAGE = "transformers_tests"  # the sdist's tests/ folder, importable without clashing with our own tests/

STAND_INS = {
    "exporters/test_export.py": "# medheads stand-in: transformers' tests/exporters is not in the sdist.\n"
                                "class ExportTesterMixin:\n    pass\n",
    "generation/test_utils.py": "# medheads stand-in: transformers' tests/generation is not in the sdist.\n"
                                "class GenerationTesterMixin:\n    pass\n",
    "utils/test_configuration_utils.py": "# medheads stand-in: transformers' tests/utils is not in the sdist.\n"
                                         "config_common_kwargs = {}\n",
}


def fetch_transformers_tests() -> str | None:
    """Make ROOT/transformers_tests hold the sdist's tests; return None, or why it could not."""
    package = ROOT / PACKAGE
    if (package / "test_modeling_common.py").exists() and (package / "pipelines" / "__init__.py").exists():
        return None
    ROOT.mkdir(parents=True, exist_ok=True)
    sdist = next(ROOT.glob("transformers-*.tar.gz"), None)
    if sdist is None:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "--no-build-isolation",
                 "--quiet", f"transformers=={VERSION}", "-d", str(ROOT)],
                capture_output=True, text=True, timeout=300,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"could not run pip download ({error})"
        sdist = next(ROOT.glob("transformers-*.tar.gz"), None)
        if sdist is None:
            return (f"the sdist of transformers {VERSION} could not be downloaded (offline?): "
                    f"{(done.stderr or done.stdout).strip()[-300:]}")
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers()
                   if m.isfile() and m.name.count("/") == 2 and m.name.split("/")[1] == "tests"
                   and m.name.endswith(".py")]
        if not any(m.name.endswith("/test_modeling_common.py") for m in members):
            return f"{sdist.name} has no tests/test_modeling_common.py"
        package.mkdir(exist_ok=True)
        for member in members:
            (package / Path(member.name).name).write_bytes(archive.extractfile(member).read())
    (package / "__init__.py").write_text("")
    for relative, text in STAND_INS.items():
        (package / relative).parent.mkdir(exist_ok=True)
        (package / relative).parent.joinpath("__init__.py").write_text("")
        (package / relative).write_text(text)
    # test_pipeline_mixin imports `<sdist>/src/transformers` through `direct_transformers_import`, which returns the
    # installed transformers after running that file: an empty one is enough.
    (ROOT / "src" / "transformers").mkdir(parents=True, exist_ok=True)
    (ROOT / "src" / "transformers" / "__init__.py").write_text("")
    (package / "pipelines").mkdir(exist_ok=True)
    (package / "pipelines" / "__init__.py").write_text("# medheads stand-ins: see tests/test_transformers_common.py\n")
    return None


reason = fetch_transformers_tests()
if reason is None and __import__("importlib").util.find_spec("parameterized") is None:
    reason = "tests/test_modeling_common.py needs the `parameterized` package (pip install -e '.[test]')"
if reason is not None:
    pytest.skip(f"transformers' common tests unavailable: {reason}", allow_module_level=True)


# -- tiny models, saved in PipelineTesterMixin's local layout (TRANSFORMERS_TINY_MODEL_PATH) ---------------------
def ner_config(**kwargs):
    return HiddenLayerTokenClassifierConfig(encoder_config=encoder_config("bert", layers=2), hidden_layers=-1,
                                            id2label=NER_LABELS, **kwargs)


def text_config(**kwargs):
    return FrozenEncoderMultiLabelConfig(encoder_config=encoder_config("bert", layers=2), head_hidden_sizes=[16],
                                         id2label=CUI_LABELS, **kwargs)


def image_config(**kwargs):
    return ViTPatchClassifierConfig(backbone_config=backbone_config("vit"), head="patch", patch_projection_size=8,
                                    id2label=IMAGE_LABELS, **kwargs)


TINY = Path(tempfile.mkdtemp(prefix="medheads-tiny-models-"))
SUMMARY = {}
for _config, _class, _processor in ((ner_config(), HiddenLayerTokenClassifier, "tokenizer"),
                                    (text_config(), FrozenEncoderMultiLabel, "tokenizer"),
                                    (image_config(), ViTPatchClassifier, "image")):
    torch.manual_seed(0)
    _folder = TINY / _config.model_type / _class.__name__
    _class(_config).save_pretrained(_folder)
    if _processor == "tokenizer":
        make_tokenizer(_folder)
        make_tokenizer(_folder).save_pretrained(_folder)
        SUMMARY[_class.__name__] = {"tokenizer_classes": ["BertTokenizerFast"], "processor_classes": []}
    else:
        make_image_processor(32).save_pretrained(_folder)
        SUMMARY[_class.__name__] = {"tokenizer_classes": [], "processor_classes": ["ViTImageProcessor"]}
(TINY / "reports").mkdir()
(TINY / "reports" / "tiny_model_summary.json").write_text(__import__("json").dumps(SUMMARY))
os.environ["TRANSFORMERS_TINY_MODEL_PATH"] = str(TINY)

# The pipeline task checks PipelineTesterMixin runs (its own tests/pipelines/* are not in the sdist).
(ROOT / PACKAGE / "pipelines" / "medheads_tasks.py").write_text('''"""medheads stand-ins for transformers'
tests/pipelines/test_pipelines_<task>.py (not in the sdist)."""
import torch


class _Task:
    def get_test_pipeline(self, model, tokenizer=None, image_processor=None, feature_extractor=None, processor=None,
                          dtype="float32"):
        from transformers import pipeline
        pipe = pipeline(self.task, model=model, tokenizer=tokenizer, image_processor=image_processor,
                        dtype=dtype)
        return pipe, self.examples()


class TokenClassificationPipelineTests(_Task):
    task = "token-classification"

    def examples(self):
        return ["the patient has breast cancer", "il-2 gene expression in t cells"]

    def run_pipeline_test(self, pipe, examples):
        labels = set(pipe.model.config.id2label.values())
        for text in examples:
            tokens = pipe(text, aggregation_strategy="none", ignore_labels=[])
            encoded = pipe.tokenizer(text, return_tensors="pt")
            with torch.no_grad():
                logits = pipe.model(**encoded).logits[0]
            expected = [pipe.model.config.id2label[int(i)] for i in logits.argmax(-1)[1:-1]]
            assert [t["entity"] for t in tokens] == expected, (tokens, expected)
            for token in tokens:
                assert set(token) >= {"entity", "score", "index", "word", "start", "end"}
                assert token["entity"] in labels and 0.0 <= token["score"] <= 1.0
                assert text[token["start"]:token["end"]].lower().replace(" ", "") == token["word"].replace("##", "")
            for strategy in ("simple", "first", "average", "max"):
                for group in pipe(text, aggregation_strategy=strategy):
                    assert set(group) >= {"entity_group", "score", "word", "start", "end"}
                    assert group["entity_group"] in {label.split("-", 1)[-1] for label in labels}
        assert len(pipe(examples)) == len(examples)


class TextClassificationPipelineTests(_Task):
    task = "text-classification"

    def examples(self):
        return ["chest x ray shows a mass", "normal ct scan of the abdomen"]

    def run_pipeline_test(self, pipe, examples):
        config = pipe.model.config
        for text in examples:
            scores = pipe(text, top_k=None)
            scores = scores[0] if scores and isinstance(scores[0], list) else scores
            assert sorted(s["label"] for s in scores) == sorted(config.id2label.values())
            encoded = pipe.tokenizer(text, return_tensors="pt")
            with torch.no_grad():
                probabilities = pipe.model(**encoded).logits[0].sigmoid()
            for item in scores:
                assert abs(item["score"] - float(probabilities[config.label2id[item["label"]]])) < 1e-5
        assert len(pipe(examples, top_k=None)) == len(examples)


class ImageClassificationPipelineTests(_Task):
    task = "image-classification"

    def examples(self):
        from PIL import Image
        import numpy as np
        rng = np.random.default_rng(0)
        return [Image.fromarray((rng.random((40, 40)) * 255).astype("uint8"), mode="L"),
                Image.fromarray((rng.random((24, 30, 3)) * 255).astype("uint8"))]

    def run_pipeline_test(self, pipe, examples):
        config = pipe.model.config
        for image in examples:
            scores = pipe(image, top_k=None)
            assert sorted(s["label"] for s in scores) == sorted(config.id2label.values())
            pixels = pipe.image_processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"]
            with torch.no_grad():
                probabilities = pipe.model(pixel_values=pixels).logits[0].softmax(-1)
            for item in scores:
                assert abs(item["score"] - float(probabilities[config.label2id[item["label"]]])) < 1e-5
        assert len(pipe(examples)) == len(examples)
''')

sys.path.insert(0, str(ROOT))
from transformers_tests import test_pipeline_mixin  # noqa: E402
from transformers_tests.test_configuration_common import ConfigTester  # noqa: E402
from transformers_tests.test_modeling_common import ModelTesterMixin, floats_tensor, ids_tensor  # noqa: E402
from transformers_tests.test_pipeline_mixin import PipelineTesterMixin  # noqa: E402

for _task in ("token-classification", "text-classification", "image-classification"):
    _name = test_pipeline_mixin.pipeline_test_mapping[_task]["test"].rsplit(".", 1)[-1]
    test_pipeline_mixin.pipeline_test_mapping[_task]["test"] = f"{PACKAGE}.pipelines.medheads_tasks.{_name}"


# -- model testers (the shape transformers' own XxxModelTester classes have) -------------------------------------
class TextModelTester:
    batch_size, seq_length, hidden_size, num_hidden_layers, num_attention_heads = 2, 7, 32, 2, 4
    vocab_size, is_training = len(VOCAB), True

    def __init__(self, parent, make_config):
        self.parent, self.make_config, self.overrides = parent, make_config, {}

    def get_config(self):
        return self.make_config(**self.overrides)

    def prepare_config_and_inputs_for_common(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        attention_mask = torch.ones_like(input_ids)
        attention_mask[-1, -2:] = 0
        return self.get_config(), {"input_ids": input_ids, "attention_mask": attention_mask}


class ImageModelTester:
    batch_size, image_size, num_channels, hidden_size, num_hidden_layers, num_attention_heads = 2, 32, 3, 32, 2, 4
    seq_length = (32 // 8) ** 2 + 1  # patches + CLS
    is_training = True

    def __init__(self, parent, make_config):
        self.parent, self.make_config, self.overrides = parent, make_config, {}

    def get_config(self):
        return self.make_config(**self.overrides)

    def prepare_config_and_inputs_for_common(self):
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        return self.get_config(), {"pixel_values": pixel_values}


NOT_FOR_A_HEAD_ON_A_NESTED_ENCODER = (
    "loads a bare encoder/backbone checkpoint into the head class (AutoModel maps a medheads config to the head "
    "itself, so there is no base model to save); the head must refuse one with an error pointing to "
    "from_encoder/from_backbone (asserted by test_bare_encoder_checkpoint_is_refused_with_a_pointer_to_the_builder)"
)


class MedheadsCommonTests(ModelTesterMixin, PipelineTesterMixin):
    make_config = None
    _is_composite = True  # a head config nesting the encoder's config (runs the composite attention tests)
    test_can_init_all_missing_weights_before_2023 = True  # new models: run it (the mixin dates models by copyright)
    model_tester_class = TextModelTester

    def setUp(self):
        self.model_tester = self.model_tester_class(self, type(self).make_config)
        self.config_tester = ConfigTester(self, config_class=self.all_model_classes[0].config_class,
                                          has_text_modality=False, **self.config_inputs())

    def config_inputs(self):
        # the arguments as a config.json holds them (ConfigTester compares them with the JSON it writes)
        serialized = __import__("json").loads(type(self).make_config().to_json_string())
        inner = "backbone_config" if "backbone_config" in serialized else "encoder_config"
        return {inner: serialized[inner], "id2label": serialized["id2label"]}

    def trainable(self):
        """The model's configuration with its encoder unfrozen, for the tests that need gradients through it."""
        flag = self.all_model_classes[0]._frozen_module[1]
        self.model_tester.overrides = {flag: False}

    # A frozen encoder runs under no_grad by design (no activations kept, features cacheable), and the checkpointing
    # test sets requires_grad_(True) on every parameter behind the freezing flag, which must fail loudly (issue 9):
    # these tests run on the same model with its encoder unfrozen (`unfreeze_encoder()`), as a fine-tuning user would.
    def test_retain_grad_hidden_states_attentions(self):
        self.trainable()
        super().test_retain_grad_hidden_states_attentions()

    def test_training_gradient_checkpointing(self):
        self.trainable()
        super().test_training_gradient_checkpointing()

    def test_training_gradient_checkpointing_use_reentrant_false(self):
        self.trainable()
        super().test_training_gradient_checkpointing_use_reentrant_false()

    def test_training_gradient_checkpointing_use_reentrant_true(self):
        self.trainable()
        super().test_training_gradient_checkpointing_use_reentrant_true()

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=False)
        if return_labels:
            inputs_dict["labels"] = self.make_labels(inputs_dict)
        return inputs_dict

    def test_config(self):
        # can_init_without_params=False: a config needs the encoder's config (an omitted one is a clear error)
        self.config_tester.run_common_tests(can_init_without_params=False)
        with self.assertRaisesRegex(ValueError, "needs `(encoder|backbone)_config`"):
            self.all_model_classes[0].config_class()

    def test_bare_encoder_checkpoint_is_refused_with_a_pointer_to_the_builder(self):
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        inner = getattr(config, "encoder_config", None) or config.backbone_config
        with tempfile.TemporaryDirectory() as folder:
            transformers.AutoModel.from_config(inner).save_pretrained(folder)
            with self.assertRaisesRegex((ValueError, OSError, TypeError), "from_(encoder|backbone)"):
                self.all_model_classes[0].from_pretrained(folder)

    @unittest.skip(reason=NOT_FOR_A_HEAD_ON_A_NESTED_ENCODER)
    def test_correct_missing_keys(self):
        pass

    @unittest.skip(reason=NOT_FOR_A_HEAD_ON_A_NESTED_ENCODER)
    def test_save_load_fast_init_from_base(self):
        pass

    @unittest.skip(reason=NOT_FOR_A_HEAD_ON_A_NESTED_ENCODER)
    def test_save_load_fast_init_to_base(self):
        pass


def only_pipeline_tests_for(*tasks):
    """PipelineTesterMixin has one test per pipeline task; keep only the model's own (the rest would only skip)."""
    def keep(cls):
        for name in dir(PipelineTesterMixin):
            task = name[len("test_pipeline_"):].removesuffix("_fp16").replace("_", "-")
            if name.startswith("test_pipeline_") and task not in tasks:
                setattr(cls, name, None)
        return cls
    return keep


@only_pipeline_tests_for("token-classification")
class HiddenLayerTokenClassifierCommonTest(MedheadsCommonTests, unittest.TestCase):
    all_model_classes = (HiddenLayerTokenClassifier,)
    pipeline_model_mapping = {"token-classification": HiddenLayerTokenClassifier}
    make_config = staticmethod(ner_config)

    def make_labels(self, inputs):
        return torch.zeros_like(inputs["input_ids"])


@only_pipeline_tests_for("text-classification")
class FrozenEncoderMultiLabelCommonTest(MedheadsCommonTests, unittest.TestCase):
    all_model_classes = (FrozenEncoderMultiLabel,)
    pipeline_model_mapping = {"text-classification": FrozenEncoderMultiLabel}
    make_config = staticmethod(text_config)

    def make_labels(self, inputs):
        return torch.zeros(inputs["input_ids"].shape[0], len(CUI_LABELS))


@only_pipeline_tests_for("image-classification")
class ViTPatchClassifierCommonTest(MedheadsCommonTests, unittest.TestCase):
    all_model_classes = (ViTPatchClassifier,)
    pipeline_model_mapping = {"image-classification": ViTPatchClassifier}
    make_config = staticmethod(image_config)
    model_tester_class = ImageModelTester
    test_resize_embeddings = False  # no token embeddings (as transformers' ViTModelTest)

    def make_labels(self, inputs):
        return torch.zeros(inputs["pixel_values"].shape[0], dtype=torch.long)

    def test_model_get_set_embeddings(self):
        # as transformers' own ViTModelTest: the input embeddings of a ViT are its patch embeddings, not nn.Embedding
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        model = ViTPatchClassifier(config)
        self.assertIsInstance(model.get_input_embeddings(), torch.nn.Module)
        output_embeddings = model.get_output_embeddings()
        self.assertTrue(output_embeddings is None or isinstance(output_embeddings, torch.nn.Linear))


def truncated_ner_config(**kwargs):
    return HiddenLayerTokenClassifierConfig(encoder_config=encoder_config("bert", layers=4), hidden_layers=[1, 2],
                                            layer_combination="scalar_mix", id2label=NER_LABELS, **kwargs)


class TruncatedModelTester(TextModelTester):
    num_hidden_layers = 2  # layers the model runs: the deepest it reads (2 of the encoder's 4)
    expected_num_hidden_layers = 3  # the embeddings + those 2 layers


TRUNCATED_SUBSET = {
    "test_hidden_states_output", "test_attention_outputs", "test_can_capture_specific_layers_hidden_states",
    "test_retain_grad_hidden_states_attentions", "test_model_outputs_equivalence", "test_batching_equivalence",
    "test_determinism", "test_save_load", "test_training", "test_resize_tokens_embeddings",
    "test_can_init_all_missing_weights", "test_attn_implementation_composite_models",
    "test_can_set_attention_dynamically_composite_model",
}


class TruncatedHiddenLayerTokenClassifierCommonTest(ModelTesterMixin, unittest.TestCase):
    """A token classifier reading layers 1 and 2 of a 4-layer encoder (built 2 layers deep, scalar mix): the common
    tests where truncation shows (hidden states, attentions, outputs, save/load, training, resizing). A subset, to keep
    the module near two minutes; the full mixin runs on the untruncated model above."""

    all_model_classes = (HiddenLayerTokenClassifier,)
    _is_composite = True
    test_can_init_all_missing_weights_before_2023 = True

    def setUp(self):
        self.model_tester = TruncatedModelTester(self, truncated_ner_config)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=False)
        if return_labels:
            inputs_dict["labels"] = torch.zeros_like(inputs_dict["input_ids"])
        return inputs_dict


for _name in dir(TruncatedHiddenLayerTokenClassifierCommonTest):
    if (_name.startswith("test_") and callable(getattr(TruncatedHiddenLayerTokenClassifierCommonTest, _name))
            and _name not in TRUNCATED_SUBSET):
        setattr(TruncatedHiddenLayerTokenClassifierCommonTest, _name, None)
