"""Shared code for the cnn-vis notebooks: what a learner reads, in the order the notebooks teach.

1. figures                -- save_figure (300 dpi PNG, to Drive in Colab) and show
2. mini-VGG and training  -- seed 000's network, training with checkpoints, predictions (notebook 01)
3. activations, tiling    -- all layers in one pass, the seeds' two tilings, sparsity (notebook 02)
4. filter patterns        -- seed 001's gradient ascent, batched and compiled once (notebook 03)
5. Grad-CAM and variants  -- Grad-CAM, Grad-CAM++, Score-CAM, occlusion; the gradient, SmoothGrad, Guided
                             Backprop; overlays, two-object images, sanity checks (notebook 04)
6. your own model         -- a model file or name and a folder of photos, described (notebook 05)
7. explorers              -- ipywidgets panels over the functions above

The machinery a learner need not read -- Colab, Drive and Kaggle, data preparation, the toy pets,
making any Keras 3 model work, TensorFlow's start-up, Lucid's parameterisation, the metrics --
lives in the package cnnvis/, one module per concern; its public names are importable from here.

Images handed to models are raw RGB pixels, float32 in [0, 255], shape (H, W, 3) or
(N, H, W, 3): pixel scaling lives inside each model (a Rescaling layer or the
application's own preprocessing), so visualisation code never rescales by hand.
"""

from __future__ import annotations

import functools
import inspect
import random
import warnings
from pathlib import Path
from types import SimpleNamespace

import ipywidgets as widgets
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display

from cnnvis.runtime import NO_TENSORFLOW, QuietRetracing, import_tensorflow, inline_figures  # noqa: F401

tf = import_tensorflow()  # once, before Keras, with TensorFlow's start-up lines kept out of the notebook
import keras  # noqa: E402

from cnnvis.checkpoints import (dataset_record, describe_checkpoint, epoch_recorder, history_from_state,  # noqa: E402,F401
                                last_path, read_state, restore_last, same_data, set_aside, start_state, unfinished)
from cnnvis.colab import (colab_secret, content_dir, drive_mountpoint, flush_drive, in_colab,  # noqa: E402,F401
                          local_fallback, mount_drive)
from cnnvis.data import (check_image_folders, class_boxes, fetch_kaggle_dogs_vs_cats, find_dataset,  # noqa: E402,F401
                         load_image_folders, photo_boxes, sample_photos, validation_images)
from cnnvis.dogs_vs_cats import (IMAGE_SUFFIXES, download_dir, get_dogs_vs_cats, prepare_dogs_vs_cats,  # noqa: E402,F401
                                 real_data_counts, real_data_dir)
from cnnvis.files import build_then_rename  # noqa: E402,F401
from cnnvis.gradients import check_images, check_layer, class_gradients, class_scores, input_gradients  # noqa: E402,F401
from cnnvis.guided import guided_copy, guided_relu, sync_weights  # noqa: E402,F401
from cnnvis.images import as_batch, blur, feature_map, load_image, minmax, resize_maps, upsample_heatmap  # noqa: E402,F401
from cnnvis.kaggle import download_competition, kaggle_credentials  # noqa: E402,F401
from cnnvis.keras3 import (APPLICATIONS, activation_model, bytes_per_image, cached, classifier_head,  # noqa: E402,F401
                           find_layer, imagenet_label, is_spatial, keras3_resnet_name, last_spatial_layer,
                           layer_names, load_pretrained, model_input, TRAINED_OFFLINE, truncated_model)
from cnnvis.lucid import REGULARISED_DEFAULTS, canvas_size, fourier_scale, param_to_image, regularised_ascent_fn  # noqa: E402
from cnnvis.machine import gpu_report, runtime_report, training_strategy  # noqa: E402,F401
from cnnvis.metrics import (border_texture_ratio, class_probabilities, deletion_insertion_auc, explained_classes, frame_contrast,  # noqa: E402,F401
                            mass_inside, pointing_game, pointing_game_report, random_point_baseline, rank_correlation,
                            reference_scores)
from cnnvis.mode import QUICK_ENV, SEED_ENV, quick_mode, quick_or_full, training_seed  # noqa: E402,F401
from cnnvis.paths import HOME_ENV, REPO_ROOT, describe_paths, project_paths  # noqa: E402,F401
from cnnvis.randomise import check_finite, randomised_copy, reinitialise  # noqa: E402,F401
from cnnvis.toy_pets import BOX_PARTS, CLASS_DIRS, CLASS_PARTS, eye_boxes, load_boxes, make_toy_pets  # noqa: E402,F401
from cnnvis.widgets import figure_png, report_errors  # noqa: E402
from cnnvis.your_model import (PREPROCESS_MODES, class_names_for, class_to_explain, layer_choice,  # noqa: E402,F401
                               load_your_model, output_kind, pattern_layer, predictions, save_maps, verdict,
                               with_preprocessing, your_images)


# ---------------------------------------------------------------------------
# 1. Figures
# ---------------------------------------------------------------------------

def save_figure(fig, name: str, folder: Path | None = None, dpi: int = 300) -> Path:
    """Save a matplotlib figure as PNG at `dpi` into the figures folder (Drive in Colab).

    `name` is a file stem such as "01_history"; returns the written path.
    """
    if not name or any(sep in name for sep in "/\\"):
        raise ValueError(f"save_figure name must be a plain file stem like '01_history', got {name!r}.")
    folder = Path(folder) if folder is not None else project_paths().figures
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def show(fig, save_as: str | None = None) -> None:
    """Display a figure now, save it through save_figure when `save_as` is given, then close it, so
    a loop drawing many figures keeps one in memory at a time."""
    if save_as:
        save_figure(fig, save_as)
    display(fig)
    plt.close(fig)


def plot_samples(root, n: int = 8, split: str = "train", seed: int = 0):
    """Show n images of root/<split>/ alternating between classes, part boxes drawn when
    root/boxes.csv exists (toy pets); return the figure."""
    root = Path(root)
    classes = check_image_folders(root)
    rng = random.Random(seed)
    files = {c: sorted(p for p in (root / split / c).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) for c in classes}
    chosen = [(c, rng.choice(files[c])) for i in range(n) for c in [classes[i % len(classes)]]]
    boxes = load_boxes(root) if (root / "boxes.csv").exists() else {}
    per_row = min(n, 8)
    rows = int(np.ceil(n / per_row))
    fig, axes = plt.subplots(rows, per_row, figsize=(1.8 * per_row, 2.0 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (label, path) in zip(axes.flat, chosen):
        ax.imshow(load_image(path).astype(np.uint8))
        ax.set_title(label, fontsize=9)
        for part, (x0, y0, x1, y1) in boxes.get(path.relative_to(root).as_posix(), {}).items():
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1,
                                       color="white" if part == "face" else "yellow"))
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------
# 2. The mini-VGG and training (notebook 01)
# ---------------------------------------------------------------------------


