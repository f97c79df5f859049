"""Notebook 05 run headless through papermill on models other than its default (issue 17): the
mini-VGG's one-sigmoid head on toy-pets photos, and a multi-label model built here. The nbval lane
runs the default (EfficientNet-Lite0 from its .keras file)."""
import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest

import helpers

papermill = pytest.importorskip("papermill")
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "05_your_model.ipynb"


def _run(tmp_path, monkeypatch, **parameters):
    monkeypatch.setenv("CNNVIS_QUICK", "1")
    monkeypatch.setenv("CNNVIS_HOME", str(tmp_path / "home"))
    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(str(NOTEBOOK), str(out), parameters=parameters, cwd=str(NOTEBOOK.parent),
                               kernel_name="python3", progress_bar=False)
    cells = json.loads(out.read_text())["cells"]
    text = "\n".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", []))
    return text, np.load(tmp_path / "home" / "outputs" / "figures" / "05_maps.npz")


@pytest.mark.slow
def test_notebook_05_explains_the_mini_vggs_one_sigmoid_head_on_toy_pets(tmp_path, monkeypatch, toy_root):
    model_file = tmp_path / "mini_vgg.keras"
    helpers.build_mini_vgg(input_size=64, seed=0).save(model_file)
    photos = sorted(str(p) for p in (toy_root / "validation" / "cats").iterdir())[:2]
    text, maps = _run(tmp_path, monkeypatch, MODEL=str(model_file), IMAGES=photos, CLASS_NAMES=["cats", "dogs"],
                      EXPLAIN="cats")
    assert "output: binary 2 | maps at: block3_pool | photos: 2 | skipped: 0" in text
    assert "output: one sigmoid: both classes can be explained" in text and "P(dogs) " in text
    names = [Path(p).stem for p in photos]
    assert sorted(maps.files) == sorted(f"{n}/{m}" for n in names for m in
                                        ["Grad-CAM", "Grad-CAM++", "Score-CAM", "Occlusion", "Gradient", "SmoothGrad",
                                         "Guided Backprop"])


@pytest.mark.slow
def test_notebook_05_explains_each_label_of_a_multi_label_model(tmp_path, monkeypatch):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((96, 96, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv_a")(x)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv_b")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="sigmoid", name="labels")(x))
    model.save(tmp_path / "labels.keras")
    (tmp_path / "labels.txt").write_text("animal\nindoors\nperson\n")
    text, maps = _run(tmp_path, monkeypatch, MODEL=str(tmp_path / "labels.keras"), CLASS_NAMES=str(tmp_path / "labels.txt"),
                      EXPLAIN="person")
    assert "output: multi-label 3 | maps at: conv_b | photos: 4 | skipped: 0" in text
    assert "3 sigmoids, one per label" in text and "labels above 0.5: " in text
    assert maps["chelsea/Grad-CAM"].shape == (92, 92) and len(maps.files) == 4 * 7
    assert os.path.exists(tmp_path / "home" / "outputs" / "figures" / "05_maps_chelsea.png")
