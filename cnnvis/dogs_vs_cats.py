"""Kaggle's dogs-vs-cats: download, verify and prepare the seed's folder layout."""

from __future__ import annotations

import io
import json
import random
import shutil
import zipfile
from pathlib import Path

from PIL import Image

from cnnvis.archives import pack, read_member, unpack
from cnnvis.colab import content_dir, in_colab
from cnnvis.files import build_then_rename
from cnnvis.kaggle import download_competition
from cnnvis.mode import quick_mode, quick_or_full
from cnnvis.paths import machine_data_dir
from cnnvis.pet_images import download_pet_images

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def _decode_check(data: bytes, name: str) -> tuple[Image.Image, bool]:
    """Fully decode image bytes to RGB; return (image, whether the bytes are an RGB JPEG).

    Raises ValueError naming `name` for zero-byte, truncated, corrupt or non-image data.
    """
    if not data:
        raise ValueError(f"{name}: zero-byte file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.convert("RGB"), (im.format == "JPEG" and im.mode == "RGB")
    except Exception as exc:  # PIL raises many types for corrupt/truncated/non-image data
        raise ValueError(f"{name}: not a decodable image ({type(exc).__name__}: {exc})") from None


def _write_image_bytes(data: bytes, target: Path, name: str) -> None:
    """Write a verified image: JPEG bytes as they are, anything else re-encoded as RGB JPEG."""
    image, is_rgb_jpeg = _decode_check(data, name)
    if is_rgb_jpeg:
        target.write_bytes(data)
    else:
        image.save(target, format="JPEG", quality=95)


def _dogs_vs_cats_sources(source: Path) -> tuple[dict[str, list[str]], object]:
    """Index a dogs-vs-cats source: returns ({"cats": [...], "dogs": [...]}, reader).

    `reader(key) -> bytes`. Accepts Kaggle's train.zip (cat.N.jpg/dog.N.jpg, possibly nested in
    the competition zip), its extracted folder, or Microsoft's PetImages layout (Cat/, Dog/).
    """
    if not source.exists():
        raise FileNotFoundError(f"Dogs-vs-cats source {source} does not exist. Expected Kaggle's "
                                "train.zip, its extracted folder, or a PetImages folder with Cat/ and Dog/.")

    def classify(name: str) -> str | None:
        parts = Path(name).parts
        base = parts[-1].lower() if parts else ""
        if base.startswith("cat.") and base.endswith(IMAGE_SUFFIXES):
            return "cats"
        if base.startswith("dog.") and base.endswith(IMAGE_SUFFIXES):
            return "dogs"
        if len(parts) >= 2 and parts[-2].lower() in ("cat", "dog") and base.endswith(IMAGE_SUFFIXES):
            return "cats" if parts[-2].lower() == "cat" else "dogs"
        return None

    index: dict[str, list[str]] = {"cats": [], "dogs": []}
    if source.is_file():
        if not zipfile.is_zipfile(source):
            raise ValueError(f"{source} is not a zip file. Pass Kaggle's train.zip, its extracted "
                             "folder, or a PetImages folder with Cat/ and Dog/.")
        archive = zipfile.ZipFile(source)
        names = archive.namelist()
        nested = [n for n in names if Path(n).name == "train.zip"]
        if nested and not any(classify(n) for n in names):
            archive = zipfile.ZipFile(io.BytesIO(archive.read(nested[0])))
            names = archive.namelist()
        for name in names:
            label = classify(name)
            if label:
                index[label].append(name)
        reader = archive.read
    else:
        for path in source.rglob("*"):
            label = classify(str(path.relative_to(source))) if path.is_file() else None
            if label:
                index[label].append(str(path))
        reader = lambda key: Path(key).read_bytes()  # noqa: E731
    if not index["cats"] or not index["dogs"]:
        raise ValueError(f"{source} holds no dogs-vs-cats images (found {len(index['cats'])} cats, "
                         f"{len(index['dogs'])} dogs). Expected files named cat.N.jpg and dog.N.jpg "
                         "(Kaggle train.zip) or folders Cat/ and Dog/ (Microsoft PetImages).")
    for names in index.values():
        names.sort()
    return index, reader


def prepare_dogs_vs_cats(source, dest, n_train: int = 1400, n_val: int = 300, seed: int = 0) -> dict:
    """Copy a random, verified subset of dogs-vs-cats into dest/{train,validation}/{cats,dogs}.

    n_train and n_val count images per class (the seed used 1400 + 300 per class: 2800 training
    and 600 validation images). Every image is decoded first; corrupt, truncated, zero-byte and
    non-image files are skipped and listed in the returned report (also written to
    dest/prepare_report.json). The set is built in a temporary folder beside `dest` and moved
    into place, so an interrupted run leaves nothing half-written; re-running with the same
    counts and seed returns the existing report; `dest` may be an empty folder; any other
    existing `dest` is never overwritten.
    """
    source, dest = Path(source), Path(dest)
    if n_train < 1 or n_val < 1:
        raise ValueError(f"n_train and n_val must be at least 1 per class, got {n_train}, {n_val}.")
    existing = prepared_report(dest, n_train, n_val, seed)
    if existing is not None:
        return existing
    if dest.is_dir() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} already exists and was not prepared with these settings; "
                              "choose an empty destination or remove it yourself.")
    index, reader = _dogs_vs_cats_sources(source)
    settings = {"source": source.name, "n_train": n_train, "n_val": n_val, "seed": seed}
    report = {"settings": settings, "counts": {}, "skipped": []}

    def build(tmp: Path) -> None:
        rng = random.Random(seed)
        for label, names in index.items():
            order = names[:]
            rng.shuffle(order)
            kept = 0
            for name in order:
                if kept == n_train + n_val:
                    break
                folder = tmp / ("train" if kept < n_train else "validation") / label
                folder.mkdir(parents=True, exist_ok=True)
                stem = Path(name).stem.replace(" ", "_")
                if not stem.lower().startswith(label[:-1] + "."):
                    stem = f"{label[:-1]}.{stem}"  # PetImages: Cat/12.jpg -> cat.12.jpg
                try:
                    _write_image_bytes(reader(name), folder / f"{stem}.jpg", name)
                except ValueError as exc:
                    report["skipped"].append({"file": name, "reason": str(exc).split(": ", 1)[-1]})
                    continue
                kept += 1
            if kept < n_train + n_val:
                raise ValueError(f"{source} has only {kept} readable {label} images; "
                                 f"{n_train + n_val} were asked for (n_train={n_train}, n_val={n_val}).")
            report["counts"][label] = {"train": n_train, "validation": n_val}
        (tmp / "prepare_report.json").write_text(json.dumps(report, indent=1))

    build_then_rename(dest, build)
    return report


