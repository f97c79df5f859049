"""How far the notebooks' facts about trained models move from one training seed to the next.

Trains the quick-mode mini-VGGs (toy pets 150 + 50 per class, 10 epochs; the flatten head and the
GAP head) under several seeds, then measures on each model the numbers behind every fact about a
trained model that notebooks 01-04 state, computed as the notebooks compute them, and prints each
number's spread over the seeds: min, mean, max. A notebook checks a fact only where every seed
clears it with a margin; the spreads are in the README. Per-seed results: bench/results/claims_seedN.json.
Usage: CNNVIS_QUICK=1 python bench/claims_spread.py [--seeds 0 1 2 3 4] [--home DIR] [--train-only | --report-only]
(about 8 minutes a seed on a 2-core CPU: two trainings and the measurements)
"""
import argparse
import json
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("CNNVIS_QUICK", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np  # noqa: E402

import helpers  # noqa: E402

METHODS = ["Grad-CAM", "Grad-CAM++", "Score-CAM", "Occlusion"]


def toy_images(root, per_class):
    """The notebook-04 images, part boxes, face boxes and eye boxes, per class."""
    boxes = helpers.load_boxes(root)
    out = {}
    for label in helpers.CLASS_DIRS:
        files = sorted(k for k in boxes if k.startswith(f"validation/{label}/"))[:per_class]
        out[label] = {"images": np.stack([helpers.load_image(root / f, size=160) for f in files]),
                      "parts": [[boxes[f][p] for p in helpers.CLASS_PARTS] for f in files],
                      "face": [[boxes[f]["face"]] for f in files],
                      "eyes": [helpers.eye_boxes(boxes[f]["face"]) for f in files]}
    return out


def pointing(maps, data):
    parts = helpers.pointing_game_report(maps, data["parts"], 160)
    return {"parts_strict": parts["strict"], "parts_15px": parts["tolerant"], "empty": parts["empty"],
            "face_strict": helpers.pointing_game(maps, data["face"], 160),
            "on_eye": helpers.pointing_game(maps, data["eyes"], 160, tolerance=4)}


def class_agreement(model, data, classes, method):
    """Mean Spearman correlation of the map for the true class and for the other class on the same
    images, over the pairs where neither map is empty; and the number of pairs with an empty map."""
    values, empty = [], 0
    for index, label in enumerate(classes):
        images = data[label]["images"]
        true = helpers.explain(model, images, method, class_index=index)
        other = helpers.explain(model, images, method, class_index=1 - index)
        for a, b in zip(true, other):
            if a.max() == 0 or b.max() == 0:
                empty += 1
            else:
                values.append(helpers.rank_correlation(a, b))
    return (float(np.mean(values)) if values else float("nan")), empty


def facts_04(model, gap_model, gap_best, root, per_class=10, sanity_images=4, sanity_stages=4):
    data = toy_images(root, per_class)
    classes = list(helpers.CLASS_DIRS)
    facts = {"gap_best_val_accuracy": gap_best}
    for label in classes:
        facts[f"random_parts_{label}"] = helpers.random_point_baseline(data[label]["parts"], 160)
        facts[f"random_parts_15px_{label}"] = helpers.random_point_baseline(data[label]["parts"], 160, tolerance=15)
        facts[f"random_eye_{label}"] = helpers.random_point_baseline(data[label]["eyes"], 160, tolerance=4)
    for index, label in enumerate(classes):
        for method in METHODS:
            maps = helpers.explain(model, data[label]["images"], method, class_index=index)
            for key, value in pointing(maps, data[label]).items():
                facts[f"flatten_{method}_{label}_{key}"] = value
        gap_maps = helpers.grad_cam(gap_model, data[label]["images"], class_index=index)
        for key, value in pointing(gap_maps, data[label]).items():
            facts[f"gap_Grad-CAM_{label}_{key}"] = value
    for method in METHODS:
        facts[f"flatten_{method}_class_agreement"], facts[f"flatten_{method}_class_agreement_empty"] = \
            class_agreement(model, data, classes, method)
    facts["gap_Grad-CAM_class_agreement"], facts["gap_Grad-CAM_class_agreement_empty"] = \
        class_agreement(gap_model, data, classes, "Grad-CAM")
    # the one-logit head: the cat score is minus the dog logit; against a neutral (grey) input
    cats = data["cats"]["images"]
    grey = np.full((1, 160, 160, 3), 127.5, np.float32)
    cat_scores = helpers.class_scores(model, cats)[:, 0]
    facts["cat_score_minus_grey"] = float(cat_scores.mean() - helpers.class_scores(model, grey)[0, 0])
    facts["cat_images_above_grey"] = float((cat_scores > helpers.class_scores(model, grey)[0, 0]).mean())
    facts["flatten_empty_cat_maps"] = int((helpers.grad_cam(model, cats, class_index=0).max(axis=(1, 2)) == 0).sum())
    # deletion and insertion on the dog images against a random map
    dogs = data["dogs"]["images"]
    random_maps = np.random.default_rng(0).random((len(dogs), 10, 10))
    gc_del, gc_ins = helpers.deletion_insertion_auc(model, dogs, helpers.grad_cam(model, dogs, class_index=1), class_index=1)
    rnd_del, rnd_ins = helpers.deletion_insertion_auc(model, dogs, random_maps, class_index=1)
    facts.update({"deletion_gradcam_minus_random": float(gc_del.mean() - rnd_del.mean()),
                  "insertion_gradcam_minus_random": float(gc_ins.mean() - rnd_ins.mean()),
                  "deletion_spread": float(max(gc_del.std(), rnd_del.std())),
                  "insertion_spread": float(max(gc_ins.std(), rnd_ins.std())),
                  "p_dog_grey": float(helpers.reference_scores(model, dogs, class_index=1)["grey"].mean())})
    # the cascading randomisation
    for method in ["Grad-CAM", "Grad-CAM++"]:
        stages = helpers.cascading_randomisation(model, dogs[:sanity_images], method, class_index=1, max_stages=sanity_stages)
        for stage in stages:
            for key in ("signed", "absolute", "empty"):
                facts[f"cascade_{method}_{stage['layer']}_{key}"] = stage[key]
    # the batch-averaged weights (notebook 04's teaching cell), on 3 + 3 validation images
    own = helpers.validation_images(root, per_class=3, size=160)
    own_images = np.concatenate([own[label] for label in classes])
    own_classes = np.repeat([0, 1], 3)
    per_image = helpers.grad_cam(model, own_images, class_index=own_classes)
    facts["own_empty_maps"] = int((per_image.max(axis=(1, 2)) == 0).sum())
    return facts


def facts_01_to_03(model, root):
    facts = {}
    _, val_ds, _ = helpers.load_image_folders(root)
    _, labels, probs = helpers.predict_dataset(model, val_ds)
    facts["val_accuracy"] = float(((probs >= 0.5) == labels).mean())
    photos = {p["name"]: p for p in helpers.sample_photos()}
    images = [helpers.load_image(sorted((root / "validation" / c).iterdir())[0], size=160) for c in ("cats", "dogs")]
    images.append(helpers.load_image(photos["chelsea"]["path"], size=160))
    acts = helpers.get_activations(model, images[0], ["block2_conv2"])["block2_conv2"]
    facts["block2_conv2_dead_on_cat"] = int((acts.max(axis=(0, 1)) == 0).sum())
    stats = helpers.layer_statistics(model, np.stack(images), helpers.layer_names(model, "conv"))
    for s in stats:
        facts[f"zeros_{s['name']}"] = s["zero_fraction"]
        facts[f"dead_{s['name']}"] = s["dead_channels"] / s["channels"]
    for name in ["block0_conv2", "block1_conv2", "block2_conv2", "block3_conv1"]:
        patterns, gains = helpers.filter_patterns(model, name, list(range(16)), size=160, mode="regularised", steps=32,
                                                  return_gains=True, progress=False)
        moving = patterns.std(axis=(1, 2, 3)) > 2  # flat grey: a filter that is silent on the start gets no gradient
        facts[f"gained_or_stuck_{name}"] = bool(((gains["after"] > gains["before"]) | (gains["after"] == gains["before"])).all())
        facts[f"flat_{name}"] = int((~moving).sum())
        contrast, texture = helpers.frame_contrast(patterns[moving]), helpers.border_texture_ratio(patterns[moving])
        facts[f"frame_median_abs_{name}"] = float(np.median(np.abs(contrast)))
        facts[f"frame_over_20_{name}"] = int((np.abs(contrast) > 20).sum())
        facts[f"texture_median_{name}"] = float(np.median(texture))
    return facts


def report(seeds, results):
    per_seed = {seed: json.loads((results / f"claims_seed{seed}.json").read_text()) for seed in seeds}
    print(f"{'fact':<52} {'min':>8} {'mean':>8} {'max':>8}   per seed {seeds}")
    for key in per_seed[seeds[0]]:
        values = np.array([float(per_seed[s][key]) for s in seeds])
        print(f"{key:<52} {np.nanmin(values):8.3f} {np.nanmean(values):8.3f} {np.nanmax(values):8.3f}   "
              + " ".join(f"{v:.2f}" for v in values))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--home", default=str(Path(__file__).parent / "results" / "claims_home"))
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument("--report-only", action="store_true", help="aggregate the per-seed results already written")
    args = parser.parse_args()
    os.environ[helpers.HOME_ENV] = args.home
    results = Path(__file__).parent / "results"
    paths = helpers.project_paths()
    warnings.simplefilter("ignore", RuntimeWarning)  # empty maps are counted, not warned about
    for seed in [] if args.report_only else args.seeds:
        model, _, root = helpers.trained_mini_vgg(paths, dataset="toy", seed=seed)
        gap_model, _, _ = helpers.trained_mini_vgg(paths, dataset="toy", head="gap", seed=seed)
        if args.train_only:
            continue
        gap_state = helpers.read_state(helpers.checkpoint_path("mini_vgg_gap", paths, dataset=root, seed=seed))
        facts = facts_01_to_03(model, root)
        facts.update(facts_04(model, gap_model, max(gap_state["history"]["val_accuracy"]), root))
        (results / f"claims_seed{seed}.json").write_text(json.dumps(facts, indent=1, default=float))
        print(f"seed {seed} done", flush=True)
    if not args.train_only:
        report(args.seeds, results)


if __name__ == "__main__":
    main()
