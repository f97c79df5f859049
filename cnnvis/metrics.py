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


def _near_boxes(ys, xs, image_boxes, tolerance: float) -> np.ndarray:
    """Whether each pixel centre (ys[i], xs[i]) -- pixel (row, column) sits at (x, y) = (column,
    row), as PIL draws it -- lies inside one of the boxes (x0, y0, x1, y1), or within `tolerance`
    pixels of one. The one test behind the pointing game and its random baseline."""
    ys, xs = np.asarray(ys, np.float64)[:, None], np.asarray(xs, np.float64)[:, None]
    x0, y0, x1, y1 = (np.array([b[i] for b in image_boxes], np.float64)[None] for i in range(4))
    distance = np.hypot(np.maximum(np.maximum(x0 - xs, 0), xs - x1), np.maximum(np.maximum(y0 - ys, 0), ys - y1))
    return (distance <= tolerance).any(axis=1)


def _pointing(maps, boxes, tolerance: float):
    """Per map: None for a constant (e.g. all-zero) map, which points nowhere; else the share of its
    maximal pixels (every tied one counts) that lie within `tolerance` pixels of one of the boxes."""
    if len(maps) != len(boxes):
        raise ValueError(f"{len(maps)} heatmaps but {len(boxes)} box lists; give one list of boxes per image.")
    results = []
    for heat, image_boxes in zip(maps, boxes):
        if heat.max() - heat.min() < 1e-6 or not len(image_boxes):
            results.append(None if heat.max() - heat.min() < 1e-6 else 0.0)
            continue
        ys, xs = np.nonzero(heat >= heat.max() - 1e-6)
        results.append(float(_near_boxes(ys, xs, image_boxes, tolerance).mean()))
    return results


def _upsampled(heatmaps, image_size) -> np.ndarray:
    maps = upsample_heatmap(heatmaps, image_size)
    return maps[None] if maps.ndim == 2 else maps


def pointing_game(heatmaps, boxes, image_size, tolerance: float = 0) -> float:
    """Mean pointing-game score of the maps, upsampled to `image_size` (int or (H, W)): a map
    scores 1 when its maximum falls inside one of that image's boxes, or within `tolerance` pixels
    of one (Zhang et al. used 15). boxes: per image a list of (x0, y0, x1, y1) in pixels. When
    several pixels share the maximum, each counts: the map scores the share of them that hit. A
    constant (e.g. all-zero) map points nowhere and scores 0."""
    return float(np.mean([hit or 0.0 for hit in _pointing(_upsampled(heatmaps, image_size), boxes, tolerance)]))


def pointing_game_report(heatmaps, boxes, image_size, tolerance: float = 15) -> dict:
    """The pointing game both ways: {"strict": mean score with the maximum inside a box (this
    project's), "tolerant": within `tolerance` pixels of one (Zhang et al.'s 15 px), "empty":
    number of constant maps (score 0 in both), "n": number of maps}."""
    maps = _upsampled(heatmaps, image_size)
    strict, tolerant = _pointing(maps, boxes, 0), _pointing(maps, boxes, tolerance)
    return {"strict": float(np.mean([h or 0.0 for h in strict])), "tolerant": float(np.mean([h or 0.0 for h in tolerant])),
            "empty": sum(h is None for h in strict), "n": len(maps)}


def random_point_baseline(boxes, image_size, tolerance: float = 0) -> float:
    """Expected pointing-game score of a uniformly random pixel: per image, the share of pixel
    centres that the game's own test (inside a box, or within `tolerance` pixels) counts as a hit,
    averaged over the images."""
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    ys, xs = np.divmod(np.arange(height * width), width)
    return float(np.mean([_near_boxes(ys, xs, image_boxes, tolerance).mean() if len(image_boxes) else 0.0
                          for image_boxes in boxes]))


def deletion_insertion_auc(model, images, heatmaps, class_index=None, steps: int = 16, batch_size: int = 64):
    """Deletion and insertion AUC (Petsiuk et al., 2018), per image: (deletion (N,), insertion (N,)).

    Deletion greys out (127.5) pixels from the most to the least salient and records the class
    probability at `steps` + 1 stages, 0 to 100 % removed; insertion reveals them, in the same
    order, on a Gaussian-blurred copy (blur). Each curve's area is taken by the trapezoid rule
    over [0, 1]: lower is better for deletion, higher for insertion. Both ends of the curves are
    the model's score on the fully grey and the fully blurred image (see reference_scores): for a
    one-output model they are not class-neutral."""
    batch, _ = as_batch(images)
    maps = _upsampled(heatmaps, batch.shape[1:3])
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
    levels (n,): far from 0, of either sign, means a frame (padding the objective saw); judge each
    pattern, since frames of opposite sign cancel in a mean."""
    x = np.asarray(patterns, np.float32).mean(axis=-1)
    border = _band(x.shape[1:], band)
    return x[:, border].mean(axis=1) - x[:, ~border].mean(axis=1)


def _band(shape, band: int) -> np.ndarray:
    border = np.zeros(shape, bool)
    border[:band], border[-band:], border[:, :band], border[:, -band:] = True, True, True, True
    return border


def border_texture_ratio(patterns, band: int = 8) -> np.ndarray:
    """How busy each pattern's outer `band` pixels are compared with its centre (n,): the mean
    absolute difference between neighbouring pixels there, divided by that in the centre. Near 1
    when the texture runs to the edge; well below 1 for a flat frame, whatever its brightness."""
    x = np.asarray(patterns, np.float32).mean(axis=-1)
    busy = np.zeros_like(x)
    busy[:, :-1, :] += np.abs(np.diff(x, axis=1))
    busy[:, :, :-1] += np.abs(np.diff(x, axis=2))
    border = _band(x.shape[1:], band)
    centre = busy[:, ~border].mean(axis=1)
    return np.divide(busy[:, border].mean(axis=1), centre, out=np.ones_like(centre), where=centre > 0)


def mass_inside(heatmaps, boxes, image_size) -> np.ndarray:
    """Share of each map's mass (its ReLU, upsampled to `image_size`) inside that image's boxes
    (x0, y0, x1, y1): (N,) in [0, 1]; NaN for an empty map, which says nothing either way."""
    maps = np.maximum(_upsampled(heatmaps, image_size), 0)
    height, width = maps.shape[1:3]
    ys, xs = np.divmod(np.arange(height * width), width)
    shares = []
    for heat, image_boxes in zip(maps, boxes):
        total = heat.sum()
        inside = _near_boxes(ys, xs, image_boxes, 0).reshape(height, width) if len(image_boxes) else np.zeros_like(heat, bool)
        shares.append(heat[inside].sum() / total if total > 0 else np.nan)
    return np.array(shares, np.float64)
