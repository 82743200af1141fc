"""Compute a frozen encoder's features once and keep them in a `datasets` cache on disk.

With the encoder frozen, every epoch of head training would recompute the same features. `cached_features` runs
`model.forward_features` once per example, in length-sorted dynamic batches (no padding to max length), and stores
the result with the labels as a `datasets.Dataset` saved under a fingerprint of the encoder weights, the feature
settings and the input data, so a second run (or a second process under `accelerate launch`) loads it instead.
Never imported by modeling files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Callable, Sequence

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm

logger = logging.getLogger("medheads")

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "pixel_values")


def default_cache_dir() -> Path:
    return Path(os.environ.get("MEDHEADS_FEATURE_CACHE", Path(datasets.config.HF_DATASETS_CACHE) / "medheads_features"))


# Config entries that shape only the head, not `forward_features`: a new head or label set reuses cached features.
HEAD_ONLY_KEYS = frozenset({
    "id2label", "label2id", "num_labels", "problem_type", "thresholds", "head", "head_hidden_sizes",
    "head_activation", "head_dropout", "patch_projection_size", "classifier_dropout", "architectures",
    "freeze_backbone", "freeze_encoder", "_name_or_path", "transformers_version", "dtype",
})


def model_fingerprint(model: torch.nn.Module, skip_prefixes: Sequence[str] = ("head.",)) -> str:
    """Digest of the feature-relevant config and of every weight that feeds the features (the head's weights and
    head-only settings such as labels, thresholds and head sizes are left out)."""
    config = {k: v for k, v in model.config.to_dict().items() if k not in HEAD_ONLY_KEYS}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith(tuple(skip_prefixes)):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _feature_type(shape: tuple[int, ...]):
    if len(shape) == 1:
        return datasets.Sequence(datasets.Value("float32"), length=shape[0])
    if len(shape) == 2:
        return datasets.Array2D(shape=shape, dtype="float32")
    raise ValueError(f"features of shape {shape} are not supported: expected a vector or a [tokens, hidden] matrix.")


def _value_type(values: list):
    sample = np.asarray(values[0])
    if sample.ndim == 0:
        return datasets.Value("int64" if np.issubdtype(sample.dtype, np.integer) else "float32")
    return datasets.Sequence(datasets.Value("float32"))


def batch_plan(dataset: datasets.Dataset, batch_size: int, length_column: str | None) -> list[np.ndarray]:
    """Row indices of every batch: longest rows first (so memory peaks at once, not late), similar lengths together.

    Every process of a distributed run builds the same plan, and a batch is always computed whole by one process,
    so its padding, and therefore every feature, is the same whatever the number of processes.
    """
    n = len(dataset)
    if length_column is not None:
        lengths = np.array([len(ids) for ids in dataset[length_column]])
        order = np.argsort(-lengths, kind="stable")
    else:
        order = np.arange(n)
    return [order[start:start + batch_size] for start in range(0, n, batch_size)]


@torch.no_grad()
def _compute_batches(model, inputs: datasets.Dataset, collate_fn: Callable, batches: Sequence[np.ndarray],
                     desc: str, show_progress: bool = True) -> np.ndarray | None:
    """`forward_features` of the rows of `batches`, concatenated in batch order (None when there are no batches)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    parts = []
    try:
        for index in tqdm(batches, desc=desc, unit="batch", disable=not show_progress):
            batch = collate_fn(inputs.__getitems__([int(i) for i in index]))  # one fetch per batch, not per row
            batch = {k: v.to(device) for k, v in batch.items() if k in MODEL_INPUTS}
            parts.append(model.forward_features(**batch).float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(parts) if parts else None


def compute_features(model, dataset: datasets.Dataset, collate_fn: Callable, batch_size: int = 32,
                     length_column: str | None = "input_ids", desc: str = "Computing features") -> np.ndarray:
    """`model.forward_features` for every row of `dataset`, in the dataset's order, as a float32 array.

    Rows are batched by `batch_plan` (longest first, similar lengths together), and each batch is padded by
    `collate_fn` only to its own longest row.
    """
    if len(dataset) == 0:
        raise ValueError("No examples to compute features for: the dataset is empty.")
    inputs = dataset.select_columns([c for c in dataset.column_names if c in MODEL_INPUTS])
    batches = batch_plan(dataset, batch_size, length_column)
    features = _compute_batches(model, inputs, collate_fn, batches, desc)
    result = np.empty_like(features)
    result[np.concatenate(batches)] = features
    return result


def _shard_features(model, dataset, collate_fn, batch_size, length_column, desc, rank: int, world: int,
                    parts: Path) -> None:
    """Process `rank` of `world` computes every `world`-th batch of the plan and saves it under `parts`."""
    inputs = dataset.select_columns([c for c in dataset.column_names if c in MODEL_INPUTS])
    batches = batch_plan(dataset, batch_size, length_column)[rank::world]
    features = _compute_batches(model, inputs, collate_fn, batches, desc, show_progress=rank == 0)
    index = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
    tmp = parts / f"part-{rank}.tmp.npz"
    with open(tmp, "wb") as handle:
        np.savez(handle, index=index, features=features if features is not None else np.zeros(0, np.float32))
    os.replace(tmp, parts / f"part-{rank}.npz")


def _gather_parts(parts: Path, world: int, n: int) -> np.ndarray:
    result = None
    seen = 0
    for rank in range(world):
        with np.load(parts / f"part-{rank}.npz") as part:
            index, features = part["index"], part["features"]
        if not len(index):
            continue
        if result is None:
            result = np.empty((n, *features.shape[1:]), dtype=np.float32)
        result[index] = features
        seen += len(index)
    if seen != n:
        raise RuntimeError(f"feature shards under {parts} cover {seen} of {n} rows")
    return result


def cached_features(model, dataset: datasets.Dataset, collate_fn: Callable, *, feature_name: str,
                    keep_columns: Sequence[str] = ("labels",), batch_size: int = 32,
                    length_column: str | None = "input_ids", cache_dir: str | os.PathLike | None = None,
                    training_args=None, desc: str = "Computing features", extra_fingerprint: str = "",
                    ) -> datasets.Dataset:
    """A dataset of `{feature_name: forward_features(row), **keep_columns}`, computed once and cached on disk.

    `training_args` (a `TrainingArguments`), when given in a distributed run, splits the work: each process
    computes every N-th batch of the same length-sorted plan and saves its part; the main process joins the parts
    into the one cached copy (identical to a single-process run's) and every process loads it.
    """
    fingerprint = hashlib.sha256("|".join([
        model_fingerprint(model), dataset._fingerprint, feature_name, ",".join(keep_columns), extra_fingerprint,
    ]).encode()).hexdigest()[:20]
    folder = Path(cache_dir or default_cache_dir()) / f"{feature_name}-{fingerprint}"
    world = int(getattr(training_args, "world_size", 1) or 1) if training_args is not None else 1
    rank = int(training_args.process_index) if world > 1 else 0
    cached = _load_entry(folder, len(dataset), feature_name)
    if cached is not None:
        logger.info("Loading cached features from %s", folder)
        return cached.with_format("torch")
    if len(dataset) == 0:
        raise ValueError("No examples to compute features for: the dataset is empty.")
    if world > 1:
        # Every process encodes its share of one length-sorted batch plan; the main process joins the parts into the
        # one cache entry a single-process run would write.
        from accelerate import PartialState

        state = PartialState()
        parts = folder.with_name(folder.name + ".parts")
        parts.mkdir(parents=True, exist_ok=True)
        _shard_features(model, dataset, collate_fn, batch_size, length_column, desc, rank, world, parts)
        state.wait_for_everyone()
        if rank == 0:
            _save_entry(_build_table(_gather_parts(parts, world, len(dataset)), dataset, feature_name, keep_columns),
                        folder)
            shutil.rmtree(parts, ignore_errors=True)
        state.wait_for_everyone()
        return datasets.load_from_disk(str(folder)).with_format("torch")
    features = compute_features(model, dataset, collate_fn, batch_size=batch_size, length_column=length_column,
                                desc=desc)
    table = _build_table(features, dataset, feature_name, keep_columns)
    _save_entry(table, folder)
    return table.with_format("torch")


def _build_table(features: np.ndarray, dataset, feature_name: str, keep_columns: Sequence[str]) -> datasets.Dataset:
    columns = {feature_name: features}
    schema = {feature_name: _feature_type(features.shape[1:])}
    for column in keep_columns:
        values = dataset[column]
        columns[column] = values
        schema[column] = dataset.features[column] if column in dataset.features else _value_type(values)
    return datasets.Dataset.from_dict(columns, features=datasets.Features(schema))


def _load_entry(folder: Path, expected_rows: int, feature_name: str) -> datasets.Dataset | None:
    """The cache entry in `folder`, or None when there is none or it is unusable.

    A damaged entry (truncated or unreadable files, wrong row count, missing column: a full disk, a copy cut short,
    a crash outside medheads) is reported with a warning, moved out of the way and recomputed, never a pyarrow
    traceback.
    """
    if not folder.exists():
        return None
    try:
        table = datasets.load_from_disk(str(folder))
        if feature_name not in table.column_names:
            raise ValueError(f"no column {feature_name!r}")
        if len(table) != expected_rows:
            raise ValueError(f"{len(table)} rows, expected {expected_rows}")
        table.data.validate(full=True)  # reads every buffer: a truncated arrow file fails here, not mid-training
        return table
    except Exception as error:  # noqa: BLE001 - any failure to read the entry means: recompute it
        logger.warning("The feature cache entry %s is damaged (%s: %s); recomputing it.", folder,
                       type(error).__name__, str(error).splitlines()[0] if str(error) else "")
        _discard(folder)
        return None


def _discard(folder: Path) -> None:
    """Remove `folder` safely even while another process may read or replace it: rename it first, then delete."""
    trash = folder.with_name(f"{folder.name}.trash{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(folder, trash)
    except OSError:
        return  # already gone (another process discarded or replaced it)
    shutil.rmtree(trash, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _remove_stale_temporaries(folder: Path) -> None:
    """Temporary copies (`<entry>.tmp<PID>-*`, `.trash<PID>-*`) left by processes that were killed mid-write."""
    for path in folder.parent.glob(f"{folder.name}.*"):
        match = re.fullmatch(re.escape(folder.name) + r"\.(?:tmp|trash)(\d+)(?:-\w+)?", path.name)
        if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)


def _save_entry(table: datasets.Dataset, folder: Path) -> None:
    """Write `table` to `folder` atomically: save into a private temporary folder, then rename it into place.

    Readers see either no entry or a complete one. When several processes compute the same entry at once, the first
    rename wins and the others drop their copy (same key, same content), so no temporary folder is left behind.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(folder)
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        table.save_to_disk(str(tmp))
        try:
            os.rename(tmp, folder)  # atomic; fails if another process's entry is already in place
        except OSError:
            if not folder.exists():
                raise
            logger.info("Another process saved %s first; keeping its copy.", folder)
            return
        logger.info("Saved features of %d examples to %s", len(table), folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["batch_plan", "compute_features", "cached_features", "model_fingerprint", "default_cache_dir"]
