"""Notebook 04's cascading randomisation of EfficientNet-Lite0 (quick mode: Chelsea and the coffee,
8 SmoothGrad copies), under several randomisation seeds: the checked facts must hold in each.

    CNNVIS_QUICK=1 .venv/bin/python bench/lite_randomisation_seeds.py > bench/results/lite_randomisation_seeds.txt
"""
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import helpers  # noqa: E402

warnings.simplefilter("ignore", RuntimeWarning)
METHODS = ["Grad-CAM", "Grad-CAM++", "Gradient", "SmoothGrad", "Guided Backprop"]
lite = helpers.load_pretrained("efficientnet_lite0")
photos = {p["name"]: helpers.load_image(p["path"], size=224) for p in helpers.sample_photos()}
batch = np.stack([photos["chelsea"], photos["coffee"]])
for seed in (0, 1, 2):
    start = time.perf_counter()
    stages = helpers.cascading_randomisation(lite, batch, METHODS, class_index=[285, 967], by_block=True, seed=seed)
    print(f"seed {seed} ({time.perf_counter() - start:.0f} s); per stage: absolute / signed Spearman / empty maps")
    for method, per_stage in stages.items():
        print(f"  {method}:", " ".join(f"{s['layer']} {s['absolute']:.2f}/{s['signed']:.2f}/{s['empty']}" for s in per_stage))
    print("  checks: Guided Backprop > 0.9 down to block6b", min(s["absolute"] for s in stages["Guided Backprop"][:6]) > 0.9,
          "| Gradient and SmoothGrad < 0.4", max(s["absolute"] for m in ["Gradient", "SmoothGrad"] for s in stages[m]) < 0.4,
          "| Grad-CAM < 0.6 with the logits random", stages["Grad-CAM"][0]["absolute"] < 0.6,
          "| Grad-CAM++ > 0.7", min(s["absolute"] for s in stages["Grad-CAM++"]) > 0.7)
