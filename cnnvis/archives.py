"""A prepared image set as one archive on Google Drive, unpacked to the machine's own disk.

Drive is slow with thousands of small files: each is uploaded on its own when Drive is flushed,
and read back one by one through Drive's file system on every fresh machine. One archive is one
upload; unpacking it to /content takes seconds and every later read is local.
"""

from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import keras

from cnnvis.files import build_then_rename


def pack(folder, archive) -> Path:
    """Write every file under `folder` into the zip `archive` (stored: JPEGs do not compress), as
    paths relative to `folder`; return `archive`. Written beside it first and renamed into place,
    so an interrupted run never leaves a truncated archive under the real name."""
    folder, archive = Path(folder), Path(archive)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    partial = archive.with_name(archive.name + ".partial")
    start = time.perf_counter()
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as out:
        for file in files:
            out.write(file, file.relative_to(folder).as_posix())
    os.replace(partial, archive)
    size = archive.stat().st_size / 1e6
    print(f"Packed {len(files)} files ({size:.0f} MB) into {archive.name} in {time.perf_counter() - start:.1f} s: "
          "Drive keeps this one file; each notebook unpacks it to the machine's own disk.")
    return archive


def read_member(archive, name: str) -> bytes | None:
    """The bytes of `name` inside the zip `archive`, or None when the archive or the member is missing or unreadable."""
    try:
        with zipfile.ZipFile(archive) as source:
            return source.read(name)
    except (OSError, KeyError, zipfile.BadZipFile):
        return None


def unpack(archive, dest, progress: bool = True) -> Path:
    """Extract the zip `archive` into the folder `dest` (missing or empty), whole or not at all
    (files.build_then_rename), with a progress bar over the files; then one line with the count,
    size, time and rate measured. Returns `dest`. A damaged archive is a ValueError saying what to do."""
    archive, dest = Path(archive), Path(dest)
    start = time.perf_counter()

    def extract(tmp: Path) -> None:
        with zipfile.ZipFile(archive) as source:
            members = [m for m in source.infolist() if not m.is_dir()]
            bar = keras.utils.Progbar(len(members), unit_name="file") if progress else None
            for i, member in enumerate(members, start=1):
                source.extract(member, tmp)
                if bar is not None and (i % 100 == 0 or i == len(members)):
                    bar.update(i)

    try:
        build_then_rename(dest, extract)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{archive} is damaged ({exc}): delete it and run notebook 00 again, which rebuilds it.") from None
    seconds = time.perf_counter() - start
    size = archive.stat().st_size / 1e6
    count = sum(1 for p in dest.rglob("*") if p.is_file())
    print(f"Unpacked {count} files ({size:.0f} MB) from {archive.name} to {dest} in {seconds:.1f} s "
          f"({size / max(seconds, 1e-6):.0f} MB/s).")
    return dest
