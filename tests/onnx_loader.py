"""Run in a fresh process where medheads cannot be imported: load exported ONNX folders the way a user does.

usage: python onnx_loader.py SPEC.json
SPEC: {name: {"path", "task", "variant", "texts" | "images" (lists of HxW uint8 lists), "batches": [[text, ...], ...]}}
Prints JSON: per name the model class, the logits of every batch and the pipeline's outputs.
"""

import json
import sys

sys.modules["medheads"] = None  # `import medheads` now raises ImportError

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer, pipeline  # noqa: E402
import transformers  # noqa: E402

spec = json.load(open(sys.argv[1]))
result = {}
for name, item in spec.items():
    config = AutoConfig.from_pretrained(item["path"], trust_remote_code=True)
    auto = next(k for k in config.auto_map if k.startswith("AutoModelFor"))
    model = getattr(transformers, auto).from_pretrained(item["path"], trust_remote_code=True,
                                                        onnx_variant=item["variant"])
    out = {"model_class": type(model).__name__, "module": type(model).__module__, "logits": []}
    if item["task"] == "image-classification":
        processor = AutoImageProcessor.from_pretrained(item["path"], trust_remote_code=True)
        for batch in item["batches"]:
            images = [Image.fromarray(np.array(a, dtype=np.uint8), mode="L") for a in batch]
            out["logits"].append(model(**processor(images=images, return_tensors="pt")).logits.tolist())
        pipe = pipeline(item["task"], model=item["path"], trust_remote_code=True,
                        model_kwargs={"onnx_variant": item["variant"]})
        out["pipeline"] = pipe([Image.fromarray(np.array(a, dtype=np.uint8), mode="L") for a in item["batches"][0]])
    else:
        tokenizer = AutoTokenizer.from_pretrained(item["path"], trust_remote_code=True)
        for batch in item["batches"]:
            out["logits"].append(model(**tokenizer(batch, return_tensors="pt", padding=True)).logits.tolist())
        pipe = pipeline(item["task"], model=item["path"], trust_remote_code=True,
                        model_kwargs={"onnx_variant": item["variant"]})
        texts = item["batches"][0]
        if item["task"] == "token-classification":
            out["pipeline"] = pipe(texts, aggregation_strategy="simple")
        else:
            out["pipeline"] = pipe(texts, top_k=None)
    result[name] = out
print(json.dumps(result, default=float))
