"""`medheads predict MODEL INPUT OUTPUT`: annotate a whole corpus with a medheads model (PyTorch or ONNX export).

    medheads predict outputs/ner-jnlpba abstracts.csv ner.jsonl --text_column abstract
    medheads predict exported/rocov2-onnx captions.jsonl labels.parquet
    accelerate launch scripts/predict.py outputs/xray xray_folder/ xray.jsonl      # sharded over processes

INPUT: a CSV/TSV or JSON-lines file of texts (`--text_column`), a `datasets` folder (`save_to_disk`), or a folder of
images (searched recursively). The model runs through its own `pipeline(...)` (the one a user gets from
`pipeline(task, model=MODEL, trust_remote_code=True)`), so every row's result is the pipeline's result; batches are
sorted by length inside each shard so padding stays small. The input is cut into fixed shards of `--shard_size`
rows; under `accelerate launch` each process takes every N-th shard. A finished shard is written atomically to
`OUTPUT.shards/`, so a rerun after an interruption skips it; when all shards exist the main process joins them, in
input order, into OUTPUT (`.jsonl` or `.parquet`) and removes the shard folder. The same shards are computed the
same way whatever the number of processes, so one process and N processes write the same file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
from ..command_line import ArgumentParser

logger = logging.getLogger("medheads")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
TEXT_EXTENSIONS = (".csv", ".tsv", ".tab", ".jsonl", ".json")
TASKS = {"AutoModelForTokenClassification": "token-classification",
         "AutoModelForSequenceClassification": "text-classification",
         "AutoModelForImageClassification": "image-classification"}


class PredictError(ValueError):
    """Bad input to `medheads predict`, reported as one line."""


# -- input --------------------------------------------------------------------------------------------------------
def read_inputs(path: Path, text_column: str) -> tuple[str, list]:
    """("text", texts) or ("image", image paths), in input order."""
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            import datasets

            data = datasets.load_from_disk(str(path))
            if isinstance(data, datasets.DatasetDict):
                raise PredictError(f"{path} is a DatasetDict ({', '.join(data)}): pass one split's folder, e.g. "
                                   f"{path / next(iter(data))}.")
            if text_column not in data.column_names:
                raise PredictError(f"{path}: no column {text_column!r} (columns: {data.column_names}); "
                                   "pass --text_column.")
            return "text", [str(t) for t in data[text_column]]
        images = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                        and not p.name.startswith("."))
        if not images:
            raise PredictError(f"{path} is a folder with neither a saved dataset nor images "
                               f"({', '.join(IMAGE_EXTENSIONS)}).")
        return "image", images
    if not path.is_file():
        raise PredictError(f"INPUT {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix not in TEXT_EXTENSIONS:
        raise PredictError(f"INPUT {path}: unsupported file type {suffix!r}; use CSV/TSV, JSON lines, a datasets "
                           "folder or a folder of images.")
    if suffix in (".jsonl", ".json"):
        texts = []
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as error:
                    raise PredictError(f"{path}:{number}: not a JSON object ({error}).") from None
                if isinstance(record, str):
                    texts.append(record)
                elif isinstance(record, dict) and text_column in record:
                    texts.append(str(record[text_column]))
                else:
                    raise PredictError(f"{path}:{number}: no {text_column!r} key; pass --text_column.")
        return "text", texts
    import csv

    csv.field_size_limit(sys.maxsize)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="," if suffix == ".csv" else "\t")
        if text_column not in (reader.fieldnames or []):
            raise PredictError(f"{path}: no column {text_column!r} (columns: {reader.fieldnames}); pass "
                               "--text_column.")
        return "text", [row[text_column] or "" for row in reader]


# -- the model ------------------------------------------------------------------------------------------------------
def model_task(model_dir: Path) -> tuple[str, Any]:
    from transformers import AutoConfig

    if not (model_dir / "config.json").is_file():
        raise PredictError(f"MODEL {model_dir} is not a model folder (no config.json).")
    import medheads  # noqa: F401  (PyTorch folders load with the installed classes)

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=True)
    auto = next((k for k in (getattr(config, "auto_map", None) or {}) if k in TASKS), None)
    if auto is None:
        raise PredictError(f"MODEL {model_dir} is not a medheads model (its config names no "
                           f"{' / '.join(TASKS)} in auto_map).")
    return TASKS[auto], config


def load_pipeline(model_dir: Path, task: str, config, device, onnx_variant: str | None):
    from transformers import pipeline

    kwargs = {}
    if str(config.model_type).endswith("-onnx"):  # ONNX Runtime picks its own device
        if onnx_variant:
            kwargs["model_kwargs"] = {"onnx_variant": onnx_variant}
    else:
        kwargs["device"] = device
    return pipeline(task, model=str(model_dir), trust_remote_code=True, **kwargs)


def decide(task: str, output, config) -> dict:
    """The row written for one input: the pipeline's output, with the model's decision made explicit."""
    from .decisions import classify_scores

    if task == "token-classification":
        return {"entities": [{k: (float(v) if isinstance(v, (np.floating, float)) else
                                  int(v) if isinstance(v, (np.integer,)) else v)
                              for k, v in entity.items()} for entity in output]}
    scores = {row["label"]: float(row["score"]) for row in output}
    return classify_scores(scores, config)


def call_kwargs(task: str, config, aggregation_strategy: str | None) -> dict:
    """Pipeline call arguments. NER: `aggregation_strategy` if given; else the model's own pipeline's default when
    the checkpoint ships one (`config.custom_pipelines`), else "simple" (the stock default returns sub-tokens).
    Classifiers: every label's score (`top_k=None`), from which `decide` makes the model's decision."""
    if task == "token-classification":
        if aggregation_strategy:
            return {"aggregation_strategy": aggregation_strategy}
        return {} if getattr(config, "custom_pipelines", None) else {"aggregation_strategy": "simple"}
    return {"top_k": None}


def run_shard(pipe, task: str, config, items: list, batch_size: int, kind: str,
              aggregation_strategy: str | None = None) -> list[dict]:
    """Pipeline results for one shard, in the shard's order; computed in length-sorted batches."""
    lengths = [len(x) for x in items] if kind == "text" else [0] * len(items)
    order = np.argsort(-np.asarray(lengths), kind="stable")
    sorted_items = [items[i] for i in order]
    if kind == "image":
        from PIL import Image

        sorted_items = [Image.open(p) for p in sorted_items]
    outputs = pipe(sorted_items, batch_size=batch_size, **call_kwargs(task, config, aggregation_strategy))
    result: list = [None] * len(items)
    for position, output in zip(order, outputs):
        result[int(position)] = decide(task, output, config)
    return result


