import json
import subprocess
import sys
import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pytest

import helpers


def test_mini_vgg_matches_seed_000():
    model = helpers.build_mini_vgg()
    assert model.input_shape == (None, 160, 160, 3) and model.output_shape == (None, 1)
    assert model.get_layer("block0_conv1").count_params() == 448
    assert model.get_layer("block0_conv2").count_params() == 2320
    names = [layer.name for layer in model.layers]
    for seed_name in ("block0_conv2", "block0_pool1", "block1_conv1", "block2_conv1", "block2_conv2", "block3_pool"):
        assert seed_name in names
    assert model.get_layer("block2_conv2").output.shape[1:] == (40, 40, 64)  # seed 000: (40, 40) at block2
    assert model.layers[-1].activation.__name__ == "sigmoid"


def test_seed_003_variant_has_3453121_parameters():
    model = helpers.build_mini_vgg("seed003")
    assert model.count_params() == 3_453_121
    assert model.input_shape == (None, 150, 150, 3)


def test_build_rejects_unknown_variant():
    with pytest.raises(ValueError, match="variant must be 'seed000'"):
        helpers.build_mini_vgg("vgg19")


def test_mixed_precision_without_gpu_is_ignored_with_a_message(capsys):
    model = helpers.build_mini_vgg(input_size=32, mixed_precision=True)
    assert "ignored: no GPU" in capsys.readouterr().out
    assert model.get_layer("block0_conv1").compute_dtype == "float32"


def test_training_strategy_single_device_is_default():
    import tensorflow as tf

    assert helpers.training_strategy().num_replicas_in_sync == 1
    assert helpers.training_strategy(["/cpu:0"]) is tf.distribute.get_strategy()


def test_mirrored_strategy_on_two_logical_cpus(tmp_path, toy_root):
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(helpers.REPO_ROOT)!r})
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import helpers
        strategy = helpers.training_strategy(["/cpu:0", "/cpu:1"])
        model = helpers.build_mini_vgg(input_size=64, strategy=strategy)
        train_ds, val_ds, _ = helpers.load_image_folders({str(toy_root)!r}, (64, 64), batch_size=4)
        history = helpers.train(model, train_ds, val_ds, epochs=1, verbose=0)
        print("REPLICAS", strategy.num_replicas_in_sync, type(strategy).__name__, len(history.history["loss"]))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "REPLICAS 2 MirroredStrategy 1" in result.stdout, result.stderr[-2000:]


@pytest.fixture(scope="module")
def tiny_data(toy_root):
    return helpers.load_image_folders(toy_root, (64, 64), batch_size=8)


def test_train_checkpoints_and_resumes(tmp_path, tiny_data):
    train_ds, val_ds, _ = tiny_data
    checkpoint = tmp_path / "models" / "tiny.keras"
    model = helpers.build_mini_vgg(input_size=64)
    history = helpers.train(model, train_ds, val_ds, epochs=2, checkpoint=checkpoint, verbose=0)
    assert checkpoint.exists() and len(history.history["loss"]) == 2
    state = json.loads(checkpoint.with_suffix(".json").read_text())
    assert state["epochs_done"] == 2

    resumed = helpers.build_mini_vgg(input_size=64)
    history = helpers.train(resumed, train_ds, val_ds, epochs=3, checkpoint=checkpoint, verbose=0)
    assert len(history.history["loss"]) == 3 and history.epoch == [0, 1, 2]
    assert history.history["loss"][:2] == state["history"]["loss"]

    done = helpers.build_mini_vgg(input_size=64)
    before = [w.copy() for w in done.get_weights()]
    history = helpers.train(done, train_ds, val_ds, epochs=3, checkpoint=checkpoint, verbose=0)
    assert len(history.history["loss"]) == 3
    assert any(not np.array_equal(a, b) for a, b in zip(before, done.get_weights()))  # weights loaded


KILLED_AFTER_TWO = """
import os, sys
sys.path.insert(0, {repo!r})
import keras
import helpers
fit = keras.Model.fit
def fit_then_die(self, *args, callbacks=(), **kwargs):  # SIGKILL once epoch 2 is saved: a Colab disconnect
    die = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: epoch == 1 and os.kill(os.getpid(), 9))
    return fit(self, *args, callbacks=[*callbacks, die], **kwargs)
keras.Model.fit = fit_then_die
train_ds, val_ds, _ = helpers.load_image_folders({root!r}, (64, 64), batch_size=8)
helpers.train(helpers.build_mini_vgg(input_size=64), train_ds, val_ds, epochs=4, checkpoint={checkpoint!r}, verbose=0)
"""


