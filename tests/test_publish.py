"""medheads.hub.publishing / scripts/publish.py: allow-list staging, path scrubbing, clear errors, and the
end-to-end promise: staged -> served by a Hub (olah) -> loaded by repo id, pinned to a commit, in a process
where medheads cannot be imported."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import CUI_LABELS, IMAGE_LABELS, NER_LABELS, backbone_config, encoder_config, make_image_processor

from medheads import (
    FrozenEncoderMultiLabel, FrozenEncoderMultiLabelConfig, HiddenLayerTokenClassifier,
    HiddenLayerTokenClassifierConfig, ViTPatchClassifier, ViTPatchClassifierConfig,
)
from medheads.hub import publishing
from medheads.hub.publishing import PublishError, build_model_card, code_files, main, stage_model

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "scripts" / "publish.py"
TEXT = "the patient has breast cancer and il-2 receptor expression in t cells"
JUNK = ["checkpoint-5/", "optimizer.pt", "training_args.bin", "trainer_state.pkl", "train.csv", "pytorch_model.bin"]


def _build(kind: str):
    torch.manual_seed({"token": 0, "text": 1, "image": 2}[kind])
    if kind == "token":
        config = HiddenLayerTokenClassifierConfig(encoder_config=encoder_config("bert"), hidden_layers=[-1, -2],
                                                  layer_combination="scalar_mix", id2label=NER_LABELS)
        return HiddenLayerTokenClassifier(config).eval()
    if kind == "text":
        config = FrozenEncoderMultiLabelConfig(encoder_config=encoder_config("bert"), pooling="mean",
                                               head_hidden_sizes=[16], id2label=CUI_LABELS)
        return FrozenEncoderMultiLabel(config).eval()
    config = ViTPatchClassifierConfig(backbone_config=backbone_config("vit"), head="patch", patch_projection_size=8,
                                      id2label=IMAGE_LABELS)
    return ViTPatchClassifier(config).eval()


def save_model(kind: str, folder: Path, tokenizer):
    model = _build(kind)
    model.save_pretrained(folder)
    (make_image_processor(32) if kind == "image" else tokenizer).save_pretrained(folder)
    return model


def add_junk(folder: Path) -> None:
    """What a training run leaves beside the model, none of which may be published."""
    (folder / "checkpoint-5").mkdir()
    (folder / "checkpoint-5" / "model.safetensors").write_bytes(b"old")
    (folder / "checkpoint-5" / "loss.png").write_bytes(b"\x89PNG old")
    (folder / "optimizer.pt").write_bytes(b"\x80\x04pickle")
    (folder / "training_args.bin").write_bytes(b"\x80\x04pickle")
    (folder / "trainer_state.pkl").write_bytes(b"\x80\x04pickle")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    (folder / "train.csv").write_text("text,label\nsecret patient note,1\n")
    (folder / "loss.png").write_bytes(b"\x89PNG\r\n\x1a\nplot")
    (folder / "metrics.json").write_text(json.dumps({"eval_f1": 0.81234567, "epoch": 3,
                                                      "output_dir": str(folder)}))
    config = json.loads((folder / "config.json").read_text())
    config["_name_or_path"] = str(folder)
    config["encoder_config"]["_name_or_path"] = "/work/models/some-encoder"
    (folder / "config.json").write_text(json.dumps(config, indent=2))


@pytest.fixture(scope="module")
def text_model_dir(tmp_path_factory, tiny_tokenizer):
    folder = tmp_path_factory.mktemp("trained") / "text"
    save_model("text", folder, tiny_tokenizer)
    add_junk(folder)
    return folder


# ----------------------------------------------------------------------------------------- staging


def test_stage_allow_list_and_scrubbing(text_model_dir, tmp_path):
    staged = stage_model(text_model_dir, "medheads-test/text", staging_dir=tmp_path / "stage")
    files = set(staged.files)
    code = set(code_files(text_model_dir))
    assert code == {"configuration_frozen_encoder_multilabel.py", "modeling_frozen_encoder_multilabel.py",
                    "modeling_common.py", "pipeline_text_classification.py"}  # auto_map's and custom_pipelines'
    # modules + what they import with `from .x import`
    assert files == {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "metrics.json",
                     "README.md", "loss.png", *code}
    assert sorted(staged.skipped) == sorted(JUNK)
    assert not any(name.endswith((".pt", ".bin", ".pkl", ".csv")) for name in files)

    config = json.loads((staged.folder / "config.json").read_text())
    assert config["_name_or_path"] == "" and config["encoder_config"]["_name_or_path"] == ""
    assert config["model_type"] == "medheads-frozen-encoder-multilabel" and config["auto_map"]
    assert json.loads((staged.folder / "metrics.json").read_text())["output_dir"] == "text"
    for name in files:  # no machine path anywhere in what would be uploaded
        if name.endswith((".json", ".md")):
            text = (staged.folder / name).read_text()
            assert str(text_model_dir) not in text and "/work/" not in text, name
    # untouched files are byte-identical copies
    for name in ("model.safetensors", "tokenizer.json", "modeling_common.py"):
        assert (staged.folder / name).read_bytes() == (text_model_dir / name).read_bytes()
    assert str(staged.folder) in staged.describe() and "model.safetensors" in staged.describe()

    card = (staged.folder / "README.md").read_text()
    assert "pipeline_tag: text-classification" in card and "library_name: transformers" in card
    assert all(tag in card for tag in ("custom_code", "medical", "medheads"))
    assert "](loss.png)" in card and "checkpoint-5" not in card
    assert "| eval_f1 | 0.8123 |" in card


def test_staging_dir_must_be_new_or_empty(text_model_dir, tmp_path):
    (tmp_path / "stage").mkdir()
    (tmp_path / "stage" / "old.txt").write_text("x")
    with pytest.raises(PublishError, match="not an empty folder"):
        stage_model(text_model_dir, "medheads-test/text", staging_dir=tmp_path / "stage")
    with pytest.raises(PublishError, match="outside --model_dir"):
        stage_model(text_model_dir, "medheads-test/text", staging_dir=text_model_dir / "stage")


def test_dry_run_cli_and_json_args(text_model_dir, tmp_path, capsys):
    rc = main(["--model_dir", str(text_model_dir), "--repo_id", "medheads-test/text", "--dry_run",
               "--staging_dir", str(tmp_path / "a")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "Dry run: nothing uploaded" in out and "model.safetensors" in out and str(tmp_path / "a") in out
    assert "optimizer.pt" in out.split("Not staged")[1]  # reported as skipped, not staged
    args = tmp_path / "publish.json"
    args.write_text(json.dumps({"model_dir": str(text_model_dir), "repo_id": "medheads-test/text", "dry_run": True,
                                "staging_dir": str(tmp_path / "b")}))
    assert main([str(args)]) == 0
    assert sorted(os.listdir(tmp_path / "a")) == sorted(os.listdir(tmp_path / "b"))


@pytest.mark.parametrize("repo_id", ["no-namespace", "org/has space", "org/x..y", "a/b/c", "org/-x"])
def test_invalid_repo_id(text_model_dir, tmp_path, capsys, repo_id):
    rc = main(["--model_dir", str(text_model_dir), "--repo_id", repo_id, "--dry_run",
               "--staging_dir", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert rc == 2 and "repo_id" in err and repo_id in err
    assert not (tmp_path / "s").exists()  # validated before anything is staged


def test_not_a_medheads_folder(tmp_path, tiny_tokenizer, capsys):
    from transformers import BertForSequenceClassification

    plain = tmp_path / "plain"
    BertForSequenceClassification(encoder_config("bert")).save_pretrained(plain)
    rc = main(["--model_dir", str(plain), "--repo_id", "org/name", "--dry_run"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("error:") == 1
    assert "model_type 'bert'" in err and "auto_map" in err and "save_pretrained(dir)" in err

    (tmp_path / "empty").mkdir()
    with pytest.raises(PublishError, match="no config.json"):
        stage_model(tmp_path / "empty", "org/name")
    with pytest.raises(PublishError, match="is not a folder"):
        stage_model(tmp_path / "missing", "org/name")


def test_broken_medheads_folders_are_refused(text_model_dir, tmp_path):
    pickled = tmp_path / "pickled"
    shutil.copytree(text_model_dir, pickled)
    (pickled / "model.safetensors").unlink()
    with pytest.raises(PublishError, match=r"pickle-based format \(pytorch_model.bin\)"):
        stage_model(pickled, "org/name")

    no_code = tmp_path / "no-code"
    shutil.copytree(text_model_dir, no_code)
    (no_code / "modeling_common.py").unlink()
    (no_code / "tokenizer.json").unlink()
    with pytest.raises(PublishError) as err:
        stage_model(no_code, "org/name")
    message = str(err.value)  # every problem in one message
    assert "modeling_common.py" in message and "tokenizer" in message

    escaping = tmp_path / "escaping"  # auto_map must not make staging copy files from outside the folder
    shutil.copytree(text_model_dir, escaping)
    config = json.loads((escaping / "config.json").read_text())
    config["auto_map"]["AutoConfig"] = "../../outside.Config"
    (escaping / "config.json").write_text(json.dumps(config))
    with pytest.raises(PublishError, match=r"not plain module names: \.\./\.\./outside"):
        stage_model(escaping, "org/name")


def test_push_fails_cleanly_when_hub_unreachable(text_model_dir, tmp_path):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{closed}", HF_TOKEN="hf_not_a_real_token", HF_HOME=str(tmp_path / "h"),
               HF_HUB_DISABLE_TELEMETRY="1")
    stage = tmp_path / "stage"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--model_dir", str(text_model_dir), "--repo_id",
                           "medheads-test/text", "--staging_dir", str(stage)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("error:") == 1
    assert f"127.0.0.1:{closed}" in proc.stderr and "ConnectError" in proc.stderr
    assert f"intact at {stage}" in proc.stderr
    assert {"config.json", "model.safetensors", "README.md"} <= set(os.listdir(stage))


def test_push_calls_and_pinned_usage_line(text_model_dir, tmp_path, monkeypatch, capsys):
    """The success path against a recording stand-in for HfApi (olah is read-only, so it cannot take a push)."""
    import huggingface_hub
    from types import SimpleNamespace

    calls = []

    class FakeApi:
        def __init__(self, endpoint=None, token=None):
            calls.append(("init", endpoint, token))
            self.endpoint = endpoint or "https://hub.example"

        def create_repo(self, repo_id, **kw):
            calls.append(("create_repo", repo_id, kw))

        def create_branch(self, repo_id, branch, **kw):
            calls.append(("create_branch", repo_id, branch))

        def upload_folder(self, folder_path, repo_id, **kw):
            calls.append(("upload_folder", sorted(os.listdir(folder_path)), repo_id, kw))
            return SimpleNamespace(oid="c" * 40, commit_url="https://hub.example/commit", pr_url=None)

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    rc = main(["--model_dir", str(text_model_dir), "--repo_id", "medheads-test/text", "--token", "hf_x",
               "--private", "--revision", "v1", "--commit_message", "first", "--staging_dir", str(tmp_path / "s")])
    out = capsys.readouterr().out
    assert rc == 0
    assert calls[0] == ("init", None, "hf_x")
    assert calls[1] == ("create_repo", "medheads-test/text", {"repo_type": "model", "private": True, "exist_ok": True})
    assert calls[2] == ("create_branch", "medheads-test/text", "v1")
    _, uploaded, repo_id, kw = calls[3]
    assert uploaded == sorted(os.listdir(tmp_path / "s")) and "optimizer.pt" not in uploaded
    assert kw == {"repo_type": "model", "revision": "v1", "create_pr": False, "commit_message": "first"}
    assert f"Pushed commit {'c' * 40} to medheads-test/text" in out
    assert (f'pipeline("text-classification", model="medheads-test/text", revision="{"c" * 40}", '
            "trust_remote_code=True)") in out


# ----------------------------------------------------------------------------------------- model card


def test_model_card_template_selection(text_model_dir, tmp_path):
    templates = tmp_path / "cards"
    templates.mkdir()
    # no templates at all: one clear error, never a card made up in code
    with pytest.raises(PublishError, match="No model-card template"):
        build_model_card(text_model_dir, "org/name", templates_dir=templates)
    # the installed templates: the package's generic card for a folder without a run summary
    assert publishing.TEMPLATES_DIR.samefile(REPO_ROOT / "model_cards")
    card = build_model_card(text_model_dir, "org/name", revision="a" * 40)
    assert card.data.pipeline_tag == "text-classification" and card.data.library_name == "transformers"
    assert card.data.tags == ["custom_code", "medical", "medheads"]
    assert f'revision="{"a" * 40}"' in card.text
    (templates / "generic.md").write_text("---\n{{ card_data }}\n---\nGENERIC {{ repo_id }}\n")
    assert "GENERIC org/name" in build_model_card(text_model_dir, "org/name", templates_dir=templates).text
    (templates / "medheads-frozen-encoder-multilabel.md").write_text(
        "---\n{{ card_data }}\n---\nSPECIFIC {{ labels | join(' ') }} {{ metrics.eval_f1 }}\n")
    card = build_model_card(text_model_dir, "org/name", templates_dir=templates)
    assert card.text.strip() == f"SPECIFIC {' '.join(CUI_LABELS.values())} 0.8123"


# ----------------------------------------------------------------------------------------- end to end

CLIENT = textwrap.dedent(
    r'''
    import json, sys
    sys.modules["medheads"] = None  # medheads is pip-installed (editable) in this venv: hide it
    try:
        import medheads  # noqa: F401
        medheads_importable = True
    except ImportError:
        medheads_importable = False

    import numpy as np, torch
    from PIL import Image
    from transformers import (AutoConfig, AutoModelForImageClassification, AutoModelForSequenceClassification,
                              AutoModelForTokenClassification, pipeline)

    spec = json.load(open(sys.argv[1]))
    AUTO = {"token": AutoModelForTokenClassification, "text": AutoModelForSequenceClassification,
            "image": AutoModelForImageClassification}
    TASK = {"token": "ner", "text": "text-classification", "image": "image-classification"}
    out = {"medheads_importable": medheads_importable, "sys_path_has_repo": any(p == spec["repo_root"] for p in sys.path)}
    for kind, item in spec["models"].items():
        pin = dict(revision=item["revision"], trust_remote_code=True)
        config = AutoConfig.from_pretrained(item["repo_id"], **pin)
        model = AUTO[kind].from_pretrained(item["repo_id"], **pin).eval()
        inputs = {k: torch.tensor(v) for k, v in item["inputs"].items()}
        with torch.no_grad():
            logits = model(**inputs).logits
        pipe = pipeline(TASK[kind], model=item["repo_id"], **pin)
        if kind == "image":
            result = pipe(Image.fromarray(np.array(item["image"], dtype=np.uint8), mode="L"))
        elif kind == "text":
            result = pipe(item["text"], top_k=None)
        else:
            result = pipe(item["text"], aggregation_strategy="simple")
        default = pipe(item["text"]) if kind != "image" else None  # the text pipelines' default call
        out[kind] = {"config_class": type(config).__name__, "model_class": type(model).__name__,
                     "pipeline_class": f"{type(pipe).__module__}.{type(pipe).__name__}",
                     "default_call": json.loads(json.dumps(default, default=float)),
                     "model_module": type(model).__module__, "logits": logits.tolist(),
                     "pipeline": json.loads(json.dumps(result, default=float)),
                     "pipeline_class": type(pipe).__module__ + "." + type(pipe).__name__}
    print("@@RESULT@@" + json.dumps(out))
    '''
)


def test_end_to_end_publish_serve_load_without_medheads(tmp_path, tiny_tokenizer):
    from hub_server import local_hub

    trained, staged, spec, expected, models = tmp_path / "trained", {}, {}, {}, {}
    encoded = tiny_tokenizer([TEXT], return_tensors="pt")
    image = (np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8)
    pixel_values = make_image_processor(32)(images=[np.stack([image] * 3, -1)], return_tensors="pt")["pixel_values"]
    for kind in ("token", "text", "image"):
        model = models[kind] = save_model(kind, trained / kind, tiny_tokenizer)
        if kind == "text":
            add_junk(trained / kind)
        repo_id = f"medheads-test/tiny-{kind}"
        staged[repo_id] = stage_model(trained / kind, repo_id, staging_dir=tmp_path / "staged" / kind).folder
        inputs = ({"pixel_values": pixel_values} if kind == "image" else
                  {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]})
        with torch.no_grad():
            expected[kind] = model(**inputs).logits
        spec[kind] = {"repo_id": repo_id, "inputs": {k: v.tolist() for k, v in inputs.items()}, "text": TEXT,
                      "image": image.tolist()}

    client, spec_file, work = tmp_path / "client.py", tmp_path / "spec.json", tmp_path / "elsewhere"
    client.write_text(CLIENT)
    work.mkdir()
    with local_hub(staged) as hub:
        for kind in spec:
            spec[kind]["revision"] = hub.commits[spec[kind]["repo_id"]]
        spec_file.write_text(json.dumps({"models": spec, "repo_root": str(REPO_ROOT)}))
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("HF_", "HUGGINGFACE_", "PYTHONPATH", "TRANSFORMERS_"))}
        env.update(hub.env(home=tmp_path / "hf_home"), TOKENIZERS_PARALLELISM="false")
        proc = subprocess.run([sys.executable, str(client), str(spec_file)], cwd=work, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{proc.stderr[-4000:]}\n--- olah ---\n{hub.log_tail(40)}"
        assert " 401 " not in hub.log_tail(10_000)  # pinned loads never hit olah's branch-resolution gap
    result = json.loads([l for l in proc.stdout.splitlines() if l.startswith("@@RESULT@@")][-1][len("@@RESULT@@"):])

    assert result["medheads_importable"] is False and result["sys_path_has_repo"] is False
    for kind, model in models.items():
        got = result[kind]
        assert got["model_class"] == type(model).__name__ and got["config_class"] == type(model.config).__name__
        assert got["model_module"].startswith("transformers_modules"), got["model_module"]  # the repo's own code
        torch.testing.assert_close(torch.tensor(got["logits"]), expected[kind], atol=1e-6, rtol=0)

    token = result["token"]["pipeline"]
    assert isinstance(token, list) and all({"entity_group", "score", "word", "start", "end"} <= set(e) for e in token)
    for kind, name in (("token", "MedheadsTokenClassificationPipeline"), ("text", "MedheadsTextClassificationPipeline")):
        # the pipeline code came from the repo (config.custom_pipelines), not from transformers or medheads
        assert result[kind]["pipeline_class"].startswith("transformers_modules") and \
            result[kind]["pipeline_class"].endswith(name), result[kind]["pipeline_class"]
    for entity in result["token"]["default_call"]:
        assert entity["word"] == TEXT[entity["start"]:entity["end"]]
    by_label = {row["label"]: row["score"] for row in result["text"]["pipeline"]}
    sigmoid = torch.sigmoid(expected["text"][0])
    assert by_label == pytest.approx({CUI_LABELS[i]: float(sigmoid[i]) for i in CUI_LABELS}, abs=1e-5)
    thresholds = models["text"].config.thresholds or 0.5
    thresholds = [thresholds] * len(CUI_LABELS) if isinstance(thresholds, float) else thresholds
    decided = [CUI_LABELS[i] for i in CUI_LABELS if float(sigmoid[i]) >= thresholds[i]]
    assert sorted(row["label"] for row in result["text"]["default_call"]) == sorted(decided)
    image_out = result["image"]["pipeline"]
    # the image pipeline that ships in the repo (custom_pipelines), fetched by Hub id with its image reader
    assert result["image"]["pipeline_class"].startswith("transformers_modules.")
    assert result["image"]["pipeline_class"].endswith(".pipeline_image_classification.MedheadsImageClassificationPipeline")
    assert {row["label"] for row in image_out} == set(IMAGE_LABELS.values())
    assert sum(row["score"] for row in image_out) == pytest.approx(1.0, abs=1e-5)
