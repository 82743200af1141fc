"""Readers for the datasets medheads trains on, with one clear error per problem.

Every reader either returns plain Python / numpy data or raises a single
:class:`DataFormatError` whose message names the file, the line (or field) at
fault, and what to do about it. No reader lets a deep traceback from ``csv``,
``json``, ``numpy`` or PIL escape for a malformed input.

Formats:

* token files for NER: ``token<TAB>label`` lines (CoNLL style, see
  :func:`read_conll`) or JSON lines with token and tag lists
  (:func:`read_jsonl_tokens`); :func:`read_token_file` picks by extension;
* text tables for classification: CSV, TSV or JSON lines
  (:func:`read_text_table`, with :func:`filter_rare_labels` for long-tailed
  multi-label sets);
* images: an ``.npz`` archive with ``<split>_images`` / ``<split>_labels``
  arrays (:func:`read_npz_images`) or a ``root/<class>/<image>`` folder
  (:func:`read_image_folder`); every image file is read by
  :func:`load_training_image`, the loader the shipped image pipeline uses
  (16-bit PNG / TIFF in their real range, DICOM windowed).

With ``line_numbers=True`` the token and table readers keep where each record came from (``"lines"``: the file
line of every token; ``"line"``: the line a table row starts on), so later checks (a label the model does not know)
name ``file:line`` without reading the file again.

This module imports only the standard library, numpy, (lazily) PIL, ``medheads.errors`` and medheads' own image
loader.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

__all__ = [
    "DataFormatError",
    "IMAGE_EXTENSIONS",
    "load_training_image",
    "read_image_table",
    "filter_rare_labels",
    "read_conll",
    "read_image_folder",
    "read_jsonl_tokens",
    "read_npz_images",
    "read_text_table",
    "read_token_file",
]

logger = logging.getLogger(__name__)

# Transcriptions and captions can be far longer than csv's default 128 KiB limit.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

CONLL_EXTENSIONS = (".tsv", ".txt", ".conll", ".iob")
JSONL_EXTENSIONS = (".json", ".jsonl")
TABLE_DELIMITERS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".dcm", ".dicom")
_DOCSTART = "-DOCSTART-"
_MAX_LISTED = 5


class DataFormatError(InputError):
    """A data file does not have the expected format (an :class:`medheads.errors.InputError`).

    The message names the file (and line or field) and says how to fix it.
    """


def _read_text(path: Path) -> str:
    """Return the whole file decoded as UTF-8 (a leading BOM is dropped).

    A decoding failure becomes a :class:`DataFormatError` naming the line.
    """
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line_no = data[: err.start].count(b"\n") + 1
        raise DataFormatError(
            f"{path}:{line_no}: not valid UTF-8 ({err.reason} at byte {err.start}); "
            "re-save the file with UTF-8 encoding"
        ) from None


def _lines(path: Path) -> Iterable[tuple[int, str]]:
    """Yield ``(line_no, line)`` pairs, 1-based, without line terminators.

    Splits on ``\\n`` only (not ``str.splitlines``) so that tokens containing
    unusual Unicode separators stay intact.
    """
    text = _read_text(path)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for line_no, line in enumerate(lines, start=1):
        yield line_no, line.rstrip("\r")


def _first_rows(rows: Sequence[int]) -> str:
    """Format the first few row/line numbers of ``rows`` for an error message."""
    shown = ", ".join(str(r) for r in rows[:_MAX_LISTED])
    return shown + (", ..." if len(rows) > _MAX_LISTED else "")


# --------------------------------------------------------------------------- #
# Token files (NER)
# --------------------------------------------------------------------------- #


def read_conll(path: str | Path, *, line_numbers: bool = False) -> list[dict[str, list[str]]]:
    """Read a CoNLL-style ``token<TAB>label`` file.

    One token per line, ``token<TAB>label`` (a run of spaces is accepted instead
    of the tab when the line has no tab), a blank line between sentences.
    ``-DOCSTART-`` lines open documents: they end the current sentence and are
    otherwise skipped. Labels are taken as written (IOB2 validity is not
    checked) but must be non-empty.

    Args:
        path: the file to read.

    Returns:
        One ``{"tokens": [...], "ner_tags": [...]}`` dict per sentence, with ``"lines"`` (the file line of each
        token) when ``line_numbers`` is true.

    Raises:
        DataFormatError: a line does not have exactly two non-empty columns
            (the message gives ``path:line``), or the file holds no sentences.
    """
    path = Path(path)
    sentences: list[dict[str, list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    lines: list[int] = []

    def flush() -> None:
        if tokens:
            sentence = {"tokens": list(tokens), "ner_tags": list(tags)}
            if line_numbers:
                sentence["lines"] = list(lines)
            sentences.append(sentence)
            tokens.clear()
            tags.clear()
            lines.clear()

    for line_no, line in _lines(path):
        if not line.strip():
            flush()
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        if fields[0].strip() == _DOCSTART:
            flush()
            continue
        if len(fields) != 2:
            raise DataFormatError(
                f"{path}:{line_no}: expected 2 columns 'token<TAB>label', found "
                f"{len(fields)} in {line!r}; fix or remove this line (sentences are "
                "separated by an empty line)"
            )
        token, tag = fields[0].strip(), fields[1].strip()
        if not token or not tag:
            missing = "token" if not token else "label"
            raise DataFormatError(
                f"{path}:{line_no}: empty {missing} in {line!r}; every token line "
                "needs 'token<TAB>label' with both parts non-empty"
            )
        tokens.append(token)
        tags.append(tag)
        lines.append(line_no)
    flush()
    if not sentences:
        raise DataFormatError(
            f"{path}: no sentences found; expected 'token<TAB>label' lines with a "
            "blank line between sentences"
        )
    return sentences


def _string_list(value: Any, path: Path, line_no: int, key: str) -> list[str]:
    """Check that a JSON field holds a list of non-empty strings and return it."""
    if not isinstance(value, list):
        raise DataFormatError(
            f"{path}:{line_no}: field {key!r} must be a list, got "
            f"{type(value).__name__}"
        )
    for i, item in enumerate(value):
        if isinstance(item, bool) or isinstance(item, (int, float)):
            raise DataFormatError(
                f"{path}:{line_no}: field {key!r} holds numbers (item {i} is "
                f"{item!r}); this reader needs label strings: map class ids to "
                "names first (e.g. with datasets' ClassLabel.int2str)"
            )
        if not isinstance(item, str) or not item.strip():
            raise DataFormatError(
                f"{path}:{line_no}: field {key!r} item {i} is {item!r}; every "
                "item must be a non-empty string"
            )
    return [item.strip() for item in value]


def read_jsonl_tokens(
    path: str | Path, tokens_key: str = "tokens", tags_key: str = "ner_tags", *, line_numbers: bool = False
) -> list[dict[str, list[str]]]:
    """Read a JSON-lines file with one tokenised sentence per line.

    Each non-blank line is a JSON object whose ``tokens_key`` and ``tags_key``
    fields are equally long lists of non-empty strings.

    Args:
        path: the file to read.
        tokens_key: name of the token-list field.
        tags_key: name of the tag-list field (string labels such as ``B-DNA``).

    Returns:
        One ``{"tokens": [...], "ner_tags": [...]}`` dict per sentence, with ``"lines"`` (the sentence's line,
        once per token) when ``line_numbers`` is true.

    Raises:
        DataFormatError: invalid JSON, a missing field, a non-string tag or a
            length mismatch (the message gives ``path:line`` and the field), or
            no sentences at all.
    """
    path = Path(path)
    sentences: list[dict[str, list[str]]] = []
    for line_no, line in _lines(path):
        if not line.strip():
            continue
        record = _json_object(line, path, line_no)
        for key in (tokens_key, tags_key):
            if key not in record:
                raise DataFormatError(
                    f"{path}:{line_no}: missing field {key!r}; fields present: "
                    f"{sorted(record)} (pass tokens_key=/tags_key= if the names differ)"
                )
        tokens = _string_list(record[tokens_key], path, line_no, tokens_key)
        tags = _string_list(record[tags_key], path, line_no, tags_key)
        if len(tokens) != len(tags):
            raise DataFormatError(
                f"{path}:{line_no}: {len(tokens)} tokens but {len(tags)} tags; "
                f"fields {tokens_key!r} and {tags_key!r} must be equally long"
            )
        if tokens:
            sentence = {"tokens": tokens, "ner_tags": tags}
            if line_numbers:
                sentence["lines"] = [line_no] * len(tokens)
            sentences.append(sentence)
    if not sentences:
        raise DataFormatError(f"{path}: no sentences found; expected one JSON object per line")
    return sentences


def read_token_file(
    path: str | Path, tokens_key: str = "tokens", tags_key: str = "ner_tags", *, line_numbers: bool = False
) -> list[dict[str, list[str]]]:
    """Read an NER file, choosing the reader by extension.

    ``.tsv``, ``.txt``, ``.conll``, ``.iob`` go to :func:`read_conll`;
    ``.json``, ``.jsonl`` to :func:`read_jsonl_tokens` (with ``tokens_key`` and
    ``tags_key``). ``line_numbers`` as there.

    Raises:
        DataFormatError: unsupported extension, or whatever the chosen reader
            reports.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in CONLL_EXTENSIONS:
        return read_conll(path, line_numbers=line_numbers)
    if suffix in JSONL_EXTENSIONS:
        return read_jsonl_tokens(path, tokens_key=tokens_key, tags_key=tags_key, line_numbers=line_numbers)
    raise DataFormatError(
        f"{path}: unsupported extension {suffix!r} for a token file; use one of "
        f"{', '.join(CONLL_EXTENSIONS + JSONL_EXTENSIONS)}"
    )


