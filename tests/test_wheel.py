"""What a user who runs `pip install medheads` gets, and what happens to checkpoints saved before the layout change.

1. The wheel, installed in a fresh virtual environment without the checkout on the path (run from a temporary
   folder), gives a working `medheads` command: `--help`, a mistyped flag as one line with status 2, and
   `medheads publish --dry_run` of a saved model writing the model's own card (the templates ship as package data),
   not the generic one.
2. Folders saved by medheads before the move to `medheads/models/` (tests/fixtures/pre_move_checkpoints.tar.gz, made
   by tests/fixtures/make_pre_move_checkpoints.py from commit 7ce7138) still load by `trust_remote_code` in a process
   where `import medheads` fails, with the logits the old code computed, and load in the current medheads too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "pre_move_checkpoints.tar.gz"
TEMPLATE_MARK = "A medheads `ViTPatchClassifier`"  # a sentence of model_cards/medheads-vit-patch-classifier.md


def clean_env(**extra) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
    return {**env, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory):
    """A new virtual environment holding only the built wheel; torch, transformers etc. come from this test
    environment's site-packages through a .pth line (a plain path entry: the .pth files there, such as the editable
    install's finder, are not run), so nothing is downloaded or reinstalled."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a clean copy: a stale build/ in the checkout would leak old modules into the wheel
    for name in ("pyproject.toml", "README.md"):
        source.mkdir(exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    for name in ("medheads", "model_cards"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(root / "dist"), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = (root / "dist").glob("medheads-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True, timeout=300, env=clean_env())
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return {"wheel": wheel, "venv": venv, "python": python, "site": site, "cwd": elsewhere}


def test_wheel_contents(fresh_env):
    names = zipfile.ZipFile(fresh_env["wheel"]).namelist()
    for template in ("generic.md", "medheads-hidden-layer-token-classifier.md", "medheads-frozen-encoder-multilabel.md",
                     "medheads-vit-patch-classifier.md"):
        assert f"medheads/model_cards/{template}" in names
    assert "medheads/models/modeling_common.py" in names and "medheads/training/cli.py" in names
    assert not any("hub_server" in name or name.startswith("tests/") for name in names)


PROBE = """
import json, sys
import medheads
after_models = sorted(m for m in sys.modules if m.startswith("medheads"))
import medheads.hub.publishing
after_hub = sorted(m for m in sys.modules if m.startswith("medheads"))
print(json.dumps([medheads.__file__, sys.path, after_models, after_hub]))
"""


def test_installed_package_is_the_wheel_not_the_checkout(fresh_env):
    probe = subprocess.run([str(fresh_env["python"]), "-c", PROBE], capture_output=True, text=True, timeout=300,
                           cwd=fresh_env["cwd"], env=clean_env())
    assert probe.returncode == 0, probe.stderr
    location, path, after_models, after_hub = json.loads(probe.stdout)
    assert Path(location).is_relative_to(fresh_env["site"]), location
    assert not any(entry and Path(entry).resolve() == REPO for entry in path)
    # imports flow one way: the package imports only its models; the hub never imports the training side
    assert all(name == "medheads" or name.startswith("medheads.models") for name in after_models), after_models
    assert not any(name.startswith("medheads.training") for name in after_hub), after_hub


def test_medheads_command_from_the_wheel(fresh_env, tmp_path):
    medheads = str(fresh_env["venv"] / "bin" / "medheads")
    shown = subprocess.run([medheads, "--help"], capture_output=True, text=True, timeout=300, cwd=fresh_env["cwd"],
                           env=clean_env())
    assert shown.returncode == 0, shown.stderr
    assert all(command in shown.stdout for command in ("train-ner", "train-text", "train-image", "publish"))

    typo = subprocess.run([medheads, "train-ner", "--learning_rte", "1"], capture_output=True, text=True,
                          timeout=300, cwd=fresh_env["cwd"], env=clean_env())
    assert typo.returncode == 2
    assert typo.stderr.strip().splitlines() == [
        "medheads train-ner: error: unknown flag --learning_rte (did you mean '--learning_rate'?); see --help for "
        "the valid flags"]

    from test_cards import build_image

    folder = tmp_path / "xray"
    build_image(folder)
    staged = tmp_path / "staged"
    published = subprocess.run([medheads, "publish", "--model_dir", str(folder), "--repo_id", "org/tiny-xray",
                                "--dry_run", "--staging_dir", str(staged)], capture_output=True, text=True,
                               timeout=300, cwd=fresh_env["cwd"], env=clean_env())
    assert published.returncode == 0, published.stderr
    card = (staged / "README.md").read_text()
    assert TEMPLATE_MARK in card  # the model's own template, read from the installed package data
    assert "## Labels" not in card  # a heading only the generic template has
    template = Path(str(fresh_env["site"] / "medheads" / "model_cards" / "medheads-vit-patch-classifier.md"))
    assert TEMPLATE_MARK in template.read_text()


# --------------------------------------------------------------------------------------------------------------------


LOAD_OLD = r"""
import json, sys
sys.modules["medheads"] = None  # `import medheads` now fails: only the checkpoints' own code can load them
import torch
from transformers import (AutoModelForImageClassification, AutoModelForSequenceClassification,
                          AutoModelForTokenClassification)
auto = {"token": AutoModelForTokenClassification, "text": AutoModelForSequenceClassification,
        "image": AutoModelForImageClassification}
root = sys.argv[1]
expected = json.load(open(f"{root}/expected.json"))
out = {}
for kind, item in expected.items():
    model = auto[kind].from_pretrained(f"{root}/{kind}", trust_remote_code=True).eval()
    inputs = item["inputs"]
    if kind == "image":
        feed = {"pixel_values": torch.tensor(inputs["pixel_tenths"]) / 10}
    else:
        feed = {key: torch.tensor(value) for key, value in inputs.items()}
    with torch.no_grad():
        logits = model(**feed).logits
    out[kind] = {"class": type(model).__name__, "module": type(model).__module__, "logits": logits.flatten().tolist(),
                 "shape": list(logits.shape)}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def pre_move(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre_move")
    with tarfile.open(FIXTURE) as archive:
        archive.extractall(root, filter="data")
    return root / "pre_move_checkpoints"


def test_checkpoints_saved_before_the_move_load_by_remote_code(pre_move, tmp_path):
    expected = json.loads((pre_move / "expected.json").read_text())
    for kind in ("token", "text", "image"):
        auto_map = json.loads((pre_move / kind / "config.json").read_text())["auto_map"]
        assert all("." in entry and "/" not in entry and not entry.startswith("medheads") for entry in
                   auto_map.values()), auto_map  # flat module names, as save_pretrained wrote them before the move
    result = subprocess.run([sys.executable, "-c", LOAD_OLD, str(pre_move)], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path, env=clean_env())
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    classes = {"token": "HiddenLayerTokenClassifier", "text": "FrozenEncoderMultiLabel", "image": "ViTPatchClassifier"}
    for kind, item in expected.items():
        assert loaded[kind]["class"] == classes[kind] and loaded[kind]["module"].startswith("transformers_modules")
        assert loaded[kind]["shape"] == item["shape"]
        torch.testing.assert_close(torch.tensor(loaded[kind]["logits"]), torch.tensor(item["logits"]), atol=1e-5,
                                   rtol=1e-4)


def test_checkpoints_saved_before_the_move_load_in_current_medheads(pre_move):
    from transformers import AutoModelForImageClassification, AutoModelForSequenceClassification, \
        AutoModelForTokenClassification

    import medheads

    expected = json.loads((pre_move / "expected.json").read_text())
    auto = {"token": AutoModelForTokenClassification, "text": AutoModelForSequenceClassification,
            "image": AutoModelForImageClassification}
    for kind, item in expected.items():
        model = auto[kind].from_pretrained(pre_move / kind).eval()  # the installed classes, no remote code
        assert type(model).__module__.startswith("medheads.models.")
        inputs = item["inputs"]
        feed = {"pixel_values": torch.tensor(inputs["pixel_tenths"]) / 10} if kind == "image" else \
            {key: torch.tensor(value) for key, value in inputs.items()}
        with torch.no_grad():
            logits = model(**feed).logits
        torch.testing.assert_close(logits.flatten(), torch.tensor(item["logits"]), atol=1e-5, rtol=1e-4)
    assert medheads.MODELS
