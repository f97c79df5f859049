import matplotlib.pyplot as plt
import pytest

import helpers


def test_project_paths_follow_env_var(project_home):
    paths = helpers.project_paths()
    assert paths.root == project_home.resolve()
    assert paths.data == paths.root / "data" and paths.data.is_dir()
    assert paths.models == paths.root / "outputs" / "models" and paths.models.is_dir()
    assert paths.figures == paths.root / "outputs" / "figures" and paths.figures.is_dir()


def test_project_paths_default_to_repo(monkeypatch):
    monkeypatch.delenv("CNNVIS_HOME")
    paths = helpers.project_paths(create=False)
    assert paths.root == helpers.REPO_ROOT
    assert paths.figures == helpers.REPO_ROOT / "outputs" / "figures"


def test_project_paths_on_colab_use_drive_at_content_drive(monkeypatch, tmp_path):
    monkeypatch.delenv("CNNVIS_HOME")
    monkeypatch.setenv("COLAB_RELEASE_TAG", "test")
    monkeypatch.delenv("CNNVIS_CONTENT", raising=False)
    assert helpers.drive_mountpoint().as_posix() == "/content/drive"  # Colab's own place (Files pane)
    monkeypatch.setenv("CNNVIS_CONTENT", str(tmp_path))
    assert helpers.project_paths(create=False).root == tmp_path / "cnn-vis"  # not mounted: local disk
    (tmp_path / "drive" / "MyDrive").mkdir(parents=True)
    paths = helpers.project_paths(create=False)
    assert paths.root == tmp_path / "drive" / "MyDrive" / "cnn-vis"
    assert paths.models == paths.root / "models" and paths.figures == paths.root / "figures"


def test_image_sets_live_on_the_machines_disk_only_when_data_is_on_drive(monkeypatch, tmp_path):
    from cnnvis.paths import machine_data_dir

    assert machine_data_dir(tmp_path / "data") == tmp_path / "data"  # not in Colab: the data folder itself
    monkeypatch.setenv("COLAB_RELEASE_TAG", "test")
    monkeypatch.setenv("CNNVIS_CONTENT", str(tmp_path))
    assert machine_data_dir(tmp_path / "drive" / "MyDrive" / "cnn-vis" / "data") == tmp_path / "cnn-vis-data"
    assert machine_data_dir(tmp_path / "cnn-vis" / "data") == tmp_path / "cnn-vis" / "data"  # Drive declined


def test_describe_paths_shows_no_machine_path(project_home, monkeypatch):
    text = helpers.describe_paths(helpers.project_paths())
    assert text.splitlines() == ["    data: $CNNVIS_HOME/data", "  models: $CNNVIS_HOME/outputs/models",
                                 " figures: $CNNVIS_HOME/outputs/figures"]
    monkeypatch.delenv("CNNVIS_HOME")
    assert "<repository>/outputs/models" in helpers.describe_paths(helpers.project_paths(create=False))


def test_show_displays_saves_and_closes(project_home, capsys):
    fig = plt.figure()
    helpers.show(fig, save_as="shown")
    assert not plt.fignum_exists(fig.number) and (helpers.project_paths().figures / "shown.png").exists()
    fig = plt.figure()
    helpers.show(fig)
    assert not plt.fignum_exists(fig.number)


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("0", False), ("", False)])
def test_quick_mode(monkeypatch, value, expected):
    monkeypatch.setenv("CNNVIS_QUICK", value)
    assert helpers.quick_mode() is expected


def test_training_seed_reads_cnnvis_seed(monkeypatch):
    monkeypatch.delenv("CNNVIS_SEED", raising=False)
    assert helpers.training_seed() == 0
    monkeypatch.setenv("CNNVIS_SEED", " 3 ")
    assert helpers.training_seed() == 3
    monkeypatch.setenv("CNNVIS_SEED", "-1")
    with pytest.raises(ValueError, match="CNNVIS_SEED must be a whole number"):
        helpers.training_seed()


