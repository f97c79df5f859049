"""Folders built whole or not at all."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path


def build_then_rename(dest, build) -> Path:
    """Run build(folder) in a temporary folder beside `dest`, then move the result to `dest`.

    An interrupted build leaves nothing at `dest`, and the partial folders earlier interrupted
    builds left beside it (.<name>.partial-*, hidden) are removed first. `dest` may be missing or an empty folder (a user
    often creates it first); anything else raises FileExistsError and is left untouched. Where a
    rename cannot be done (some network and Drive mounts refuse renames of folders), the result is
    copied and the temporary folder removed. Returns `dest`.
    """
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"{dest} already exists and is not empty; choose another destination or remove it yourself.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{dest.name}.partial-*"):  # left by a machine that died mid-build
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        build(tmp)
        if dest.exists():
            dest.rmdir()
        try:
            tmp.rename(dest)
        except OSError:
            try:
                shutil.copytree(tmp, dest)
            except BaseException:
                shutil.rmtree(dest, ignore_errors=True)
                raise
        return dest
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
