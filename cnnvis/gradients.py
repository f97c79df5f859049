"""Class scores and their gradients for any Keras 3 classifier: the score before the final
softmax/sigmoid, the gradient of that score with respect to a layer's activations -- compiled once
per model and layer, validated, for one image or a batch. Grad-CAM and its variants build on it."""

from __future__ import annotations

import numpy as np

from cnnvis.images import as_batch
from cnnvis.keras3 import activation_model, cached, classifier_head, find_layer, is_spatial, last_spatial_layer, model_input
from cnnvis.runtime import import_tensorflow

tf = import_tensorflow()

CACHE: dict = {}


def check_classes(class_index, n: int, n_classes: int) -> np.ndarray:
    """The one resolver of class requests: None -> -1 for every image (each image's predicted
    class), an int or one per image -> int32 (n,), checked against 0..n_classes-1."""
    if class_index is None:
        return np.full(n, -1, np.int32)
    classes = np.broadcast_to(np.asarray(class_index, np.int32), (n,)).copy()
    bad = classes[(classes < 0) | (classes >= n_classes)]
    if bad.size:
        raise ValueError(f"class_index {int(bad[0])} is out of range: this model has classes 0..{n_classes - 1}"
                         + (" (single sigmoid output: 1 explains the positive class, 0 its negation)" if n_classes == 2 else "")
                         + "; None explains each image's predicted class.")
    return classes


def check_layer(model, layer_name) -> str:
    """The layer to explain: `layer_name`, or by default the last spatial layer before the head."""
    layer_name = layer_name or last_spatial_layer(model)
    layer, _ = find_layer(model, layer_name)
    if not is_spatial(layer) or hasattr(layer, "layers"):
        raise ValueError(f"Layer {layer_name!r} has output shape {tuple(layer.output.shape)}, not a spatial (N, H, W, C) "
                         f"map: it comes after the convolutional part. Use a layer up to {last_spatial_layer(model)!r}.")
    return layer_name


def check_images(model, images) -> np.ndarray:
    """Raw images (H, W, 3) or (N, H, W, 3) as a float32 batch of the model's input size, or a clear error."""
    batch, _ = as_batch(images)
    expected = model_input(model).shape[1:]
    if any(e is not None and e != a for e, a in zip(expected, batch.shape[1:])):
        raise ValueError(f"Model {model.name!r} expects images of shape {tuple(expected)}, got {batch.shape[1:]}; "
                         "resize with load_image(path, size=...).")
    return batch


def _class_scores(dense, feats, classes):
    """(scores (N,), classes (N,)): each image's class score before the final softmax/sigmoid, from
    the head's input `feats`; classes -1 become the predicted class."""
    logits = tf.matmul(tf.cast(feats, tf.float32), tf.cast(dense.kernel, tf.float32))
    if dense.use_bias:
        logits += tf.cast(dense.bias, tf.float32)
    if dense.units == 1:  # single sigmoid: class 1 explains the logit, class 0 its negative
        classes = tf.where(classes < 0, tf.cast(logits[:, 0] > 0, tf.int32), classes)
        return tf.where(classes == 1, logits[:, 0], -logits[:, 0]), classes
    classes = tf.where(classes < 0, tf.argmax(logits, axis=1, output_type=tf.int32), classes)
    return tf.gather(logits, classes, batch_dims=1), classes


def _compile(model, layer_name):
    """(images, classes) -> (activations, gradients, classes), one tf.function per model and layer;
    layer_name=None: the gradients with respect to the input pixels."""
    dense, feed = classifier_head(model)
    inner = activation_model(model, [layer_name, feed]) if layer_name else activation_model(model, feed)
    shape = tuple(model_input(model).shape[1:])

    @tf.function(input_signature=[tf.TensorSpec([None, *shape], tf.float32), tf.TensorSpec([None], tf.int32)])
    def run(images, classes):
        with tf.GradientTape() as tape:
            if layer_name:
                acts, feats = inner(images, training=False)
            else:
                acts = images
                tape.watch(acts)
                feats = inner(images, training=False)
            tape.watch(acts)
            scores, classes = _class_scores(dense, feats, classes)
        grads = tape.gradient(scores, acts)
        # mixed precision: the layer may compute in float16; maps are computed in float32
        return tf.cast(acts, tf.float32), tf.cast(grads, tf.float32), classes

    return run


def class_gradients(model, images, layer_name=None, class_index=None):
    """For raw images at the model's input size: (activations, gradients, classes) -- the layer's
    activations float32 (N, h, w, C), the gradient of each image's class score (before the final
    softmax/sigmoid) with respect to them, same shape, and the explained classes int32 (N,).
    class_index: None (each image's predicted class), an int, or one per image; a single sigmoid
    has two classes, 1 for its logit and 0 for the negated logit."""
    layer_name = check_layer(model, layer_name)
    batch = check_images(model, images)
    classes = check_classes(class_index, len(batch), max(classifier_head(model)[0].units, 2))
    run = cached(CACHE, model, (layer_name,), lambda: _compile(model, layer_name))
    acts, grads, used = run(batch, classes)
    return np.asarray(acts), np.asarray(grads), np.asarray(used)


def class_scores(model, images, batch_size: int = 64) -> np.ndarray:
    """Class scores before the final softmax/sigmoid, float32 (N, n_classes), for raw images (N, H, W, 3);
    a single sigmoid output z gives [-z, z] (class 0 explains the negated logit)."""
    dense, feed = classifier_head(model)
    features = cached(CACHE, model, ("features", feed), lambda: activation_model(model, feed))
    batch, _ = as_batch(images)
    kernel = np.asarray(dense.kernel, np.float32)
    bias = np.asarray(dense.bias, np.float32) if dense.use_bias else 0.0
    logits = np.concatenate([np.asarray(features(batch[i:i + batch_size], training=False), np.float32) @ kernel + bias
                             for i in range(0, len(batch), batch_size)])
    return np.concatenate([-logits, logits], axis=1) if logits.shape[1] == 1 else logits


def input_gradients(model, images, class_index=None) -> tuple[np.ndarray, np.ndarray]:
    """The gradient of each image's class score (before the final softmax/sigmoid) with respect to
    its raw pixels: float32 (N, H, W, 3) -- per unit of the 0-255 pixel scale -- and the explained
    classes int32 (N,). Compiled once per model. class_index as in class_gradients."""
    batch = check_images(model, images)
    classes = check_classes(class_index, len(batch), max(classifier_head(model)[0].units, 2))
    run = cached(CACHE, model, ("input",), lambda: _compile(model, None))
    _, grads, used = run(batch, classes)
    return np.asarray(grads), np.asarray(used)
