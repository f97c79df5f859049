"""Guided Backpropagation's model (Springenberg et al., 2015): a copy of a model whose ReLU and
ReLU6 units pass a gradient back only where both the unit's input was in its linear range and the
gradient arriving from above is positive. The forward pass is unchanged."""

from __future__ import annotations

import keras

from cnnvis.runtime import import_tensorflow

tf = import_tensorflow()


def guided_relu(max_value=None):
    """A ReLU (or ReLU6 with max_value=6) with Guided Backpropagation's gradient."""
    @tf.custom_gradient
    def relu(x):
        y = tf.nn.relu(x) if max_value is None else tf.clip_by_value(x, 0.0, float(max_value))

        def grad(upstream):
            linear = x > 0 if max_value is None else (x > 0) & (x < max_value)
            return upstream * tf.cast(linear & (upstream > 0), upstream.dtype)

        return y, grad

    return relu


def _relu_kind(activation):
    """None for a plain ReLU, 6.0 for ReLU6, False for anything else."""
    name = getattr(activation, "__name__", "")
    return {"relu": None, "relu6": 6.0}.get(name, False)


def _guided_layer(layer):
    """A fresh copy of `layer` (same config, weights set later) with its ReLU made guided."""
    copy = layer.__class__.from_config(layer.get_config())
    if isinstance(layer, keras.layers.ReLU):
        if layer.negative_slope or layer.threshold:
            raise ValueError(f"Layer {layer.name!r} is a leaky or thresholded ReLU; Guided Backpropagation "
                             "is defined for ReLU and ReLU6 only.")
        copy.call = guided_relu(layer.max_value)
    elif _relu_kind(getattr(layer, "activation", None)) is not False:
        copy.activation = guided_relu(_relu_kind(layer.activation))
    return copy


def guided_copy(model):
    """A copy of `model` (functional or Sequential, nested models included) that shares nothing
    with it, whose ReLU/ReLU6 layers and relu/relu6 activations are guided; call
    sync_weights(copy, model) before using it, so it always computes with the model's weights."""
    copy = keras.models.clone_model(model, clone_function=_guided_layer, recursive=True)
    sync_weights(copy, model)
    return copy


def sync_weights(copy, model) -> None:
    copy.set_weights(model.get_weights())
