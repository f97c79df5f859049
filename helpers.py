"""Shared code for the cnn-vis notebooks.

One module, sectioned in the order the notebooks teach:

1. paths and Colab      -- where data, models and figures live; quick mode; save_figure
2. data                 -- dogs-vs-cats preparation, offline toy pets, tf.data pipelines, photos
3. model and training   -- the seeds' mini-VGG, training with checkpoints, predictions
4. activations, tiling  -- activation models for any Keras 3 model, the seeds' two tilings, sparsity
5. filter patterns      -- batched, compile-once gradient ascent (seed 001) and a Lucid-style mode
6. CAM and metrics      -- Grad-CAM, Grad-CAM++, Score-CAM, occlusion, overlays, pointing game, AUCs
7. widgets              -- ipywidgets explorers

Images handed to models are raw RGB pixels, float32 in [0, 255], shape (H, W, 3) or
(N, H, W, 3): pixel scaling lives inside each model (a Rescaling layer or the
application's own preprocessing), so visualisation code never rescales by hand.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import random
import sys
import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from cnnvis.checkpoints import dataset_record, describe_checkpoint, read_state, same_data, set_aside  # noqa: F401
from cnnvis.colab import (colab_secret, content_dir, drive_mountpoint, flush_drive, in_colab, local_fallback,  # noqa: F401
                          mount_drive)
from cnnvis.dogs_vs_cats import (IMAGE_SUFFIXES, download_dir, get_dogs_vs_cats, prepare_dogs_vs_cats,  # noqa: F401
                                 real_data_counts, real_data_dir)
from cnnvis.files import build_then_rename
from cnnvis.kaggle import download_competition, kaggle_credentials  # noqa: F401
from cnnvis.mode import QUICK_ENV, quick_mode, quick_or_full  # noqa: F401

# TensorFlow is imported lazily (by _tensorflow), so that `import helpers` and the unit tests of
# pure-numpy code stay fast. Its C++ runtime warnings (such as "Allocation exceeds 10% of free
# system memory", which depend on the machine's load) would otherwise land in whichever notebook
# cell is running.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Inline figures at screen resolution, as JPEG (noisy activation grids compress ~5x better than
# PNG), keep notebooks small; save_figure writes PNG files at 300 dpi.
plt.rcParams["figure.dpi"] = 72
try:
    from IPython import get_ipython
    from matplotlib_inline.backend_inline import set_matplotlib_formats

    if get_ipython() is not None:
        set_matplotlib_formats("jpeg", pil_kwargs={"quality": 75})
except ImportError:  # plain Python without IPython: nothing is shown inline anyway
    pass

REPO_ROOT = Path(__file__).resolve().parent
HOME_ENV = "CNNVIS_HOME"


# ---------------------------------------------------------------------------
# 1. Paths and Colab
# ---------------------------------------------------------------------------


NO_TENSORFLOW = ("TensorFlow is not installed in this Python. In Colab, a TPU runtime has none: choose Runtime > "
                 "Change runtime type > T4 GPU (or CPU) and run again; locally: pip install -r requirements.txt.")


def _tensorflow():
    """Import TensorFlow once and return the module, keeping its start-up lines out of notebooks.

    TF 2.21 writes absl and oneDNN banners straight to file descriptor 2 while it is imported,
    whatever TF_CPP_MIN_LOG_LEVEL says; a notebook shows them as a red block in whichever cell
    first needs TensorFlow. While TF_CPP_MIN_LOG_LEVEL >= 2 (our default) they are captured and
    dropped; if the import fails they are printed before the error is raised. Without TensorFlow
    (Colab's TPU runtime) the ImportError says in one line what to switch to.
    """
    if "tensorflow" in sys.modules or int(os.environ.get("TF_CPP_MIN_LOG_LEVEL") or 0) < 2:
        return _import_tensorflow()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as captured:
        saved_fd = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            return _import_tensorflow()
        finally:
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            if "tensorflow" not in sys.modules:  # the import failed: show what TF printed
                captured.seek(0)
                sys.stderr.write(captured.read().decode(errors="replace"))


def _import_tensorflow():
    try:
        import tensorflow  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        if exc.name != "tensorflow":
            raise
        raise ImportError(NO_TENSORFLOW) from None
    tensorflow.config.list_physical_devices("GPU")  # the CUDA probe logs too ("failed call to cuInit")
    return tensorflow


if in_colab() and importlib.util.find_spec("tensorflow") is None:  # say it at the setup cell, not deep inside
    print(NO_TENSORFLOW)


def _keras():
    """Import Keras 3 (through _tensorflow, so TensorFlow's start-up lines stay quiet)."""
    _tensorflow()
    import keras  # noqa: PLC0415
    return keras


def project_paths(create: bool = True) -> SimpleNamespace:
    """Return the project folders as Paths: root, data, models, figures, outputs.

    Priority: the CNNVIS_HOME environment variable (data/ and outputs/ below it); in Colab the
    Drive folder MyDrive/cnn-vis (Drive is mounted on first use, an existing mount reused; if
    Drive cannot be mounted, /content/cnn-vis on the machine's own disk); otherwise the
    repository root. ``models`` and ``figures`` live under ``outputs`` locally and directly
    under the project folder in Colab. create=False neither mounts Drive nor makes folders.
    """
    if os.environ.get(HOME_ENV):
        root = Path(os.environ[HOME_ENV]).expanduser().resolve()
        outputs = root / "outputs"
    elif in_colab():
        mounted = drive_mountpoint() / "MyDrive"
        drive = mount_drive() if create else (mounted if mounted.is_dir() else None)
        root = drive / "cnn-vis" if drive else local_fallback()
        outputs = root
    else:
        root = REPO_ROOT
        outputs = root / "outputs"
    paths = SimpleNamespace(root=root, data=root / "data", outputs=outputs,
                            models=outputs / "models", figures=outputs / "figures")
    if create:
        for folder in (paths.data, paths.models, paths.figures):
            folder.mkdir(parents=True, exist_ok=True)
    return paths


def describe_paths(paths) -> str:
    """The project folders as lines 'name: place', the root named by where it comes from
    ($CNNVIS_HOME, the repository, Google Drive or the Colab disk) so no machine path is shown
    outside Colab."""
    if os.environ.get(HOME_ENV):
        root = "$CNNVIS_HOME"
    elif paths.root == REPO_ROOT:
        root = "<repository>"
    else:
        root = str(paths.root)
    return "\n".join(f"{name:>8}: {root}/{getattr(paths, name).relative_to(paths.root).as_posix()}"
                     for name in ("data", "models", "figures"))


def gpu_report() -> str:
    """One line naming the visible GPUs, or saying there are none and how to get one in Colab."""
    tf = _tensorflow()

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = []
        for gpu in gpus:
            details = tf.config.experimental.get_device_details(gpu)
            names.append(details.get("device_name", gpu.name))
        return f"GPU: {len(gpus)} visible ({', '.join(names)})."
    hint = (" In Colab: Runtime > Change runtime type > Hardware accelerator: GPU, then rerun."
            if in_colab() else " Training runs on the CPU (slower, fine in quick mode).")
    return "No GPU visible." + hint


def runtime_report() -> str:
    """Two lines: TensorFlow, Keras and Python versions with the Colab and quick-mode flags; then gpu_report()."""
    tf, keras = _tensorflow(), _keras()
    python = ".".join(map(str, sys.version_info[:3]))
    return (f"TensorFlow {tf.__version__}, Keras {keras.__version__}, Python {python}; "
            f"in Colab: {in_colab()}; quick mode: {quick_mode()}\n{gpu_report()}")


def save_figure(fig, name: str, folder: Path | None = None, dpi: int = 300) -> Path:
    """Save a matplotlib figure as PNG at `dpi` into the figures folder (Drive in Colab).

    `name` is a file stem such as "01_history"; returns the written path.
    """
    if not name or any(sep in name for sep in "/\\"):
        raise ValueError(f"save_figure name must be a plain file stem like '01_history', got {name!r}.")
    folder = Path(folder) if folder is not None else project_paths().figures
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def show(fig, save_as: str | None = None) -> None:
    """Display a figure now, save it through save_figure when `save_as` is given, then close it, so
    a loop drawing many figures keeps one in memory at a time."""
    from IPython.display import display  # noqa: PLC0415  (Jupyter's display; repr outside it)

    if save_as:
        save_figure(fig, save_as)
    display(fig)
    plt.close(fig)


# ---------------------------------------------------------------------------
# 2. Data
# ---------------------------------------------------------------------------

CLASS_DIRS = ("cats", "dogs")
BOX_PARTS = ("face", "left_ear", "right_ear", "snout")


def _textured_background(rng: np.random.Generator, size: int) -> Image.Image:
    """A cluttered background: colour gradient, noise, stripes and random shapes."""
    base = rng.uniform(40, 215, 3)
    tilt = rng.uniform(-60, 60, 3)
    ramp = np.linspace(-0.5, 0.5, size)
    angle = rng.uniform(0, np.pi)
    grad = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
    pixels = base + grad[..., None] * tilt + rng.normal(0, 12, (size, size, 3))
    if rng.random() < 0.5:
        period = rng.uniform(6, 20)
        stripes = np.sin((np.arange(size)[None, :] * np.cos(angle) + np.arange(size)[:, None] * np.sin(angle))
                         * 2 * np.pi / period)
        pixels += stripes[..., None] * rng.uniform(8, 25)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(6, 14)):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0 = rng.uniform(-0.1, 1.0, 2) * size
        w, h = rng.uniform(0.05, 0.35, 2) * size
        kind = rng.integers(3)
        if kind == 0:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
        elif kind == 1:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
        else:
            draw.line([x0, y0, x0 + w, y0 + h], fill=colour, width=int(rng.integers(1, 4)))
    return image.filter(ImageFilter.GaussianBlur(0.6))


def _box(points) -> list[float]:
    xs, ys = zip(*points)
    return [min(xs), min(ys), max(xs), max(ys)]


def _draw_pet(image: Image.Image, label: str, rng: np.random.Generator) -> dict[str, list[float]]:
    """Draw a cartoon cat or dog face on `image`; return its part boxes (x0, y0, x1, y1) in pixels.

    Cats and dogs share the round face, the eyes and the colour palette; only the parts differ:
    cats have pointed ears, a small muzzle and whiskers, dogs floppy ears and a long snout.
    """
    size = image.size[0]
    draw = ImageDraw.Draw(image)
    r = rng.uniform(0.19, 0.25) * size
    cx = rng.uniform(1.45 * r, size - 1.45 * r)
    cy = rng.uniform(1.65 * r, size - 1.75 * r)
    fur = rng.uniform(30, 230, 3)
    fur_c = tuple(int(c) for c in fur)
    dark = tuple(int(c) for c in np.clip(fur * rng.uniform(0.45, 0.75), 0, 255))
    boxes: dict[str, list[float]] = {}
    if label == "cats":
        spread = rng.uniform(0.45, 0.7)
        for side, sign in (("left_ear", -1), ("right_ear", 1)):
            base_a = (cx + sign * r * np.sin(spread - 0.45), cy - r * np.cos(spread - 0.45))
            base_b = (cx + sign * r * np.sin(spread + 0.45), cy - r * np.cos(spread + 0.45))
            tip = (cx + sign * r * np.sin(spread) * 1.55, cy - r * rng.uniform(1.45, 1.65))
            draw.polygon([base_a, tip, base_b], fill=fur_c)
            draw.polygon([base_a, ((base_a[0] + tip[0]) / 2, (base_a[1] + tip[1]) / 2), base_b], fill=dark)
            boxes[side] = _box([base_a, tip, base_b])
    else:
        for side, sign in (("left_ear", -1), ("right_ear", 1)):
            top = (cx + sign * 0.75 * r, cy - 0.85 * r)
            ear = [top[0] - 0.32 * r, top[1], top[0] + 0.32 * r, top[1] + rng.uniform(1.2, 1.5) * r]
            ear[0] += sign * 0.25 * r
            ear[2] += sign * 0.25 * r
            draw.ellipse(ear, fill=dark)
            boxes[side] = ear
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fur_c)
    boxes["face"] = [cx - r, cy - r, cx + r, cy + r]
    for sign in (-1, 1):
        ex, ey, er = cx + sign * 0.38 * r, cy - 0.2 * r, 0.15 * r
        draw.ellipse([ex - er, ey - er, ex + er, ey + er], fill=(245, 245, 235))
        draw.ellipse([ex - er / 2, ey - er / 2, ex + er / 2, ey + er / 2], fill=(20, 20, 20))
    if label == "cats":
        muzzle = [cx - 0.32 * r, cy + 0.1 * r, cx + 0.32 * r, cy + 0.55 * r]
        draw.ellipse(muzzle, fill=tuple(int(c) for c in np.clip(fur + 40, 0, 255)))
        draw.polygon([(cx - 0.1 * r, cy + 0.12 * r), (cx + 0.1 * r, cy + 0.12 * r), (cx, cy + 0.26 * r)],
                     fill=(230, 120, 140))
        whiskers = []
        for sign in (-1, 1):
            for dy in (-0.12, 0.05, 0.22):
                start = (cx + sign * 0.2 * r, cy + 0.35 * r)
                end = (cx + sign * 1.35 * r, cy + (0.35 + dy * 2.2) * r)
                draw.line([start, end], fill=(25, 25, 25), width=max(1, int(r / 22)))
                whiskers += [start, end]
        boxes["snout"] = _box(whiskers + [(muzzle[0], muzzle[1]), (muzzle[2], muzzle[3])])
    else:
        length = rng.uniform(1.2, 1.5) * r
        snout = [cx - 0.36 * r, cy - 0.05 * r, cx + 0.36 * r, cy + length]
        draw.rounded_rectangle(snout, radius=0.3 * r, fill=tuple(int(c) for c in np.clip(fur + 30, 0, 255)))
        draw.ellipse([cx - 0.2 * r, cy + length - 0.32 * r, cx + 0.2 * r, cy + length - 0.02 * r],
                     fill=(20, 20, 20))
        boxes["snout"] = snout
    return boxes


