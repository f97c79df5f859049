import warnings

import keras
import matplotlib.pyplot as plt
import numpy as np
import pytest
from keras import layers

import helpers
from cnnvis import keras3

RNG = np.random.default_rng(0)
IMAGES = RNG.uniform(0, 255, (2, 32, 32, 3)).astype("float32")


def _reference(model, name, images):
    """Straightforward reference: run the layers one by one (models here are plain chains)."""
    x = images
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        x = layer(x, training=False)
        if layer.name == name:
            return np.asarray(x)
    raise KeyError(name)


@pytest.fixture(scope="module")
def functional():
    return helpers.build_mini_vgg(input_size=32)


def _sequential(with_input):
    stack = [layers.Rescaling(1 / 255), layers.Conv2D(6, 3, activation="relu", name="c1"),
             layers.MaxPooling2D(name="p1"), layers.Conv2D(5, 3, name="c2"), layers.Flatten(name="flat"),
             layers.Dense(1, name="out")]
    model = keras.Sequential(([keras.Input((32, 32, 3))] if with_input else []) + stack)
    model(IMAGES[:1])
    return model


@pytest.mark.parametrize("with_input", [True, False])
def test_sequential_models_with_and_without_input(with_input):
    model = _sequential(with_input)
    acts = helpers.get_activations(model, IMAGES, ["c1", "c2"])
    assert acts["c1"].shape == (2, 30, 30, 6) and acts["c2"].shape == (2, 13, 13, 5)
    np.testing.assert_allclose(acts["c2"], _reference(model, "c2", IMAGES), rtol=1e-5, atol=1e-5)


def test_trained_sequential_without_input():
    model = _sequential(False)
    model.compile(optimizer="sgd", loss="mse")
    model.fit(IMAGES, np.zeros((2, 1)), epochs=1, verbose=0)
    assert helpers.get_activations(model, IMAGES[0], ["p1"])["p1"].shape == (15, 15, 6)


def test_unbuilt_sequential_is_a_clear_error():
    model = keras.Sequential([layers.Conv2D(2, 3, name="c")])
    with pytest.raises(ValueError, match="has not been built"):
        helpers.get_activations(model, IMAGES, ["c"])


def test_functional_single_image_drops_batch_axis(functional):
    acts = helpers.get_activations(functional, IMAGES[0], ["block0_conv2", "block2_conv1"])
    assert acts["block0_conv2"].shape == (32, 32, 16) and acts["block2_conv1"].shape == (8, 8, 64)
    np.testing.assert_allclose(acts["block2_conv1"], _reference(functional, "block2_conv1", IMAGES[:1])[0], rtol=1e-5,
                               atol=1e-4)


def test_loaded_keras_file(tmp_path, functional):
    path = tmp_path / "m.keras"
    functional.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(helpers.get_activations(loaded, IMAGES, "block1_conv1")["block1_conv1"],
                               helpers.get_activations(functional, IMAGES, "block1_conv1")["block1_conv1"], rtol=1e-5)


@pytest.mark.parametrize("outer_kind", ["sequential", "functional"])
def test_layers_inside_a_nested_base(functional, outer_kind):
    base = keras.Model(functional.inputs, functional.get_layer("block2_pool1").output, name="base")
    if outer_kind == "sequential":
        outer = keras.Sequential([keras.Input((32, 32, 3)), base, layers.GlobalAveragePooling2D(), layers.Dense(2, name="head")])
    else:
        inputs = keras.Input((32, 32, 3))
        outer = keras.Model(inputs, layers.Dense(2, name="head")(layers.GlobalAveragePooling2D()(base(inputs))))
    acts = helpers.get_activations(outer, IMAGES, ["block1_conv2", "head"])
    expected = helpers.get_activations(functional, IMAGES, ["block1_conv2"])["block1_conv2"]
    np.testing.assert_allclose(acts["block1_conv2"], expected, rtol=1e-5)
    np.testing.assert_allclose(acts["head"], outer.predict(IMAGES, verbose=0), rtol=1e-4, atol=1e-5)
    assert "block1_conv2" in helpers.layer_names(outer, kind="conv")


