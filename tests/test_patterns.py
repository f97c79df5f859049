import keras
import matplotlib.pyplot as plt
import numpy as np
import pytest
from keras import layers

import helpers
from cnnvis import lucid


@pytest.fixture(scope="module")
def linear_net():
    """Convolutions without ReLU: every filter has a gradient, so every filter must gain."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((None, None, 3))
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.Conv2D(8, 3, name="c1")(x)
    x = layers.MaxPooling2D(name="pool")(x)
    x = layers.Conv2D(6, 3, name="c2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, layers.Dense(1, name="out")(x), name="linear_net")


def test_plain_patterns_shape_dtype_and_gain(linear_net):
    patterns, gains = helpers.filter_patterns(linear_net, "c2", [0, 3, 5], size=32, return_gains=True, progress=False)
    assert patterns.shape == (3, 32, 32, 3) and patterns.dtype == np.uint8
    assert (gains["after"] > gains["before"]).all()
    # deprocessed like seed 001: centred on 0.5 * 255 with std 0.1 * 255 before clipping
    assert abs(patterns.mean() - 127.5) < 3 and 20 < patterns.std() < 30


def test_regularised_patterns_gain_and_range(linear_net):
    patterns, gains = helpers.filter_patterns(linear_net, "c2", [1, 2], size=32, mode="regularised", steps=64,
                                              return_gains=True, progress=False)
    assert patterns.shape == (2, 32, 32, 3) and patterns.dtype == np.uint8
    assert (gains["after"] > gains["before"]).all()


@pytest.mark.parametrize("mode", ["plain", "regularised"])
def test_batch_equals_single(linear_net, mode):
    batch = helpers.filter_patterns(linear_net, "c1", [2, 4, 7], size=24, steps=10, mode=mode, progress=False)
    single = helpers.filter_patterns(linear_net, "c1", 4, size=24, steps=10, mode=mode, progress=False)
    assert np.abs(batch[1].astype(int) - single[0]).max() <= 1


def test_chunking_does_not_change_results(linear_net):
    whole = helpers.filter_patterns(linear_net, "c2", list(range(6)), size=24, steps=8, progress=False)
    chunked = helpers.filter_patterns(linear_net, "c2", list(range(6)), size=24, steps=8, progress=False,
                                      memory_budget_mb=1e-3)  # forces one filter per chunk
    assert np.abs(whole.astype(int) - chunked).max() <= 1


def test_seed_changes_the_start(linear_net):
    a = helpers.filter_patterns(linear_net, "c1", [0], size=16, steps=2, seed=0, progress=False)
    b = helpers.filter_patterns(linear_net, "c1", [0], size=16, steps=2, seed=1, progress=False)
    assert not np.array_equal(a, b)


def test_one_compiled_function_for_all_filters(linear_net):
    for filters in ([0], [1], [2, 3], [4, 5, 0]):
        helpers.filter_patterns(linear_net, "c2", filters, size=20, steps=len(filters), progress=False)
    _, ascend, _ = helpers._ASCENT_CACHE[(id(linear_net), "c2", 20, "plain")][1]
    assert ascend.experimental_get_tracing_count() == 1


def test_fixed_size_chain_is_replayed_at_the_requested_size():
    model = helpers.build_mini_vgg(input_size=64)
    patterns = helpers.filter_patterns(model, "block1_conv1", [0, 1], size=32, steps=3, progress=False)
    assert patterns.shape == (2, 32, 32, 3)


def test_bad_requests_are_clear(linear_net):
    with pytest.raises(ValueError, match=r"No layer named 'c3'.*closest"):
        helpers.filter_patterns(linear_net, "c3", [0])
    with pytest.raises(ValueError, match=r"Filter index 6 is out of range.*0\.\.5"):
        helpers.filter_patterns(linear_net, "c2", [0, 6], size=16, progress=False)
    with pytest.raises(ValueError, match="need a spatial"):
        helpers.filter_patterns(linear_net, "out", [0])
    with pytest.raises(ValueError, match="size=6 is too small for layer 'c2'"):
        helpers.filter_patterns(linear_net, "c2", [0], size=6, steps=1)
    with pytest.raises(ValueError, match="size=4 is too small"):
        helpers.filter_patterns(linear_net, "c2", [0], size=4)
    assert helpers.filter_patterns(linear_net, "c2", [0], size=10, steps=1, progress=False).shape == (1, 10, 10, 3)
    with pytest.raises(ValueError, match="mode must be"):
        helpers.filter_patterns(linear_net, "c2", [0], mode="lucid")
    with pytest.raises(ValueError, match="filters is empty"):
        helpers.filter_patterns(linear_net, "c2", [])


def test_deprocess_pattern_matches_seed():
    x = np.random.default_rng(0).normal(5, 3, (2, 6, 6, 3)).astype("float32")
    out = helpers.deprocess_pattern(x)
    ref = x[1] - x[1].mean()
    ref /= ref.std() + 1e-5
    ref = np.clip(ref * 0.1 + 0.5, 0, 1) * 255
    assert np.abs(out[1].astype(int) - ref.astype("uint8")).max() <= 1
    flat = helpers.deprocess_pattern(np.full((4, 4, 3), 7.0))
    assert (flat == 127).all()


def test_pattern_grid_reproduces_seed_layout():
    patterns = np.full((64, 64, 64, 3), 200, np.uint8)
    grid = helpers.pattern_grid(patterns)
    assert grid.shape == (8 * 64 + 7 * 5, 8 * 64 + 7 * 5, 3)
    assert (grid[64:69, :, :] == 0).all() and (grid[:64, :64] == 200).all()
    assert helpers.pattern_grid(patterns[:10], per_row=8).shape == (2 * 64 + 5, 8 * 64 + 7 * 5, 3)
    with pytest.raises(ValueError, match="shape"):
        helpers.pattern_grid(np.zeros((4, 4, 3)))


def test_first_layer_kernels_and_plot(project_home):
    model = helpers.build_mini_vgg(input_size=32)
    kernels = helpers.first_layer_kernels(model)
    assert kernels.shape == (16, 3, 3, 3) and kernels.dtype == np.uint8
    assert kernels.reshape(16, -1).min(axis=1).max() == 0 and kernels.reshape(16, -1).max(axis=1).min() == 255
    with pytest.raises(ValueError, match="not a convolution on RGB"):
        helpers.first_layer_kernels(model, "block1_conv1")
    fig = helpers.plot_patterns(np.zeros((4, 8, 8, 3), np.uint8), "t", save_as="unit_patterns")
    assert (helpers.project_paths().figures / "unit_patterns.png").exists()
    plt.close(fig)


def test_resnet50_truncation_and_keras3_names():
    resnet = helpers.load_pretrained("resnet50", include_top=False)
    cut = helpers.truncated_model(resnet, "conv2_block1_2_bn", 64)
    assert cut.output.shape[1:] == (16, 16, 64)
    with pytest.raises(ValueError, match="use 'conv2_block1_2_bn'"):
        helpers.truncated_model(resnet, "bn2a_branch2b", 64)


def test_progress_callback_sees_every_chunk(linear_net):
    seen = []
    helpers.filter_patterns(linear_net, "c1", [0, 1, 2], size=16, steps=1, memory_budget_mb=1e-3,
                            progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_pattern_explorer_computes_on_demand(linear_net):
    explorer = helpers.pattern_explorer(linear_net, names=["c1", "c2"], size=16)
    assert explorer.grid_image.value == b""  # nothing computed before the button
    assert explorer.filter_range.max == 7
    explorer.layer_dropdown.value = "c2"
    assert explorer.filter_range.max == 5 and explorer.filter_range.value == (0, 5)
    explorer.filter_range.value = (1, 3)
    explorer.compute_button.click()
    assert explorer.status.value == "" and explorer.grid_image.value[:4] == b"\x89PNG"
    assert explorer.progress.value == explorer.progress.max == 1
    first = explorer.grid_image.value
    explorer.mode_buttons.value = "regularised"
    explorer.compute_button.click()
    assert explorer.grid_image.value != first


def test_pattern_explorer_reports_errors(linear_net):
    explorer = helpers.pattern_explorer(linear_net, names=["c2"], size=6)
    explorer.compute_button.click()
    assert "too small" in explorer.status.value


def _transformed(images, draws=40):
    import tensorflow as tf

    x = tf.constant(images, tf.float32)
    return np.stack([lucid.random_transform(x, tf.constant(0), tf.constant(step), helpers.REGULARISED_DEFAULTS)
                     .numpy() for step in range(draws)])


def test_regularised_transforms_pad_with_mid_grey_not_black():
    """Issue 9: padding and rotation fill used 0.5 on the 0-255 scale: a black frame."""
    out = _transformed(np.full((1, 64, 64, 3), 255.0))
    assert out.shape[2:] == (lucid.canvas_size(64, helpers.REGULARISED_DEFAULTS),) * 2 + (3,) == (76, 76, 3)
    assert out.min() >= 127.5 - 1e-3 and (np.abs(out - 127.5) < 1).any()  # grey padding is seen, never black


def test_regularised_transforms_see_every_side_of_the_image_alike():
    """Issue 9: the jitter only trimmed the top-left and the crop dropped the bottom and right bands."""
    image = np.full((1, 64, 64, 3), 255.0)
    image[:, -4:, :] = image[:, :, -4:] = 0.0  # a black band along the bottom and the right
    out = _transformed(image)[..., 0]
    assert (out[:, :, :, -12:] < 100).any() and (out[:, :, -12:, :] < 100).any()  # the bands are seen
    grey = np.abs(_transformed(np.full((1, 64, 64, 3), 255.0))[..., 0] - 127.5) < 40
    left, right = grey[..., :8].mean(), grey[..., -8:].mean()
    top, bottom = grey[..., :8, :].mean(), grey[..., -8:, :].mean()
    assert left > 0.02 and right > 0.02 and 0.5 < left / right < 2 and 0.5 < top / bottom < 2


def test_border_texture_ratio_tells_a_flat_frame_from_texture_to_the_edge():
    rng = np.random.default_rng(0)
    textured = rng.uniform(0, 255, (1, 32, 32, 3))
    framed = textured.copy()
    framed[0, :4], framed[0, -4:], framed[0, :, :4], framed[0, :, -4:] = 90, 90, 90, 90
    ratio = helpers.border_texture_ratio(np.concatenate([textured, framed]), band=4)
    assert 0.9 < ratio[0] < 1.1 and ratio[1] < 0.4
    assert helpers.border_texture_ratio(np.full((1, 16, 16, 3), 7.0), band=4)[0] == 1.0  # flat: no texture anywhere


def test_frame_contrast_finds_a_dark_frame():
    framed = np.full((2, 32, 32, 3), 200, np.uint8)
    framed[0, :4], framed[0, -4:], framed[0, :, :4], framed[0, :, -4:] = 0, 0, 0, 0
    contrast = helpers.frame_contrast(framed, band=4)
    assert contrast[0] == pytest.approx(-200) and contrast[1] == 0


def test_a_pattern_beats_its_own_shuffled_pixels_and_noise_does_not():
    """A filter that detects vertical stripes: its stripes score high, the same pixels shuffled do not."""
    inputs = keras.Input((16, 16, 3))
    conv = keras.layers.Conv2D(1, (1, 3), name="stripes")
    model = keras.Model(inputs, keras.layers.ReLU(name="relu")(conv(inputs)))
    conv.set_weights([np.array([-1.0, 2.0, -1.0], np.float32).reshape(1, 3, 1, 1).repeat(3, axis=2) / 255,
                      np.zeros(1, np.float32)])
    stripes = np.zeros((16, 16, 3), np.uint8)
    stripes[:, ::2] = 255
    on, off = helpers.pattern_vs_shuffled(model, "relu", [0], stripes[None])
    assert on.shape == (1,) and on[0] > 2 * off[0] > 0
    noise = np.random.default_rng(0).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    on, off = helpers.pattern_vs_shuffled(model, "relu", [0], noise)
    assert abs(on[0] - off[0]) < 0.5 * on[0]


def test_a_fixed_size_model_with_branches_is_cut_at_another_size_with_its_weights():
    """Issue 17: a model file of one's own (fixed input, residual branches) failed deep inside Keras
    ("Iterating over a symbolic KerasTensor") when its patterns were asked at another size."""
    import keras

    def residual(shape):
        keras.utils.set_random_seed(3)
        inputs = keras.Input(shape)
        a = keras.layers.Conv2D(4, 3, padding="same", name="a")(inputs)
        b = keras.layers.Add(name="sum")([a, keras.layers.Conv2D(4, 1, name="b")(a)])
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(6, 3, padding="same", name="c")(b))
        return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))

    fixed, flexible = residual((48, 48, 3)), residual((None, None, 3))
    flexible.set_weights(fixed.get_weights())
    cut = helpers.truncated_model(fixed, "c", 32)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(cut(images), helpers.truncated_model(flexible, "c", 32)(images), atol=1e-5)
    assert helpers.filter_patterns(fixed, "sum", [0, 1], size=32, steps=3, progress=False).shape == (2, 32, 32, 3)
