"""Grad-CAM: a batch of 32 images at 224 px, three ways, one run, on DenseNet169 (random weights) and on
EfficientNet-Lite0 (trained, offline).

1. ours: helpers.grad_cam -- one compiled function, the whole batch, per-image weights.
2. the Keras-example pattern: per image, eagerly, a GradientTape through a Model that returns
   [conv output, predictions] (the pattern most tutorials copy).
3. the floor: one plain batched forward + backward pass of the same model (compiled), i.e. the
   least any gradient method must cost.
Also Score-CAM's cost per image (the paper's variant), 256 masks: before (one forward pass per mask,
the loop of the paper's reference code) and after (masks scored in batches of 32, helpers.score_cam).
Usage: python bench/bench_grad_cam.py [--batch 32] [--models densenet169 efficientnet_lite0]
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from timing import best_of  # noqa: E402

import helpers  # noqa: E402

LAYERS = {"densenet169": "conv5_block32_concat", "efficientnet_lite0": "top_activation"}


def keras_example_cam(grad_model, image):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        conv_out, preds = grad_model(image[None])
        top = tf.argmax(preds[0])
        score = preds[:, top]
    grads = tape.gradient(score, conv_out)
    pooled = tf.reduce_mean(grads, axis=(0, 1, 2))
    heat = tf.squeeze(conv_out[0] @ pooled[..., None])
    return (tf.maximum(heat, 0) / (tf.reduce_max(heat) + 1e-12)).numpy()


def score_cam_one_mask_at_a_time(model, image, layer, channels=256):
    """Score-CAM (the paper's variant) as its reference loop computes it: one masked image per forward
    pass; each channel resized to the image, scaled to [0, 1], the image blended towards grey by it,
    the weight P(class | masked) - P(class | grey)."""
    acts = helpers.get_activations(model, image, [layer])[layer]
    keep = np.argsort(acts.mean(axis=(0, 1)))[::-1][:channels]
    masks = helpers.minmax(helpers.resize_maps(acts[..., keep].transpose(2, 0, 1), image.shape[:2]))
    cls = int(helpers.class_probabilities(model, image[None]).argmax())
    grey = helpers.class_probabilities(model, np.full_like(image[None], 127.5))[0, cls]
    weights = np.array([helpers.class_probabilities(model, (127.5 + mask[..., None] * (image - 127.5))[None])[0, cls]
                        for mask in masks]) - grey
    cam = np.maximum(np.einsum("hwc,c->hw", acts[..., keep], weights), 0)
    return cam / cam.max() if cam.max() > 0 else cam


def bench(name, batch):
    import keras
    import tensorflow as tf

    layer = LAYERS[name]
    model = helpers.load_pretrained(name, include_top=True, weights=None if name == "densenet169" else "imagenet")
    images = np.random.default_rng(0).uniform(0, 255, (batch, 224, 224, 3)).astype("float32")
    ours = best_of(lambda: helpers.grad_cam(model, images, layer))
    grad_model = keras.Model(model.inputs[0], [model.get_layer(layer).output, model.output])
    example = best_of(lambda: [keras_example_cam(grad_model, image) for image in images], repeats=1)

    @tf.function(input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.float32)])
    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(model(x, training=False))
        return tape.gradient(total, x)

    floor = best_of(lambda: forward_backward(images).numpy())
    print(f"Grad-CAM, {name}, {batch} images at 224 px, layer {layer}:")
    print(f"  ours (batched, compiled)          {ours:6.2f} s")
    print(f"  Keras-example, per image, eager   {example:6.2f} s   ratio {example / ours:5.1f}x")
    print(f"  floor: one forward+backward pass  {floor:6.2f} s   ours / floor {ours / floor:5.2f}")
    helpers.score_cam(model, images[:1], layer, max_channels=256)  # warm-up: the feature model is built and cached
    start = time.perf_counter()
    helpers.score_cam(model, images[:2], layer, max_channels=256)
    batched = (time.perf_counter() - start) / 2
    start = time.perf_counter()
    one_by_one = [score_cam_one_mask_at_a_time(model, image, layer) for image in images[:2]]
    looped = (time.perf_counter() - start) / 2
    same = np.allclose(np.stack(one_by_one), helpers.score_cam(model, images[:2], layer, max_channels=256), atol=1e-4)
    print(f"Score-CAM, 256 masks per image, {name} at 224 px:")
    print(f"  before: one forward pass per mask  {looped:6.2f} s per image")
    print(f"  after: masks in batches of 32      {batched:6.2f} s per image   ratio {looped / batched:5.1f}x   same maps: {same}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--models", nargs="+", default=list(LAYERS), choices=list(LAYERS))
    args = parser.parse_args()
    import tensorflow as tf

    print("device:", "GPU" if tf.config.list_physical_devices("GPU") else "CPU")
    for name in args.models:
        bench(name, args.batch)


if __name__ == "__main__":
    main()
