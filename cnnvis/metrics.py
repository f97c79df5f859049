"""How good is a heatmap? The pointing game (Zhang et al., 2016), deletion and insertion (Petsiuk et
al., 2018) and the rank correlation used by the randomisation check (Adebayo et al., 2018)."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata  # SciPy comes with scikit-image

from cnnvis.gradients import check_classes
from cnnvis.images import as_batch, blur, upsample_heatmap


def class_probabilities(model, images, batch_size: int = 64) -> np.ndarray:
    """Model outputs as class probabilities (N, n_classes); a single sigmoid p becomes [1 - p, p]."""
    batch, _ = as_batch(images)
    probs = np.concatenate([np.asarray(model(batch[i:i + batch_size], training=False), np.float32)
                            for i in range(0, len(batch), batch_size)])
    return np.concatenate([1 - probs, probs], axis=1) if probs.shape[1] == 1 else probs


def explained_classes(model, batch, class_index) -> np.ndarray:
    """The class to explain per image (N,): class_index checked by check_classes, or where it is
    None, each image's most probable class."""
    probs = class_probabilities(model, batch)
    classes = check_classes(class_index, len(batch), probs.shape[1])
    return np.where(classes < 0, probs.argmax(axis=1), classes)


def _pointing(maps, boxes, tolerance: float):
    """Per map: None for a constant (e.g. all-zero) map, which points nowhere; else whether its
    maximum lies within `tolerance` pixels of one of the image's boxes."""
    if len(maps) != len(boxes):
        raise ValueError(f"{len(maps)} heatmaps but {len(boxes)} box lists; give one list of boxes per image.")
    results = []
    for heat, image_boxes in zip(maps, boxes):
        if heat.max() - heat.min() < 1e-6:
            results.append(None)
            continue
        y, x = np.argwhere(heat >= heat.max() - 1e-6).mean(axis=0)  # a plateau's centre
        distance = min(np.hypot(max(x0 - x, 0, x - x1), max(y0 - y, 0, y - y1)) for x0, y0, x1, y1 in image_boxes)
        results.append(bool(distance <= tolerance))
    return results


def pointing_game(heatmaps, boxes, image_size, tolerance: float = 0) -> float:
    """Share of maps whose maximum, upsampled to `image_size` (int or (H, W)), falls inside one of
    that image's boxes, or within `tolerance` pixels of one (Zhang et al. used 15). boxes: per
    image a list of (x0, y0, x1, y1) in pixels. When several pixels share the maximum (a plateau),
    their centre is the point; a constant (e.g. all-zero) map points nowhere and counts as a miss."""
    maps = upsample_heatmap(heatmaps, image_size)
    maps = maps[None] if maps.ndim == 2 else maps
    return float(np.mean([bool(hit) for hit in _pointing(maps, boxes, tolerance)]))


def pointing_game_report(heatmaps, boxes, image_size, tolerance: float = 15) -> dict:
    """The pointing game as Zhang et al. report it: {"strict": share of maxima inside a box,
    "tolerant": share within `tolerance` pixels, "empty": number of constant maps (misses in both),
    "n": number of maps}."""
    maps = upsample_heatmap(heatmaps, image_size)
    maps = maps[None] if maps.ndim == 2 else maps
    strict, tolerant = _pointing(maps, boxes, 0), _pointing(maps, boxes, tolerance)
    return {"strict": float(np.mean([bool(h) for h in strict])), "tolerant": float(np.mean([bool(h) for h in tolerant])),
            "empty": sum(h is None for h in strict), "n": len(maps)}


def random_point_baseline(boxes, image_size) -> float:
    """Expected pointing-game score of a uniformly random point: the mean share of the image
    covered by each image's boxes (their union)."""
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    shares = []
    for image_boxes in boxes:
        mask = np.zeros((height, width), bool)
        for x0, y0, x1, y1 in image_boxes:
            mask[int(y0):int(np.ceil(y1)) + 1, int(x0):int(np.ceil(x1)) + 1] = True
        shares.append(mask.mean())
    return float(np.mean(shares))


def deletion_insertion_auc(model, images, heatmaps, class_index=None, steps: int = 16, batch_size: int = 64):
    """Deletion and insertion AUC (Petsiuk et al., 2018), per image: (deletion (N,), insertion (N,)).

    Deletion greys out (127.5) pixels from the most to the least salient and records the class
    probability at `steps` + 1 stages, 0 to 100 % removed; insertion reveals them, in the same
    order, on a Gaussian-blurred copy (blur). Each curve's area is taken by the trapezoid rule
    over [0, 1]: lower is better for deletion, higher for insertion. Both ends of the curves are
    the model's score on the fully grey and the fully blurred image (see reference_scores): for a
    one-output model they are not class-neutral."""
    batch, _ = as_batch(images)
    maps = upsample_heatmap(heatmaps, batch.shape[1:3])
    maps = maps[None] if maps.ndim == 2 else maps
    classes = explained_classes(model, batch, class_index)
    fractions = np.linspace(0, 1, steps + 1)
    deletion, insertion = [], []
    for image, blurred, heat, cls in zip(batch, blur(batch), maps, classes):
        order = np.argsort(-heat.ravel(), kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        revealed = (rank[None] < np.round(fractions[:, None] * order.size)).reshape(-1, *heat.shape)[..., None]
        for curves, stages in ((deletion, np.where(revealed, 127.5, image[None])),
                               (insertion, np.where(revealed, image[None], blurred[None]))):
            p = class_probabilities(model, stages, batch_size)[:, cls]
            curves.append(float((p[:-1] + p[1:]).sum() / 2 / steps))
    return np.array(deletion), np.array(insertion)


def reference_scores(model, images, class_index=None) -> dict:
    """The class probability on the two images where deletion ends and insertion starts:
    {"grey": (N,) for the all-grey image, "blurred": (N,) for the blurred image}."""
    batch, _ = as_batch(images)
    classes = explained_classes(model, batch, class_index)
    pick = np.arange(len(batch))
    return {"grey": class_probabilities(model, np.full_like(batch, 127.5))[pick, classes],
            "blurred": class_probabilities(model, blur(batch))[pick, classes]}


def rank_correlation(a, b) -> float:
    """Spearman's rank correlation of two maps of the same shape, in [-1, 1], with tied values given
    their average rank (as scipy.stats.spearmanr): two unrelated maps that are mostly zeros come
    out near 0, not high. A constant map has no ranking: two constant maps count as identical (1.0),
    one constant map against a varying one as unrelated (0.0)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"rank_correlation needs maps of the same size, got {a.size} and {b.size} values.")
    flat_a, flat_b = np.ptp(a) == 0, np.ptp(b) == 0
    if flat_a or flat_b:
        return 1.0 if flat_a and flat_b else 0.0
    return float(np.corrcoef(rankdata(a), rankdata(b))[0, 1])


def frame_contrast(patterns, band: int = 8) -> np.ndarray:
    """Mean brightness of each pattern's outer `band` pixels minus that of its centre, in grey
    levels (n,): strongly negative for every pattern means a dark frame (padding the objective saw)."""
    x = np.asarray(patterns, np.float32).mean(axis=-1)
    border = np.zeros(x.shape[1:], bool)
    border[:band], border[-band:], border[:, :band], border[:, -band:] = True, True, True, True
    return x[:, border].mean(axis=1) - x[:, ~border].mean(axis=1)
