"""Stage a trained medheads model folder as a clean Hub repository and push it.

Used by ``medheads publish``; never imported by the shipped model code, and never imports the training side.

Steps (each a public function, so tests and notebooks can call them alone):

1. :func:`validate_model_dir` - the folder is a saved medheads model: ``config.json`` with a ``medheads-*``
   ``model_type`` and an ``auto_map``, safetensors weights, the code files ``auto_map`` names and the modules
   they import relatively, and a tokenizer (text models) or image processor (image models) so ``pipeline``
   works. All problems are reported in ONE :class:`PublishError`.
2. :func:`stage_model` - copy an ALLOW-LIST of files into an empty staging folder (nothing else: no
   checkpoints, optimizer/scheduler states, ``training_args.bin``, pickles, data, tokens), scrub absolute
   machine paths from the JSON files, write the model card (``README.md``) and the plots it references.
3. :func:`push_staged` - ``HfApi.create_repo(exist_ok=True)`` + ``upload_folder``; network/HTTP/token
   failures become one :class:`PushError` that says where the (intact) staged folder is.

:func:`build_model_card` renders ``model_cards/<model_type>.md`` (a Jinja template, as
``ModelCard.from_template`` uses) or, if there is none, ``model_cards/generic.md``; the templates ship in the
wheel as the package data ``medheads.model_cards``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..command_line import parse_args as parse_command_line
from ..command_line import run_command
from . import cards
from .constants import (
    CARD_TAGS, CONFIG_NAME, PIPELINE_TAGS, SAFE_INDEX, SAFE_WEIGHTS, TEMPLATES_DIR, PublishError, PushError,
)

__all__ = [
    "PublishError", "PushError", "PublishArguments", "StagedRepo", "validate_model_dir", "build_model_card", "stage_model",
    "push_staged", "publish", "parse_args", "main", "TEMPLATES_DIR", "verify_staged", "safetensors_problem",
]

PROG = "medheads publish"
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "merges.txt", "vocab.json",
    "added_tokens.json",
)
#: Files that make a tokenizer loadable on their own (tokenizer_config.json alone is not enough).
TOKENIZER_VOCAB_FILES = ("tokenizer.json", "vocab.txt", "vocab.json")
PROCESSOR_FILES = ("preprocessor_config.json",)
RESULT_FILES = ("metrics.json", "all_results.json")
#: Staged JSON files whose string values are scrubbed of machine paths. tokenizer.json, vocab.json and
#: added_tokens.json are never rewritten: their strings are vocabulary, not paths.
SCRUBBED_JSON = (CONFIG_NAME, "tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json",
                 *RESULT_FILES)
#: Weight formats other than safetensors: never uploaded, and refused if they would be needed.
UNSAFE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
#: Trainer by-products with those suffixes that are not model weights.
TRAINER_STATE_FILES = ("training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth")
IMAGE_TASKS = {"image-classification"}

_NAME_OR_PATH_KEYS = {"_name_or_path", "name_or_path"}
_SKIP_SCRUB_KEYS = {"added_tokens_decoder", "content"}  # tokenizer_config.json: token text, not paths
_WINDOWS_ABS = re.compile(r"^[A-Za-z]:[\\/]")
_IMAGE_REF = re.compile(r"""!\[[^\]]*\]\(\s*<?([^)\s>]+\.png)>?(?:\s+"[^"]*")?\s*\)|src\s*=\s*["']([^"']+\.png)["']""",
                        re.IGNORECASE)


# --------------------------------------------------------------------------------------------------- validation


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _auto_map_modules(auto_map: dict) -> tuple[list[str], list[str]]:
    """Module names ``auto_map`` points at, and references to code in *other* repos (``repo--module.Class``)."""
    modules, foreign = [], []
    for value in auto_map.values():
        refs = value if isinstance(value, (list, tuple)) else [value]
        for ref in refs:
            if not ref:
                continue
            if "--" in ref:
                foreign.append(ref)
                continue
            module = ref.rsplit(".", 1)[0]
            if module not in modules:
                modules.append(module)
    return modules, foreign


