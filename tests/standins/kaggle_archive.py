"""A Kaggle-shaped dogs-vs-cats archive: dogs-vs-cats.zip holding train.zip (cat.N.jpg, dog.N.jpg),
test1.zip and sampleSubmission.csv. The photos are toy-pet drawings saved as JPEG at mixed sizes
and aspect ratios, so a model can learn them; corrupt and zero-byte files are mixed in."""
import io
import zipfile
from pathlib import Path

import numpy as np

from cnnvis import toy_pets

BROKEN = {"cat.90001.jpg": b"", "dog.90002.jpg": b"\xff\xd8\xff\xe0 truncated", "cat.90003.jpg": b"not an image"}


def _photo(label: str, index: int) -> bytes:
    rng = np.random.default_rng([7, label == "dog", index])
    size = int(rng.integers(120, 260))
    image = toy_pets._textured_background(rng, size)
    toy_pets._draw_pet(image, label + "s", rng)
    aspect = float(rng.uniform(0.7, 1.45))
    image = image.resize((int(size * aspect), size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(rng.integers(70, 95)))
    return buffer.getvalue()


def write_kaggle_archive(path, per_class: int = 210) -> Path:
    """Write the archive to `path` and return it."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as train:
        for i in range(per_class):
            for label in ("cat", "dog"):
                train.writestr(f"train/{label}.{i}.jpg", _photo(label, i))
        for name, data in BROKEN.items():
            train.writestr(f"train/{name}", data)
    path = Path(path)
    with zipfile.ZipFile(path, "w") as outer:
        outer.writestr("train.zip", inner.getvalue())
        outer.writestr("test1.zip", b"PK\x05\x06" + b"\x00" * 18)
        outer.writestr("sampleSubmission.csv", "id,label\n1,0\n")
    return path
