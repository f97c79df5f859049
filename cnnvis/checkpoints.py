"""Training records kept beside each checkpoint: what it was trained on, and for how long.

train() writes name.json beside name.keras: {"epochs_done", "history", "dataset", "images"},
where "dataset" is the data folder's name and "images" its image counts per split and class. A
checkpoint is only ever resumed on the same data.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras

from cnnvis.dogs_vs_cats import IMAGE_SUFFIXES


def dataset_record(root) -> dict:
    """{"dataset": folder name, "images": {split: {class: count}}} for root/{train,validation}/<class>/;
    {"dataset": None, "images": None} when root is None (data unknown)."""
    if root is None:
        return {"dataset": None, "images": None}
    root = Path(root)
    images = {split: {c.name: sum(1 for f in c.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
                      for c in sorted((root / split).iterdir()) if c.is_dir()}
              for split in ("train", "validation") if (root / split).is_dir()}
    return {"dataset": root.name, "images": images}


def read_state(checkpoint) -> dict | None:
    """The training record beside `checkpoint` (a .keras path), or None when there is none."""
    path = Path(checkpoint).with_suffix(".json")
    return json.loads(path.read_text()) if path.is_file() else None


def same_data(state: dict, record: dict) -> bool:
    """Whether a training record was made on the data described by `record` (dataset_record)."""
    return state.get("dataset") == record["dataset"] and state.get("images") == record["images"]


def set_aside(checkpoint, state: dict) -> Path:
    """Rename a checkpoint and its record to name__<dataset it was trained on>.keras (never
    overwriting an earlier one); return the new checkpoint path."""
    checkpoint = Path(checkpoint)
    base = f"{checkpoint.stem}__{state.get('dataset') or 'unknown-data'}"
    target, n = checkpoint.with_name(base + ".keras"), 1
    while target.exists() or target.with_suffix(".json").exists():
        n += 1
        target = checkpoint.with_name(f"{base}_{n}.keras")
    checkpoint.rename(target)
    if checkpoint.with_suffix(".json").exists():
        checkpoint.with_suffix(".json").rename(target.with_suffix(".json"))
    return target


def _per_class(images: dict | None) -> str:
    if not images:
        return "image counts unknown"
    train, val = images.get("train", {}), images.get("validation", {})
    if len(set(train.values())) == 1 and len(set(val.values())) == 1:
        return f"{next(iter(train.values()))} + {next(iter(val.values()))} images per class"
    return f"{sum(train.values())} training + {sum(val.values())} validation images"


def describe_checkpoint(checkpoint) -> str:
    """One line: which checkpoint (file name), trained on what, for how many epochs, how well."""
    checkpoint = Path(checkpoint)
    state = read_state(checkpoint)
    if state is None:
        return f"Model {checkpoint.name}: no training record beside it, so what it was trained on is unknown."
    line = (f"Model {checkpoint.name}: trained on {state.get('dataset') or 'unrecorded data'} "
            f"({_per_class(state.get('images'))}) for {state['epochs_done']} epochs")
    val = state.get("history", {}).get("val_accuracy")
    if val:
        best = max(range(len(val)), key=val.__getitem__)
        line += f"; best validation accuracy {val[best]:.3f} (epoch {best + 1}, the one saved)"
    return line + "."


def start_state(checkpoint, data_root, resume: bool) -> dict:
    """The training record train() starts from: the one beside `checkpoint` when `resume` is on and it
    was made on the same data (dataset_record(data_root)); otherwise a fresh one, {"epochs_done": 0,
    "history": {}, "dataset", "images"}. A checkpoint of other data is set aside (set_aside), with
    one line saying so, and never resumed. checkpoint must end in .keras; its folder is created."""
    record = dataset_record(data_root)
    fresh = {"epochs_done": 0, "history": {}, **record}
    if checkpoint is None:
        return fresh
    checkpoint = Path(checkpoint)
    if checkpoint.suffix != ".keras":
        raise ValueError(f"checkpoint must be a .keras file path, got {checkpoint}.")
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    if not resume or not checkpoint.exists():
        return fresh
    saved = read_state(checkpoint) or {}
    if "epochs_done" in saved and same_data(saved, record):
        return saved
    moved = set_aside(checkpoint, saved)
    print(f"{checkpoint.name} was trained on {saved.get('dataset') or 'unrecorded data'}, not on "
          f"{record['dataset'] or 'this data'}: kept it as {moved.name} and training afresh.")
    return fresh


def epoch_recorder(state: dict, checkpoint):
    """A function(epoch, logs) for keras.callbacks.LambdaCallback(on_epoch_end=...): appends the
    epoch's logs to state["history"], counts it and writes the record beside `checkpoint`."""
    path = Path(checkpoint).with_suffix(".json")

    def record(epoch, logs):
        for key, value in logs.items():
            state["history"].setdefault(key, []).append(float(value))
        state["epochs_done"] = epoch + 1
        path.write_text(json.dumps(state))

    return record


def history_from_state(state: dict):
    """A keras History rebuilt from a training record, as if model.fit had just returned it."""
    history = keras.callbacks.History()
    history.history = {k: list(v) for k, v in state["history"].items()}
    history.epoch = list(range(state["epochs_done"]))
    return history