def code_files(model_dir: str | os.PathLike) -> list[str]:
    """The ``.py`` files remote code needs: the modules ``auto_map`` and ``custom_pipelines`` name plus, recursively, the modules they
    import with ``from .x import`` / ``import .x``, found with transformers' own ``get_relative_imports`` (what
    its remote-code loader uses, so the two agree). Missing files are listed too; :func:`validate_model_dir`
    reports them."""
    from transformers.dynamic_module_utils import get_relative_imports

    model_dir = Path(model_dir)
    config = _read_json(model_dir / CONFIG_NAME)
    modules, _ = _auto_map_modules(config.get("auto_map") or {})
    # The pipelines `custom_pipelines` names (`{"ner": {"impl": "module.Class", ...}}`) are remote code too.
    for info in (config.get("custom_pipelines") or {}).values():
        impl = info.get("impl") if isinstance(info, dict) else None
        if isinstance(impl, str) and "." in impl and "--" not in impl and impl.rsplit(".", 1)[0] not in modules:
            modules.append(impl.rsplit(".", 1)[0])
    names = [f"{module.replace('.', '/')}.py" for module in modules]
    i = 0
    while i < len(names):  # breadth-first over relative imports; `names` grows as we go
        path = model_dir / names[i]
        if path.is_file():
            for module in sorted(get_relative_imports(str(path))):
                name = f"{module}.py"  # transformers resolves `.x` to <folder>/x.py
                if name not in names:
                    names.append(name)
        i += 1
    return list(dict.fromkeys(names))


def _looks_like_unsafe_weights(name: str) -> bool:
    if name in TRAINER_STATE_FILES or name.startswith("rng_state"):
        return False
    return name.lower().endswith(UNSAFE_WEIGHT_SUFFIXES) or name.endswith(".bin.index.json")


def _weight_files(model_dir: Path) -> tuple[list[str], list[str]]:
    """(safetensors files to stage, problems)."""
    if (model_dir / SAFE_INDEX).is_file():
        try:
            weight_map = _read_json(model_dir / SAFE_INDEX)["weight_map"]
        except (ValueError, KeyError, TypeError) as e:
            return [], [f"{SAFE_INDEX} is not a valid safetensors index ({e})"]
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (model_dir / s).is_file()]
        bad = [s for s in shards if not s.endswith(".safetensors") or "/" in s or "\\" in s]
        problems = [f"{SAFE_INDEX} lists shards that are not in the folder: {', '.join(missing)}"] if missing else []
        if bad:
            problems.append(f"{SAFE_INDEX} lists shards that are not top-level .safetensors files: {', '.join(bad)}")
        return [SAFE_INDEX, *shards], problems
    if (model_dir / SAFE_WEIGHTS).is_file():
        return [SAFE_WEIGHTS], []
    unsafe = sorted(p.name for p in model_dir.iterdir() if p.is_file() and _looks_like_unsafe_weights(p.name))
    if unsafe:
        return [], [
            f"no {SAFE_WEIGHTS}: the weights are only in a pickle-based format ({', '.join(unsafe)}), which "
            "medheads never publishes; re-save them as safetensors: "
            "`Model.from_pretrained(dir).save_pretrained(dir)` (safetensors is the default)"
        ]
    return [], [f"no {SAFE_WEIGHTS} (nor a sharded {SAFE_INDEX})"]