def _json_object(line: str, path: Path, line_no: int) -> dict[str, Any]:
    """Parse one JSON-lines line that must hold an object."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataFormatError(
            f"{path}:{line_no}: invalid JSON ({err.msg} at column {err.colno}); the "
            "file must hold one JSON object per line"
        ) from None
    if not isinstance(record, dict):
        raise DataFormatError(
            f"{path}:{line_no}: expected a JSON object per line, got "
            f"{type(record).__name__}"
        )
    return record


# --------------------------------------------------------------------------- #
# Text tables (classification)
# --------------------------------------------------------------------------- #


def _table_records(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """Return ``(columns, [(line_no, record), ...])`` for a CSV, TSV or JSON-lines file.

    ``line_no`` is the file line on which the record starts.
    """
    suffix = path.suffix.lower()
    if suffix in JSONL_EXTENSIONS:
        records = [
            (line_no, _json_object(line, path, line_no))
            for line_no, line in _lines(path)
            if line.strip()
        ]
        columns = list(dict.fromkeys(key for _, record in records for key in record))
        return columns, records
    if suffix not in TABLE_DELIMITERS:
        raise DataFormatError(
            f"{path}: unsupported extension {suffix!r} for a text table; use one of "
            f"{', '.join(list(TABLE_DELIMITERS) + list(JSONL_EXTENSIONS))}"
        )
    reader = csv.reader(
        io.StringIO(_read_text(path), newline=""), delimiter=TABLE_DELIMITERS[suffix], strict=True
    )
    columns: list[str] | None = None
    records: list[tuple[int, dict[str, Any]]] = []
    start = 1
    try:
        for row in reader:
            line_no, start = start, reader.line_num + 1
            if not row:
                continue
            if columns is None:
                columns = [name.strip() for name in row]
                continue
            if len(row) != len(columns):
                raise DataFormatError(
                    f"{path}:{line_no}: {len(row)} fields but the header has "
                    f"{len(columns)}; check quoting (fields containing the "
                    f"delimiter {TABLE_DELIMITERS[suffix]!r} or newlines must be quoted)"
                )
            records.append((line_no, dict(zip(columns, row))))
    except csv.Error as err:
        raise DataFormatError(
            f"{path}:{start}: unreadable {suffix[1:].upper()} record starting on this line "
            f"({err}); check for an unclosed quote or a stray NUL byte"
        ) from None
    if columns is None:
        raise DataFormatError(f"{path}: file is empty; expected a header row with column names")
    return columns, records


def _cell_text(value: Any) -> str:
    """Turn a table cell (CSV string or JSON value) into a string; None is empty."""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _split_labels(value: Any, separator: str, path: Path, line_no: int, column: str) -> list[str]:
    """Split a multi-label cell; JSON lists of strings are taken as they are."""
    if isinstance(value, list):
        if not all(isinstance(item, str) for item in value):
            raise DataFormatError(
                f"{path}:{line_no}: column {column!r} list must hold strings, got {value!r}"
            )
        parts = value
    else:
        parts = _cell_text(value).split(separator)
    return [part.strip() for part in parts if part.strip()]


def read_text_table(
    path: str | Path,
    text_column: str,
    label_column: str,
    label_separator: str | None = None,
    *,
    drop_empty_text: bool = False,
    extra_columns: Sequence[str] = (),
    line_numbers: bool = False,
) -> list[dict[str, Any]]:
    """Read texts and labels from a CSV (``.csv``), TSV (``.tsv``/``.tab``) or JSON-lines file.

    Args:
        path: the table; CSV/TSV need a header row.
        text_column: column holding the text.
        label_column: column holding the label(s).
        label_separator: for multi-label data, the separator inside the label
            cell (e.g. ``";"``); labels are stripped and empty pieces dropped, so a
            row may have no labels. ``None`` means single-label data.
        drop_empty_text: drop rows whose text is empty or whitespace (logging a
            warning with the count) instead of raising.
        extra_columns: further columns copied into each row under their own
            names (e.g. ``["split"]``).
        line_numbers: add ``"line"``, the file line the row starts on.

    Returns:
        One dict per row: ``{"text": str, "labels": list[str]}`` when
        ``label_separator`` is given, else ``{"text": str, "label": str}``, plus
        ``extra_columns``. Texts are returned unchanged (not stripped).

    Raises:
        DataFormatError: a missing column (the message lists those present), a
            row with the wrong number of fields, rows with empty text (unless
            ``drop_empty_text``) or, for single-label data, an empty label; the
            message gives the first few line numbers and the count.
    """
    path = Path(path)
    columns, records = _table_records(path)
    for column in (text_column, label_column, *extra_columns):
        if column not in columns:
            raise DataFormatError(
                f"{path}: no column {column!r}; available columns: {columns}"
            )

    rows: list[dict[str, Any]] = []
    empty_text: list[int] = []
    empty_label: list[int] = []
    for line_no, record in records:
        text = _cell_text(record.get(text_column))
        if not text.strip():
            empty_text.append(line_no)
            continue
        row: dict[str, Any] = {"text": text}
        value = record.get(label_column)
        if label_separator is None:
            label = _cell_text(value).strip()
            if not label:
                empty_label.append(line_no)
            row["label"] = label
        else:
            row["labels"] = _split_labels(value, label_separator, path, line_no, label_column)
        for column in extra_columns:
            row[column] = _cell_text(record.get(column))
        if line_numbers:
            row["line"] = line_no
        rows.append(row)

    if empty_text:
        if not drop_empty_text:
            raise DataFormatError(
                f"{path}: {len(empty_text)} rows have empty text in column "
                f"{text_column!r} (lines {_first_rows(empty_text)}); fix them or pass "
                "drop_empty_text=True to drop them"
            )
        logger.warning(
            "%s: dropped %d rows with empty text in column %r (lines %s)",
            path, len(empty_text), text_column, _first_rows(empty_text),
        )
    if empty_label:
        raise DataFormatError(
            f"{path}: {len(empty_label)} rows have an empty label in column "
            f"{label_column!r} (lines {_first_rows(empty_label)}); fill them in or "
            "remove those rows (for multi-label data pass label_separator)"
        )
    if not rows:
        raise DataFormatError(f"{path}: no rows with text in column {text_column!r}")
    return rows


def filter_rare_labels(
    rows: Sequence[dict[str, Any]], min_count: int
) -> tuple[list[dict[str, Any]], list[str], dict[str, int]]:
    """Remove labels seen fewer than ``min_count`` times from multi-label rows.

    Args:
        rows: rows with a ``"labels"`` list, as returned by
            :func:`read_text_table` with a ``label_separator``.
        min_count: minimum number of rows a label must occur in to be kept.

    Returns:
        ``(new_rows, kept_labels, counts)``: copies of the rows with rare labels
        removed from their ``labels`` (rows left with no label are kept, with an
        empty list), the kept labels sorted, and the count of every label in the
        input (kept or not).
    """
    counts = dict(Counter(label for row in rows for label in set(row["labels"])))
    kept = sorted(label for label, count in counts.items() if count >= min_count)
    keep = set(kept)
    new_rows = [
        {**row, "labels": [label for label in row["labels"] if label in keep]} for row in rows
    ]
    return new_rows, kept, counts


# --------------------------------------------------------------------------- #
# Images
# --------------------------------------------------------------------------- #


def read_npz_images(
    path: str | Path, split: str, label_matrix: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Read one split of an image ``.npz`` archive (MedMNIST layout).

    The archive holds ``<split>_images`` (``[N, H, W]`` or ``[N, H, W, C]``,
    integers 0-255) and ``<split>_labels`` (``[N]`` or ``[N, 1]``, non-negative
    integers).

    Args:
        path: the ``.npz`` file (loaded with ``allow_pickle=False``).
        split: split prefix, e.g. ``"train"`` or ``"val"``.
        label_matrix: also accept ``[N, K]`` labels (multi-hot 0/1 for
            multi-label, numbers for regression, as ChestMNIST) and float ``[N]``
            targets; they are returned as they are (``float64`` or ``int64``).

    Returns:
        ``(images, labels)``: a ``uint8`` array and an ``int64`` array of length N.

    Raises:
        DataFormatError: the file is not a readable ``.npz`` archive, the split's
            arrays are missing (the message lists the arrays present), or shapes,
            dtypes or lengths are wrong.
    """
    path = Path(path)
    image_key, label_key = f"{split}_images", f"{split}_labels"
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataFormatError(
                f"{path}: a single .npy array, not an .npz archive with "
                f"{image_key!r}/{label_key!r} arrays"
            )
        with archive:
            present = sorted(archive.files)
            missing = [key for key in (image_key, label_key) if key not in present]
            if missing:
                raise DataFormatError(
                    f"{path}: no array {missing[0]!r} for split {split!r}; arrays "
                    f"present: {present}"
                )
            images, labels = archive[image_key], archive[label_key]
    except (DataFormatError, FileNotFoundError):
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise DataFormatError(
            f"{path}: not a readable .npz archive ({type(err).__name__}: {err}); "
            "re-download or re-create the file"
        ) from None

    if images.ndim not in (3, 4):
        raise DataFormatError(
            f"{path}: {image_key!r} has shape {images.shape}; expected [N, H, W] or [N, H, W, C]"
        )
    if not np.issubdtype(images.dtype, np.integer) or (
        images.size and (images.min() < 0 or images.max() > 255)
    ):
        raise DataFormatError(
            f"{path}: {image_key!r} must hold integers 0-255, got dtype {images.dtype}"
        )
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if label_matrix and labels.ndim in (1, 2) and (
        np.issubdtype(labels.dtype, np.integer)
        or np.issubdtype(labels.dtype, np.floating)
        or labels.dtype == np.bool_
    ):
        if len(labels) != len(images):
            raise DataFormatError(
                f"{path}: {len(images)} images in {image_key!r} but {len(labels)} label rows "
                f"in {label_key!r}"
            )
        if np.issubdtype(labels.dtype, np.floating):
            if not np.isfinite(labels).all():
                raise DataFormatError(f"{path}: {label_key!r} holds NaN or infinite values")
            return images.astype(np.uint8, copy=False), labels.astype(np.float64)
        return images.astype(np.uint8, copy=False), labels.astype(np.int64)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataFormatError(
            f"{path}: {label_key!r} has shape {labels.shape} and dtype {labels.dtype}; "
            "expected integer class ids of shape [N] or [N, 1]"
        )
    if len(labels) != len(images):
        raise DataFormatError(
            f"{path}: {len(images)} images in {image_key!r} but {len(labels)} labels "
            f"in {label_key!r}"
        )
    if labels.size and labels.min() < 0:
        raise DataFormatError(f"{path}: {label_key!r} holds negative class ids")
    return images.astype(np.uint8, copy=False), labels.astype(np.int64)


