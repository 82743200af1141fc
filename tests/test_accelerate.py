"""The text classifier script under `accelerate launch` with 2 CPU processes: both processes finish, the results
are sane, the saved model loads, and each split's encoder features were cached once (both processes computed a share;
the main process shows one progress bar per split and writes the one copy).

`accelerate launch --cpu --num_processes 2` starts ONE process unless mpirun is set up (accelerate's simple
launcher), so the test uses the torchrun launcher (`--multi_gpu --num_processes 2`) with no GPU visible and the
script's `--use_cpu`: two processes joined by gloo on the CPU (the global step count proves there were two)."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import save_tiny_encoder

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDHEADS_DATA_DIR", REPO.parent / "shared" / "data"))
ROCO = DATA / "rocov2" / "rocov2_valid.csv"
ACCELERATE = Path(sys.executable).parent / "accelerate"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(not ACCELERATE.exists(), reason=f"no accelerate CLI next to {sys.executable}")
@pytest.mark.skipif(not ROCO.is_file(), reason=f"ROCOv2 not found under {DATA}")
def test_two_cpu_processes(tmp_path):
    encoder = save_tiny_encoder(tmp_path / "encoder")
    with open(ROCO, newline="") as handle:
        rows = [row for _, row in zip(range(120), csv.DictReader(handle))]
    data = tmp_path / "roco.csv"
    with open(data, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["caption", "cuis_manual"])
        writer.writerows([r["caption"], r["cuis_manual"]] for r in rows)

    out, cache = tmp_path / "out", tmp_path / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO),
           "CUDA_VISIBLE_DEVICES": ""}
    command = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
               str(REPO / "scripts" / "train_text_classifier.py"),
               "--model_name_or_path", str(encoder), "--train_file", str(data), "--text_column_name", "caption",
               "--label_column_name", "cuis_manual", "--validation_split_percentage", "20",
               "--test_split_percentage", "20", "--do_train", "--do_eval", "--do_predict", "--num_train_epochs", "2",
               "--head_hidden_sizes", "16", "--per_device_train_batch_size", "8", "--output_dir", str(out),
               "--feature_cache_dir", str(cache), "--disable_tqdm", "true", "--dataloader_pin_memory", "false",
               "--use_cpu"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    results = json.loads((out / "all_results.json").read_text())
    for key in ("predict_micro_f1", "predict_macro_f1", "predict_subset_accuracy", "eval_micro_f1"):
        assert 0.0 <= results[key] <= 1.0, key
    assert results["predict_samples"] == 24 and results["eval_samples"] == 24  # gathered once, no duplicates
    # 72 training rows, 2 processes x batch 8 -> 5 optimizer steps per epoch (one process alone would take 9)
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 10

    # one cache folder per split (train, validation, test), each written once by the main process
    folders = sorted(p.name for p in cache.iterdir())
    assert len(folders) == 3 and all(name.startswith("pooled_features-") for name in folders), folders
    for split in ("train", "validation", "test"):  # one progress bar each: the other process loaded the cache
        assert result.stderr.count(f"Encoder features ({split}): 100%") == 1, split

    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    model = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.problem_type == "multi_label_classification"
    assert len(model.config.thresholds) == model.config.num_labels
    with torch.no_grad():
        logits = model(**tokenizer(["ct scan of the chest"], return_tensors="pt")).logits
    assert logits.shape == (1, model.config.num_labels) and torch.isfinite(logits).all()