def validate_model_dir(model_dir: str | os.PathLike) -> dict:
    """Check ``model_dir`` is a saved medheads model; return its config dict or raise ONE :class:`PublishError`."""
    model_dir = Path(model_dir)
    fix = ("Point --model_dir at the output folder of a medheads training script, or save one with "
           "`model.save_pretrained(dir)` plus `tokenizer.save_pretrained(dir)` / "
           "`image_processor.save_pretrained(dir)`.")
    if not model_dir.is_dir():
        raise PublishError(f"{model_dir} is not a folder. {fix}")
    if not (model_dir / CONFIG_NAME).is_file():
        raise PublishError(f"{model_dir} is not a trained medheads model folder: it has no {CONFIG_NAME}. {fix}")
    try:
        config = _read_json(model_dir / CONFIG_NAME)
    except ValueError as e:
        raise PublishError(f"{model_dir / CONFIG_NAME} is not valid JSON ({e}). {fix}") from e
    if not isinstance(config, dict):
        raise PublishError(f"{model_dir / CONFIG_NAME} is not a JSON object. {fix}")

    problems = []
    model_type = str(config.get("model_type", ""))
    if not model_type.startswith("medheads-"):
        problems.append(
            f"config.json has model_type {model_type or '(none)'!r}, not a 'medheads-*' type: this is not a "
            "medheads model (publish plain transformers models with `model.push_to_hub`)")
    auto_map = config.get("auto_map")
    if not isinstance(auto_map, dict) or not auto_map:
        problems.append("config.json has no auto_map, so the Hub copy could not load without medheads installed "
                        "(save with medheads imported: its classes register themselves for auto_map)")
        auto_map = {}
    modules, foreign = _auto_map_modules(auto_map)
    if foreign:
        problems.append(f"auto_map points at code in other repositories ({', '.join(foreign)}); medheads repos "
                        "must carry their own code")
    bad_modules = [m for m in modules if not re.fullmatch(r"\w+(\.\w+)*", m)]
    bad_modules += [n for n in (code_files(model_dir) if auto_map and not bad_modules else [])
                    if not re.fullmatch(r"\w+(/\w+)*\.py", n)]
    if bad_modules:
        problems.append(f"auto_map (or a relative import) names modules that are not plain module names: "
                        f"{', '.join(bad_modules)}")
        auto_map = {}
    missing_code = [name for name in code_files(model_dir) if not (model_dir / name).is_file()] if auto_map else []
    if missing_code:
        problems.append(f"code files named by auto_map (or imported by them) are missing: {', '.join(missing_code)}")
    for name in code_files(model_dir) if auto_map else []:
        path = model_dir / name
        if path.is_file() and re.search(r"^\s*(from\s+medheads[\s.]|import\s+medheads\b)", path.read_text(
                encoding="utf-8"), flags=re.MULTILINE):
            problems.append(f"{name} imports medheads absolutely; remote code must use `from .x import` only")
    weights, weight_problems = _weight_files(model_dir)
    problems += weight_problems
    staged_names = [*(code_files(model_dir) if auto_map else []), *weights,
                    *(f for f in (*TOKENIZER_FILES, *PROCESSOR_FILES, *RESULT_FILES) if os.path.lexists(model_dir / f))]
    problems += _file_problems(model_dir, [CONFIG_NAME, *staged_names])

    tasks = {PIPELINE_TAGS[k] for k in auto_map if k in PIPELINE_TAGS}
    if tasks & IMAGE_TASKS:
        if not (model_dir / "preprocessor_config.json").is_file():
            problems.append("no preprocessor_config.json: pipeline('image-classification') needs the image "
                            "processor (`image_processor.save_pretrained(dir)`)")
    elif tasks:
        if not any((model_dir / f).is_file() for f in TOKENIZER_VOCAB_FILES):
            problems.append(f"no tokenizer ({' / '.join(TOKENIZER_VOCAB_FILES)}): pipeline({sorted(tasks)[0]!r}) "
                            "needs it (`tokenizer.save_pretrained(dir)`)")
    if problems:
        raise PublishError(
            f"{model_dir} is not a publishable medheads model folder:\n"
            + "\n".join(f"  - {p}" for p in problems) + f"\n{fix}"
        )
    return config


def _file_problems(model_dir: Path, names: list[str]) -> list[str]:
    """Problems with the files that would be staged: links or non-regular files (only regular files inside the model
    folder are published: a link could smuggle in a file from elsewhere on the machine), JSON files that do not
    parse, and safetensors files whose size disagrees with their header (truncated copies)."""
    problems = []
    root = model_dir.resolve()
    for name in dict.fromkeys(names):
        path = model_dir / name
        if not os.path.lexists(path):
            continue
        if root not in path.resolve().parents:  # the file, or a folder on its way, links out of the model folder
            problems.append(f"{name} is a link to {path.resolve()}, outside the model folder: only files inside it "
                            "are published; copy the file in if it belongs to the model")
            continue
        if not path.is_file():
            problems.append(f"{name} is not a regular file")
            continue
        if name.endswith(".json"):
            try:
                _read_json(path)
            except (ValueError, UnicodeDecodeError) as e:
                hint = ("re-save the tokenizer with `tokenizer.save_pretrained(dir)`" if name in TOKENIZER_FILES
                        else "re-save it (or remove it if it is not needed)")
                problems.append(f"{name} is not valid JSON ({type(e).__name__}: {e}); {hint}")
        elif name.endswith(".safetensors"):
            problem = safetensors_problem(path)
            if problem:
                problems.append(f"{name}: {problem}; re-save the model (`model.save_pretrained(dir)`)")
    return problems


def safetensors_problem(path: str | os.PathLike) -> str | None:
    """Why the safetensors file at `path` cannot be loaded (truncated, bad header), or None. Reads the header only."""
    import struct

    path = Path(path)
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"the file is truncated ({size} bytes, not even a header)"
            (header_len,) = struct.unpack("<Q", head)
            if header_len > size - 8:
                return f"the file is truncated ({size} bytes; its header alone needs {header_len + 8})"
            header = json.loads(f.read(header_len))
    except (OSError, ValueError) as e:
        return f"the header cannot be read ({type(e).__name__}: {e})"
    if not isinstance(header, dict):
        return "the header is not a JSON object"
    ends = [entry["data_offsets"][1] for key, entry in header.items()
            if key != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry]
    expected = 8 + header_len + max(ends, default=0)
    if size < expected:
        return f"the file is truncated ({size} bytes, its header describes {expected})"
    return None