# -- shards ---------------------------------------------------------------------------------------------------------
def shard_path(folder: Path, index: int) -> Path:
    return folder / f"shard-{index:06d}.jsonl"


def write_shard(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def join_shards(folder: Path, shards: int, output: Path) -> int:
    rows = []
    for index in range(shards):
        with open(shard_path(folder, index), encoding="utf-8") as handle:
            rows += [json.loads(line) for line in handle]
    tmp = output.with_name(output.name + ".tmp")
    if output.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist([{k: json.dumps(v) if isinstance(v, (dict, list)) else v
                                       for k, v in row.items()} for row in rows])
        pq.write_table(table, tmp)
    else:
        with open(tmp, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, output)
    return len(rows)


def predict(model_dir, input_path, output_path, *, text_column: str = "text", batch_size: int = 32,
            shard_size: int = 1000, onnx_variant: str | None = None, overwrite: bool = False,
            progress: bool = True, aggregation_strategy: str | None = None) -> Path:
    """Annotate INPUT with MODEL into OUTPUT; see the module docstring. Runs in every process of a launch."""
    from accelerate import PartialState
    from tqdm.auto import tqdm

    import torch

    model_dir, input_path, output_path = Path(model_dir), Path(input_path), Path(output_path)
    if output_path.suffix.lower() not in (".jsonl", ".parquet"):
        raise PredictError(f"OUTPUT {output_path} must end in .jsonl or .parquet.")
    if output_path.exists() and not overwrite:
        raise PredictError(f"OUTPUT {output_path} exists (a finished run): choose another file or pass --overwrite.")
    if shard_size < 1 or batch_size < 1:
        raise PredictError("--shard_size and --batch_size must be positive.")
    task, config = model_task(model_dir)
    kind, items = read_inputs(input_path, text_column)
    if (kind == "image") != (task == "image-classification"):
        raise PredictError(f"MODEL {model_dir} is a {task} model but INPUT {input_path} holds {kind}s.")
    if not items:
        raise PredictError(f"INPUT {input_path} holds no rows.")
    folder = output_path.with_name(output_path.name + ".shards")
    meta = {"model": str(model_dir.resolve()), "input": str(input_path.resolve()), "rows": len(items),
            "shard_size": shard_size, "text_column": text_column, "onnx_variant": onnx_variant,
            "aggregation_strategy": aggregation_strategy}
    meta_file = folder / "run.json"
    if meta_file.exists() and json.loads(meta_file.read_text()) != meta:
        raise PredictError(f"{folder} holds shards of another run (see {meta_file}): remove it or pick another "
                           "OUTPUT.")
    state = PartialState(cpu=not torch.cuda.is_available())
    if state.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        meta_file.write_text(json.dumps(meta, indent=2))
    state.wait_for_everyone()
    shards = -(-len(items) // shard_size)
    mine = [i for i in range(state.process_index, shards, state.num_processes)
            if not shard_path(folder, i).exists()]
    logger.info("process %d of %d: %d shards to compute", state.process_index, state.num_processes, len(mine))
    done_before = sum(shard_path(folder, i).exists() for i in range(shards))
    if state.is_main_process and done_before:
        logger.info("Resuming: %d of %d shards already done in %s", done_before, shards, folder)
    if mine:
        pipe = load_pipeline(model_dir, task, config, state.device, onnx_variant)
        bar = tqdm(total=sum(min(shard_size, len(items) - i * shard_size) for i in mine), unit=kind,
                   desc=f"Predicting (process {state.process_index})" if state.num_processes > 1 else "Predicting",
                   disable=not progress, position=state.process_index)
        for index in mine:
            chunk = items[index * shard_size:(index + 1) * shard_size]
            rows = run_shard(pipe, task, config, chunk, batch_size, kind, aggregation_strategy)
            for offset, row in enumerate(rows):
                row_id = index * shard_size + offset
                rows[offset] = {"id": row_id, **({"file": chunk[offset]} if kind == "image" else {}), **row}
            write_shard(shard_path(folder, index), rows)
            bar.update(len(chunk))
        bar.close()
    state.wait_for_everyone()
    if state.is_main_process:
        missing = [i for i in range(shards) if not shard_path(folder, i).exists()]
        if missing:
            raise RuntimeError(f"shards {missing[:5]} were not written; rerun the same command to finish them.")
        count = join_shards(folder, shards, output_path)
        shutil.rmtree(folder)
        logger.info("Wrote %d rows to %s", count, output_path)
    state.wait_for_everyone()
    return output_path


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=prog, description=(
        "Annotate a corpus with a medheads model (PyTorch folder or ONNX export) through its pipeline: "
        "length-sorted batches, resumable shards, sharded across `accelerate launch` processes; results as JSON "
        "lines or parquet in input order."))
    parser.add_argument("model", help="a medheads model folder or an ONNX folder written by `medheads export`")
    parser.add_argument("input", help="CSV/TSV/JSON-lines file of texts, a datasets folder, or a folder of images")
    parser.add_argument("output", help="results file: .jsonl or .parquet (one row per input row, in input order)")
    parser.add_argument("--text_column", default="text", help="column (or JSON key) holding the text (default text)")
    parser.add_argument("--batch_size", type=int, default=32, help="inputs per pipeline batch (default 32)")
    parser.add_argument("--shard_size", type=int, default=1000, help="rows per resumable shard (default 1000)")
    parser.add_argument("--onnx_variant", choices=["fp32", "int8"], help="for an ONNX folder: which graph "
                        "(default: the folder's, int8 when exported with --int8)")
    parser.add_argument("--aggregation_strategy", choices=["none", "simple", "first", "average", "max"],
                        help="NER: how sub-tokens become entities (default: the model's pipeline's own default, or "
                        "simple for checkpoints without one)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None, prog: str = "medheads predict") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        predict(args.model, args.input, args.output, text_column=args.text_column, batch_size=args.batch_size,
                shard_size=args.shard_size, onnx_variant=args.onnx_variant, overwrite=args.overwrite,
                progress=not args.no_progress, aggregation_strategy=args.aggregation_strategy)
    except PredictError as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
