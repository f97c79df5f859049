"""Training records kept beside each checkpoint: what it was trained on, and for how long.

train() keeps three files per checkpoint name.keras (the best epoch by validation accuracy):
- name.json, the record {"epochs_done", "epochs_planned", "history", "dataset", "images"}, where
  "dataset" is the data folder's name and "images" its image counts per split and class;
- name.last.keras, the last epoch's model with its optimizer state, and the record of that same
  epoch inside the file (RECORD_ENTRY): one file, replaced whole, so the weights, the optimizer
  and the epoch count can never disagree -- on Drive, separate files sync separately.
Resuming starts from the last file. A checkpoint is only ever resumed on the same data.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import keras

from cnnvis.dogs_vs_cats import IMAGE_SUFFIXES

RECORD_ENTRY = "cnnvis_record.json"  # the training record, inside name.last.keras


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


def last_path(checkpoint) -> Path:
    """name.last.keras beside name.keras: the last epoch's model, optimizer and record."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + ".last.keras")


def save_last(model, checkpoint, state: dict) -> Path:
    """Save `model` (with its optimizer state) and the record `state` as one file, last_path(checkpoint).

    Written beside it first and renamed into place, so a machine that dies meanwhile leaves the
    previous epoch's file whole."""
    last = last_path(checkpoint)
    partial = last.with_name(last.stem + "-partial.keras")
    model.save(partial)
    with zipfile.ZipFile(partial, "a") as archive:
        archive.writestr(RECORD_ENTRY, json.dumps(state))
    os.replace(partial, last)
    return last


def read_last(checkpoint) -> dict | None:
    """The record inside last_path(checkpoint), or None when there is no such file or it cannot be read."""
    try:
        with zipfile.ZipFile(last_path(checkpoint)) as archive:
            return json.loads(archive.read(RECORD_ENTRY))
    except (OSError, KeyError, zipfile.BadZipFile, ValueError):
        return None


def restore_last(model, checkpoint) -> None:
    """Give the compiled `model` the weights and optimizer state (iteration count, slots) saved in
    last_path(checkpoint). Raises ValueError when that file's optimizer is not the model's."""
    saved = keras.models.load_model(last_path(checkpoint), compile=True)
    model.set_weights(saved.get_weights())
    with model.distribute_strategy.scope():
        model.optimizer.build(model.trainable_variables)
    ours, theirs = model.optimizer.variables, saved.optimizer.variables
    if [tuple(v.shape) for v in ours] != [tuple(v.shape) for v in theirs]:
        raise ValueError(f"{last_path(checkpoint).name} was saved with another optimizer "
                         f"({type(saved.optimizer).__name__}); pass the same optimizer, or resume=False to train afresh.")
    for mine, stored in zip(ours, theirs):
        mine.assign(stored)


def set_aside(checkpoint, state: dict) -> Path:
    """Rename a checkpoint and the files beside it (record, last epoch) to name__<dataset it was
    trained on>.keras (never overwriting an earlier one); return the new checkpoint path."""
    checkpoint = Path(checkpoint)
    base = f"{checkpoint.stem}__{state.get('dataset') or 'unknown-data'}"
    target, n = checkpoint.with_name(base + ".keras"), 1
    while target.exists() or target.with_suffix(".json").exists() or last_path(target).exists():
        n += 1
        target = checkpoint.with_name(f"{base}_{n}.keras")
    for old, new in ((checkpoint, target), (checkpoint.with_suffix(".json"), target.with_suffix(".json")),
                     (last_path(checkpoint), last_path(target))):
        if old.exists():
            old.rename(new)
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
    planned = state.get("epochs_planned", state["epochs_done"])
    epochs = (f"{state['epochs_done']} epochs" if state["epochs_done"] >= planned else
              f"{state['epochs_done']} of {planned} epochs, unfinished (run the training again: it continues at "
              f"epoch {state['epochs_done'] + 1})")
    line = (f"Model {checkpoint.name}: trained on {state.get('dataset') or 'unrecorded data'} "
            f"({_per_class(state.get('images'))}) for {epochs}")
    val = state.get("history", {}).get("val_accuracy")
    if val:
        best = max(range(len(val)), key=val.__getitem__)
        line += f"; best validation accuracy {val[best]:.3f} (epoch {best + 1}, the one saved)"
    return line + "."


def unfinished(state: dict | None) -> bool:
    """Whether a training record stopped before the epochs it was started for (a disconnect)."""
    return state is not None and state["epochs_done"] < state.get("epochs_planned", state["epochs_done"])


def start_state(checkpoint, data_root, resume: bool, epochs: int) -> dict:
    """The training record train() starts from, for a run of `epochs` epochs.

    With `resume` on and a checkpoint of the same data (dataset_record(data_root)): the record of
    its last epoch (read_last; the record inside name.last.keras, not name.json, which can be
    ahead of it on Drive), or, when all `epochs` are done, name.json. Otherwise a fresh one,
    {"epochs_done": 0, "history": {}, "dataset", "images"}. A checkpoint of other data, or an
    unfinished one without its last-epoch file, is set aside (set_aside) with one line saying so,
    and never resumed. checkpoint must end in .keras; its folder is created.
    """
    record = dataset_record(data_root)
    fresh = {"epochs_done": 0, "history": {}, **record}
    if checkpoint is None:
        return fresh
    checkpoint = Path(checkpoint)
    if checkpoint.suffix != ".keras":
        raise ValueError(f"checkpoint must be a .keras file path, got {checkpoint}.")
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    if not resume or not (checkpoint.exists() or last_path(checkpoint).exists()):
        return fresh
    last = read_last(checkpoint)
    saved = last or read_state(checkpoint) or {}
    if "epochs_done" in saved and same_data(saved, record):
        if last is not None or saved["epochs_done"] >= epochs:
            return saved
        reason = "has no last-epoch file to continue from (an older version wrote it)"
    else:
        reason = f"was trained on {saved.get('dataset') or 'unrecorded data'}, not on {record['dataset'] or 'this data'}"
    moved = set_aside(checkpoint, saved)
    print(f"{checkpoint.name} {reason}: kept it as {moved.name} and training afresh.")
    return fresh


def epoch_recorder(state: dict, checkpoint, model):
    """A function(epoch, logs) for keras.callbacks.LambdaCallback(on_epoch_end=...): appends the
    epoch's logs to state["history"], counts it, saves the model with its optimizer and this
    record as name.last.keras (save_last), then writes the record as name.json."""
    path = Path(checkpoint).with_suffix(".json")

    def record(epoch, logs):
        for key, value in logs.items():
            state["history"].setdefault(key, []).append(float(value))
        state["epochs_done"] = epoch + 1
        save_last(model, checkpoint, state)
        path.write_text(json.dumps(state))

    return record


def history_from_state(state: dict):
    """A keras History rebuilt from a training record, as if model.fit had just returned it."""
    history = keras.callbacks.History()
    history.history = {k: list(v) for k, v in state["history"].items()}
    history.epoch = list(range(state["epochs_done"]))
    return history