def make_toy_pets(dest, n_train: int = 600, n_val: int = 150, size: int = 160, seed: int = 0) -> Path:
    """Draw an offline stand-in for dogs-vs-cats: dest/{train,validation}/{cats,dogs}/*.png.

    n_train and n_val count images per class; images are `size` x `size` RGB. Each shows one
    cartoon face at random position, scale and colour on a cluttered textured background; the
    class lives only in the parts (ears, muzzle/whiskers versus floppy ears/long snout).
    dest/boxes.csv lists, per image, the pixel boxes (x0, y0, x1, y1) of the parts
    face, left_ear, right_ear and snout. Same seed, same pixels. An existing dest made with the
    same settings is reused; dest may be an empty folder; any other existing dest is left
    untouched and raises.
    """
    dest = Path(dest)
    if n_train < 1 or n_val < 1 or size < 32:
        raise ValueError(f"make_toy_pets needs n_train >= 1, n_val >= 1 and size >= 32; got "
                         f"n_train={n_train}, n_val={n_val}, size={size}.")
    settings = {"n_train": n_train, "n_val": n_val, "size": size, "seed": seed, "version": 2}
    manifest = dest / "toy_pets.json"
    if manifest.exists() and json.loads(manifest.read_text()) == settings:
        return dest
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"{dest} already exists and is not a toy-pets set made with {settings}; "
                              "pass another dest or remove it yourself.")

    def build(tmp: Path) -> None:
        rows = []
        for split_index, (split, count) in enumerate((("train", n_train), ("validation", n_val))):
            for label_index, label in enumerate(CLASS_DIRS):
                (tmp / split / label).mkdir(parents=True)
                for i in range(count):
                    rng = np.random.default_rng([seed, split_index, label_index, i])
                    image = _textured_background(rng, size)
                    boxes = _draw_pet(image, label, rng)
                    relative = f"{split}/{label}/{label[:-1]}.{i:04d}.png"
                    image.save(tmp / relative)
                    for part in BOX_PARTS:
                        x0, y0, x1, y1 = (float(np.clip(v, 0, size - 1)) for v in boxes[part])
                        rows.append([relative, label, part, round(x0, 1), round(y0, 1), round(x1, 1), round(y1, 1)])
        with open(tmp / "boxes.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "class", "part", "x0", "y0", "x1", "y1"])
            writer.writerows(rows)
        (tmp / "toy_pets.json").write_text(json.dumps(settings))

    return build_then_rename(dest, build)


def load_boxes(root) -> dict[str, dict[str, tuple[float, float, float, float]]]:
    """Read root/boxes.csv (from make_toy_pets) as {relative path: {part: (x0, y0, x1, y1)}}."""
    path = Path(root) / "boxes.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: boxes exist only for sets made by make_toy_pets().")
    boxes: dict[str, dict[str, tuple[float, float, float, float]]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            boxes.setdefault(row["path"], {})[row["part"]] = tuple(float(row[k]) for k in ("x0", "y0", "x1", "y1"))
    return boxes


def _check_image_folders(root: Path) -> list[str]:
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
    tf = _tensorflow()
    keras = _keras()

    root = Path(root)
    classes = _check_image_folders(root)
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
    classes = _check_image_folders(root)
    return {label: np.stack([load_image(f, size=size) for f in sorted(
        p for p in (root / "validation" / label).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:per_class]])
        for label in classes}


def load_image(path_or_array, size=None) -> np.ndarray:
    """Load one image as float32 RGB (H, W, 3) in [0, 255], resized to `size` if given.

    Accepts a file path, a PIL image or a numpy array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4);
    uint8 arrays are taken as 0-255, float arrays with max <= 1 as 0-1. Grayscale, RGBA and
    palette images become RGB (alpha is dropped). `size` is an int or (height, width).
    """
    if isinstance(path_or_array, (str, Path)):
        path = Path(path_or_array)
        if not path.is_file():
            raise FileNotFoundError(f"Image file {path} does not exist.")
        try:
            with Image.open(path) as im:
                im.load()
                array = np.asarray(im.convert("RGB"), dtype=np.float32)
        except Exception as exc:
            raise ValueError(f"{path} is not a readable image ({type(exc).__name__}); "
                             "expected a JPEG, PNG, BMP or GIF file.") from None
    elif isinstance(path_or_array, Image.Image):
        array = np.asarray(path_or_array.convert("RGB"), dtype=np.float32)
    else:
        array = np.asarray(path_or_array)
        if array.ndim == 2:
            array = array[..., None]
        if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or 0 in array.shape:
            raise ValueError(f"Expected an image array of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); "
                             f"got shape {np.asarray(path_or_array).shape}.")
        if not np.isfinite(array).all():
            raise ValueError("Image array contains NaN or infinite values.")
        scale = 255.0 if array.dtype.kind == "f" and float(array.max()) <= 1.0 else 1.0
        array = array.astype(np.float32) * scale
        array = np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array[..., :3]
    if size is not None:
        height, width = (size, size) if isinstance(size, int) else size
        resized = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).resize((width, height), Image.BILINEAR)
        array = np.asarray(resized, dtype=np.float32)
    return np.ascontiguousarray(array, dtype=np.float32)


def sample_photos() -> list[dict]:
    """Real photos shipped by installed packages: [{"name", "path", "source", "label"}].

    `label` is "cats" for a cat photo and None for photos that are neither cat nor dog.
    """
    import skimage.data  # noqa: PLC0415

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


def fetch_kaggle_dogs_vs_cats(dest) -> Path:
    """Download Kaggle's dogs-vs-cats competition zip into `dest` (see cnnvis.kaggle); return its path."""
    return download_competition(dest)


def plot_samples(root, n: int = 8, split: str = "train", seed: int = 0):
    """Show n images of root/<split>/ alternating between classes, part boxes drawn when
    root/boxes.csv exists (toy pets); return the figure."""
    root = Path(root)
    classes = _check_image_folders(root)
    rng = random.Random(seed)
    files = {c: sorted(p for p in (root / split / c).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) for c in classes}
    chosen = [(c, rng.choice(files[c])) for i in range(n) for c in [classes[i % len(classes)]]]
    boxes = load_boxes(root) if (root / "boxes.csv").exists() else {}
    per_row = min(n, 8)
    rows = int(np.ceil(n / per_row))
    fig, axes = plt.subplots(rows, per_row, figsize=(1.8 * per_row, 2.0 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (label, path) in zip(axes.flat, chosen):
        ax.imshow(load_image(path).astype(np.uint8))
        ax.set_title(label, fontsize=9)
        for part, (x0, y0, x1, y1) in boxes.get(path.relative_to(root).as_posix(), {}).items():
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1,
                                       color="white" if part == "face" else "yellow"))
    fig.tight_layout()
    return fig


def find_dataset(paths=None, image_size: int = 160, kind: str = "auto") -> tuple[Path, str]:
    """Return (root, one-line description) of the data the notebooks train on.

    kind="auto": the real dogs-vs-cats photos when notebook 00 prepared them (real_data_dir),
    otherwise toy pets; kind="toy": toy pets in any case (they have part boxes). Toy pets are
    generated on the spot when missing (150 + 50 per class in quick mode, else 600 + 150).
    """
    if kind not in ("auto", "toy"):
        raise ValueError(f"kind must be 'auto' (real data when prepared, else toy pets) or 'toy', got {kind!r}.")
    paths = paths or project_paths()
    real = real_data_dir(paths.data)
    if kind == "auto" and (real / "train").is_dir() and (real / "validation").is_dir():
        n_train, n_val = real_data_counts()
        return real, f"real dogs-vs-cats photos ({real.name}: {n_train} train + {n_val} validation images per class)"
    n_train, n_val = quick_or_full((150, 50), (600, 150))
    root = make_toy_pets(paths.data / f"toy_pets_{n_train}_{n_val}_{image_size}px",
                         n_train=n_train, n_val=n_val, size=image_size)
    return root, (f"toy pets ({n_train} train + {n_val} validation images per class, generated offline; "
                  "notebook 00 prepares the real photos)")


# ---------------------------------------------------------------------------
# 3. Model and training
# ---------------------------------------------------------------------------

def training_strategy(devices=None):
    """A tf.distribute strategy: MirroredStrategy over `devices` (default: the visible GPUs)
    when there are two or more, otherwise the default single-device strategy."""
    tf = _tensorflow()

    if devices is None:
        devices = [d.name.replace("physical_device:", "") for d in tf.config.list_physical_devices("GPU")]
    if len(devices) > 1:
        return tf.distribute.MirroredStrategy(devices=list(devices))
    return tf.distribute.get_strategy()


def build_mini_vgg(variant: str = "seed000", input_size: int | None = None, strategy=None,
                   mixed_precision: bool = False, seed: int | None = 0, head: str = "flatten"):
    """Build the seeds' small dogs-vs-cats CNN as a functional model with one sigmoid output.

    variant="seed000": the mini-VGG of seed 000 at 160x160 -- blocks of two 3x3 convolutions
    (16, 32, 64 filters) and a max-pool, a final 128-filter convolution and pool, then
    flatten, Dense 512 ReLU, Dropout 0.5, Dense 1 sigmoid; layer names follow the seed
    (block0_conv1, block0_conv2, block0_pool1, ..., block3_pool). First two convolutions:
    448 and 2320 parameters.
    variant="seed003": seed 003's four-convolution net at 150x150 (3,453,121 parameters).
    head="gap" (seed000 only) replaces flatten, Dense 512 and dropout with global average pooling
    straight into the sigmoid: each channel's weight then says directly whether it is evidence
    for dogs (positive) or cats (negative), which gives class-activation maps for both classes.
    Input: raw RGB float32 (N, H, W, 3) in [0, 255]; a Rescaling(1/255) layer comes first.
    The model is created under `strategy` (default: training_strategy()). mixed_precision=True
    computes in float16 on a GPU (the output stays float32); without a GPU it is ignored with a
    warning. `seed` seeds Python, NumPy and TensorFlow (weights, dropout) for repeatable runs;
    None leaves the random state alone.
    """
    tf = _tensorflow()
    keras = _keras()
    layers = _keras().layers

    if seed is not None:
        keras.utils.set_random_seed(seed)
    if variant not in ("seed000", "seed003"):
        raise ValueError(f"variant must be 'seed000' (mini-VGG, 160 px) or 'seed003' (4 convs, 150 px); got {variant!r}.")
    if head not in ("flatten", "gap") or (head == "gap" and variant != "seed000"):
        raise ValueError(f"head must be 'flatten' (the seeds') or 'gap' (seed000 only); got {head!r} for {variant!r}.")
    size = input_size or (160 if variant == "seed000" else 150)
    dtype = None
    if mixed_precision:
        if tf.config.list_physical_devices("GPU"):
            dtype = "mixed_float16"
        else:
            print("mixed_precision=True ignored: no GPU visible (float16 is slower on the CPU).")
    strategy = strategy or training_strategy()

    def conv(filters, name, padding):
        return layers.Conv2D(filters, 3, activation="relu", padding=padding, name=name, dtype=dtype)

    with strategy.scope():
        inputs = keras.Input((size, size, 3), name="image")
        x = layers.Rescaling(1.0 / 255, name="rescale", dtype=dtype)(inputs)
        if variant == "seed000":
            for block, filters in enumerate((16, 32, 64)):
                x = conv(filters, f"block{block}_conv1", "same")(x)
                x = conv(filters, f"block{block}_conv2", "same")(x)
                x = layers.MaxPooling2D(name=f"block{block}_pool1", dtype=dtype)(x)
            x = conv(128, "block3_conv1", "same")(x)
            x = layers.MaxPooling2D(name="block3_pool", dtype=dtype)(x)
            if head == "gap":
                x = layers.GlobalAveragePooling2D(name="gap", dtype=dtype)(x)
            else:
                x = layers.Flatten(name="flatten")(x)
                x = layers.Dense(512, activation="relu", name="dense", dtype=dtype)(x)
                x = layers.Dropout(0.5, name="dropout")(x)
        else:
            for i, filters in enumerate((32, 64, 128, 128), start=1):
                x = conv(filters, f"conv2d_{i}", "valid")(x)
                x = layers.MaxPooling2D(name=f"max_pooling2d_{i}", dtype=dtype)(x)
            x = layers.Flatten(name="flatten")(x)
            x = layers.Dense(512, activation="relu", name="dense", dtype=dtype)(x)
        outputs = layers.Dense(1, activation="sigmoid", name="prediction", dtype="float32")(x)
        return keras.Model(inputs, outputs, name=f"mini_vgg_{variant}" + ("_gap" if head == "gap" else ""))


