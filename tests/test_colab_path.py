"""The user's path, end to end and offline: each notebook opened "in Colab" on a fresh machine.

Each notebook runs under nbconvert in its own fresh /content (CNNVIS_CONTENT), with the test-only
google.colab imported at kernel start (as Colab does), Drive backed by one folder that outlives
the machines, the repository cloned by the setup cell from a local copy of this working tree
(CNNVIS_REPO_URL), and the Kaggle CLI stand-in serving a Kaggle-shaped archive. First visit: no
Kaggle token, so 00 and 01 run on toy pets, drawn on each machine's disk, and leave their
checkpoint on Drive. Second visit: a KAGGLE_API_TOKEN secret, so 00 downloads and prepares the
real data and leaves one archive of it on Drive, which 01, 02 and 04 unpack and use
(03 finds its model exactly as 02 does, and nbval runs it in the other lane).

Runs in the Colab-versions lane of .ci/run (CNNVIS_COLAB_PATH=1); about seven minutes.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
STANDINS = REPO / "tests" / "standins"
TOKEN = "KGAT_standin_token_0123456789"

pytestmark = pytest.mark.skipif(os.environ.get("CNNVIS_COLAB_PATH") != "1",
                                reason="the Colab lane of .ci/run runs this (CNNVIS_COLAB_PATH=1)")


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    base = tmp_path_factory.mktemp("colab")
    remote = base / "github"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (remote / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, remote / name)
    git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost"]
    subprocess.run(["git", "init", "--quiet", "-b", "main"], cwd=remote, check=True)
    subprocess.run(git + ["add", "-A"], cwd=remote, check=True)
    subprocess.run(git + ["commit", "--quiet", "-m", "snapshot"], cwd=remote, check=True)
    shutil.copytree(STANDINS / "ipython", base / "ipython")
    sys.path.insert(0, str(STANDINS))
    from kaggle_archive import write_kaggle_archive

    archive = write_kaggle_archive(base / "dogs-vs-cats.zip", per_class=210)
    return SimpleNamespace(base=base, remote=remote, archive=archive, drive=base / "mydrive", log=base / "standin.log",
                           visits=[])


def run_notebook(machine, name, secrets=None):
    """Run notebooks/<name> as Colab would on a fresh machine; return (all output text, content folder)."""
    content = machine.base / f"machine{len(machine.visits)}" / "content"
    content.mkdir(parents=True)
    machine.visits.append(name)
    shutil.copy(REPO / "notebooks" / name, content / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CNNVIS_", "KAGGLE_", "STANDIN_"))}
    # CNNVIS_OFFLINE: this "Colab" has no internet, so ImageNet weights are random without a download
    # (real Colab retries a failed download once and stops; tests/test_activations.py tests that)
    env.update(CNNVIS_QUICK="1", CNNVIS_OFFLINE="1", CNNVIS_CONTENT=str(content), CNNVIS_REPO_URL=str(machine.remote),
               CNNVIS_REPO_REF="main", PYTHONPATH=str(STANDINS), IPYTHONDIR=str(machine.base / "ipython"),
               STANDIN_DRIVE=str(machine.drive), STANDIN_LOG=str(machine.log), STANDIN_ARCHIVE=str(machine.archive),
               STANDIN_SECRETS=json.dumps(secrets or {}), HOME=str(machine.base / "home"),
               PATH=f"{STANDINS / 'bin'}{os.pathsep}{env['PATH']}")
    run = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", "--inplace",
                          "--ExecutePreprocessor.timeout=900", name], cwd=content, env=env, capture_output=True,
                         text=True, timeout=1200)
    assert run.returncode == 0, f"{name} failed on the Colab path:\n{run.stderr[-3000:]}"
    notebook = json.loads((content / name).read_text())
    text = "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                   for c in notebook["cells"] for o in c.get("outputs", []))
    assert TOKEN not in text
    assert text.rstrip().endswith("Google Drive flushed and unmounted: the next notebook will find everything this one saved.")
    assert (content / "cnn-vis-notebooks" / "helpers.py").exists()  # cloned by the setup cell
    return text, content


def test_first_visit_without_a_kaggle_token_trains_on_toy_pets(machine):
    text, _ = run_notebook(machine, "00_setup.ipynb")
    assert "Mounted at" in text and "in Colab: True" in text
    assert "Kaggle download skipped: no Kaggle credentials (add your API token as the Colab secret KAGGLE_API_TOKEN" in text
    assert not (machine.drive / "cnn-vis" / "data" / "toy_pets_150_50_160px").exists()  # never on Drive
    text, content = run_notebook(machine, "01_train_mini_vgg.ipynb")
    assert (content / "cnn-vis-data" / "toy_pets_150_50_160px" / "boxes.csv").exists()  # drawn on the machine
    assert "Model mini_vgg_toy_pets_150_50_160px_quick.keras: trained on toy_pets_150_50_160px (150 + 50 images " \
           "per class) for 10 epochs" in text
    log = machine.log.read_text()
    assert "output.enable_custom_widget_manager" in log and "drive.flush_and_unmount" in log


def test_with_a_kaggle_token_all_notebooks_run_on_the_real_photos(machine):
    toy = machine.drive / "cnn-vis" / "models" / "mini_vgg_toy_pets_150_50_160px_quick.keras"
    stamp = toy.stat().st_mtime_ns
    secrets = {"KAGGLE_API_TOKEN": TOKEN}
    text, content = run_notebook(machine, "00_setup.ipynb", secrets)
    assert "credentials from the Colab secret KAGGLE_API_TOKEN" in text and "100%|" in text
    assert "real data ready: {'cats': {'train': 150, 'validation': 50}, 'dogs': {'train': 150, 'validation': 50}}" in text
    assert f"kaggle competitions download dogs-vs-cats -p {content}/downloads | credentials: token" in machine.log.read_text()
    assert not (content / "downloads" / "dogs-vs-cats.zip").exists()  # local disk, removed after preparing
    assert sorted(p.name for p in (machine.drive / "cnn-vis" / "data").iterdir()) == ["dogs-vs-cats-quick.zip"]
    real = "Model mini_vgg_dogs-vs-cats-quick_quick.keras: trained on dogs-vs-cats-quick (150 + 50 images per class)"
    text, _ = run_notebook(machine, "01_train_mini_vgg.ipynb", secrets)
    assert real in text and "real dogs-vs-cats photos (dogs-vs-cats-quick" in text
    assert "Unpacked 401 files" in text and "MB/s" in text  # the fresh machine unpacked Drive's archive
    assert real in run_notebook(machine, "02_activations.ipynb", secrets)[0]  # 03 loads the model the same way
    text, _ = run_notebook(machine, "04_grad_cam.ipynb", secrets)
    assert real in text and "Model mini_vgg_toy_pets_150_50_160px_quick.keras: trained on toy_pets" in text
    assert (machine.drive / "cnn-vis" / "figures" / "04_mini_vgg_own_data.png").exists()
    assert toy.stat().st_mtime_ns == stamp  # the toy checkpoint was used, neither retrained nor overwritten
