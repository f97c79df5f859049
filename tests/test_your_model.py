"""Your own model (issue 17): every output kind, nested and Sequential models, a preprocessing layer,
and a clear sentence for each bad input. Each map is checked against an independent computation:
with a global-average-pooling head, a class score's gradient with respect to the last convolution
is its Dense weight over h*w at every position, so Grad-CAM is relu(A @ w) up to its scaling."""
import json

import keras
import numpy as np
import pytest
from PIL import Image

import helpers
from cnnvis import your_model

RNG = np.random.default_rng(0)
IMAGES = RNG.uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)


def _model(units, activation, nested=False, sequential=False, use_bias=True, seed=0):
    keras.utils.set_random_seed(seed)
    body = [keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_a"),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_b")]
    head = [keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(units, activation=activation, use_bias=use_bias, name="head")]
    if sequential:
        return keras.Sequential([keras.Input((32, 32, 3)), *body, *head], name="seq")
    inputs = keras.Input((32, 32, 3))
    if nested:
        base = keras.Sequential([keras.Input((32, 32, 3)), *body], name="base")
        x = base(inputs)
    else:
        x = inputs
        for layer in body:
            x = layer(x)
    for layer in head:
        x = layer(x)
    return keras.Model(inputs, x, name="nested" if nested else "functional")


def _independent_grad_cam(model, images, column, sign=1.0):
    features = keras.Model(helpers.model_input(model), helpers.find_layer(model, "conv_b")[0].output) \
        if not any(layer.name == "base" for layer in model.layers) else model.get_layer("base")
    acts = np.asarray(features(images))
    weights = sign * np.asarray(model.get_layer("head").kernel)[:, column]
    cams = np.maximum(acts @ weights, 0)
    top = cams.max(axis=(1, 2), keepdims=True)
    return np.divide(cams, top, out=np.zeros_like(cams), where=top > 0)


KINDS = [  # (units, activation, kind, explainable classes)
    (3, "softmax", "softmax", 3),
    (1, "sigmoid", "binary", 2),
    (4, "sigmoid", "multi-label", 4),
    (1, None, "regression", 2),
    (5, None, "scores", 5),
]


@pytest.mark.parametrize("units, activation, kind, n", KINDS)
@pytest.mark.parametrize("shape", ["functional", "nested", "sequential", "no bias"])
def test_every_output_kind_and_model_shape_gets_its_kind_layer_and_maps(units, activation, kind, n, shape):
    model = _model(units, activation, nested=shape == "nested", sequential=shape == "sequential",
                   use_bias=shape != "no bias")
    assert your_model.output_kind(model) == (kind, n)
    chosen, others = your_model.layer_choice(model)
    assert chosen == "conv_b" and others == ["conv_a"]
    for cls in range(n):
        column, sign = (0, 1.0 if cls == 1 else -1.0) if units == 1 else (cls, 1.0)
        cam = helpers.grad_cam(model, IMAGES, class_index=cls)
        np.testing.assert_allclose(cam, _independent_grad_cam(model, IMAGES, column, sign), atol=1e-4)
    lines = your_model.predictions(model, IMAGES, your_model.class_names_for(None, model))
    assert len(lines) == 3


def test_predictions_say_what_each_kind_means():
    assert your_model.predictions(_model(1, None), IMAGES[:1], ["lower", "higher"])[0].startswith("output ")
    assert your_model.predictions(_model(1, "sigmoid"), IMAGES[:1], ["cat", "dog"])[0].startswith("P(dog) ")
    assert your_model.predictions(_model(4, "sigmoid"), IMAGES[:1], list("abcd"))[0].startswith("labels above 0.5: ")
    line = your_model.predictions(_model(3, "softmax"), IMAGES[:1], ["x", "y", "z"])[0]
    assert len(line.split(", ")) == 3 and abs(sum(float(p.split()[-1]) for p in line.split(", ")) - 1) < 0.02


def test_a_preprocessing_mode_in_front_gives_the_model_what_keras_applications_would():
    model = _model(3, "softmax")
    wrapped = your_model.with_preprocessing(model, "caffe")
    expected = model.predict(keras.applications.imagenet_utils.preprocess_input(IMAGES.copy(), mode="caffe"), verbose=0)
    np.testing.assert_allclose(wrapped.predict(IMAGES, verbose=0), expected, atol=1e-5)
    assert your_model.with_preprocessing(model, "raw") is model
    assert your_model.layer_choice(wrapped)[0] == "conv_b" and helpers.grad_cam(wrapped, IMAGES).shape == (3, 32, 32)
    with pytest.raises(ValueError, match="PREPROCESS must be one of"):
        your_model.with_preprocessing(model, "imagenet")


