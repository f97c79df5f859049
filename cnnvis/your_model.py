"""Your own model and photos (notebook 05): a model file or a keras.applications name loaded with a
clear sentence for every way it can fail, what kind of output it has, the preprocessing it needs,
its class names, and a folder or list of photos with the unreadable ones named."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np

from cnnvis.colab import content_dir, in_colab
from cnnvis.dogs_vs_cats import IMAGE_SUFFIXES
from cnnvis.images import load_image
from cnnvis.keras3 import (
    APPLICATIONS,
    TRAINED_OFFLINE,
    _imagenet_application,
    _preprocess_layer_class,
    classifier_head,
    find_layer,
    imagenet_label,
    last_spatial_layer,
    layer_names,
    load_pretrained,
    model_input,
)

PREPROCESS_MODES = ("raw", "caffe", "tf", "torch")
OUTPUT_KINDS = ("softmax", "scores", "binary", "multi-label", "regression")


def load_your_model(spec, custom_objects: dict | None = None):
    """A Keras model from `spec`: a keras.Model as it is; a path to a .keras or .h5 file (locally or
    on Drive); "resnet50", "densenet169" or "efficientnet_lite0" (load_pretrained: raw pixels in);
    or any keras.applications constructor name ("MobileNetV2"; ImageNet weights, falling back
    only on a failed download, as load_pretrained does; it needs the preprocessing of its family).
    Every failure is a ValueError or FileNotFoundError of one sentence that says what to do."""
    if isinstance(spec, keras.Model):
        return _checked(spec)
    text = str(spec)
    if text in APPLICATIONS or text in TRAINED_OFFLINE:
        return _checked(load_pretrained(text))
    if hasattr(keras.applications, text) and text[:1].isupper():
        constructor = getattr(keras.applications, text)
        inputs = keras.Input(_default_shape(constructor), name="image")
        model, _ = _imagenet_application(constructor, text, True, inputs)
        return _checked(model)
    path = Path(text).expanduser()
    if path.suffix not in (".keras", ".h5"):
        raise ValueError(f"MODEL={text!r} is neither a .keras/.h5 file nor a model name: give a file saved with "
                         f"model.save(...), one of {sorted(APPLICATIONS) + list(TRAINED_OFFLINE)}, or a "
                         "keras.applications name such as 'MobileNetV2'.")
    if not path.is_file():
        raise FileNotFoundError(f"No model file at {path}. In Colab, Drive's files are under "
                                "/content/drive/MyDrive/ once notebook 00's setup mounted it.")
    try:
        model = keras.models.load_model(path, custom_objects=custom_objects, compile=False)
    except Exception as exc:  # noqa: BLE001  (Keras raises TypeError, ValueError, OSError...; sorted out here)
        raise ValueError(_load_error(path, exc)) from None
    return _checked(model)


def _default_shape(constructor) -> tuple:
    size = 299 if constructor.__name__ in ("InceptionV3", "InceptionResNetV2", "Xception") else 224
    return (size, size, 3)


def _load_error(path: Path, exc: Exception) -> str:
    message = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    if any(s in str(exc) for s in ("Could not locate", "Unknown layer", "custom_objects", "Could not deserialize")):
        return (f"{path.name} uses a layer or function Keras does not know ({message}): define or import it in a "
                "cell above and pass CUSTOM_OBJECTS = {'ItsName': ItsClass}.")
    return f"{path.name} is not a Keras model file Keras can read ({type(exc).__name__}: {message})."


def _checked(model):
    """The model, once it takes one channels-last RGB image and has a spatial layer and a Dense head."""
    shape = tuple(model_input(model).shape[1:])
    if len(shape) != 3 or shape[-1] != 3:
        first = " (channels first: (3, H, W))" if len(shape) == 3 and shape[0] == 3 else ""
        raise ValueError(f"Model {model.name!r} takes input of shape {shape}{first}; the maps need RGB images "
                         "channels last, (H, W, 3): rebuild it with keras.config.set_image_data_format("
                         "'channels_last') and load its weights into that.")
    last_spatial_layer(model)
    classifier_head(model)
    return model


def with_preprocessing(model, mode: str):
    """`model` taking raw RGB pixels 0-255: "raw" returns it as it is (it already takes pixels, or
    preprocesses inside); "caffe", "tf" or "torch" put keras.applications' preprocessing of that name
    in front of it (caffe: BGR minus the ImageNet mean; tf: scaled to -1..1; torch: 0..1 minus the
    mean over the standard deviation)."""
    if mode not in PREPROCESS_MODES:
        raise ValueError(f"PREPROCESS must be one of {PREPROCESS_MODES} ('raw' when the model takes pixels 0-255), "
                         f"got {mode!r}.")
    if mode == "raw":
        return model
    inputs = keras.Input(tuple(model_input(model).shape[1:]), name="pixels")
    x = _preprocess_layer_class()(mode, name=f"preprocess_{mode}")(inputs)
    return keras.Model(inputs, model(x), name=f"{model.name}_on_pixels")  # `model` nested: its layers keep their names


def _final_activation(model) -> str:
    last = model.layers[-1]
    while hasattr(last, "layers") and last.layers:  # a model nested as the last layer (with_preprocessing)
        last = last.layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return "softmax"
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", "linear")


def output_kind(model) -> tuple[str, int]:
    """(kind, number of explainable classes): "softmax" over N classes, "scores" (N linear outputs),
    "binary" (one sigmoid: 2, its negation and itself), "multi-label" (N sigmoids, each a label),
    "regression" (one linear output: 2, what lowers and what raises it)."""
    units = classifier_head(model)[0].units
    activation = _final_activation(model)
    if units == 1:
        return ("binary", 2) if activation == "sigmoid" else ("regression", 2)
    if activation == "sigmoid":
        return "multi-label", units
    return ("softmax", units) if activation == "softmax" else ("scores", units)


def layer_choice(model) -> tuple[str, list[str]]:
    """(the layer the maps are computed at, the other candidates): the last layer with a spatial
    (h, w, C) output before the head, searched inside nested models, and up to five before it."""
    spatial = [name for name in layer_names(model, kind="spatial") if not _scaling(find_layer(model, name)[0])]
    chosen = last_spatial_layer(model)
    return chosen, spatial[max(0, len(spatial) - 6):-1]


def _scaling(layer) -> bool:
    """Input scaling (Rescaling, Normalization, the ImageNet preprocessing): spatial, but no candidate."""
    return isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization)) or \
        type(layer).__name__ == "ImagenetPreprocess"


def pattern_layer(model) -> str:
    """The default layer for filter patterns: the spatial layer three quarters of the way up.
    The top layer's filters are often silent on the grey start (a ReLU after batch normalisation
    passes no gradient), and the lowest layers only show edges."""
    spatial = layer_names(model, kind="spatial")
    return spatial[int(0.75 * len(spatial))]


def class_names_for(spec, model) -> list[str]:
    """One name per explainable class (output_kind's count): spec "imagenet" (1000 outputs), a .json
    list (or {index: name}) or .txt file (one name per line), a list, or None ("class 0"...; for one
    sigmoid "not class 1"/"class 1", for a regression "lower"/"higher")."""
    kind, n = output_kind(model)
    if spec is None:
        return {"binary": ["not class 1", "class 1"], "regression": ["lower", "higher"]}.get(
            kind, [f"class {i}" for i in range(n)])
    if isinstance(spec, str) and spec == "imagenet":
        names = [imagenet_label(i) for i in range(1000)] if n == 1000 else None
        if names is None:
            raise ValueError(f"CLASS_NAMES='imagenet' needs 1000 outputs; this model has {n}: give its own names.")
        return names
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"No class-names file at {path}: give a .txt file (one name per line) or .json.")
        text = path.read_text()
        loaded = json.loads(text) if path.suffix == ".json" else [line.strip() for line in text.splitlines() if line.strip()]
        spec = [loaded[k] for k in sorted(loaded, key=int)] if isinstance(loaded, dict) else loaded
    names = [str(name) for name in spec]
    if len(names) == n:
        return names
    outputs = classifier_head(model)[0].units
    raise ValueError(f"{len(names)} class names for a model with {outputs} output(s) ({kind}): give {n} names"
                     f"{' (the negative class first)' if kind in ('binary', 'regression') else ''}.")


def your_images(spec, size) -> tuple[np.ndarray, list[str], list[str]]:
    """(images float32 (N, H, W, 3) in 0-255 at `size` (int or (H, W)), their names, the files that
    could not be read, each "name: why"). spec: a folder (its image files, sorted), a list of
    files, "upload" (Colab's upload button, uploaded_photos), or None for the photos installed
    packages ship (data.sample_photos)."""
    if spec is None:
        from cnnvis.data import sample_photos  # noqa: PLC0415  (data imports TensorFlow's pipelines)

        files = [p["path"] for p in sample_photos()]
    elif isinstance(spec, str) and spec == "upload":
        files = uploaded_photos()
    elif isinstance(spec, (list, tuple)):
        files = [Path(f) for f in spec]
    else:
        folder = Path(spec).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"IMAGES={str(spec)!r} is not a folder: give a folder of photos or a list of files.")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    images, names, skipped = [], [], []
    for file in files:
        try:
            images.append(load_image(file, size=size))
            names.append(Path(file).stem)
        except (ValueError, FileNotFoundError) as exc:
            skipped.append(f"{Path(file).name}: {str(exc).split('; ')[0]}")
    if not images:
        raise ValueError(f"None of the {len(files)} files in IMAGES could be read as a photo"
                         f"{': ' + '; '.join(skipped[:3]) if skipped else ''}.")
    return np.stack(images), names, skipped


def class_to_explain(spec, class_names: list[str]):
    """EXPLAIN as a class index for the map functions: None (each image's predicted class), an
    index, or one of `class_names`; anything else is a ValueError naming the choices."""
    if spec is None or isinstance(spec, (int, np.integer)) and 0 <= spec < len(class_names):
        return spec
    if isinstance(spec, str) and spec in class_names:
        return class_names.index(spec)
    shown = ", ".join(class_names[:5]) + (" ..." if len(class_names) > 5 else "")
    raise ValueError(f"EXPLAIN={spec!r} is not a class of this model: give None (each image's predicted class), an "
                     f"index 0..{len(class_names) - 1}, or a name ({shown}).")


def uploaded_photos() -> list[Path]:
    """Colab's "Choose files" button (google.colab.files.upload); the picked files are written to
    <content>/uploads and their paths returned. Outside Colab, or with nothing picked, a ValueError
    says what to give instead."""
    if not in_colab():
        raise ValueError("IMAGES='upload' works in Colab only; here give a folder of photos or a list of files.")
    from google.colab import files  # noqa: PLC0415  (exists only in Colab)

    picked = files.upload()
    if not picked:
        raise ValueError("No file was uploaded: run the cell again and choose photos, or set IMAGES to a folder.")
    folder = content_dir() / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in picked.items():
        (folder / Path(name).name).write_bytes(data)
    return [folder / Path(name).name for name in picked]


def predictions(model, images, class_names, top: int = 3) -> list[str]:
    """One line per image: the top classes with probabilities (softmax, scores), each label's
    probability above 0.5 (multi-label), P(class 1) (binary), or the output value (regression)."""
    kind, _ = output_kind(model)
    outputs = np.asarray(model.predict(images, verbose=0), np.float64)
    lines = []
    for row in outputs:
        if kind == "regression":
            lines.append(f"output {row[0]:.3f}")
        elif kind == "binary":
            lines.append(f"P({class_names[1]}) {row[0]:.2f}")
        elif kind == "multi-label":
            on = [f"{class_names[i]} {row[i]:.2f}" for i in np.argsort(row)[::-1] if row[i] > 0.5]
            lines.append("labels above 0.5: " + (", ".join(on) if on else "none"))
        else:
            lines.append(", ".join(f"{class_names[i]} {row[i]:.2f}" for i in np.argsort(row)[::-1][:top]))
    return lines


def verdict(method: str, correlations: list[float], deletion: float, random_deletion: float) -> str:
    """A plain-language verdict from the numbers: `correlations` are the maps' absolute Spearman
    correlations with the trained model's after each stage of cascading_randomisation (top layers
    first); below 0.5 at any stage counts as changed. `deletion` is the method's mean deletion
    area and `random_deletion` a random map's (lower is better; better by more than 0.02 counts)."""
    lowest = min(correlations)
    depends = (f"change when the top layers are randomised (Spearman down to {lowest:.2f}): they depend on what "
               "the model learned" if lowest < 0.5 else f"stay similar (Spearman {lowest:.2f} or more) when the top "
               "layers are randomised: they show the image's structure more than what the model learned")
    better = deletion < random_deletion - 0.02
    deletes = (f"deleting its brightest pixels first lowers the score faster than a random order "
               f"({deletion:.2f} against {random_deletion:.2f})" if better else
               f"deleting its brightest pixels first is no faster than a random order ({deletion:.2f} against "
               f"{random_deletion:.2f})")
    return f"{method}'s maps {depends}; {deletes}."


def save_maps(path, maps_by_method: dict, image_names: list[str]) -> Path:
    """Write every map to one .npz file, one array per image and method, named "<image>/<method>"
    (float32 (h, w), 0-1); return the path."""
    path = Path(path)
    arrays = {f"{name}/{method}": np.asarray(maps[i], np.float32)
              for method, maps in maps_by_method.items() for i, name in enumerate(image_names)}
    np.savez_compressed(path, **arrays)
    return path
