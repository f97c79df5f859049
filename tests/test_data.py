import csv
import io
import zipfile

import numpy as np
import pytest
from PIL import Image

import helpers


def _jpeg_bytes(value, size=(24, 20), mode="RGB"):
    buffer = io.BytesIO()
    Image.new(mode, size, value).save(buffer, format="JPEG" if mode in ("RGB", "L", "CMYK") else "PNG")
    return buffer.getvalue()


def _kaggle_files(n=6):
    files = {}
    for i in range(n):
        files[f"train/cat.{i}.jpg"] = _jpeg_bytes((200, 10, 10))
        files[f"train/dog.{i}.jpg"] = _jpeg_bytes((10, 10, 200))
    files["train/cat.100.jpg"] = b""                       # zero-byte
    files["train/dog.100.jpg"] = _jpeg_bytes((1, 2, 3))[:60]  # truncated
    files["train/cat.101.jpg"] = b"this is not an image"   # non-image
    return files


def _write_zip(path, files):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


# ---- prepare_dogs_vs_cats --------------------------------------------------

def test_prepare_from_kaggle_zip_skips_broken_files(tmp_path):
    source = _write_zip(tmp_path / "train.zip", _kaggle_files())
    report = helpers.prepare_dogs_vs_cats(source, tmp_path / "out", n_train=4, n_val=2)
    for split, n in (("train", 4), ("validation", 2)):
        for label in ("cats", "dogs"):
            files = list((tmp_path / "out" / split / label).glob("*.jpg"))
            assert len(files) == n
            assert all(f.name.startswith(label[:-1] + ".") for f in files)
    skipped = {s["file"] for s in report["skipped"]}
    # a broken file is only met if the random order reaches it; whatever was met was skipped
    assert skipped <= {"train/cat.100.jpg", "train/dog.100.jpg", "train/cat.101.jpg"}
    assert not list((tmp_path / "out").rglob("*.100.jpg")) and not list((tmp_path / "out").rglob("*.101.jpg"))


def test_prepare_reports_every_broken_file_it_meets(tmp_path):
    source = _write_zip(tmp_path / "train.zip", _kaggle_files(n=3))
    skipped = []
    for seed in range(8):  # which broken files come before the last needed good one depends on the seed
        report = helpers.prepare_dogs_vs_cats(source, tmp_path / f"out{seed}", n_train=2, n_val=1, seed=seed)
        skipped += report["skipped"]
    assert {s["file"] for s in skipped} == {"train/cat.100.jpg", "train/dog.100.jpg", "train/cat.101.jpg"}
    reasons = " ".join(s["reason"] for s in skipped)
    assert "zero-byte" in reasons and "not a decodable image" in reasons


def test_prepare_from_nested_competition_zip(tmp_path):
    inner = _write_zip(tmp_path / "train.zip", _kaggle_files())
    outer = _write_zip(tmp_path / "dogs-vs-cats.zip", {"train.zip": inner.read_bytes(), "sampleSubmission.csv": b"id"})
    helpers.prepare_dogs_vs_cats(outer, tmp_path / "out", n_train=3, n_val=1)
    assert len(list((tmp_path / "out" / "train" / "dogs").glob("*.jpg"))) == 3


def test_prepare_from_petimages_folder_converts_non_rgb(tmp_path):
    for folder in ("Cat", "Dog"):
        (tmp_path / "PetImages" / folder).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "PetImages" / folder / f"{i}.jpg").write_bytes(_jpeg_bytes(128, mode="L"))
    (tmp_path / "PetImages" / "Cat" / "Thumbs.db").write_bytes(b"junk")
    helpers.prepare_dogs_vs_cats(tmp_path / "PetImages", tmp_path / "out", n_train=2, n_val=1)
    written = sorted((tmp_path / "out" / "train" / "cats").glob("*.jpg"))
    assert len(written) == 2 and written[0].name.startswith("cat.")
    with Image.open(written[0]) as im:
        assert im.mode == "RGB"


