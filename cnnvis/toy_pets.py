"""Toy pets: an offline stand-in for dogs-vs-cats, drawn with PIL, with part boxes for the CAM metrics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from cnnvis.files import build_then_rename

CLASS_DIRS = ("cats", "dogs")


BOX_PARTS = ("face", "left_ear", "right_ear", "snout")
# The parts that tell the classes apart; the face box holds the eyes, which both classes share.
CLASS_PARTS = ("left_ear", "right_ear", "snout")


def eye_boxes(face) -> list[tuple[float, float, float, float]]:
    """The boxes (x0, y0, x1, y1) of the two eyes inside a face box, as _draw_pet draws them: both
    classes have the same eyes, so a map that peaks there has found no class-specific part."""
    x0, y0, x1, y1 = face
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    return [(cx + sign * 0.38 * r - 0.15 * r, cy - 0.35 * r, cx + sign * 0.38 * r + 0.15 * r, cy - 0.05 * r)
            for sign in (-1, 1)]


def _textured_background(rng: np.random.Generator, size: int) -> Image.Image:
    """A cluttered background: colour gradient, noise, stripes and random shapes."""
    base = rng.uniform(40, 215, 3)
    tilt = rng.uniform(-60, 60, 3)
    ramp = np.linspace(-0.5, 0.5, size)
    angle = rng.uniform(0, np.pi)
    grad = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
    pixels = base + grad[..., None] * tilt + rng.normal(0, 12, (size, size, 3))
    if rng.random() < 0.5:
        period = rng.uniform(6, 20)
        stripes = np.sin((np.arange(size)[None, :] * np.cos(angle) + np.arange(size)[:, None] * np.sin(angle))
                         * 2 * np.pi / period)
        pixels += stripes[..., None] * rng.uniform(8, 25)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(6, 14)):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0 = rng.uniform(-0.1, 1.0, 2) * size
        w, h = rng.uniform(0.05, 0.35, 2) * size
        kind = rng.integers(3)
        if kind == 0:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
        elif kind == 1:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
        else:
            draw.line([x0, y0, x0 + w, y0 + h], fill=colour, width=int(rng.integers(1, 4)))
    return image.filter(ImageFilter.GaussianBlur(0.6))


def _box(points) -> list[float]:
    xs, ys = zip(*points)
    return [min(xs), min(ys), max(xs), max(ys)]


def _draw_pet(image: Image.Image, label: str, rng: np.random.Generator) -> dict[str, list[float]]:
    """Draw a cartoon cat or dog face on `image`; return its part boxes (x0, y0, x1, y1) in pixels.

    Cats and dogs share the round face, the eyes and the colour palette; only the parts differ:
    cats have pointed ears, a small muzzle and whiskers, dogs floppy ears and a long snout.
    """
    size = image.size[0]
    draw = ImageDraw.Draw(image)
    r = rng.uniform(0.19, 0.25) * size
    cx = rng.uniform(1.45 * r, size - 1.45 * r)
    cy = rng.uniform(1.65 * r, size - 1.75 * r)
    fur = rng.uniform(30, 230, 3)
    fur_c = tuple(int(c) for c in fur)
    dark = tuple(int(c) for c in np.clip(fur * rng.uniform(0.45, 0.75), 0, 255))
    boxes: dict[str, list[float]] = {}
    if label == "cats":
        spread = rng.uniform(0.45, 0.7)
        for side, sign in (("left_ear", -1), ("right_ear", 1)):
            base_a = (cx + sign * r * np.sin(spread - 0.45), cy - r * np.cos(spread - 0.45))
            base_b = (cx + sign * r * np.sin(spread + 0.45), cy - r * np.cos(spread + 0.45))
            tip = (cx + sign * r * np.sin(spread) * 1.55, cy - r * rng.uniform(1.45, 1.65))
            draw.polygon([base_a, tip, base_b], fill=fur_c)
            draw.polygon([base_a, ((base_a[0] + tip[0]) / 2, (base_a[1] + tip[1]) / 2), base_b], fill=dark)
            boxes[side] = _box([base_a, tip, base_b])
    else:
        for side, sign in (("left_ear", -1), ("right_ear", 1)):
            top = (cx + sign * 0.75 * r, cy - 0.85 * r)
            ear = [top[0] - 0.32 * r, top[1], top[0] + 0.32 * r, top[1] + rng.uniform(1.2, 1.5) * r]
            ear[0] += sign * 0.25 * r
            ear[2] += sign * 0.25 * r
            draw.ellipse(ear, fill=dark)
            boxes[side] = ear
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fur_c)
    boxes["face"] = [cx - r, cy - r, cx + r, cy + r]
    for sign in (-1, 1):
        ex, ey, er = cx + sign * 0.38 * r, cy - 0.2 * r, 0.15 * r
        draw.ellipse([ex - er, ey - er, ex + er, ey + er], fill=(245, 245, 235))
        draw.ellipse([ex - er / 2, ey - er / 2, ex + er / 2, ey + er / 2], fill=(20, 20, 20))
    if label == "cats":
        muzzle = [cx - 0.32 * r, cy + 0.1 * r, cx + 0.32 * r, cy + 0.55 * r]
        draw.ellipse(muzzle, fill=tuple(int(c) for c in np.clip(fur + 40, 0, 255)))
        draw.polygon([(cx - 0.1 * r, cy + 0.12 * r), (cx + 0.1 * r, cy + 0.12 * r), (cx, cy + 0.26 * r)],
                     fill=(230, 120, 140))
        whiskers = []
        for sign in (-1, 1):
            for dy in (-0.12, 0.05, 0.22):
                start = (cx + sign * 0.2 * r, cy + 0.35 * r)
                end = (cx + sign * 1.35 * r, cy + (0.35 + dy * 2.2) * r)
                draw.line([start, end], fill=(25, 25, 25), width=max(1, int(r / 22)))
                whiskers += [start, end]
        boxes["snout"] = _box(whiskers + [(muzzle[0], muzzle[1]), (muzzle[2], muzzle[3])])
    else:
        length = rng.uniform(1.2, 1.5) * r
        snout = [cx - 0.36 * r, cy - 0.05 * r, cx + 0.36 * r, cy + length]
        draw.rounded_rectangle(snout, radius=0.3 * r, fill=tuple(int(c) for c in np.clip(fur + 30, 0, 255)))
        draw.ellipse([cx - 0.2 * r, cy + length - 0.32 * r, cx + 0.2 * r, cy + length - 0.02 * r],
                     fill=(20, 20, 20))
        boxes["snout"] = snout
    return boxes


def make_toy_pets(dest, n_train: int = 600, n_val: int = 150, size: int = 160, seed: int = 0) -> Path:
    """Draw an offline stand-in for dogs-vs-cats: dest/{train,validation}/{cats,dogs}/*.png.

    n_train and n_val count images per class; images are `size` x `size` RGB. Each shows one
    cartoon face at random position, scale and colour on a cluttered textured background; the
    class lives only in the parts (ears, muzzle/whiskers versus floppy ears/long snout).
    dest/boxes.csv lists, per image, the pixel boxes (x0, y0, x1, y1) of the parts
    face, left_ear, right_ear and snout. Same seed, same pixels. An existing dest made with the
    same settings is reused; dest may be an empty folder; any other existing dest is left
    untouched and raises.
    """
    dest = Path(dest)
    if n_train < 1 or n_val < 1 or size < 32:
        raise ValueError(f"make_toy_pets needs n_train >= 1, n_val >= 1 and size >= 32; got "
                         f"n_train={n_train}, n_val={n_val}, size={size}.")
    settings = {"n_train": n_train, "n_val": n_val, "size": size, "seed": seed, "version": 2}
    manifest = dest / "toy_pets.json"
    if manifest.exists() and json.loads(manifest.read_text()) == settings:
        return dest
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"{dest} already exists and is not a toy-pets set made with {settings}; "
                              "pass another dest or remove it yourself.")

    def build(tmp: Path) -> None:
        rows = []
        for split_index, (split, count) in enumerate((("train", n_train), ("validation", n_val))):
            for label_index, label in enumerate(CLASS_DIRS):
                (tmp / split / label).mkdir(parents=True)
                for i in range(count):
                    rng = np.random.default_rng([seed, split_index, label_index, i])
                    image = _textured_background(rng, size)
                    boxes = _draw_pet(image, label, rng)
                    relative = f"{split}/{label}/{label[:-1]}.{i:04d}.png"
                    image.save(tmp / relative)
                    for part in BOX_PARTS:
                        x0, y0, x1, y1 = (float(np.clip(v, 0, size - 1)) for v in boxes[part])
                        rows.append([relative, label, part, round(x0, 1), round(y0, 1), round(x1, 1), round(y1, 1)])
        with open(tmp / "boxes.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "class", "part", "x0", "y0", "x1", "y1"])
            writer.writerows(rows)
        (tmp / "toy_pets.json").write_text(json.dumps(settings))

    return build_then_rename(dest, build)


def load_boxes(root) -> dict[str, dict[str, tuple[float, float, float, float]]]:
    """Read root/boxes.csv (from make_toy_pets) as {relative path: {part: (x0, y0, x1, y1)}}."""
    path = Path(root) / "boxes.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: boxes exist only for sets made by make_toy_pets().")
    boxes: dict[str, dict[str, tuple[float, float, float, float]]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            boxes.setdefault(row["path"], {})[row["part"]] = tuple(float(row[k]) for k in ("x0", "y0", "x1", "y1"))
    return boxes