def validate_repo_id(repo_id: str) -> str:
    """``ORG/NAME`` checked with huggingface_hub's own validator; one clear :class:`PublishError` otherwise."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id as hf_validate

    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise PublishError(f"--repo_id must be 'ORG/NAME' (your user or organisation, a slash, the model name), "
                           f"got {repo_id!r}.")
    try:
        hf_validate(repo_id)
    except HFValidationError as e:
        raise PublishError(f"Invalid --repo_id {repo_id!r}: {e}") from e
    return repo_id


# --------------------------------------------------------------------------------------------------- model card

def _usage(repo_id: str, task: str, revision: str | None) -> str:
    pin = f'revision="{revision}", ' if revision else ""
    example = {"token-classification": '"Aspirin reduces the risk of myocardial infarction."',
               "text-classification": '"Chest X-ray shows a right lower lobe consolidation."',
               "image-classification": '"chest_xray.png"'}.get(task, '"..."')
    note = "" if revision else "# Pin a commit with revision=\"<commit sha>\" to run code you have reviewed.\n"
    return (f"{note}from transformers import pipeline\n\n"
            f'pipe = pipeline("{task}", model="{repo_id}", {pin}trust_remote_code=True)\n'
            f"print(pipe({example}))")


def _fmt(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def _load_metrics(model_dir: Path) -> dict:
    metrics: dict = {}
    for name in reversed(RESULT_FILES):  # metrics.json wins over all_results.json
        path = model_dir / name
        if path.is_file():
            try:
                data = _read_json(path)
            except ValueError:
                continue
            if isinstance(data, dict) and isinstance(data.get("metrics"), dict):
                data = data["metrics"]  # a training script's run summary nests its numbers
            if isinstance(data, dict):
                metrics.update({k: _fmt(v) for k, v in data.items()
                                if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return metrics


def _png_files(model_dir: Path) -> list[str]:
    out = []
    for path in sorted(model_dir.rglob("*.png")):
        rel = path.relative_to(model_dir)
        if any(part.startswith((".", "checkpoint-")) for part in rel.parts[:-1]):
            continue
        out.append(rel.as_posix())
    return out


def card_template_path(model_type: str, templates_dir: str | os.PathLike | None = None) -> Path | None:
    """``<templates_dir>/<model_type>.md``, else ``<templates_dir>/generic.md``, else None."""
    templates_dir = Path(templates_dir) if templates_dir is not None else TEMPLATES_DIR
    for name in (f"{model_type}.md", "generic.md"):
        if (templates_dir / name).is_file():
            return templates_dir / name
    return None


def build_model_card(model_dir: str | os.PathLike, repo_id: str, revision: str | None = None,
                     templates_dir: str | os.PathLike | None = None):
    """The model card (a ``huggingface_hub.ModelCard``) of the saved medheads model in ``model_dir``.

    Metadata: ``ModelCardData(library_name="transformers", pipeline_tag=<from auto_map>, tags=[custom_code,
    medical, medheads], base_model=<encoder Hub id, when the config names one>)``. Body: the Jinja template
    :func:`card_template_path` picks, rendered by ``ModelCard.from_template`` with these variables (beside
    the card data fields, ``card_data`` being the YAML block):

    ``repo_id``, ``revision`` (or None), ``model_name`` (name part of repo_id), ``model_type``,
    ``architecture`` (class name), ``pipeline_tag``, ``auto_class``, ``config`` (config.json as a dict),
    ``labels`` (id2label values in id order), ``metrics`` (metrics.json over all_results.json, numbers,
    floats rounded to 4 places), ``plots`` (relative paths of the .png files in model_dir), ``usage`` (a
    ready pipeline snippet, pinned to ``revision`` when given).

    A ``.png`` the rendered card references (``![..](x.png)`` or ``src="x.png"``) is staged with it.

    When ``metrics.json`` is a training script's run summary, :func:`medheads.hub.cards.card_context` supplies the
    card data (datasets, license, model-index, widget, ...) and the further variables of the model templates;
    a run summary lacking what the card needs raises :class:`medheads.hub.cards.CardError`. Without one (a model
    saved by hand), a template marked as needing it (``medheads.hub.cards.REQUIRES_RUN_SUMMARY``) is replaced by
    the generic card, with a warning.
    """
    from huggingface_hub import ModelCard, ModelCardData


    model_dir = Path(model_dir)
    config = _read_json(model_dir / CONFIG_NAME)
    model_type = str(config.get("model_type", ""))
    auto_map = config.get("auto_map") or {}
    auto_class = next((k for k in auto_map if k in PIPELINE_TAGS), None)
    pipeline_tag = PIPELINE_TAGS.get(auto_class) if auto_class else None
    architecture = (config.get("architectures") or [model_type])[0]
    id2label = config.get("id2label") or {}
    labels = [id2label[k] for k in sorted(id2label, key=lambda k: int(k))] if id2label else []
    base_model = None
    for key in ("encoder_config", "backbone_config"):
        name = (config.get(key) or {}).get("_name_or_path") if isinstance(config.get(key), dict) else None
        if name and not _is_abs_path(name) and name.count("/") == 1:
            base_model = name
    card_data = ModelCardData(library_name="transformers", pipeline_tag=pipeline_tag, tags=list(CARD_TAGS),
                              base_model=base_model)
    template = card_template_path(model_type, templates_dir)
    variables = dict(
        repo_id=repo_id, revision=revision, model_name=repo_id.split("/")[-1], model_type=model_type,
        architecture=architecture, pipeline_tag=pipeline_tag, auto_class=auto_class, config=config, labels=labels,
        metrics=_load_metrics(model_dir), plots=_png_files(model_dir),
        usage=_usage(repo_id, pipeline_tag or "<task>", revision),
    )
    if cards.has_run_summary(model_dir):
        card_data, extra = cards.card_context(model_dir, repo_id, revision=revision, config=config)
        variables.update(extra)
    elif template is not None and cards.template_requires_run_summary(template):
        cards.logger.warning(
            "%s has no run summary (metrics.json written by a medheads training script), so the model card is the "
            "generic one: no training data, results or plots. Re-run the training script with --do_eval to get "
            "the full card.", model_dir)
        template = card_template_path("generic", templates_dir)
    if template is None:
        raise PublishError(f"No model-card template for {model_type!r} and no generic.md in {templates_dir or TEMPLATES_DIR}: "
                           "the medheads installation is incomplete (reinstall it).")
    return ModelCard.from_template(card_data, template_path=str(template), **variables)


# --------------------------------------------------------------------------------------------------- staging


def _is_abs_path(value: str) -> bool:
    return value.startswith(("/", "~/", "file://", "\\\\")) or bool(_WINDOWS_ABS.match(value))


def _machine_prefixes(model_dir: Path) -> list[str]:
    prefixes = {str(model_dir.resolve()), str(Path.cwd().resolve()), str(Path.home()), tempfile.gettempdir(),
                str(Path(tempfile.gettempdir()).resolve()), str(Path(__file__).resolve().parent.parent)}
    return sorted((p for p in prefixes if len(p) > 1), key=len, reverse=True)


def scrub_paths(obj: Any, prefixes: list[str], where: str = "", report: list | None = None) -> Any:
    """Return ``obj`` with machine paths removed from its string values.

    A value that is an absolute path becomes ``""`` under ``_name_or_path``/``name_or_path`` and its file
    name elsewhere; a machine prefix (model folder, cwd, home, temp dir, repo checkout) inside a longer
    string becomes ``<local>``. Token text (``added_tokens_decoder``/``content``) is left alone. Each change
    is appended to ``report`` as ``(json_path, old, new)``.
    """
    report = report if report is not None else []
    if isinstance(obj, dict):
        return {k: (v if k in _SKIP_SCRUB_KEYS else scrub_paths(v, prefixes, f"{where}.{k}" if where else k, report))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub_paths(v, prefixes, f"{where}[{i}]", report) for i, v in enumerate(obj)]
    if isinstance(obj, str):
        new = obj
        if _is_abs_path(obj.strip()):
            key = where.rsplit(".", 1)[-1]
            new = "" if key in _NAME_OR_PATH_KEYS else Path(obj.strip().rstrip("/\\")).name
        else:
            for prefix in prefixes:
                new = new.replace(prefix, "<local>")
        if new != obj:
            report.append((where, obj, new))
        return new
    return obj


@dataclass
class StagedRepo:
    """What :func:`stage_model` produced."""

    folder: Path
    files: dict[str, int]  # relative path -> size in bytes
    scrubbed: list[tuple[str, str, str]]  # (file:json_path, old, new)
    skipped: list[str]  # top-level entries of model_dir that were NOT staged (folders end with /)
    config: dict

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())

    def describe(self) -> str:
        lines = [f"Staged {len(self.files)} files ({_human(self.total_bytes)}) in {self.folder}:"]
        lines += [f"  {size:>12,d}  {name}" for name, size in sorted(self.files.items())]
        if self.scrubbed:
            lines.append("Scrubbed machine paths:")
            lines += [f"  {where}: {old!r} -> {new!r}" for where, old, new in self.scrubbed]
        if self.skipped:
            lines.append(f"Not staged ({len(self.skipped)}): {', '.join(sorted(self.skipped))}")
        return "\n".join(lines)


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _prepare_staging_dir(staging_dir: str | os.PathLike | None, model_dir: Path, repo_id: str) -> Path:
    if staging_dir is None:
        return Path(tempfile.mkdtemp(prefix=f"medheads-publish-{repo_id.replace('/', '--')}-"))
    staging = Path(staging_dir).resolve()
    if staging == model_dir.resolve() or model_dir.resolve() in staging.parents:
        raise PublishError(f"--staging_dir {staging} must be outside --model_dir {model_dir}.")
    if staging.exists() and (not staging.is_dir() or any(staging.iterdir())):
        raise PublishError(f"--staging_dir {staging} exists and is not an empty folder: pick a new path or "
                           "delete it (staging never merges into old content).")
    staging.mkdir(parents=True, exist_ok=True)
    return staging


def stage_model(model_dir: str | os.PathLike, repo_id: str, staging_dir: str | os.PathLike | None = None,
                revision: str | None = None, templates_dir: str | os.PathLike | None = None,
                verify: bool = True) -> StagedRepo:
    """Validate ``model_dir`` and copy its publishable files (allow-list) into ``staging_dir``.

    ``staging_dir`` must not exist or be empty; None makes a fresh temp folder. The allow-list:
    config.json; the code files of :func:`code_files`; model.safetensors or the safetensors index and its
    shards; tokenizer files; preprocessor_config.json; metrics.json / all_results.json; README.md generated
    by :func:`build_model_card`, with the .png files it references. Everything else is skipped and listed.

    With ``verify`` (the default), the staged folder is then proved loadable by :func:`verify_staged` (config,
    weights and one forward pass, in a process where medheads cannot be imported). Any failure removes what was
    staged, so a re-run starts clean.
    """
    model_dir = Path(model_dir)
    validate_repo_id(repo_id)
    config = validate_model_dir(model_dir)
    # The card is built before anything is written, so a run summary it cannot use leaves no half-staged folder.
    card = build_model_card(model_dir, repo_id, revision=revision, templates_dir=templates_dir)
    staging = _prepare_staging_dir(staging_dir, model_dir, repo_id)
    try:
        staged = _stage_files(model_dir, staging, config, card)
        if verify:
            verify_staged(staging, config)
    except BaseException:
        _clear_staging(staging)
        raise
    return staged


def _clear_staging(staging: Path) -> None:
    """Remove what staging wrote (the folder was new or empty before: nothing else is in it)."""
    shutil.rmtree(staging, ignore_errors=True)


def _stage_files(model_dir: Path, staging: Path, config: dict, card) -> StagedRepo:
    weights, _ = _weight_files(model_dir)
    names = [CONFIG_NAME, *code_files(model_dir), *weights]
    names += [f for f in (*TOKENIZER_FILES, *PROCESSOR_FILES, *RESULT_FILES) if (model_dir / f).is_file()]

    prefixes = _machine_prefixes(model_dir)
    scrubbed: list[tuple[str, str, str]] = []
    for name in names:
        src, dst = model_dir / name, staging / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if name in SCRUBBED_JSON:
            data = _read_json(src)
            report: list = []
            clean = scrub_paths(data, prefixes, report=report)
            if report:
                dst.write_text(json.dumps(clean, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
                scrubbed += [(f"{name}:{where}", old, new) for where, old, new in report]
                continue
        shutil.copy2(src, dst)

    text = str(card)
    for prefix in prefixes:
        if prefix in text:
            scrubbed.append(("README.md", prefix, "<local>"))
            text = text.replace(prefix, "<local>")
    (staging / "README.md").write_text(text, encoding="utf-8")
    model_root = model_dir.resolve()
    for match in _IMAGE_REF.finditer(text):
        ref = match.group(1) or match.group(2)
        if "://" in ref or ref.startswith("/"):
            continue
        src = (model_dir / ref).resolve()
        if model_root in src.parents and src.is_file() and not (model_dir / ref).is_symlink():
            (staging / ref).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, staging / ref)

    files = {p.relative_to(staging).as_posix(): p.stat().st_size for p in sorted(staging.rglob("*")) if p.is_file()}
    staged_tops = {name.split("/")[0] for name in files}
    skipped = sorted(p.name + ("/" if p.is_dir() else "") for p in model_dir.iterdir()
                     if p.name not in staged_tops and p.name != "README.md")
    return StagedRepo(folder=staging, files=files, scrubbed=scrubbed, skipped=skipped, config=config)


# --------------------------------------------------------------------------------------------------- load check

#: Run by :func:`verify_staged` in a fresh interpreter: load the staged folder as a user without medheads would.
_VERIFY_SCRIPT = r"""
import json, sys
sys.modules["medheads"] = None  # what users have: the checkpoint's own code only
folder, task = sys.argv[1], sys.argv[2]
stage = "import"
try:
    import torch
    import transformers
    stage = "config.json"
    config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=True)
    stage = "weights"
    auto = {"token-classification": transformers.AutoModelForTokenClassification,
            "text-classification": transformers.AutoModelForSequenceClassification,
            "image-classification": transformers.AutoModelForImageClassification}[task]
    model = auto.from_pretrained(folder, trust_remote_code=True).eval()
    if task == "image-classification":
        stage = "image processor"
        from PIL import Image
        processor = transformers.AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
        inputs = processor(images=Image.new("L", (64, 64), 128), return_tensors="pt")
    else:
        stage = "tokenizer"
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
        inputs = tokenizer(["a short test sentence"], return_tensors="pt")
    stage = "forward pass"
    with torch.no_grad():
        logits = model(**inputs).logits
    if logits.shape[-1] != config.num_labels:
        raise ValueError(f"logits have {logits.shape[-1]} columns, config.num_labels is {config.num_labels}")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("the logits of a dummy input are not finite")
