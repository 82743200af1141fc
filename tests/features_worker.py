"""Run under `accelerate launch` (or alone): cache a tiny frozen encoder's features of a fixed text set.

usage: python features_worker.py CACHE_DIR OUTPUT_DIR
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tiny import CUI_LABELS, encoder_config, make_tokenizer  # noqa: E402
from transformers import DataCollatorWithPadding, TrainingArguments  # noqa: E402

from medheads import FrozenEncoderMultiLabel, FrozenEncoderMultiLabelConfig  # noqa: E402
from medheads.training.features import cached_features  # noqa: E402

cache_dir, output_dir = Path(sys.argv[1]), Path(sys.argv[2])
args = TrainingArguments(output_dir=str(output_dir), use_cpu=True, report_to=[])
torch.manual_seed(0)
model = FrozenEncoderMultiLabel(FrozenEncoderMultiLabelConfig(
    encoder_config=encoder_config("bert"), head_hidden_sizes=[8], id2label=CUI_LABELS, max_chunk_length=16)).eval()
tokenizer = make_tokenizer(output_dir / f"tok{args.process_index}")
words = "the patient has breast cancer and il-2 receptor expression in t cells of a lung tumor".split()
rng = np.random.default_rng(0)
texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 40)))) for _ in range(37)]
dataset = datasets.Dataset.from_dict(dict(tokenizer(texts)))
table = cached_features(model, dataset, DataCollatorWithPadding(tokenizer), feature_name="pooled_features",
                        keep_columns=(), batch_size=4, cache_dir=cache_dir, training_args=args, desc="Features")
print(f"RANK {args.process_index} OF {args.world_size} ROWS {len(table)}", file=sys.stderr)
