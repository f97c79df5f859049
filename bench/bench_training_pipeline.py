"""Training throughput: our tf.data pipeline vs the seeds' ImageDataGenerator, same folder, same model.

Both feed the mini-VGG (raw 0-255 pixels; the model rescales) from the same toy-pets folder at
160 px, batch 20. Each pipeline trains one warm-up epoch (tracing, first decode) and then
`--epochs` timed epochs; the ratio printed is ours / legacy in training images per second.
It also times each input pipeline alone (no model), which is where the two differ: on a 2-core
CPU the convolutions, not the input, bound the training rate.
Usage: python bench/bench_training_pipeline.py [--per-class 200] [--epochs 2]
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import helpers  # noqa: E402


def images_per_second(model, dataset, n_images, epochs):
    model.fit(dataset, epochs=1, verbose=0, shuffle=False)  # warm-up: tracing, first decode, cache fill
    start = time.perf_counter()
    model.fit(dataset, epochs=epochs, verbose=0, shuffle=False)
    return n_images * epochs / (time.perf_counter() - start)


def pipeline_images_per_second(batches, n_images, epochs):
    """Input pipeline alone: iterate `epochs` epochs after a warm-up epoch, no model."""
    def one_epoch():
        seen = 0
        for images, _ in batches():
            seen += len(images)
            if seen >= n_images:
                break
    one_epoch()
    start = time.perf_counter()
    for _ in range(epochs):
        one_epoch()
    return n_images * epochs / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    import tensorflow as tf

    root = helpers.make_toy_pets(Path(tempfile.mkdtemp()) / "pets", n_train=args.per_class, n_val=10)
    n_images = 2 * args.per_class

    train_ds, _, _ = helpers.load_image_folders(root, (160, 160), batch_size=20)
    model = helpers.build_mini_vgg()
    model.compile(optimizer=tf.keras.optimizers.RMSprop(1e-4), loss="binary_crossentropy")
    ours = images_per_second(model, train_ds, n_images, args.epochs)

    legacy_gen = tf.keras.preprocessing.image.ImageDataGenerator().flow_from_directory(
        str(root / "train"), target_size=(160, 160), batch_size=20, class_mode="binary", seed=0)
    legacy_model = helpers.build_mini_vgg()
    legacy_model.compile(optimizer=tf.keras.optimizers.RMSprop(1e-4), loss="binary_crossentropy")
    legacy = images_per_second(legacy_model, legacy_gen, n_images, args.epochs)

    pipe_ours = pipeline_images_per_second(lambda: train_ds, n_images, args.epochs)
    pipe_legacy = pipeline_images_per_second(lambda: legacy_gen, n_images, args.epochs)
    print(f"input pipeline alone, images/s: ours {pipe_ours:8.1f}  legacy {pipe_legacy:8.1f}  "
          f"ratio {pipe_ours / pipe_legacy:6.2f}x")
    print(f"training images/s, mini-VGG 160 px, batch 20, {n_images} images x {args.epochs} epochs")
    print(f"  ours (tf.data, in-memory uint8 cache): {ours:8.1f}")
    print(f"  legacy ImageDataGenerator:             {legacy:8.1f}")
    print(f"  ratio ours / legacy:                   {ours / legacy:8.2f}x")


if __name__ == "__main__":
    main()
