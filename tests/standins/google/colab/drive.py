"""google.colab.drive stand-in with Colab's behaviour where the notebooks depend on it:

- a mountpoint that already holds MyDrive is "already mounted": a message, nothing else;
- mounting kills every other mount (Colab restarts its one Drive process);
- a declined authorisation raises;
- flush_and_unmount without a mount says so.
"My Drive" is the folder STANDIN_DRIVE, linked as <mountpoint>/MyDrive, so files persist from
one notebook (one fresh machine) to the next.
"""
import os
from pathlib import Path

from google.colab._log import log


def _mounts() -> list[Path]:
    """Mountpoints currently linked to STANDIN_DRIVE (kept in a file beside it)."""
    registry = Path(os.environ["STANDIN_DRIVE"] + ".mounts")
    lines = registry.read_text().splitlines() if registry.exists() else []
    return [Path(p) for p in lines if (Path(p) / "MyDrive").is_symlink()]


def _save(mounts) -> None:
    Path(os.environ["STANDIN_DRIVE"] + ".mounts").write_text("".join(f"{m}\n" for m in mounts))


def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
    mountpoint = Path(os.path.expanduser(str(mountpoint)))
    log(f"drive.mount {mountpoint}")
    if (mountpoint / "MyDrive").is_dir() and not force_remount:
        print(f'Drive already mounted at {mountpoint}; to attempt to forcibly remount, call '
              f'drive.mount("{mountpoint}", force_remount=True).')
        return
    for other in _mounts():  # Colab's single Drive process: a new mount ends the old one
        (other / "MyDrive").unlink()
    _save([])
    if os.environ.get("STANDIN_DRIVE_DECLINE") == "1":
        raise ValueError("mount failed: credential propagation was unsuccessful")
    if mountpoint.is_dir() and any(mountpoint.iterdir()):
        raise ValueError("Mountpoint must not already contain files")
    mountpoint.mkdir(parents=True, exist_ok=True)
    Path(os.environ["STANDIN_DRIVE"]).mkdir(parents=True, exist_ok=True)
    (mountpoint / "MyDrive").symlink_to(os.environ["STANDIN_DRIVE"], target_is_directory=True)
    _save([mountpoint])
    print(f"Mounted at {mountpoint}")


def flush_and_unmount(timeout_ms=24 * 60 * 60 * 1000):
    mounts = _mounts()
    log("drive.flush_and_unmount" + ("" if mounts else " (not mounted)"))
    if not mounts:
        print("Drive not mounted, so nothing to flush and unmount.")
        return
    for mountpoint in mounts:
        (mountpoint / "MyDrive").unlink()
    _save([])