def test_a_training_killed_after_two_epochs_resumes_with_its_optimizer(tmp_path, toy_root, tiny_data, capsys):
    """Issue 16: resuming loaded the best epoch's weights, counted on from the last and built a fresh optimizer."""
    train_ds, val_ds, _ = tiny_data
    checkpoint = tmp_path / "models" / "killed.keras"
    script = KILLED_AFTER_TWO.format(repo=str(helpers.REPO_ROOT), root=str(toy_root), checkpoint=str(checkpoint))
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    record = json.loads(checkpoint.with_suffix(".json").read_text())
    assert record["epochs_done"] == 2 and record["epochs_planned"] == 4
    assert "2 of 4 epochs, unfinished" in helpers.describe_checkpoint(checkpoint)
    # Drive synced the record of an epoch whose model never arrived: the last-epoch file decides
    checkpoint.with_suffix(".json").write_text(json.dumps({**record, "epochs_done": 3, "history": {
        k: v + [0.0] for k, v in record["history"].items()}}))
    model = helpers.build_mini_vgg(input_size=64)
    history = helpers.train(model, train_ds, val_ds, epochs=4, checkpoint=checkpoint, verbose=0)
    assert "Continuing killed.keras at epoch 3 of 4" in capsys.readouterr().out
    assert history.epoch == [0, 1, 2, 3] and history.history["loss"][:2] == record["history"]["loss"]
    steps = len(list(train_ds))
    uninterrupted = helpers.build_mini_vgg(input_size=64)
    helpers.train(uninterrupted, train_ds, val_ds, epochs=4, verbose=0)
    assert int(model.optimizer.iterations) == int(uninterrupted.optimizer.iterations) == 4 * steps
    assert json.loads(checkpoint.with_suffix(".json").read_text())["epochs_done"] == 4
    assert not list(checkpoint.parent.glob("*partial*"))


def test_a_run_is_unfinished_only_before_its_planned_epochs():
    from cnnvis.checkpoints import last_path, unfinished

    assert unfinished({"epochs_done": 2, "epochs_planned": 100})
    assert not unfinished({"epochs_done": 100, "epochs_planned": 100}) and not unfinished(None)
    assert not unfinished({"epochs_done": 3})  # a record of an older version: finished as it is
    assert last_path("/m/mini_vgg_pets.keras").as_posix() == "/m/mini_vgg_pets.last.keras"


def test_resuming_with_another_optimizer_is_refused_in_one_sentence(tmp_path, tiny_data):
    import keras

    from cnnvis.checkpoints import read_last

    train_ds, val_ds, _ = tiny_data
    checkpoint = tmp_path / "opt.keras"
    helpers.train(helpers.build_mini_vgg(input_size=64), train_ds.take(1), val_ds.take(1), epochs=1,
                  checkpoint=checkpoint, verbose=0)
    assert read_last(checkpoint)["epochs_done"] == 1 and read_last(tmp_path / "none.keras") is None
    with pytest.raises(ValueError, match=r"opt\.last\.keras was saved with another optimizer \(RMSprop\)"):
        helpers.train(helpers.build_mini_vgg(input_size=64), train_ds.take(1), val_ds.take(1), epochs=2,
                      checkpoint=checkpoint, optimizer=keras.optimizers.Adam(), verbose=0)


def test_train_with_augmentation_reduces_loss(tiny_data):
    train_ds, val_ds, _ = tiny_data
    model = helpers.build_mini_vgg(input_size=64)
    history = helpers.train(model, train_ds, val_ds, epochs=4, learning_rate=1e-3,
                            augment=helpers.augmentation_layers(), verbose=0)
    assert len(history.history["val_accuracy"]) == 4
    assert np.isfinite(history.history["loss"]).all()


def test_train_bad_arguments(tmp_path, tiny_data):
    train_ds, val_ds, _ = tiny_data
    model = helpers.build_mini_vgg(input_size=64)
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        helpers.train(model, train_ds, val_ds, epochs=0)
    with pytest.raises(ValueError, match=r"\.keras file path"):
        helpers.train(model, train_ds, val_ds, epochs=1, checkpoint=tmp_path / "model.h5")


