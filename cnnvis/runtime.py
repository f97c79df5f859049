"""TensorFlow's start-up kept out of notebook cells, and the inline figure format."""

from __future__ import annotations

import os
import sys
import tempfile

import matplotlib.pyplot as plt

# TensorFlow's C++ runtime warnings (such as "Allocation exceeds 10% of free system memory",
# which depend on the machine's load) would otherwise land in whichever notebook cell is running.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


NO_TENSORFLOW = ("TensorFlow is not installed in this Python. In Colab, a TPU runtime has none: choose Runtime > "
                 "Change runtime type > T4 GPU (or CPU) and run again; locally: pip install -r requirements.txt.")


def import_tensorflow():
    """Import TensorFlow once and return the module, keeping its start-up lines out of notebooks.

    TF 2.21 writes absl and oneDNN banners straight to file descriptor 2 while it is imported,
    whatever TF_CPP_MIN_LOG_LEVEL says; a notebook shows them as a red block in whichever cell
    first needs TensorFlow. While TF_CPP_MIN_LOG_LEVEL >= 2 (our default) they are captured and
    dropped; if the import fails they are printed before the error is raised. Without TensorFlow
    (Colab's TPU runtime) the ImportError says in one line what to switch to.
    """
    if "tensorflow" in sys.modules or int(os.environ.get("TF_CPP_MIN_LOG_LEVEL") or 0) < 2:
        return _import_tensorflow()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as captured:
        saved_fd = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            return _import_tensorflow()
        finally:
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            if "tensorflow" not in sys.modules:  # the import failed: show what TF printed
                captured.seek(0)
                sys.stderr.write(captured.read().decode(errors="replace"))


def _import_tensorflow():
    try:
        import tensorflow  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        if exc.name != "tensorflow":
            raise
        raise ImportError(NO_TENSORFLOW) from None
    tensorflow.config.list_physical_devices("GPU")  # the CUDA probe logs too ("failed call to cuInit")
    return tensorflow


class QuietRetracing:
    """Silence TensorFlow's "N of the last M calls triggered retracing" warning: it counts traces
    across the separate compiled functions made for each (model, layer), which is expected here,
    and it would put a changing memory address into notebook outputs."""

    def __enter__(self):
        self.logger = import_tensorflow().get_logger()
        self.level = self.logger.level
        self.logger.setLevel("ERROR")

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)


def inline_figures(dpi: int = 72, quality: int = 75) -> None:
    """Show a notebook's figures at screen resolution as JPEG: noisy activation grids compress about
    5x better than PNG, which keeps the notebooks small (save_figure still writes 300-dpi PNGs).
    The setup cell calls this; importing helpers changes no matplotlib setting."""
    from IPython import get_ipython  # noqa: PLC0415  (Jupyter's, absent from a plain Python)
    from matplotlib_inline.backend_inline import set_matplotlib_formats  # noqa: PLC0415

    plt.rcParams["figure.dpi"] = dpi
    if get_ipython() is not None:
        set_matplotlib_formats("jpeg", pil_kwargs={"quality": quality})
