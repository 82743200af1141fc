"""Shared plumbing of the benchmarks: paths, machine facts, alternating timed repeats, peak-memory probes.

Every benchmark runs both of its sides in one process, alternating the order of the sides from repeat to repeat so
that a slow spell of a shared machine hits both, and reports medians and their ratio. Peak memory is measured in a
fresh subprocess per side (see `measure_peak_rss`).
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import gc
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]


# -- paths -----------------------------------------------------------------------------------------------------------
def data_dir(path=None) -> Path:
    """The shared real datasets: `path`, else `$MEDHEADS_DATA_DIR`, else `../shared/data` beside the checkout."""
    folder = Path(path or os.environ.get("MEDHEADS_DATA_DIR") or REPO.parent / "shared" / "data")
    if not folder.is_dir():
        raise FileNotFoundError(
            f"No benchmark data at {folder}: pass --data_dir or set MEDHEADS_DATA_DIR to the folder holding jnlpba/, "
            "mtsamples/, rocov2/ and pneumoniamnist/."
        )
    return folder


def minilm_path() -> str:
    """The bundled all-MiniLM-L6-v2 (BERT, 6 layers, width 384) with its tokenizer."""
    from medheads.training.common import minilm_path as bundled_minilm

    return bundled_minilm()


# -- machine ---------------------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    import torch
    import transformers

    return {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def set_threads(threads: int | None = None) -> None:
    import torch

    torch.set_num_threads(threads or min(2, os.cpu_count() or 1))


def quiet_transformers() -> None:
    """No weight-loading progress bars or long-sequence warnings in benchmark output."""
    import transformers

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


# -- timing ----------------------------------------------------------------------------------------------------------
def alternate(sides: dict[str, Callable[[], object]], repeats: int,
              warmups: dict[str, Callable[[], object]] | None = None) -> dict[str, list[float]]:
    """Wall seconds of each side's callable, `repeats` times, the side order rotating every repeat.

    `warmups` (default: the sides themselves) run once per side first, untimed.
    """
    names = list(sides)
    for name in names:
        (warmups or sides)[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            start = time.perf_counter()
            sides[name]()
            times[name].append(time.perf_counter() - start)
    return times


def median(values) -> float:
    return float(statistics.median(values))


def ratio(slow: float, fast: float) -> float:
    return float(slow / fast) if fast > 0 else float("inf")


# -- memory ----------------------------------------------------------------------------------------------------------
def _status_bytes(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def measure_peak_rss(fn: Callable[[], object]) -> dict:
    """Resident memory of this process before `fn` and its high-water mark while `fn` runs (Linux).

    torch's CPU allocator has no statistics of its own, so the process is measured: freed heap is handed back
    (`malloc_trim`), the kernel's peak-RSS counter is reset (`/proc/self/clear_refs` = 5), then `VmHWM` after `fn`
    minus `VmRSS` before it is the peak extra memory `fn` needed (activations, temporaries). Run it in a fresh
    process started with `MALLOC_MMAP_THRESHOLD_` small (see `probe_memory`) so large tensors are mapped and unmapped
    directly and the counter follows them.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
        resettable = True
    except OSError:
        resettable = False
    before = _status_bytes("VmRSS")
    fn()
    peak = _status_bytes("VmHWM")
    if before is None or peak is None or not resettable:
        return {"rss_before_mib": None, "peak_rss_mib": None, "peak_extra_mib": None,
                "note": "peak RSS not measurable here (needs Linux /proc/self/clear_refs)"}
    return {"rss_before_mib": before / 2**20, "peak_rss_mib": peak / 2**20, "peak_extra_mib": (peak - before) / 2**20}


def allocation_probe(mib: int) -> dict:
    """Self-check of the memory probe: the peak extra memory of filling `mib` MiB must be about `mib`."""
    def fill():
        block = np.ones(mib * 2**20 // 8)
        return float(block[-1])

    return measure_peak_rss(fill)


def release() -> None:
    """Collect garbage and hand freed heap back to the system (call after `del model`)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def parameter_mib(model) -> float:
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20


def probe_memory(module: str, function: str, **kwargs) -> dict:
    """Run `module.function(**kwargs)` (which calls `measure_peak_rss`) in a fresh Python and return its result.

    One subprocess per benchmark: it loads one side's model at a time, measures, and frees it before the next.
    """
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               TOKENIZERS_PARALLELISM="false")
    code = ("import json, sys, importlib; m = importlib.import_module(sys.argv[1]); "
            "print('@@RESULT@@' + json.dumps(getattr(m, sys.argv[2])(**json.loads(sys.argv[3]))))")
    done = subprocess.run([sys.executable, "-c", code, module, function, json.dumps(kwargs)], cwd=REPO, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe {module}.{function} failed:\n{done.stderr[-3000:]}")
    line = [row for row in done.stdout.splitlines() if row.startswith("@@RESULT@@")][-1]
    return json.loads(line[len("@@RESULT@@"):])


# -- results ---------------------------------------------------------------------------------------------------------
def target_result(value: float, target: float | None) -> dict:
    return {"value": round(float(value), 3), "target": target,
            "met": None if target is None else bool(value >= target)}


def rounded(obj, digits: int = 4):
    """JSON-friendly copy with floats rounded (numpy scalars converted)."""
    if isinstance(obj, dict):
        return {str(k): rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v, digits) for v in obj]
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if not np.isfinite(value) else round(value, digits)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def main_for(module_name: str, defaults: dict) -> None:
    """`python -m benchmarks.<name> [--key value ...]`: run one benchmark and print its result as JSON."""
    import argparse

    parser = argparse.ArgumentParser(description=importlib.import_module(module_name).__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    def boolean(text: str) -> bool:
        if text.lower() in ("1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")

    for key, value in defaults.items():
        kind = type(value) if value is not None and not isinstance(value, (list, tuple)) else str
        kind = boolean if isinstance(value, bool) else kind
        parser.add_argument(f"--{key}", type=kind, default=value,
                            help=f"default: {value}" + (" (comma-separated)" if isinstance(value, (list, tuple)) else ""))
    args = vars(parser.parse_args())
    for key, value in defaults.items():
        if isinstance(value, (list, tuple)) and isinstance(args[key], str):
            args[key] = [type(value[0])(v) for v in args[key].split(",")]
    set_threads()
    quiet_transformers()
    result = importlib.import_module(module_name).run(**args)
    print(json.dumps(rounded(result), indent=2))
