import google.colab  # noqa: F401  (Colab's kernel imports it at start-up)
