"""Google Colab: where things live there, Google Drive, and Colab secrets.

Colab's own conventions are followed: Drive is mounted at /content/drive (where the Files pane
mounts it too), an existing mount is reused (mounting a second time elsewhere kills the first),
and a notebook that wrote to Drive flushes it at the end so that the next notebook, on a fresh
virtual machine, finds the files. CNNVIS_CONTENT moves /content (the tests' Colab stand-in).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

CONTENT_ENV = "CNNVIS_CONTENT"

# What mount_drive() decided in this kernel: {"drive": Path or None}; None means the local fallback.
_MOUNT: dict = {}


def in_colab() -> bool:
    """True inside Google Colab (its kernel imports google.colab at start-up)."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def content_dir() -> Path:
    """Colab's working folder, /content (CNNVIS_CONTENT overrides it)."""
    return Path(os.environ.get(CONTENT_ENV, "/content"))


def drive_mountpoint() -> Path:
    """Where Colab mounts Google Drive: <content>/drive, holding MyDrive/ once mounted."""
    return content_dir() / "drive"


def local_fallback() -> Path:
    """The project folder on the Colab machine's own disk, used when Drive is not mounted."""
    return content_dir() / "cnn-vis"


def mount_drive() -> Path | None:
    """Mount Google Drive in Colab and return its MyDrive folder, or None when it cannot be had.

    An existing mount (from the Files pane or an earlier cell) is reused as it is. When mounting
    fails or the user declines, one line says so and None is returned: the caller then works in
    local_fallback(), whose files are lost when the runtime ends. The decision is kept for the
    kernel's lifetime, so the user is asked at most once. Outside Colab: RuntimeError.
    """
    if not in_colab():
        raise RuntimeError("mount_drive() works only inside Google Colab; locally use project_paths().")
    my_drive = drive_mountpoint() / "MyDrive"
    if my_drive.is_dir():
        _MOUNT["drive"] = my_drive
        return my_drive
    if "drive" in _MOUNT and _MOUNT["drive"] is None:
        return None
    from google.colab import drive  # noqa: PLC0415  (exists only in Colab)

    try:
        drive.mount(str(drive_mountpoint()))
    except Exception as exc:  # declined, timed out, or Drive refused: Colab raises several types
        print(f"Google Drive is not mounted ({type(exc).__name__}: {exc}); working in {local_fallback()} instead, "
              "which is lost when the runtime ends.")
        _MOUNT["drive"] = None
        return None
    _MOUNT["drive"] = my_drive if my_drive.is_dir() else None
    return _MOUNT["drive"]


def flush_drive() -> str:
    """Push pending writes to Google Drive and unmount it; return one line saying what happened.

    Call it at the end of a notebook that wrote data, models or figures: Colab writes to Drive
    lazily, and the next notebook runs on a fresh machine. Outside Colab, or without a mount,
    nothing is done.
    """
    if not in_colab() or not (drive_mountpoint() / "MyDrive").is_dir():
        return "Nothing to flush: this run does not write to Google Drive."
    from google.colab import drive  # noqa: PLC0415

    print("Flushing Google Drive: uploading what this notebook wrote (a minute or more after training) ...", flush=True)
    drive.flush_and_unmount()
    _MOUNT.clear()
    return "Google Drive flushed and unmounted: the next notebook will find everything this one saved."


def colab_secret(name: str) -> tuple[str | None, str | None]:
    """(value, problem) for the Colab secret `name`: (value, None) when it can be read, (None, None)
    when it does not exist or outside Colab, (None, one-line explanation saying what to do) when
    it exists but this notebook has no access to it: Colab shows a pop-up asking the user to grant
    access, and raises when it is refused or not answered in time."""
    if not in_colab():
        return None, None
    from google.colab import userdata  # noqa: PLC0415

    try:
        return userdata.get(name), None
    except userdata.NotebookAccessError:
        return None, (f"the Colab secret {name} exists but is not shared with this notebook: grant access in the "
                      "pop-up Colab shows (or switch on 'Notebook access' for it under the key icon in the left "
                      "bar), then run this cell again")
    except userdata.SecretNotFoundError:
        return None, None
    except Exception as exc:  # userdata.TimeoutException: the pop-up was not answered within Colab's 10 s
        return None, (f"reading the Colab secret {name} gave up ({type(exc).__name__}; Colab waits about 10 s for "
                      "its access pop-up): grant access in the pop-up, then run this cell again")
