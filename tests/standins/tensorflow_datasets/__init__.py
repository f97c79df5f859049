"""tensorflow_datasets stand-in: `load("cats_vs_dogs", split="train", decoders={"image": SkipDecoding()})`
serves the photos of the Kaggle-shaped archive STANDIN_ARCHIVE as cats_vs_dogs' examples
({"image": encoded bytes, "image/filename": b"PetImages/Cat/N.jpg", "label": 0 cat, 1 dog}).
STANDIN_TFDS_OFFLINE=1: the download fails as tfds' does without a connection."""
import io
import os
import zipfile
from pathlib import Path
from types import SimpleNamespace


class _SkipDecoding:
    pass


decode = SimpleNamespace(SkipDecoding=_SkipDecoding)


def load(name, split, data_dir=None, decoders=None):
    if os.environ.get("STANDIN_LOG"):
        with open(os.environ["STANDIN_LOG"], "a") as handle:
            handle.write(f"tfds.load {name} {split} data_dir={data_dir}\n")
    if name != "cats_vs_dogs" or split != "train":
        raise ValueError(f"stand-in serves cats_vs_dogs/train only, not {name}/{split}")
    if not isinstance((decoders or {}).get("image"), _SkipDecoding):
        raise ValueError("stand-in serves encoded images only (decoders={'image': tfds.decode.SkipDecoding()})")
    if os.environ.get("STANDIN_TFDS_OFFLINE") == "1":
        raise ConnectionError("Failed to get url https://download.microsoft.com/download/3/E/1/"
                              "3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip")
    outer = zipfile.ZipFile(os.environ["STANDIN_ARCHIVE"])
    inner = zipfile.ZipFile(io.BytesIO(outer.read("train.zip")))
    examples = []
    for member in sorted(inner.namelist()):
        label, number, _ = Path(member).name.split(".")
        folder = "Cat" if label == "cat" else "Dog"
        examples.append({"image": inner.read(member), "image/filename": f"PetImages/{folder}/{number}.jpg".encode(),
                         "label": int(label == "dog")})
    return examples


def as_numpy(dataset):
    return iter(dataset)
