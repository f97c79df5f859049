"""The cnnvis modules' own functions that the notebooks reach only through helpers."""
import json

import ipywidgets as widgets
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest

import helpers
from cnnvis import checkpoints, gradients, runtime
from cnnvis import widgets as panel


def test_check_classes_is_the_one_resolver_of_class_requests():
    np.testing.assert_array_equal(gradients.check_classes(None, 3, 2), [-1, -1, -1])
    np.testing.assert_array_equal(gradients.check_classes(1, 3, 2), [1, 1, 1])
    np.testing.assert_array_equal(gradients.check_classes([0, 4, 2], 3, 5), [0, 4, 2])
    with pytest.raises(ValueError, match="class_index 2 is out of range.*single sigmoid"):
        gradients.check_classes(2, 3, 2)
    with pytest.raises(ValueError, match="class_index -1 is out of range"):
        gradients.check_classes([0, -1], 2, 10)


def test_metrics_and_gradients_resolve_classes_the_same_way(toy_root):
    model = helpers.build_mini_vgg(input_size=64)
    images = np.stack([helpers.load_image(p, size=64) for p in sorted((toy_root / "validation" / "dogs").iterdir())[:2]])
    with pytest.raises(ValueError, match="out of range"):
        helpers.explained_classes(model, images, 3)
    with pytest.raises(ValueError, match="out of range"):
        helpers.class_gradients(model, images, class_index=3)
    _, _, used = helpers.class_gradients(model, images)
    np.testing.assert_array_equal(used, helpers.explained_classes(model, images, None))


def test_class_gradients_shapes_and_a_clear_error_for_the_wrong_size(toy_root):
    model = helpers.build_mini_vgg(input_size=64)
    images = np.full((2, 64, 64, 3), 100.0, np.float32)
    acts, grads, used = helpers.class_gradients(model, images, "block3_conv1", class_index=[0, 1])
    assert acts.shape == grads.shape == (2, 8, 8, 128) and acts.dtype == grads.dtype == np.float32
    np.testing.assert_array_equal(used, [0, 1])
    np.testing.assert_allclose(grads[0], -grads[1], atol=1e-6)  # class 0 explains the negated logit
    with pytest.raises(ValueError, match=r"expects images of shape \(64, 64, 3\)"):
        helpers.class_gradients(model, np.zeros((1, 32, 32, 3)))


def test_start_state_resumes_only_the_same_data_and_records_each_epoch(tmp_path, toy_root, capsys):
    import keras

    checkpoint = tmp_path / "models" / "m.keras"
    fresh = checkpoints.start_state(checkpoint, toy_root, resume=True, epochs=3)
    assert fresh["epochs_done"] == 0 and fresh["dataset"] == toy_root.name and checkpoint.parent.is_dir()
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    record = checkpoints.epoch_recorder(fresh, checkpoint, model)
    record(0, {"accuracy": 0.5})
    checkpoint.write_bytes(b"weights")
    assert json.loads(checkpoint.with_suffix(".json").read_text())["epochs_done"] == 1
    assert checkpoints.read_last(checkpoint)["history"] == {"accuracy": [0.5]}  # in the last-epoch file too
    assert checkpoints.start_state(checkpoint, toy_root, resume=True, epochs=3)["history"] == {"accuracy": [0.5]}
    assert checkpoints.start_state(checkpoint, toy_root, resume=False, epochs=3)["epochs_done"] == 0
    other = checkpoints.start_state(checkpoint, None, resume=True, epochs=3)  # other data: set aside, afresh
    assert other["epochs_done"] == 0 and not checkpoint.exists() and not checkpoints.last_path(checkpoint).exists()
    kept = tmp_path / "models" / f"m__{toy_root.name}.keras"
    assert kept.exists() and checkpoints.last_path(kept).exists() and "training afresh" in capsys.readouterr().out
    with pytest.raises(ValueError, match=".keras"):
        checkpoints.start_state(tmp_path / "m.h5", toy_root, resume=True, epochs=3)
    history = checkpoints.history_from_state({"epochs_done": 1, "history": {"accuracy": [0.5]}})
    assert history.history == {"accuracy": [0.5]} and history.epoch == [0]


def test_an_unfinished_checkpoint_without_its_last_epoch_file_is_set_aside(tmp_path, toy_root, capsys):
    checkpoint = tmp_path / "m.keras"
    checkpoint.write_bytes(b"weights")
    record = {**checkpoints.dataset_record(toy_root), "epochs_done": 2, "history": {"loss": [1.0, 0.9]}}
    checkpoint.with_suffix(".json").write_text(json.dumps(record))
    assert checkpoints.start_state(checkpoint, toy_root, resume=True, epochs=2)["epochs_done"] == 2  # finished: kept
    assert checkpoints.start_state(checkpoint, toy_root, resume=True, epochs=5)["epochs_done"] == 0
    assert "has no last-epoch file to continue from" in capsys.readouterr().out and not checkpoint.exists()


def test_report_errors_shows_the_exception_in_the_panel_and_clears_it_on_success():
    status = widgets.HTML()

    @panel.report_errors(status)
    def callback(fail):
        if fail:
            raise ValueError("no such layer")
        return "drawn"

    assert callback(True) is None and "ValueError: no such layer" in status.value
    assert callback(False) == "drawn" and status.value == ""


def test_figure_png_returns_png_bytes_and_closes_the_figure():
    fig = plt.figure()
    data = panel.figure_png(fig)
    assert data.startswith(b"\x89PNG") and not plt.fignum_exists(fig.number)


def test_importing_helpers_changes_no_matplotlib_setting_and_inline_figures_does():
    assert matplotlib.rcParams["figure.dpi"] == matplotlib.rcParamsDefault["figure.dpi"]
    try:
        runtime.inline_figures(dpi=50)
        assert matplotlib.rcParams["figure.dpi"] == 50
    finally:
        matplotlib.rcParams["figure.dpi"] = matplotlib.rcParamsDefault["figure.dpi"]


def test_quiet_retracing_restores_the_log_level():
    logger = runtime.import_tensorflow().get_logger()
    before = logger.level
    with runtime.QuietRetracing():
        assert logger.level == 40  # ERROR
    assert logger.level == before