def test_prepare_rerun_is_idempotent_and_never_overwrites(tmp_path):
    source = _write_zip(tmp_path / "train.zip", _kaggle_files())
    first = helpers.prepare_dogs_vs_cats(source, tmp_path / "out", n_train=3, n_val=1)
    before = sorted(p.name for p in (tmp_path / "out").rglob("*.jpg"))
    assert helpers.prepare_dogs_vs_cats(source, tmp_path / "out", n_train=3, n_val=1) == first
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.jpg")) == before
    with pytest.raises(FileExistsError, match="out"):
        helpers.prepare_dogs_vs_cats(source, tmp_path / "out", n_train=2, n_val=1)
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.jpg")) == before
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="mine"):
        helpers.prepare_dogs_vs_cats(source, keep, n_train=2, n_val=1)
    assert (keep / "precious.txt").read_text() == "keep me"


def test_prepare_failure_leaves_no_partial_folder(tmp_path):
    source = _write_zip(tmp_path / "train.zip", _kaggle_files(n=2))
    with pytest.raises(ValueError, match="only 2 readable cats"):
        helpers.prepare_dogs_vs_cats(source, tmp_path / "out", n_train=5, n_val=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.zip"]


def test_prepare_rejects_a_zip_that_is_not_dogs_vs_cats(tmp_path):
    source = _write_zip(tmp_path / "mnist.zip", {"digits/0.png": _jpeg_bytes(3)})
    with pytest.raises(ValueError, match=r"mnist.zip holds no dogs-vs-cats images.*cat\.N\.jpg"):
        helpers.prepare_dogs_vs_cats(source, tmp_path / "out")


def test_prepare_rejects_missing_source_and_non_zip_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.zip does not exist"):
        helpers.prepare_dogs_vs_cats(tmp_path / "nowhere.zip", tmp_path / "out")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="notes.txt is not a zip file"):
        helpers.prepare_dogs_vs_cats(text, tmp_path / "out")


# ---- make_toy_pets / load_boxes --------------------------------------------

def test_toy_pets_layout_counts_and_boxes(toy_root):
    for split, n in (("train", 8), ("validation", 4)):
        for label in ("cats", "dogs"):
            files = sorted((toy_root / split / label).glob("*.png"))
            assert len(files) == n
    with Image.open(files[0]) as im:
        assert im.size == (64, 64) and im.mode == "RGB"
    boxes = helpers.load_boxes(toy_root)
    assert len(boxes) == 2 * (8 + 4)
    for path, parts in boxes.items():
        assert set(parts) == set(helpers.BOX_PARTS)
        for x0, y0, x1, y1 in parts.values():
            assert 0 <= x0 < x1 <= 63 and 0 <= y0 < y1 <= 63
        face = parts["face"]
        assert parts["left_ear"][0] < parts["right_ear"][0]
        if "/cats/" in path:
            assert parts["left_ear"][1] < face[1]  # pointed ears stand above the head
        else:
            assert parts["left_ear"][3] > face[1] + 0.5 * (face[3] - face[1])  # floppy ears hang down


def test_toy_pets_are_deterministic_and_seeded(tmp_path):
    a = helpers.make_toy_pets(tmp_path / "a", 2, 1, size=48, seed=3)
    b = helpers.make_toy_pets(tmp_path / "b", 2, 1, size=48, seed=3)
    c = helpers.make_toy_pets(tmp_path / "c", 2, 1, size=48, seed=4)
    name = "train/dogs/dog.0001.png"
    assert np.array_equal(np.asarray(Image.open(a / name)), np.asarray(Image.open(b / name)))
    assert not np.array_equal(np.asarray(Image.open(a / name)), np.asarray(Image.open(c / name)))
    assert (a / "boxes.csv").read_text() == (b / "boxes.csv").read_text()


def test_toy_pets_classes_differ_in_parts_not_in_colour(tmp_path):
    root = helpers.make_toy_pets(tmp_path / "p", 30, 1, size=64)
    boxes = helpers.load_boxes(root)
    with open(root / "boxes.csv") as handle:
        rows = list(csv.DictReader(handle))

    def snout_length(label):
        return np.mean([(float(r["y1"]) - float(r["y0"])) / (boxes[r["path"]]["face"][3] - boxes[r["path"]]["face"][1])
                        for r in rows if r["class"] == label and r["part"] == "snout"])

    assert snout_length("dogs") > 1.3 * snout_length("cats")
    mean_colour = {label: np.mean([np.asarray(Image.open(root / "train" / label / f), dtype=float).mean()
                                   for f in sorted(p.name for p in (root / "train" / label).iterdir())])
                   for label in ("cats", "dogs")}
    assert abs(mean_colour["cats"] - mean_colour["dogs"]) < 15


