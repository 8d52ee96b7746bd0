"""A small COCO-format dataset of simple shapes on textured backgrounds, written in the local backend's layout.

    python -m deformable_detr.data.synthetic --out DIR --train 2000 --val 200 --size 320 --seed 0

writes DIR/train2017/*.jpg, DIR/val2017/*.jpg and DIR/annotations/instances_{train,val}2017.json (or, with
`--layout flat`, DIR/images/*.jpg, DIR/train.json and DIR/val.json; `--category-ids 3,17,42` names the
categories by other ids). Every image
is drawn from its own generator seeded by (seed, split, index): the output is the same for a seed, and the
validation images are drawn with different seeds than the training images.
"""

import argparse
import json
import os
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from deformable_detr.data.paths import annotation_file, image_folder

CATEGORIES = [
    {"id": 1, "name": "rectangle", "supercategory": "shape"},
    {"id": 2, "name": "ellipse", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
    {"id": 4, "name": "cross", "supercategory": "shape"},
]
SPLITS = {"train": 0, "val": 1}
LAYOUTS = ("coco", "flat")
MIN_SIDE, MAX_SIDE = 16, 128
MAX_OBJECTS = 6
MIN_IMAGE_SIZE = 64
MAX_HIDDEN = 0.5  # a new object may cover at most this share of an earlier object's box
PLACEMENT_TRIES = 20
VAL_ID_OFFSET = 1_000_000  # keeps train and val image ids apart, as in COCO


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A smooth random colour field (a coarse grid upsampled) plus pixel noise; its colours vary within
    a band around a random base colour, so that objects of any colour can still stand out."""
    base = rng.integers(50, 206, 3)
    coarse = np.clip(base + rng.integers(-50, 51, (rng.integers(2, 9), rng.integers(2, 9), 3)), 0, 255).astype(np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR), dtype=np.int16)
    noise = rng.normal(0.0, rng.uniform(4.0, 20.0), (size, size, 3)).astype(np.int16)
    return Image.fromarray(np.clip(field + noise, 0, 255).astype(np.uint8))


def _draw_shape(draw: ImageDraw.ImageDraw, category: int, box: tuple[int, int, int, int], colour: Any) -> None:
    """Draw a filled shape inscribed in box (x0, y0, x1, y1), inclusive pixel bounds."""
    x0, y0, x1, y1 = box
    if category == 1:
        draw.rectangle(box, fill=colour)
    elif category == 2:
        draw.ellipse(box, fill=colour)
    elif category == 3:
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=colour)
    else:
        thick_x, thick_y = max(2, (x1 - x0 + 1) // 3), max(2, (y1 - y0 + 1) // 3)
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        draw.rectangle((x0, cy - thick_y // 2, x1, cy - thick_y // 2 + thick_y - 1), fill=colour)
        draw.rectangle((cx - thick_x // 2, y0, cx - thick_x // 2 + thick_x - 1, y1), fill=colour)


def _shape_record(category: int, box: tuple[int, int, int, int], size: int) -> dict[str, Any]:
    """bbox (x, y, w, h) of the drawn pixels and their count as area."""
    mask = Image.new("L", (size, size), 0)
    _draw_shape(ImageDraw.Draw(mask), category, box, 255)
    pixels = np.asarray(mask) > 0
    ys, xs = np.nonzero(pixels)
    x, y = int(xs.min()), int(ys.min())
    return {
        "category_id": category,
        "bbox": [float(x), float(y), float(xs.max() - x + 1), float(ys.max() - y + 1)],
        "area": float(pixels.sum()),
        "iscrowd": 0,
    }


def _place(rng: np.random.Generator, size: int, previous: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    """A box with sides in [16, 128]: at random, or touching / partly overlapping the previous object."""
    max_side = min(MAX_SIDE, size)
    width, height = (int(v) for v in rng.integers(MIN_SIDE, max_side + 1, 2))
    mode = rng.random()
    if previous and mode < 0.4:
        px0, py0, px1, py1 = previous[-1]
        if mode < 0.2:  # touching: starts right after the previous box
            x0, y0 = px1 + 1, py0 + int(rng.integers(-height // 2, (py1 - py0) // 2 + 1))
        else:  # partly overlapping: shifted by a fraction of the previous box
            x0 = px0 + int((px1 - px0) * rng.uniform(0.3, 0.7))
            y0 = py0 + int((py1 - py0) * rng.uniform(0.3, 0.7))
    else:
        x0, y0 = int(rng.integers(0, size - width + 1)), int(rng.integers(0, size - height + 1))
    x0 = min(max(x0, 0), size - width)
    y0 = min(max(y0, 0), size - height)
    return x0, y0, x0 + width - 1, y0 + height - 1


def _covered_share(box: tuple[int, int, int, int], by: tuple[int, int, int, int]) -> float:
    """Share of `box`'s area that `by` covers (inclusive pixel bounds)."""
    width = min(box[2], by[2]) - max(box[0], by[0]) + 1
    height = min(box[3], by[3]) - max(box[1], by[1]) + 1
    if width <= 0 or height <= 0:
        return 0.0
    return width * height / ((box[2] - box[0] + 1) * (box[3] - box[1] + 1))


def _place_visible(
    rng: np.random.Generator, size: int, previous: list[tuple[int, int, int, int]]
) -> tuple[int, int, int, int] | None:
    """A placement that leaves every earlier object mostly visible, or None when none was found."""
    for _ in range(PLACEMENT_TRIES):
        box = _place(rng, size, previous)
        if all(_covered_share(earlier, box) <= MAX_HIDDEN for earlier in previous):
            return box
    return None


def draw_image(
    seed: int, split: str, index: int, size: int, crowd_fraction: float = 0.0, empty_fraction: float = 0.0,
    num_shapes: int = len(CATEGORIES),
) -> tuple[Image.Image, list[dict[str, Any]]]:
    """One RGB image and its annotation records (without ids), with shapes 1..`num_shapes` of CATEGORIES as
    category ids. Deterministic in its arguments."""
    rng = np.random.default_rng([seed, SPLITS[split], index])
    image = _background(rng, size)
    draw = ImageDraw.Draw(image)
    kind = rng.random()
    if kind < empty_fraction:
        return image, []
    if kind < empty_fraction + crowd_fraction:
        # A crowd: a cluster of small shapes annotated as one crowd box, and nothing else.
        records = []
        for _ in range(int(rng.integers(4, 10))):
            side = int(rng.integers(8, 17))
            x0, y0 = (int(v) for v in rng.integers(size // 4, 3 * size // 4 - side, 2))
            category = int(rng.integers(1, num_shapes + 1))
            box = (x0, y0, x0 + side - 1, y0 + side - 1)
            _draw_shape(draw, category, box, tuple(int(c) for c in rng.integers(0, 256, 3)))
            records.append(_shape_record(category, box, size))
        x0 = min(r["bbox"][0] for r in records)
        y0 = min(r["bbox"][1] for r in records)
        x1 = max(r["bbox"][0] + r["bbox"][2] for r in records)
        y1 = max(r["bbox"][1] + r["bbox"][3] for r in records)
        crowd = {"category_id": records[0]["category_id"], "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 1}
        crowd["area"] = float(sum(r["area"] for r in records))
        return image, [crowd]
    boxes: list[tuple[int, int, int, int]] = []
    records = []
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        box = _place_visible(rng, size, boxes)
        if box is None:
            continue
        category = int(rng.integers(1, num_shapes + 1))
        _draw_shape(draw, category, box, tuple(int(c) for c in rng.integers(0, 256, 3)))
        boxes.append(box)
        records.append(_shape_record(category, box, size))
    return image, records


def write_split(
    out: str, split: str, count: int, size: int, seed: int, crowd_fraction: float = 0.0, empty_fraction: float = 0.0,
    category_ids: list[int] | None = None, layout: str = "coco",
) -> str:
    """Write `count` JPEGs and their annotations; returns the annotation file's path.

    Args:
        category_ids: the category id of each shape in CATEGORIES' order (1 to 4 ids, any positive integers;
            only that many shapes are drawn); default 1..4.
        layout: 'coco' writes out/<split>2017/ and out/annotations/instances_<split>2017.json (the default
            layout); 'flat' writes every split's images to out/images/ and the annotations to out/<split>.json.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    ids = list(category_ids) if category_ids is not None else [category["id"] for category in CATEGORIES]
    if not 1 <= len(ids) <= len(CATEGORIES) or len(set(ids)) != len(ids) or min(ids) < 1:
        raise ValueError(f"category_ids must be 1 to {len(CATEGORIES)} distinct positive integers, got {ids}")
    if layout == "coco":
        image_dir, path = os.path.join(out, image_folder(split)), annotation_file(out, split)
    else:
        image_dir, path = os.path.join(out, "images"), os.path.join(out, f"{split}.json")
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        image_id = index + 1 + (VAL_ID_OFFSET if split == "val" else 0)
        image, records = draw_image(seed, split, index, size, crowd_fraction, empty_fraction, len(ids))
        file_name = f"{image_id:012d}.jpg"
        image.save(os.path.join(image_dir, file_name), quality=90)
        images.append({"id": image_id, "file_name": file_name, "height": size, "width": size})
        for record in records:
            category_id = ids[record["category_id"] - 1]
            annotations.append({**record, "category_id": category_id, "id": len(annotations) + 1, "image_id": image_id})
    categories = [{**category, "id": cat_id} for category, cat_id in zip(CATEGORIES, ids)]
    dataset = {
        "info": {"description": f"synthetic shapes, seed {seed}"},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    with open(path + ".part", "w") as file:
        json.dump(dataset, file)
    os.replace(path + ".part", path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (the local backend's data_dir)")
    parser.add_argument("--train", type=int, default=2000, help="number of training images")
    parser.add_argument("--val", type=int, default=200, help="number of validation images")
    parser.add_argument("--size", type=int, default=320, help=f"image side in pixels (>= {MIN_IMAGE_SIZE})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crowd-fraction", type=float, default=0.0, help="share of crowd-only images")
    parser.add_argument("--empty-fraction", type=float, default=0.0, help="share of images with no annotations")
    parser.add_argument("--category-ids", help="comma-separated category id of each shape, e.g. 3,17,42 (1 to 4 "
                        "ids; default 1,2,3,4)")
    parser.add_argument("--layout", choices=LAYOUTS, default="coco",
                        help="coco: <split>2017/ and annotations/instances_<split>2017.json; "
                        "flat: images/ and <split>.json")
    args = parser.parse_args(argv)
    category_ids = None
    if args.category_ids:
        try:
            category_ids = [int(value) for value in args.category_ids.split(",")]
        except ValueError:
            parser.error(f"--category-ids must be comma-separated integers, got {args.category_ids!r}")
    if args.size < MIN_IMAGE_SIZE:
        parser.error(f"--size must be at least {MIN_IMAGE_SIZE}")
    if args.train < 0 or args.val < 0:
        parser.error("--train and --val must be >= 0")
    if not 0 <= args.crowd_fraction + args.empty_fraction <= 1 or min(args.crowd_fraction, args.empty_fraction) < 0:
        parser.error("--crowd-fraction and --empty-fraction must be >= 0 and sum to at most 1")
    for split, count in (("train", args.train), ("val", args.val)):
        path = write_split(args.out, split, count, args.size, args.seed, args.crowd_fraction, args.empty_fraction,
                           category_ids, args.layout)
        print(f"wrote {count} images and {path}")


if __name__ == "__main__":
    main()
