"""Register medheads' pipelines with transformers' `PIPELINE_REGISTRY` (used by `import medheads`; never shipped).

A saved checkpoint finds its pipeline through `custom_pipelines` in `config.json`; the registry covers the other way
in: `pipeline(task, model=<an in-memory model>, ...)` in a process that imported medheads. The medheads pipelines
subclass the stock ones and keep the stock behaviour for every other model, so they take over the stock task name;
the task's default model and type are kept, and transformers' "already registered" warning is not raised for it.
"""

from __future__ import annotations

from transformers.pipelines import PIPELINE_REGISTRY


def register_task_pipeline(task: str, pipeline_class: type, auto_class: type) -> None:
    """Make `pipeline_class` the implementation of `task` (with `auto_class` as its `pt` model class)."""
    current = PIPELINE_REGISTRY.supported_tasks.get(task, {})
    if current.get("impl") is pipeline_class:
        return
    entry = {key: value for key, value in current.items() if key not in ("impl", "pt")}
    entry.update(impl=pipeline_class, pt=(auto_class,))
    PIPELINE_REGISTRY.supported_tasks[task] = entry
    # what Pipeline.save_pretrained writes into config.json's custom_pipelines (the stock default model is not ours)
    pipeline_class._registered_impl = {task: {key: value for key, value in entry.items() if key != "default"}}


__all__ = ["register_task_pipeline"]
