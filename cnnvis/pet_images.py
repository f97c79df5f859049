"""Microsoft's PetImages through tensorflow-datasets (`cats_vs_dogs`): real photos without a Kaggle
account. Colab ships tensorflow-datasets; the download (about 790 MB) needs no token."""

from __future__ import annotations

import shutil
from pathlib import Path

FALLBACK = "the notebooks use the offline toy pets instead (see data_README.md)."
LABELS = ("Cat", "Dog")  # cats_vs_dogs' label 0 and 1


def download_pet_images(dest) -> Path:
    """Write tensorflow-datasets' cats_vs_dogs into dest/PetImages/{Cat,Dog}/N.jpg, the encoded
    bytes as they come (nothing is decoded or re-encoded here: dogs_vs_cats.prepare_dogs_vs_cats
    checks every image later), and return dest/PetImages. tfds keeps its own download in
    dest/tensorflow_datasets. Raises RuntimeError with one line when tensorflow-datasets is
    missing or the download fails (toy pets are then the fallback)."""
    try:
        import tensorflow_datasets as tfds  # noqa: PLC0415  (Colab ships it; not a requirement)
    except ModuleNotFoundError:
        raise RuntimeError("PetImages skipped: tensorflow-datasets is not installed (Colab has it; elsewhere pip "
                           f"install tensorflow-datasets); {FALLBACK}") from None
    dest = Path(dest)
    print(f"Downloading Microsoft's PetImages (tensorflow-datasets cats_vs_dogs, about 790 MB) into {dest}:")
    try:
        examples = tfds.load("cats_vs_dogs", split="train", data_dir=str(dest / "tensorflow_datasets"),
                             decoders={"image": tfds.decode.SkipDecoding()})
    except Exception as exc:  # noqa: BLE001  (tfds raises many types for a failed download; all end here)
        raise RuntimeError(f"PetImages download failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                           f"{FALLBACK}") from None
    folder = dest / "PetImages"
    shutil.rmtree(folder, ignore_errors=True)
    for label in LABELS:
        (folder / label).mkdir(parents=True)
    for example in tfds.as_numpy(examples):
        name = Path(example["image/filename"].decode()).name
        (folder / LABELS[int(example["label"])] / name).write_bytes(example["image"])
    return folder
