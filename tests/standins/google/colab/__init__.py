"""Test stand-in for Colab's google.colab package (see tests/standins/README.md)."""
from google.colab import drive, files, output, userdata  # noqa: F401