def augmentation_layers(seed: int = 0):
    """A small Keras augmentation pipeline (flip, rotation, zoom) for train(augment=...)."""
    keras = _keras()
    layers = _keras().layers

    return keras.Sequential([layers.RandomFlip("horizontal", seed=seed),
                             layers.RandomRotation(0.05, seed=seed),
                             layers.RandomZoom(0.1, seed=seed)], name="augment")


def _history_from_state(state: dict):
    keras = _keras()

    history = keras.callbacks.History()
    history.history = {k: list(v) for k, v in state["history"].items()}
    history.epoch = list(range(state["epochs_done"]))
    return history


def train(model, train_ds, val_ds, epochs: int, checkpoint=None, resume: bool = True,
          learning_rate: float = 1e-4, optimizer=None, loss: str = "binary_crossentropy",
          augment=None, verbose: int = 2, data_root=None):
    """Compile and fit `model`; return the Keras History of all epochs run so far.

    Defaults follow seed 003: RMSprop(1e-4) and binary cross-entropy, accuracy as metric.
    `augment` is a Keras layer/model applied to training batches only (see augmentation_layers).
    With `checkpoint` (a path ending in .keras) the best model by validation accuracy is saved
    there and a small JSON state beside it records epochs done, the history and the data
    (`data_root`'s folder name and image counts, see cnnvis.checkpoints); with resume=True a
    later call on the same data loads that checkpoint and continues from the next epoch (or,
    when all `epochs` are done, returns the stored history without training). A checkpoint of
    other data is never resumed: it is renamed to name__<its data>.keras and training starts
    afresh, with one line saying so. A model computing in mixed_float16 gets its optimizer
    wrapped in a LossScaleOptimizer, so small float16 gradients do not vanish.
    """
    keras = _keras()
    tf = _tensorflow()

    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}.")
    record = dataset_record(data_root)
    state = {"epochs_done": 0, "history": {}, **record}
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if checkpoint.suffix != ".keras":
            raise ValueError(f"checkpoint must be a .keras file path, got {checkpoint}.")
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        state_path = checkpoint.with_suffix(".json")
        saved = (read_state(checkpoint) or {}) if checkpoint.exists() else None
        if resume and saved is not None and not ("epochs_done" in saved and same_data(saved, record)):
            moved = set_aside(checkpoint, saved)
            print(f"{checkpoint.name} was trained on {saved.get('dataset') or 'unrecorded data'}, not on "
                  f"{record['dataset'] or 'this data'}: kept it as {moved.name} and training afresh.")
        elif resume and saved is not None:
            state = saved
            model.set_weights(keras.models.load_model(checkpoint).get_weights())
            if state["epochs_done"] >= epochs:
                return _history_from_state(state)
    if augment is not None:
        train_ds = train_ds.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    mixed = any(getattr(layer.dtype_policy, "name", "") == "mixed_float16" for layer in model.layers)
    with model.distribute_strategy.scope():
        optimizer = optimizer or keras.optimizers.RMSprop(learning_rate)
        if mixed and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    callbacks = []
    if checkpoint is not None:
        best = max(state["history"].get("val_accuracy", [float("-inf")]))
        saver = keras.callbacks.ModelCheckpoint(checkpoint, monitor="val_accuracy", save_best_only=True,
                                                initial_value_threshold=best if best > float("-inf") else None)

        def record(epoch, logs):
            for key, value in logs.items():
                state["history"].setdefault(key, []).append(float(value))
            state["epochs_done"] = epoch + 1
            state_path.write_text(json.dumps(state))

        callbacks = [saver, keras.callbacks.LambdaCallback(on_epoch_end=record)]
    start = state["epochs_done"]
    fitted = model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=start,
                       callbacks=callbacks, verbose=verbose, shuffle=False)  # the dataset reshuffles itself
    if checkpoint is None:
        return fitted
    return _history_from_state(state)


def checkpoint_path(name: str = "mini_vgg", paths=None, dataset=None) -> Path:
    """The .keras checkpoint path for `name` in the models folder: name_<dataset folder name>.keras
    when `dataset` (a data root) is given, so models of different data never share a file; quick
    mode adds _quick, so a CI-sized run never resumes from, or overwrites, a full one."""
    paths = paths or project_paths()
    data = f"_{Path(dataset).name}" if dataset is not None else ""
    return paths.models / f"{name}{data}{'_quick' if quick_mode() else ''}.keras"


def trained_mini_vgg(paths=None, epochs: int | None = None, dataset: str = "auto", head: str = "flatten"):
    """Return (model, class_names, dataset_root): notebook 01's best mini-VGG for the data that
    find_dataset(kind=dataset) picks, or -- when there is none for that data -- one trained now
    (12 epochs, 10 in quick mode; progress shown). head="gap": the global-average-pooling variant
    (build_mini_vgg), in its own checkpoint, trained with Adam(1e-3). Prints one line: which checkpoint, trained on what,
    for how many epochs."""
    paths = paths or project_paths()
    root, _ = find_dataset(paths, kind=dataset)
    checkpoint = checkpoint_path("mini_vgg" if head == "flatten" else f"mini_vgg_{head}", paths, dataset=root)
    train_ds, val_ds, classes = load_image_folders(root)
    state = read_state(checkpoint) if checkpoint.exists() else None
    if state is None or not same_data(state, dataset_record(root)):
        n = epochs or quick_or_full(10, 12)
        which = "mini-VGG" if head == "flatten" else f"mini-VGG with the {head} head"
        print(f"No {which} trained on {root.name} yet (notebook 01 trains one): training it now, {n} epochs.")
        # the GAP head learns nothing in 10 epochs at RMSprop(1e-4) (measured: stuck at 0.50); Adam(1e-3) trains it
        optimizer = _keras().optimizers.Adam(1e-3) if head == "gap" else None
        train(build_mini_vgg(head=head), train_ds, val_ds, epochs=n, checkpoint=checkpoint, data_root=root, verbose=2,
              optimizer=optimizer)
    print(describe_checkpoint(checkpoint))
    return load_checkpoint(checkpoint), classes, root


def load_checkpoint(path):
    """Load a model saved by train() (a .keras file); a missing or wrong file gets a clear error."""
    keras = _keras()

    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"{path} is not a .keras checkpoint; train() saves models as name.keras.")
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}: run the training cell of notebook 01 first "
                                "(or helpers.trained_mini_vgg(), which trains one when it is missing).")
    return keras.models.load_model(path)


