"""Activations: vectorised tiling vs the seeds' nested loops; one forward pass vs one model per layer.

1. Tiling a 512-channel 28x28 map and a 2048-channel 7x7 map into a 16-per-row grid:
   helpers.tile_channels vs the seeds' per-channel Python loop (best of 5 runs each).
2. Activations of all 53 ResNet50 convolution layers for one 224x224 image:
   helpers.get_activations (one multi-output model, one pass) vs one Model per layer, each
   predicted separately (the seeds' pattern applied layer by layer); model building included.
Usage: python bench/bench_activations.py
"""
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from timing import best_of  # noqa: E402

import helpers  # noqa: E402


def seed_grid(fmap, images_per_row=16):
    """Seed 001's loop, verbatim in logic (drops channels beyond a multiple of 16)."""
    size, n_features = fmap.shape[0], fmap.shape[-1]
    n_cols = n_features // images_per_row
    display_grid = np.zeros((size * n_cols, images_per_row * size))
    for col in range(n_cols):
        for row in range(images_per_row):
            channel_image = fmap[:, :, col * images_per_row + row].copy()
            channel_image -= channel_image.mean()
            channel_image /= channel_image.std()
            channel_image *= 64
            channel_image += 128
            channel_image = np.clip(channel_image, 0, 255).astype("uint8")
            display_grid[col * size:(col + 1) * size, row * size:(row + 1) * size] = channel_image
    return display_grid


def main():
    rng = np.random.default_rng(0)
    print("tiling (16 per row), best of 5:")
    for shape in ((28, 28, 512), (7, 7, 2048)):
        fmap = rng.normal(size=shape).astype("float32")
        assert np.abs(helpers.tile_channels(fmap).astype(int) - seed_grid(fmap)).max() <= 1  # float rounding
        ours, seeds = best_of(lambda: helpers.tile_channels(fmap), 5), best_of(lambda: seed_grid(fmap), 5)
        print(f"  {shape}: ours {ours * 1e3:7.2f} ms  seeds' loop {seeds * 1e3:7.2f} ms  ratio {seeds / ours:6.1f}x")

    import keras

    resnet = helpers.load_pretrained("resnet50", include_top=False, weights=None, input_shape=(224, 224, 3))
    names = helpers.layer_names(resnet, "conv")
    image = rng.uniform(0, 255, (1, 224, 224, 3)).astype("float32")
    helpers.get_activations(resnet, image, names[:1])  # warm-up: TF start-up costs
    start = time.perf_counter()
    ours = helpers.get_activations(resnet, image, names)
    one_pass = time.perf_counter() - start
    start = time.perf_counter()
    for name in names:
        per_layer = keras.Model(resnet.inputs[0], resnet.get_layer(name).output)
        per_layer.predict(image, verbose=0)
    separate = time.perf_counter() - start
    print(f"ResNet50, all {len(names)} conv layers, one 224x224 image:")
    print(f"  one pass {one_pass:6.2f} s  one model per layer {separate:6.2f} s  ratio {separate / one_pass:6.1f}x")
    assert len(ours) == 53


if __name__ == "__main__":
    main()
