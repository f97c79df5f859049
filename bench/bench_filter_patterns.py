"""Filter patterns: 64 filters x 40 steps at 64 px on a ResNet50 layer (random weights) and on an
EfficientNet-Lite0 layer (trained, offline), three ways, one run.

1. ours: helpers.filter_patterns -- all 64 filters in one batch, one compiled tf.function.
2. the seeds' pattern in Keras 3: one filter at a time, eager GradientTape step by step.
3. the Keras example's pattern: one filter at a time through a tf.function that takes the filter
   index as a Python int (so it retraces once per filter), steps compiled.
4. the floor: the same number of batched forward + backward passes of the same 64 images through
   the cut model, compiled -- the least any batched ascent can cost; ours is also timed warm
   (compiled function cached), which splits its first-call time into tracing and running.
Also the peak resident memory of ours at 128 px on a 1024-channel layer (64 filters), chunked by
the memory budget, read from the process's max RSS in a fresh subprocess.
Usage: python bench/bench_filter_patterns.py [--layer conv3_block4_out] [--lite-layer block4c_add] [--filters 64]
"""
import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import helpers  # noqa: E402

PEAK_SCRIPT = """
import sys, resource; sys.path.insert(0, {root!r})
import helpers
resnet = helpers.load_pretrained("resnet50", include_top=False, weights=None)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
helpers.filter_patterns(resnet, "conv4_block6_out", list(range(64)), size=128, steps=5, progress=False,
                        memory_budget_mb={budget})
print(f"{{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}} {{base / 1024:.0f}}")
"""


def eager_one_by_one(cut, filters, size, steps):
    import tensorflow as tf

    results = []
    for f in filters:
        image = tf.Variable(np.random.default_rng([0, f]).random((1, size, size, 3)) * 20 + 128, dtype=tf.float32)
        for _ in range(steps):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(cut(image)[..., f])
            grads = tape.gradient(loss, image)
            grads /= tf.sqrt(tf.reduce_mean(tf.square(grads))) + 1e-5
            image.assign_add(grads)
        results.append(image.numpy()[0])
    return results


def compiled_per_filter(cut, filters, size, steps):
    import tensorflow as tf

    @tf.function
    def ascent_step(image, filter_index):  # filter_index is a Python int: one trace per filter
        with tf.GradientTape() as tape:
            tape.watch(image)
            loss = tf.reduce_mean(cut(image)[..., filter_index])
        grads = tape.gradient(loss, image)
        return image + grads / (tf.sqrt(tf.reduce_mean(tf.square(grads))) + 1e-5)

    results = []
    for f in filters:
        image = tf.constant(np.random.default_rng([0, f]).random((1, size, size, 3)) * 20 + 128, tf.float32)
        for _ in range(steps):
            image = ascent_step(image, f)
        results.append(image.numpy()[0])
    return results


def floor(cut, n, size, steps):
    """Seconds for `steps` compiled forward + backward passes of a batch of n images through `cut`
    (after one warm-up call): what any batched ascent must at least spend."""
    import tensorflow as tf

    @tf.function
    def passes(images):
        for _ in tf.range(steps):
            with tf.GradientTape() as tape:
                tape.watch(images)
                total = tf.reduce_sum(tf.reduce_mean(cut(images, training=False), axis=(1, 2)))
            images = images + 1e-3 * tape.gradient(total, images)
        return images

    images = tf.constant(np.random.default_rng(0).random((n, size, size, 3)) * 20 + 128, tf.float32)
    passes(images).numpy()
    return timed(lambda: passes(images).numpy())[0]


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", default="conv3_block4_out")
    parser.add_argument("--lite-layer", default="block4c_add")
    parser.add_argument("--filters", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-only", action="store_true")
    args = parser.parse_args()
    import tensorflow as tf

    print("device:", "GPU" if tf.config.list_physical_devices("GPU") else "CPU")
    if not args.memory_only:
        time_ascent(helpers.load_pretrained("resnet50", include_top=False, weights=None), "ResNet50", args.layer, args)
        time_ascent(helpers.load_pretrained("efficientnet_lite0", include_top=False), "EfficientNet-Lite0",
                    args.lite_layer, args)
    if not args.skip_memory:
        root = str(Path(__file__).resolve().parents[1])
        print("peak resident memory, 64 filters at 128 px on conv4_block6_out (1024 channels), 5 steps:")
        for budget in (512, 2048, 1e9):
            out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT.format(root=root, budget=budget)],
                                 capture_output=True, text=True).stdout.strip().splitlines()
            peak, base = out[-1].split() if out else ("?", "?")
            label = "unchunked" if budget == 1e9 else f"budget {budget:.0f} MB"
            print(f"  {label:>16}: peak {peak} MB (after loading the model: {base} MB)")


def time_ascent(model, label, layer, args):
    filters, size = list(range(args.filters)), 64
    ours_time, _ = timed(lambda: helpers.filter_patterns(model, layer, filters, size=size, steps=args.steps,
                                                         progress=False))
    warm_time, _ = timed(lambda: helpers.filter_patterns(model, layer, filters, size=size, steps=args.steps,
                                                         progress=False))
    cut = helpers.truncated_model(model, layer, size)
    floor_time = floor(cut, len(filters), size, args.steps)
    eager_time, _ = timed(lambda: eager_one_by_one(cut, filters, size, args.steps))
    compiled_time, _ = timed(lambda: compiled_per_filter(cut, filters, size, args.steps))
    print(f"{args.filters} filters x {args.steps} steps at {size} px on {label} {layer} (first call, tracing included):")
    print(f"  ours (batched, compiled once) {ours_time:7.1f} s")
    print(f"  eager, one filter at a time   {eager_time:7.1f} s   ratio {eager_time / ours_time:6.1f}x")
    print(f"  compiled per filter           {compiled_time:7.1f} s   ratio {compiled_time / ours_time:6.1f}x")
    print(f"  ours again (compiled, cached) {warm_time:7.1f} s   tracing and set-up {ours_time - warm_time:5.1f} s")
    print(f"  floor: {args.steps} batched fwd+bwd     {floor_time:7.1f} s   ours / floor {ours_time / floor_time:5.2f} "
          f"(warm {warm_time / floor_time:5.2f})")


if __name__ == "__main__":
    main()
