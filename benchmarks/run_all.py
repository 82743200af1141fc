"""Run every medheads benchmark and write `benchmarks/RESULTS.md` and `benchmarks/results.json`.

    flock /tmp/medheads-heavy.lock python benchmarks/run_all.py            # all five, about 10 minutes on 2 cores
    python benchmarks/run_all.py --only token_classification,long_documents

Each benchmark runs both of its sides in this one process (alternating repeats, medians, ratios); see each module's
docstring for exactly what is timed. A benchmark that fails is recorded with its error and the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/run_all.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

BENCHMARKS = ("token_classification", "frozen_training", "feature_extraction", "vit_cached", "long_documents",
              "deploy_pipelines")
COMMAND = "flock /tmp/medheads-heavy.lock python benchmarks/run_all.py"
HERE = Path(__file__).resolve().parent


def run_benchmarks(names=BENCHMARKS, settings: dict | None = None, log=print) -> dict:
    """Run the named benchmarks with their default (full) settings, or `settings[name]` overrides."""
    results = {}
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        load_before = os.getloadavg()
        start = time.perf_counter()
        log(f"[{time.strftime('%H:%M:%S')}] {name} ...")
        try:
            result = module.run(**(settings or {}).get(name, {}))
        except Exception as error:  # noqa: BLE001 - recorded, the other benchmarks still run
            result = {"name": name, "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
            log(result["traceback"])
        result["wall_seconds"] = time.perf_counter() - start
        result["load_average_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
        result["command"] = f"python -m benchmarks.{name}"
        results[name] = common.rounded(result)
        log(f"[{time.strftime('%H:%M:%S')}] {name} done in {result['wall_seconds']:.0f} s")
    return results


# -- RESULTS.md ------------------------------------------------------------------------------------------------------
def fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def met(comparison: dict) -> str:
    if comparison.get("target") is None:
        return "no target"
    return f">= {comparison['target']}x: " + ("met" if comparison.get("target_met") else "**missed**")


def table(headers: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(cell) if not isinstance(cell, str) else cell for cell in row) + " |"
              for row in rows]
    return lines + [""]


def render_token_classification(r: dict) -> list[str]:
    s = r["settings"]
    out = [f"JNLPBA devel, first {s['sentences']} sentences ({s['real_tokens']:,} real sub-word tokens, "
           f"{s['padded_tokens']:,} with padding), batch {s['batch_size']}, {s['padding']}, "
           f"{s['repeats']} alternating repeats; attention `{s['attn_implementation']}`. Timed: {s['timed']}.", ""]
    rows = []
    for name, side in r["sides"].items():
        memory = side.get("memory") or {}
        rows.append([f"`{name}` ({side['model']})", side["encoder_layers_run"], side["median_seconds"],
                     side["tokens_per_second"], memory.get("weights_mib"), memory.get("peak_extra_mib")])
    out += table(["side", "encoder layers run", "median s / pass", "tokens/s", "weights MiB",
                  "peak RSS above baseline, MiB"], rows)
    rows = [[f"layer {c['layer']} vs stock", f"**{c['speedup']:.2f}x**", met(c), c.get("weights_ratio"),
             c.get("peak_extra_memory_ratio")] for c in r["comparisons"]]
    out += table(["comparison", "speed-up", "target (0.9 L/k)", "weights ratio", "peak extra memory ratio"], rows)
    out.append(f"Check: medheads logits equal the seed's slow path ({r['checks']['slow_path']}); max abs diff "
               f"{r['checks']['max_abs_diff']}.")
    out.append("")
    out.append("Memory: measured in one fresh subprocess, one model at a time: resident-set high-water mark over one "
               "pass minus resident memory before it (kernel peak counter reset through /proc/self/clear_refs, "
               "glibc told to mmap every large block so freed tensors leave the count). Inference keeps no "
               "activations between layers, so the peak extra memory is about one layer's temporaries whatever the "
               "depth (the medheads model also keeps the k+1 hidden states it asks for); the saving is in weights "
               "(layers beyond k are never built) and time.")
    return out + [""]


def comparison_table(comparisons: list[dict], prefix: str) -> list[str]:
    rows = [[f"{prefix}{c['slow']}", f"**{c['speedup']:.1f}x**", met(c), f"{c['cpu_time_ratio']:.1f}x"]
            for c in comparisons]
    return table(["comparison", "wall-time speed-up", "target", "CPU-time ratio (cross-check)"], rows)


def render_training_dataset(name: str, d: dict) -> list[str]:
    s = d["settings"]
    hp = s["hyperparameters"]
    med = d["sides"]["medheads_cached"]
    out = [f"**{name}**: {s['train_texts']} training / {s['validation_texts']} validation texts (random sample, "
           f"seed 0), {s['labels']} labels, {s['problem_type']}, truncation at {s['max_length']} tokens for all sides "
           f"(median {s['median_tokens']:.0f} tokens, {s['texts_at_max_length']} of {s['train_texts']} training texts "
           f"reach it). Hyperparameters (all sides): {hp['num_train_epochs']} epochs, batch "
           f"{hp['per_device_train_batch_size']}, lr {hp['learning_rate']} ({hp['lr_scheduler_type']}), seed "
           f"{hp['seed']}, evaluation every epoch, no checkpoints.", ""]
    rows = [["`medheads_cached` (cached_features + Trainer on the head)", med["seconds"], med["cpu_seconds"],
             f"features {med['feature_seconds']:.1f} s + head {med['head_training_seconds']:.1f} s", med["measured"]]]
    for side, label in (("seed_padded_to_max", "(a) seed recipe: Trainer through the encoder, padded to max length"),
                        ("dynamic_padding", "(b) Trainer through the encoder, dynamic padding")):
        b = d["sides"][side]
        rows.append([label, b["seconds"], b["cpu_seconds"], f"{b['seconds_per_step']:.2f} s/step x "
                     f"{b['total_steps']} steps + {b['eval_seconds_per_epoch_estimated']:.1f} s eval x 10",
                     b["measured"]])
    out += table(["side", "10-epoch wall s", "CPU s (all threads)", "made of (wall)", "measured"], rows)
    out += comparison_table(d["comparisons"], "medheads vs ")
    q = d["quality"]
    final = ", ".join(f"{k} {v:.4f}" for k, v in q["final"].items() if k not in ("epoch",))
    out.append(f"Quality after 10 epochs (medheads, validation): {final}; best {q['metric']} {q['best']:.4f} at "
               f"epoch {q['best_epoch']:.0f}. Baselines: {q['baselines']}: "
               + ", ".join(f"{k} = {v}" for k, v in d["checks"].items()) + ".")
    return out + [""]


def render_frozen_training(r: dict) -> list[str]:
    out = ["Timed from the first encoder call to the end of training. Baselines extrapolated from measured samples "
           "(a full 10-epoch baseline would take over an hour here), taken once before and once after the cached "
           "run: mean duration of the measured steps (each sample's first step left out) times the 10-epoch step "
           "count, plus 10 validation passes scaled from the measured validation examples. Same model class "
           "(`FrozenEncoderMultiLabel`, MiniLM, mean pooling, MLP 384-384 ReLU, dropout 0.2) and weights for all "
           "sides; the baselines keep the encoder in eval mode under no_grad (the seed left dropout on, which only "
           "makes it slower).", ""]
    for name, d in r["datasets"].items():
        out += render_training_dataset(name, d)
    return out


def render_feature_extraction(r: dict) -> list[str]:
    s = r["settings"]
    t = s["caption_tokens"]
    out = [f"{s['captions']} ROCOv2 captions ({s['data']}), tokens per caption: mean {t['mean']:.1f}, median "
           f"{t['median']:.0f}, max {t['max']}; batch {s['batch_size']}; {s['repeats']} alternating repeats. Timed: "
           f"{s['timed']}.", ""]
    rows = [[f"`{name}`", side["median_seconds"], side["captions_per_second"], side["tokens_processed_including_padding"]]
            for name, side in r["sides"].items()]
    out += table(["side", "median s / pass", "captions/s", "tokens through the encoder"], rows)
    rows = [[f"sorted dynamic vs {c['slow']}", f"**{c['speedup']:.1f}x**", met(c)] for c in r["comparisons"]]
    out += table(["comparison", "speed-up", "target"], rows)
    out.append("Check: " + ", ".join(f"{k} = {v}" for k, v in r["checks"].items()) + ".")
    return out + [""]


def render_vit(r: dict) -> list[str]:
    s = r["settings"]
    med, base = r["sides"]["medheads_cached"], r["sides"]["backbone_every_epoch"]
    hp = s["hyperparameters"]
    out = [f"Backbone: {s['backbone']}, {s['backbone_parameters']:,} parameters, frozen. Head: {s['head']}. Data: "
           f"{s['data']}, {s['train_images']} training / {s['validation_images']} validation images; preprocessing "
           f"({s['preprocessing_seconds_not_timed']:.1f} s) done once, not timed. {hp['num_train_epochs']} epochs, "
           f"batch {hp['per_device_train_batch_size']}, lr {hp['learning_rate']}, seed {hp['seed']}, evaluation every "
           "epoch.", ""]
    rows = [["`medheads_cached` (token_features cached)", med["seconds"], med["cpu_seconds"],
             f"features {med['feature_seconds']:.1f} s + head {med['head_training_seconds']:.1f} s", med["measured"]],
            ["backbone every epoch", base["seconds"], base["cpu_seconds"], f"{base['seconds_per_step']:.2f} s/step x "
             f"{base['total_steps']} steps + {base['eval_seconds_per_epoch_estimated']:.1f} s eval x 10",
             base["measured"]]]
    out += table(["side", "10-epoch wall s", "CPU s (all threads)", "made of (wall)", "measured"], rows)
    out += comparison_table(r["comparisons"], "cached vs ")
    final = ", ".join(f"{k} {v:.4f}" for k, v in r["quality"]["final"].items() if k != "epoch")
    out.append(f"Validation after 10 epochs (random backbone, so only a sanity number): {final}. Baseline: "
               f"{r['quality']['baselines']}: " + ", ".join(f"{k} = {v}" for k, v in r["checks"].items()) + ".")
    return out + [""]


def render_long_documents(r: dict) -> list[str]:
    s = r["settings"]
    c, sm = s["corpus_tokens"], s["sample_tokens"]
    out = [f"MTSamples: {s['corpus_documents']} non-empty transcriptions, tokens per document median {c['median']:.0f},"
           f" p90 {c['p90']:.0f}, max {c['max']:,}; {100 * s['corpus_longer_than_window']:.0f}% are longer than "
           f"{s['window']} and truncation reads only {100 * s['corpus_tokens_seen_when_truncated']:.0f}% of all "
           f"tokens. Sample: {s['documents']} documents at {s['selection']} (median {sm['median']:.0f}, max "
           f"{sm['max']:,} tokens), {s['batch']} per call, {s['repeats']} alternating repeats. Timed: {s['timed']}.",
           ""]
    rows = []
    for name, side in r["sides"].items():
        memory = side.get("memory") or {}
        rows.append([f"`{name}`", side["seconds_per_document"], side["tokens_read"], side["tokens_per_second"],
                     memory.get("peak_extra_mib")])
    out += table(["side", "s / document (mean)", "tokens read", "tokens/s", "peak RSS above baseline, MiB"], rows)
    comp = r["comparisons"][0]
    out.append(f"Chunked / truncated: time **{comp['time_ratio']:.2f}x**, peak extra memory "
               f"{fmt(comp.get('peak_extra_memory_ratio'))}x (no target).")
    out.append("")
    out += table(["tokens", "windows", "chunked s", "truncated s"],
                 [[d["tokens"], d["windows"], d["chunked_seconds"], d["truncated_seconds"]] for d in r["documents"]])
    out.append(f"Check: {r['checks']['short_documents_identical']} documents within one window: "
               f"{r['checks']['note']}.")
    return out + [""]


def render_deploy(r: dict) -> list[str]:
    s = r["settings"]
    out = [f"ONNX Runtime {s['onnxruntime']}, {s['threads']} threads for torch and ONNX Runtime alike. Timed: "
           f"{s['timed']}.", ""]
    titles = {"ner": "NER (JNLPBA devel sentences as raw text)", "text": "Multi-label text (ROCOv2 captions)",
              "image": "Image (PneumoniaMNIST val)"}
    for task, d in r["datasets"].items():
        ds = d["settings"]
        unit = next(k for k in next(iter(d["sides"].values())) if k.endswith("_per_second"))
        what = ", ".join(f"{k} {v}" for k, v in ds.items() if k not in ("repeats",))
        out += [f"**{titles.get(task, task)}**: {what}; {ds['repeats']} alternating repeats.", ""]
        out += table(["side", "median s / pass", unit.replace("_", " ")],
                     [[f"`{name}`", side["median_seconds"], side[unit]] for name, side in d["sides"].items()])
        out += table(["comparison", "speed-up", "target"],
                     [[f"{c['fast']} vs {c['slow']}", f"**{c['speedup']:.2f}x**", met(c)] for c in d["comparisons"]])
        check = ", ".join(f"{k} {v:.2e}" for k, v in d["export_check"].items())
        out.append(f"Export check (max abs logit difference from PyTorch on 64 real inputs): {check}.")
        if "int8_decisions_equal_fp32" in d:
            out.append(f"int8 label sets equal the fp32 model's on {100 * d['int8_decisions_equal_fp32']:.1f}% of "
                       "captions (random head).")
        if "quality" in d:
            q = d["quality"]
            out += ["", "Span F1 through the pipelines on raw devel sentences (character spans, "
                    f"`aggregation_strategy=\"first\"`, first {next(iter(q.values()))['sentences']} sentences):", ""]
            out += table(["side", "span F1", "precision", "recall"],
                         [[f"`{n}`", v["span_f1"], v["precision"], v["recall"]] for n, v in q.items()])
            qc = d["quality_check"]
            out.append(f"F1 drop of medheads int8 vs stock: {qc['span_f1_drop_points']:.2f} points (target <= "
                       f"{qc['target_max_drop']}): " + ("met" if qc["met"] else "**missed**") + ".")
            for name, points in qc.get("extra_span_f1_drop_points", {}).items():
                out.append(f"F1 drop of `{name}` vs stock: {points:.2f} points (no target).")
            if "int8_cost_points" in qc:
                out.append(f"Cost of int8 alone (medheads ONNX fp32 - ONNX int8, same model and pipeline): "
                           f"{qc['int8_cost_points']:.2f} points.")
        if d.get("training"):
            t = d["training"]
            runs = "; ".join(f"{side}: layer {run['layers']}, {run['seconds']:.0f} s" + (" (reused)" if run["reused"] else "")
                             for side, run in t["runs"].items())
            out += ["", f"Both NER models trained by the benchmark with one recipe (`medheads train-ner`): first "
                    f"{t['sentences']} sentences of {t['data']}, {t['epochs']:g} epoch, lr {t['learning_rate']:g}, "
                    f"batch {t['batch_size']}, every sub-token labelled ({runs})."]
        out.append("")
    return out


RENDERERS = {"token_classification": render_token_classification, "frozen_training": render_frozen_training,
             "feature_extraction": render_feature_extraction, "vit_cached": render_vit,
             "long_documents": render_long_documents, "deploy_pipelines": render_deploy}


def render(report: dict) -> str:
    m = report["machine"]
    out = ["# medheads benchmark results", "",
           f"Generated by `{report['command']}` on {m['date_utc']} in {report['total_seconds'] / 60:.1f} minutes.", "",
           f"Machine: {m['cpu_count']} CPU cores (`os.cpu_count()`), {m['cpu_model']}, no GPU; torch {m['torch']} "
           f"with {m['torch_threads']} threads, transformers {m['transformers']}, Python {m['python']}. The 2 cores "
           "are shared with other workers (heavy jobs serialised by the same lock, light ones not), so absolute "
           "times are noisy; each benchmark alternates its sides within one process so that both see the same "
           "machine, and the load average before/after each is recorded. Encoder: the bundled all-MiniLM-L6-v2 "
           "(BERT, 6 layers, width 384). Real data from `shared/data`; subsets are used to fit the run in 15 minutes "
           "and are stated below. Medians of alternating repeats; speed-up = slow side's time / fast side's time. "
           "The training benchmarks (2 and 4) cannot alternate whole runs, so they also report process CPU time "
           "(all threads): time spent descheduled by other work is not counted, so its ratio is a cross-check less "
           "sensitive to load on the shared machine (a busy partner thread still costs some spinning). The "
           "cached-training margins are small and load-dependent: see 'Run-to-run variation' in README.md.",
           ""]
    for run in report.get("partial_runs", []):
        out += [f"Re-run since: `{run['command']}` on {run['date_utc']} (torch {run['machine']['torch']}, "
                f"transformers {run['machine']['transformers']}): {', '.join(run['benchmarks'])}.", ""]
    out += ["## Summary", ""]
    rows = []
    for name, r in report["benchmarks"].items():
        if "error" in r:
            rows.append([name, "-", "-", f"**failed**: {r['error'][:120]}"])
            continue
        comparisons = [(k, c) for k, d in r.get("datasets", {}).items() for c in d["comparisons"]] or \
            [("", c) for c in r["comparisons"]]
        for prefix, c in comparisons:
            if "speedup" in c:
                what, value = f"{c['fast']} vs {c['slow']} (speed-up)", c["speedup"]
            else:
                what, value = f"{c['slow']} / {c['fast']} (time)", c["time_ratio"]
            what = f"{prefix}: {what}" if prefix else what
            rows.append([name, what, f"{value:.2f}x", met(c)])
    out += table(["benchmark", "comparison", "ratio", "target"], rows)
    for name, r in report["benchmarks"].items():
        out += [f"## {r.get('title', name)}", "",
                f"Command: `{r['command']}` (defaults = the settings below); wall {r['wall_seconds']:.0f} s; load "
                f"average before/after {r['load_average_before_after']}.", ""]
        if "error" in r:
            out += ["Failed:", "", "```", r["traceback"].strip(), "```", ""]
            continue
        out += RENDERERS[name](r)
    return "\n".join(out).rstrip() + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated benchmarks to run")
    parser.add_argument("--output_dir", default=str(HERE), help="where RESULTS.md and results.json go")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: min(2, cores))")
    parser.add_argument("--render_only", action="store_true",
                        help="only rewrite RESULTS.md from the results.json already in output_dir")
    parser.add_argument("--no_merge", action="store_true", help="with --only: write only the benchmarks run (default: "
                        "update them in the results.json already in output_dir and keep the others)")
    parser.add_argument("--settings", type=json.loads, default=None,
                        help='JSON overrides per benchmark, e.g. \'{"deploy_pipelines": {"ner_model": "outputs/x"}}\'')
    args = parser.parse_args(argv)
    output = Path(args.output_dir)
    if args.render_only:
        report = json.loads((output / "results.json").read_text())
        (output / "RESULTS.md").write_text(render(report))
        print(f"Wrote {output / 'RESULTS.md'}")
        return report
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}: choose from {', '.join(BENCHMARKS)}")
    common.set_threads(args.threads)
    common.quiet_transformers()
    start = time.perf_counter()
    report = {"command": COMMAND if set(names) == set(BENCHMARKS) else f"python benchmarks/run_all.py --only "
              f"{','.join(names)}", "machine": common.machine_info()}
    report["benchmarks"] = run_benchmarks(names, settings=args.settings)
    report["total_seconds"] = round(time.perf_counter() - start, 1)
    previous = output / "results.json"
    if set(names) != set(BENCHMARKS) and previous.exists() and not args.no_merge:
        # a partial run updates its benchmarks in the recorded results and keeps the others as they were
        old = json.loads(previous.read_text())
        merged = dict(old.get("benchmarks", {}))
        merged.update(report["benchmarks"])
        report = {**old, "benchmarks": merged,
                  "partial_runs": old.get("partial_runs", []) + [{"command": report["command"],
                                                                  "date_utc": report["machine"]["date_utc"],
                                                                  "benchmarks": names,
                                                                  "machine": report["machine"]}]}
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (output / "RESULTS.md").write_text(render(report))
    print(f"Wrote {output / 'RESULTS.md'} and {output / 'results.json'} ({report['total_seconds'] / 60:.1f} min)")
    return report


if __name__ == "__main__":
    main()
