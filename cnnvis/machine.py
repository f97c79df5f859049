"""The machine the notebooks run on: versions, GPUs and the distribution strategy."""

from __future__ import annotations

import sys

import keras

from cnnvis.colab import in_colab
from cnnvis.mode import quick_mode
from cnnvis.runtime import import_tensorflow

tf = import_tensorflow()


def training_strategy(devices=None):
    """A tf.distribute strategy: MirroredStrategy over `devices` (default: the visible GPUs)
    when there are two or more, otherwise the default single-device strategy."""
    if devices is None:
        devices = [d.name.replace("physical_device:", "") for d in tf.config.list_physical_devices("GPU")]
    if len(devices) > 1:
        return tf.distribute.MirroredStrategy(devices=list(devices))
    return tf.distribute.get_strategy()


def gpu_report() -> str:
    """One line naming the visible GPUs, or saying there are none and how to get one in Colab."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = []
        for gpu in gpus:
            details = tf.config.experimental.get_device_details(gpu)
            names.append(details.get("device_name", gpu.name))
        return f"GPU: {len(gpus)} visible ({', '.join(names)})."
    hint = (" In Colab: Runtime > Change runtime type > Hardware accelerator: GPU, then rerun."
            if in_colab() else " Training runs on the CPU (slower, fine in quick mode).")
    return "No GPU visible." + hint


def runtime_report() -> str:
    """Two lines: TensorFlow, Keras and Python versions with the Colab and quick-mode flags; then gpu_report()."""
    python = ".".join(map(str, sys.version_info[:3]))
    return (f"TensorFlow {tf.__version__}, Keras {keras.__version__}, Python {python}; "
            f"in Colab: {in_colab()}; quick mode: {quick_mode()}\n{gpu_report()}")
