"""Image arrays: loading any picture as raw RGB pixels, batches, resizing, scaling and blurring maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cnnvis.runtime import import_tensorflow

tf = import_tensorflow()


def load_image(path_or_array, size=None) -> np.ndarray:
    """Load one image as float32 RGB (H, W, 3) in [0, 255], resized to `size` if given.

    Accepts a file path, a PIL image or a numpy array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4);
    uint8 arrays are taken as 0-255, float arrays with max <= 1 as 0-1. Grayscale, RGBA and
    palette images become RGB (alpha is dropped). `size` is an int or (height, width).
    """
    if isinstance(path_or_array, (str, Path)):
        path = Path(path_or_array)
        if not path.is_file():
            raise FileNotFoundError(f"Image file {path} does not exist.")
        try:
            with Image.open(path) as im:
                im.load()
                array = np.asarray(im.convert("RGB"), dtype=np.float32)
        except Exception as exc:
            raise ValueError(f"{path} is not a readable image ({type(exc).__name__}); "
                             "expected a JPEG, PNG, BMP or GIF file.") from None
    elif isinstance(path_or_array, Image.Image):
        array = np.asarray(path_or_array.convert("RGB"), dtype=np.float32)
    else:
        array = np.asarray(path_or_array)
        if array.ndim == 2:
            array = array[..., None]
        if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or 0 in array.shape:
            raise ValueError(f"Expected an image array of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); "
                             f"got shape {np.asarray(path_or_array).shape}.")
        if not np.isfinite(array).all():
            raise ValueError("Image array contains NaN or infinite values.")
        scale = 255.0 if array.dtype.kind == "f" and float(array.max()) <= 1.0 else 1.0
        array = array.astype(np.float32) * scale
        array = np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array[..., :3]
    if size is not None:
        height, width = (size, size) if isinstance(size, int) else size
        resized = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).resize((width, height), Image.BILINEAR)
        array = np.asarray(resized, dtype=np.float32)
    return np.ascontiguousarray(array, dtype=np.float32)


def as_batch(images) -> tuple[np.ndarray, bool]:
    array = np.asarray(images, dtype=np.float32)
    if array.ndim == 3:
        return array[None], True
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"Expected one image (H, W, 3) or a batch (N, H, W, 3) of raw RGB pixels; got shape {array.shape}.")
    return array, False


def minmax(maps) -> np.ndarray:
    """Scale each map (N, h, w) to [0, 1]; constant maps become 0."""
    maps = np.asarray(maps, np.float32)
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.divide(maps - low, span, out=np.zeros_like(maps), where=span > 0)


def resize_maps(maps, size) -> np.ndarray:
    """Resize maps (h, w) or (N, h, w) of any range to `size` (int or (H, W)) bilinearly: float32,
    values kept as they are (no clipping)."""
    array = np.asarray(maps, np.float32)
    single = array.ndim == 2
    if single:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"Expected heatmaps of shape (h, w) or (N, h, w); got {np.asarray(maps).shape}.")
    height, width = (size, size) if isinstance(size, int) else size
    out = tf.image.resize(array[..., None], (height, width), method="bilinear").numpy()[..., 0]
    return out[0] if single else out


def upsample_heatmap(heatmaps, size) -> np.ndarray:
    """Resize heatmaps (h, w) or (N, h, w) in [0, 1] to `size` (int or (H, W)) bilinearly; float32 in [0, 1]."""
    return np.clip(resize_maps(heatmaps, size), 0, 1)


def blur(images, sigma: float = 5.0) -> np.ndarray:
    """Gaussian blur (RISE's insertion start: sigma 5, an 11-pixel kernel), reflecting at the
    borders: float32 (N, H, W, 3) in [0, 255], the same shape as `images`."""
    batch, _ = as_batch(images)
    radius = int(np.ceil(sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    x = tf.pad(batch, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    rows = tf.constant(np.tile(taps[:, None, None, None], (1, 1, 3, 1)))
    x = tf.nn.depthwise_conv2d(x, rows, [1, 1, 1, 1], "VALID")
    x = tf.nn.depthwise_conv2d(x, tf.transpose(rows, (1, 0, 2, 3)), [1, 1, 1, 1], "VALID")
    return x.numpy()


def feature_map(fmap) -> np.ndarray:
    """Validate a feature map (H, W, C) or (1, H, W, C) and return it as float32 (H, W, C)."""
    array = np.asarray(fmap)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise ValueError(f"Expected a spatial feature map (H, W, C) or (1, H, W, C); got shape {array.shape}. "
                         "Dense and Flatten outputs have no spatial layout: pick a layer from "
                         "layer_names(model, kind='spatial'); for a batch, pass one image's map.")
    return array.astype(np.float32, copy=False)
