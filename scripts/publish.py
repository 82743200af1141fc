#!/usr/bin/env python
"""Publish a trained medheads model folder to the Hugging Face Hub.

Stages a clean repository (allow-listed files only, machine paths scrubbed, generated model card),
validates it, and uploads it with huggingface_hub; prints the commit id and a pinned usage line.

    python scripts/publish.py --model_dir outputs/ner --repo_id ORG/NAME --dry_run
    python scripts/publish.py --model_dir outputs/ner --repo_id ORG/NAME [--token T] [--private]
        [--revision BRANCH] [--create_pr] [--commit_message M] [--staging_dir DIR]
    python scripts/publish.py publish_args.json      # the same arguments as a JSON file

The Hub endpoint is HF_ENDPOINT (default https://huggingface.co); the token is --token, else HF_TOKEN,
else the saved `hf auth login`. Exit codes: 0 done, 2 invalid inputs, 1 upload failed (staged folder kept).
"""

import sys
from pathlib import Path

try:
    from medheads.training.cli import main
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from medheads.training.cli import main

if __name__ == "__main__":
    sys.exit(main(["publish", *sys.argv[1:]]))
