"""Benchmark 3: feature-extraction throughput over ROCOv2 captions, length-sorted dynamic batches vs fixed padding.

All sides call `medheads.training.features.compute_features` with the same `FrozenEncoderMultiLabel` (MiniLM, mean pooling),
batch size 32, on the same captions:

* medheads: captions tokenized without padding; `compute_features` sorts them by length and pads each batch to its
  own longest caption (`DataCollatorWithPadding`).
* padded to the tokenizer's maximum length (512 for MiniLM's tokenizer), and padded to 256 like the ROCOv2 seed: every
  batch is 32 x 512 (or 32 x 256) tokens whatever the captions' lengths.

Tokenization is done once beforehand and is not timed. All sides must return the same pooled features (padding is
masked out of the mean); captions longer than the shorter padding length are truncated there and left out of that
comparison.
"""

from __future__ import annotations

import numpy as np

from benchmarks import common

DEFAULTS = dict(encoder=None, data_dir=None, n_captions=128, batch_size=32, pad_lengths=[512, 256], repeats=3)


def load_captions(data_dir, n_captions: int, seed: int = 1) -> list[str]:
    from medheads.data import read_text_table

    rows = read_text_table(common.data_dir(data_dir) / "rocov2" / "rocov2_valid.csv", "caption", "cuis_manual",
                           label_separator=";", drop_empty_text=True)
    index = np.random.default_rng(seed).permutation(len(rows))[:n_captions]
    return [rows[i]["text"] for i in index]


def run(encoder=None, data_dir=None, n_captions=128, batch_size=32, pad_lengths=(512, 256), repeats=3) -> dict:
    import datasets
    from transformers import AutoTokenizer, DataCollatorWithPadding, default_data_collator

    from medheads import FrozenEncoderMultiLabel
    from medheads.training.features import compute_features

    encoder = encoder or common.minilm_path()
    captions = load_captions(data_dir, n_captions)
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    longest = max(pad_lengths)
    model = FrozenEncoderMultiLabel.from_encoder(encoder, pooling="mean", id2label={0: "a", 1: "b"},
                                                 max_chunk_length=longest).eval()
    dynamic = datasets.Dataset.from_dict(dict(tokenizer(captions, truncation=True, max_length=longest)))
    lengths = np.array([len(ids) for ids in dynamic["input_ids"]])
    padded = {length: datasets.Dataset.from_dict(dict(tokenizer(captions, truncation=True, max_length=length,
                                                                 padding="max_length")))
              for length in pad_lengths}
    collator = DataCollatorWithPadding(tokenizer)

    outputs = {}

    def side(name, dataset, collate, sort):
        def call():
            outputs[name] = compute_features(model, dataset, collate, batch_size=batch_size,
                                             length_column="input_ids" if sort else None, desc=name)
        return call

    sides = {"medheads_sorted_dynamic": side("medheads_sorted_dynamic", dynamic, collator, True)}
    for length in pad_lengths:
        sides[f"padded_to_{length}"] = side(f"padded_to_{length}", padded[length], default_data_collator, False)
    small = dynamic.select(range(min(batch_size, len(dynamic))))
    warmups = {name: (lambda: compute_features(model, small, collator, batch_size=batch_size, desc="warm-up"))
               for name in sides}
    times = common.alternate(sides, repeats, warmups=warmups)

    real_tokens = int(lengths.sum())
    results = {}
    for name in sides:
        seconds = common.median(times[name])
        processed = real_tokens if name.startswith("medheads") else len(captions) * int(name.rsplit("_", 1)[1])
        results[name] = {"seconds_per_pass": times[name], "median_seconds": seconds,
                         "captions_per_second": len(captions) / seconds, "real_tokens_per_second": real_tokens / seconds,
                         "tokens_processed_including_padding": processed}
    checks = {}
    reference = outputs["medheads_sorted_dynamic"]
    for length in pad_lengths:
        keep = lengths <= length
        np.testing.assert_allclose(outputs[f"padded_to_{length}"][keep], reference[keep], rtol=1e-4, atol=1e-5,
                                   err_msg=f"features padded to {length} differ from the dynamic ones")
        checks[f"padded_to_{length}_features_equal"] = True
        checks[f"padded_to_{length}_captions_compared"] = int(keep.sum())
        checks[f"padded_to_{length}_max_abs_diff"] = float(np.abs(outputs[f"padded_to_{length}"][keep]
                                                                  - reference[keep]).max())
    targets = {max(pad_lengths): 5.0}
    comparisons = []
    for length in pad_lengths:
        speedup = common.ratio(results[f"padded_to_{length}"]["median_seconds"],
                               results["medheads_sorted_dynamic"]["median_seconds"])
        target = common.target_result(speedup, targets.get(length))
        comparisons.append({"fast": "medheads_sorted_dynamic", "slow": f"padded_to_{length}", "speedup": speedup,
                            "target": target["target"], "target_met": target["met"]})
    return {
        "name": "feature_extraction",
        "title": "Feature extraction over ROCOv2 captions: length-sorted dynamic batches vs padding to max length",
        "settings": {"encoder": encoder, "data": "rocov2/rocov2_valid.csv (random sample, seed 1)",
                     "captions": len(captions), "batch_size": batch_size, "repeats": repeats,
                     "caption_tokens": {"mean": float(lengths.mean()), "median": float(np.median(lengths)),
                                        "max": int(lengths.max())},
                     "timed": "compute_features over all captions (model forward, pooling, copy to numpy); "
                              "tokenization done once beforehand"},
        "sides": results,
        "comparisons": comparisons,
        "checks": checks,
    }


if __name__ == "__main__":
    common.main_for("benchmarks.feature_extraction", DEFAULTS)
