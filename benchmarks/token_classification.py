"""Benchmark 1: token-classification inference, `HiddenLayerTokenClassifier` on layer k vs `BertForTokenClassification`.

Both run the same pretrained encoder over the same pre-tokenized, dynamically padded batches of JNLPBA devel sentences
(words pre-split, `is_split_into_words=True`), interleaved batch by batch in rotating order so that load swings of a
shared machine hit every side alike. The medheads model builds and runs only the first k of the L encoder
layers, so its forward costs about k/L of the stock model's: target speed-up >= 0.9 * L/k. Tokenization is done once
beforehand and is not timed. The medheads logits are also checked against the slow path of the seed: a full forward
with `output_hidden_states=True` and the same head applied to `hidden_states[k]`.

Peak memory: each side runs in a fresh subprocess that loads its model, warms up on one batch, then measures the
process's resident-memory high-water mark over one pass (see `benchmarks.common.measure_peak_rss`).
"""

from __future__ import annotations

import torch

from benchmarks import common

DEFAULTS = dict(encoder=None, data_dir=None, n_sentences=256, batch_size=32, layers=[2, 3, 6], repeats=4,
                max_length=512, measure_memory=True)


def load_sentences(data_dir, n_sentences: int) -> tuple[list[dict], list[str]]:
    from medheads.data import read_conll

    sentences = read_conll(common.data_dir(data_dir) / "jnlpba" / "devel.tsv")
    labels = sorted({tag for sentence in sentences for tag in sentence["ner_tags"]})
    return sentences[:n_sentences], labels


def make_batches(tokenizer, sentences: list[dict], batch_size: int, max_length: int) -> list[dict]:
    """Tokenized once, in data order, each batch padded to its own longest sentence."""
    batches = []
    for start in range(0, len(sentences), batch_size):
        words = [s["tokens"] for s in sentences[start:start + batch_size]]
        encoded = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
        rows = [{key: encoded[key][i] for key in encoded.keys()} for i in range(len(words))]
        batches.append(dict(tokenizer.pad(rows, return_tensors="pt")))
    return batches


def build_model(side: str, encoder: str, labels: list[str]):
    from transformers import AutoModelForTokenClassification

    from medheads import HiddenLayerTokenClassifier

    id2label = dict(enumerate(labels))
    torch.manual_seed(0)
    if side == "stock":
        model = AutoModelForTokenClassification.from_pretrained(
            encoder, id2label=id2label, label2id={v: k for k, v in id2label.items()})
    else:
        model = HiddenLayerTokenClassifier.from_encoder(encoder, hidden_layers=int(side.split("_")[1]),
                                                        id2label=id2label)
    return model.eval()


def run_pass(model, batches) -> list[torch.Tensor]:
    with torch.inference_mode():
        return [model(**batch).logits for batch in batches]


def memory_sides(sides: list[str], encoder: str | None, data_dir, n_sentences: int, batch_size: int,
                 max_length: int) -> dict:
    """Subprocess entry point: peak resident memory of each side over one pass, one model loaded at a time."""
    from transformers import AutoTokenizer

    common.set_threads()
    common.quiet_transformers()
    encoder = encoder or common.minilm_path()
    sentences, labels = load_sentences(data_dir, n_sentences)
    batches = make_batches(AutoTokenizer.from_pretrained(encoder), sentences, batch_size, max_length)
    results = {}
    for side in sides:
        model = build_model(side, encoder, labels)
        run_pass(model, batches[:1])
        results[side] = common.measure_peak_rss(lambda: run_pass(model, batches))
        results[side]["weights_mib"] = common.parameter_mib(model)
        del model
        common.release()
    return results


def interleaved_passes(models: dict, batches: list[dict], repeats: int) -> dict[str, list[float]]:
    """Seconds per pass over all batches for each model, `repeats` times, interleaved batch by batch.

    Every batch is run by every model back to back, in an order that rotates from batch to batch, so a burst of load
    on a shared machine lands on all sides alike; a side's pass time is the sum of its batch times.
    """
    import time

    names = list(models)
    with torch.inference_mode():
        for model in models.values():  # warm-up
            model(**batches[0])
        times = {name: [] for name in names}
        for _ in range(repeats):
            totals = dict.fromkeys(names, 0.0)
            for b, batch in enumerate(batches):
                shift = b % len(names)
                for name in names[shift:] + names[:shift]:
                    start = time.perf_counter()
                    models[name](**batch)
                    totals[name] += time.perf_counter() - start
            for name in names:
                times[name].append(totals[name])
    return times


