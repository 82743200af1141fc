#!/usr/bin/env python
"""Train a HiddenLayerTokenClassifier (NER head on one hidden layer, or a mix of layers, of any encoder).

Like transformers' examples/pytorch/token-classification/run_ner.py:

    python scripts/train_ner.py --model_name_or_path bert-base-cased \
        --train_file train.tsv --validation_file devel.tsv --test_file test.tsv \
        --hidden_layers -1,-2,-3,-4 --layer_combination concat \
        --do_train --do_eval --do_predict --num_train_epochs 3 --output_dir outputs/ner
    python scripts/train_ner.py configs/ner_jnlpba.json     # the same arguments as one JSON file
    accelerate launch scripts/train_ner.py configs/ner_jnlpba.json

Data: CoNLL files (token<TAB>label, blank line between sentences, -DOCSTART- skipped), JSON lines
({"tokens": [...], "ner_tags": [...]}), or --dataset_name (a datasets Hub id or save_to_disk folder).
Every TrainingArguments flag works; `--help` lists them all. The output folder loads with
pipeline("ner", model=output_dir, trust_remote_code=True, aggregation_strategy="simple").
"""

import sys
from pathlib import Path

try:
    from medheads.training.cli import main
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from medheads.training.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-ner", *sys.argv[1:]]))
