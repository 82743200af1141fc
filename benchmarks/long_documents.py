"""Benchmark 5: what reading whole long documents costs, chunked pooling over all windows vs truncation at 512.

`FrozenEncoderMultiLabel` with `max_chunk_length=512` encodes a text longer than the window as consecutive 512-token
windows in one batch and mean-pools over all of them; the usual alternative truncates at 512 tokens and never sees the
rest. Both sides use the same model on MTSamples transcriptions, one document per call (inference as a user runs it),
tokenized once beforehand (not timed). The documents are picked at evenly spaced quantiles of the corpus's token
lengths, shortest to longest, so the sample covers typical and worst cases. No target: this shows the cost.

Peak memory: one fresh subprocess loads the model, warms up, and for each side measures the resident-memory
high-water mark over all the documents (the longest document sets it).
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks import common

DEFAULTS = dict(encoder=None, data_dir=None, n_docs=16, window=512, repeats=3, measure_memory=True)


def load_documents(encoder: str, data_dir, n_docs: int):
    """(all token lengths of the corpus, the token ids of the sampled documents)."""
    from transformers import AutoTokenizer

    from medheads.data import read_text_table

    rows = read_text_table(common.data_dir(data_dir) / "mtsamples" / "mtsamples_6class.csv", "transcription",
                           "medical_specialty", drop_empty_text=True)
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    tokenizer.model_max_length = 10**9  # no "longer than the maximum" warning: this benchmark wants whole texts
    ids = tokenizer([row["text"] for row in rows], truncation=False)["input_ids"]
    lengths = np.array([len(x) for x in ids])
    order = np.argsort(lengths, kind="stable")
    picks = order[np.unique(np.linspace(0, len(order) - 1, n_docs).round().astype(int))]
    return lengths, [ids[i] for i in picks], tokenizer


def side_inputs(documents: list[list[int]], tokenizer, window: int) -> dict[str, list[dict]]:
    def encode(ids):
        tensor = torch.tensor([ids])
        return {"input_ids": tensor, "attention_mask": torch.ones_like(tensor)}

    truncated = [ids if len(ids) <= window else ids[:window - 1] + [tokenizer.sep_token_id] for ids in documents]
    return {"chunked_all_windows": [encode(ids) for ids in documents],
            "truncated": [encode(ids) for ids in truncated]}


def build_model(encoder: str, window: int):
    from medheads import FrozenEncoderMultiLabel

    return FrozenEncoderMultiLabel.from_encoder(encoder, pooling="mean", id2label={0: "a", 1: "b"},
                                                max_chunk_length=window).eval()


def encode_all(model, inputs: list[dict], times: list | None = None) -> list[torch.Tensor]:
    import time

    outputs = []
    with torch.inference_mode():
        for batch in inputs:
            start = time.perf_counter()
            outputs.append(model.forward_features(**batch))
            if times is not None:
                times.append(time.perf_counter() - start)
    return outputs


def memory_sides(encoder: str, documents: list[list[int]], window: int) -> dict:
    """Subprocess entry point: peak resident memory of each side over the given documents (token ids)."""
    from transformers import AutoTokenizer

    common.set_threads()
    common.quiet_transformers()
    inputs = side_inputs(documents, AutoTokenizer.from_pretrained(encoder), window)
    model = build_model(encoder, window)
    encode_all(model, inputs["truncated"][:1])
    results = {}
    for side in ("truncated", "chunked_all_windows"):
        results[side] = common.measure_peak_rss(lambda: encode_all(model, inputs[side]))
        common.release()
    return results


def run(encoder=None, data_dir=None, n_docs=16, window=512, repeats=3, measure_memory=True) -> dict:
    encoder = encoder or common.minilm_path()
    corpus_lengths, documents, tokenizer = load_documents(encoder, data_dir, n_docs)
    inputs = side_inputs(documents, tokenizer, window)
    model = build_model(encoder, window)
    per_doc = {side: [[] for _ in documents] for side in inputs}
    outputs = {}

    def side(name):
        def call():
            times = []
            outputs[name] = encode_all(model, inputs[name], times)
            for i, seconds in enumerate(times):
                per_doc[name][i].append(seconds)
        return call

    times = common.alternate({name: side(name) for name in inputs}, repeats,
                             warmups={name: (lambda n=name: encode_all(model, inputs[n][:2])) for name in inputs})
    lengths = np.array([len(ids) for ids in documents])
    windows = -(-lengths // window)
    short = lengths <= window
    for i in np.flatnonzero(short):
        torch.testing.assert_close(outputs["chunked_all_windows"][i], outputs["truncated"][i], rtol=0, atol=0)
    memory = common.probe_memory("benchmarks.long_documents", "memory_sides", encoder=encoder,
                                 documents=[list(map(int, ids)) for ids in documents], window=window) \
        if measure_memory else {}

    sides = {}
    for name in inputs:
        seconds = common.median(times[name])
        read = lengths if name.startswith("chunked") else np.minimum(lengths, window)
        sides[name] = {"seconds_per_pass": times[name], "median_seconds": seconds,
                       "seconds_per_document": seconds / len(documents),
                       "tokens_read": int(read.sum()), "tokens_per_second": float(read.sum() / seconds)}
        if measure_memory:
            sides[name]["memory"] = memory[name]
    documents_table = [
        {"tokens": int(lengths[i]), "windows": int(windows[i]),
         "chunked_seconds": common.median(per_doc["chunked_all_windows"][i]),
         "truncated_seconds": common.median(per_doc["truncated"][i])}
        for i in range(len(documents))
    ]
    time_ratio = common.ratio(sides["chunked_all_windows"]["median_seconds"], sides["truncated"]["median_seconds"])
    comparison = {"slow": "chunked_all_windows", "fast": "truncated", "time_ratio": time_ratio, "target": None,
                  "target_met": None}
    if measure_memory and memory["truncated"]["peak_extra_mib"]:
        comparison["peak_extra_memory_ratio"] = common.ratio(memory["chunked_all_windows"]["peak_extra_mib"],
                                                             memory["truncated"]["peak_extra_mib"])

    def stats(values):
        return {"median": float(np.median(values)), "p90": float(np.percentile(values, 90)),
                "max": int(values.max()), "mean": float(values.mean())}

    return {
        "name": "long_documents",
        "title": "Long MTSamples transcriptions: chunked pooling over all 512-token windows vs truncation at 512",
        "settings": {"encoder": encoder, "data": "mtsamples/mtsamples_6class.csv (non-empty transcriptions)",
                     "documents": len(documents), "window": window, "repeats": repeats, "batch": "one document",
                     "selection": "evenly spaced quantiles of token length, shortest to longest",
                     "sample_tokens": stats(lengths),
                     "corpus_documents": int(len(corpus_lengths)),
                     "corpus_tokens": stats(corpus_lengths),
                     "corpus_longer_than_window": float((corpus_lengths > window).mean()),
                     "corpus_tokens_seen_when_truncated": float(np.minimum(corpus_lengths, window).sum()
                                                                / corpus_lengths.sum()),
                     "timed": "forward_features per document under torch.inference_mode(); tokenization beforehand"},
        "sides": sides,
        "comparisons": [comparison],
        "documents": documents_table,
        "checks": {"short_documents_identical": int(short.sum()),
                   "note": "documents within one window give bit-identical features on both sides"},
    }


if __name__ == "__main__":
    common.main_for("benchmarks.long_documents", DEFAULTS)