def test_a_saved_model_loads_from_its_file_and_bad_files_get_a_sentence(tmp_path):
    model = _model(3, "softmax")
    model.save(tmp_path / "mine.keras")
    loaded = your_model.load_your_model(tmp_path / "mine.keras")
    np.testing.assert_allclose(loaded.predict(IMAGES, verbose=0), model.predict(IMAGES, verbose=0), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="No model file at .*missing.keras"):
        your_model.load_your_model(tmp_path / "missing.keras")
    (tmp_path / "notes.keras").write_text("not a model")
    with pytest.raises(ValueError, match="notes.keras is not a Keras model file Keras can read"):
        your_model.load_your_model(tmp_path / "notes.keras")
    with pytest.raises(ValueError, match="neither a .keras/.h5 file nor a model name"):
        your_model.load_your_model(tmp_path / "weights.pt")


class Doubling(keras.layers.Layer):  # deliberately not registered: Keras cannot find it by name
    def call(self, x):
        return 2 * x


def test_a_custom_layer_says_how_to_pass_custom_objects(tmp_path):
    inputs = keras.Input((32, 32, 3))
    x = Doubling(name="doubling")(keras.layers.Conv2D(4, 3, name="conv")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x)))
    model.save(tmp_path / "custom.keras")
    with pytest.raises(ValueError, match=r"custom.keras uses a layer or function Keras does not know .*CUSTOM_OBJECTS"):
        your_model.load_your_model(tmp_path / "custom.keras")
    assert your_model.load_your_model(tmp_path / "custom.keras", custom_objects={"Doubling": Doubling})


def test_channels_first_and_no_spatial_layer_are_named():
    inputs = keras.Input((3, 32, 32))
    x = keras.layers.Conv2D(4, 3, data_format="channels_first")(inputs)
    x = keras.layers.GlobalAveragePooling2D(data_format="channels_first")(x)
    with pytest.raises(ValueError, match=r"\(channels first: \(3, H, W\)\).*channels_last"):
        your_model.load_your_model(keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x)))
    flat = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
    with pytest.raises(ValueError, match="has no layer with a spatial output"):
        your_model.load_your_model(flat)


def test_class_names_from_files_lists_or_none_and_a_wrong_count_is_named(tmp_path):
    softmax, binary, regression = _model(3, "softmax"), _model(1, "sigmoid"), _model(1, None)
    assert your_model.class_names_for(None, softmax) == ["class 0", "class 1", "class 2"]
    assert your_model.class_names_for(None, binary) == ["not class 1", "class 1"]
    assert your_model.class_names_for(None, regression) == ["lower", "higher"]
    (tmp_path / "names.txt").write_text("cat\ndog\n\nfox\n")
    assert your_model.class_names_for(tmp_path / "names.txt", softmax) == ["cat", "dog", "fox"]
    (tmp_path / "names.json").write_text(json.dumps({"2": "fox", "0": "cat", "1": "dog"}))
    assert your_model.class_names_for(str(tmp_path / "names.json"), softmax) == ["cat", "dog", "fox"]
    assert your_model.class_names_for(["cat", "dog"], binary) == ["cat", "dog"]
    with pytest.raises(ValueError, match=r"2 class names for a model with 3 output\(s\) \(softmax\): give 3 names"):
        your_model.class_names_for(["cat", "dog"], softmax)
    with pytest.raises(ValueError, match="needs 1000 outputs; this model has 3"):
        your_model.class_names_for("imagenet", softmax)
    with pytest.raises(FileNotFoundError, match="No class-names file"):
        your_model.class_names_for(tmp_path / "nope.txt", softmax)


