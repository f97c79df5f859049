"""Kaggle: credentials (current API tokens and legacy keys) and the CLI download, with its progress.

Kaggle's *Generate New Token* gives one API token, read by the CLI from KAGGLE_API_TOKEN; the
older user-name/key pair (KAGGLE_USERNAME, KAGGLE_KEY, or kaggle.json) is the legacy key. Both are
accepted, from Colab secrets first, then the environment, then the CLI's own files. Values are
handed to the CLI's environment only: never printed, never written.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from cnnvis.colab import colab_secret, in_colab

FALLBACK = "the notebooks use the offline toy pets instead (see data_README.md)."
COMPETITION = "dogs-vs-cats"


def _config_dirs() -> list[Path]:
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return [Path(os.environ["KAGGLE_CONFIG_DIR"])]
    return [Path.home() / ".kaggle", Path.home() / ".config" / "kaggle"]


def kaggle_credentials() -> tuple[dict, str]:
    """(environment for the Kaggle CLI, where the credentials came from, without their values).

    Order: Colab secret KAGGLE_API_TOKEN; Colab secrets KAGGLE_USERNAME + KAGGLE_KEY; the same
    names in the environment; ~/.kaggle/access_token; ~/.kaggle/kaggle.json. Raises RuntimeError
    with one line when there are none, naming a secret that exists but is not shared with the
    notebook.
    """
    env = dict(os.environ)
    problems = []
    secrets = {}
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        value, problem = colab_secret(name)
        if value:
            secrets[name] = value
        if problem:
            problems.append(problem)
    if "KAGGLE_API_TOKEN" in secrets:
        return {**env, "KAGGLE_API_TOKEN": secrets["KAGGLE_API_TOKEN"]}, "the Colab secret KAGGLE_API_TOKEN"
    if "KAGGLE_USERNAME" in secrets and "KAGGLE_KEY" in secrets:
        return ({**env, "KAGGLE_USERNAME": secrets["KAGGLE_USERNAME"], "KAGGLE_KEY": secrets["KAGGLE_KEY"]},
                "the Colab secrets KAGGLE_USERNAME and KAGGLE_KEY (legacy key)")
    if env.get("KAGGLE_API_TOKEN"):
        return env, "the environment variable KAGGLE_API_TOKEN"
    if env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY"):
        return env, "the environment variables KAGGLE_USERNAME and KAGGLE_KEY (legacy key)"
    for folder in _config_dirs():
        for file in ("access_token", "kaggle.json"):
            if (folder / file).is_file():
                return env, f"the file {folder / file}"
    where = ("add your API token as the Colab secret KAGGLE_API_TOKEN (key icon in the left bar, 'Notebook access' on)"
             if in_colab() else "set KAGGLE_API_TOKEN or put your token in ~/.kaggle/access_token")
    reason = "; ".join(problems) if problems else f"no Kaggle credentials ({where})"
    raise RuntimeError(f"Kaggle download skipped: {reason}; {FALLBACK}")


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
        target.unlink(missing_ok=True)
        raise RuntimeError(f"Kaggle download failed: {reason}{hint}; {FALLBACK}")
    return target
