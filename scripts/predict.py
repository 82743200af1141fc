#!/usr/bin/env python
"""Annotate a corpus with a medheads model (PyTorch folder or ONNX export); the same as `medheads predict`.

    python scripts/predict.py outputs/ner-jnlpba abstracts.csv ner.jsonl --text_column abstract
    accelerate launch scripts/predict.py outputs/ner-jnlpba abstracts.csv ner.jsonl   # shards over processes
"""

import sys
from pathlib import Path

try:
    from medheads.training.cli import main
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from medheads.training.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
