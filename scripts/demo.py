#!/usr/bin/env python
"""medheads demo: train each of the three models for about a minute, save it as a pipeline folder, reload it the way
a user without medheads would (`trust_remote_code=True`), and print predictions and metrics.

    python scripts/demo.py                  # the synthetic sample in scripts/sample_data (no downloads)
    python scripts/demo.py --data real      # the public datasets in ../shared/data (longer)

Every step runs a training script from `scripts/` exactly as a user would, so its command line is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLE = HERE / "sample_data"
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"


def minilm_path() -> str:
    sys.path.insert(0, str(HERE.parent))  # a checkout without `pip install -e .`
    from medheads.training.common import minilm_path as bundled_minilm

    try:
        return bundled_minilm()
    except ImportError as error:
        sys.exit(f"The demo needs the bundled MiniLM encoder: {error} (or pip install -e '.[demo]').")


def steps(data: str, data_dir: Path, out: Path, encoder: str) -> list[dict]:
    common = ["--do_train", "--do_eval", "--overwrite_output_dir", "--save_total_limit", "1", "--seed", "42"]
    if data == "sample":
        ner_files = ["--train_file", SAMPLE / "ner_train.tsv", "--validation_file", SAMPLE / "ner_validation.tsv"]
        caption_files = ["--train_file", SAMPLE / "captions.csv", "--validation_split_percentage", "20"]
        xray_files = ["--train_file", SAMPLE / "xray_sample.npz"]
        ner_extra, text_extra, image_extra = ["--num_train_epochs", "3"], ["--num_train_epochs", "30"], \
            ["--num_train_epochs", "12"]
    else:
        ner_files = ["--train_file", data_dir / "jnlpba" / "train.tsv", "--validation_file",
                     data_dir / "jnlpba" / "devel.tsv", "--max_train_samples", "3000"]
        caption_files = ["--train_file", data_dir / "rocov2" / "rocov2_valid.csv", "--validation_split_percentage",
                         "10", "--drop_empty_texts"]
        xray_files = ["--train_file", data_dir / "pneumoniamnist" / "pneumoniamnist.npz"]
        ner_extra, text_extra, image_extra = ["--num_train_epochs", "1"], ["--num_train_epochs", "30"], \
            ["--num_train_epochs", "5"]
    return [
        dict(name="ner", title="HiddenLayerTokenClassifier: NER from layer 4 of 6 of MiniLM", task="ner",
             script="train_ner.py", args=["--model_name_or_path", encoder, *ner_files, "--hidden_layers", "4",
                                          "--per_device_train_batch_size", "16", "--learning_rate", "2e-4",
                                          *ner_extra, *common],
             example="IL-2 gene expression requires NF-kappa B activation in human T cells."),
        dict(name="captions", title="FrozenEncoderMultiLabel: radiology caption -> UMLS CUIs, frozen MiniLM",
             task="text-classification", script="train_text_classifier.py",
             args=["--model_name_or_path", encoder, *caption_files, "--text_column_name", "caption",
                   "--label_column_name", "cuis_manual", "--problem_type", "multi_label_classification",
                   "--head_hidden_sizes", "256", "--learning_rate", "2e-3", "--per_device_train_batch_size", "32",
                   *text_extra, *common],
             example="Sagittal T2-weighted MRI of the lumbar spine showing a disc herniation."),
        dict(name="xray", title="ViTPatchClassifier: chest X-ray, small ViT trained from scratch, patch head",
             task="image-classification", script="train_image_classifier.py",
             args=[*xray_files, "--class_names", "normal,pneumonia", "--image_size", "28", "--patch_size", "4",
                   "--vit_hidden_size", "64", "--vit_layers", "2", "--vit_heads", "4", "--head", "patch",
                   "--patch_projection_size", "16", "--freeze_backbone", "false", "--learning_rate", "2e-3",
                   "--per_device_train_batch_size", "32", *image_extra, *common],
             example=None),
    ]


LOADER = r"""
import json, sys
sys.modules["medheads"] = None  # prove the folder needs no medheads
import numpy as np
from PIL import Image
from transformers import pipeline
folder, task, example, image_file = sys.argv[1:5]
LONG_NOTE = ["The beta-2-microglobulin levels rose in monocytes after stimulation with IL-4.",
             "TNF-alpha and p53 regulate c-myc mRNA levels in erythroid cells.",
             "Activation of the IL-2 receptor alpha chain was blocked by cyclosporin A in Jurkat T cells."]
