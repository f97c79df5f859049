"""Lucid's parameterisation for regularised filter patterns: a 1/f Fourier basis, decorrelated colour,
and transformation robustness (Olah et al., 2017, "Feature Visualization")."""

from __future__ import annotations

import numpy as np

from cnnvis.runtime import import_tensorflow

tf = import_tensorflow()


# Lucid's colour decorrelation: square root of the ImageNet colour covariance (rows: RGB).
_COLOR_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32)


_COLOR_SQRT /= np.max(np.linalg.norm(_COLOR_SQRT, axis=0))


REGULARISED_DEFAULTS = {"steps": 128, "learning_rate": 0.05, "pad": 12, "jitter": 8, "late_jitter": 4,
                        "scales": tuple(1 + (i - 5) / 50 for i in range(11)), "max_rotation": 10.0}


def fourier_scale(size: int) -> np.ndarray:
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    # 1/f spectrum (natural-image statistics), times sqrt(h * w) to undo irfft2d's normalisation
    return (size / np.maximum(np.sqrt(fx**2 + fy**2), 1.0 / size)).astype(np.float32)


def param_to_image(spectrum, scale):
    """Fourier parameters (N, 3, size, size//2+1, 2) -> decorrelated colour image in [0, 1], (N, size, size, 3)."""
    size = spectrum.shape[2]
    complex_spec = tf.complex(spectrum[..., 0], spectrum[..., 1]) * tf.cast(scale, tf.complex64)
    spatial = tf.signal.irfft2d(complex_spec, fft_length=[size, size]) / 4.0
    spatial = tf.transpose(spatial, (0, 2, 3, 1))
    return tf.sigmoid(tf.einsum("nhwc,dc->nhwd", spatial, _COLOR_SQRT))


def canvas_size(size: int, settings) -> int:
    """The side of the canvas random_transform returns for images of side `size`: padded on both
    sides, then trimmed by the two jitters."""
    return size + 2 * settings["pad"] - settings["jitter"] - settings["late_jitter"]


def random_transform(images, seed, step, settings):
    """Lucid's standard transformation robustness on raw pixels (N, size, size, 3) in [0, 255], the
    same draw for every image of the batch (so a filter's result does not depend on its batch):
    pad with mid-grey, jitter, scale and rotate about the centre, jitter again. Like Lucid, the
    objective sees this whole canvas, (N, canvas_size, canvas_size, 3), and it is never cropped
    back to the image: a crop would hide the image's own borders from the objective at most
    steps, and they would end up as a frame. Every random offset is uniform and symmetric, so
    padding shows equally on every side."""
    def draw(i, shape, low, high, dtype=tf.float32):
        return tf.random.stateless_uniform(shape, seed=tf.stack([seed, step * 8 + i]), minval=low, maxval=high, dtype=dtype)

    def jitter(x, amount, i):  # a random crop `amount` pixels smaller, offset uniform in [0, amount]
        offsets = draw(i, [2], 0, amount + 1, tf.int32)
        size = tf.shape(x)[1] - amount
        return x[:, offsets[0]:offsets[0] + size, offsets[1]:offsets[1] + size, :]

    pad = settings["pad"]
    x = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], constant_values=127.5)
    x = jitter(x, settings["jitter"], 0)
    scale = tf.gather(tf.constant(settings["scales"], tf.float32), draw(1, [], 0, len(settings["scales"]), tf.int32))
    angle = draw(2, [], -settings["max_rotation"], settings["max_rotation"]) * np.pi / 180
    # output pixel p samples input (R(angle) p) / scale about the centre c: a zoom by `scale`, then a rotation
    n = tf.cast(tf.shape(x)[1], tf.float32)
    c = (n - 1) / 2
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    transform = tf.stack([cos, -sin, c - cos * c + sin * c, sin, cos, c - sin * c - cos * c, 0.0, 0.0])
    x = tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=tf.tile(transform[None], [tf.shape(x)[0], 1]), output_shape=tf.shape(x)[1:3],
        fill_value=127.5, interpolation="BILINEAR", fill_mode="CONSTANT")
    return jitter(x, settings["late_jitter"], 3)


def regularised_ascent_fn(objective, size, settings):
    """Lucid-style optimisation of objective(canvases (N, canvas_size, canvas_size, 3) in [0, 255],
    filters (N,)) -> (N,):
    Fourier parameters, colour decorrelation, transformation robustness and Adam, compiled once;
    the returned function gives the final images, float (N, size, size, 3) in [0, 255]."""
    scale = fourier_scale(size)
    lr = settings["learning_rate"]

    @tf.function(input_signature=[tf.TensorSpec([None, 3, size, size // 2 + 1, 2], tf.float32),
                                  tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)])
    def ascend(spectrum, filters, steps, seed):
        m = tf.zeros_like(spectrum)
        v = tf.zeros_like(spectrum)
        for step in tf.range(steps):
            with tf.GradientTape() as tape:
                tape.watch(spectrum)
                image = param_to_image(spectrum, scale) * 255.0
                seen = random_transform(image, seed, step, settings)
                loss = -tf.reduce_sum(objective(seen, filters))
            grads = tape.gradient(loss, spectrum)
            t = tf.cast(step + 1, tf.float32)
            m = 0.9 * m + 0.1 * grads
            v = 0.999 * v + 0.001 * tf.square(grads)
            spectrum = spectrum - lr * (m / (1 - 0.9**t)) / (tf.sqrt(v / (1 - 0.999**t)) + 1e-8)
        return param_to_image(spectrum, scale) * 255.0

    return ascend