def test_photos_that_do_not_decode_are_skipped_and_named(tmp_path):
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "a.jpg")
    Image.new("RGB", (20, 50), (10, 200, 10)).save(tmp_path / "b.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    (tmp_path / "notes.txt").write_text("ignored: not an image suffix")
    images, names, skipped = your_model.your_images(tmp_path, 32)
    assert images.shape == (2, 32, 32, 3) and names == ["a", "b"]
    assert len(skipped) == 1 and skipped[0].startswith("broken.jpg: ") and "not a readable image" in skipped[0]
    shipped, shipped_names, _ = your_model.your_images(None, 24)
    assert "chelsea" in shipped_names and shipped.shape[1:] == (24, 24, 3)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        your_model.your_images(tmp_path / "nowhere", 32)
    with pytest.raises(ValueError, match="None of the 1 files in IMAGES could be read"):
        your_model.your_images([tmp_path / "broken.jpg"], 32)


def test_a_layer_name_that_does_not_exist_lists_the_close_ones():
    with pytest.raises(ValueError, match="No layer named .conv_c. in model .functional.; closest: conv_b, conv_a"):
        helpers.grad_cam(_model(3, "softmax"), IMAGES, layer_name="conv_c")


def test_the_verdict_reads_the_numbers_both_ways():
    learned = your_model.verdict("Grad-CAM", [0.2, 0.1], deletion=0.15, random_deletion=0.25)
    assert learned == ("Grad-CAM's maps change when the top layers are randomised (Spearman down to 0.10): they "
                       "depend on what the model learned; deleting its brightest pixels first lowers the score faster "
                       "than a random order (0.15 against 0.25).")
    blind = your_model.verdict("Guided Backprop", [0.95, 0.9], deletion=0.30, random_deletion=0.25)
    assert "stay similar (Spearman 0.90 or more)" in blind and "no faster than a random order" in blind
    assert "no faster" in your_model.verdict("Occlusion", [0.1], deletion=0.24, random_deletion=0.25)  # within 0.02


def test_maps_are_saved_one_array_per_image_and_method(tmp_path):
    maps = {"Grad-CAM": RNG.random((2, 7, 7)), "Occlusion": RNG.random((2, 4, 4))}
    path = your_model.save_maps(tmp_path / "maps.npz", maps, ["cat", "cup"])
    with np.load(path) as saved:
        assert sorted(saved.files) == ["cat/Grad-CAM", "cat/Occlusion", "cup/Grad-CAM", "cup/Occlusion"]
        np.testing.assert_allclose(saved["cup/Occlusion"], maps["Occlusion"][1], rtol=1e-6)


def test_upload_outside_colab_says_to_give_a_folder():
    with pytest.raises(ValueError, match="works in Colab only"):
        your_model.your_images("upload", 32)


def test_the_class_to_explain_is_none_an_index_or_a_name():
    names = ["cat", "dog", "fox"]
    assert your_model.class_to_explain(None, names) is None and your_model.class_to_explain(2, names) == 2
    assert your_model.class_to_explain("dog", names) == 1
    with pytest.raises(ValueError, match=r"EXPLAIN='wolf' is not a class of this model: .*index 0..2, or a name \(cat, dog, fox\)"):
        your_model.class_to_explain("wolf", names)
    with pytest.raises(ValueError, match="EXPLAIN=3"):
        your_model.class_to_explain(3, names)


def test_patterns_default_to_a_layer_three_quarters_of_the_way_up():
    model = _model(3, "softmax", sequential=True)  # spatial layers: conv_a, conv_b
    assert your_model.pattern_layer(model) == "conv_b"
    assert helpers.pattern_layer(helpers.build_mini_vgg()) == "block2_pool1"  # 9th of 12


def test_the_model_is_described_in_three_lines_and_the_default_is_a_file(project_home):
    model = helpers.your_model(_model(1, None), "tf")
    assert helpers.describe_your_model(model).splitlines() == [
        "input: 32 x 32 RGB pixels",
        "output: one linear value: class 1 shows what raises it, class 0 what lowers it",
        "maps at: conv_b (the last layer with a spatial map before the head: later layers keep no \"where\"); "
        "other candidates: conv_a"]
    flexible = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 3), keras.layers.GlobalAveragePooling2D(),
                                 keras.layers.Dense(2, activation="softmax")])
    assert helpers.input_size(flexible) == (224, 224) and helpers.input_size(model) == (32, 32)
    path = helpers.example_model_file()
    assert path.name == "efficientnet_lite0_as_yours.keras" and path.parent == helpers.project_paths().models
    stamp = path.stat().st_mtime_ns
    assert helpers.example_model_file() == path and path.stat().st_mtime_ns == stamp  # saved once
    assert helpers.output_kind(helpers.your_model(path)) == ("softmax", 1000)
