"""What `cards.py` and `publishing.py` both need: file names, pipeline tags, card tags, where the card templates are,
and the hub's errors. Both import this module; neither imports the other back (publishing -> cards -> constants).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError

CONFIG_NAME = "config.json"
SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
#: auto_map key -> pipeline task.
PIPELINE_TAGS = {
    "AutoModelForTokenClassification": "token-classification",
    "AutoModelForSequenceClassification": "text-classification",
    "AutoModelForImageClassification": "image-classification",
}
#: Tags every medheads model card carries.
CARD_TAGS = ("custom_code", "medical", "medheads")


def _templates_dir() -> Path:
    """The model-card templates: the top-level `model_cards/` folder, installed as the package data
    `medheads.model_cards` (pyproject maps it), so a wheel carries them as a checkout does."""
    from importlib.resources import files

    return Path(str(files("medheads.model_cards")))


#: Where the model-card templates live, in a checkout and in an installed wheel alike.
TEMPLATES_DIR = _templates_dir()


class PublishError(InputError):
    """A problem with the inputs of `medheads publish` the user must fix; the message says what and how (exit
    status 2, like every `medheads.errors.InputError`)."""


class PushError(RuntimeError):
    """The upload failed (network, HTTP, token); the staged folder is left intact. Not an input error: `medheads
    publish` exits with status 1."""

    exit_code = 1


__all__ = ["CONFIG_NAME", "SAFE_WEIGHTS", "SAFE_INDEX", "PIPELINE_TAGS", "CARD_TAGS", "TEMPLATES_DIR", "PublishError",
           "PushError"]
