import os


def log(line: str) -> None:
    if os.environ.get("STANDIN_LOG"):
        with open(os.environ["STANDIN_LOG"], "a") as handle:
            handle.write(line + "\n")
