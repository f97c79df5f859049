"""google.colab.userdata stand-in: Colab secrets, with Colab's exception classes."""
import json
import os

from google.colab._log import log


class NotebookAccessError(Exception):
    def __init__(self, key):
        super().__init__(f"Notebook does not have access to secret {key}")


class SecretNotFoundError(Exception):
    def __init__(self, key):
        super().__init__(f"Secret {key} does not exist.")


class TimeoutException(Exception):
    def __init__(self, key):
        super().__init__(f"Requesting secret {key} timed out.")


def get(key):
    secrets = json.loads(os.environ.get("STANDIN_SECRETS") or "{}")
    unshared = [s for s in os.environ.get("STANDIN_UNSHARED", "").split(",") if s]
    log(f"userdata.get {key}")
    if key in unshared:
        raise NotebookAccessError(key)
    if key not in secrets:
        raise SecretNotFoundError(key)
    return secrets[key]
