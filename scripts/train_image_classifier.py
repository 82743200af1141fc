#!/usr/bin/env python
"""Train a ViTPatchClassifier (ViT-family backbone + cls / cls_mean / patch head) for image classification.

Like transformers' examples/pytorch/image-classification/run_image_classification.py: every TrainingArguments flag,
`--help`, or a single JSON file of arguments. The output folder is an `image-classification` pipeline folder.

    # a new small ViT trained from scratch on PneumoniaMNIST (28 px), balanced batches, augmentation
    python scripts/train_image_classifier.py --train_file ../shared/data/pneumoniamnist/pneumoniamnist.npz \
        --class_names normal,pneumonia --image_size 28 --patch_size 4 --vit_hidden_size 192 --vit_layers 6 \
        --vit_heads 3 --head cls_mean --balance sampler --augment --do_train --do_eval --output_dir outputs/xray

    # a pretrained backbone, frozen, head trained on cached token features (the seed's model2)
    python scripts/train_image_classifier.py --model_name_or_path google/vit-base-patch16-224-in21k --head patch \
        --train_dir xrays/train --validation_dir xrays/val --do_train --do_eval --output_dir outputs/xray-vit

    python scripts/train_image_classifier.py configs/image_pneumoniamnist_scratch.json [--num_train_epochs 5 ...]

Exit codes: 0 done, 2 invalid arguments or data (one `error:` line, before any training).
"""

import sys
from pathlib import Path

try:
    from medheads.training.cli import main
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from medheads.training.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-image", *sys.argv[1:]]))
