"""Kaggle: credentials (current API tokens and legacy keys) and the CLI download, with its progress.

Kaggle's *Generate New Token* gives one API token, read by the CLI from KAGGLE_API_TOKEN; the
older user-name/key pair (KAGGLE_USERNAME, KAGGLE_KEY, or kaggle.json) is the legacy key. Both are
accepted: from the environment, then the CLI's own files, then Colab secrets, one at a time (each
unshared secret costs the user a pop-up). Values are handed to the CLI's environment only: never
printed, never written.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from cnnvis.colab import colab_secret, in_colab

FALLBACK = "the notebooks use the offline toy pets instead (see data_README.md)."
COMPETITION = "dogs-vs-cats"
TOKEN_CLI = (1, 8)  # the first Kaggle CLI that reads API tokens (KAGGLE_API_TOKEN, access_token)


def _credential_files() -> list[Path]:
    """The credential files the Kaggle CLI reads: kagglesdk's ~/.kaggle/access_token (API token;
    not ~/.config/kaggle/), then kaggle.json (legacy key) in KAGGLE_CONFIG_DIR or ~/.kaggle or
    ~/.config/kaggle."""
    home = Path.home()
    configs = ([Path(os.environ["KAGGLE_CONFIG_DIR"])] if os.environ.get("KAGGLE_CONFIG_DIR")
               else [home / ".kaggle", home / ".config" / "kaggle"])
    return [home / ".kaggle" / "access_token", *(folder / "kaggle.json" for folder in configs)]


def _ask_colab(name: str) -> str | None:
    """A Colab secret's value, None when it does not exist; RuntimeError with one line when the
    notebook may not read it (the pop-up was refused, or not answered in time)."""
    value, problem = colab_secret(name)
    if problem:
        raise RuntimeError(f"Kaggle download skipped: {problem}; {FALLBACK}")
    return value


def kaggle_credentials() -> tuple[dict, str]:
    """(environment for the Kaggle CLI, where the credentials came from, without their values).

    The first usable one wins, asked for one at a time: KAGGLE_API_TOKEN, then KAGGLE_USERNAME +
    KAGGLE_KEY in the environment; the CLI's files (_credential_files); then the Colab secrets
    KAGGLE_API_TOKEN, KAGGLE_USERNAME, KAGGLE_KEY, each asked only when the one before does not
    exist, so a user sees at most the pop-ups of the credential that is used. Raises
    RuntimeError with one line when there are none, or when a secret's pop-up was refused or
    timed out (grant access, then run the cell again).
    """
    env = dict(os.environ)
    if env.get("KAGGLE_API_TOKEN"):
        return env, "the environment variable KAGGLE_API_TOKEN"
    if env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY"):
        return env, "the environment variables KAGGLE_USERNAME and KAGGLE_KEY (legacy key)"
    for file in _credential_files():
        if file.is_file():
            return env, f"the file {file}"
    if in_colab():
        token = _ask_colab("KAGGLE_API_TOKEN")
        if token:
            return {**env, "KAGGLE_API_TOKEN": token}, "the Colab secret KAGGLE_API_TOKEN"
        user = _ask_colab("KAGGLE_USERNAME")
        key = _ask_colab("KAGGLE_KEY") if user else None
        if user and key:
            return ({**env, "KAGGLE_USERNAME": user, "KAGGLE_KEY": key},
                    "the Colab secrets KAGGLE_USERNAME and KAGGLE_KEY (legacy key)")
        if user:
            raise RuntimeError(f"Kaggle download skipped: the Colab secret KAGGLE_USERNAME has no KAGGLE_KEY beside "
                               f"it (add it, or use an API token as the secret KAGGLE_API_TOKEN); {FALLBACK}")
    where = ("add your API token as the Colab secret KAGGLE_API_TOKEN (key icon in the left bar, 'Notebook access' on)"
             if in_colab() else "set KAGGLE_API_TOKEN or put your token in ~/.kaggle/access_token")
    raise RuntimeError(f"Kaggle download skipped: no Kaggle credentials ({where}); {FALLBACK}")


def cli_version() -> tuple[int, ...] | None:
    """The installed Kaggle CLI's version, (1, 7, 4, 5) from "Kaggle API 1.7.4.5"; None when it does not say."""
    try:
        done = subprocess.run(["kaggle", "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"(\d+(?:\.\d+)+)", done.stdout) if done.returncode == 0 else None
    return tuple(int(part) for part in found.group(1).split(".")) if found else None


def _check_token_support(env: dict, source: str) -> None:
    """API tokens need the Kaggle CLI 1.8 or newer; Colab's 2026.01 runtime ships 1.7.4.5."""
    uses_token = "KAGGLE_API_TOKEN" in source or source.endswith("access_token")
    version = cli_version() if uses_token else None
    if version is not None and version < TOKEN_CLI:
        raise RuntimeError(f"Kaggle download skipped: the Kaggle CLI here is {'.'.join(map(str, version))}, which "
                           f"cannot use API tokens (they need {'.'.join(map(str, TOKEN_CLI))} or newer): run "
                           "`!pip install -q --upgrade kaggle` in a cell and run this one again, or use the legacy "
                           f"key (KAGGLE_USERNAME and KAGGLE_KEY); {FALLBACK}")


def _relay(stream, secrets: list[str], tail: list[str]) -> None:
    """Copy the CLI's output to this process's stdout as it comes (progress bars included), with
    any credential replaced by ***; keep the last lines in `tail`."""
    pending = b""
    while chunk := os.read(stream.fileno(), 4096):
        pending += chunk
        cut = max(pending.rfind(b"\n"), pending.rfind(b"\r")) + 1
        if not cut:
            continue
        text, pending = pending[:cut].decode(errors="replace"), pending[cut:]
        for secret in secrets:
            text = text.replace(secret, "***")
        sys.stdout.write(text)
        sys.stdout.flush()
        tail[:] = (tail + [line for line in text.replace("\r", "\n").splitlines() if line.strip()])[-5:]
    if pending:
        text = pending.decode(errors="replace")
        for secret in secrets:
            text = text.replace(secret, "***")
        sys.stdout.write(text + "\n")
        tail.append(text.strip())


def download_competition(dest, competition: str = COMPETITION) -> Path:
    """Download a Kaggle competition's files as dest/<competition>.zip with the Kaggle CLI and
    return that path; an existing valid zip is reused. The CLI's progress is shown as it comes.

    Raises RuntimeError with one line (what failed, and that toy pets are the fallback) when the
    CLI, the credentials, the network or the competition's rules get in the way.
    """
    dest = Path(dest)
    target = dest / f"{competition}.zip"
    if target.is_file() and zipfile.is_zipfile(target):
        return target
    if shutil.which("kaggle") is None:
        raise RuntimeError(f"Kaggle download skipped: the Kaggle CLI is not installed (pip install kaggle); {FALLBACK}")
    env, source = kaggle_credentials()
    _check_token_support(env, source)
    secrets = [env[k] for k in ("KAGGLE_API_TOKEN", "KAGGLE_KEY") if env.get(k)]
    dest.mkdir(parents=True, exist_ok=True)
    print(f"Downloading Kaggle's {competition} into {dest} with credentials from {source}:")
    command = ["kaggle", "competitions", "download", competition, "-p", str(dest)]
    tail: list[str] = []
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as process:
        _relay(process.stdout, secrets, tail)
        code = process.wait()
    if code != 0 or not (target.is_file() and zipfile.is_zipfile(target)):
        reason = tail[-1][:200] if tail else f"exit status {code}, no message"
        hint = " (accept the competition's rules on kaggle.com first)" if "403" in reason or "rules" in reason else ""
        if target.is_file():  # kept: the CLI resumes a partial download
            hint += f"; the partial {target.name} is kept and the next run resumes it"
        raise RuntimeError(f"Kaggle download failed: {reason}{hint}; {FALLBACK}")
    return target
