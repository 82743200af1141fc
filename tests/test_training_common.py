"""Plumbing the three training commands share (medheads.training.common, medheads.metrics): one implementation each
of what used to exist per task module."""

from __future__ import annotations

import numpy as np
import pytest

from medheads.data import DataFormatError
from medheads.metrics import sigmoid, softmax
from medheads.training.arguments import ModelArguments
from medheads.training.common import load_dataset_dict


def test_load_dataset_dict_policy(tmp_path):
    import datasets

    single = tmp_path / "single"
    datasets.Dataset.from_dict({"tokens": [["a"]], "ner_tags": [["O"]]}).save_to_disk(str(single))
    loaded = load_dataset_dict(str(single))
    assert list(loaded) == ["train"] and loaded["train"].num_rows == 1  # one Dataset: the train split, logged
    assert list(load_dataset_dict(str(single), single_split="trn")) == ["trn"]

    splits = tmp_path / "splits"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"x": [1, 2]}),
                          "validation": datasets.Dataset.from_dict({"x": [3]})}).save_to_disk(str(splits))
    assert sorted(load_dataset_dict(str(splits))) == ["train", "validation"]

    files = tmp_path / "files"  # a folder of data files, not a save_to_disk folder: datasets.load_dataset reads it
    files.mkdir()
    (files / "train.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    assert load_dataset_dict(str(files), cache_dir=str(tmp_path / "cache"))["train"].num_rows == 2

    with pytest.raises(DataFormatError, match=r"--dataset_name '.*nowhere': could not load it"):
        load_dataset_dict(str(tmp_path / "nowhere"), cache_dir=str(tmp_path / "cache"))


def test_softmax_and_sigmoid():
    logits = np.array([[1000.0, 1000.0, -1000.0], [0.0, np.log(3.0), 0.0]])
    np.testing.assert_allclose(softmax(logits), [[0.5, 0.5, 0.0], [0.2, 0.6, 0.2]], atol=1e-12)
    np.testing.assert_allclose(sigmoid(np.array([0.0, np.log(3.0)])), [0.5, 0.75])


def test_model_arguments_hub_kwargs_reach_every_from_pretrained():
    args = ModelArguments(model_name_or_path="m", cache_dir="c", model_revision="r", token="t",
                          trust_remote_code=True)
    assert args.hub_kwargs() == {"cache_dir": "c", "revision": "r", "token": "t", "trust_remote_code": True}
