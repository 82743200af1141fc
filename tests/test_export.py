"""ONNX export: the exported folders load without medheads (stock pipeline + trust_remote_code) and reproduce the
PyTorch logits: fp32 within 1e-4, int8 within INT8_TOLERANCE, at batch 1 and 3, several lengths, and a text longer
than the text model's window."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import CUI_LABELS, IMAGE_LABELS, NER_LABELS, backbone_config, encoder_config, make_image_processor

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from medheads import (  # noqa: E402
    FrozenEncoderMultiLabel, FrozenEncoderMultiLabelConfig, HiddenLayerTokenClassifier,
    HiddenLayerTokenClassifierConfig, ViTPatchClassifier, ViTPatchClassifierConfig,
)
from medheads.deploy.export import export  # noqa: E402
from medheads.training.cli import main as cli  # noqa: E402

LOADER = Path(__file__).with_name("onnx_loader.py")
FP32_TOLERANCE = 1e-4
INT8_TOLERANCE = 0.05  # tiny random models' logits are O(0.1-1); measured int8 error is ~5e-3
WINDOW = 16
TEXTS = ["the patient has breast cancer", "ct scan",
         "il-2 receptor expression in t cells of the patient with a lung tumor and chest pain",
         "mri of the brain shows a mass lesion in the left upper lobe ."]
LONG = " ".join(TEXTS * 2)  # ~60 tokens: four windows of 16
BATCHES = {"token": [[TEXTS[0]], TEXTS[:3], [TEXTS[2]]],
           "text": [[TEXTS[0]], TEXTS[:3], [LONG], [LONG, TEXTS[1], TEXTS[3]]]}
TASKS = {"token": "token-classification", "text": "text-classification", "image": "image-classification"}


def images(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.random((40, 40)) * 255).astype(np.uint8) for _ in range(count)]


def tiny_models(pooling: str = "mean") -> dict:
    torch.manual_seed(0)
    return {
        # reads layers 2 and 3 of a 4-layer encoder: the graph holds a truncated encoder
        "token": HiddenLayerTokenClassifier(HiddenLayerTokenClassifierConfig(
            encoder_config=encoder_config("bert"), hidden_layers=[2, 3], layer_combination="scalar_mix",
            id2label=NER_LABELS)).eval(),
        "text": FrozenEncoderMultiLabel(FrozenEncoderMultiLabelConfig(
            encoder_config=encoder_config("bert"), pooling=pooling, head_hidden_sizes=[16], id2label=CUI_LABELS,
            thresholds=[0.4, 0.5, 0.6, 0.5], max_chunk_length=WINDOW)).eval(),
        "image": ViTPatchClassifier(ViTPatchClassifierConfig(
            backbone_config=backbone_config("deit"), head="patch", patch_projection_size=8,
            id2label=IMAGE_LABELS)).eval(),
    }


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("export")
    models = tiny_models()
    reports = {}
    for kind, model in models.items():
        model.save_pretrained(root / kind)
        (make_image_processor(32) if kind == "image" else tiny_tokenizer).save_pretrained(root / kind)
        samples = [Image.fromarray(a) for a in images(8)] if kind == "image" else TEXTS + [LONG]
        reports[kind] = export(root / kind, root / f"{kind}-onnx", int8=True, check_samples=samples)
    return root, models, reports


def pytorch_logits(root: Path, kind: str, tokenizer) -> list[torch.Tensor]:
    model = type(tiny_models()[kind]).from_pretrained(root / kind).eval()
    out = []
    with torch.no_grad():
        if kind == "image":
            processor = make_image_processor(32)
            for batch in (images(1), images(3, seed=1)):
                pixels = processor(images=[Image.fromarray(a) for a in batch], return_tensors="pt")["pixel_values"]
                out.append(model(pixel_values=pixels).logits)
        else:
            for batch in BATCHES[kind]:
                out.append(model(**tokenizer(batch, return_tensors="pt", padding=True)).logits)
    return out


def run_loader(spec: dict, tmp_path: Path) -> dict:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, str(LOADER), str(spec_file)], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def loader_spec(root: Path, variant: str) -> dict:
    spec = {}
    for kind in ("token", "text", "image"):
        batches = [[a.tolist() for a in images(1)], [a.tolist() for a in images(3, seed=1)]] if kind == "image" \
            else BATCHES[kind]
        spec[kind] = {"path": str(root / f"{kind}-onnx"), "task": TASKS[kind], "variant": variant,
                      "batches": batches}
    return spec


def test_export_check_report(exported):
    root, models, reports = exported
    for kind, report in reports.items():
        assert report["variants"] == ["fp32", "int8"]
        assert report["logits"]["fp32"]["max_abs_diff"] <= FP32_TOLERANCE
        assert report["logits"]["int8"]["max_abs_diff"] <= INT8_TOLERANCE
        folder = root / f"{kind}-onnx"
        for name in ("model.onnx", "model_int8.onnx", "modeling_onnx.py", "configuration_onnx.py", "README.md"):
            assert (folder / name).is_file(), name
        config = json.loads((folder / "config.json").read_text())
        assert config["model_type"].endswith("-onnx") and config["onnx_default"] == "int8"
    shapes = reports["text"]["logits"]["fp32"]["input_shapes"]
    assert max(s[-1] for s in shapes) > WINDOW  # the check covered a text longer than the window


@pytest.fixture(scope="module")
def loaded(exported, tmp_path_factory):
    """What a fresh process without medheads gets from each exported folder, per graph variant."""
    root = exported[0]
    return {variant: run_loader(loader_spec(root, variant), tmp_path_factory.mktemp(f"load-{variant}"))
            for variant in ("fp32", "int8")}


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_onnx_folders_load_without_medheads(exported, loaded, tiny_tokenizer, variant):
    root, models, _ = exported
    result = loaded[variant]
    tolerance = FP32_TOLERANCE if variant == "fp32" else INT8_TOLERANCE
    for kind in ("token", "text", "image"):
        assert result[kind]["module"].startswith("transformers_modules"), result[kind]["module"]
        expected = pytorch_logits(root, kind, tiny_tokenizer)
        assert len(result[kind]["logits"]) == len(expected)
        for got, want in zip(result[kind]["logits"], expected):
            got = torch.tensor(got)
            assert got.shape == want.shape, kind
            torch.testing.assert_close(got, want, atol=tolerance, rtol=0)
    # the stock pipelines ran on the ONNX models
    assert {row["label"] for row in result["text"]["pipeline"][0]} == set(CUI_LABELS.values())
    assert {row["label"] for row in result["image"]["pipeline"][0]} == set(IMAGE_LABELS.values())
    assert isinstance(result["token"]["pipeline"][0], list)


def test_onnx_pipeline_matches_pytorch_pipeline(exported, loaded):
    from transformers import pipeline

    root, _, _ = exported
    result = loaded["fp32"]
    for kind in ("token", "text"):
        pipe = pipeline(TASKS[kind], model=str(root / kind), trust_remote_code=True)
        kwargs = {"aggregation_strategy": "simple"} if kind == "token" else {"top_k": None}
        want = pipe(BATCHES[kind][0], **kwargs)
        got = result[kind]["pipeline"]
        if kind == "token":
            assert [[(e["entity_group"], e["start"], e["end"]) for e in s] for s in got] == \
                   [[(e["entity_group"], e["start"], e["end"]) for e in s] for s in want]
        else:
            for g, w in zip(got, want):
                assert {r["label"]: round(r["score"], 4) for r in g} == {r["label"]: round(r["score"], 4) for r in w}


@pytest.mark.parametrize("pooling", ["cls", "max"])
def test_text_poolings_over_windows(tmp_path, tiny_tokenizer, pooling):
    model = tiny_models(pooling)["text"]
    model.save_pretrained(tmp_path / "m")
    tiny_tokenizer.save_pretrained(tmp_path / "m")
    report = export(tmp_path / "m", tmp_path / "onnx", check_samples=TEXTS + [LONG])
    assert report["logits"]["fp32"]["max_abs_diff"] <= FP32_TOLERANCE


def test_cli_export_with_validation_quality(tmp_path, tiny_tokenizer, capsys):
    model = tiny_models()["token"]
    model.save_pretrained(tmp_path / "ner")
    tiny_tokenizer.save_pretrained(tmp_path / "ner")
    conll = tmp_path / "dev.tsv"
    conll.write_text("il-2\tB-protein\nreceptor\tI-protein\nin\tO\nt\tB-cell_type\ncells\tI-cell_type\n\n"
                     "the\tO\npatient\tO\nhas\tO\ncancer\tO\n\n")
    status = cli(["export", str(tmp_path / "ner"), str(tmp_path / "out"), "--int8", "--validation_file", str(conll)])
    assert status == 0
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "span_f1" in readme and "onnx_int8" in readme and "pytorch" in readme
    report = json.loads((tmp_path / "out" / "export_check.json").read_text())
    assert set(report["quality"]) == {"pytorch", "onnx_fp32", "onnx_int8"}
    # fp32 ONNX makes the same decisions as PyTorch
    assert report["quality"]["onnx_fp32"] == report["quality"]["pytorch"]

    # a second export into the same folder is refused, with one line and status 2
    capsys.readouterr()
    assert cli(["export", str(tmp_path / "ner"), str(tmp_path / "out"), "--validation_file", str(conll)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_cli_export_errors(tmp_path, capsys):
    assert cli(["export", str(tmp_path / "missing"), str(tmp_path / "out"), "--validation_file", "x.tsv"]) == 2
    err = capsys.readouterr().err
    assert "medheads export: error:" in err and "Traceback" not in err


def test_shipped_pipeline_code_travels_with_the_onnx_folder(tmp_path, tiny_tokenizer):
    """A checkpoint whose config names its own pipeline (`custom_pipelines`) keeps it in the ONNX folder, and the
    stock `pipeline()` runs that class on the ONNX Runtime model in a process without medheads."""
    model = tiny_models()["token"]
    model.config.custom_pipelines = {"ner": {"impl": "pipeline_probe.ProbePipeline",
                                             "pt": ["AutoModelForTokenClassification"], "type": "text"}}
    model.save_pretrained(tmp_path / "m")
    tiny_tokenizer.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "pipeline_probe.py").write_text(
        "from transformers import TokenClassificationPipeline\n\n\n"
        "class ProbePipeline(TokenClassificationPipeline):\n"
        "    def postprocess(self, *args, **kwargs):\n"
        "        return {'probe': True, 'entities': super().postprocess(*args, **kwargs)}\n")
    export(tmp_path / "m", tmp_path / "onnx", check_samples=TEXTS)
    assert (tmp_path / "onnx" / "pipeline_probe.py").is_file()
    code = ("import sys, json; sys.modules['medheads'] = None\n"
            "from transformers import pipeline\n"
            f"pipe = pipeline('ner', model={str(tmp_path / 'onnx')!r}, trust_remote_code=True)\n"
            "out = pipe('the patient has breast cancer')\n"
            "print(json.dumps([type(pipe).__name__, type(pipe.model).__name__, out['probe']]))\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [
        "ProbePipeline", "MedheadsOnnxForTokenClassification", True]


def test_cli_export_rebuilds_a_text_models_validation_split(tmp_path, tiny_tokenizer):
    """No --validation_file: the split the text model was trained with is rebuilt from metrics.json (a seeded
    percentage of the training file, named relative to the directory training ran in)."""
    import csv

    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    rows = [(f"{text} {i}", ";".join(list(CUI_LABELS.values())[i % 3:i % 3 + 2])) for i, text in
            enumerate(TEXTS * 5)]
    with open(repo / "data" / "captions.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("caption", "cuis"), *rows])
    model = tiny_models()["text"]
    folder = repo / "outputs" / "text"
    model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    (folder / "metrics.json").write_text(json.dumps({"script": "train_text_classifier.py", "arguments": {
        "train_file": "data/captions.csv", "text_column_name": "caption", "label_column_name": "cuis",
        "label_separator": ";", "validation_split_percentage": 25.0, "test_split_percentage": 0.0, "seed": 7}}))
    assert cli(["export", str(folder), str(tmp_path / "onnx"), "--int8"]) == 0  # cwd is not repo/
    report = json.loads((tmp_path / "onnx" / "export_check.json").read_text())
    assert "validation split as trained" in report["validation"] and "first 5" in report["validation"]
    assert set(report["quality"]["pytorch"]) == {"micro_f1", "subset_accuracy"}


def test_too_long_token_input_is_one_clear_error(exported):
    import transformers

    root = exported[0]
    model = transformers.AutoModelForTokenClassification.from_pretrained(root / "token-onnx", trust_remote_code=True)
    with pytest.raises(ValueError, match="positions"):
        model(input_ids=torch.ones(1, 200, dtype=torch.long))  # the tiny encoder has 128 positions


@pytest.mark.parametrize("arch", ["roberta", "modernbert"])
def test_other_encoders_export_exactly(tmp_path, tiny_tokenizer, arch):
    """RoBERTa (positions counted from the padding id) and ModernBERT (local attention, no token types)."""
    torch.manual_seed(0)
    models = {"token": HiddenLayerTokenClassifier(HiddenLayerTokenClassifierConfig(
                  encoder_config=encoder_config(arch), hidden_layers=[2], id2label=NER_LABELS)),
              "text": FrozenEncoderMultiLabel(FrozenEncoderMultiLabelConfig(
                  encoder_config=encoder_config(arch), head_hidden_sizes=[16], id2label=CUI_LABELS,
                  max_chunk_length=WINDOW))}
    for kind, model in models.items():
        model.save_pretrained(tmp_path / kind)
        tiny_tokenizer.save_pretrained(tmp_path / kind)
        report = export(tmp_path / kind, tmp_path / f"{kind}-onnx", check_samples=TEXTS + [LONG])
        assert report["logits"]["fp32"]["max_abs_diff"] <= FP32_TOLERANCE, kind


def test_crf_model_exports_emissions_and_decodes_like_pytorch(tmp_path, tiny_tokenizer):
    """A CRF model's graph returns the emissions; the folder's runtime class runs the model's own CRF code on them, so
    a process without medheads gets the PyTorch logits (log marginals, Viterbi path as argmax) and the same valid-BIO
    entities from the pipeline."""
    from transformers import pipeline

    torch.manual_seed(0)
    model = HiddenLayerTokenClassifier(HiddenLayerTokenClassifierConfig(
        encoder_config=encoder_config("bert"), hidden_layers=[2], id2label=NER_LABELS, use_crf=True)).eval()
    with torch.no_grad():  # transitions far from their zero init, so decoding differs from a per-token argmax
        model.crf.transitions.normal_(0, 2.0)
        model.crf.start_transitions.normal_(0, 2.0)
    model.save_pretrained(tmp_path / "crf")
    tiny_tokenizer.save_pretrained(tmp_path / "crf")
    report = export(tmp_path / "crf", tmp_path / "crf-onnx", int8=True, check_samples=TEXTS + [LONG])
    assert report["logits"]["fp32"]["max_abs_diff"] <= FP32_TOLERANCE
    config = json.loads((tmp_path / "crf-onnx" / "config.json").read_text())
    assert set(config["crf_parameters"]) == {"start_transitions", "end_transitions", "transitions"}
    assert (tmp_path / "crf-onnx" / "crf.py").is_file()
    result = run_loader({"crf": {"path": str(tmp_path / "crf-onnx"), "task": "token-classification",
                                 "variant": "fp32", "batches": BATCHES["token"]}}, tmp_path)["crf"]
    with torch.no_grad():
        for batch, logits in zip(BATCHES["token"], result["logits"]):
            encoded = tiny_tokenizer(batch, return_tensors="pt", padding=True)
            expected = model(**encoded).logits
            np.testing.assert_allclose(np.array(logits), expected.numpy(), atol=FP32_TOLERANCE)
            assert all(model.crf.is_valid(row[mask.bool()].tolist()) for row, mask in
                       zip(torch.tensor(logits).argmax(-1), encoded["attention_mask"]))
    reference = pipeline("token-classification", model=str(tmp_path / "crf"), trust_remote_code=True)
    expected_entities = reference(BATCHES["token"][0], aggregation_strategy="simple")
    def spans(results):
        return [[(e["start"], e["end"], e["entity_group"], e["word"]) for e in entities] for entities in results]

    assert spans(expected_entities) == spans(result["pipeline"]) and spans(expected_entities)[0]
    assert [e["score"] for e in result["pipeline"][0]] == pytest.approx(
        [float(e["score"]) for e in expected_entities[0]], abs=1e-4)


def test_runtime_session_stops_spinning_after_each_run_unless_asked(exported):
    """The shipped runtime class stops ONNX Runtime's spin-waiting at the end of each run (the pipelines' Python work
    between runs needs the cores); session_options given by the user are used as they are."""
    import onnxruntime as ort

    from medheads.deploy.export import load_onnx_model

    folder = exported[0] / "token-onnx"
    key = "session.intra_op.allow_spinning"
    model = load_onnx_model(folder, "int8")
    assert model.session.get_session_options().get_session_config_entry("session.force_spinning_stop") == "1"
    own = ort.SessionOptions()
    own.add_session_config_entry(key, "1")
    runtime_class = type(model)
    options = runtime_class.from_pretrained(folder, onnx_variant="int8", session_options=own, num_threads=1) \
        .session.get_session_options()
    assert options.get_session_config_entry(key) == "1" and options.intra_op_num_threads == 1
    # through the Auto class / pipeline(model_kwargs=...), which deep-copy their arguments: a dict
    import transformers

    chosen = transformers.AutoModelForTokenClassification.from_pretrained(
        folder, trust_remote_code=True, onnx_variant="int8",
        session_options={key: "1", "graph_optimization_level": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED})
    options = chosen.session.get_session_options()
    assert options.get_session_config_entry(key) == "1"
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED


def test_int8_graph_keeps_the_classifier_in_fp32(exported):
    import onnx

    from medheads.deploy.export import head_matmuls

    root = exported[0]
    for kind in ("token", "text", "image"):
        fp32 = onnx.load(str(root / f"{kind}-onnx" / "model.onnx")).graph
        head = head_matmuls(fp32)
        assert len(head) == 1, kind
        int8 = {node.name: node.op_type for node in onnx.load(str(root / f"{kind}-onnx" / "model_int8.onnx")).graph.node}
        # the quantizer may rewrite a Gemm as <name>_MatMul + <name>_Add; either way no integer op for the head
        kept = [op for name, op in int8.items() if name in (head[0], f"{head[0]}_MatMul")]
        assert kept and all(op in ("MatMul", "Gemm") for op in kept), (kind, kept)
        assert not [name for name, op in int8.items() if name.startswith(head[0]) and "Integer" in op], kind
        assert any(op == "MatMulInteger" for op in int8.values()), kind  # the rest is int8


def test_exported_multi_label_image_folder_returns_the_thresholded_decision(tmp_path):
    """The exported folder's model type is `<type>-onnx`: the shipped image pipeline still recognises it as a medheads
    model, so a default call returns the label set over the config's thresholds, as the PyTorch folder does."""
    from transformers import pipeline

    torch.manual_seed(0)
    model = ViTPatchClassifier(ViTPatchClassifierConfig(
        backbone_config=backbone_config("deit"), head="patch", patch_projection_size=8, id2label=IMAGE_LABELS,
        problem_type="multi_label_classification", thresholds=[0.3, 0.5, 0.7][:len(IMAGE_LABELS)])).eval()
    model.save_pretrained(tmp_path / "multi")
    make_image_processor(32).save_pretrained(tmp_path / "multi")
    export(tmp_path / "multi", tmp_path / "multi-onnx", check_samples=[Image.fromarray(a) for a in images(8)])
    pictures = [Image.fromarray(a) for a in images(4, seed=3)]
    expected = pipeline("image-classification", model=str(tmp_path / "multi"), trust_remote_code=True)(pictures)
    onnx = pipeline("image-classification", model=str(tmp_path / "multi-onnx"), trust_remote_code=True)
    assert type(onnx).__name__ == "MedheadsImageClassificationPipeline"
    got = onnx(pictures)
    assert [[row["label"] for row in rows] for rows in got] == [[row["label"] for row in rows] for rows in expected]
    for rows, reference in zip(got, expected):
        assert [row["score"] for row in rows] == pytest.approx([row["score"] for row in reference], abs=1e-4)
