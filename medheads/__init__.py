"""medheads: custom Hugging Face heads for medical text and images.

Importing the package registers every config with `AutoConfig` and every model with its `AutoModelFor*` class (and
with `AutoModel`), and
marks the classes for `auto_map`, so `save_pretrained` writes a folder that loads anywhere with
`trust_remote_code=True`, medheads installed or not.

The pipelines ship with each checkpoint (`config.custom_pipelines`: the stock `pipeline("ner" | "token-classification"
| "text-classification" | "image-classification", model=..., trust_remote_code=True)` runs them, medheads installed
or not). Importing medheads also makes them the implementations of those stock task names, so a model object in
memory (`pipeline("ner", model=model, tokenizer=tokenizer)`) or a folder loaded without `trust_remote_code` gets the
same whole entities, thresholded label sets and image loading. Every other model keeps transformers' own behaviour:
each pipeline falls back to its stock parent for a model that is not a medheads model. The pipelines are also
registered under their own names (`medheads-token-classification`, `medheads-text-classification`).
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .models.configuration_frozen_encoder_multilabel import FrozenEncoderMultiLabelConfig
from .models.configuration_hidden_layer_token_classifier import HiddenLayerTokenClassifierConfig
from .models.configuration_vit_patch_classifier import ViTPatchClassifierConfig
from .models.modeling_frozen_encoder_multilabel import FrozenEncoderMultiLabel
from .models.modeling_hidden_layer_token_classifier import HiddenLayerTokenClassifier
from .models.modeling_vit_patch_classifier import ViTPatchClassifier
from .models.pipeline_text_classification import MedheadsTextClassificationPipeline
from .models.pipeline_token_classification import MedheadsTokenClassificationPipeline

__version__ = "0.1.0"

# (config class, model class, Auto class, pipeline task)
MODELS = (
    (HiddenLayerTokenClassifierConfig, HiddenLayerTokenClassifier, AutoModelForTokenClassification,
     "token-classification"),
    (FrozenEncoderMultiLabelConfig, FrozenEncoderMultiLabel, AutoModelForSequenceClassification,
     "text-classification"),
    (ViTPatchClassifierConfig, ViTPatchClassifier, AutoModelForImageClassification, "image-classification"),
)

# (task name in PIPELINE_REGISTRY, pipeline class, Auto class)
PIPELINES = (
    ("medheads-token-classification", MedheadsTokenClassificationPipeline, AutoModelForTokenClassification),
    ("medheads-text-classification", MedheadsTextClassificationPipeline, AutoModelForSequenceClassification),
)


def _register() -> None:
    for config_class, model_class, auto_class, _ in MODELS:
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        auto_class.register(config_class, model_class, exist_ok=True)
        # A medheads model has no headless base model: AutoModel loads the model itself (save_pretrained also writes
        # an `AutoModel` entry into `auto_map`, so this works with trust_remote_code too).
        AutoModel.register(config_class, model_class, exist_ok=True)
        config_class.register_for_auto_class()
        model_class.register_for_auto_class(auto_class.__name__)
    from transformers.pipelines import PIPELINE_REGISTRY

    for task, pipeline_class, auto_class in PIPELINES:
        PIPELINE_REGISTRY.register_pipeline(task, pipeline_class=pipeline_class, pt_model=auto_class, type="text")
        # register_pipeline marks the class so that Pipeline.save_pretrained would replace config.custom_pipelines
        # with this one task name; the model's own save already writes the declaration (and copies the code).
        del pipeline_class._registered_impl


_register()


def register_task_pipeline(task: str, pipeline_class: type, auto_class: type) -> None:
    """Make `pipeline_class` the implementation of the stock `task` (with `auto_class` as its `pt` model class),
    keeping the task's default model and type. Each medheads pipeline keeps the stock behaviour for every model that
    is not a medheads model, so this changes nothing for them, while a medheads user's `pipeline("ner", model=model)`
    on a model in memory (or a folder without remote code) gets the medheads pipeline.

    `Pipeline.save_pretrained` is left to save the model, whose own `save_pretrained` writes the full
    `custom_pipelines` declaration (`ner` and `token-classification` both) and copies the pipeline code; a stock model
    saved through one of these pipelines is written exactly as transformers writes it."""
    from transformers.pipelines import PIPELINE_REGISTRY

    current = PIPELINE_REGISTRY.supported_tasks.get(task, {})
    if current.get("impl") is pipeline_class:
        return
    entry = {key: value for key, value in current.items() if key not in ("impl", "pt")}
    entry.update(impl=pipeline_class, pt=(auto_class,))
    PIPELINE_REGISTRY.supported_tasks[task] = entry


def _register_pipelines() -> None:
    from .models.pipeline_image_classification import MedheadsImageClassificationPipeline

    for task, pipeline_class, auto_class in (
            ("token-classification", MedheadsTokenClassificationPipeline, AutoModelForTokenClassification),
            ("text-classification", MedheadsTextClassificationPipeline, AutoModelForSequenceClassification),
            ("image-classification", MedheadsImageClassificationPipeline, AutoModelForImageClassification)):
        register_task_pipeline(task, pipeline_class, auto_class)


_register_pipelines()

__all__ = [
    "HiddenLayerTokenClassifierConfig", "HiddenLayerTokenClassifier",
    "FrozenEncoderMultiLabelConfig", "FrozenEncoderMultiLabel",
    "ViTPatchClassifierConfig", "ViTPatchClassifier",
    "MedheadsTokenClassificationPipeline", "MedheadsTextClassificationPipeline",
    "MODELS", "PIPELINES",
]