def check_slow_path(fast_models: dict, stock, batches) -> dict:
    """The seed's way: full forward with output_hidden_states=True, head on hidden_states[k]; must equal the fast path."""
    diffs = {name: 0.0 for name in fast_models}
    with torch.inference_mode():
        for batch in batches:
            hidden_states = stock.base_model(**batch, output_hidden_states=True).hidden_states
            for name, model in fast_models.items():
                k = model.layers[0]
                slow = model.classifier(hidden_states[k])
                fast = model(**batch).logits
                torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5,
                                           msg=lambda m: f"{name}: logits differ from the slow path: {m}")
                diffs[name] = max(diffs[name], float((fast - slow).abs().max()))
    return diffs


def run(encoder=None, data_dir=None, n_sentences=256, batch_size=32, layers=(2, 3, 6), repeats=4, max_length=512,
        measure_memory=True) -> dict:
    from transformers import AutoTokenizer

    encoder = encoder or common.minilm_path()
    sentences, labels = load_sentences(data_dir, n_sentences)
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    batches = make_batches(tokenizer, sentences, batch_size, max_length)
    real_tokens = int(sum(int(b["attention_mask"].sum()) for b in batches))
    padded_tokens = int(sum(b["attention_mask"].numel() for b in batches))

    stock = build_model("stock", encoder, labels)
    depth = int(stock.config.num_hidden_layers)
    fast = {f"layer_{k}": build_model(f"layer_{k}", encoder, labels) for k in layers}

    max_abs_diff = check_slow_path(fast, stock, batches)
    models = {"stock": stock, **fast}
    times = interleaved_passes(models, batches, repeats)
    memory = common.probe_memory(
        "benchmarks.token_classification", "memory_sides", sides=list(models), encoder=encoder,
        data_dir=data_dir and str(data_dir), n_sentences=n_sentences, batch_size=batch_size,
        max_length=max_length) if measure_memory else {}

    sides = {}
    for name, model in models.items():
        seconds = common.median(times[name])
        sides[name] = {
            "model": type(model).__name__,
            "encoder_layers_run": depth if name == "stock" else max(model.layers),
            "parameters": sum(p.numel() for p in model.parameters()),
            "seconds_per_pass": times[name],
            "median_seconds": seconds,
            "tokens_per_second": real_tokens / seconds,
            "sentences_per_second": len(sentences) / seconds,
        }
        if measure_memory:
            sides[name]["memory"] = memory[name]

    comparisons = []
    for name in fast:
        k = max(fast[name].layers)
        speedup = common.ratio(sides["stock"]["median_seconds"], sides[name]["median_seconds"])
        target = common.target_result(speedup, round(0.9 * depth / k, 3))
        entry = {"fast": name, "slow": "stock", "layer": k, "speedup": speedup, "target": target["target"],
                 "target_met": target["met"]}
        if measure_memory and sides["stock"]["memory"]["peak_extra_mib"] is not None:
            entry["peak_extra_memory_ratio"] = common.ratio(sides["stock"]["memory"]["peak_extra_mib"],
                                                            sides[name]["memory"]["peak_extra_mib"])
            entry["weights_ratio"] = common.ratio(sides["stock"]["memory"]["weights_mib"],
                                                  sides[name]["memory"]["weights_mib"])
        comparisons.append(entry)

    return {
        "name": "token_classification",
        "title": "Token-classification inference: HiddenLayerTokenClassifier (layer k) vs " + type(stock).__name__,
        "settings": {"encoder": encoder, "data": "jnlpba/devel.tsv", "sentences": len(sentences),
                     "batch_size": batch_size, "batches": len(batches), "padding": "dynamic (per batch)",
                     "real_tokens": real_tokens, "padded_tokens": padded_tokens, "encoder_layers": depth,
                     "repeats": repeats, "timed": "model forward of every batch under torch.inference_mode(), the sides "
                                                  "interleaved batch by batch in rotating order, summed per pass; "
                                                  "tokenization done once beforehand",
                     "attn_implementation": stock.config._attn_implementation},
        "sides": sides,
        "comparisons": comparisons,
        "checks": {"logits_equal_slow_path": True, "slow_path": "full encoder forward with output_hidden_states=True, "
                   "same classifier on hidden_states[k], every batch; torch.testing.assert_close rtol=atol=1e-5",
                   "max_abs_diff": max_abs_diff},
    }


if __name__ == "__main__":
    common.main_for("benchmarks.token_classification", DEFAULTS)