except Exception as error:
    text = str(error).strip().splitlines()
    print("\nVERIFY " + json.dumps({"ok": False, "stage": stage, "error": type(error).__name__ + ": " +
                                  (text[0] if text else "")}))
    sys.exit(1)
print("\nVERIFY " + json.dumps({"ok": True, "model_class": type(model).__name__}))
"""


def verify_staged(staging: str | os.PathLike, config: dict | None = None, timeout: float = 600) -> dict:
    """Prove the staged folder works for a user without medheads: in a fresh Python process where ``import medheads``
    fails, load ``config.json`` (its values are validated by the config class), the weights (via the Auto class with
    ``trust_remote_code``), the tokenizer or image processor, and run one forward pass on a dummy input. Raises ONE
    :class:`PublishError` saying which step failed and why."""
    import subprocess

    staging = Path(staging)
    config = config if config is not None else _read_json(staging / CONFIG_NAME)
    task = next((PIPELINE_TAGS[k] for k in (config.get("auto_map") or {}) if k in PIPELINE_TAGS), None)
    if task is None:
        raise PublishError(f"{staging / CONFIG_NAME}: auto_map names no Auto class medheads publishes "
                           f"({', '.join(PIPELINE_TAGS)}).")
    with tempfile.TemporaryDirectory(prefix="medheads-verify-") as modules:
        env = {**os.environ, "HF_MODULES_CACHE": modules, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
               "PYTHONPATH": ""}
        try:
            done = subprocess.run([sys.executable, "-c", _VERIFY_SCRIPT, str(staging), task], capture_output=True,
                                  text=True, env=env, cwd=modules, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise PublishError(f"Loading the staged model took over {timeout:.0f} s; nothing was uploaded.") from None
    lines = [line.split("VERIFY ", 1)[1] for line in done.stdout.splitlines() if "VERIFY {" in line]
    result = json.loads(lines[-1]) if lines else {"ok": False, "stage": "start",
                                                  "error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    if not result.get("ok"):
        raise PublishError(
            f"The staged model does not load as a user without medheads would load it (step: {result['stage']}): "
            f"{result['error']}. Nothing was uploaded and the staged copy was removed; fix the model folder "
            "(re-save it with `model.save_pretrained(dir)`) and publish again.")
    return result


# --------------------------------------------------------------------------------------------------- push


def _network_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError]  # HfHubHTTPError and LocalTokenNotFoundError are OSErrors
    for module in ("httpx2", "httpx", "requests"):
        try:
            mod = __import__(module)
        except ImportError:
            continue
        base = getattr(mod, "HTTPError", None) or getattr(getattr(mod, "exceptions", None), "RequestException", None)
        if isinstance(base, type) and issubclass(base, BaseException):
            errors.append(base)
    return tuple(errors)


def push_staged(staged: StagedRepo | str | os.PathLike, repo_id: str, *, token: str | None = None,
                private: bool = False, revision: str | None = None, create_pr: bool = False,
                commit_message: str | None = None, endpoint: str | None = None):
    """Upload a staged folder; return the ``CommitInfo``. ``endpoint``/``token`` None: ``HF_ENDPOINT``/``HF_TOKEN``
    (or the saved login). Any connection, HTTP or token failure raises ONE :class:`PublishError`."""
    from huggingface_hub import HfApi

    folder = Path(staged.folder if isinstance(staged, StagedRepo) else staged)
    api = HfApi(endpoint=endpoint, token=token)
    message = commit_message or f"Upload {repo_id.split('/')[-1]} with medheads"
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if revision and revision != "main":  # upload_folder needs the branch to exist (also for a PR onto it)
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        return api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", revision=revision,
                                 create_pr=create_pr, commit_message=message)
    except _network_errors() as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        hint = {401: "the token is missing or invalid: pass --token or set HF_TOKEN (a write token)",
                403: "the token may not write to this namespace"}.get(status, "check the network and HF_ENDPOINT")
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PushError(
            f"Could not push to {api.endpoint} ({type(e).__name__}: {first_line}); {hint}.\n"
            f"Nothing was lost: the staged repository is intact at {folder}\n"
            f"Upload it later with: hf upload {repo_id} {folder} ."
            + (f" --revision {revision}" if revision else "") + (" --create-pr" if create_pr else "")
        ) from e


# --------------------------------------------------------------------------------------------------- CLI


@dataclass
class PublishArguments:
    """Arguments of ``scripts/publish.py``."""

    model_dir: str = field(metadata={"help": "Folder of a trained medheads model (the output of a training "
                                             "script, or model.save_pretrained(dir) + tokenizer/processor)."})
    repo_id: str = field(metadata={"help": "Hub repository, ORG/NAME."})
    dry_run: bool = field(default=False, metadata={"help": "Stage and validate, print what would be uploaded, "
                                                           "do not contact the Hub."})
    staging_dir: str | None = field(default=None, metadata={"help": "Where to stage (new or empty folder); "
                                                                    "default: a fresh temp folder."})
    token: str | None = field(default=None, metadata={"help": "Hub write token; default: HF_TOKEN or the saved "
                                                              "login."})
    private: bool = field(default=False, metadata={"help": "Create the repository private."})
    revision: str | None = field(default=None, metadata={"help": "Branch to push to (created if needed); "
                                                                 "default: main."})
    create_pr: bool = field(default=False, metadata={"help": "Open a pull request instead of committing."})
    commit_message: str | None = field(default=None, metadata={"help": "Commit message."})


def publish(args: PublishArguments, out=None) -> dict:
    """Stage (and unless ``dry_run``, push) as ``args`` says; print progress to ``out``; return a summary."""
    out = out or sys.stdout
    staged = stage_model(args.model_dir, args.repo_id, staging_dir=args.staging_dir)
    print(staged.describe(), file=out)
    summary: dict = {"staging_dir": str(staged.folder), "files": staged.files}
    if args.dry_run:
        print(f"Dry run: nothing uploaded. Would upload the {len(staged.files)} files above to {args.repo_id}.",
              file=out)
        return summary
    info = push_staged(staged, args.repo_id, token=args.token, private=args.private, revision=args.revision,
                       create_pr=args.create_pr, commit_message=args.commit_message)
    sha = info.oid
    task = PIPELINE_TAGS.get(next((k for k in staged.config.get("auto_map", {}) if k in PIPELINE_TAGS), ""), "<task>")
    print(f"Pushed commit {sha} to {args.repo_id}" + (f" (pull request: {info.pr_url})" if info.pr_url else ""),
          file=out)
    print("Load it, pinned to this commit:", file=out)
    print(f'  pipeline("{task}", model="{args.repo_id}", revision="{sha}", trust_remote_code=True)', file=out)
    summary.update(commit=sha, commit_url=info.commit_url, pr_url=info.pr_url)
    return summary


def parse_args(argv: list[str] | None = None, prog: str = PROG) -> PublishArguments:
    """Flags, or a ``.json`` file of arguments first (flags after it override it), read by the contract every
    ``medheads`` command shares (``medheads.command_line``): any problem is one :class:`PublishError`-style
    ``InputError``."""
    (args,) = parse_command_line((PublishArguments,), argv, prog=prog,
                                 description="Stage a trained medheads model folder as a clean Hub repository "
                                             "(allow-list, scrubbed paths, model card) and push it.")
    return args


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """``medheads publish ARGS``: 0 on success; 2 (one ``PROG: error:`` line) for a problem with the inputs, found
    before anything is uploaded; 1 when the push itself failed (the message says where the staged folder is)."""

    try:
        return run_command(lambda: publish(parse_args(argv, prog)), prog)
    except PushError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