def test_augmentation_changes_images_only_in_training():
    augment = helpers.augmentation_layers(seed=1)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    assert np.allclose(augment(images, training=False), images)
    assert not np.allclose(augment(images, training=True), images)


def test_predict_dataset_and_plots(tiny_data):
    _, val_ds, classes = tiny_data
    model = helpers.build_mini_vgg(input_size=64)
    images, labels, probs = helpers.predict_dataset(model, val_ds)
    assert images.shape == (8, 64, 64, 3) and images.dtype == np.uint8
    assert sorted(labels.tolist()) == [0] * 4 + [1] * 4
    assert probs.shape == (8,) and ((probs >= 0) & (probs <= 1)).all()
    fig = helpers.plot_predictions(images, np.array([0.9] * 8), classes, labels=labels)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    colours = [ax.title.get_color() for ax in fig.axes if ax.get_title()]
    assert titles[0] == "dogs 90%" and colours.count("red") == 4
    plt.close(fig)
    with pytest.raises(ValueError, match="no images"):
        helpers.plot_predictions(images[:0], probs[:0], classes)


def test_plot_history_draws_both_curves():
    import keras

    history = keras.callbacks.History()
    history.history = {"loss": [0.7, 0.5], "val_loss": [0.7, 0.6], "accuracy": [0.5, 0.8], "val_accuracy": [0.5, 0.7]}
    fig = helpers.plot_history(history)
    assert [len(ax.lines) for ax in fig.axes] == [2, 2]
    plt.close(fig)


def test_checkpoint_path_separates_quick_mode_and_data(monkeypatch, tmp_path):
    assert helpers.checkpoint_path("m").name == "m.keras"
    assert helpers.checkpoint_path("m", dataset=tmp_path / "dogs-vs-cats").name == "m_dogs-vs-cats.keras"
    monkeypatch.setenv("CNNVIS_QUICK", "1")
    assert helpers.checkpoint_path("m").name == "m_quick.keras"
    assert helpers.checkpoint_path("m", dataset=tmp_path / "toy", seed=2).name == "m_seed2_toy_quick.keras"
    assert helpers.checkpoint_path("m", seed=0).name == "m_quick.keras"
    assert helpers.checkpoint_path("m").parent == helpers.project_paths().models


def test_quick_or_full(monkeypatch):
    assert helpers.quick_or_full(1, 2) == 2
    monkeypatch.setenv("CNNVIS_QUICK", "1")
    assert helpers.quick_or_full(1, 2) == 1


def test_trained_mini_vgg_trains_once_then_loads(monkeypatch, capsys):
    monkeypatch.setenv("CNNVIS_QUICK", "1")
    model, classes, root = helpers.trained_mini_vgg(epochs=1)
    assert classes == ["cats", "dogs"] and model.output_shape == (None, 1)
    out = capsys.readouterr().out
    assert "No mini-VGG trained on toy_pets_150_50_160px yet (notebook 01 trains one): training it now, 1 epochs." in out
    assert "15/15 - " in out  # progress shown: 15 batches of 20 images
    checkpoint = helpers.checkpoint_path("mini_vgg", dataset=root)
    assert checkpoint.name == "mini_vgg_toy_pets_150_50_160px_quick.keras"
    stamp = checkpoint.stat().st_mtime_ns
    again, _, _ = helpers.trained_mini_vgg(epochs=1)
    assert capsys.readouterr().out.startswith("Model mini_vgg_toy_pets_150_50_160px_quick.keras: trained on "
                                               "toy_pets_150_50_160px (150 + 50 images per class) for 1 epochs")
    assert checkpoint.stat().st_mtime_ns == stamp  # loaded, not retrained
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), again.get_weights()))

    record = json.loads(checkpoint.with_suffix(".json").read_text())
    checkpoint.with_suffix(".json").write_text(json.dumps({**record, "epochs_planned": 2, "augmented": True}))
    with pytest.raises(RuntimeError, match="stopped at epoch 1 of 2 .*with augmentation: run notebook 01's training"):
        helpers.trained_mini_vgg()
    checkpoint.with_suffix(".json").write_text(json.dumps({**record, "epochs_planned": 2}))  # a run of 2, cut after 1
    helpers.trained_mini_vgg()
    out = capsys.readouterr().out
    assert "stopped at epoch 1 of 2 (a disconnect?): finishing it now, from epoch 2." in out
    assert "Continuing mini_vgg_toy_pets_150_50_160px_quick.keras at epoch 2 of 2" in out and "for 2 epochs" in out


