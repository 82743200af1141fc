"""`medheads predict`: results equal the pipeline's, in input order; resumable; PyTorch and ONNX folders; images;
two `accelerate` processes write the same file as one."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import CUI_LABELS, IMAGE_LABELS, NER_LABELS, backbone_config, encoder_config, make_image_processor
from transformers import pipeline

from medheads import (
    FrozenEncoderMultiLabel, FrozenEncoderMultiLabelConfig, HiddenLayerTokenClassifier,
    HiddenLayerTokenClassifierConfig, ViTPatchClassifier, ViTPatchClassifierConfig,
)
from medheads.deploy import predict as predict_module
from medheads.deploy.decisions import classify_scores
from medheads.deploy.predict import predict
from medheads.training.cli import main as cli

REPO = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).parent / "accelerate"
WORDS = ("the patient has breast cancer and il-2 receptor expression in t cells of the lung tumor with chest pain "
         "ct scan of the brain shows a mass lesion in the left upper lobe").split()


def corpus(n: int = 23) -> list[str]:
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 30)))) for _ in range(n)]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    token = HiddenLayerTokenClassifier(HiddenLayerTokenClassifierConfig(
        encoder_config=encoder_config("bert"), hidden_layers=[2], id2label=NER_LABELS))
    text = FrozenEncoderMultiLabel(FrozenEncoderMultiLabelConfig(
        encoder_config=encoder_config("bert"), head_hidden_sizes=[16], id2label=CUI_LABELS,
        thresholds=[0.4, 0.5, 0.6, 0.5], max_chunk_length=16))
    image = ViTPatchClassifier(ViTPatchClassifierConfig(backbone_config=backbone_config("vit"), head="cls_mean",
                                                        id2label=IMAGE_LABELS))
    for name, model in (("token", token), ("text", text), ("image", image)):
        model.save_pretrained(root / name)
        (make_image_processor(32) if name == "image" else tiny_tokenizer).save_pretrained(root / name)
    data = root / "texts.csv"
    with open(data, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows([i, t] for i, t in enumerate(corpus()))
    images = root / "images"
    rng = np.random.default_rng(1)
    for i in range(7):
        (images / ("a" if i % 2 else "b")).mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((40, 40)) * 255).astype(np.uint8)).save(images / ("a" if i % 2 else "b") /
                                                                            f"{i}.png")
    return root


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def expected_rows(folder: Path, task: str, texts: list) -> list:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    pipe = pipeline(task, model=str(folder), trust_remote_code=True)
    if task == "token-classification":
        return [[(e["entity_group"], e["start"], e["end"], e["word"]) for e in out]
                for out in pipe(texts, aggregation_strategy="simple")]
    return [classify_scores({r["label"]: r["score"] for r in out}, config) for out in pipe(texts, top_k=None)]


def entities(rows: list[dict]) -> list:
    return [[(e["entity_group"], e["start"], e["end"], e["word"]) for e in row["entities"]] for row in rows]


def close(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return abs(a - b) < 1e-5
    return a == b


def test_text_and_token_predictions_equal_the_pipeline(folders, tmp_path):
    texts = corpus()
    for kind, task in (("token", "token-classification"), ("text", "text-classification")):
        out = predict(folders / kind, folders / "texts.csv", tmp_path / f"{kind}.jsonl", shard_size=5, batch_size=4,
                      progress=False)
        rows = read_jsonl(out)
        assert [row["id"] for row in rows] == list(range(len(texts)))  # input order
        want = expected_rows(folders / kind, task, texts)
        if kind == "token":
            assert entities(rows) == want
        else:
            for row, expected in zip(rows, want):
                assert row["labels"] == expected["labels"] and close(row["scores"], expected["scores"])
        assert not (tmp_path / f"{kind}.jsonl.shards").exists()


def test_resume_skips_finished_shards(folders, tmp_path, monkeypatch):
    output = tmp_path / "out.jsonl"
    calls = []
    original = predict_module.run_shard

    def failing(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt  # interrupted during the third shard
        calls.append(len(args[3]))
        return original(*args, **kwargs)

    monkeypatch.setattr(predict_module, "run_shard", failing)
    with pytest.raises(KeyboardInterrupt):
        predict(folders / "text", folders / "texts.csv", output, shard_size=5, progress=False)
    assert not output.exists()
    assert len(list((tmp_path / "out.jsonl.shards").glob("shard-*.jsonl"))) == 2

    resumed = []
    monkeypatch.setattr(predict_module, "run_shard", lambda *a, **k: resumed.append(len(a[3])) or original(*a, **k))
    predict(folders / "text", folders / "texts.csv", output, shard_size=5, progress=False)
    assert resumed == [5, 5, 3]  # shards 2, 3, 4 only
    fresh = predict(folders / "text", folders / "texts.csv", tmp_path / "fresh.jsonl", shard_size=5, progress=False)
    assert read_jsonl(output) == read_jsonl(fresh)


def test_images_and_parquet(folders, tmp_path):
    out = predict(folders / "image", folders / "images", tmp_path / "xray.parquet", batch_size=3, progress=False)
    import pyarrow.parquet as pq

    rows = pq.read_table(out).to_pylist()
    files = sorted(str(p) for p in (folders / "images").rglob("*.png"))
    assert [row["file"] for row in rows] == files
    pipe = pipeline("image-classification", model=str(folders / "image"), trust_remote_code=True)
    want = [max(out, key=lambda r: r["score"])["label"] for out in pipe([Image.open(f) for f in files], top_k=None)]
    assert [row["label"] for row in rows] == want


def test_onnx_folder(folders, tmp_path):
    pytest.importorskip("onnxruntime")
    from medheads.deploy.export import export

    export(folders / "text", tmp_path / "onnx", check_samples=corpus())
    a = read_jsonl(predict(tmp_path / "onnx", folders / "texts.csv", tmp_path / "onnx.jsonl", progress=False))
    b = read_jsonl(predict(folders / "text", folders / "texts.csv", tmp_path / "pt.jsonl", progress=False))
    assert [row["labels"] for row in a] == [row["labels"] for row in b]
    for x, y in zip(a, b):
        assert all(abs(x["scores"][k] - y["scores"][k]) < 1e-4 for k in x["scores"])


def test_cli_errors(folders, tmp_path, capsys):
    done = tmp_path / "done.jsonl"
    done.write_text("{}\n")
    for argv, needle in (
        ([str(folders / "text"), str(folders / "texts.csv"), str(done)], "exists"),
        ([str(folders / "text"), str(folders / "texts.csv"), str(tmp_path / "x.jsonl"), "--text_column", "body"],
         "no column 'body'"),
        ([str(folders / "text"), str(folders / "images"), str(tmp_path / "x.jsonl")], "holds images"),
        ([str(tmp_path), str(folders / "texts.csv"), str(tmp_path / "x.jsonl")], "not a model folder"),
    ):
        assert cli(["predict", *argv]) == 2
        err = capsys.readouterr().err
        assert "medheads predict: error:" in err and needle in err, err
    assert done.read_text() == "{}\n"  # a finished run is never overwritten


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(not ACCELERATE.exists(), reason=f"no accelerate CLI next to {sys.executable}")
def test_two_processes_write_the_same_file(folders, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the launched processes run: float sums over 1 or 2 threads can differ in the last bit
    try:
        single = predict(folders / "token", folders / "texts.csv", tmp_path / "one.jsonl", shard_size=4,
                         progress=False)
    finally:
        torch.set_num_threads(threads)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO),
           "CUDA_VISIBLE_DEVICES": ""}
    command = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
               str(REPO / "scripts" / "predict.py"), str(folders / "token"), str(folders / "texts.csv"),
               str(tmp_path / "two.jsonl"), "--shard_size", "4", "--no_progress"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "process 0 of 2" in proc.stderr and "process 1 of 2" in proc.stderr  # two processes shared the shards
    assert read_jsonl(tmp_path / "two.jsonl") == read_jsonl(single)
