"""Image folders as tf.data pipelines, the data the notebooks train on, and photos shipped by packages."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import matplotlib
import numpy as np
import skimage.data

from cnnvis.dogs_vs_cats import IMAGE_SUFFIXES, from_archive, real_data_counts, real_data_dir
from cnnvis.images import load_image
from cnnvis.kaggle import download_competition
from cnnvis.mode import quick_or_full
from cnnvis.paths import machine_data_dir, project_paths
from cnnvis.runtime import import_tensorflow
from cnnvis.toy_pets import make_toy_pets

tf = import_tensorflow()


def check_image_folders(root: Path) -> list[str]:
    """Validate root/{train,validation}/<class>/ images; return the class names."""
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder {root} does not exist. Expected {root}/train/<class>/*.jpg "
                                f"and {root}/validation/<class>/*.jpg (see data_README.md).")
    classes = None
    for split in ("train", "validation"):
        split_dir = root / split
        found = sorted(p.name for p in split_dir.iterdir() if p.is_dir()) if split_dir.is_dir() else []
        if len(found) < 2:
            raise ValueError(f"{split_dir} must hold one sub-folder per class (at least two, e.g. cats/ "
                             f"and dogs/); found {found or 'nothing'}.")
        for name in found:
            if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in (split_dir / name).iterdir()):
                raise ValueError(f"Class folder {split_dir / name} holds no images "
                                 f"(expected files ending in {', '.join(IMAGE_SUFFIXES)}).")
        if classes is not None and found != classes:
            raise ValueError(f"{root}/train has classes {classes} but {root}/validation has {found}.")
        classes = found
    return classes


def load_image_folders(root, image_size=(160, 160), batch_size: int = 20, seed: int = 0):
    """Return (train_ds, val_ds, class_names) for root/{train,validation}/<class>/ images.

    Batches are (images, labels): images float32 (B, H, W, 3) in [0, 255]; labels float32 (B, 1)
    in {0, 1} for two classes (class_names[1] is the positive class), int32 (B,) for more.
    Decoded images are cached in memory as uint8 (a file cache silently reuses stale data) and
    the training set is reshuffled every epoch.
    """
    root = Path(root)
    classes = check_image_folders(root)
    label_mode = "binary" if len(classes) == 2 else "int"

    def pipeline(split: str, shuffle: bool):
        ds = keras.utils.image_dataset_from_directory(
            root / split, labels="inferred", label_mode=label_mode, class_names=classes,
            image_size=tuple(image_size), batch_size=None, shuffle=shuffle, seed=seed, verbose=False)
        ds = ds.map(lambda x, y: (tf.cast(tf.round(x), tf.uint8), y)).cache()
        if shuffle:
            ds = ds.shuffle(4096, seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y))
        return ds.prefetch(tf.data.AUTOTUNE)

    return pipeline("train", True), pipeline("validation", False), classes


def validation_images(root, per_class: int, size=160) -> dict[str, np.ndarray]:
    """The first `per_class` validation images of each class (by file name), resized to `size`
    (int or (height, width)): {class: float32 (n, H, W, 3) in [0, 255]}. Real photos come in
    every size; the model needs its own."""
    root = Path(root)
    classes = check_image_folders(root)
    return {label: np.stack([load_image(f, size=size) for f in sorted(
        p for p in (root / "validation" / label).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:per_class]])
        for label in classes}


def sample_photos() -> list[dict]:
    """Real photos shipped by installed packages: [{"name", "path", "source", "label"}].

    `label` is "cats" for a cat photo and None for photos that are neither cat nor dog.
    """
    skimage_dir = Path(skimage.data.__file__).parent
    mpl_dir = Path(matplotlib.get_data_path()) / "sample_data"
    photos = [
        {"name": "chelsea", "path": skimage_dir / "chelsea.png",
         "source": "scikit-image skimage.data.chelsea() (Chelsea the cat, public domain)", "label": "cats"},
        {"name": "grace_hopper", "path": mpl_dir / "grace_hopper.jpg",
         "source": "matplotlib sample_data/grace_hopper.jpg (portrait of Grace Hopper)", "label": None},
        {"name": "astronaut", "path": skimage_dir / "astronaut.png",
         "source": "scikit-image skimage.data.astronaut() (Eileen Collins, NASA, public domain)", "label": None},
        {"name": "coffee", "path": skimage_dir / "coffee.png",
         "source": "scikit-image skimage.data.coffee() (cup of coffee, CC0)", "label": None},
    ]
    return [p for p in photos if p["path"].is_file()]


def photo_boxes() -> dict[str, list[dict]]:
    """Hand-drawn part boxes of the shipped photos (cnnvis/photo_boxes.json), per photo name:
    [{"part", "classes": ImageNet classes the part belongs to ([] for a face), "box": (x0, y0, x1, y1)}],
    in pixels of the photo resized to 224 x 224."""
    entries = json.loads((Path(__file__).with_name("photo_boxes.json")).read_text())["boxes"]
    boxes: dict[str, list[dict]] = {}
    for entry in entries:
        boxes.setdefault(entry["photo"], []).append({"part": entry["part"], "classes": entry["classes"],
                                                     "box": tuple(entry["box"])})
    return boxes


def class_boxes(photos, classes) -> list[list[tuple]]:
    """Per photo name, the boxes of the parts that belong to the class explained for it: the
    pointing game's targets (an empty list when no part of the photo belongs to the class)."""
    boxes = photo_boxes()
    return [[b["box"] for b in boxes.get(name, []) if int(cls) in b["classes"]] for name, cls in zip(photos, classes)]


def fetch_kaggle_dogs_vs_cats(dest) -> Path:
    """Download Kaggle's dogs-vs-cats competition zip into `dest` (see cnnvis.kaggle); return its path."""
    return download_competition(dest)


def find_dataset(paths=None, image_size: int = 160, kind: str = "auto") -> tuple[Path, str]:
    """Return (root, one-line description) of the data the notebooks train on.

    kind="auto": the real dogs-vs-cats photos when notebook 00 prepared them (real_data_dir),
    otherwise toy pets; kind="toy": toy pets in any case (they have part boxes). Toy pets are
    generated on the spot when missing (150 + 50 per class in quick mode, else 600 + 150). Both
    live in machine_data_dir(paths.data): in Colab the machine's own disk, where the real set is
    unpacked from its archive on Drive and toy pets, being deterministic, are drawn again.
    """
    if kind not in ("auto", "toy"):
        raise ValueError(f"kind must be 'auto' (real data when prepared, else toy pets) or 'toy', got {kind!r}.")
    paths = paths or project_paths()
    local = machine_data_dir(paths.data)
    real = real_data_dir(local)
    if kind == "auto" and not (real / "train").is_dir():
        from_archive(paths.data)  # a fresh Colab machine: the set is on Drive as one archive
    if kind == "auto" and (real / "train").is_dir() and (real / "validation").is_dir():
        n_train, n_val = real_data_counts()
        return real, f"real dogs-vs-cats photos ({real.name}: {n_train} train + {n_val} validation images per class)"
    n_train, n_val = quick_or_full((150, 50), (600, 150))
    root = make_toy_pets(local / f"toy_pets_{n_train}_{n_val}_{image_size}px",
                         n_train=n_train, n_val=n_val, size=image_size)
    return root, (f"toy pets ({n_train} train + {n_val} validation images per class, generated offline; "
                  "notebook 00 prepares the real photos)")
