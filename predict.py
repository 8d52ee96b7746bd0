"""Detect objects in image files with a trained Deformable DETR.

    python3 predict.py --checkpoint CKPT --output OUT images/ more.jpg ...

CKPT is a checkpoint folder of this package (e.g. from `make train`) or the authors' released `.pth`.
Writes OUT/detections.json (COCO results format, category ids as in the training annotations; written
whole or not at all) and one PNG per image with the boxes above --threshold, labelled with class names and
scores. Each PNG keeps the image's path below the inputs' common folder plus `.png` (a/img.jpg ->
OUT/a/img.jpg.png), so no two images share an output. An image that cannot be read is skipped with a
warning (--on-bad-image skip, the default), or stops the run before anything is written (error). Every
argument is checked before the model loads.
"""

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass

from torchvision.io import write_png

from deformable_detr.data.images import ImageDecodeError, read_image
from deformable_detr.inference.loading import load_for_inference
from deformable_detr.inference.results import detections_to_rows, rows_to_results
from deformable_detr.inference.visualize import draw_boxes

logger = logging.getLogger("predict")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
BAD_IMAGE_POLICIES = ("skip", "error")
RESULTS_FILE = "detections.json"


@dataclass(frozen=True)
class InputImage:
    """An image to run on: its path, its name (the path below the inputs' common folder, '/'-separated) and
    its COCO image id."""

    path: str
    name: str
    image_id: int


def list_images(inputs: list[str]) -> list[str]:
    """Image files named directly or found (non-recursively) in the named folders, in a stable order; a file
    named twice is listed once."""
    files, seen = [], set()
    for item in inputs:
        if os.path.isdir(item):
            found = [os.path.join(item, name) for name in sorted(os.listdir(item))]
            found = [path for path in found if os.path.isfile(path) and path.lower().endswith(IMAGE_EXTENSIONS)]
        elif os.path.isfile(item):
            found = [item]
        else:
            raise FileNotFoundError(f"no image or folder at {item!r}")
        for path in found:
            if os.path.realpath(path) not in seen:
                seen.add(os.path.realpath(path))
                files.append(path)
    if not files:
        raise FileNotFoundError(f"no image files in {inputs}")
    return files


def name_images(files: list[str]) -> list[InputImage]:
    """Each file's name below the files' common folder, and its image id: the file name's number when every
    file name is a distinct number (as in COCO), else the file's position."""
    absolute = [os.path.abspath(path) for path in files]
    common = os.path.commonpath([os.path.dirname(path) for path in absolute])
    names = [os.path.relpath(path, common).replace(os.sep, "/") for path in absolute]
    stems = [os.path.splitext(os.path.basename(path))[0] for path in files]
    numbered = all(stem.isdigit() for stem in stems) and len({int(stem) for stem in stems}) == len(stems)
    ids = [int(stem) for stem in stems] if numbered else list(range(len(files)))
    return [InputImage(path, name, image_id) for path, name, image_id in zip(files, names, ids, strict=True)]


def check_arguments(checkpoint: str, output_dir: str, threshold: float, batch_size: int, on_bad_image: str) -> None:
    """Everything that can be checked before the model loads; ValueError/FileNotFoundError naming the argument."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"--threshold must be in [0, 1], got {threshold}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise ValueError(f"--on-bad-image must be one of {', '.join(BAD_IMAGE_POLICIES)}, got {on_bad_image!r}")
    if not os.path.exists(checkpoint):
        raise FileNotFoundError(f"--checkpoint: no checkpoint folder or file at {checkpoint!r}")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"--output {output_dir!r} is a file, not a folder")
    parent = os.path.dirname(os.path.abspath(output_dir))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise ValueError(f"--output {output_dir!r} cannot be created: {parent!r} is not a writable folder")


def readable(images: list[InputImage]) -> list[InputImage]:
    """ImageDecodeError naming the first image that cannot be read (the `error` policy's check, before any
    output); returns `images`."""
    for image in images:
        read_image(image.path)
    return images


def write_results(results: list[dict], output_dir: str) -> str:
    """detections.json, whole or not at all: written beside, then renamed."""
    path = os.path.join(output_dir, RESULTS_FILE)
    temporary = path + ".partial"
    with open(temporary, "w") as f:
        json.dump(results, f)
    os.replace(temporary, path)
    return path


def predict(
    checkpoint: str,
    inputs: list[str],
    output_dir: str,
    threshold: float = 0.5,
    batch_size: int = 4,
    device: str = "cpu",
    on_bad_image: str = "skip",
) -> list[dict]:
    """Run the model on every image; write the COCO results JSON and one PNG per image. Returns the results
    (each with the image's `file_name`, as in its PNG's name).

    An image that cannot be read is skipped with a warning (`on_bad_image="skip"`), or raises
    `deformable_detr.data.images.ImageDecodeError` naming it before any output (`"error"`).
    """
    check_arguments(checkpoint, output_dir, threshold, batch_size, on_bad_image)
    images = name_images(list_images(inputs))
    if on_bad_image == "error":
        readable(images)
    loaded = load_for_inference(checkpoint, device)
    os.makedirs(output_dir, exist_ok=True)
    results, skipped = [], []
    for start in range(0, len(images), batch_size):
        batch, pixels = [], []
        for image in images[start : start + batch_size]:
            try:
                pixels.append(read_image(image.path))
            except ImageDecodeError as error:
                if on_bad_image == "error":
                    raise
                logger.warning("skipping %s: %s", image.path, error)
                skipped.append(image.path)
                continue
            batch.append(image)
        if not batch:
            continue
        for image, picture, found in zip(batch, pixels, loaded.detect(pixels), strict=True):
            keep = found["scores"] >= threshold
            kept = {key: value[keep].cpu() for key, value in found.items()}
            rows = detections_to_rows([image.image_id], [kept], loaded.label_to_cat_id)
            results.extend(rows_to_results(rows, image.name))
            drawn = draw_boxes(picture, kept["boxes"], kept["labels"].tolist(), loaded.names, kept["scores"].tolist())
            png = os.path.join(output_dir, *f"{image.name}.png".split("/"))
            os.makedirs(os.path.dirname(png), exist_ok=True)
            write_png(drawn, png)
        logger.info("%d/%d images", min(start + batch_size, len(images)), len(images))
    write_results(results, output_dir)
    if skipped:
        logger.warning("%d of %d images could not be read and were skipped: %s", len(skipped), len(images), skipped)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="image files or folders of images")
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder of this package, or the authors' .pth")
    parser.add_argument("--output", required=True, help="folder for detections.json and the annotated PNGs")
    parser.add_argument("--threshold", type=float, default=0.5, help="lowest score kept (default 0.5)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass (default 4)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument(
        "--on-bad-image", choices=BAD_IMAGE_POLICIES, default="skip",
        help="an image that cannot be read: skip it with a warning (default), or stop before any output",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        check_arguments(args.checkpoint, args.output, args.threshold, args.batch_size, args.on_bad_image)
        list_images(args.inputs)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    results = predict(
        args.checkpoint, args.inputs, args.output, args.threshold, args.batch_size, args.device, args.on_bad_image
    )
    print(f"{len(results)} detections written to {os.path.join(args.output, RESULTS_FILE)}")


if __name__ == "__main__":
    main(sys.argv[1:])