def test_layer_names_kinds(functional):
    all_names = helpers.layer_names(functional)
    assert all_names[0] == "rescale" and all_names[-1] == "prediction"
    assert helpers.layer_names(functional, "conv") == ["block0_conv1", "block0_conv2", "block1_conv1", "block1_conv2",
                                                        "block2_conv1", "block2_conv2", "block3_conv1"]
    spatial = helpers.layer_names(functional, "spatial")
    assert "block3_pool" in spatial and "flatten" not in spatial and "dense" not in spatial
    with pytest.raises(ValueError, match="kind must be"):
        helpers.layer_names(functional, "dense")


def test_unknown_layer_lists_closest_names(functional):
    with pytest.raises(ValueError, match=r"No layer named 'block2_conv3'.*closest: block2_conv2"):
        helpers.get_activations(functional, IMAGES, ["block2_conv3"])


@pytest.mark.parametrize("old, new", [("bn2a_branch2b", "conv2_block1_2_bn"), ("res2a_branch2a", "conv2_block1_1_conv"),
                                      ("res4e_branch2c", "conv4_block5_3_conv"), ("res3b_branch1", "conv3_block2_0_conv"),
                                      ("conv1", "conv1_conv"), ("bn_conv1", "conv1_bn")])
def test_keras2_resnet_names_are_explained(functional, old, new):
    assert helpers.keras3_resnet_name(old) == new
    if old != "conv1":
        with pytest.raises(ValueError, match=f"Keras 2 ResNet50 layer name.*use '{new}'"):
            helpers.find_layer(functional, old)
    assert helpers.keras3_resnet_name("block0_conv1") is None


def test_wrong_image_shape_is_clear(functional):
    with pytest.raises(ValueError, match=r"expects images of shape \(32, 32, 3\), got \(40, 40, 3\)"):
        helpers.get_activations(functional, np.zeros((40, 40, 3)), ["block0_conv1"])
    with pytest.raises(ValueError, match=r"got shape \(32, 32\)"):
        helpers.get_activations(functional, np.zeros((32, 32)), ["block0_conv1"])


def test_activation_model_is_one_multi_output_model(functional):
    model = helpers.activation_model(functional, ["block0_conv1", "block1_conv1"])
    assert len(model.outputs) == 2 and model.inputs[0].shape[1:] == (32, 32, 3)
    with pytest.raises(ValueError, match="at least one layer"):
        helpers.activation_model(functional, [])


# ---- tiling ---------------------------------------------------------------------

def _seed_grid(fmap, per_row=16):
    """The seeds' nested-loop method 2, for comparison (drops the remainder channels)."""
    size_h, size_w, n = fmap.shape
    n_cols = n // per_row
    grid = np.zeros((size_h * n_cols, per_row * size_w))
    for col in range(n_cols):
        for row in range(per_row):
            img = fmap[:, :, col * per_row + row].copy()
            img -= img.mean()
            img /= img.std()
            img *= 64
            img += 128
            grid[col * size_h:(col + 1) * size_h, row * size_w:(row + 1) * size_w] = np.clip(img, 0, 255).astype("uint8")
    return grid


def test_tile_channels_matches_the_seed_method():
    fmap = RNG.normal(size=(7, 5, 32)).astype("float32")
    np.testing.assert_array_equal(helpers.tile_channels(fmap), _seed_grid(fmap))
    np.testing.assert_array_equal(helpers.tile_channels(fmap[None]), _seed_grid(fmap))


def test_tile_channels_pads_instead_of_dropping_channels():
    fmap = RNG.normal(size=(4, 4, 20)).astype("float32")
    grid = helpers.tile_channels(fmap, per_row=16)
    assert grid.shape == (8, 64)
    np.testing.assert_array_equal(grid[4:, 0:4], helpers.normalise_channels(fmap)[..., 16])  # channel 16 is kept
    assert (grid[4:, 16:] == 0).all()  # padding cells
    with_margin = helpers.tile_channels(fmap, per_row=8, margin=2)
    assert with_margin.shape == (3 * 4 + 2 * 2, 8 * 4 + 7 * 2)


def test_non_square_maps_and_strip():
    fmap = RNG.normal(size=(250, 167, 3)).astype("float32")
    assert helpers.tile_channels(fmap).shape == (250, 3 * 167)
    strip = helpers.tile_strip(fmap)
    assert strip.shape == (250, 3 * 167) and strip.dtype == np.uint8
    np.testing.assert_array_equal(strip[:, 167:334], helpers.normalise_channels(fmap)[..., 1])