def test_toy_pets_reuse_and_refuse(tmp_path, toy_root):
    assert helpers.make_toy_pets(toy_root, n_train=8, n_val=4, size=64) == toy_root
    with pytest.raises(FileExistsError, match="not a toy-pets set"):
        helpers.make_toy_pets(toy_root, n_train=9, n_val=4, size=64)
    with pytest.raises(ValueError, match="n_train >= 1"):
        helpers.make_toy_pets(tmp_path / "x", n_train=0, n_val=1)


def test_load_boxes_without_csv_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="boxes.csv not found"):
        helpers.load_boxes(tmp_path)


# ---- load_image_folders ------------------------------------------------------

def test_load_image_folders_pipelines(toy_root):
    train_ds, val_ds, classes = helpers.load_image_folders(toy_root, image_size=(64, 64), batch_size=5)
    assert classes == ["cats", "dogs"]
    images, labels = next(iter(train_ds))
    assert images.shape == (5, 64, 64, 3) and images.dtype.name == "float32"
    assert labels.shape == (5, 1)
    assert 0 <= float(images.numpy().min()) and float(images.numpy().max()) <= 255
    all_labels = np.concatenate([y.numpy().ravel() for _, y in val_ds])
    assert sorted(all_labels.tolist()) == [0.0] * 4 + [1.0] * 4
    first_epoch = np.concatenate([y.numpy().ravel() for _, y in train_ds])
    second_epoch = np.concatenate([y.numpy().ravel() for _, y in train_ds])
    assert sorted(first_epoch) == sorted(second_epoch) and len(first_epoch) == 16


def test_load_image_folders_sees_new_files_on_reload(tmp_path, toy_root):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(toy_root, root)
    _, val_ds, _ = helpers.load_image_folders(root, image_size=(64, 64))
    assert sum(int(x.shape[0]) for x, _ in val_ds) == 8
    shutil.copy(root / "train/cats/cat.0000.png", root / "validation/cats/extra.png")
    _, val_ds, _ = helpers.load_image_folders(root, image_size=(64, 64))
    assert sum(int(x.shape[0]) for x, _ in val_ds) == 9


def test_load_image_folders_bad_layouts(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.*does not exist"):
        helpers.load_image_folders(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty/train must hold one sub-folder per class"):
        helpers.load_image_folders(tmp_path / "empty")
    for split in ("train", "validation"):
        for label in ("cats", "dogs"):
            (tmp_path / "noimg" / split / label).mkdir(parents=True)
            (tmp_path / "noimg" / split / label / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match=r"noimg/train/cats holds no images"):
        helpers.load_image_folders(tmp_path / "noimg")


# ---- load_image / sample_photos ------------------------------------------------

@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "RGB"])
def test_load_image_modes_become_rgb(tmp_path, mode):
    path = tmp_path / f"img_{mode}.png"
    Image.new(mode, (30, 20), 100 if mode in ("L", "P") else (100,) * len(mode)).save(path)
    image = helpers.load_image(path)
    assert image.shape == (20, 30, 3) and image.dtype == np.float32
    assert helpers.load_image(path, size=(10, 12)).shape == (10, 12, 3)


@pytest.mark.parametrize("array, expected_max", [
    (np.full((8, 9), 255, np.uint8), 255.0),
    (np.ones((8, 9, 1), np.float32), 255.0),
    (np.full((8, 9, 4), 7, np.uint8), 7.0),
])
def test_load_image_arrays(array, expected_max):
    image = helpers.load_image(array, size=4)
    assert image.shape == (4, 4, 3) and image.max() == pytest.approx(expected_max)


def test_load_image_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jpg does not exist"):
        helpers.load_image(tmp_path / "nope.jpg")
    bad = tmp_path / "fake.jpg"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="fake.jpg is not a readable image"):
        helpers.load_image(bad)
    with pytest.raises(ValueError, match=r"shape \(2, 3, 4, 5\)"):
        helpers.load_image(np.zeros((2, 3, 4, 5)))
    with pytest.raises(ValueError, match="NaN"):
        helpers.load_image(np.full((4, 4, 3), np.nan))


