"""Run in a fresh process: load saved medheads folders the way a user without medheads would, print JSON.

usage: python remote_loader.py SPEC.json [--block-medheads] [--dtype bfloat16]
SPEC: {"token": {"path", "input_ids", "attention_mask", "text"}, "text": {...}, "image": {"path", "pixel_values"}}
`path` may be a folder or a Hub repo id (then `revision` may be given, and HF_ENDPOINT must point at the server).
"""

import json
import sys

if "--block-medheads" in sys.argv:
    sys.modules["medheads"] = None  # `import medheads` now raises ImportError

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig, AutoModelForImageClassification, AutoModelForSequenceClassification, AutoModelForTokenClassification,
    pipeline,
)

spec = json.load(open(sys.argv[1]))
dtype = torch.bfloat16 if "--dtype" in sys.argv and sys.argv[sys.argv.index("--dtype") + 1] == "bfloat16" else None
result = {}
try:
    import medheads  # noqa: F401

    result["medheads_importable"] = True
except ImportError:
    result["medheads_importable"] = False

AUTO = {"token": AutoModelForTokenClassification, "text": AutoModelForSequenceClassification,
        "image": AutoModelForImageClassification}
TASK = {"token": "token-classification", "text": "text-classification", "image": "image-classification"}

for kind, item in spec.items():
    where = dict(revision=item["revision"]) if item.get("revision") else {}
    config = AutoConfig.from_pretrained(item["path"], trust_remote_code=True, **where)
    kwargs = dict(trust_remote_code=True, **where)
    if dtype is not None:
        kwargs["dtype"] = dtype
    model = AUTO[kind].from_pretrained(item["path"], **kwargs).eval()
    if kind == "image":
        inputs = {"pixel_values": torch.tensor(item["pixel_values"])}
    else:
        inputs = {k: torch.tensor(item[k]) for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        logits = model(**inputs).logits.float()
    pipe = pipeline(TASK[kind], model=item["path"], trust_remote_code=True, model_kwargs={"dtype": dtype} if dtype else None,
                    **where)
    if kind == "token":
        output = pipe(item["text"], aggregation_strategy="simple")
    elif kind == "text":
        output = pipe(item["text"], top_k=None)
    else:
        image = Image.fromarray(np.array(item["image"], dtype=np.uint8), mode="L")  # a grayscale X-ray
        output = pipe(image)
    default = pipe(item["text"]) if kind != "image" else None  # the default call, what users type first
    long_default = pipe(item["long_text"]) if item.get("long_text") else None
    result[kind] = {
        "pipeline_class": f"{type(pipe).__module__}.{type(pipe).__name__}",
        "default_call": json.loads(json.dumps(default, default=float)),
        "long_default_call": json.loads(json.dumps(long_default, default=float)),
        "config_class": type(config).__name__,
        "model_class": type(model).__name__,
        "model_module": type(model).__module__,
        "dtype": str(next(model.parameters()).dtype),
        "logits": logits.tolist(),
        "pipeline": json.loads(json.dumps(output, default=float)),
        "pipeline_model_class": type(pipe.model).__name__,
    }
print("RESULT " + json.dumps(result))