def test_dead_channel_is_flat_grey_without_warnings():
    fmap = RNG.normal(size=(6, 6, 4)).astype("float32")
    fmap[..., 2] = 0.0
    fmap[..., 3] = 5.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        normalised = helpers.normalise_channels(fmap)
    assert (normalised[..., 2] == 128).all() and (normalised[..., 3] == 128).all()
    assert normalised.dtype == np.uint8


@pytest.mark.parametrize("shape", [(1, 512), (512,), (2, 4, 4, 3)])
def test_non_spatial_maps_are_a_clear_error(shape):
    with pytest.raises(ValueError, match="spatial feature map"):
        helpers.tile_channels(np.zeros(shape))


def test_tile_argument_errors():
    with pytest.raises(ValueError, match="per_row must be >= 1"):
        helpers.tile_channels(np.zeros((2, 2, 2)), per_row=0)


def test_plot_layer_activations_and_channel(project_home):
    fmap = RNG.normal(size=(10, 10, 20)).astype("float32")
    fig = helpers.plot_layer_activations(fmap, "layer_x", cmap="plasma", save_as="unit_grid")
    assert "layer_x" in fig.axes[0].get_title() and fig.axes[0].images[0].get_cmap().name == "plasma"
    assert (helpers.project_paths().figures / "unit_grid.png").exists()
    plt.close(fig)
    fig = helpers.plot_layer_activations(fmap, "layer_x", method="strip")
    assert fig.get_size_inches()[0] <= 20
    plt.close(fig)
    # issue 14: strips were stretched to the figure (aspect="auto"), 2.5-4.5x too tall
    for shape in [(160, 160, 16), (40, 40, 64), (10, 10, 20)]:
        fig = helpers.plot_layer_activations(RNG.normal(size=shape).astype("float32"), "s", method="strip")
        fig.canvas.draw()
        box = fig.axes[0].get_window_extent()
        assert fig.axes[0].get_aspect() == 1.0 and box.height / box.width == pytest.approx(shape[0] / (shape[1] * shape[2]), rel=0.05)
        plt.close(fig)
    fig = helpers.plot_layer_activations(fmap, "layer_x", per_row=4, max_channels=8)
    assert "first 8 of 20 channels" in fig.axes[0].get_title()
    assert fig.axes[0].images[0].get_array().shape == (2 * 10 + 1, 4 * 10 + 3)
    plt.close(fig)
    fig = helpers.plot_channel(fmap, 3, "layer_x")
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), fmap[..., 3])
    plt.close(fig)
    with pytest.raises(ValueError, match=r"channel 20 is out of range.*0\.\.19"):
        helpers.plot_channel(fmap, 20)
    with pytest.raises(ValueError, match="method must be"):
        helpers.plot_layer_activations(fmap, "x", method="mosaic")
    with pytest.raises(KeyError):
        helpers.plot_layer_activations(fmap, "x", cmap="no_such_map")


# ---- statistics ------------------------------------------------------------------

def test_layer_statistics_counts_zeros_and_dead_channels():
    inputs = keras.Input((8, 8, 3))
    conv = layers.Conv2D(4, 1, activation="relu", name="c", kernel_initializer="ones")
    outputs = conv(inputs)
    model = keras.Model(inputs, outputs)
    kernel, bias = conv.get_weights()
    kernel[..., 1] = -1.0  # channel 1 negative everywhere -> ReLU -> dead
    conv.set_weights([kernel, bias])
    stats = helpers.layer_statistics(model, np.ones((2, 8, 8, 3), "float32"), ["c"])
    assert stats == [{"name": "c", "depth": 0, "shape": (8, 8, 4), "zero_fraction": 0.25, "dead_channels": 1,
                      "channels": 4}]
    fig = helpers.plot_sparsity({"toy": stats})
    assert len(fig.axes[0].lines) == 1
    plt.close(fig)


def test_layer_statistics_rejects_dense_layers(functional):
    with pytest.raises(ValueError, match="not a spatial"):
        helpers.layer_statistics(functional, IMAGES, ["dense"])


# ---- pretrained models -------------------------------------------------------------