def test_sample_photos_ship_the_cat_and_grace_hopper():
    photos = {p["name"]: p for p in helpers.sample_photos()}
    assert {"chelsea", "grace_hopper"} <= set(photos)
    assert photos["chelsea"]["label"] == "cats"
    assert helpers.load_image(photos["chelsea"]["path"]).shape == (300, 451, 3)
    assert helpers.load_image(photos["grace_hopper"]["path"]).shape == (600, 512, 3)
    assert all(p["source"] for p in photos.values())


def test_find_dataset_prefers_real_data_else_toy_pets(monkeypatch, project_home):
    monkeypatch.setenv("CNNVIS_QUICK", "1")
    paths = helpers.project_paths()
    root, description = helpers.find_dataset(paths, image_size=48)
    assert "toy pets" in description and (root / "train" / "cats").is_dir()
    assert len(list((root / "validation" / "dogs").iterdir())) == 50
    real = paths.data / "dogs-vs-cats-quick"  # quick mode prepares its own, smaller real set
    (real / "train").mkdir(parents=True)
    (real / "validation").mkdir()
    assert helpers.find_dataset(paths) == (real, "real dogs-vs-cats photos (dogs-vs-cats-quick: 150 train + 50 "
                                                 "validation images per class)")
    assert helpers.find_dataset(paths, image_size=48, kind="toy")[0] == root  # the boxes need toy pets
    assert str(project_home) not in description  # no machine path in notebook output
    with pytest.raises(ValueError, match="kind must be 'auto'"):
        helpers.find_dataset(paths, kind="real")


def test_real_data_dir_and_counts_follow_quick_mode(monkeypatch, tmp_path):
    assert helpers.real_data_dir(tmp_path) == tmp_path / "dogs-vs-cats" and helpers.real_data_counts() == (1400, 300)
    monkeypatch.setenv("CNNVIS_QUICK", "1")
    assert helpers.real_data_dir(tmp_path) == tmp_path / "dogs-vs-cats-quick" and helpers.real_data_counts() == (150, 50)


# ---- fetch_kaggle_dogs_vs_cats (more in test_colab.py) / plot_samples ----------

def test_fetch_kaggle_without_cli_fails_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no kaggle executable anywhere
    with pytest.raises(RuntimeError) as info:
        helpers.fetch_kaggle_dogs_vs_cats(tmp_path / "data")
    assert "Kaggle CLI is not installed" in str(info.value) and "toy pets" in str(info.value)
    assert "\n" not in str(info.value)


def _fake_kaggle(tmp_path, script):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kaggle").write_text("#!/bin/sh\n" + script)
    (bin_dir / "kaggle").chmod(0o755)
    return bin_dir


def test_fetch_kaggle_without_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(_fake_kaggle(tmp_path, "exit 0\n")))
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="no Kaggle credentials .*KAGGLE_API_TOKEN"):
        helpers.fetch_kaggle_dogs_vs_cats(tmp_path / "data")
    (tmp_path / ".kaggle").mkdir()
    (tmp_path / ".kaggle" / "access_token").write_text("KGAT_x")
    assert helpers.kaggle_credentials()[1] == f"the file {tmp_path}/.kaggle/access_token"


def test_fetch_kaggle_offline_never_prints_the_key(tmp_path, monkeypatch):
    script = 'echo "Connection error: Failed to resolve www.kaggle.com (key=$KAGGLE_KEY)" >&2\nexit 1\n'
    monkeypatch.setenv("PATH", str(_fake_kaggle(tmp_path, script)))
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "s3cr3t")
    with pytest.raises(RuntimeError, match="Kaggle download failed") as info:
        helpers.fetch_kaggle_dogs_vs_cats(tmp_path / "data")
    # the CLI's own message is quoted (it is the only hint about what broke), the key redacted
    assert "Failed to resolve" in str(info.value) and "s3cr3t" not in str(info.value)


def test_plot_samples_draws_boxes_for_toy_pets(toy_root):
    import matplotlib.pyplot as plt

    fig = helpers.plot_samples(toy_root, n=4)
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 4 and [ax.get_title() for ax in axes] == ["cats", "dogs", "cats", "dogs"]
    assert all(len(ax.patches) == 4 for ax in axes)
    plt.close(fig)


