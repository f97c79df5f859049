"""Where data, models and figures live: $CNNVIS_HOME, Google Drive in Colab, or the repository."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

from cnnvis.colab import content_dir, drive_mountpoint, in_colab, local_fallback, mount_drive

REPO_ROOT = Path(__file__).resolve().parents[1]
HOME_ENV = "CNNVIS_HOME"


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


def machine_data_dir(data) -> Path:
    """Where the notebooks keep and read image sets: in Colab, when `data` is on Google Drive, the
    machine's own disk, <content>/cnn-vis-data (lost with the machine: Drive keeps one archive per
    set, see cnnvis.archives); otherwise `data` itself."""
    data = Path(data)
    return content_dir() / "cnn-vis-data" if in_colab() and data.is_relative_to(drive_mountpoint()) else data