def test_load_pretrained_offline_falls_back_with_one_banner(capsys):
    model = helpers.load_pretrained("resnet50", include_top=False, input_shape=(32, 32, 3))
    out = capsys.readouterr().out
    banner = [line for line in out.splitlines() if "RANDOM weights" in line]
    if model.pretrained:  # a machine with internet got the real weights
        assert not banner
    else:
        assert len(banner) == 1 and banner[0].startswith("OFFLINE")
    assert "conv2_block1_1_conv" in helpers.layer_names(model, "conv")
    assert len(helpers.layer_names(model, "conv")) == 53
    assert helpers.get_activations(model, IMAGES[0], ["conv1_conv"])["conv1_conv"].shape == (16, 16, 64)


def _flaky_resnet(monkeypatch, failures):
    """keras.applications.ResNet50 whose ImageNet download raises `failures` in turn, then works
    (with random weights: nothing is downloaded here); returns the list of calls."""
    real, calls = keras.applications.ResNet50, []

    def constructor(weights=None, **kwargs):
        calls.append(weights)
        if weights == "imagenet" and failures:
            raise failures.pop(0)
        return real(weights=None, **kwargs)

    monkeypatch.setattr(keras.applications, "ResNet50", constructor)
    return calls


URL_FAILURE = Exception("URL fetch failure on https://storage.googleapis.com/x.h5: None -- [Errno -3] "
                        "Temporary failure in name resolution")


def test_download_failures_are_told_from_other_errors():
    import urllib.error

    assert keras3.download_failure(URL_FAILURE) and keras3.download_failure(urllib.error.URLError("timed out"))
    assert keras3.download_failure(ConnectionResetError(104, "reset")) and keras3.download_failure(TimeoutError())
    assert keras3.download_failure(ValueError("Incomplete or corrupted file detected. The sha256 file hash ..."))
    assert not keras3.download_failure(TypeError("unexpected keyword argument 'input_tensor'"))
    assert not keras3.download_failure(OSError(28, "No space left on device"))


def test_only_a_failed_download_falls_back_and_the_banner_shows_the_error(monkeypatch, capsys):
    _flaky_resnet(monkeypatch, [URL_FAILURE])
    model = helpers.load_pretrained("resnet50", include_top=False, input_shape=(32, 32, 3))
    banner = capsys.readouterr().out.strip()
    assert not model.pretrained and banner.startswith("OFFLINE") and "\n" not in banner
    assert "URL fetch failure on https://storage.googleapis.com/x.h5" in banner and "name resolution" in banner
    _flaky_resnet(monkeypatch, [TypeError("ResNet50() got an unexpected keyword argument 'input_tensor'")])
    with pytest.raises(TypeError, match="unexpected keyword"):  # an API change is not "offline"
        helpers.load_pretrained("resnet50", include_top=False, input_shape=(32, 32, 3))


def test_in_colab_a_failed_download_is_retried_once_then_stops(monkeypatch, capsys):
    monkeypatch.setattr(keras3, "in_colab", lambda: True)
    calls = _flaky_resnet(monkeypatch, [URL_FAILURE])
    model = helpers.load_pretrained("resnet50", include_top=False, input_shape=(32, 32, 3))
    assert calls == ["imagenet", "imagenet"] and model.pretrained
    assert "trying once more" in capsys.readouterr().out
    calls = _flaky_resnet(monkeypatch, [URL_FAILURE, ConnectionResetError(104, "Connection reset by peer")])
    with pytest.raises(RuntimeError, match=r"could not be downloaded twice \(ConnectionResetError: .*run this cell again"):
        helpers.load_pretrained("resnet50", include_top=False, input_shape=(32, 32, 3))
    assert calls == ["imagenet", "imagenet"]  # no random weights in Colab


def test_a_machine_offline_on_purpose_does_not_try_the_download(monkeypatch, capsys):
    monkeypatch.setattr(keras3, "in_colab", lambda: True)  # even in Colab (CI's stand-in has no internet)
    monkeypatch.setenv("CNNVIS_OFFLINE", "1")
    calls = _flaky_resnet(monkeypatch, [URL_FAILURE, URL_FAILURE])
    model = helpers.load_pretrained("resnet50", include_top=False, input_shape=(32, 32, 3))
    assert calls == [None] and not model.pretrained
    assert capsys.readouterr().out.startswith("OFFLINE (CNNVIS_OFFLINE=1): ImageNet weights for ResNet50 are not")