def test_empty_destination_folders_are_accepted(tmp_path):
    """Issue 8: a user who creates the folder first got FileExistsError."""
    (tmp_path / "pets").mkdir()
    assert helpers.make_toy_pets(tmp_path / "pets", n_train=1, n_val=1, size=32) == tmp_path / "pets"
    assert (tmp_path / "pets" / "boxes.csv").exists()
    source = _write_zip(tmp_path / "train.zip", _kaggle_files(3))
    (tmp_path / "real").mkdir()
    helpers.prepare_dogs_vs_cats(source, tmp_path / "real", n_train=2, n_val=1)
    assert len(list((tmp_path / "real" / "train" / "cats").glob("*.jpg"))) == 2


def test_build_then_rename_copies_where_a_rename_is_refused(tmp_path, monkeypatch):
    from pathlib import Path

    real_rename = Path.rename

    def refuse_folders(self, target):
        if self.is_dir():
            raise OSError(95, "Operation not supported")  # some Drive/network mounts
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", refuse_folders)
    out = helpers.build_then_rename(tmp_path / "out", lambda tmp: (tmp / "a.txt").write_text("a"))
    assert (out / "a.txt").read_text() == "a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the temporary folder is gone

    def broken(tmp):
        (tmp / "half.txt").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        helpers.build_then_rename(tmp_path / "other", broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_stale_partial_folders_of_dead_machines_are_removed_before_building(tmp_path):
    """Issue 16: every interrupted preparation left a hidden .name.partial-* folder on Drive for good."""
    for stale in (".pets.partial-abc123", ".pets.partial-def456"):
        (tmp_path / stale).mkdir()
        (tmp_path / stale / "cat.1.jpg").write_bytes(b"x")
    (tmp_path / ".other.partial-1").mkdir()  # another set's: not ours to remove
    helpers.build_then_rename(tmp_path / "pets", lambda tmp: (tmp / "a.txt").write_text("a"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.partial-1", "pets"]


def test_a_folder_packed_into_one_archive_unpacks_whole_with_progress(tmp_path, toy_root, capsys):
    from cnnvis import archives

    archive = archives.pack(toy_root, tmp_path / "pets.zip")
    assert archive.is_file() and not list(tmp_path.glob("*.partial"))
    files = sorted(p.relative_to(toy_root) for p in toy_root.rglob("*") if p.is_file())
    out = archives.unpack(archive, tmp_path / "machine" / "pets")
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == files
    assert all((out / f).read_bytes() == (toy_root / f).read_bytes() for f in files)
    text = capsys.readouterr().out
    assert f"{len(files)}/{len(files)}" in text and f"Unpacked {len(files)} files" in text
    assert archives.read_member(archive, "boxes.csv") == (toy_root / "boxes.csv").read_bytes()
    assert archives.read_member(archive, "missing") is None and archives.read_member(tmp_path / "no.zip", "x") is None
    archive.write_bytes(archive.read_bytes()[:1000])  # a truncated upload: nothing half-unpacked
    with pytest.raises(ValueError, match="pets.zip is damaged .*delete it and run notebook 00 again"):
        archives.unpack(archive, tmp_path / "again")
    assert not (tmp_path / "again").exists() and not list(tmp_path.glob(".again.partial-*"))


def test_validation_images_resizes_photos_of_every_size(tmp_path):
    for label, sizes in (("cats", [(50, 30), (20, 70)]), ("dogs", [(64, 64), (33, 90)])):
        for split in ("train", "validation"):
            (tmp_path / split / label).mkdir(parents=True)
        for i, size in enumerate(sizes):
            Image.new("RGB", size, (200, 10, 10)).save(tmp_path / "validation" / label / f"{label}.{i}.jpg")
        Image.new("RGB", (8, 8)).save(tmp_path / "train" / label / "x.jpg")
    images = helpers.validation_images(tmp_path, per_class=2, size=40)
    assert list(images) == ["cats", "dogs"] and images["cats"].shape == (2, 40, 40, 3)
    assert images["dogs"].dtype == np.float32 and 0 <= images["dogs"].min() and images["dogs"].max() <= 255
