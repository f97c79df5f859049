"""Re-initialising a trained model's layers for the model-randomisation test (Adebayo et al., 2018):
each weight is drawn anew from its layer's own initialiser, so a BatchNormalization layer gets
gamma 1, beta 0, mean 0 and variance 1 again, never a negative variance."""

from __future__ import annotations

import keras
import numpy as np

from cnnvis.metrics import class_probabilities


def _initialiser(layer, variable):
    """The initialiser a layer made `variable` with: its `<name>_initializer` attribute
    (kernel_initializer, moving_variance_initializer, ...; a DepthwiseConv2D's kernel, named kernel or
    depthwise_kernel by Keras' versions -> depthwise_initializer)."""
    name = variable.name.split("/")[-1]
    depthwise = isinstance(layer, keras.layers.DepthwiseConv2D) and name in ("kernel", "depthwise_kernel")
    for attribute in ("depthwise_initializer",) if depthwise else (f"{name}_initializer",):
        if getattr(layer, attribute, None) is not None:
            return keras.initializers.get(getattr(layer, attribute))
    raise ValueError(f"Layer {layer.name!r} has no initialiser for its weight {name!r}, so it cannot be "
                     "re-initialised; leave it out of the randomised layers.")


def reinitialise(layer, rng: np.random.Generator) -> None:
    """Draw every weight of `layer` anew from its own initialiser, seeded from `rng` (repeatable)."""
    values = []
    for variable in layer.weights:
        initialiser = _initialiser(layer, variable)
        config = initialiser.get_config()
        if "seed" in config:
            config["seed"] = int(rng.integers(2**31 - 1))
            initialiser = type(initialiser).from_config(config)
        values.append(np.asarray(initialiser(tuple(variable.shape), dtype=variable.dtype)))
    layer.set_weights(values)


def randomised_copy(model, names, rng: np.random.Generator):
    """A copy of `model` with the layers `names` re-initialised (see reinitialise)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for name in names:
        reinitialise(copy.get_layer(name), rng)
    return copy


def check_finite(model, batch, what: str = "the model") -> None:
    """Raise a clear error when `model` gives NaN or infinite outputs on `batch`: no map of such a
    model means anything, so it is an error, never a result."""
    probs = class_probabilities(model, batch)
    if not np.isfinite(probs).all():
        bad = int((~np.isfinite(probs).all(axis=1)).sum())
        raise ValueError(f"{what} ({model.name!r}) gives NaN or infinite outputs on {bad} of {len(batch)} images: "
                         "its maps would mean nothing. Check its weights (e.g. BatchNormalization variances) and inputs.")