@pytest.mark.parametrize("name, mode", [("resnet50", "caffe"), ("densenet169", "torch")])
def test_pretrained_preprocessing_matches_keras_and_passes_gradients(name, mode):
    import tensorflow as tf

    model = helpers.load_pretrained(name, include_top=False, weights=None, input_shape=(32, 32, 3))
    x = tf.constant(IMAGES)
    layer = model.get_layer("imagenet_preprocess")
    np.testing.assert_allclose(layer(x), keras.applications.imagenet_utils.preprocess_input(IMAGES.copy(), mode=mode),
                               rtol=1e-5, atol=1e-4)
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(model(x))
    grads = tape.gradient(total, x)
    assert grads is not None and float(tf.reduce_max(tf.abs(grads))) > 0


def test_load_pretrained_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="Unknown pretrained model 'vgg99'"):
        helpers.load_pretrained("vgg99")
    with pytest.raises(FileNotFoundError, match="missing.h5 not found"):
        helpers.load_pretrained("resnet50", weights=tmp_path / "missing.h5")


def test_load_pretrained_local_weights_file(tmp_path):
    model = helpers.load_pretrained("densenet169", include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "densenet.weights.h5"
    model.save_weights(path)
    again = helpers.load_pretrained("densenet169", include_top=False, weights=path, input_shape=(32, 32, 3))
    assert again.pretrained
    np.testing.assert_array_equal(again.get_layer("conv1_conv").get_weights()[0], model.get_layer("conv1_conv").get_weights()[0])


# ---- widget ---------------------------------------------------------------------

def test_activation_explorer_updates_on_slider_and_layer(functional):
    explorer = helpers.activation_explorer(functional, {"a": IMAGES[0], "b": IMAGES[1]},
                                           names=["block0_conv1", "block2_conv1"])
    assert explorer.status.value == ""
    assert explorer.channel_slider.max == 15 and not explorer.channel_slider.continuous_update
    grid, channel = explorer.grid_image.value, explorer.channel_image.value
    assert grid[:4] == b"\x89PNG"
    explorer.channel_slider.value = 5
    assert explorer.channel_image.value != channel and explorer.grid_image.value == grid
    explorer.layer_dropdown.value = "block2_conv1"
    assert explorer.channel_slider.max == 63 and explorer.grid_image.value != grid
    before = explorer.grid_image.value
    explorer.image_dropdown.value = "b"
    assert explorer.grid_image.value != before


def test_activation_explorer_starts_at_the_first_convolution(functional):
    explorer = helpers.activation_explorer(functional, {"a": IMAGES[0]})
    assert explorer.layer_dropdown.options[0] == "block0_conv1" and "rescale" not in explorer.layer_dropdown.options


def test_activation_explorer_shows_errors(functional):
    explorer = helpers.activation_explorer(functional, {"bad": np.zeros((40, 40, 3))}, names=["block0_conv1"])
    assert "expects images of shape" in explorer.status.value
    with pytest.raises(ValueError, match="at least one image"):
        helpers.activation_explorer(functional, {})


def test_cache_never_confuses_two_models_with_the_same_id():
    cache = {}

    class Fake:
        pass

    first = Fake()
    assert keras3.cached(cache, first, ("k",), lambda: "first") == "first"
    assert keras3.cached(cache, first, ("k",), lambda: "again") == "first"  # memoised
    key = (id(first), "k")
    cache[key] = (Fake(), "stale")  # an entry left by another object that had the same id
    assert keras3.cached(cache, first, ("k",), lambda: "rebuilt") == "rebuilt"
    for i in range(20):
        keras3.cached(cache, Fake(), (i,), lambda: i, size=16)
    assert len(cache) == 16


def test_one_tiler_lays_out_grey_and_colour_cells_row_by_row():
    """Issue 10: tile() is the one tiling behind tile_channels and pattern_grid."""
    grey = np.arange(5 * 2 * 3, dtype=np.uint8).reshape(5, 2, 3)
    grid = helpers.tile(grey, per_row=2, margin=1)
    assert grid.shape == (3 * 2 + 2, 2 * 3 + 1)
    np.testing.assert_array_equal(grid[3:5, 4:7], grey[3])  # row 1, column 1
    assert (grid[6:8, 4:7] == 0).all() and (grid[2] == 0).all()  # the padding cell and the margins are black
    colour = np.ones((3, 4, 4, 3), np.uint8)
    assert helpers.tile(colour, per_row=8).shape == (4, 12, 3)  # per_row capped at the number of cells
    with pytest.raises(ValueError, match="shape"):
        helpers.tile(np.zeros((4, 4)))