def build_mini_vgg(variant: str = "seed000", input_size: int | None = None, strategy=None,
                   mixed_precision: bool = False, seed: int | None = 0, head: str = "flatten"):
    """Build the seeds' small dogs-vs-cats CNN as a functional model with one sigmoid output.

    variant="seed000": the mini-VGG of seed 000 at 160x160 -- blocks of two 3x3 convolutions
    (16, 32, 64 filters) and a max-pool, a final 128-filter convolution and pool, then
    flatten, Dense 512 ReLU, Dropout 0.5, Dense 1 sigmoid; layer names follow the seed
    (block0_conv1, block0_conv2, block0_pool1, ..., block3_pool). First two convolutions:
    448 and 2320 parameters.
    variant="seed003": seed 003's four-convolution net at 150x150 (3,453,121 parameters).
    head="gap" (seed000 only) replaces flatten, Dense 512 and dropout with global average pooling
    straight into the sigmoid: each channel's weight then says directly whether it is evidence
    for dogs (positive) or cats (negative), which gives class-activation maps for both classes.
    Its last convolution is batch-normalised before the ReLU (block3_bn, block3_relu), which lets
    it leave the 50 % plateau within a few epochs (146,577 parameters).
    Input: raw RGB float32 (N, H, W, 3) in [0, 255]; a Rescaling(1/255) layer comes first.
    The model is created under `strategy` (default: training_strategy()). mixed_precision=True
    computes in float16 on a GPU (the output stays float32); without a GPU it is ignored with a
    warning. `seed` seeds Python, NumPy and TensorFlow (weights, dropout) for repeatable runs;
    None leaves the random state alone.
    """
    layers = keras.layers

    if seed is not None:
        keras.utils.set_random_seed(seed)
    if variant not in ("seed000", "seed003"):
        raise ValueError(f"variant must be 'seed000' (mini-VGG, 160 px) or 'seed003' (4 convs, 150 px); got {variant!r}.")
    if head not in ("flatten", "gap") or (head == "gap" and variant != "seed000"):
        raise ValueError(f"head must be 'flatten' (the seeds') or 'gap' (seed000 only); got {head!r} for {variant!r}.")
    size = input_size or (160 if variant == "seed000" else 150)
    dtype = None
    if mixed_precision:
        if tf.config.list_physical_devices("GPU"):
            dtype = "mixed_float16"
        else:
            print("mixed_precision=True ignored: no GPU visible (float16 is slower on the CPU).")
    strategy = strategy or training_strategy()

    def conv(filters, name, padding):
        return layers.Conv2D(filters, 3, activation="relu", padding=padding, name=name, dtype=dtype)

    with strategy.scope():
        inputs = keras.Input((size, size, 3), name="image")
        x = layers.Rescaling(1.0 / 255, name="rescale", dtype=dtype)(inputs)
        if variant == "seed000":
            for block, filters in enumerate((16, 32, 64)):
                x = conv(filters, f"block{block}_conv1", "same")(x)
                x = conv(filters, f"block{block}_conv2", "same")(x)
                x = layers.MaxPooling2D(name=f"block{block}_pool1", dtype=dtype)(x)
            if head == "gap":  # normalised before its ReLU: without it this head sat at 50 % for most of ten epochs
                x = layers.Conv2D(128, 3, padding="same", name="block3_conv1", dtype=dtype)(x)
                x = layers.BatchNormalization(name="block3_bn", dtype=dtype)(x)
                x = layers.Activation("relu", name="block3_relu", dtype=dtype)(x)
            else:
                x = conv(128, "block3_conv1", "same")(x)
            x = layers.MaxPooling2D(name="block3_pool", dtype=dtype)(x)
            if head == "gap":
                x = layers.GlobalAveragePooling2D(name="gap", dtype=dtype)(x)
            else:
                x = layers.Flatten(name="flatten")(x)
                x = layers.Dense(512, activation="relu", name="dense", dtype=dtype)(x)
                x = layers.Dropout(0.5, name="dropout")(x)
        else:
            for i, filters in enumerate((32, 64, 128, 128), start=1):
                x = conv(filters, f"conv2d_{i}", "valid")(x)
                x = layers.MaxPooling2D(name=f"max_pooling2d_{i}", dtype=dtype)(x)
            x = layers.Flatten(name="flatten")(x)
            x = layers.Dense(512, activation="relu", name="dense", dtype=dtype)(x)
        outputs = layers.Dense(1, activation="sigmoid", name="prediction", dtype="float32")(x)
        return keras.Model(inputs, outputs, name=f"mini_vgg_{variant}" + ("_gap" if head == "gap" else ""))


def augmentation_layers(seed: int = 0):
    """A small Keras augmentation pipeline (flip, rotation, zoom) for train(augment=...)."""
    layers = keras.layers

    return keras.Sequential([layers.RandomFlip("horizontal", seed=seed),
                             layers.RandomRotation(0.05, seed=seed),
                             layers.RandomZoom(0.1, seed=seed)], name="augment")




def train(model, train_ds, val_ds, epochs: int, checkpoint=None, resume: bool = True,
          learning_rate: float = 1e-4, optimizer=None, loss: str = "binary_crossentropy",
          augment=None, verbose: int = 2, data_root=None):
    """Compile and fit `model`; return the Keras History of all epochs run so far.

    Defaults follow seed 003: RMSprop(1e-4) and binary cross-entropy, accuracy as metric.
    `augment` is a Keras layer/model applied to training batches only (see augmentation_layers).
    With `checkpoint` (a path ending in .keras) the best model by validation accuracy is saved
    there, and after every epoch the last one, with its optimizer state and the training record
    inside, as name.last.keras; name.json beside them records epochs done and planned, the history
    and the data (`data_root`'s folder name and image counts, see cnnvis.checkpoints). With
    resume=True a later call on the same data -- after a disconnect, say -- continues from the
    last epoch with its optimizer (or, when all `epochs` are done, returns the stored history
    without training). A checkpoint of other data is never resumed: it is renamed to
    name__<its data>.keras and training starts afresh, with one line saying so. A model computing
    in mixed_float16 gets its optimizer wrapped in a LossScaleOptimizer, so small float16
    gradients do not vanish.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}.")
    state = start_state(checkpoint, data_root, resume, epochs)
    if state["epochs_done"] >= epochs:  # nothing left to do: the best epoch's weights
        model.set_weights(keras.models.load_model(checkpoint).get_weights())
        return history_from_state(state)
    state["epochs_planned"], state["augmented"] = epochs, augment is not None
    if augment is not None:
        train_ds = train_ds.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    mixed = any(getattr(layer.dtype_policy, "name", "") == "mixed_float16" for layer in model.layers)
    with model.distribute_strategy.scope():
        optimizer = optimizer or keras.optimizers.RMSprop(learning_rate)
        if mixed and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    start = state["epochs_done"]
    if start:
        restore_last(model, checkpoint)
        print(f"Continuing {Path(checkpoint).name} at epoch {start + 1} of {epochs}, with its optimizer's state.")
    callbacks = []
    if checkpoint is not None:
        best = max(state["history"].get("val_accuracy", [float("-inf")]))
        saver = keras.callbacks.ModelCheckpoint(checkpoint, monitor="val_accuracy", save_best_only=True,
                                                initial_value_threshold=best if best > float("-inf") else None)
        callbacks = [saver, keras.callbacks.LambdaCallback(on_epoch_end=epoch_recorder(state, checkpoint, model))]
    fitted = model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=start,
                       callbacks=callbacks, verbose=verbose, shuffle=False)  # the dataset reshuffles itself
    if checkpoint is None:
        return fitted
    return history_from_state(state)


def checkpoint_path(name: str = "mini_vgg", paths=None, dataset=None, seed: int = 0) -> Path:
    """The .keras checkpoint path for `name` in the models folder: name_<dataset folder name>.keras
    when `dataset` (a data root) is given, so models of different data never share a file; a
    training seed other than 0 adds _seedN after the name, and quick mode adds _quick, so a
    CI-sized run never resumes from, or overwrites, a full one."""
    paths = paths or project_paths()
    data = f"_{Path(dataset).name}" if dataset is not None else ""
    return paths.models / f"{name}{f'_seed{seed}' if seed else ''}{data}{'_quick' if quick_mode() else ''}.keras"


def trained_mini_vgg(paths=None, epochs: int | None = None, dataset: str = "auto", head: str = "flatten",
                     seed: int | None = None):
    """Return (model, class_names, dataset_root): notebook 01's best mini-VGG for the data that
    find_dataset(kind=dataset) picks, or -- when there is none for that data -- one trained now
    (12 epochs, 10 in quick mode; progress shown). head="gap": the global-average-pooling variant
    (build_mini_vgg), in its own checkpoint, trained with Adam(1e-3). `seed` seeds the weights and
    the batch order (default: training_seed(), i.e. CNNVIS_SEED or 0); a seed other than 0 has its
    own checkpoint (checkpoint_path). A training that stopped before its planned epochs (a
    disconnect) is finished first, from where it stopped; one trained with augmentation (notebook
    01's seed recipe) is not, and a RuntimeError says to rerun notebook 01. Prints one line: which
    checkpoint, trained on what, for how many epochs."""
    paths = paths or project_paths()
    seed = training_seed() if seed is None else seed
    root, _ = find_dataset(paths, kind=dataset)
    checkpoint = checkpoint_path("mini_vgg" if head == "flatten" else f"mini_vgg_{head}", paths, dataset=root, seed=seed)
    train_ds, val_ds, classes = load_image_folders(root, seed=seed)
    state = read_state(checkpoint) if checkpoint.exists() else None
    which = "mini-VGG" if head == "flatten" else f"mini-VGG with the {head} head"
    ours = state is not None and same_data(state, dataset_record(root))
    if ours and unfinished(state) and state.get("augmented"):
        raise RuntimeError(f"The {which} on {root.name} stopped at epoch {state['epochs_done']} of "
                           f"{state['epochs_planned']} (a disconnect?) and was trained with augmentation: run notebook "
                           "01's training cell again (it continues from there), then this cell.")
    if ours and unfinished(state):
        n = state["epochs_planned"]
        print(f"The {which} on {root.name} stopped at epoch {state['epochs_done']} of {n} (a disconnect?): "
              f"finishing it now, from epoch {state['epochs_done'] + 1}.")
    elif not ours:
        n = epochs or quick_or_full(10, 12)
        print(f"No {which} trained on {root.name} yet (notebook 01 trains one): training it now, {n} epochs.")
    if not ours or unfinished(state):
        # measured: at RMSprop(1e-4) the GAP head stays at 0.50 for 10 epochs; Adam(1e-3) trains it
        optimizer = keras.optimizers.Adam(1e-3) if head == "gap" else None
        train(build_mini_vgg(head=head, seed=seed), train_ds, val_ds, epochs=n, checkpoint=checkpoint, data_root=root,
              verbose=2, optimizer=optimizer)
    print(describe_checkpoint(checkpoint))
    return load_checkpoint(checkpoint), classes, root


def load_checkpoint(path):
    """Load a model saved by train() (a .keras file); a missing or wrong file gets a clear error."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"{path} is not a .keras checkpoint; train() saves models as name.keras.")
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}: run the training cell of notebook 01 first "
                                "(or helpers.trained_mini_vgg(), which trains one when it is missing).")
    return keras.models.load_model(path)


