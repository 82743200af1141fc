"""Tests for medheads.data: every reader on good and malformed small files, and on the real data."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medheads.data import (
    DataFormatError,
    filter_rare_labels,
    read_conll,
    read_image_folder,
    read_jsonl_tokens,
    read_npz_images,
    read_text_table,
    read_token_file,
)

DATA_DIR = Path(os.environ.get("MEDHEADS_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
needs_data = pytest.mark.skipif(
    not DATA_DIR.is_dir(),
    reason=f"real datasets not found at {DATA_DIR} (set MEDHEADS_DATA_DIR to the shared data folder)",
)


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


# --------------------------------------------------------------------------- #
# CoNLL
# --------------------------------------------------------------------------- #


def test_read_conll_sentences_docstart_and_separators(tmp_path):
    path = write(
        tmp_path / "a.tsv",
        "-DOCSTART-\tO\n\n"
        "IL-2\tB-protein\ngene\tI-protein\n\n\n"  # two blank lines: still one boundary
        "T B-cell_type\n"  # single-space separator
        "cells\tI-cell_type\r\n"  # CRLF
        "-DOCSTART-\tO\n"  # ends the sentence without a blank line
        "last\tO",  # no trailing newline
    )
    assert read_conll(path) == [
        {"tokens": ["IL-2", "gene"], "ner_tags": ["B-protein", "I-protein"]},
        {"tokens": ["T", "cells"], "ner_tags": ["B-cell_type", "I-cell_type"]},
        {"tokens": ["last"], "ner_tags": ["O"]},
    ]


def test_readers_keep_line_numbers_when_asked(tmp_path):
    """`line_numbers=True` keeps where each token / row came from, so a later check names `file:line` without
    reading the file again; without it the records are as before."""
    conll = write(tmp_path / "a.tsv", "-DOCSTART-\tO\n\nIL-2\tB-protein\ngene\tI-protein\n\n\nT\tO\n")
    assert read_conll(conll, line_numbers=True) == [
        {"tokens": ["IL-2", "gene"], "ner_tags": ["B-protein", "I-protein"], "lines": [3, 4]},
        {"tokens": ["T"], "ner_tags": ["O"], "lines": [7]},
    ]
    assert "lines" not in read_conll(conll)[0]
    js = jsonl(tmp_path / "a.jsonl", [{"tokens": ["a", "b"], "ner_tags": ["B-X", "O"]}, "",
                                      {"tokens": ["c"], "ner_tags": ["O"]}])
    assert [s["lines"] for s in read_token_file(js, line_numbers=True)] == [[1, 1], [3]]
    table = write(tmp_path / "t.csv", CSV_TEXT)  # the second row's text spans two lines
    rows = read_text_table(table, "text", "specialty", line_numbers=True)
    assert [row["line"] for row in rows] == [2, 3, 5]
    assert "line" not in read_text_table(table, "text", "specialty")[0]


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ("a\tB-X\textra", "expected 2 columns"),
        ("lonely", "expected 2 columns"),
        ("word\t", "empty label"),
        ("\tO", "empty token"),
        ("word\t  ", "empty label"),
    ],
)
def test_read_conll_malformed_line_names_file_and_line(tmp_path, bad_line, expected):
    path = write(tmp_path / "bad.tsv", f"ok\tO\nfine\tO\n\nthird\tO\n{bad_line}\nmore\tO\n")
    with pytest.raises(DataFormatError) as info:
        read_conll(path)
    message = str(info.value)
    assert f"{path}:5:" in message
    assert expected in message


def test_read_conll_bad_utf8_names_line(tmp_path):
    path = tmp_path / "latin1.tsv"
    path.write_bytes(b"ok\tO\n\ncaf\xe9\tO\n")
    with pytest.raises(DataFormatError, match=r"latin1\.tsv:3: not valid UTF-8"):
        read_conll(path)


def test_read_conll_empty_file(tmp_path):
    with pytest.raises(DataFormatError, match="no sentences found"):
        read_conll(write(tmp_path / "empty.tsv", "\n-DOCSTART-\tO\n\n"))


# --------------------------------------------------------------------------- #
# JSON lines tokens and dispatch
# --------------------------------------------------------------------------- #


def jsonl(path: Path, records: list) -> Path:
    return write(path, "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")


def test_read_jsonl_tokens_and_custom_keys(tmp_path):
    path = jsonl(tmp_path / "a.jsonl", [{"tokens": ["a", "b"], "ner_tags": ["B-X", "O"], "id": 1}, ""])
    assert read_jsonl_tokens(path) == [{"tokens": ["a", "b"], "ner_tags": ["B-X", "O"]}]
    other = jsonl(tmp_path / "b.jsonl", [{"words": ["a"], "labels": ["O"]}])
    assert read_jsonl_tokens(other, tokens_key="words", tags_key="labels")[0]["ner_tags"] == ["O"]


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"tokens": ["a"]}, "missing field 'ner_tags'; fields present: ['tokens']"),
        ({"tokens": ["a", "b"], "ner_tags": ["O"]}, "2 tokens but 1 tags"),
        ({"tokens": ["a"], "ner_tags": [3]}, "holds numbers"),
        ({"tokens": ["a"], "ner_tags": [""]}, "item 0 is ''"),
        ({"tokens": "a b", "ner_tags": ["O"]}, "must be a list"),
        ('{"tokens": ["a"], ', "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_read_jsonl_tokens_errors_name_line_and_field(tmp_path, record, expected):
    path = jsonl(tmp_path / "bad.jsonl", [{"tokens": ["x"], "ner_tags": ["O"]}, record])
    with pytest.raises(DataFormatError) as info:
        read_jsonl_tokens(path)
    assert f"{path}:2:" in str(info.value)
    assert expected in str(info.value)


def test_read_token_file_dispatches_on_extension(tmp_path):
    conll = write(tmp_path / "a.iob", "a\tB-X\n")
    js = jsonl(tmp_path / "a.json", [{"tokens": ["a"], "ner_tags": ["B-X"]}])
    assert read_token_file(conll) == read_token_file(js) == [{"tokens": ["a"], "ner_tags": ["B-X"]}]
    with pytest.raises(DataFormatError, match=r"unsupported extension '\.xml'.*\.conll"):
        read_token_file(tmp_path / "a.xml")


# --------------------------------------------------------------------------- #
# Text tables
# --------------------------------------------------------------------------- #

CSV_TEXT = (
    "id,text,specialty,cuis,split\n"
    '1,"Chest X-ray, PA view.",Radiology,C1;C2,train\n'
    '2,"Line one\nline two",Surgery, C2 ;;C3 ,validation\n'
    "3,Echo,Cardiovascular / Pulmonary,,train\n"
)


def test_read_text_table_single_and_multi_label(tmp_path):
    path = write(tmp_path / "t.csv", CSV_TEXT)
    rows = read_text_table(path, "text", "specialty", extra_columns=["split"])
    assert rows == [
        {"text": "Chest X-ray, PA view.", "label": "Radiology", "split": "train"},
        {"text": "Line one\nline two", "label": "Surgery", "split": "validation"},
        {"text": "Echo", "label": "Cardiovascular / Pulmonary", "split": "train"},
    ]
    multi = read_text_table(path, "text", "cuis", label_separator=";")
    assert [row["labels"] for row in multi] == [["C1", "C2"], ["C2", "C3"], []]


def test_read_text_table_tsv_jsonl_and_long_fields(tmp_path):
    long_text = "x" * 300_000  # beyond csv's default 131072-character field limit
    tsv = write(tmp_path / "t.tsv", f"text\tlabel\n{long_text}\tA\n")
    assert read_text_table(tsv, "text", "label")[0]["text"] == long_text
    js = jsonl(
        tmp_path / "t.jsonl",
        [{"text": "a", "label": 1, "labels": []}, {"text": "b", "label": "B", "labels": ["X", " Y "]}],
    )
    assert read_text_table(js, "text", "label")[0] == {"text": "a", "label": "1"}
    assert read_text_table(js, "text", "labels", label_separator=";")[1]["labels"] == ["X", "Y"]


def test_read_text_table_missing_column_lists_available(tmp_path):
    path = write(tmp_path / "t.csv", CSV_TEXT)
    with pytest.raises(DataFormatError) as info:
        read_text_table(path, "transcription", "specialty")
    assert str(path) in str(info.value)
    assert "'transcription'" in str(info.value)
    assert "['id', 'text', 'specialty', 'cuis', 'split']" in str(info.value)


def test_read_text_table_empty_text_raises_or_drops(tmp_path, caplog):
    # Lines: 1 header, 2 first row, 3-4 second row, 5 whitespace text, 6 empty text, 7 fine.
    path = write(tmp_path / "t.csv", CSV_TEXT.replace("3,Echo", "3,\"  \"") + "4,,Surgery,,train\n5,ok,Surgery,,x\n")
    with pytest.raises(DataFormatError) as info:
        read_text_table(path, "text", "specialty")
    message = str(info.value)
    assert str(path) in message
    assert "2 rows have empty text" in message and "lines 5, 6" in message
    assert "drop_empty_text=True" in message
    with caplog.at_level(logging.WARNING, logger="medheads.data"):
        rows = read_text_table(path, "text", "specialty", drop_empty_text=True)
    assert [row["text"] for row in rows] == ["Chest X-ray, PA view.", "Line one\nline two", "ok"]
    assert "dropped 2 rows" in caplog.text


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("text,label\na,X\nb,Y,extra\n", ":3: 3 fields but the header has 2"),
        ("text,label\na,X\nb,\n", "1 rows have an empty label in column 'label' (lines 3)"),
        ('text,label\na,X\n"b,Y\n', "unexpected end of data"),
        ("", "file is empty"),
    ],
)
def test_read_text_table_malformed(tmp_path, content, expected):
    path = write(tmp_path / "t.csv", content)
    with pytest.raises(DataFormatError) as info:
        read_text_table(path, "text", "label")
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_filter_rare_labels():
    rows = [{"text": "a", "labels": ["A", "B"]}, {"text": "b", "labels": ["A", "C"]}, {"text": "c", "labels": ["C"]}]
    kept_rows, kept, counts = filter_rare_labels(rows, min_count=2)
    assert kept == ["A", "C"]
    assert counts == {"A": 2, "B": 1, "C": 2}
    assert [row["labels"] for row in kept_rows] == [["A"], ["A", "C"], ["C"]]
    assert rows[0]["labels"] == ["A", "B"]  # input untouched


# --------------------------------------------------------------------------- #
# Images
# --------------------------------------------------------------------------- #


def test_read_npz_images(tmp_path):
    path = tmp_path / "d.npz"
    images = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4)
    np.savez(path, train_images=images, train_labels=np.array([[0], [1], [1]], dtype=np.uint8))
    got_images, labels = read_npz_images(path, "train")
    assert got_images.dtype == np.uint8 and got_images.shape == (3, 4, 4)
    assert labels.tolist() == [0, 1, 1] and labels.dtype == np.int64


IMG = np.zeros((2, 4, 4), np.uint8)
LAB = np.zeros(2, np.uint8)


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"val_images": IMG}, "no array 'train_images' for split 'train'; arrays present: ['val_images']"),
        ({"train_images": IMG, "train_labels": np.zeros(3, np.uint8)}, "2 images"),
        ({"train_images": np.zeros((2, 4), np.uint8), "train_labels": LAB}, "expected [N, H, W]"),
        ({"train_images": np.full((2, 4, 4), 0.5), "train_labels": LAB}, "integers 0-255"),
        ({"train_images": IMG, "train_labels": np.zeros((2, 3), np.uint8)}, "expected integer class ids"),
    ],
)
def test_read_npz_images_errors(tmp_path, arrays, expected):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataFormatError) as info:
        read_npz_images(path, "train")
    assert str(path) in str(info.value) and expected in str(info.value)


def test_read_npz_images_corrupt_file(tmp_path):
    path = write(tmp_path / "d.npz", "this is not a zip archive")
    with pytest.raises(DataFormatError, match=r"d\.npz: not a readable \.npz archive"):
        read_npz_images(path, "train")
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(DataFormatError, match="not an .npz archive"):
        read_npz_images(single, "train")


def make_image_folder(root: Path) -> None:
    for name, count in (("normal", 2), ("pneumonia", 1)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new("L", (8, 8), color=i * 40).save(root / name / f"{i}.png")
    (root / "normal" / ".DS_Store").write_bytes(b"junk")  # hidden files are ignored


def test_read_image_folder(tmp_path):
    make_image_folder(tmp_path)
    paths, classes, labels = read_image_folder(tmp_path)
    assert classes == ["normal", "pneumonia"]
    assert labels == [0, 0, 1]
    relative = [Path(p).relative_to(tmp_path).as_posix() for p in paths]
    assert relative == ["normal/0.png", "normal/1.png", "pneumonia/0.png"]


def test_read_image_folder_errors(tmp_path):
    with pytest.raises(DataFormatError, match="no class sub-folders"):
        read_image_folder(tmp_path)
    make_image_folder(tmp_path)
    bad = tmp_path / "pneumonia" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataFormatError) as info:
        read_image_folder(tmp_path)
    assert f"{bad}: unreadable or corrupt image" in str(info.value)
    bad.unlink()
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DataFormatError, match=r"empty_class: class folder has no images"):
        read_image_folder(tmp_path)


# --------------------------------------------------------------------------- #
# Real data (small files and slices)
# --------------------------------------------------------------------------- #


@needs_data
@pytest.mark.parametrize(("name", "sentences", "types"), [
    ("jnlpba", 1739, {"protein", "DNA", "RNA", "cell_type", "cell_line"}),
    ("ncbi-disease", 923, {"Disease"}),
])
def test_real_ner_devel(name, sentences, types):
    data = read_token_file(DATA_DIR / name / "devel.tsv")
    assert len(data) == sentences
    tags = {tag for sentence in data for tag in sentence["ner_tags"]}
    assert tags == {"O"} | {f"{p}-{t}" for p in "BI" for t in types}
    assert all(len(s["tokens"]) == len(s["ner_tags"]) > 0 for s in data)


@needs_data
def test_real_mtsamples():
    rows = read_text_table(DATA_DIR / "mtsamples" / "mtsamples_6class.csv", "transcription", "medical_specialty",
                           extra_columns=["split"])
    assert len(rows) == 2296 + 283
    assert sum(row["split"] == "validation" for row in rows) == 283
    assert len({row["label"] for row in rows}) == 6


@needs_data
def test_real_rocov2_has_one_blank_caption():
    path = DATA_DIR / "rocov2" / "rocov2_valid.csv"
    with pytest.raises(DataFormatError, match="1 rows have empty text in column 'caption'"):
        read_text_table(path, "caption", "cuis_manual", label_separator=";")
    rows = read_text_table(path, "caption", "cuis_manual", label_separator=";", drop_empty_text=True)
    assert len(rows) == 9903
    _, kept, counts = filter_rare_labels(rows, min_count=20)
    assert len(counts) == 18 and len(kept) == 17  # C0205106 occurs only 13 times


@needs_data
def test_real_pneumoniamnist_val():
    images, labels = read_npz_images(DATA_DIR / "pneumoniamnist" / "pneumoniamnist.npz", "val")
    assert images.shape == (524, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (524,) and set(labels.tolist()) == {0, 1}
