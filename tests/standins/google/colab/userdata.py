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
    """Colab's behaviour: a secret that exists but is not shared opens a "grant access" pop-up;
    STANDIN_POPUP says what the user does: "grant" (the value is returned), "deny" (the default:
    NotebookAccessError) or "ignore" (no click within Colab's 10 s: TimeoutException)."""
    secrets = json.loads(os.environ.get("STANDIN_SECRETS") or "{}")
    unshared = [s for s in os.environ.get("STANDIN_UNSHARED", "").split(",") if s]
    log(f"userdata.get {key}")
    if key not in secrets:
        raise SecretNotFoundError(key)
    if key in unshared:
        answer = os.environ.get("STANDIN_POPUP", "deny")
        log(f"userdata.popup {key}: {answer}")
        if answer == "ignore":
            raise TimeoutException(key)
        if answer != "grant":
            raise NotebookAccessError(key)
    return secrets[key]