def prepared_report(dest, n_train: int, n_val: int, seed: int = 0) -> dict | None:
    """The report of a set already prepared at `dest` with these counts and seed, else None."""
    path = Path(dest) / "prepare_report.json"
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    return report if _same_settings(report, n_train, n_val, seed) else None


def _same_settings(report: dict, n_train: int, n_val: int, seed: int) -> bool:
    wanted = {"n_train": n_train, "n_val": n_val, "seed": seed}
    return {k: report.get("settings", {}).get(k) for k in wanted} == wanted


def real_data_dir(data) -> Path:
    """Where the prepared real data lives under the data folder: dogs-vs-cats, or
    dogs-vs-cats-quick in quick mode (150 + 50 images per class instead of 1 400 + 300)."""
    return Path(data) / ("dogs-vs-cats-quick" if quick_mode() else "dogs-vs-cats")


def real_data_counts() -> tuple[int, int]:
    """(training, validation) images per class: the seed's 1 400 + 300, or 150 + 50 in quick mode."""
    return quick_or_full((150, 50), (1400, 300))


def download_dir(data) -> Path:
    """Where the Kaggle archive is downloaded: the Colab machine's own disk (<content>/downloads),
    never Drive, which is slow for an 812 MB file; locally <data>/downloads."""
    return content_dir() / "downloads" if in_colab() else Path(data) / "downloads"


def archive_path(data) -> Path:
    """The prepared real data as one archive in the data folder: <data>/dogs-vs-cats(-quick).zip."""
    return Path(data) / f"{real_data_dir(data).name}.zip"


def from_archive(data) -> dict | None:
    """The report of the real data on this machine (machine_data_dir), unpacked from archive_path(data)
    when it is not there yet; None when neither holds a set prepared with real_data_counts()."""
    n_train, n_val = real_data_counts()
    dest = real_data_dir(machine_data_dir(data))
    report = prepared_report(dest, n_train, n_val)
    if report is not None:
        return report
    stored = read_member(archive_path(data), "prepare_report.json")
    if stored is None or not _same_settings(json.loads(stored), n_train, n_val, 0):
        return None
    if dest.is_dir():  # a set of other settings: the archive's is the one asked for
        shutil.rmtree(dest)
    unpack(archive_path(data), dest)
    return prepared_report(dest, n_train, n_val)


SOURCES = ("kaggle", "tfds")


def get_dogs_vs_cats(data, source: str = "kaggle") -> dict:
    """Make the real dogs-vs-cats data ready and return its report.

    The set is kept in real_data_dir(machine_data_dir(data)): in Colab with Drive mounted, on the
    machine's own disk, with one archive of it on Drive (archive_path(data)) that later notebooks,
    on fresh machines, unpack (from_archive); elsewhere under `data` itself. A set already prepared
    with the same counts, or archived, is reused without downloading. Otherwise Kaggle's archive
    is downloaded (download_dir), prepared with real_data_counts(), and, in Colab, removed
    afterwards. source="tfds": Microsoft's PetImages through tensorflow-datasets instead (no
    account needed; cnnvis.pet_images), into the same layout, with the same checks and seeded
    selection. Raises RuntimeError with one line when the download cannot be done (toy pets are
    then the fallback).
    """
    if source not in SOURCES:
        raise ValueError(f"source must be 'kaggle' (Kaggle's dogs-vs-cats, needs a token) or 'tfds' (Microsoft's "
                         f"PetImages through tensorflow-datasets, no account), got {source!r}.")
    n_train, n_val = real_data_counts()
    local = machine_data_dir(data)
    report = from_archive(data)
    if report is None:
        fetch = download_competition if source == "kaggle" else download_pet_images
        downloaded = fetch(download_dir(data))
        report = prepare_dogs_vs_cats(downloaded, real_data_dir(local), n_train=n_train, n_val=n_val)
        if in_colab() and downloaded.is_dir():
            shutil.rmtree(downloaded)
        elif in_colab():
            downloaded.unlink()
    if local != Path(data) and read_member(archive_path(data), "prepare_report.json") is None:
        pack(real_data_dir(local), archive_path(data))
    return report