def test_load_checkpoint_names_the_missing_or_wrong_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint at .*mini_vgg.keras: run the training cell"):
        helpers.load_checkpoint(tmp_path / "mini_vgg.keras")
    with pytest.raises(ValueError, match="not a .keras checkpoint"):
        helpers.load_checkpoint(tmp_path / "mini_vgg.h5")


def test_load_checkpoint_round_trip(tmp_path):
    model = helpers.build_mini_vgg()
    model.save(tmp_path / "m.keras")
    loaded = helpers.load_checkpoint(tmp_path / "m.keras")
    assert loaded.count_params() == model.count_params()
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), loaded.get_weights()))


def _copy_set(toy_root, dest, drop=0):
    import shutil

    shutil.copytree(toy_root, dest)
    for f in sorted((dest / "train" / "cats").iterdir())[:drop]:
        f.unlink()
    return dest


def test_a_checkpoint_of_other_data_is_never_resumed_nor_lost(tmp_path, toy_root, capsys):
    """Issue 8: a cartoon-trained mini_vgg.keras was silently resumed (or returned) on real photos."""
    other = _copy_set(toy_root, tmp_path / "other_pets", drop=2)
    checkpoint = tmp_path / "models" / "mini_vgg.keras"
    first = helpers.load_image_folders(toy_root, (64, 64), batch_size=8)
    helpers.train(helpers.build_mini_vgg(input_size=64), first[0], first[1], epochs=2, checkpoint=checkpoint,
                  data_root=toy_root, verbose=0)
    state = json.loads(checkpoint.with_suffix(".json").read_text())
    assert state["dataset"] == "pets" and state["images"]["train"] == {"cats": 8, "dogs": 8}
    capsys.readouterr()
    second = helpers.load_image_folders(other, (64, 64), batch_size=8)
    history = helpers.train(helpers.build_mini_vgg(input_size=64), second[0], second[1], epochs=2,
                            checkpoint=checkpoint, data_root=other, verbose=0)
    assert len(history.history["loss"]) == 2  # trained afresh: two new epochs, not the stored history
    assert "mini_vgg.keras was trained on pets, not on other_pets: kept it as mini_vgg__pets.keras and " \
           "training afresh." in capsys.readouterr().out
    assert json.loads(checkpoint.with_suffix(".json").read_text())["dataset"] == "other_pets"
    kept = tmp_path / "models" / "mini_vgg__pets.keras"
    assert kept.exists() and json.loads(kept.with_suffix(".json").read_text()) == state


def test_describe_checkpoint_says_what_and_how_long(tmp_path):
    checkpoint = tmp_path / "m.keras"
    assert "no training record" in helpers.describe_checkpoint(checkpoint)
    checkpoint.with_suffix(".json").write_text(json.dumps({
        "epochs_done": 3, "dataset": "dogs-vs-cats", "images": {"train": {"cats": 1400, "dogs": 1400},
                                                                "validation": {"cats": 300, "dogs": 300}},
        "history": {"val_accuracy": [0.6, 0.72, 0.7]}}))
    assert helpers.describe_checkpoint(checkpoint) == (
        "Model m.keras: trained on dogs-vs-cats (1400 + 300 images per class) for 3 epochs; best validation "
        "accuracy 0.720 (epoch 2, the one saved).")


def test_mixed_precision_training_scales_the_loss(tiny_data):
    """Issue 8: float16 gradients underflow without a LossScaleOptimizer (Keras only adds one when the
    whole model's policy is mixed, not for models built from mixed-precision layers)."""
    import keras

    train_ds, val_ds, _ = tiny_data
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(4, 3, dtype="mixed_float16")(inputs)
    x = keras.layers.GlobalAveragePooling2D(dtype="mixed_float16")(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", dtype="float32")(x))
    helpers.train(model, train_ds.take(1), val_ds.take(1), epochs=1, verbose=0)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    plain = helpers.build_mini_vgg(input_size=64)
    helpers.train(plain, train_ds.take(1), val_ds.take(1), epochs=1, verbose=0)
    assert not isinstance(plain.optimizer, keras.optimizers.LossScaleOptimizer)