def plot_history(history, title: str = "Training curves"):
    """Plot accuracy and loss per epoch (training and validation); return the figure."""
    values = history.history
    epochs = np.arange(1, len(values["loss"]) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, metric in zip(axes, ("accuracy", "loss")):
        ax.plot(epochs, values[metric], "o-", label="training")
        if f"val_{metric}" in values:
            ax.plot(epochs, values[f"val_{metric}"], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def predict_dataset(model, dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run `model` over a labelled dataset; return (images uint8 (N, H, W, 3), labels int (N,),
    probabilities float32 (N,) of the positive class)."""
    images, labels, probs = [], [], []
    for x, y in dataset:
        images.append(np.asarray(x).astype(np.uint8))
        labels.append(np.asarray(y).reshape(-1).astype(int))
        probs.append(np.asarray(model(x, training=False), dtype=np.float32).reshape(-1))
    return np.concatenate(images), np.concatenate(labels), np.concatenate(probs)


def plot_predictions(images, probs, class_names, labels=None, titles=None, per_row: int = 6):
    """Show images with the predicted class and its probability; wrong ones titled in red.

    images: (N, H, W, 3) in [0, 255]; probs: (N,) probability of class_names[1]; labels: the
    true class indices (N,) or None when unknown.
    """
    n = len(images)
    if n == 0:
        raise ValueError("plot_predictions got no images.")
    rows = int(np.ceil(n / per_row))
    fig, axes = plt.subplots(rows, per_row, figsize=(2.2 * per_row, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:n]):
        predicted = int(probs[i] >= 0.5)
        confidence = probs[i] if predicted else 1 - probs[i]
        ax.imshow(np.clip(images[i], 0, 255).astype(np.uint8))
        text = f"{class_names[predicted]} {confidence:.0%}"
        if titles is not None:
            text = f"{titles[i]}\n{text}"
        wrong = labels is not None and labels[i] is not None and int(labels[i]) != predicted
        ax.set_title(text, fontsize=9, color="red" if wrong else "black")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------
# 4. Activations and tiling
# ---------------------------------------------------------------------------

APPLICATIONS = {  # name -> (keras.applications constructor name, preprocessing mode, default input size)
    "resnet50": ("ResNet50", "caffe", 224),
    "densenet169": ("DenseNet169", "torch", 224),
}


def _preprocess_layer_class():
    """The ImageNet preprocessing layer class, registered for .keras saving (created lazily: Keras import)."""
    keras = _keras()

    @keras.saving.register_keras_serializable(package="cnn_vis")
    class ImagenetPreprocess(keras.layers.Layer):
        """Raw RGB pixels (0-255) -> the input a keras.applications ImageNet model expects."""

        def __init__(self, mode: str, **kwargs):
            super().__init__(**kwargs)
            self.mode = mode

        def call(self, x):
            return keras.applications.imagenet_utils.preprocess_input(x, mode=self.mode)

        def get_config(self):
            return {**super().get_config(), "mode": self.mode}

    return ImagenetPreprocess


def load_pretrained(name: str = "resnet50", include_top: bool = True, weights="imagenet", input_shape=None):
    """A keras.applications model that takes raw RGB pixels (0-255): ImageNet preprocessing is its
    first layer, so activations, patterns and Grad-CAM need no manual scaling.

    name: "resnet50" or "densenet169". weights: "imagenet" (downloaded once to ~/.keras/models),
    a path to a local or Drive .h5/.weights.h5 file, or None for random weights. When ImageNet
    weights cannot be downloaded (offline), prints one banner line and returns the same
    architecture with random weights; the model's `pretrained` attribute says which happened.
    Layer names are Keras 3's (conv2_block1_1_conv), the same as without the preprocessing layer.
    """
    keras = _keras()

    if name not in APPLICATIONS:
        raise ValueError(f"Unknown pretrained model {name!r}; choose one of {sorted(APPLICATIONS)}.")
    constructor_name, mode, size = APPLICATIONS[name]
    constructor = getattr(keras.applications, constructor_name)
    shape = tuple(input_shape) if input_shape else ((size, size, 3) if include_top else (None, None, 3))
    inputs = keras.Input(shape, name="image")
    x = _preprocess_layer_class()(mode, name="imagenet_preprocess")(inputs)
    local_file = None
    if weights not in (None, "imagenet"):
        local_file = Path(weights)
        if not local_file.is_file():
            raise FileNotFoundError(f"Weights file {local_file} not found; pass weights='imagenet', None, or an "
                                    f"existing .h5 file (e.g. on Drive under {project_paths(create=False).models}).")
    pretrained = weights is not None
    try:
        model = constructor(weights="imagenet" if weights == "imagenet" else None, include_top=include_top, input_tensor=x)
    except Exception as exc:  # offline: urllib/HTTP errors surface with various types
        if weights != "imagenet":
            raise
        print(f"OFFLINE: ImageNet weights for {constructor_name} could not be downloaded ({type(exc).__name__}); "
              "using RANDOM weights -- the figures show the method, not what a trained network sees.")
        keras.utils.set_random_seed(0)  # the same random network on every run
        model = constructor(weights=None, include_top=include_top, input_tensor=x)
        pretrained = False
    if local_file is not None:
        model.load_weights(local_file, skip_mismatch=False)
    # rebuilt on the single input tensor (the application's input is a one-element list, and Keras
    # warns on every call with a plain tensor); layers and weights are the same objects
    model = keras.Model(inputs, model.output, name=model.name)
    model.pretrained = pretrained
    return model


_KERAS2_RESNET = {"branch2a": "1", "branch2b": "2", "branch2c": "3", "branch1": "0"}


def keras3_resnet_name(old: str) -> str | None:
    """Map a Keras 2 ResNet50 layer name to its Keras 3 name, or None if it is not one.

    conv1 -> conv1_conv, bn_conv1 -> conv1_bn, res2a_branch2a -> conv2_block1_1_conv,
    bn2a_branch2b -> conv2_block1_2_bn, res4e_branch2c -> conv4_block5_3_conv.
    """
    import re  # noqa: PLC0415

    if old == "conv1":
        return "conv1_conv"
    if old == "bn_conv1":
        return "conv1_bn"
    match = re.fullmatch(r"(res|bn)([2-5])([a-f])_(branch2[abc]|branch1)", old)
    if not match:
        return None
    kind, stage, block, branch = match.groups()
    return f"conv{stage}_block{ord(block) - ord('a') + 1}_{_KERAS2_RESNET[branch]}_{'conv' if kind == 'res' else 'bn'}"


def _all_layers(model, owner=None) -> list[tuple[object, object]]:
    """(layer, the model it belongs to) for every layer, nested sub-models searched depth first."""
    found = []
    for layer in model.layers:
        found.append((layer, owner or model))
        if hasattr(layer, "layers") and layer.layers:
            found += _all_layers(layer, layer)
    return found


def _spatial(layer) -> bool:
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError):
        return False
    return len(shape) == 4


def layer_names(model, kind: str = "all") -> list[str]:
    """Layer names in order, nested sub-models included (after the sub-model's own name).

    kind: "all"; "conv" (Conv2D and its variants); "spatial" (a 4-D (N, H, W, C) output).
    """
    keras = _keras()

    if kind not in ("all", "conv", "spatial"):
        raise ValueError(f"kind must be 'all', 'conv' or 'spatial', got {kind!r}.")
    result = []
    for layer, _ in _all_layers(model):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if kind == "conv" and not isinstance(layer, keras.layers.Conv2D):
            continue
        if kind == "spatial" and (not _spatial(layer) or hasattr(layer, "layers")):
            continue
        result.append(layer.name)
    return result


def find_layer(model, name: str):
    """Return (layer, owner model) for `name`, searching nested sub-models.

    Unknown names raise ValueError listing the closest real names; Keras 2 ResNet50 names
    (bn2a_branch2b, res2a_branch2a, ...) are explained with their Keras 3 equivalent.
    """
    import difflib  # noqa: PLC0415

    pairs = _all_layers(model)
    for layer, owner in pairs:
        if layer.name == name:
            return layer, owner
    new = keras3_resnet_name(name)
    if new is not None:
        raise ValueError(f"{name!r} is a Keras 2 ResNet50 layer name. Keras 3 names ResNet layers "
                         f"conv<stage>_block<n>_<i>_<conv|bn>: use {new!r}.")
    names = [layer.name for layer, _ in pairs]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
    hint = f"closest: {', '.join(close)}" if close else f"layers are: {', '.join(names[:12])}{' ...' if len(names) > 12 else ''}"
    raise ValueError(f"No layer named {name!r} in model {model.name!r}; {hint}.")


def _model_input(model):
    """The model's symbolic input, or a clear error for an unbuilt Sequential."""
    try:
        inputs = model.inputs
    except AttributeError:
        inputs = None
    if not inputs:
        raise ValueError(f"Model {model.name!r} has not been built, so its input shape is unknown: call it on a "
                         "batch of images, build(input_shape), or start it with keras.Input(shape).")
    if len(inputs) != 1:
        raise ValueError(f"Model {model.name!r} has {len(inputs)} inputs; only single-image-input models are supported.")
    return inputs[0]


def _multi_output(model, names: list[str]):
    """A model from `model`'s input to [model's own output, *outputs of `names`] (names may be
    nested); returns (that model, whether it was rebuilt by replaying the layer chain)."""
    keras = _keras()

    inp = _model_input(model)
    top = {layer.name for layer in model.layers}
    if not isinstance(model, keras.Sequential) and all(n in top for n in names):
        try:
            return keras.Model(inp, [model.outputs[0]] + [model.get_layer(n).output for n in names]), False
        except ValueError:  # a layer shared with another model: its .output belongs to that graph
            pass
    # Sequential models, layers inside a sub-model (whose tensors are not connected to this
    # model's input) and shared layers: replay this model's layer chain on a fresh input,
    # swapping each sub-model that holds wanted layers for a multi-output copy of itself.
    fresh = keras.Input(inp.shape[1:], name="image")
    x, found = fresh, {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        inner = [n for n in names if n not in top and hasattr(layer, "layers")
                 and any(l.name == n for l, _ in _all_layers(layer))]
        if inner:
            outputs = _multi_output(layer, inner)[0](x)
            x = outputs[0]
            found.update(zip(inner, outputs[1:]))
        else:
            x = layer(x)
        if layer.name in names:
            found[layer.name] = x
    return keras.Model(fresh, [x] + [found[n] for n in names]), True


def activation_model(model, names):
    """A Keras model from `model`'s input to the outputs of the layers `names` (one forward pass).

    Works for functional models, Sequential models (with or without an Input, once built or
    trained), models loaded from .keras, and layers inside nested sub-models (a pretrained base
    inside a Sequential). When a nested layer forces a replay of a model that is not a simple
    chain of layers, the replayed model is checked against the original and a clear error raised.
    """
    keras = _keras()

    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ValueError("activation_model needs at least one layer name.")
    for name in names:
        find_layer(model, name)
    multi, replayed = _multi_output(model, names)
    if replayed and not isinstance(model, keras.Sequential):
        probe = np.random.default_rng(0).uniform(0, 255, (1, *multi.input_shape[1:])).astype("float32")
        if None not in multi.input_shape[1:] and not np.allclose(multi(probe)[0], model(probe, training=False),
                                                                 rtol=1e-3, atol=1e-4):
            raise ValueError(f"Model {model.name!r} is not a plain chain of layers around its sub-model, so nested "
                             "layers cannot be reached; build the activation model from the sub-model itself.")
    outputs = multi.outputs[1:]
    return keras.Model(multi.inputs[0], outputs if len(outputs) > 1 else outputs[0], name="activations")


def _cached(cache: dict, model, key: tuple, build, size: int = 16):
    """Memoise build() per (model, key). The entry keeps the model itself alive, so its id() can
    never be reused by another model while cached; the least recently used entries are dropped."""
    full_key = (id(model), *key)
    if full_key in cache and cache[full_key][0] is model:
        cache[full_key] = cache.pop(full_key)  # most recently used last
    else:
        cache[full_key] = (model, build())
        while len(cache) > size:
            cache.pop(next(iter(cache)))
    return cache[full_key][1]


def _as_batch(images) -> tuple[np.ndarray, bool]:
    array = np.asarray(images, dtype=np.float32)
    if array.ndim == 3:
        return array[None], True
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"Expected one image (H, W, 3) or a batch (N, H, W, 3) of raw RGB pixels; got shape {array.shape}.")
    return array, False


def get_activations(model, images, names) -> dict[str, np.ndarray]:
    """{layer name: activations} for one image (H, W, 3) or a batch (N, H, W, 3) of raw pixels,
    all layers in one forward pass. Arrays are float32 with the batch axis (N, ...) for a batch
    and without it for a single image."""
    names = [names] if isinstance(names, str) else list(names)
    batch, single = _as_batch(images)
    expected = _model_input(model).shape[1:]
    if any(e is not None and e != a for e, a in zip(expected, batch.shape[1:])):
        raise ValueError(f"Model {model.name!r} expects images of shape {tuple(expected)}, got {batch.shape[1:]}; "
                         "resize with load_image(path, size=...).")
    outputs = activation_model(model, names)(batch, training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return {n: (np.asarray(o, dtype=np.float32)[0] if single else np.asarray(o, dtype=np.float32))
            for n, o in zip(names, outputs)}


def _feature_map(fmap) -> np.ndarray:
    """Validate a feature map (H, W, C) or (1, H, W, C) and return it as float32 (H, W, C)."""
    array = np.asarray(fmap)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise ValueError(f"Expected a spatial feature map (H, W, C) or (1, H, W, C); got shape {array.shape}. "
                         "Dense and Flatten outputs have no spatial layout: pick a layer from "
                         "layer_names(model, kind='spatial'); for a batch, pass one image's map.")
    return array.astype(np.float32, copy=False)


def normalise_channels(fmap) -> np.ndarray:
    """The seeds' display normalisation, per channel: (x - mean) / std * 64 + 128, clipped, uint8.

    fmap: (H, W, C) or (1, H, W, C); returns uint8 (H, W, C). A constant (dead) channel becomes
    flat mid-grey 128 -- never NaN, never a warning.
    """
    x = _feature_map(fmap)
    flat = x.reshape(-1, x.shape[-1])
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    # one fused affine map per channel, x * gain + offset, instead of four full-size passes
    gain = np.divide(np.float32(64), std, out=np.zeros_like(std), where=std > 1e-12)
    out = x * gain
    out += 128 - mean * gain
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def tile_strip(fmap) -> np.ndarray:
    """Seed 000's first method: all channels side by side, uint8 (H, W * C)."""
    x = normalise_channels(fmap)
    height, width, channels = x.shape
    return x.transpose(0, 2, 1).reshape(height, channels * width)


def tile_channels(fmap, per_row: int = 16, margin: int = 0) -> np.ndarray:
    """The seeds' second method: channels in a grid `per_row` wide, uint8
    (rows * H + (rows - 1) * margin, per_row * W + (per_row - 1) * margin), rows = ceil(C / per_row).

    Any channel count: the last row is padded with black cells (the seeds' C // per_row dropped
    the remainder). Margins are black.
    """
    if per_row < 1 or margin < 0:
        raise ValueError(f"per_row must be >= 1 and margin >= 0, got per_row={per_row}, margin={margin}.")
    x = normalise_channels(fmap)
    height, width, channels = x.shape
    per_row = min(per_row, channels)
    rows = -(-channels // per_row)
    cells = np.zeros((height + margin, width + margin, rows * per_row), np.uint8)
    cells[:height, :width, :channels] = x
    grid = cells.reshape(height + margin, width + margin, rows, per_row).transpose(2, 0, 3, 1)
    grid = grid.reshape(rows * (height + margin), per_row * (width + margin))
    return grid[: grid.shape[0] - margin, : grid.shape[1] - margin]


def plot_layer_activations(fmap, layer_name: str, method: str = "grid", cmap: str = "viridis",
                           per_row: int = 16, max_channels: int | None = 128, save_as: str | None = None):
    """Figure of one layer's feature map, tiled by `method` ("grid" or "strip"), coloured with the
    matplotlib colormap named `cmap` (the seeds used viridis and plasma). Only the first
    `max_channels` channels are drawn (None: all; the title says how many). The figure size
    follows the grid (about one inch per channel tile, at most 20 inches wide); with `save_as`
    the figure is also written through save_figure. Returns the figure."""
    if method not in ("grid", "strip"):
        raise ValueError(f"method must be 'grid' or 'strip', got {method!r}.")
    colormap = matplotlib.colormaps[cmap]
    full = _feature_map(fmap)
    x = full[..., :max_channels] if max_channels else full
    image = tile_channels(x, per_row=per_row, margin=max(1, x.shape[0] // 16)) if method == "grid" else tile_strip(x)
    tile = x.shape[0]
    width = min(20.0, max(4.0, image.shape[1] / tile * (1.0 if method == "grid" else 0.6)))
    height = max(1.5, width * image.shape[0] / image.shape[1]) + 0.5
    fig, ax = plt.subplots(figsize=(width, height))
    ax.imshow(image, cmap=colormap, aspect="auto" if method == "strip" else "equal", interpolation="nearest")
    shown = f"first {x.shape[2]} of {full.shape[2]}" if x.shape[2] < full.shape[2] else str(full.shape[2])
    ax.set_title(f"{layer_name}  {x.shape[0]}x{x.shape[1]}, {shown} channels")
    ax.axis("off")
    fig.tight_layout()
    if save_as:
        save_figure(fig, save_as)
    return fig


def plot_channel(fmap, channel: int, layer_name: str = "", cmap: str = "viridis"):
    """One channel of a feature map, large (the seeds' matshow); returns the figure."""
    x = _feature_map(fmap)
    if not 0 <= channel < x.shape[-1]:
        raise ValueError(f"channel {channel} is out of range: this map has channels 0..{x.shape[-1] - 1}.")
    fig, ax = plt.subplots(figsize=(4, 4 * x.shape[0] / x.shape[1]))
    ax.matshow(x[..., channel], cmap=matplotlib.colormaps[cmap])
    ax.set_title(f"{layer_name} channel {channel}".strip())
    ax.axis("off")
    return fig


def layer_statistics(model, images, names=None) -> list[dict]:
    """Per layer: {"name", "depth" (position in `names`), "shape", "zero_fraction" (share of
    activations exactly 0), "dead_channels" (channels that are 0 at every position of every
    image), "channels"}. `names` defaults to every spatial layer; images are raw pixels."""
    names = list(names) if names is not None else layer_names(model, kind="spatial")
    batch, _ = _as_batch(images)
    acts = get_activations(model, batch, names)
    stats = []
    for depth, name in enumerate(names):
        a = acts[name]
        if a.ndim != 4:
            raise ValueError(f"Layer {name!r} has output shape {a.shape[1:]}, not a spatial (H, W, C) map.")
        stats.append({"name": name, "depth": depth, "shape": a.shape[1:], "zero_fraction": float((a == 0).mean()),
                      "dead_channels": int((np.abs(a).max(axis=(0, 1, 2)) == 0).sum()), "channels": a.shape[-1]})
    return stats


def plot_sparsity(stats_by_model: dict[str, list[dict]]):
    """Zero fraction and share of dead channels against relative depth, one line per model."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for label, stats in stats_by_model.items():
        depth = np.linspace(0, 1, len(stats))
        axes[0].plot(depth, [s["zero_fraction"] for s in stats], "o-", ms=3, label=label)
        axes[1].plot(depth, [s["dead_channels"] / s["channels"] for s in stats], "o-", ms=3, label=label)
    for ax, title in zip(axes, ("fraction of zero activations", "fraction of dead channels")):
        ax.set_xlabel("relative depth (first to last layer measured)")
        ax.set_title(title)
        ax.set_ylim(-0.02, 1.02)
        ax.legend()
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------
# 5. Filter patterns
# ---------------------------------------------------------------------------

# Lucid's colour decorrelation: square root of the ImageNet colour covariance (rows: RGB).
_COLOR_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32)
_COLOR_SQRT /= np.max(np.linalg.norm(_COLOR_SQRT, axis=0))

REGULARISED_DEFAULTS = {"steps": 128, "learning_rate": 0.05, "pad": 12, "jitter": 8, "late_jitter": 4,
                        "scales": tuple(1 + (i - 5) / 50 for i in range(11)), "max_rotation": 10.0}


def _replay_to(model, layer_name: str, input_shape):
    """Rebuild a plain chain of layers up to `layer_name` on a new Input of `input_shape`."""
    keras = _keras()

    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        x = layer(x)
        if layer.name == layer_name:
            return keras.Model(inputs, x)
    raise ValueError(f"Layer {layer_name!r} is not a top-level layer of {model.name!r}.")


def truncated_model(model, layer_name: str, size: int):
    """A model from raw (size, size, 3) images to `layer_name`'s output (N, h, w, C).

    Models with a flexible input (e.g. load_pretrained(..., include_top=False)) or of exactly this
    input size are cut directly; a fixed-size plain chain (the mini-VGG) is replayed on the new
    size. Raises ValueError for a layer without spatial output or a size too small for the layer.
    """
    keras = _keras()

    layer, _ = find_layer(model, layer_name)
    if not _spatial(layer):
        raise ValueError(f"Layer {layer_name!r} has output shape {tuple(layer.output.shape)}: filter patterns need a "
                         "spatial (N, H, W, C) layer; pick one from layer_names(model, kind='spatial').")
    too_small = ValueError(f"size={size} is too small for layer {layer_name!r}: its output would be empty; "
                           "try size=64 or larger.")
    expected = tuple(_model_input(model).shape[1:3])
    try:
        if expected in ((None, None), (size, size)):
            inner = activation_model(model, layer_name)
            inputs = keras.Input((size, size, 3), name="image")
            cut = keras.Model(inputs, inner(inputs))
        else:
            cut = _replay_to(model, layer_name, (size, size, 3))
    except ValueError as exc:  # Keras reports an empty output as a negative dimension
        if "too small" in str(exc) or "negative" in str(exc).lower() or "must be" in str(exc):
            raise too_small from None
        raise
    if any(d is not None and d < 1 for d in cut.output.shape[1:3]):
        raise too_small
    return cut


def _bytes_per_image(cut) -> int:
    """Rough training-memory footprint of one image through `cut`: twice (value and gradient) the
    float32 size of every 4-D tensor in the traced forward graph for one image."""
    tf = _tensorflow()

    graph = tf.function(lambda x: cut(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, *cut.inputs[0].shape[1:]], tf.float32)).graph
    elements = sum(int(np.prod(t.shape)) for op in graph.get_operations() for t in op.outputs
                   if t.shape.rank == 4 and t.shape.is_fully_defined() and t.dtype.is_floating)
    return max(1, 2 * 4 * elements)


def deprocess_pattern(x) -> np.ndarray:
    """Seed 001's deprocess_image, per image: centre, std 0.1, +0.5, clip to [0, 1], x255, uint8.

    x: float (H, W, 3) or (N, H, W, 3); returns uint8 of the same shape.
    """
    x = np.asarray(x, np.float32)
    axes = tuple(range(x.ndim - 3, x.ndim))
    x = x - x.mean(axis=axes, keepdims=True)
    x = x / (x.std(axis=axes, keepdims=True) + 1e-5) * 0.1 + 0.5
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


def _filter_means(cut, images, filters):
    """Mean activation of filters[i] over the spatial positions of image i: (N,)."""
    tf = _tensorflow()

    acts = tf.cast(cut(images, training=False), tf.float32)
    return tf.reduce_mean(tf.gather(acts, filters, axis=3, batch_dims=1), axis=(1, 2))


def _plain_ascent_fn(cut, size):
    """Seed 001's gradient ascent, batched and compiled once: batch size, filter indices, steps
    and step size are all tensors of the signature, so no call ever retraces."""
    tf = _tensorflow()

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32), tf.TensorSpec([None], tf.int32),
                                  tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.float32)])
    def ascend(images, filters, steps, step_size):
        for _ in tf.range(steps):
            with tf.GradientTape() as tape:
                tape.watch(images)
                loss = tf.reduce_sum(_filter_means(cut, images, filters))
            grads = tape.gradient(loss, images)
            grads /= tf.sqrt(tf.reduce_mean(tf.square(grads), axis=(1, 2, 3), keepdims=True)) + 1e-5
            images = images + step_size * grads
        return images

    return ascend


def _fourier_scale(size: int) -> np.ndarray:
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    # 1/f spectrum (natural-image statistics), times sqrt(h * w) to undo irfft2d's normalisation
    return (size / np.maximum(np.sqrt(fx**2 + fy**2), 1.0 / size)).astype(np.float32)


def _param_to_image(spectrum, scale):
    """Fourier parameters (N, 3, size, size//2+1, 2) -> decorrelated colour image in [0, 1], (N, size, size, 3)."""
    tf = _tensorflow()

    size = spectrum.shape[2]
    complex_spec = tf.complex(spectrum[..., 0], spectrum[..., 1]) * tf.cast(scale, tf.complex64)
    spatial = tf.signal.irfft2d(complex_spec, fft_length=[size, size]) / 4.0
    spatial = tf.transpose(spatial, (0, 2, 3, 1))
    return tf.sigmoid(tf.einsum("nhwc,dc->nhwd", spatial, _COLOR_SQRT))


def _random_transform(images, seed, step, settings):
    """Lucid's standard transformation robustness on raw pixels (N, size, size, 3) in [0, 255], the
    same draw for every image of the batch (so a filter's result does not depend on its batch):
    pad with mid-grey, jitter, scale and rotate about the centre, jitter again, then the centre
    crop of the original size. Every random offset is uniform and symmetric, so on average the
    objective sees the whole image, centred, and padding shows equally on every side."""
    tf = _tensorflow()

    def draw(i, shape, low, high, dtype=tf.float32):
        return tf.random.stateless_uniform(shape, seed=tf.stack([seed, step * 8 + i]), minval=low, maxval=high, dtype=dtype)

    def jitter(x, amount, i):  # a random crop `amount` pixels smaller, offset uniform in [0, amount]
        offsets = draw(i, [2], 0, amount + 1, tf.int32)
        size = tf.shape(x)[1] - amount
        return x[:, offsets[0]:offsets[0] + size, offsets[1]:offsets[1] + size, :]

    size = tf.shape(images)[1]
    pad = settings["pad"]
    x = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], constant_values=127.5)
    x = jitter(x, settings["jitter"], 0)
    scale = tf.gather(tf.constant(settings["scales"], tf.float32), draw(1, [], 0, len(settings["scales"]), tf.int32))
    angle = draw(2, [], -settings["max_rotation"], settings["max_rotation"]) * np.pi / 180
    # output pixel p samples input (R(angle) p) / scale about the centre c: a zoom by `scale`, then a rotation
    n = tf.cast(tf.shape(x)[1], tf.float32)
    c = (n - 1) / 2
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    transform = tf.stack([cos, -sin, c - cos * c + sin * c, sin, cos, c - sin * c - cos * c, 0.0, 0.0])
    x = tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=tf.tile(transform[None], [tf.shape(x)[0], 1]), output_shape=tf.shape(x)[1:3],
        fill_value=127.5, interpolation="BILINEAR", fill_mode="CONSTANT")
    x = jitter(x, settings["late_jitter"], 3)
    start = (tf.shape(x)[1] - size) // 2
    return x[:, start:start + size, start:start + size, :]


def _regularised_ascent_fn(cut, size, settings):
    """Lucid-style optimisation: Fourier parameters, colour decorrelation, transformation
    robustness and Adam, compiled once; returns (final images in [0, 255], (N, size, size, 3))."""
    tf = _tensorflow()

    scale = _fourier_scale(size)
    lr = settings["learning_rate"]

    @tf.function(input_signature=[tf.TensorSpec([None, 3, size, size // 2 + 1, 2], tf.float32),
                                  tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)])
    def ascend(spectrum, filters, steps, seed):
        m = tf.zeros_like(spectrum)
        v = tf.zeros_like(spectrum)
        for step in tf.range(steps):
            with tf.GradientTape() as tape:
                tape.watch(spectrum)
                image = _param_to_image(spectrum, scale) * 255.0
                seen = _random_transform(image, seed, step, settings)
                loss = -tf.reduce_sum(_filter_means(cut, seen, filters))
            grads = tape.gradient(loss, spectrum)
            t = tf.cast(step + 1, tf.float32)
            m = 0.9 * m + 0.1 * grads
            v = 0.999 * v + 0.001 * tf.square(grads)
            spectrum = spectrum - lr * (m / (1 - 0.9**t)) / (tf.sqrt(v / (1 - 0.999**t)) + 1e-8)
        return _param_to_image(spectrum, scale) * 255.0

    return ascend


_ASCENT_CACHE: dict = {}


class _QuietRetracing:
    """Silence TensorFlow's "N of the last M calls triggered retracing" warning: it counts traces
    across the separate compiled functions made for each (model, layer), which is expected here,
    and it would put a changing memory address into notebook outputs."""

    def __enter__(self):
        tf = _tensorflow()

        self.logger = tf.get_logger()
        self.level = self.logger.level
        self.logger.setLevel("ERROR")

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)


def filter_patterns(model, layer_name: str, filters, size: int = 64, steps: int | None = None,
                    step_size: float = 1.0, seed: int = 0, mode: str = "plain", memory_budget_mb: float = 2048,
                    progress: bool = True, return_gains: bool = False):
    """Images that maximise the mean activation of each filter of `layer_name`.

    filters: int or list of channel indices. Returns uint8 (n, size, size, 3); with
    return_gains=True also {"before": (n,), "after": (n,)}: each filter's mean activation on the
    starting image and on the final (undeprocessed) image.

    mode="plain" reproduces seed 001 in Keras 3: start from grey 128 + uniform noise in [0, 20),
    add step_size x gradient / RMS(gradient) for `steps` steps (default 40), then deprocess_pattern.
    mode="regularised" follows Lucid: Fourier parameterisation with colour decorrelation,
    transformation robustness (pad, jitter, scale, rotation) and Adam; defaults in
    REGULARISED_DEFAULTS (128 steps: Lucid used 512 at 128 px, which takes minutes per layer on a
    CPU). All filters are optimised together in one compiled step, chunked to stay within
    `memory_budget_mb`; each filter's start depends only on (seed, filter), so a filter gives
    the same image alone or in a batch. progress: True for a Keras progress bar over chunks,
    False for none, or a callable(done_chunks, total_chunks).
    """
    tf = _tensorflow()
    keras = _keras()

    if mode not in ("plain", "regularised"):
        raise ValueError(f"mode must be 'plain' or 'regularised', got {mode!r}.")
    filters = [int(f) for f in np.atleast_1d(filters)]
    if not filters:
        raise ValueError("filters is empty: pass one filter index or a list of them.")
    steps = steps if steps is not None else (40 if mode == "plain" else REGULARISED_DEFAULTS["steps"])
    def build():
        cut = truncated_model(model, layer_name, size)
        builder = _plain_ascent_fn(cut, size) if mode == "plain" else _regularised_ascent_fn(cut, size, REGULARISED_DEFAULTS)
        return cut, builder, _bytes_per_image(cut)

    cut, ascend, per_image = _cached(_ASCENT_CACHE, model, (layer_name, size, mode), build)
    channels = cut.output.shape[-1]
    bad = [f for f in filters if not 0 <= f < channels]
    if bad:
        raise ValueError(f"Filter index {bad[0]} is out of range: layer {layer_name!r} has filters 0..{channels - 1}.")
    chunk = max(1, int(memory_budget_mb * 2**20 // per_image))
    chunks = [filters[i:i + chunk] for i in range(0, len(filters), chunk)]
    if callable(progress):
        bar = SimpleNamespace(update=lambda done: progress(done, len(chunks)))
    else:
        bar = keras.utils.Progbar(len(chunks), unit_name="chunk") if progress and len(chunks) > 1 else None
    images, before, after = [], [], []
    for index, part in enumerate(chunks):
        ids = tf.constant(part, tf.int32)
        if mode == "plain":
            start = np.stack([np.random.default_rng([seed, f]).random((size, size, 3)) * 20 + 128 for f in part])
            start = tf.constant(start, tf.float32)
            with _QuietRetracing():
                final = ascend(start, ids, tf.constant(steps), tf.constant(step_size, tf.float32))
        else:
            spectrum = np.stack([np.random.default_rng([seed, f]).normal(0, 0.01, (3, size, size // 2 + 1, 2))
                                 for f in part])
            start = _param_to_image(tf.constant(spectrum, tf.float32), _fourier_scale(size)) * 255.0
            with _QuietRetracing():
                final = ascend(tf.constant(spectrum, tf.float32), ids, tf.constant(steps), tf.constant(seed))
        before.append(_filter_means(cut, start, ids).numpy())
        after.append(_filter_means(cut, final, ids).numpy())
        images.append(deprocess_pattern(final.numpy()) if mode == "plain" else np.clip(final.numpy(), 0, 255).astype(np.uint8))
        if bar:
            bar.update(index + 1)
    patterns = np.concatenate(images)
    if return_gains:
        return patterns, {"before": np.concatenate(before), "after": np.concatenate(after)}
    return patterns


def pattern_grid(patterns, per_row: int = 8, margin: int = 5) -> np.ndarray:
    """Seed 001's grid: patterns (n, size, size, 3) uint8 in rows of `per_row`, black margins.

    Returns uint8 (rows * size + (rows - 1) * margin, per_row * size + (per_row - 1) * margin, 3);
    64 patterns of 64 px give the seed's 8x8 grid of 547 x 547 pixels.
    """
    patterns = np.asarray(patterns)
    if patterns.ndim != 4 or patterns.shape[-1] != 3 or len(patterns) == 0:
        raise ValueError(f"pattern_grid expects patterns of shape (n, size, size, 3); got {patterns.shape}.")
    n, height, width, _ = patterns.shape
    per_row = min(per_row, n)
    rows = -(-n // per_row)
    cells = np.zeros((rows * per_row, height + margin, width + margin, 3), np.uint8)
    cells[:n, :height, :width] = patterns
    grid = cells.reshape(rows, per_row, height + margin, width + margin, 3).transpose(0, 2, 1, 3, 4)
    grid = grid.reshape(rows * (height + margin), per_row * (width + margin), 3)
    return grid[: grid.shape[0] - margin, : grid.shape[1] - margin]


def frame_contrast(patterns, band: int = 8) -> np.ndarray:
    """Mean brightness of each pattern's outer `band` pixels minus that of its centre, in grey
    levels (n,): strongly negative for every pattern means a dark frame (padding the objective saw)."""
    x = np.asarray(patterns, np.float32).mean(axis=-1)
    border = np.zeros(x.shape[1:], bool)
    border[:band], border[-band:], border[:, :band], border[:, -band:] = True, True, True, True
    return x[:, border].mean(axis=1) - x[:, ~border].mean(axis=1)


def first_layer_kernels(model, layer_name: str | None = None) -> np.ndarray:
    """The first convolution's kernels as RGB tiles: uint8 (n_filters, k, k, 3), each kernel
    scaled on its own to 0-255 (a 3x3 kernel is a tiny picture of the colour edge it detects)."""
    keras = _keras()

    if layer_name is None:
        convs = layer_names(model, "conv")
        if not convs:
            raise ValueError(f"Model {model.name!r} has no Conv2D layer.")
        layer_name = convs[0]
    layer, _ = find_layer(model, layer_name)
    if not isinstance(layer, keras.layers.Conv2D) or layer.get_weights()[0].shape[2] != 3:
        raise ValueError(f"Layer {layer_name!r} is not a convolution on RGB input; pass the first Conv2D.")
    kernels = layer.get_weights()[0].transpose(3, 0, 1, 2)
    low = kernels.min(axis=(1, 2, 3), keepdims=True)
    span = kernels.max(axis=(1, 2, 3), keepdims=True) - low
    return (np.divide(kernels - low, span, out=np.full_like(kernels, 0.5), where=span > 0) * 255).astype(np.uint8)


def plot_patterns(patterns, title: str = "", per_row: int = 8, margin: int = 5, save_as: str | None = None):
    """Show pattern_grid(patterns) as one figure (saved through save_figure with `save_as`)."""
    grid = pattern_grid(patterns, per_row, margin)
    fig, ax = plt.subplots(figsize=(min(12, 1.3 * min(per_row, len(patterns))),) * 2)
    ax.imshow(grid, interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
    fig.tight_layout()
    if save_as:
        save_figure(fig, save_as)
    return fig


# ---------------------------------------------------------------------------
# 6. CAM and metrics
# ---------------------------------------------------------------------------

def _head(model):
    """(final Dense layer, name of the layer feeding it): class scores are recomputed from the
    Dense's kernel and bias, i.e. taken before its softmax/sigmoid, as the Grad-CAM paper asks.
    A trailing Activation or Softmax layer (softmax, sigmoid or linear; the Keras mixed-precision
    guide ends models with one) is looked through."""
    keras = _keras()

    def before(layer):
        if isinstance(model, keras.Sequential) or not hasattr(layer.input, "_keras_history"):
            return model.layers[model.layers.index(layer) - 1] if model.layers.index(layer) > 0 else None
        return layer.input._keras_history.operation

    last = model.layers[-1]
    if isinstance(last, keras.layers.Softmax) or (isinstance(last, keras.layers.Activation) and getattr(
            last.activation, "__name__", "") in ("softmax", "sigmoid", "linear")):
        last = before(last)
    if not isinstance(last, keras.layers.Dense):
        raise ValueError(f"Model {model.name!r} ends in {type(model.layers[-1]).__name__} {model.layers[-1].name!r}; "
                         "Grad-CAM here needs a final Dense classification layer (softmax, sigmoid or linear), "
                         "optionally followed by an Activation or Softmax layer.")
    feed = before(last)
    if feed is None or isinstance(feed, keras.layers.InputLayer):
        raise ValueError(f"Model {model.name!r} has no layers before its classifier.")
    return last, feed.name


def last_spatial_layer(model) -> str:
    """The last layer with a spatial (N, H, W, C) output before the head: Grad-CAM's default."""
    names = layer_names(model, kind="spatial")
    if not names:
        raise ValueError(f"Model {model.name!r} has no layer with a spatial output; Grad-CAM needs a convolutional part.")
    return names[-1]


def _check_cam_request(model, layer_name):
    layer_name = layer_name or last_spatial_layer(model)
    layer, _ = find_layer(model, layer_name)
    if not _spatial(layer) or hasattr(layer, "layers"):
        raise ValueError(f"Layer {layer_name!r} has output shape {tuple(layer.output.shape)}, not a spatial (N, H, W, C) "
                         f"map: it comes after the convolutional part. Use a layer up to {last_spatial_layer(model)!r}.")
    return layer_name


_CAM_CACHE: dict = {}


def _cam_function(model, layer_name):
    """Compiled (images, classes) -> (activations, gradients, logits, classes) for one model and
    layer, and the number of classes (2 for a single sigmoid)."""
    return _cached(_CAM_CACHE, model, (layer_name,), lambda: _build_cam_function(model, layer_name))


def _build_cam_function(model, layer_name):
    tf = _tensorflow()

    dense, feed = _head(model)
    inner = activation_model(model, [layer_name, feed])
    n_classes = dense.units
    shape = tuple(_model_input(model).shape[1:])

    @tf.function(input_signature=[tf.TensorSpec([None, *shape], tf.float32), tf.TensorSpec([None], tf.int32)])
    def run(images, classes):
        with tf.GradientTape() as tape:
            acts, feats = inner(images, training=False)
            tape.watch(acts)
            logits = tf.matmul(tf.cast(feats, tf.float32), tf.cast(dense.kernel, tf.float32)) + tf.cast(dense.bias, tf.float32)
            if n_classes == 1:  # single sigmoid: class 1 explains the logit, class 0 its negative
                predicted = tf.cast(logits[:, 0] > 0, tf.int32)
                classes = tf.where(classes < 0, predicted, classes)
                scores = tf.where(classes == 1, logits[:, 0], -logits[:, 0])
            else:
                classes = tf.where(classes < 0, tf.argmax(logits, axis=1, output_type=tf.int32), classes)
                scores = tf.gather(logits, classes, batch_dims=1)
        grads = tape.gradient(scores, acts)
        # mixed precision: the layer may compute in float16; the map is computed in float32
        return tf.cast(acts, tf.float32), tf.cast(grads, tf.float32), logits, classes

    return run, max(n_classes, 2)


def _cam_inputs(model, images, class_index, layer_name):
    """Validate a CAM request; return (batch, classes int32 (N,), layer name, compiled function)."""
    layer_name = _check_cam_request(model, layer_name)
    batch, _ = _as_batch(images)
    expected = _model_input(model).shape[1:]
    if any(e is not None and e != a for e, a in zip(expected, batch.shape[1:])):
        raise ValueError(f"Model {model.name!r} expects images of shape {tuple(expected)}, got {batch.shape[1:]}; "
                         "resize with load_image(path, size=...).")
    run, n_classes = _cam_function(model, layer_name)
    if class_index is None:
        classes = np.full(len(batch), -1, np.int32)
    else:
        classes = np.broadcast_to(np.asarray(class_index, np.int32), (len(batch),)).copy()
        bad = classes[(classes < 0) | (classes >= n_classes)]
        if bad.size:
            raise ValueError(f"class_index {int(bad[0])} is out of range: this model has classes 0..{n_classes - 1}"
                             + (" (single sigmoid output: 1 explains the positive class, 0 its negation)" if n_classes == 2 else "")
                             + "; None explains each image's predicted class.")
    return batch, classes, layer_name, run


def _normalise_maps(cams, report_name: str) -> np.ndarray:
    """ReLU'd maps (N, h, w) -> [0, 1] per map; all-zero maps stay zero and are reported."""
    cams = np.maximum(np.nan_to_num(np.asarray(cams, np.float32)), 0)
    peak = cams.max(axis=(1, 2), keepdims=True)
    zero = int((peak == 0).sum())
    if zero:  # warned as from "helpers.py", so notebook outputs never show this machine's path
        warnings.warn_explicit(f"{report_name}: {zero} of {len(cams)} maps are all zero (nothing in this layer "
                               "raises the class score); they are returned as zeros.", RuntimeWarning,
                               filename="helpers.py", lineno=0, module="helpers")
    return np.divide(cams, peak, out=np.zeros_like(cams), where=peak > 0)


def grad_cam(model, images, layer_name=None, class_index=None, return_classes: bool = False, relu: bool = True):
    """Grad-CAM heatmaps, float32 (N, h, w) in [0, 1] at the layer's resolution.

    images: raw RGB (H, W, 3) or (N, H, W, 3) at the model's input size. layer_name=None uses the
    last spatial layer before the head. class_index: None explains each image's predicted class;
    an int or one per image. A single-sigmoid head has two classes: 1 explains the logit, 0 its
    negative. Scores are taken before the final softmax/sigmoid; channel weights are the
    per-image spatial mean of the gradients (never averaged across the batch), so a batch gives
    the same maps as one image at a time. Compiled once per model and layer. With
    return_classes=True also returns the explained class per image (N,). relu=False returns the
    signed weighted sum before the ReLU and the scaling (float32 (N, h, w), any range): where it
    is negative, the layer's activations lower the class score.
    """
    batch, classes, layer_name, run = _cam_inputs(model, images, class_index, layer_name)
    acts, grads, _, used = run(batch, classes)
    weights = np.asarray(grads).mean(axis=(1, 2))
    signed = np.einsum("nhwc,nc->nhw", np.asarray(acts), weights)
    heat = _normalise_maps(signed, "grad_cam") if relu else signed.astype(np.float32)
    return (heat, np.asarray(used)) if return_classes else heat


def grad_cam_plus_plus(model, images, layer_name=None, class_index=None):
    """Grad-CAM++ (Chattopadhay et al., 2018): like grad_cam, with channel weights that sum the
    positive gradients weighted by alpha = g^2 / (2 g^2 + sum(A) g^3). (N, h, w) in [0, 1]."""
    batch, classes, layer_name, run = _cam_inputs(model, images, class_index, layer_name)
    acts, grads, _, _ = run(batch, classes)
    acts, grads = np.asarray(acts), np.asarray(grads)
    g2, g3 = grads**2, grads**3
    denominator = 2 * g2 + acts.sum(axis=(1, 2), keepdims=True) * g3
    alpha = np.divide(g2, denominator, out=np.zeros_like(g2), where=np.abs(denominator) > 1e-12)
    weights = (alpha * np.maximum(grads, 0)).sum(axis=(1, 2))
    return _normalise_maps(np.einsum("nhwc,nc->nhw", acts, weights), "grad_cam_plus_plus")


def class_probabilities(model, images, batch_size: int = 64) -> np.ndarray:
    """Model outputs as class probabilities (N, n_classes); a single sigmoid p becomes [1 - p, p]."""
    batch, _ = _as_batch(images)
    probs = np.concatenate([np.asarray(model(batch[i:i + batch_size], training=False), np.float32)
                            for i in range(0, len(batch), batch_size)])
    return np.concatenate([1 - probs, probs], axis=1) if probs.shape[1] == 1 else probs


def _explained_classes(model, batch, class_index):
    if class_index is not None:
        return np.broadcast_to(np.asarray(class_index), (len(batch),)).astype(int)
    return class_probabilities(model, batch).argmax(axis=1)


def class_scores(model, images, batch_size: int = 64) -> np.ndarray:
    """Class scores before the final softmax/sigmoid, float32 (N, n_classes), for raw images (N, H, W, 3);
    a single sigmoid output z gives [-z, z] (as in grad_cam, class 0 explains the negated logit)."""
    dense, feed = _head(model)
    features = _cached(_CAM_CACHE, model, ("features", feed), lambda: activation_model(model, feed))
    batch, _ = _as_batch(images)
    kernel = np.asarray(dense.kernel, np.float32)
    bias = np.asarray(dense.bias, np.float32) if dense.use_bias else 0.0
    logits = np.concatenate([np.asarray(features(batch[i:i + batch_size], training=False), np.float32) @ kernel + bias
                             for i in range(0, len(batch), batch_size)])
    return np.concatenate([-logits, logits], axis=1) if logits.shape[1] == 1 else logits


def score_cam(model, images, layer_name=None, class_index=None, max_channels: int = 256, batch_size: int = 32):
    """Score-CAM (Wang et al., 2020), computed as the paper and pytorch-grad-cam do: each channel of
    the layer, upsampled to the image and scaled to [0, 1], masks the image; the class's score
    before softmax/sigmoid on each masked image, softmaxed over the channels, weighs the channels;
    the map is the ReLU of the weighted sum of activations, scaled to [0, 1]. The `max_channels`
    channels with the highest mean activation are used; masks are scored in batches.
    (N, h, w) in [0, 1]."""
    batch, _, layer_name, _ = _cam_inputs(model, images, class_index, layer_name)
    classes = _explained_classes(model, batch, class_index)
    acts_all = get_activations(model, batch, [layer_name])[layer_name]
    maps = []
    for image, acts, cls in zip(batch, acts_all, classes):
        keep = np.argsort(acts.mean(axis=(0, 1)))[::-1][:max_channels]
        masks = upsample_heatmap(_minmax(acts[..., keep].transpose(2, 0, 1)), image.shape[:2])
        scores = class_scores(model, image[None] * masks[..., None], batch_size)[:, cls]
        weights = np.exp(scores - scores.max())
        maps.append(np.einsum("hwc,c->hw", acts[..., keep], weights / weights.sum()))
    return _normalise_maps(np.stack(maps), "score_cam")


def _minmax(maps) -> np.ndarray:
    """Scale each map (N, h, w) to [0, 1]; constant maps become 0."""
    maps = np.asarray(maps, np.float32)
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.divide(maps - low, span, out=np.zeros_like(maps), where=span > 0)


def occlusion_sensitivity(model, images, class_index=None, patch: int = 16, stride: int = 8, batch_size: int = 64):
    """Occlusion (Zeiler and Fergus, 2014; seed 004's 'mask part of the image'): slide a grey
    patch over the image and record how much the class probability drops; each pixel gets the
    largest drop among the patches covering it. (N, H, W) in [0, 1], at the image's resolution."""
    batch, _ = _as_batch(images)
    if patch < 1 or stride < 1 or patch > min(batch.shape[1:3]):
        raise ValueError(f"patch and stride must be >= 1 and patch <= image size; got patch={patch}, stride={stride}.")
    classes = _explained_classes(model, batch, class_index)
    height, width = batch.shape[1:3]
    corners = [(y, x) for y in range(0, height - patch + 1, stride) for x in range(0, width - patch + 1, stride)]
    maps = []
    for image, cls in zip(batch, classes):
        base = class_probabilities(model, image[None])[0, cls]
        occluded = np.repeat(image[None], len(corners), axis=0)
        for i, (y, x) in enumerate(corners):
            occluded[i, y:y + patch, x:x + patch] = 127.5
        drops = base - class_probabilities(model, occluded, batch_size)[:, cls]
        heat = np.full((height, width), -np.inf, np.float32)
        for (y, x), drop in zip(corners, drops):
            np.maximum(heat[y:y + patch, x:x + patch], drop, out=heat[y:y + patch, x:x + patch])
        maps.append(np.where(np.isfinite(heat), heat, 0))
    return _normalise_maps(np.stack(maps), "occlusion_sensitivity")


CAM_METHODS = {"Grad-CAM": grad_cam, "Grad-CAM++": grad_cam_plus_plus, "Score-CAM": score_cam}


def explain(model, images, method="Grad-CAM", layer_name=None, class_index=None) -> np.ndarray:
    """One entry point for every method: "Grad-CAM", "Grad-CAM++", "Score-CAM", "Occlusion", or a
    callable(model, images, layer_name=..., class_index=...) returning (N, h, w) maps."""
    if callable(method):
        return method(model, images, layer_name=layer_name, class_index=class_index)
    if method == "Occlusion":
        return occlusion_sensitivity(model, images, class_index)
    if method not in CAM_METHODS:
        raise ValueError(f"method must be one of {[*CAM_METHODS, 'Occlusion']}, got {method!r}.")
    return CAM_METHODS[method](model, images, layer_name=layer_name, class_index=class_index)


def upsample_heatmap(heatmaps, size) -> np.ndarray:
    """Resize heatmaps (h, w) or (N, h, w) to `size` (int or (H, W)) bilinearly; float32 in [0, 1]."""
    tf = _tensorflow()

    maps = np.asarray(heatmaps, np.float32)
    single = maps.ndim == 2
    if single:
        maps = maps[None]
    if maps.ndim != 3:
        raise ValueError(f"Expected heatmaps of shape (h, w) or (N, h, w); got {np.asarray(heatmaps).shape}.")
    height, width = (size, size) if isinstance(size, int) else size
    out = np.clip(tf.image.resize(maps[..., None], (height, width), method="bilinear").numpy()[..., 0], 0, 1)
    return out[0] if single else out


def overlay_heatmap(image, heatmap, alpha: float = 0.4, cmap: str = "jet") -> np.ndarray:
    """Blend a heatmap (h, w) in [0, 1] over an RGB image (H, W, 3) in [0, 255]: uint8 (H, W, 3).

    The heatmap is resized to the image with TensorFlow and coloured with matplotlib's colormap
    named `cmap`; alpha is the heatmap's weight.
    """
    image = load_image(image)
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    heat = upsample_heatmap(heatmap, image.shape[:2])
    colours = matplotlib.colormaps[cmap](heat)[..., :3] * 255
    return np.clip((1 - alpha) * image + alpha * colours, 0, 255).astype(np.uint8)


def _pointing(maps, boxes, tolerance: float):
    """Per map: None for a constant (e.g. all-zero) map, which points nowhere; else whether its
    maximum lies within `tolerance` pixels of one of the image's boxes."""
    if len(maps) != len(boxes):
        raise ValueError(f"{len(maps)} heatmaps but {len(boxes)} box lists; give one list of boxes per image.")
    results = []
    for heat, image_boxes in zip(maps, boxes):
        if heat.max() - heat.min() < 1e-6:
            results.append(None)
            continue
        y, x = np.argwhere(heat >= heat.max() - 1e-6).mean(axis=0)  # a plateau's centre
        distance = min(np.hypot(max(x0 - x, 0, x - x1), max(y0 - y, 0, y - y1)) for x0, y0, x1, y1 in image_boxes)
        results.append(bool(distance <= tolerance))
    return results


def pointing_game(heatmaps, boxes, image_size, tolerance: float = 0) -> float:
    """Share of maps whose maximum, upsampled to `image_size` (int or (H, W)), falls inside one of
    that image's boxes, or within `tolerance` pixels of one (Zhang et al. used 15). boxes: per
    image a list of (x0, y0, x1, y1) in pixels. When several pixels share the maximum (a plateau),
    their centre is the point; a constant (e.g. all-zero) map points nowhere and counts as a miss."""
    maps = upsample_heatmap(heatmaps, image_size)
    maps = maps[None] if maps.ndim == 2 else maps
    return float(np.mean([bool(hit) for hit in _pointing(maps, boxes, tolerance)]))


def pointing_game_report(heatmaps, boxes, image_size, tolerance: float = 15) -> dict:
    """The pointing game as Zhang et al. report it: {"strict": share of maxima inside a box,
    "tolerant": share within `tolerance` pixels, "empty": number of constant maps (misses in both),
    "n": number of maps}."""
    maps = upsample_heatmap(heatmaps, image_size)
    maps = maps[None] if maps.ndim == 2 else maps
    strict, tolerant = _pointing(maps, boxes, 0), _pointing(maps, boxes, tolerance)
    return {"strict": float(np.mean([bool(h) for h in strict])), "tolerant": float(np.mean([bool(h) for h in tolerant])),
            "empty": sum(h is None for h in strict), "n": len(maps)}


def random_point_baseline(boxes, image_size) -> float:
    """Expected pointing-game score of a uniformly random point: the mean share of the image
    covered by each image's boxes (their union)."""
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    shares = []
    for image_boxes in boxes:
        mask = np.zeros((height, width), bool)
        for x0, y0, x1, y1 in image_boxes:
            mask[int(y0):int(np.ceil(y1)) + 1, int(x0):int(np.ceil(x1)) + 1] = True
        shares.append(mask.mean())
    return float(np.mean(shares))


def blur(images, sigma: float = 5.0) -> np.ndarray:
    """Gaussian blur (RISE's insertion start: sigma 5, an 11-pixel kernel), reflecting at the
    borders: float32 (N, H, W, 3) in [0, 255], the same shape as `images`."""
    tf = _tensorflow()

    batch, _ = _as_batch(images)
    radius = int(np.ceil(sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    x = tf.pad(batch, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    rows = tf.constant(np.tile(taps[:, None, None, None], (1, 1, 3, 1)))
    x = tf.nn.depthwise_conv2d(x, rows, [1, 1, 1, 1], "VALID")
    x = tf.nn.depthwise_conv2d(x, tf.transpose(rows, (1, 0, 2, 3)), [1, 1, 1, 1], "VALID")
    return x.numpy()


def deletion_insertion_auc(model, images, heatmaps, class_index=None, steps: int = 16, batch_size: int = 64):
    """Deletion and insertion AUC (Petsiuk et al., 2018), per image: (deletion (N,), insertion (N,)).

    Deletion greys out (127.5) pixels from the most to the least salient and records the class
    probability at `steps` + 1 stages, 0 to 100 % removed; insertion reveals them, in the same
    order, on a Gaussian-blurred copy (blur). Each curve's area is taken by the trapezoid rule
    over [0, 1]: lower is better for deletion, higher for insertion. Both ends of the curves are
    the model's score on the fully grey and the fully blurred image (see reference_scores): for a
    one-output model they are not class-neutral."""
    batch, _ = _as_batch(images)
    maps = upsample_heatmap(heatmaps, batch.shape[1:3])
    maps = maps[None] if maps.ndim == 2 else maps
    classes = _explained_classes(model, batch, class_index)
    fractions = np.linspace(0, 1, steps + 1)
    deletion, insertion = [], []
    for image, blurred, heat, cls in zip(batch, blur(batch), maps, classes):
        order = np.argsort(-heat.ravel(), kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        revealed = (rank[None] < np.round(fractions[:, None] * order.size)).reshape(-1, *heat.shape)[..., None]
        for curves, stages in ((deletion, np.where(revealed, 127.5, image[None])),
                               (insertion, np.where(revealed, image[None], blurred[None]))):
            p = class_probabilities(model, stages, batch_size)[:, cls]
            curves.append(float((p[:-1] + p[1:]).sum() / 2 / steps))
    return np.array(deletion), np.array(insertion)


def reference_scores(model, images, class_index=None) -> dict:
    """The class probability on the two images where deletion ends and insertion starts:
    {"grey": (N,) for the all-grey image, "blurred": (N,) for the blurred image}."""
    batch, _ = _as_batch(images)
    classes = _explained_classes(model, batch, class_index)
    pick = np.arange(len(batch))
    return {"grey": class_probabilities(model, np.full_like(batch, 127.5))[pick, classes],
            "blurred": class_probabilities(model, blur(batch))[pick, classes]}


def rank_correlation(a, b) -> float:
    """Spearman's rank correlation of two maps of the same shape, in [-1, 1], with tied values given
    their average rank (as scipy.stats.spearmanr): two unrelated maps that are mostly zeros come
    out near 0, not high. A constant map has no ranking: two constant maps count as identical (1.0),
    one constant map against a varying one as unrelated (0.0)."""
    from scipy.stats import rankdata  # noqa: PLC0415  (SciPy comes with scikit-image)

    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"rank_correlation needs maps of the same size, got {a.size} and {b.size} values.")
    flat_a, flat_b = np.ptp(a) == 0, np.ptp(b) == 0
    if flat_a or flat_b:
        return 1.0 if flat_a and flat_b else 0.0
    return float(np.corrcoef(rankdata(a), rankdata(b))[0, 1])


def randomisation_check(model, images, method: str = "Grad-CAM", layer_name=None, class_index=None,
                        top_layers: int = 3, seed: int = 0, threshold: float = 0.5) -> dict:
    """Model-randomisation sanity check (Adebayo et al., 2018), cascading from the top:
    re-initialise the weights of the last `top_layers` layers that have weights (by default
    reaching into the convolutional layers, so the explained activations change too), recompute
    the maps and compare them with the originals by Spearman rank correlation per image. A
    faithful method's maps change (low correlation); {"correlation": mean, "per_image": (N,),
    "flagged": mean > threshold, "randomised": [layer names]}."""
    keras = _keras()

    batch, _ = _as_batch(images)
    classes = _explained_classes(model, batch, class_index)
    original = explain(model, batch, method, layer_name, classes)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    weighted = [layer for layer in copy.layers if layer.weights and not hasattr(layer, "layers")][-top_layers:]
    rng = np.random.default_rng(seed)
    for layer in weighted:
        layer.set_weights([rng.normal(0, max(float(w.std()), 1e-3), w.shape).astype(w.dtype) for w in layer.get_weights()])
    randomised = explain(copy, batch, method, layer_name, classes)
    per_image = np.array([rank_correlation(a, b) for a, b in zip(original, randomised)])
    return {"correlation": float(per_image.mean()), "per_image": per_image,
            "flagged": bool(per_image.mean() > threshold), "randomised": [layer.name for layer in weighted]}


def cascading_randomisation(model, images, method: str = "Grad-CAM", layer_name=None, class_index=None,
                            seed: int = 0, independent: bool = False, max_stages: int | None = None) -> list[dict]:
    """Adebayo et al.'s (2018) model-randomisation test, one stage per layer with weights, from the
    top down: at stage k the top k such layers are re-initialised (cascading), or only the k-th
    (independent=True). Each stage's maps are compared with the original ones by rank_correlation,
    per image. Returns [{"layer": name, "correlation": mean over images}], top layer first. A
    method whose maps depend on what the model learned falls towards 0 at once."""
    keras = _keras()

    batch, _ = _as_batch(images)
    classes = _explained_classes(model, batch, class_index)
    original = explain(model, batch, method, layer_name, classes)
    names = [layer.name for layer in model.layers if layer.weights and not hasattr(layer, "layers")][::-1]
    rng = np.random.default_rng(seed)
    stages = []
    for k, name in enumerate(names[:max_stages]):
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        for target in (names[k:k + 1] if independent else names[:k + 1]):
            layer = copy.get_layer(target)
            layer.set_weights([rng.normal(0, max(float(w.std()), 1e-3), w.shape).astype(w.dtype)
                               for w in layer.get_weights()])
        with warnings.catch_warnings(), _QuietRetracing():
            warnings.simplefilter("ignore", RuntimeWarning)  # randomised models give empty maps often
            maps = explain(copy, batch, method, layer_name, classes)
        stages.append({"layer": name, "correlation": float(np.mean([rank_correlation(a, b)
                                                                    for a, b in zip(original, maps)]))})
    return stages


def plot_randomisation(stages_by_method: dict):
    """One line per method: rank correlation with the original maps after each randomisation stage
    (cascading_randomisation), top layer on the left. Returns the figure."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for method, stages in stages_by_method.items():
        ax.plot(range(len(stages)), [s["correlation"] for s in stages], "o-", label=method)
    labels = [s["layer"] for s in next(iter(stages_by_method.values()))]
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_ylim(-0.3, 1.05)
    ax.set_ylabel("rank correlation\nwith original maps")
    ax.set_xlabel("randomised down to this layer")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_cams(images, maps_by_method: dict, titles=None, boxes=None, alpha: float = 0.45, cmap: str = "jet"):
    """A grid: one row per image, the image then one overlay per method; boxes (per image, list
    of (x0, y0, x1, y1)) are drawn on every panel. Returns the figure."""
    images = np.asarray(images)
    methods = list(maps_by_method)
    fig, axes = plt.subplots(len(images), 1 + len(methods), figsize=(2.2 * (1 + len(methods)), 2.3 * len(images)),
                             squeeze=False)
    for row, image in enumerate(images):
        panels = [image.astype(np.uint8)] + [overlay_heatmap(image, maps_by_method[m][row], alpha, cmap) for m in methods]
        for col, (ax, panel) in enumerate(zip(axes[row], panels)):
            ax.imshow(panel)
            ax.axis("off")
            if row == 0:
                ax.set_title("image" if col == 0 else methods[col - 1], fontsize=10)
            for x0, y0, x1, y1 in (boxes[row] if boxes is not None else []):
                ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1, color="white"))
        if titles is not None:
            axes[row][0].set_title(titles[row], fontsize=9)
    fig.tight_layout()
    return fig


_IMAGENET_NAMES: list = []


def imagenet_label(index: int) -> str:
    """The ImageNet class name for `index` (Keras downloads the index file once); offline "class N"
    (the download is tried once per session)."""
    keras = _keras()

    if not 0 <= index < 1000:
        raise ValueError(f"ImageNet class index must be in 0..999, got {index}.")
    if not _IMAGENET_NAMES:
        try:
            decoded = keras.applications.imagenet_utils.decode_predictions(np.eye(1000, dtype=np.float32), top=1)
            _IMAGENET_NAMES.extend(row[0][1] for row in decoded)
        except Exception:  # offline: the class-index file cannot be downloaded
            _IMAGENET_NAMES.append(None)
    return _IMAGENET_NAMES[index] if _IMAGENET_NAMES[0] is not None else f"class {index}"


def densenet_with_new_head(n_classes: int = 200, weights="imagenet"):
    """Seed 004's transfer-learning model: DenseNet169 without its top, global average pooling,
    Dense 1024 ReLU and a softmax over `n_classes` (raw pixels in, see load_pretrained)."""
    keras = _keras()
    layers = _keras().layers

    base = load_pretrained("densenet169", include_top=False, weights=weights, input_shape=(224, 224, 3))
    x = layers.GlobalAveragePooling2D(name="gap")(base.output)
    x = layers.Dense(1024, activation="relu", name="fc1024")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="predictions")(x)
    model = keras.Model(base.inputs[0], outputs, name="densenet169_new_head")
    model.pretrained = base.pretrained
    return model


# ---------------------------------------------------------------------------
# 7. Widgets
# ---------------------------------------------------------------------------

def _figure_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=72, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def activation_explorer(model, images: dict, names=None, cmap: str = "viridis"):
    """An ipywidgets explorer: image, layer and channel controls; the layer's channel grid and the
    chosen channel shown large. Returns the widget tree (an ipywidgets.VBox) with the controls as
    attributes: image_dropdown, layer_dropdown, channel_slider, grid_image, channel_image, status.

    images: {label: raw RGB array (H, W, 3)}, already at the model's input size. names: layers to
    offer (default: every spatial layer). Activations are computed once per image (all layers in
    one pass) and cached; sliders update on release (continuous_update=False); errors from a
    callback are shown in `status`, not swallowed. The default layers are the spatial ones from
    the first convolution on (input scaling layers have nothing to show).
    """
    import ipywidgets as widgets  # noqa: PLC0415

    if names is None:
        spatial, convs = layer_names(model, kind="spatial"), layer_names(model, kind="conv")
        names = spatial[spatial.index(convs[0]):] if convs and convs[0] in spatial else spatial
    names = list(names)
    if not images:
        raise ValueError("activation_explorer needs at least one image: {label: array (H, W, 3)}.")
    cache: dict[str, dict[str, np.ndarray]] = {}

    def activations_for(label):
        if label not in cache:
            cache[label] = get_activations(model, images[label], names)
        return cache[label]

    image_dropdown = widgets.Dropdown(options=list(images), description="image")
    layer_dropdown = widgets.Dropdown(options=names, description="layer")
    channel_slider = widgets.IntSlider(min=0, max=1, description="channel", continuous_update=False)
    grid_image = widgets.Image(format="png")
    channel_image = widgets.Image(format="png")
    status = widgets.HTML()

    def show_channel(*_):
        try:
            fmap = activations_for(image_dropdown.value)[layer_dropdown.value]
            channel_image.value = _figure_png(plot_channel(fmap, channel_slider.value, layer_dropdown.value, cmap))
            status.value = ""
        except Exception as exc:  # shown to the user in the widget, never swallowed
            status.value = f"<b style='color:red'>{type(exc).__name__}: {exc}</b>"

    def show_layer(*_):
        try:
            fmap = activations_for(image_dropdown.value)[layer_dropdown.value]
            channels = fmap.shape[-1]
            channel_slider.unobserve(show_channel, "value")
            channel_slider.max = channels - 1
            channel_slider.value = min(channel_slider.value, channels - 1)
            channel_slider.observe(show_channel, "value")
            grid_image.value = _figure_png(plot_layer_activations(fmap, layer_dropdown.value, cmap=cmap))
            show_channel()
        except Exception as exc:
            status.value = f"<b style='color:red'>{type(exc).__name__}: {exc}</b>"

    image_dropdown.observe(show_layer, "value")
    layer_dropdown.observe(show_layer, "value")
    channel_slider.observe(show_channel, "value")
    show_layer()
    tree = widgets.VBox([widgets.HBox([image_dropdown, layer_dropdown, channel_slider]), status,
                         widgets.HBox([grid_image, channel_image])])
    tree.image_dropdown, tree.layer_dropdown, tree.channel_slider = image_dropdown, layer_dropdown, channel_slider
    tree.grid_image, tree.channel_image, tree.status = grid_image, channel_image, status
    return tree


def pattern_explorer(model, names=None, size: int = 64, max_filters: int = 64):
    """An ipywidgets panel for filter patterns: layer, filter range and mode; nothing is computed
    until the Compute button is pressed, then a progress bar follows the chunks. Returns the
    widget tree (VBox) with attributes layer_dropdown, filter_range, mode_buttons, compute_button,
    progress, grid_image, status."""
    import ipywidgets as widgets  # noqa: PLC0415

    names = list(names) if names is not None else layer_names(model, kind="conv")
    if not names:
        raise ValueError(f"Model {model.name!r} has no layer to show patterns for.")
    layer_dropdown = widgets.Dropdown(options=names, description="layer")
    filter_range = widgets.IntRangeSlider(value=(0, 7), min=0, max=7, description="filters", continuous_update=False)
    mode_buttons = widgets.ToggleButtons(options=["plain", "regularised"], description="mode")
    compute_button = widgets.Button(description="Compute", button_style="primary")
    progress = widgets.IntProgress(min=0, max=1, description="chunks")
    grid_image = widgets.Image(format="png")
    status = widgets.HTML()

    def set_range(*_):
        layer, _ = find_layer(model, layer_dropdown.value)
        channels = layer.output.shape[-1]
        filter_range.max = channels - 1
        filter_range.value = (min(filter_range.value[0], channels - 1), min(filter_range.value[1], channels - 1))

    def compute(*_):
        try:
            first, last = filter_range.value
            if last - first + 1 > max_filters:
                raise ValueError(f"{last - first + 1} filters requested; at most {max_filters} at a time.")
            status.value = "computing..."

            def advance(done, total):
                progress.max, progress.value = total, done

            patterns = filter_patterns(model, layer_dropdown.value, list(range(first, last + 1)), size=size,
                                       mode=mode_buttons.value, progress=advance)
            title = f"{layer_dropdown.value} filters {first}-{last} ({mode_buttons.value})"
            grid_image.value = _figure_png(plot_patterns(patterns, title))
            status.value = ""
        except Exception as exc:  # shown to the user in the widget, never swallowed
            status.value = f"<b style='color:red'>{type(exc).__name__}: {exc}</b>"

    layer_dropdown.observe(set_range, "value")
    compute_button.on_click(compute)
    set_range()
    tree = widgets.VBox([widgets.HBox([layer_dropdown, filter_range]), widgets.HBox([mode_buttons, compute_button]),
                         progress, status, grid_image])
    tree.layer_dropdown, tree.filter_range, tree.mode_buttons = layer_dropdown, filter_range, mode_buttons
    tree.compute_button, tree.progress, tree.grid_image, tree.status = compute_button, progress, grid_image, status
    return tree


def cam_explorer(model, images: dict, class_names, names=None, boxes: dict | None = None):
    """An ipywidgets panel for class-activation maps: image, class, layer and method. Returns the
    widget tree (VBox) with attributes image_dropdown, class_dropdown, layer_dropdown,
    method_dropdown, overlay_image, status. images: {label: raw RGB (H, W, 3) at the model's
    size}; boxes: optional {label: [(x0, y0, x1, y1), ...]} drawn on the overlay."""
    import ipywidgets as widgets  # noqa: PLC0415

    names = list(names) if names is not None else layer_names(model, kind="spatial")[-4:]
    if not images:
        raise ValueError("cam_explorer needs at least one image: {label: array (H, W, 3)}.")
    image_dropdown = widgets.Dropdown(options=list(images), description="image")
    class_dropdown = widgets.Dropdown(options=[("predicted", -1)] + [(n, i) for i, n in enumerate(class_names)],
                                      description="class")
    layer_dropdown = widgets.Dropdown(options=names, value=names[-1], description="layer")
    method_dropdown = widgets.Dropdown(options=[*CAM_METHODS, "Occlusion"], description="method")
    overlay_image = widgets.Image(format="png")
    status = widgets.HTML()

    def show(*_):
        try:
            label = image_dropdown.value
            cls = None if class_dropdown.value < 0 else class_dropdown.value
            heat = explain(model, images[label][None], method_dropdown.value, layer_dropdown.value, cls)
            fig = plot_cams(images[label][None], {method_dropdown.value: heat},
                            boxes=[boxes[label]] if boxes and label in boxes else None)
            overlay_image.value = _figure_png(fig)
            status.value = "map is all zero" if heat.max() == 0 else ""
        except Exception as exc:  # shown to the user in the widget, never swallowed
            status.value = f"<b style='color:red'>{type(exc).__name__}: {exc}</b>"

    for control in (image_dropdown, class_dropdown, layer_dropdown, method_dropdown):
        control.observe(show, "value")
    show()
    tree = widgets.VBox([widgets.HBox([image_dropdown, class_dropdown]), widgets.HBox([layer_dropdown, method_dropdown]),
                         status, overlay_image])
    tree.image_dropdown, tree.class_dropdown, tree.layer_dropdown = image_dropdown, class_dropdown, layer_dropdown
    tree.method_dropdown, tree.overlay_image, tree.status = method_dropdown, overlay_image, status
    return tree
