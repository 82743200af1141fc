"""Smoke tests of `benchmarks/`: every benchmark runs end to end on a tiny random model and a handful of real examples,
returns the documented structure, and its sides compute the same outputs where the benchmark claims so.

No timing is asserted here: speed is shown only by the recorded benchmark results (benchmarks/RESULTS.md).
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import encoder_config, make_tokenizer
from transformers import AutoModel

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import common, feature_extraction, frozen_training, long_documents, run_all  # noqa: E402
from benchmarks import token_classification, vit_cached  # noqa: E402

try:
    DATA = common.data_dir()
except FileNotFoundError as error:  # pragma: no cover - the project's data sits beside the checkout
    pytest.skip(str(error), allow_module_level=True)

TINY_VIT = dict(image_size=32, patch_size=8, hidden_size=32, layers=2, heads=4, intermediate_size=48,
                projection_size=8)
TRAIN_OVERRIDES = dict(num_train_epochs=2, per_device_train_batch_size=4, per_device_eval_batch_size=4)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models are dominated by thread start-up on a busy 2-core machine: one thread keeps the smoke test fast."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    common.quiet_transformers()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-encoder")
    torch.manual_seed(0)
    AutoModel.from_config(encoder_config(layers=4)).save_pretrained(folder)
    make_tokenizer(folder).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def settings(tiny_encoder, tmp_path_factory):
    deploy_work = tmp_path_factory.mktemp("deploy-bench")
    return {
        "token_classification": dict(encoder=tiny_encoder, n_sentences=10, batch_size=4, layers=[1, 2, 4], repeats=1,
                                     max_length=64, measure_memory=False),
        "frozen_training": dict(encoder=tiny_encoder, head_hidden_size=16, sizes={
            "mtsamples": dict(n_train=12, n_val=6, max_length=64, baseline_steps=2, baseline_eval_examples=4),
            "rocov2": dict(n_train=12, n_val=6, max_length=32, baseline_steps=3, baseline_eval_examples=4)},
            **TRAIN_OVERRIDES),
        "feature_extraction": dict(encoder=tiny_encoder, n_captions=10, batch_size=4, pad_lengths=[64, 32],
                                   repeats=1),
        "vit_cached": dict(n_train=8, n_val=4, baseline_steps=2, baseline_eval_examples=2, **TINY_VIT,
                           **TRAIN_OVERRIDES),
        "long_documents": dict(encoder=tiny_encoder, n_docs=4, window=32, repeats=1, measure_memory=False),
        "deploy_pipelines": dict(encoder=tiny_encoder, n_sentences=8, n_captions=8, n_images=8, batch_size=4,
                                 repeats=1, ner_layer=2, ner_train_sentences=16, n_quality=12, work_dir=str(deploy_work),
                                 # the stock side's model (trained by the benchmark first) as a second medheads side
                                 ner_extra_models=[str(deploy_work / "ner_trained_layer-1_16x1_lr0.0002")]),
    }


@pytest.fixture(scope="module")
def report(settings):
    logs = []
    results = run_all.run_benchmarks(run_all.BENCHMARKS, settings, log=logs.append)
    return {"command": "test", "machine": common.machine_info(), "total_seconds": 1.0, "benchmarks": results}


def comparisons_of(result):
    if "datasets" in result:
        return [c for d in result["datasets"].values() for c in d["comparisons"]]
    return result["comparisons"]


def test_every_benchmark_runs_and_reports_ratios(report):
    for name in run_all.BENCHMARKS:
        result = report["benchmarks"][name]
        assert "error" not in result, result.get("traceback")
        assert result["command"] == f"python -m benchmarks.{name}"
        comparisons = comparisons_of(result)
        assert comparisons
        for comparison in comparisons:
            value = comparison.get("speedup", comparison.get("time_ratio"))
            assert np.isfinite(value) and value > 0
            if comparison["target"] is not None:
                assert comparison["target_met"] == (value >= comparison["target"])


def test_token_classification_fast_path_equals_slow_path(report):
    result = report["benchmarks"]["token_classification"]
    assert set(result["sides"]) == {"stock", "layer_1", "layer_2", "layer_4"}
    assert result["sides"]["stock"]["model"] == "BertForTokenClassification"
    assert [c["layer"] for c in result["comparisons"]] == [1, 2, 4]
    assert [c["target"] for c in result["comparisons"]] == [3.6, 1.8, 0.9]  # 0.9 * L / k with L = 4
    assert result["checks"]["logits_equal_slow_path"] is True
    assert all(diff <= 1e-5 for diff in result["checks"]["max_abs_diff"].values())
    # a layer-k model builds k layers only: fewer parameters than the stock model
    assert result["sides"]["layer_1"]["parameters"] < result["sides"]["stock"]["parameters"]
    assert result["settings"]["real_tokens"] <= result["settings"]["padded_tokens"]


def test_slow_path_check_catches_a_different_encoder(tiny_encoder):
    sentences, labels = token_classification.load_sentences(None, 4)
    tokenizer = make_tokenizer(Path(tiny_encoder))
    batches = token_classification.make_batches(tokenizer, sentences, 4, 64)
    stock = token_classification.build_model("stock", tiny_encoder, labels)
    fast = token_classification.build_model("layer_2", tiny_encoder, labels)
    with torch.no_grad():
        fast.encoder.encoder.layer[0].output.dense.bias.add_(0.05 * torch.randn(32))  # a shift LayerNorm keeps
    with pytest.raises(AssertionError, match="slow path"):
        token_classification.check_slow_path({"layer_2": fast}, stock, batches)


def test_frozen_training_sides_follow_the_same_trajectory(report):
    result = report["benchmarks"]["frozen_training"]
    for name, dataset in result["datasets"].items():
        sides = dataset["sides"]
        assert set(sides) == {"medheads_cached", "seed_padded_to_max", "dynamic_padding"}
        cached = sides["medheads_cached"]
        assert cached["steps"] == 2 * 3  # 2 epochs of 12 texts in batches of 4
        assert len(cached["evaluations"]) == 2
        for side in ("seed_padded_to_max", "dynamic_padding"):
            assert sides[side]["total_steps"] == 6
            runs = sides[side]["samples_losses"]  # one sample before and one after the cached run
            assert len(runs) == 2 and runs[0] == runs[1]
            assert dataset["checks"][f"{side}_losses_match_steps"] == len(runs[0]) >= 2
            assert sides[side]["measured_steps"] == 2 * len(runs[0])
            np.testing.assert_allclose(runs[0], cached["losses"][:len(runs[0])], rtol=1e-4)
        assert dataset["quality"]["metric"] in dataset["quality"]["final"]
        assert all(c["cpu_time_ratio"] > 0 for c in dataset["comparisons"])
        assert cached["cpu_seconds"] > 0 and cached["feature_seconds"] + cached["head_training_seconds"] == \
            pytest.approx(cached["seconds"], abs=1e-3)
    assert result["datasets"]["rocov2"]["settings"]["problem_type"] == "multi_label_classification"


def test_loss_comparison_fails_on_a_different_trajectory():
    sides = {"cached": {"losses": [1.0, 0.9, 0.8]}, "other": {"losses": [1.0, 0.95]}}
    with pytest.raises(AssertionError, match="losses differ"):
        frozen_training.compare_losses(sides, "cached", ("other",), "demo")


def test_feature_extraction_sides_give_equal_features(report):
    result = report["benchmarks"]["feature_extraction"]
    assert set(result["sides"]) == {"medheads_sorted_dynamic", "padded_to_64", "padded_to_32"}
    checks = result["checks"]
    assert checks["padded_to_64_features_equal"] and checks["padded_to_32_features_equal"]
    assert checks["padded_to_64_captions_compared"] == 10  # nothing is cut at the longest padding
    assert 0 < checks["padded_to_32_captions_compared"] <= 10
    sides = result["sides"]
    assert sides["padded_to_64"]["tokens_processed_including_padding"] == 640
    assert sides["medheads_sorted_dynamic"]["tokens_processed_including_padding"] < 640


def test_vit_cached_matches_backbone_every_epoch(report):
    result = report["benchmarks"]["vit_cached"]
    assert result["sides"]["medheads_cached"]["steps"] == 4
    assert result["checks"]["backbone_every_epoch_losses_match_steps"] == 2
    assert "17 tokens" in result["settings"]["backbone"]  # (32 / 8)^2 patches + CLS


def test_long_documents_counts_windows(report):
    result = report["benchmarks"]["long_documents"]
    documents = result["documents"]
    assert len(documents) == 4
    tokens = [d["tokens"] for d in documents]
    assert tokens == sorted(tokens)  # quantiles, shortest to longest
    assert all(d["windows"] == -(-d["tokens"] // 32) for d in documents)
    assert tokens[-1] == result["settings"]["corpus_tokens"]["max"]  # the longest document is in the sample
    chunked, truncated = result["sides"]["chunked_all_windows"], result["sides"]["truncated"]
    assert chunked["tokens_read"] == sum(tokens)
    assert truncated["tokens_read"] == sum(min(t, 32) for t in tokens)
    assert result["checks"]["short_documents_identical"] == sum(t <= 32 for t in tokens)


def test_results_markdown_renders_every_section(report):
    text = run_all.render(report)
    assert text.startswith("# medheads benchmark results")
    for name in run_all.BENCHMARKS:
        assert report["benchmarks"][name]["title"] in text
    assert "## Summary" in text and "Check:" in text


def test_memory_probe_sees_an_allocation():
    result = common.probe_memory("benchmarks.common", "allocation_probe", mib=48)
    if result["peak_extra_mib"] is None:
        pytest.skip(result["note"])
    assert 44 <= result["peak_extra_mib"] <= 60


def test_deploy_pipelines_export_checks(report):
    result = report["benchmarks"]["deploy_pipelines"]
    assert set(result["datasets"]) == {"ner", "text", "image"}
    for task, d in result["datasets"].items():
        assert d["export_check"]["fp32"] <= 1e-4, task  # the ONNX side computes what PyTorch computes
        assert {"stock_fp32", "medheads_onnx_int8"} <= set(d["sides"]), task
    ner = result["datasets"]["ner"]
    assert ner["settings"]["layer"] == 2
    # both NER models trained by the benchmark with one recipe, then scored through the pipelines
    runs = ner["training"]["runs"]
    assert (runs["medheads"]["layers"], runs["stock"]["layers"]) == (2, -1) and ner["settings"]["trained"]
    assert set(ner["quality"]) == {"stock_fp32", "medheads_torch_fp32", "medheads_onnx_fp32", "medheads_onnx_int8",
                                   "medheads_layer4_onnx_int8"}
    # the extra side is the stock side's own network, exported to int8: its F1 drop is the int8 cost alone
    drop = ner["quality_check"]["extra_span_f1_drop_points"]["medheads_layer4_onnx_int8"]
    assert drop == pytest.approx(100 * (ner["quality"]["stock_fp32"]["span_f1"]
                                        - ner["quality"]["medheads_layer4_onnx_int8"]["span_f1"]), abs=0.01)  # rounded
    assert "medheads_layer4_onnx_int8" in ner["sides"]
    assert all(q["sentences"] == 12 for q in ner["quality"].values())
    # ONNX fp32 computes what PyTorch computes: the same entities
    assert ner["quality"]["medheads_onnx_fp32"]["span_f1"] == ner["quality"]["medheads_torch_fp32"]["span_f1"]
