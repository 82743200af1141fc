#!/usr/bin/env python
"""Train a FrozenEncoderMultiLabel head (frozen text encoder + MLP) for multi-label or multi-class text classification.

Like transformers' examples/pytorch/text-classification/run_classification.py: every TrainingArguments flag, or one
JSON file of arguments (see configs/text_*.json). The frozen encoder's pooled features are computed once and cached;
only the head trains. Multi-label runs tune per-label thresholds on the validation split and save them in the model.

    # ROCOv2 captions -> the curated CUIs (one file, split 80/10/10 with the seed)
    python scripts/train_text_classifier.py --model_name_or_path sentence-transformers/all-MiniLM-L6-v2 \\
        --train_file rocov2_valid.csv --text_column_name caption --label_column_name cuis_manual \\
        --problem_type multi_label_classification --validation_split_percentage 10 --test_split_percentage 10 \\
        --do_train --do_eval --do_predict --output_dir outputs/rocov2-cuis-manual

    # MTSamples specialty (one file with a split column), long notes pooled over 512-token windows
    python scripts/train_text_classifier.py configs/text_mtsamples.json

Outputs (output_dir): the model + tokenizer (loads with pipeline("text-classification", model=output_dir,
trust_remote_code=True)), all_results.json, metrics.json, classification_report.txt, predict_results.txt, plots.
"""

import sys
from pathlib import Path

try:
    from medheads.training.cli import main
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from medheads.training.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-text", *sys.argv[1:]]))