pipe = pipeline(task, model=folder, trust_remote_code=True)
if task == "ner":
    out = pipe(example)  # the default call: whole entities, exact offsets, `word` = text[start:end]
    shown = [f"{e['word']} -> {e['entity_group']} ({e['score']:.2f}, chars {e['start']}-{e['end']})" for e in out]
    long_text = " ".join([example, *LONG_NOTE] * 6)  # longer than the encoder's 512-token window
    entities = pipe(long_text)  # the same default call: read in overlapping windows, tagged to the end
    tokens = len(pipe.tokenizer(long_text, verbose=False)["input_ids"])
    last = entities[-1] if entities else None
    shown.append(f"a {len(long_text)}-character text ({tokens} tokens): {len(entities)} entities" + (
        f", the last {last['word']!r} ({last['entity_group']}) at chars {last['start']}-{last['end']}" if last else ""))
elif task == "text-classification":
    decision = pipe(example)  # the default call: the labels whose probability reaches their threshold
    shown = ["decision " + json.dumps([f"{r['label']} ({r['score']:.2f})" for r in decision])]
    out = pipe(example, top_k=None)  # every label with its probability
    shown.append("top 3 of all labels (top_k=None): " + ", ".join(f"{r['label']}: {r['score']:.2f}" for r in out[:3]))
else:
    arrays = np.load(image_file)
    key = "val_images" if "val_images" in arrays else "train_images"
    image = Image.fromarray(arrays[key][0], mode="L")
    out = pipe(image)
    shown = [f"{r['label']}: {r['score']:.2f}" for r in out]
print(json.dumps({"model": type(pipe.model).__name__, "module": type(pipe.model).__module__, "shown": shown}))
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=["sample", "real"], default="sample",
                        help="'sample': the synthetic sample shipped in scripts/sample_data (default); 'real': the "
                             "public datasets in --data_dir")
    parser.add_argument("--data_dir", type=Path, default=Path(os.environ.get("MEDHEADS_DATA_DIR", DEFAULT_DATA)),
                        help="folder holding jnlpba/, rocov2/, pneumoniamnist/ (default: ../shared/data)")
    parser.add_argument("--output_dir", type=Path, default=Path("demo_output"), help="where the models are saved")
    parser.add_argument("--only", choices=["ner", "captions", "xray"], action="append",
                        help="run only this model (repeatable)")
    args = parser.parse_args(argv)
    if args.data == "real" and not (args.data_dir / "jnlpba").is_dir():
        parser.error(f"--data real needs the public datasets in {args.data_dir} (set --data_dir or MEDHEADS_DATA_DIR)")
    encoder = minilm_path()
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    summary = []
    for step in steps(args.data, args.data_dir, args.output_dir, encoder):
        if args.only and step["name"] not in args.only:
            continue
        out = args.output_dir / step["name"]
        command = [sys.executable, str(HERE / step["script"]), *map(str, step["args"]), "--output_dir", str(out)]
        print(f"\n=== {step['title']}\n$ {' '.join(command)}\n", flush=True)
        started = time.time()
        subprocess.run(command, check=True, env=env)
        seconds = time.time() - started
        result = subprocess.run([sys.executable, "-c", LOADER, str(out), step["task"], step["example"] or "",
                                 str(step["args"][step["args"].index("--train_file") + 1])],
                                check=True, env=env, capture_output=True, text=True)
        loaded = json.loads(result.stdout.strip().splitlines()[-1])
        metrics = json.loads((out / "all_results.json").read_text())
        summary.append((step, out, seconds, loaded, metrics))

    print("\n" + "=" * 100 + "\nmedheads demo: every folder below was reloaded in a fresh process without medheads "
          "(pipeline(..., trust_remote_code=True))\n" + "=" * 100)
    for step, out, seconds, loaded, metrics in summary:
        wanted = {"ner": ("eval_f1", "eval_macro_f1", "eval_pipeline_char_f1"), "captions": ("eval_micro_f1", "eval_macro_f1",
                                                                 "eval_subset_accuracy"),
                  "xray": ("eval_accuracy", "eval_roc_auc")}[step["name"]]
        keys = [k for k in wanted if k in metrics]
        print(f"\n{step['title']}\n  saved to {out}  (trained in {seconds:.0f} s; loaded as {loaded['model']} from "
              f"{loaded['module'].split('.')[0]})")
        print("  validation: " + ", ".join(f"{k[5:]}={metrics[k]:.3f}" for k in keys))
        if step["example"]:
            print(textwrap.indent(textwrap.fill(f"input: {step['example']}", 96), "  "))
        print(textwrap.indent("pipeline: " + "\n  ".join(loaded["shown"]), "  "))
    return 0


if __name__ == "__main__":
    sys.exit(main())
