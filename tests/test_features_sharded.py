"""Feature extraction under `accelerate launch` with 2 CPU processes: each process encodes its share of the
batches, and the cache holds one copy, identical (bit for bit) to a single-process run's.

The torchrun launcher (`--multi_gpu --num_processes 2` with no GPU visible) gives two gloo processes on the CPU;
see tests/test_accelerate.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("features_worker.py")
ACCELERATE = Path(sys.executable).parent / "accelerate"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cache_contents(cache: Path) -> np.ndarray:
    folders = [p for p in cache.iterdir()]
    assert len(folders) == 1 and folders[0].name.startswith("pooled_features-"), folders  # one copy, no leftovers
    return np.asarray(datasets.load_from_disk(str(folders[0]))["pooled_features"], dtype=np.float32)


@pytest.mark.skipif(not ACCELERATE.exists(), reason=f"no accelerate CLI next to {sys.executable}")
def test_two_processes_share_the_work_and_write_one_identical_cache(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO),
           "CUDA_VISIBLE_DEVICES": ""}
    single = subprocess.run([sys.executable, str(WORKER), str(tmp_path / "cache1"), str(tmp_path / "out1")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    command = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
               str(WORKER), str(tmp_path / "cache2"), str(tmp_path / "out2")]
    double = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert double.returncode == 0, double.stderr[-3000:]
    assert "RANK 0 OF 2 ROWS 37" in double.stderr and "RANK 1 OF 2 ROWS 37" in double.stderr
    # 37 rows in batches of 4 -> 10 batches; the main process's progress bar counts its own 5
    assert "Features: 100%|██████████| 5/5" in double.stderr, double.stderr[-2000:]
    one, two = cache_contents(tmp_path / "cache1"), cache_contents(tmp_path / "cache2")
    assert one.shape == (37, 32)
    assert np.array_equal(one, two)
