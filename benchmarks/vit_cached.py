"""Benchmark 4: `ViTPatchClassifier` with a frozen backbone, 10 epochs on cached `token_features` vs re-running the
backbone every epoch.

No pretrained ViT is reachable offline, so the backbone is a randomly initialised ViT built in code: 224x224 input,
16x16 patches (197 tokens), width 192, 6 layers, 3 heads, MLP 768 (ViT-Tiny's width at half its depth; a ViT-S at
224 px is too slow for a 2-core CPU budget). Speed does not depend on the weights' values. The head is the seed's
model2 (`patch`: token-axis projection 197 -> 256, ReLU, flatten, linear). Images: a random sample of PneumoniaMNIST
(28x28 chest X-rays) upsampled to 224 by a `ViTImageProcessor` once beforehand (not timed, same for both sides).

* medheads: `cached_features(..., feature_name="token_features")` runs the backbone once over both splits, then the
  Trainer trains the head on the cached tokens (10 epochs, evaluation every epoch). Measured in full.
* without cache: the Trainer runs the frozen backbone on `pixel_values` at every step, measured over
  `baseline_steps` steps of epoch 1 plus `baseline_eval_examples` validation images, before and after the cached
  run, and extrapolated linearly to 10 epochs with an evaluation per epoch (as in benchmark 2); its per-step losses
  must equal the cached run's.

With random backbone weights the validation metric says nothing about X-ray classification; it is reported to show
both sides learn the same thing.
"""

from __future__ import annotations

import tempfile

import numpy as np
import torch

from benchmarks import common
from benchmarks.frozen_training import compare_losses, run_sides, training_comparison

DEFAULTS = dict(data_dir=None, n_train=384, n_val=96, image_size=224, patch_size=16, hidden_size=192, layers=6,
                heads=3, intermediate_size=768, baseline_steps=6, baseline_eval_examples=16)
HYPERPARAMETERS = dict(num_train_epochs=10, per_device_train_batch_size=32, per_device_eval_batch_size=32,
                       learning_rate=1e-3)
LABELS = {0: "normal", 1: "pneumonia"}


def load_images(data_dir, n_train: int, n_val: int, image_size: int, seed: int = 0):
    import datasets
    from PIL import Image
    from transformers import ViTImageProcessor

    arrays = np.load(common.data_dir(data_dir) / "pneumoniamnist" / "pneumoniamnist.npz")
    processor = ViTImageProcessor(size={"height": image_size, "width": image_size}, do_convert_rgb=True,
                                  image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    rng = np.random.default_rng(seed)
    splits = {}
    for split, prefix, n in (("train", "train", n_train), ("val", "val", n_val)):
        index = rng.permutation(len(arrays[f"{prefix}_images"]))[:n]
        images = [Image.fromarray(arrays[f"{prefix}_images"][i]) for i in index]
        pixels = processor(images, return_tensors="np")["pixel_values"].astype(np.float32)
        labels = arrays[f"{prefix}_labels"][index].reshape(-1).astype(np.int64)
        features = datasets.Features({"pixel_values": datasets.Array3D(shape=pixels.shape[1:], dtype="float32"),
                                      "labels": datasets.Value("int64")})
        splits[split] = datasets.Dataset.from_dict({"pixel_values": pixels, "labels": labels},
                                                   features=features).with_format("torch")
    return splits


def compute_metrics(prediction):
    from medheads.metrics import classification_metrics

    metrics = classification_metrics(prediction.label_ids, prediction.predictions, list(LABELS.values()))
    return {k: metrics[k] for k in ("accuracy", "macro_f1", "roc_auc") if k in metrics}


def run(data_dir=None, n_train=384, n_val=96, image_size=224, patch_size=16, hidden_size=192, layers=6, heads=3,
        intermediate_size=768, baseline_steps=6, baseline_eval_examples=16, projection_size=256,
        **overrides) -> dict:
    from transformers import ViTConfig, default_data_collator

    from medheads import ViTPatchClassifier, ViTPatchClassifierConfig

    import time

    start = time.perf_counter()
    splits = load_images(data_dir, n_train, n_val, image_size)
    preprocessing = time.perf_counter() - start
    backbone = ViTConfig(image_size=image_size, patch_size=patch_size, hidden_size=hidden_size,
                         num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=intermediate_size)
    torch.manual_seed(42)
    base = ViTPatchClassifier(ViTPatchClassifierConfig(backbone_config=backbone, head="patch",
                                                       patch_projection_size=projection_size, id2label=LABELS))
    settings = {**HYPERPARAMETERS, "seed": 42, **overrides}
    with tempfile.TemporaryDirectory(prefix="medheads-bench-vit-") as workdir:
        sides = run_sides(base, (splits["train"], splits["val"], default_data_collator, compute_metrics),
                          {"backbone_every_epoch": (splits["train"], splits["val"], default_data_collator)},
                          baseline_steps, baseline_eval_examples, workdir, settings,
                          medheads_kwargs=dict(feature_name="token_features", length_column=None))
    checks = compare_losses(sides, "medheads_cached", ("backbone_every_epoch",), "vit")
    final = sides["medheads_cached"]["evaluations"][-1]
    return {
        "name": "vit_cached",
        "title": "ViTPatchClassifier, frozen backbone, 10 epochs: cached token_features vs backbone every epoch",
        "settings": {"backbone": f"random ViT {image_size}px patch {patch_size} width {hidden_size} {layers} layers "
                                 f"{heads} heads MLP {intermediate_size} ({base.config.num_head_tokens} tokens)",
                     "head": f"patch (token projection {base.config.num_head_tokens}->{projection_size}, ReLU, "
                             "flatten, linear)",
                     "data": "pneumoniamnist.npz, random sample (seed 0), 28px upsampled",
                     "train_images": n_train, "validation_images": n_val,
                     "preprocessing_seconds_not_timed": preprocessing,
                     "backbone_parameters": sum(p.numel() for p in base.backbone.parameters()),
                     "hyperparameters": settings},
        "sides": sides,
        "comparisons": [training_comparison(sides, "medheads_cached", "backbone_every_epoch", 5.0)],
        "quality": {"metric": "accuracy", "final": {k: v for k, v in final.items()
                                                    if k in ("accuracy", "macro_f1", "roc_auc", "loss", "epoch")},
                    "baselines": "identical: same loss at every measured step (checks)"},
        "checks": checks,
    }


if __name__ == "__main__":
    common.main_for("benchmarks.vit_cached", DEFAULTS)