def test_mount_drive_outside_colab_is_a_clear_error():
    with pytest.raises(RuntimeError, match="only inside Google Colab"):
        helpers.mount_drive()


def test_gpu_report_is_one_line():
    report = helpers.gpu_report()
    assert "\n" not in report and ("GPU" in report)


def test_runtime_report_names_versions_flags_and_gpu(monkeypatch):
    import sys

    import keras
    import tensorflow as tf

    monkeypatch.setenv("CNNVIS_QUICK", "1")
    first, second = helpers.runtime_report().split("\n")
    assert f"TensorFlow {tf.__version__}, Keras {keras.__version__}, Python {sys.version_info.major}." in first
    assert first.endswith("in Colab: False; quick mode: True")
    assert second == helpers.gpu_report()


def test_save_figure_writes_png_at_300_dpi(project_home):
    from PIL import Image

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1])
    path = helpers.save_figure(fig, "unit_test")
    plt.close(fig)
    assert path == helpers.project_paths().figures / "unit_test.png"
    with Image.open(path) as im:
        assert round(im.info["dpi"][0]) == 300


def test_save_figure_rejects_paths():
    fig = plt.figure()
    with pytest.raises(ValueError, match="plain file stem"):
        helpers.save_figure(fig, "../escape")
    plt.close(fig)


def test_in_colab_follows_colab_markers(monkeypatch):
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    assert helpers.in_colab() is False
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-2026")
    assert helpers.in_colab() is True


def _import_fake_tensorflow(tmp_path, body, log_level=None,
                            code="from cnnvis.runtime import import_tensorflow; print(import_tensorflow().__name__)"):
    """Run `code` in a fresh interpreter whose `tensorflow` is a stand-in package."""
    import os
    import subprocess
    import sys

    fake = tmp_path / "fake" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("import os\nos.write(2, b'I0000 port.cc] oneDNN custom operations are on\\n')\n"
                                      "class config:\n    list_physical_devices = staticmethod(\n"
                                      "        lambda kind: os.write(2, b'E0000 cuda_platform.cc] failed call to cuInit\\n') and [])\n"
                                      + body)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if log_level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = log_level
    env["PYTHONPATH"] = os.pathsep.join([str(fake.parent), str(helpers.REPO_ROOT)])
    return subprocess.run([sys.executable, "-c", code],
                          env=env, capture_output=True, text=True, timeout=60)


def test_tensorflow_import_lines_are_kept_out_by_default(tmp_path):
    run = _import_fake_tensorflow(tmp_path, "")
    assert run.returncode == 0 and run.stdout.strip() == "tensorflow"
    assert "oneDNN" not in run.stderr and "cuInit" not in run.stderr  # the CUDA probe is captured too


def test_tensorflow_import_lines_shown_when_user_asks(tmp_path):
    run = _import_fake_tensorflow(tmp_path, "", log_level="0")
    assert run.returncode == 0 and "oneDNN" in run.stderr


def test_failed_tensorflow_import_replays_its_output(tmp_path):
    run = _import_fake_tensorflow(tmp_path, "raise ImportError('libcudart.so.12: cannot open shared object file')")
    assert run.returncode != 0
    assert "oneDNN" in run.stderr and "libcudart" in run.stderr


def test_without_tensorflow_the_error_says_to_switch_runtime(tmp_path):
    """Issue 8: Colab's TPU runtime has no TensorFlow; the user gets one line saying what to do."""
    run = _import_fake_tensorflow(tmp_path, "raise ModuleNotFoundError(\"No module named 'tensorflow'\", name='tensorflow')",
                                  code="import helpers")  # at the setup cell, before anything else
    assert run.returncode != 0
    assert "ImportError: TensorFlow is not installed in this Python. In Colab, a TPU runtime has none" in run.stderr
