"""The code every saved checkpoint carries: configurations, modeling, the shared base and the pipelines.

`save_pretrained` copies these modules into the model folder (and Hub repo) by file name, so they import torch,
transformers and each other (single-dot relative imports) only, and their file names never change: checkpoints
saved earlier name them in `auto_map`. Nothing here imports the training or hub side.
"""