def read_image_table(
    path: str | Path, image_column: str = "image", label_column: str = "labels"
) -> tuple[list[str], list[Any]]:
    """Read a CSV / TSV / JSON-lines table of image paths and labels.

    Image paths are taken relative to the table's folder unless absolute, and
    must exist. Label cells are returned as they are (a string such as
    ``"effusion;nodule"`` for multi-label, a class name, a number, or a JSON
    list); the caller interprets them for its problem type.

    Raises:
        DataFormatError: unreadable table, a missing column (the message lists
            the columns present), an empty cell, or a missing image file (the
            message names the line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file")
    columns, records = _table_records(path)
    for column, flag in ((image_column, "--image_column_name"), (label_column, "--label_column_name")):
        if column not in columns:
            raise DataFormatError(
                f"{path}: no column {column!r}; columns present: {columns} (pass {flag})"
            )
    if not records:
        raise DataFormatError(f"{path}: the table has a header but no rows")
    paths: list[str] = []
    labels: list[Any] = []
    for line_no, record in records:
        cell = _cell_text(record.get(image_column)).strip()
        if not cell:
            raise DataFormatError(f"{path}:{line_no}: empty {image_column!r} cell")
        image_path = Path(cell) if Path(cell).is_absolute() else path.parent / cell
        if not image_path.is_file():
            raise DataFormatError(f"{path}:{line_no}: image {cell!r} not found (looked for {image_path})")
        value = record.get(label_column)
        paths.append(str(image_path))
        labels.append(value.strip() if isinstance(value, str) else ("" if value is None else value))
    return paths, labels


def load_training_image(source, name: str | None = None):
    """An 8-bit RGB PIL image from a path, bytes, PIL image or array, read exactly as the shipped image pipeline
    reads it (:func:`medheads.models.image_loading.load_image`: 16-bit and 12-bit-in-16 grayscale in their real
    range, DICOM with rescale, window and MONOCHROME1 inversion). Anything unreadable raises one
    :class:`DataFormatError` naming the file."""
    from .models.image_loading import ImageLoadingError, load_image

    try:
        return load_image(source, name=name)
    except ImageLoadingError as err:
        raise DataFormatError(f"{err} Replace or remove it.") from None


def read_image_folder(root: str | Path) -> tuple[list[str], list[str], list[int]]:
    """List the images of a ``root/<class>/<image>`` folder and check each one.

    Class names are the sub-folder names, sorted; class ids index that list.
    Files with an extension in :data:`IMAGE_EXTENSIONS` are images (hidden
    files are skipped; ``.dcm`` is DICOM); each one is read once with
    :func:`load_training_image`, so a file the pipeline could not read
    correctly is refused here, before training.

    Args:
        root: the folder holding one sub-folder per class.

    Returns:
        ``(paths, class_names, labels)``: image paths as strings (sorted within
        each class), class names, and the class id of each path.

    Raises:
        DataFormatError: ``root`` is not a folder, has no class sub-folders, a
            class folder has no images, or an image cannot be read (the message
            names the file).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"{root}: not a folder; expected root/<class>/<image> layout")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataFormatError(
            f"{root}: no class sub-folders; expected root/<class>/<image> layout"
        )
    paths: list[str] = []
    labels: list[int] = []
    for class_id, class_dir in enumerate(class_dirs):
        images = sorted(
            p
            for p in class_dir.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not images:
            raise DataFormatError(
                f"{class_dir}: class folder has no images (extensions: "
                f"{', '.join(IMAGE_EXTENSIONS)})"
            )
        for image_path in images:
            load_training_image(str(image_path))
            paths.append(str(image_path))
            labels.append(class_id)
    return paths, [p.name for p in class_dirs], labels