def plot_history(history, title: str = "Training curves"):
    """Plot accuracy and loss per epoch (training and validation); return the figure."""
    values = history.history
    epochs = np.arange(1, len(values["loss"]) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, metric in zip(axes, ("accuracy", "loss")):
        ax.plot(epochs, values[metric], "o-", label="training")
        if f"val_{metric}" in values:
            ax.plot(epochs, values[f"val_{metric}"], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def predict_dataset(model, dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run `model` over a labelled dataset; return (images uint8 (N, H, W, 3), labels int (N,),
    probabilities float32 (N,) of the positive class)."""
    images, labels, probs = [], [], []
    for x, y in dataset:
        images.append(np.asarray(x).astype(np.uint8))
        labels.append(np.asarray(y).reshape(-1).astype(int))
        probs.append(np.asarray(model(x, training=False), dtype=np.float32).reshape(-1))
    return np.concatenate(images), np.concatenate(labels), np.concatenate(probs)


def plot_predictions(images, probs, class_names, labels=None, titles=None, per_row: int = 6):
    """Show images with the predicted class and its probability; wrong ones titled in red.

    images: (N, H, W, 3) in [0, 255]; probs: (N,) probability of class_names[1]; labels: the
    true class indices (N,) or None when unknown.
    """
    n = len(images)
    if n == 0:
        raise ValueError("plot_predictions got no images.")
    rows = int(np.ceil(n / per_row))
    fig, axes = plt.subplots(rows, per_row, figsize=(2.2 * per_row, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:n]):
        predicted = int(probs[i] >= 0.5)
        confidence = probs[i] if predicted else 1 - probs[i]
        ax.imshow(np.clip(images[i], 0, 255).astype(np.uint8))
        text = f"{class_names[predicted]} {confidence:.0%}"
        if titles is not None:
            text = f"{titles[i]}\n{text}"
        wrong = labels is not None and labels[i] is not None and int(labels[i]) != predicted
        ax.set_title(text, fontsize=9, color="red" if wrong else "black")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------
# 3. Activations and tiling (notebook 02)
# ---------------------------------------------------------------------------


def get_activations(model, images, names) -> dict[str, np.ndarray]:
    """{layer name: activations} for one image (H, W, 3) or a batch (N, H, W, 3) of raw pixels,
    all layers in one forward pass. Arrays are float32 with the batch axis (N, ...) for a batch
    and without it for a single image."""
    names = [names] if isinstance(names, str) else list(names)
    batch, single = as_batch(images)
    expected = model_input(model).shape[1:]
    if any(e is not None and e != a for e, a in zip(expected, batch.shape[1:])):
        raise ValueError(f"Model {model.name!r} expects images of shape {tuple(expected)}, got {batch.shape[1:]}; "
                         "resize with load_image(path, size=...).")
    outputs = activation_model(model, names)(batch, training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return {n: (np.asarray(o, dtype=np.float32)[0] if single else np.asarray(o, dtype=np.float32))
            for n, o in zip(names, outputs)}




def normalise_channels(fmap) -> np.ndarray:
    """The seeds' display normalisation, per channel: (x - mean) / std * 64 + 128, clipped, uint8.

    fmap: (H, W, C) or (1, H, W, C); returns uint8 (H, W, C). A constant (dead) channel becomes
    flat mid-grey 128 -- never NaN, never a warning.
    """
    x = feature_map(fmap)
    flat = x.reshape(-1, x.shape[-1])
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    # one fused affine map per channel, x * gain + offset, instead of four full-size passes
    gain = np.divide(np.float32(64), std, out=np.zeros_like(std), where=std > 1e-12)
    out = x * gain
    out += 128 - mean * gain
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def tile_strip(fmap) -> np.ndarray:
    """Seed 000's first method: all channels side by side, uint8 (H, W * C)."""
    x = normalise_channels(fmap)
    height, width, channels = x.shape
    return x.transpose(0, 2, 1).reshape(height, channels * width)


def tile(cells, per_row: int = 16, margin: int = 0) -> np.ndarray:
    """The tiling behind both grids: n equal cells (n, h, w) or (n, h, w, 3) laid out `per_row` to a
    row with black margins, same dtype: (rows * h + (rows - 1) * margin, per_row * w + (per_row - 1)
    * margin[, 3]), rows = ceil(n / per_row); the last row is padded with black cells."""
    cells = np.asarray(cells)
    if per_row < 1 or margin < 0:
        raise ValueError(f"per_row must be >= 1 and margin >= 0, got per_row={per_row}, margin={margin}.")
    if cells.ndim not in (3, 4) or len(cells) == 0:
        raise ValueError(f"tile needs cells of shape (n, h, w) or (n, h, w, 3); got {cells.shape}.")
    n, height, width, colour = *cells.shape[:3], cells.shape[3:]
    per_row = min(per_row, n)
    rows = -(-n // per_row)
    padded = np.zeros((rows * per_row, height + margin, width + margin, *colour), cells.dtype)
    padded[:n, :height, :width] = cells
    grid = padded.reshape(rows, per_row, height + margin, width + margin, *colour).swapaxes(1, 2)
    grid = grid.reshape(rows * (height + margin), per_row * (width + margin), *colour)
    return grid[: grid.shape[0] - margin, : grid.shape[1] - margin]


def tile_channels(fmap, per_row: int = 16, margin: int = 0) -> np.ndarray:
    """The seeds' second method: the normalised channels of a feature map (H, W, C) in a grid
    `per_row` wide, uint8 (rows * H + (rows - 1) * margin, per_row * W + (per_row - 1) * margin),
    rows = ceil(C / per_row). Any channel count: the last row is padded with black cells (the
    seeds' C // per_row dropped the remainder). Margins are black."""
    return tile(normalise_channels(fmap).transpose(2, 0, 1), per_row, margin)


def plot_layer_activations(fmap, layer_name: str, method: str = "grid", cmap: str = "viridis",
                           per_row: int = 16, max_channels: int | None = 128, save_as: str | None = None):
    """Figure of one layer's feature map, tiled by `method` ("grid" or "strip"), coloured with the
    matplotlib colormap named `cmap` (the seeds used viridis and plasma). Only the first
    `max_channels` channels are drawn (None: all; the title says how many). The figure size
    follows the grid (about one inch per channel tile, at most 20 inches wide); with `save_as`
    the figure is also written through save_figure. Returns the figure."""
    if method not in ("grid", "strip"):
        raise ValueError(f"method must be 'grid' or 'strip', got {method!r}.")
    colormap = matplotlib.colormaps[cmap]
    full = feature_map(fmap)
    x = full[..., :max_channels] if max_channels else full
    image = tile_channels(x, per_row=per_row, margin=max(1, x.shape[0] // 16)) if method == "grid" else tile_strip(x)
    tile = x.shape[0]
    width = min(20.0, max(4.0, image.shape[1] / tile * (1.0 if method == "grid" else 0.6)))
    height = width * image.shape[0] / image.shape[1] + 0.5  # the image's own proportions, plus the title
    fig, ax = plt.subplots(figsize=(width, height))
    ax.imshow(image, cmap=colormap, aspect="equal", interpolation="nearest")
    shown = f"first {x.shape[2]} of {full.shape[2]}" if x.shape[2] < full.shape[2] else str(full.shape[2])
    ax.set_title(f"{layer_name}  {x.shape[0]}x{x.shape[1]}, {shown} channels")
    ax.axis("off")
    fig.tight_layout()
    if save_as:
        save_figure(fig, save_as)
    return fig


def plot_channel(fmap, channel: int, layer_name: str = "", cmap: str = "viridis"):
    """One channel of a feature map, large (the seeds' matshow); returns the figure."""
    x = feature_map(fmap)
    if not 0 <= channel < x.shape[-1]:
        raise ValueError(f"channel {channel} is out of range: this map has channels 0..{x.shape[-1] - 1}.")
    fig, ax = plt.subplots(figsize=(4, 4 * x.shape[0] / x.shape[1]))
    ax.matshow(x[..., channel], cmap=matplotlib.colormaps[cmap])
    ax.set_title(f"{layer_name} channel {channel}".strip())
    ax.axis("off")
    return fig


def layer_statistics(model, images, names=None) -> list[dict]:
    """Per layer: {"name", "depth" (position in `names`), "shape", "zero_fraction" (share of
    activations exactly 0), "dead_channels" (channels that are 0 at every position of every
    image), "channels"}. `names` defaults to every spatial layer; images are raw pixels."""
    names = list(names) if names is not None else layer_names(model, kind="spatial")
    batch, _ = as_batch(images)
    acts = get_activations(model, batch, names)
    stats = []
    for depth, name in enumerate(names):
        a = acts[name]
        if a.ndim != 4:
            raise ValueError(f"Layer {name!r} has output shape {a.shape[1:]}, not a spatial (H, W, C) map.")
        stats.append({"name": name, "depth": depth, "shape": a.shape[1:], "zero_fraction": float((a == 0).mean()),
                      "dead_channels": int((np.abs(a).max(axis=(0, 1, 2)) == 0).sum()), "channels": a.shape[-1]})
    return stats


def plot_sparsity(stats_by_model: dict[str, list[dict]]):
    """Zero fraction and share of dead channels against relative depth, one line per model."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for label, stats in stats_by_model.items():
        depth = np.linspace(0, 1, len(stats))
        axes[0].plot(depth, [s["zero_fraction"] for s in stats], "o-", ms=3, label=label)
        axes[1].plot(depth, [s["dead_channels"] / s["channels"] for s in stats], "o-", ms=3, label=label)
    for ax, title in zip(axes, ("fraction of zero activations", "fraction of dead channels")):
        ax.set_xlabel("relative depth (first to last layer measured)")
        ax.set_title(title)
        ax.set_ylim(-0.02, 1.02)
        ax.legend()
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------
# 4. Filter patterns (notebook 03)
# ---------------------------------------------------------------------------


def deprocess_pattern(x) -> np.ndarray:
    """Seed 001's deprocess_image, per image: centre, std 0.1, +0.5, clip to [0, 1], x255, uint8.

    x: float (H, W, 3) or (N, H, W, 3); returns uint8 of the same shape.
    """
    x = np.asarray(x, np.float32)
    axes = tuple(range(x.ndim - 3, x.ndim))
    x = x - x.mean(axis=axes, keepdims=True)
    x = x / (x.std(axis=axes, keepdims=True) + 1e-5) * 0.1 + 0.5
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


def _filter_means(cut, images, filters):
    """Mean activation of filters[i] over the spatial positions of image i: (N,)."""
    acts = tf.cast(cut(images, training=False), tf.float32)
    return tf.reduce_mean(tf.gather(acts, filters, axis=3, batch_dims=1), axis=(1, 2))


def _plain_ascent_fn(cut, size):
    """Seed 001's gradient ascent, batched and compiled once: batch size, filter indices, steps
    and step size are all tensors of the signature, so no call ever retraces."""
    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32), tf.TensorSpec([None], tf.int32),
                                  tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.float32)])
    def ascend(images, filters, steps, step_size):
        for _ in tf.range(steps):
            with tf.GradientTape() as tape:
                tape.watch(images)
                loss = tf.reduce_sum(_filter_means(cut, images, filters))
            grads = tape.gradient(loss, images)
            grads /= tf.sqrt(tf.reduce_mean(tf.square(grads), axis=(1, 2, 3), keepdims=True)) + 1e-5
            images = images + step_size * grads
        return images

    return ascend


_ASCENT_CACHE: dict = {}


def filter_patterns(model, layer_name: str, filters, size: int = 64, steps: int | None = None,
                    step_size: float = 1.0, seed: int = 0, mode: str = "plain", memory_budget_mb: float = 2048,
                    progress: bool = True, return_gains: bool = False):
    """Images that maximise the mean activation of each filter of `layer_name`.

    filters: int or list of channel indices. Returns uint8 (n, size, size, 3); with
    return_gains=True also {"before": (n,), "after": (n,)}: each filter's mean activation on the
    starting image and on the final (undeprocessed) image.

    mode="plain" reproduces seed 001 in Keras 3: start from grey 128 + uniform noise in [0, 20),
    add step_size x gradient / RMS(gradient) for `steps` steps (default 40), then deprocess_pattern.
    mode="regularised" follows Lucid: Fourier parameterisation with colour decorrelation,
    transformation robustness (pad, jitter, scale, rotation) and Adam; defaults in
    REGULARISED_DEFAULTS (128 steps: Lucid used 512 at 128 px, which takes minutes per layer on a
    CPU). All filters are optimised together in one compiled step, chunked to stay within
    `memory_budget_mb`; each filter's start depends only on (seed, filter), so a filter gives
    the same image alone or in a batch. progress: True for a Keras progress bar over chunks,
    False for none, or a callable(done_chunks, total_chunks).
    """
    if mode not in ("plain", "regularised"):
        raise ValueError(f"mode must be 'plain' or 'regularised', got {mode!r}.")
    filters = [int(f) for f in np.atleast_1d(filters)]
    if not filters:
        raise ValueError("filters is empty: pass one filter index or a list of them.")
    steps = steps if steps is not None else (40 if mode == "plain" else REGULARISED_DEFAULTS["steps"])
    def build():
        cut = truncated_model(model, layer_name, size)
        if mode == "plain":
            return cut, _plain_ascent_fn(cut, size), bytes_per_image(cut)
        # the objective sees the whole transformed canvas, as in Lucid (see cnnvis.lucid.random_transform)
        seen = truncated_model(model, layer_name, canvas_size(size, REGULARISED_DEFAULTS))
        builder = regularised_ascent_fn(lambda images, ids: _filter_means(seen, images, ids), size, REGULARISED_DEFAULTS)
        return cut, builder, bytes_per_image(seen)

    cut, ascend, per_image = cached(_ASCENT_CACHE, model, (layer_name, size, mode), build)
    channels = cut.output.shape[-1]
    bad = [f for f in filters if not 0 <= f < channels]
    if bad:
        raise ValueError(f"Filter index {bad[0]} is out of range: layer {layer_name!r} has filters 0..{channels - 1}.")
    chunk = max(1, int(memory_budget_mb * 2**20 // per_image))
    chunks = [filters[i:i + chunk] for i in range(0, len(filters), chunk)]
    if callable(progress):
        bar = SimpleNamespace(update=lambda done: progress(done, len(chunks)))
    else:
        bar = keras.utils.Progbar(len(chunks), unit_name="chunk") if progress and len(chunks) > 1 else None
    images, before, after = [], [], []
    for index, part in enumerate(chunks):
        ids = tf.constant(part, tf.int32)
        if mode == "plain":
            start = np.stack([np.random.default_rng([seed, f]).random((size, size, 3)) * 20 + 128 for f in part])
            start = tf.constant(start, tf.float32)
            with QuietRetracing():
                final = ascend(start, ids, tf.constant(steps), tf.constant(step_size, tf.float32))
        else:
            spectrum = np.stack([np.random.default_rng([seed, f]).normal(0, 0.01, (3, size, size // 2 + 1, 2))
                                 for f in part])
            start = param_to_image(tf.constant(spectrum, tf.float32), fourier_scale(size)) * 255.0
            with QuietRetracing():
                final = ascend(tf.constant(spectrum, tf.float32), ids, tf.constant(steps), tf.constant(seed))
        before.append(_filter_means(cut, start, ids).numpy())
        after.append(_filter_means(cut, final, ids).numpy())
        images.append(deprocess_pattern(final.numpy()) if mode == "plain" else np.clip(final.numpy(), 0, 255).astype(np.uint8))
        if bar:
            bar.update(index + 1)
    patterns = np.concatenate(images)
    if return_gains:
        return patterns, {"before": np.concatenate(before), "after": np.concatenate(after)}
    return patterns


def pattern_grid(patterns, per_row: int = 8, margin: int = 5) -> np.ndarray:
    """Seed 001's grid: patterns (n, size, size, 3) uint8 in rows of `per_row`, black margins (see tile);
    64 patterns of 64 px give the seed's 8x8 grid of 547 x 547 pixels."""
    patterns = np.asarray(patterns)
    if patterns.ndim != 4 or patterns.shape[-1] != 3 or len(patterns) == 0:
        raise ValueError(f"pattern_grid expects patterns of shape (n, size, size, 3); got {patterns.shape}.")
    return tile(patterns, per_row, margin)




def first_layer_kernels(model, layer_name: str | None = None) -> np.ndarray:
    """The first convolution's kernels as RGB tiles: uint8 (n_filters, k, k, 3), each kernel
    scaled on its own to 0-255 (a 3x3 kernel is a tiny picture of the colour edge it detects)."""
    if layer_name is None:
        convs = layer_names(model, "conv")
        if not convs:
            raise ValueError(f"Model {model.name!r} has no Conv2D layer.")
        layer_name = convs[0]
    layer, _ = find_layer(model, layer_name)
    if not isinstance(layer, keras.layers.Conv2D) or layer.get_weights()[0].shape[2] != 3:
        raise ValueError(f"Layer {layer_name!r} is not a convolution on RGB input; pass the first Conv2D.")
    kernels = layer.get_weights()[0].transpose(3, 0, 1, 2)
    low = kernels.min(axis=(1, 2, 3), keepdims=True)
    span = kernels.max(axis=(1, 2, 3), keepdims=True) - low
    return (np.divide(kernels - low, span, out=np.full_like(kernels, 0.5), where=span > 0) * 255).astype(np.uint8)


def pattern_vs_shuffled(model, layer_name: str, filters, patterns, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each filter's mean activation on its pattern, and on the same pixels shuffled: equal contrast
    and colours, no structure. patterns: uint8 (n, size, size, 3), one per filter. Returns two
    float32 (n,); a pattern that shows what the filter wants beats its own shuffled pixels."""
    batch = np.asarray(patterns, np.float32)
    rng = np.random.default_rng(seed)
    shuffled = np.stack([rng.permutation(p.reshape(-1, 3)).reshape(p.shape) for p in batch])
    cut = truncated_model(model, layer_name, batch.shape[1])
    means = [np.asarray(cut(x, training=False)).mean(axis=(1, 2)) for x in (batch, shuffled)]
    index = np.arange(len(batch)), np.atleast_1d(filters)
    return means[0][index].astype(np.float32), means[1][index].astype(np.float32)


def plot_patterns(patterns, title: str = "", per_row: int = 8, margin: int = 5, save_as: str | None = None):
    """Show pattern_grid(patterns) as one figure (saved through save_figure with `save_as`)."""
    grid = pattern_grid(patterns, per_row, margin)
    width = min(12, 1.3 * min(per_row, len(patterns)))
    fig, ax = plt.subplots(figsize=(width, width * grid.shape[0] / grid.shape[1] + 0.4))  # the grid's aspect, and the title
    ax.imshow(grid, interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
    fig.tight_layout()
    if save_as:
        save_figure(fig, save_as)
    return fig


# ---------------------------------------------------------------------------
# 5. Grad-CAM and its variants (notebook 04)
# ---------------------------------------------------------------------------


def _normalise_maps(cams, report_name: str) -> np.ndarray:
    """ReLU'd maps (N, h, w) -> [0, 1] per map; all-zero maps stay zero and are reported."""
    cams = np.maximum(np.nan_to_num(np.asarray(cams, np.float32)), 0)
    peak = cams.max(axis=(1, 2), keepdims=True)
    zero = int((peak == 0).sum())
    if zero:  # warned as from "helpers.py", so notebook outputs never show this machine's path
        warnings.warn_explicit(f"{report_name}: {zero} of {len(cams)} maps are all zero (nothing in this layer "
                               "raises the class score); they are returned as zeros.", RuntimeWarning,
                               filename="helpers.py", lineno=0, module="helpers")
    return np.divide(cams, peak, out=np.zeros_like(cams), where=peak > 0)


def grad_cam(model, images, layer_name=None, class_index=None, return_classes: bool = False, relu: bool = True):
    """Grad-CAM heatmaps, float32 (N, h, w) in [0, 1] at the layer's resolution.

    images: raw RGB (H, W, 3) or (N, H, W, 3) at the model's input size. layer_name=None uses the
    last spatial layer before the head. class_index: None explains each image's predicted class;
    an int or one per image. A single-sigmoid head has two classes: 1 explains the logit, 0 its
    negative. Scores are taken before the final softmax/sigmoid; channel weights are the
    per-image spatial mean of the gradients (never averaged across the batch), so a batch gives
    the same maps as one image at a time. Compiled once per model and layer. With
    return_classes=True also returns the explained class per image (N,). relu=False returns the
    signed weighted sum before the ReLU and the scaling (float32 (N, h, w), any range): where it
    is negative, the layer's activations lower the class score.
    """
    acts, grads, used = class_gradients(model, images, layer_name, class_index)
    weights = grads.mean(axis=(1, 2))  # per image and channel: how much the class score cares about the map
    signed = np.einsum("nhwc,nc->nhw", acts, weights)
    heat = _normalise_maps(signed, "grad_cam") if relu else signed.astype(np.float32)
    return (heat, np.asarray(used)) if return_classes else heat


def grad_cam_plus_plus(model, images, layer_name=None, class_index=None, relu: bool = True):
    """Grad-CAM++ (Chattopadhay et al., 2018): like grad_cam, with channel weights that sum the
    positive gradients weighted by alpha = g^2 / (2 g^2 + sum(A) g^3). (N, h, w) in [0, 1];
    relu=False: the signed weighted sum, unscaled."""
    acts, grads, _ = class_gradients(model, images, layer_name, class_index)
    g2, g3 = grads**2, grads**3
    denominator = 2 * g2 + acts.sum(axis=(1, 2), keepdims=True) * g3
    alpha = np.divide(g2, denominator, out=np.zeros_like(g2), where=np.abs(denominator) > 1e-12)
    weights = (alpha * np.maximum(grads, 0)).sum(axis=(1, 2))
    signed = np.einsum("nhwc,nc->nhw", acts, weights)
    return _normalise_maps(signed, "grad_cam_plus_plus") if relu else signed.astype(np.float32)


SCORE_CAM_VARIANTS = ("paper", "softmax")


def score_cam(model, images, layer_name=None, class_index=None, variant: str = "paper", baseline: float = 127.5,
              max_channels: int = 256, batch_size: int = 32, relu: bool = True):
    """Score-CAM (Wang et al., 2020): each channel of the layer, upsampled to the image and then
    scaled to [0, 1], masks the image; how the masked image scores weighs the channel; the map is
    the ReLU of the weighted sum of the activations, scaled to [0, 1]. (N, h, w).

    variant="paper": a channel's weight is the class probability (after softmax/sigmoid) of the
    masked image minus that of the baseline image, as the paper defines it. variant="softmax":
    pytorch-grad-cam's version -- the class score before softmax/sigmoid of each masked image,
    softmaxed over the channels (all weights positive, no baseline). Masking blends towards
    `baseline` (mid-grey, 127.5): masked = baseline + mask * (image - baseline), so an "off" pixel
    is grey, near the mean colour, rather than black (the models take raw pixels; for ImageNet's
    preprocessing grey is close to the zero the paper masks with). The `max_channels` channels
    with the highest mean activation are used; masks are scored in batches. relu=False: the
    signed weighted sum, unscaled."""
    if variant not in SCORE_CAM_VARIANTS:
        raise ValueError(f"variant must be one of {SCORE_CAM_VARIANTS}, got {variant!r}.")
    layer_name = check_layer(model, layer_name)
    batch = check_images(model, images)
    classes = explained_classes(model, batch, class_index)
    acts_all = get_activations(model, batch, [layer_name])[layer_name]
    grey = np.full_like(batch[:1], baseline)
    maps = []
    for image, acts, cls in zip(batch, acts_all, classes):
        keep = np.argsort(acts.mean(axis=(0, 1)))[::-1][:max_channels]
        masks = minmax(resize_maps(acts[..., keep].transpose(2, 0, 1), image.shape[:2]))[..., None]
        masked = baseline + masks * (image[None] - baseline)
        if variant == "paper":
            weights = class_probabilities(model, masked, batch_size)[:, cls] - class_probabilities(model, grey)[0, cls]
        else:
            scores = class_scores(model, masked, batch_size)[:, cls]
            weights = np.exp(scores - scores.max())
            weights /= weights.sum()
        maps.append(np.einsum("hwc,c->hw", acts[..., keep], weights))
    signed = np.stack(maps).astype(np.float32)
    return _normalise_maps(signed, "score_cam") if relu else signed


def occlusion_sensitivity(model, images, class_index=None, patch: int = 16, stride: int | None = None,
                          batch_size: int = 64, relu: bool = True):
    """Occlusion (Zeiler and Fergus, 2014; seed 004's 'mask part of the image'): slide a grey
    patch over the image and record how much the class probability drops; each pixel gets the
    largest drop among the patches covering it. (N, H, W) in [0, 1], at the image's resolution;
    relu=False: the drops themselves (negative where every covering patch raised the probability).
    stride: default 8 (16 in quick mode: a quarter of the forward passes, coarser maps)."""
    stride = stride or quick_or_full(16, 8)
    batch, _ = as_batch(images)
    if patch < 1 or stride < 1 or patch > min(batch.shape[1:3]):
        raise ValueError(f"patch and stride must be >= 1 and patch <= image size; got patch={patch}, stride={stride}.")
    classes = explained_classes(model, batch, class_index)
    height, width = batch.shape[1:3]
    corners = [(y, x) for y in range(0, height - patch + 1, stride) for x in range(0, width - patch + 1, stride)]
    maps = []
    for image, cls in zip(batch, classes):
        base = class_probabilities(model, image[None])[0, cls]
        occluded = np.repeat(image[None], len(corners), axis=0)
        for i, (y, x) in enumerate(corners):
            occluded[i, y:y + patch, x:x + patch] = 127.5
        drops = base - class_probabilities(model, occluded, batch_size)[:, cls]
        heat = np.full((height, width), -np.inf, np.float32)
        for (y, x), drop in zip(corners, drops):
            np.maximum(heat[y:y + patch, x:x + patch], drop, out=heat[y:y + patch, x:x + patch])
        maps.append(np.where(np.isfinite(heat), heat, 0))
    signed = np.stack(maps).astype(np.float32)
    return _normalise_maps(signed, "occlusion_sensitivity") if relu else signed


def _pixel_maps(grads, relu: bool, report_name: str) -> np.ndarray:
    """Pixel gradients (N, H, W, 3) -> maps (N, H, W): the largest absolute value over the colour
    channels scaled to [0, 1] (Simonyan et al.'s saliency map), or with relu=False their signed sum."""
    if not relu:
        return grads.sum(axis=-1).astype(np.float32)
    return _normalise_maps(np.abs(grads).max(axis=-1), report_name)


def gradient_saliency(model, images, layer_name=None, class_index=None, relu: bool = True):
    """The plain gradient (Simonyan et al., 2014): how much each pixel changes the class score
    (before softmax/sigmoid). (N, H, W) in [0, 1] at the image's resolution; relu=False: the signed
    gradient summed over the colour channels. layer_name is ignored (the maps live on the pixels)."""
    grads, _ = input_gradients(model, images, class_index)
    return _pixel_maps(grads, relu, "gradient_saliency")


def smoothgrad(model, images, layer_name=None, class_index=None, samples: int | None = None,
               noise: float = 0.15, seed: int = 0, relu: bool = True):
    """SmoothGrad (Smilkov et al., 2017): the gradient averaged over `samples` noisy copies of each
    image (Gaussian noise, sigma = `noise` times the image's value range; 25 copies, 8 in quick
    mode; seeded). (N, H, W) in [0, 1]; relu=False: the signed mean gradient summed over colours.
    The explained class is fixed by the clean image."""
    batch = check_images(model, images)
    classes = explained_classes(model, batch, class_index)
    samples = samples or quick_or_full(8, 25)
    sigma = noise * (batch.max(axis=(1, 2, 3)) - batch.min(axis=(1, 2, 3)))[:, None, None, None]
    noisy = (batch + np.random.default_rng(seed).normal(size=(samples, *batch.shape)) * sigma).astype(np.float32)
    noisy, repeated = noisy.reshape(-1, *batch.shape[1:]), np.tile(classes, samples)
    grads = np.concatenate([input_gradients(model, noisy[i:i + 16], repeated[i:i + 16])[0]
                            for i in range(0, len(noisy), 16)])  # 16 at a time: a backward pass holds every activation
    total = grads.reshape(samples, *batch.shape).sum(axis=0)
    return _pixel_maps(total / samples, relu, "smoothgrad")


_GUIDED: dict = {}


def guided_backprop(model, images, layer_name=None, class_index=None, relu: bool = True):
    """Guided Backpropagation (Springenberg et al., 2015): the pixel gradient with every ReLU/ReLU6
    passing back only positive gradients where its input was in its linear range (cnnvis.guided).
    (N, H, W) in [0, 1]; relu=False: signed, summed over the colour channels. The guided copy is
    built once per model and given the model's current weights at every call."""
    batch = check_images(model, images)
    classes = explained_classes(model, batch, class_index)
    copy = cached(_GUIDED, model, ("guided",), lambda: guided_copy(model), size=4)
    sync_weights(copy, model)
    grads, _ = input_gradients(copy, batch, classes)
    return _pixel_maps(grads, relu, "guided_backprop")


CAM_METHODS = {"Grad-CAM": grad_cam, "Grad-CAM++": grad_cam_plus_plus, "Score-CAM": score_cam,
               "Score-CAM (softmax)": functools.partial(score_cam, variant="softmax"),
               "Occlusion": lambda model, images, layer_name=None, class_index=None, relu=True:
               occlusion_sensitivity(model, images, class_index, relu=relu),  # occlusion needs no layer
               "Gradient": gradient_saliency, "SmoothGrad": smoothgrad, "Guided Backprop": guided_backprop}
PIXEL_METHODS = ("Gradient", "SmoothGrad", "Guided Backprop")  # maps on the pixels; relu=False: the signed colour sum


def explain(model, images, method="Grad-CAM", layer_name=None, class_index=None, relu: bool = True) -> np.ndarray:
    """One entry point for every method: a name in CAM_METHODS ("Grad-CAM", "Grad-CAM++",
    "Score-CAM" (the paper's), "Score-CAM (softmax)" (pytorch-grad-cam's), "Occlusion", and the
    pixel-gradient family "Gradient", "SmoothGrad", "Guided Backprop") or a
    callable(model, images, layer_name=..., class_index=...) returning (N, h, w) maps. relu=False
    asks for the signed maps before the ReLU and the scaling (a callable without a `relu`
    argument is taken to return them already)."""
    if not callable(method) and method not in CAM_METHODS:
        raise ValueError(f"method must be one of {list(CAM_METHODS)}, got {method!r}.")
    function = method if callable(method) else CAM_METHODS[method]
    extra = {} if relu or "relu" not in inspect.signature(function).parameters else {"relu": False}
    return function(model, images, layer_name=layer_name, class_index=class_index, **extra)


def overlay_heatmap(image, heatmap, alpha: float = 0.4, cmap: str = "jet") -> np.ndarray:
    """Blend a heatmap (h, w) in [0, 1] over an RGB image (H, W, 3) in [0, 255]: uint8 (H, W, 3).

    The heatmap is resized to the image with TensorFlow and coloured with matplotlib's colormap
    named `cmap`; alpha is the heatmap's weight.
    """
    image = load_image(image)
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    heat = upsample_heatmap(heatmap, image.shape[:2])
    colours = matplotlib.colormaps[cmap](heat)[..., :3] * 255
    return np.clip((1 - alpha) * image + alpha * colours, 0, 255).astype(np.uint8)


def _signed_maps(model, batch, method, layer_name, classes) -> np.ndarray:
    """A method's maps before the ReLU and the scaling (explain(relu=False)), checked to be finite."""
    with warnings.catch_warnings(), QuietRetracing():
        warnings.simplefilter("ignore", RuntimeWarning)  # randomised models often give empty maps
        maps = np.asarray(explain(model, batch, method, layer_name, classes, relu=False), np.float32)
    if not np.isfinite(maps).all():
        raise ValueError(f"{getattr(method, '__name__', method)} gave NaN or infinite maps for {model.name!r}.")
    return maps


def _compare(original, randomised) -> dict:
    """Adebayo et al.'s two comparisons, per image: Spearman correlation of the signed maps and of
    their absolute values (N,) each, and how many randomised maps are empty (nothing above 0)."""
    return {"signed": np.array([rank_correlation(a, b) for a, b in zip(original, randomised)]),
            "absolute": np.array([rank_correlation(np.abs(a), np.abs(b)) for a, b in zip(original, randomised)]),
            "empty": int((randomised.reshape(len(randomised), -1).max(axis=1) <= 0).sum())}


def _weighted_layers(model) -> list[str]:
    return [layer.name for layer in model.layers if layer.weights and not hasattr(layer, "layers")]


def randomisation_check(model, images, method: str = "Grad-CAM", layer_name=None, class_index=None,
                        top_layers: int = 3, seed: int = 0, threshold: float = 0.5) -> dict:
    """Model-randomisation sanity check (Adebayo et al., 2018) in one step: re-initialise the last
    `top_layers` layers that have weights with their own initialisers (by default reaching into
    the convolutional layers, so the explained activations change too), recompute the signed maps
    and compare them with the originals per image. Returns {"signed", "absolute": mean Spearman
    correlation of the signed maps and of their absolute values, "per_image_signed",
    "per_image_absolute": (N,), "empty": randomised maps with nothing above 0, "flagged": absolute
    > threshold (the maps hardly depend on those layers), "randomised": layer names}. A model
    with NaN or infinite outputs, trained or randomised, is an error."""
    batch, _ = as_batch(images)
    check_finite(model, batch)
    classes = explained_classes(model, batch, class_index)
    original = _signed_maps(model, batch, method, layer_name, classes)
    names = _weighted_layers(model)[-top_layers:]
    copy = randomised_copy(model, names, np.random.default_rng(seed))
    check_finite(copy, batch, "the randomised model")
    result = _compare(original, _signed_maps(copy, batch, method, layer_name, classes))
    return {"signed": float(result["signed"].mean()), "absolute": float(result["absolute"].mean()),
            "per_image_signed": result["signed"], "per_image_absolute": result["absolute"], "empty": result["empty"],
            "flagged": bool(result["absolute"].mean() > threshold), "randomised": names}


def randomisation_stages(model, by_block: bool = False) -> list[tuple[str, list[str]]]:
    """The cascading test's stages, top down: (stage name, layer names) -- one per layer with
    weights, or with by_block=True one per block, the layers sharing the name's first part
    (block6d_expand_conv and block6d_bn -> block6d; top_conv and top_bn -> top)."""
    stages: list[tuple[str, list[str]]] = []
    for name in _weighted_layers(model)[::-1]:
        block = name.split("_")[0] if by_block else name
        if stages and stages[-1][0] == block:
            stages[-1][1].append(name)
        else:
            stages.append((block, [name]))
    return stages


def cascading_randomisation(model, images, method="Grad-CAM", layer_name=None, class_index=None, seed: int = 0,
                            independent: bool = False, max_stages: int | None = None, by_block: bool = False):
    """Adebayo et al.'s (2018) model-randomisation test, from the top down: at stage k the top k
    stages (randomisation_stages: layers, or blocks with by_block=True) of a copy of the model are
    re-initialised with their own initialisers (cascading), or only the k-th (independent=True),
    and each stage's signed maps are compared with the original ones per image. Returns
    [{"layer", "signed", "absolute": mean Spearman correlation of the signed maps and of their
    absolute values, "empty": randomised maps with nothing above 0 (their ReLU'd map is blank,
    counted apart rather than scored), "n": images, "maps": the randomised signed maps (N, h, w)}],
    top first; for a list of methods, {method: that list}, all on the same randomised copies. A
    method whose maps depend on what the model learned falls towards 0; a model with NaN or
    infinite outputs is an error."""
    methods = [method] if isinstance(method, str) or callable(method) else list(method)
    batch, _ = as_batch(images)
    check_finite(model, batch)
    classes = explained_classes(model, batch, class_index)
    originals = {m: _signed_maps(model, batch, m, layer_name, classes) for m in methods}
    copy = keras.models.clone_model(model)  # randomised in place, stage by stage: compiled once per method
    copy.set_weights(model.get_weights())
    rng, results, previous = np.random.default_rng(seed), {m: [] for m in methods}, []
    for stage, names in randomisation_stages(model, by_block)[:max_stages]:
        for name in previous if independent else []:
            copy.get_layer(name).set_weights(model.get_layer(name).get_weights())
        for name in names:
            reinitialise(copy.get_layer(name), rng)
        previous = names
        check_finite(copy, batch, f"the model randomised down to {stage!r}")
        for m in methods:
            maps = _signed_maps(copy, batch, m, layer_name, classes)
            result = _compare(originals[m], maps)
            results[m].append({"layer": stage, "signed": float(result["signed"].mean()), "maps": maps,
                               "absolute": float(result["absolute"].mean()), "empty": result["empty"], "n": len(batch)})
    return results[methods[0]] if isinstance(method, str) or callable(method) else results


def plot_randomisation(stages_by_method: dict):
    """One colour per method: Spearman correlation with the original maps after each randomisation
    stage (cascading_randomisation), absolute maps solid, signed maps dashed, top layer on the
    left; a stage whose randomised maps are all or partly empty is labelled with their count.
    Returns the figure."""
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    for (method, stages), colour in zip(stages_by_method.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        x = np.arange(len(stages))
        ax.plot(x, [s["absolute"] for s in stages], "o-", color=colour, label=f"{method}, absolute")
        ax.plot(x, [s["signed"] for s in stages], "s--", color=colour, label=f"{method}, signed")
        for i, s in enumerate(stages):
            if s["empty"]:
                ax.annotate(f"{s['empty']}/{s['n']} empty", (i, s["absolute"]), textcoords="offset points",
                            xytext=(4, 6), fontsize=7, color=colour)
    labels = [s["layer"] for s in next(iter(stages_by_method.values()))]
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel("Spearman correlation\nwith original maps")
    ax.set_xlabel("randomised down to this layer")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def two_object_composite(a, b, a_left: bool = True, size: int = 224):
    """Two photos side by side, each squeezed to half the width: float32 (size, size, 3) in
    [0, 255], and [box of a, box of b] as (x0, y0, x1, y1) -- the test of whether a map follows the
    class it explains (a on the left when a_left)."""
    halves = [load_image(x, size=(size, size // 2)) for x in ((a, b) if a_left else (b, a))]
    left, right = (0, 0, size // 2 - 1, size - 1), (size // 2, 0, size - 1, size - 1)
    return np.concatenate(halves, axis=1), ([left, right] if a_left else [right, left])


def grey_map(heatmap) -> np.ndarray:
    """A pixel-resolution map (H, W) shown alone, as Adebayo et al. show them: its absolute value
    over its 99th percentile, clipped, as uint8 grey (H, W, 3) -- the few largest gradients would
    otherwise leave every other pixel black."""
    heat = np.abs(np.asarray(heatmap, np.float32))
    top = np.percentile(heat, 99)
    grey = np.clip(heat / top, 0, 1) if top > 0 else np.zeros_like(heat)
    return np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=-1)


def plot_cams(images, maps_by_method: dict, titles=None, boxes=None, alpha: float = 0.45, cmap: str = "jet"):
    """A grid: one row per image, the image then one panel per method -- a class-activation map as an
    overlay, a pixel-gradient map (PIXEL_METHODS) alone in grey (grey_map); boxes (per image, list
    of (x0, y0, x1, y1)) are drawn on every panel. Returns the figure."""
    images = np.asarray(images)
    methods = list(maps_by_method)
    fig, axes = plt.subplots(len(images), 1 + len(methods), figsize=(2.2 * (1 + len(methods)), 2.3 * len(images)),
                             squeeze=False)
    for row, image in enumerate(images):
        panels = [image.astype(np.uint8)] + [grey_map(maps_by_method[m][row]) if m in PIXEL_METHODS
                                             else overlay_heatmap(image, maps_by_method[m][row], alpha, cmap) for m in methods]
        for col, (ax, panel) in enumerate(zip(axes[row], panels)):
            ax.imshow(panel)
            ax.axis("off")
            if row == 0:
                ax.set_title("image" if col == 0 else methods[col - 1], fontsize=10)
            for x0, y0, x1, y1 in (boxes[row] if boxes is not None else []):
                ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1, color="white"))
        if titles is not None:
            axes[row][0].set_title(titles[row], fontsize=9)
    fig.tight_layout()
    return fig


def plot_randomisation_maps(image, originals: dict, stages_by_method: dict, columns=None, index: int = 0):
    """Adebayo et al.'s Figure 2: one row per method, its map of image `index` on the trained model
    and after each chosen cascading stage (`columns`: stage positions, default every stage), as
    absolute values in grey (grey_map; class-activation maps upsampled to the image). originals:
    {method: signed maps (N, h, w)}; stages_by_method: cascading_randomisation's result for a list
    of methods. Returns the figure."""
    stages = next(iter(stages_by_method.values()))
    columns = list(range(len(stages))) if columns is None else list(columns)
    size = np.asarray(image).shape[:2]
    fig, axes = plt.subplots(len(originals), 2 + len(columns), figsize=(1.3 * (2 + len(columns)), 1.4 * len(originals)),
                             squeeze=False)
    for row, (method, original) in enumerate(originals.items()):
        maps = [original[index]] + [stages_by_method[method][c]["maps"][index] for c in columns]
        panels = [np.asarray(image).astype(np.uint8)] + [grey_map(resize_maps(np.abs(m), size)) for m in maps]
        for col, (ax, panel) in enumerate(zip(axes[row], panels)):
            ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(["image", "trained"][col] if col < 2 else stages[columns[col - 2]]["layer"], fontsize=7,
                             rotation=45 if col >= 2 else 0)
        axes[row][0].set_ylabel(method, fontsize=8)
    fig.tight_layout()
    return fig


def densenet_with_new_head(n_classes: int = 200, weights="imagenet"):
    """Seed 004's transfer-learning model: DenseNet169 without its top, global average pooling,
    Dense 1024 ReLU and a softmax over `n_classes` (raw pixels in, see load_pretrained)."""
    layers = keras.layers

    base = load_pretrained("densenet169", include_top=False, weights=weights, input_shape=(224, 224, 3))
    x = layers.GlobalAveragePooling2D(name="gap")(base.output)
    x = layers.Dense(1024, activation="relu", name="fc1024")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="predictions")(x)
    model = keras.Model(base.inputs[0], outputs, name="densenet169_new_head")
    model.pretrained = base.pretrained
    return model


# ---------------------------------------------------------------------------
# 6. Your own model (notebook 05)
# ---------------------------------------------------------------------------

def example_model_file(paths=None) -> Path:
    """Notebook 05's default model as a file: the trained EfficientNet-Lite0 (raw pixels in, ImageNet
    probabilities out) saved once as models/efficientnet_lite0_as_yours.keras, so that it is loaded
    back exactly as a model file of yours would be."""
    path = (paths or project_paths()).models / "efficientnet_lite0_as_yours.keras"
    if not path.is_file():
        load_pretrained("efficientnet_lite0").save(path)
    return path


def your_model(spec, preprocess: str = "raw", custom_objects: dict | None = None):
    """A model of yours that takes raw RGB pixels 0-255: load_your_model(spec) with the named
    preprocessing in front (with_preprocessing; "raw" when the model takes pixels as they are)."""
    return with_preprocessing(load_your_model(spec, custom_objects), preprocess)


def input_size(model, default: int = 224) -> tuple[int, int]:
    """(height, width) the model takes; `default` for a side it leaves open."""
    height, width = model_input(model).shape[1:3]
    return height or default, width or default


def describe_your_model(model) -> str:
    """Three lines: the input size, the kind of output, and the layer the maps use, with why and the
    other candidates."""
    kind, n = output_kind(model)
    meaning = {"softmax": f"softmax over {n} classes", "scores": f"{n} linear scores (logits)",
               "binary": "one sigmoid: both classes can be explained, class 1 and its negation",
               "multi-label": f"{n} sigmoids, one per label, each explained on its own",
               "regression": "one linear value: class 1 shows what raises it, class 0 what lowers it"}[kind]
    chosen, others = layer_choice(model)
    height, width = input_size(model)
    return (f"input: {height} x {width} RGB pixels\noutput: {meaning}\n"
            f"maps at: {chosen} (the last layer with a spatial map before the head: later layers keep no "
            f"\"where\"); other candidates: {', '.join(others) or 'none'}")


# ---------------------------------------------------------------------------
# 7. Explorers (ipywidgets)
# ---------------------------------------------------------------------------



def _panel(rows, **controls):
    """The explorers' widget tree: a VBox of `rows`, with each control also reachable as an attribute."""
    tree = widgets.VBox(rows)
    for name, control in controls.items():
        setattr(tree, name, control)
    return tree


def activation_explorer(model, images: dict, names=None, cmap: str = "viridis"):
    """An ipywidgets explorer: image, layer and channel controls; the layer's channel grid and the
    chosen channel shown large. Returns the widget tree (an ipywidgets.VBox) with the controls as
    attributes: image_dropdown, layer_dropdown, channel_slider, grid_image, channel_image, status.

    images: {label: raw RGB array (H, W, 3)}, already at the model's input size. names: layers to
    offer (default: the spatial layers from the first convolution on; input scaling layers have
    nothing to show). Activations are computed once per image (all layers in one pass) and cached;
    sliders update on release; errors from a callback are shown in `status`, never swallowed.
    """
    if names is None:
        spatial, convs = layer_names(model, kind="spatial"), layer_names(model, kind="conv")
        names = spatial[spatial.index(convs[0]):] if convs and convs[0] in spatial else spatial
    if not images:
        raise ValueError("activation_explorer needs at least one image: {label: array (H, W, 3)}.")
    cache: dict[str, dict[str, np.ndarray]] = {}
    image_dropdown = widgets.Dropdown(options=list(images), description="image")
    layer_dropdown = widgets.Dropdown(options=list(names), description="layer")
    channel_slider = widgets.IntSlider(min=0, max=1, description="channel", continuous_update=False)
    grid_image, channel_image, status = widgets.Image(format="png"), widgets.Image(format="png"), widgets.HTML()

    def feature_map():
        if image_dropdown.value not in cache:
            cache[image_dropdown.value] = get_activations(model, images[image_dropdown.value], list(names))
        return cache[image_dropdown.value][layer_dropdown.value]

    @report_errors(status)
    def show_channel(*_):
        channel_image.value = figure_png(plot_channel(feature_map(), channel_slider.value, layer_dropdown.value, cmap))

    @report_errors(status)
    def show_layer(*_):
        fmap = feature_map()
        channel_slider.unobserve(show_channel, "value")  # one redraw, below, not one per changed trait
        channel_slider.max = fmap.shape[-1] - 1
        channel_slider.observe(show_channel, "value")
        grid_image.value = figure_png(plot_layer_activations(fmap, layer_dropdown.value, cmap=cmap))
        show_channel()

    image_dropdown.observe(show_layer, "value")
    layer_dropdown.observe(show_layer, "value")
    channel_slider.observe(show_channel, "value")
    show_layer()
    return _panel([widgets.HBox([image_dropdown, layer_dropdown, channel_slider]), status,
                   widgets.HBox([grid_image, channel_image])], image_dropdown=image_dropdown,
                  layer_dropdown=layer_dropdown, channel_slider=channel_slider, grid_image=grid_image,
                  channel_image=channel_image, status=status)


def pattern_explorer(model, names=None, size: int = 64, max_filters: int = 64):
    """An ipywidgets panel for filter patterns: layer, filter range and mode; nothing is computed
    until the Compute button is pressed, then a progress bar follows the chunks. Returns the
    widget tree (VBox) with attributes layer_dropdown, filter_range, mode_buttons, compute_button,
    progress, grid_image, status."""
    names = list(names) if names is not None else layer_names(model, kind="conv")
    if not names:
        raise ValueError(f"Model {model.name!r} has no layer to show patterns for.")
    layer_dropdown = widgets.Dropdown(options=names, description="layer")
    filter_range = widgets.IntRangeSlider(value=(0, 7), min=0, max=7, description="filters", continuous_update=False)
    mode_buttons = widgets.ToggleButtons(options=["plain", "regularised"], description="mode")
    compute_button = widgets.Button(description="Compute", button_style="primary")
    progress = widgets.IntProgress(min=0, max=1, description="chunks")
    grid_image, status = widgets.Image(format="png"), widgets.HTML()

    def set_range(*_):
        channels = find_layer(model, layer_dropdown.value)[0].output.shape[-1]
        filter_range.max = channels - 1
        filter_range.value = (min(filter_range.value[0], channels - 1), min(filter_range.value[1], channels - 1))

    def advance(done, total):
        progress.max, progress.value = total, done

    @report_errors(status)
    def compute(*_):
        first, last = filter_range.value
        if last - first + 1 > max_filters:
            raise ValueError(f"{last - first + 1} filters requested; at most {max_filters} at a time.")
        status.value = "computing..."
        patterns = filter_patterns(model, layer_dropdown.value, list(range(first, last + 1)), size=size,
                                   mode=mode_buttons.value, progress=advance)
        grid_image.value = figure_png(plot_patterns(patterns, f"{layer_dropdown.value} filters {first}-{last} "
                                                              f"({mode_buttons.value})"))
        status.value = ""

    layer_dropdown.observe(set_range, "value")
    compute_button.on_click(compute)
    set_range()
    return _panel([widgets.HBox([layer_dropdown, filter_range]), widgets.HBox([mode_buttons, compute_button]),
                   progress, status, grid_image], layer_dropdown=layer_dropdown, filter_range=filter_range,
                  mode_buttons=mode_buttons, compute_button=compute_button, progress=progress,
                  grid_image=grid_image, status=status)


def cam_explorer(model, images: dict, class_names, names=None, boxes: dict | None = None):
    """An ipywidgets panel for class-activation maps: image, class, layer and method. Returns the
    widget tree (VBox) with attributes image_dropdown, class_dropdown, layer_dropdown,
    method_dropdown, overlay_image, status. images: {label: raw RGB (H, W, 3) at the model's
    size}; class_names: every class's name in order, or {class index: name} for a few of many
    (ImageNet's 1000); boxes: optional {label: [(x0, y0, x1, y1), ...]} drawn on the overlay."""
    names = list(names) if names is not None else layer_names(model, kind="spatial")[-4:]
    if not images:
        raise ValueError("cam_explorer needs at least one image: {label: array (H, W, 3)}.")
    image_dropdown = widgets.Dropdown(options=list(images), description="image")
    pairs = class_names.items() if isinstance(class_names, dict) else enumerate(class_names)
    class_dropdown = widgets.Dropdown(options=[("predicted", -1)] + [(n, i) for i, n in pairs], description="class")
    layer_dropdown = widgets.Dropdown(options=names, value=names[-1], description="layer")
    method_dropdown = widgets.Dropdown(options=list(CAM_METHODS), description="method")
    overlay_image, status = widgets.Image(format="png"), widgets.HTML()

    @report_errors(status)
    def show(*_):
        label = image_dropdown.value
        cls = None if class_dropdown.value < 0 else class_dropdown.value
        heat = explain(model, images[label][None], method_dropdown.value, layer_dropdown.value, cls)
        fig = plot_cams(images[label][None], {method_dropdown.value: heat},
                        boxes=[boxes[label]] if boxes and label in boxes else None)
        overlay_image.value = figure_png(fig)
        status.value = "map is all zero" if heat.max() == 0 else ""

    for control in (image_dropdown, class_dropdown, layer_dropdown, method_dropdown):
        control.observe(show, "value")
    show()
    return _panel([widgets.HBox([image_dropdown, class_dropdown]), widgets.HBox([layer_dropdown, method_dropdown]),
                   status, overlay_image], image_dropdown=image_dropdown, class_dropdown=class_dropdown,
                  layer_dropdown=layer_dropdown, method_dropdown=method_dropdown, overlay_image=overlay_image,
                  status=status)
