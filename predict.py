"""Detect objects in image files with a trained Deformable DETR.

    python3 predict.py --checkpoint CKPT --output OUT images/ more.jpg ...

CKPT is a checkpoint folder of this package (e.g. from `make train`) or the authors' released `.pth`.
Writes OUT/detections.json (COCO results format, category ids as in the training annotations) and
OUT/<image name>.png with the boxes above --threshold, labelled with class names and scores.
"""

import argparse
import json
import logging
import os
import sys

from torchvision.io import write_png

from deformable_detr.data.images import read_image
from deformable_detr.inference.loading import load_for_inference
from deformable_detr.inference.results import detections_to_rows, rows_to_results
from deformable_detr.inference.visualize import draw_boxes

logger = logging.getLogger("predict")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def list_images(inputs: list[str]) -> list[str]:
    """Image files named directly or found (non-recursively) in the named folders, in a stable order."""
    files = []
    for item in inputs:
        if os.path.isdir(item):
            files.extend(
                os.path.join(item, name) for name in sorted(os.listdir(item)) if name.lower().endswith(IMAGE_EXTENSIONS)
            )
        elif os.path.isfile(item):
            files.append(item)
        else:
            raise FileNotFoundError(f"no image or folder at {item!r}")
    if not files:
        raise FileNotFoundError(f"no image files in {inputs}")
    return files


def image_id_for(path: str, index: int) -> int:
    """The COCO image id: the file name's number when it is one (as in COCO), else the input's position."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return int(stem) if stem.isdigit() else index


def predict(
    checkpoint: str,
    inputs: list[str],
    output_dir: str,
    threshold: float = 0.5,
    batch_size: int = 4,
    device: str = "cpu",
) -> list[dict]:
    """Run the model on every image; write the COCO results JSON and one PNG per image. Returns the results.

    An input that is not an image raises `deformable_detr.data.images.ImageDecodeError` naming the file.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"--threshold must be in [0, 1], got {threshold}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    files = list_images(inputs)
    loaded = load_for_inference(checkpoint, device)
    os.makedirs(output_dir, exist_ok=True)
    results = []
    for start in range(0, len(files), batch_size):
        paths = files[start : start + batch_size]
        images = [read_image(path) for path in paths]
        for offset, (path, image, found) in enumerate(zip(paths, images, loaded.detect(images), strict=True)):
            keep = found["scores"] >= threshold
            kept = {key: value[keep].cpu() for key, value in found.items()}
            rows = detections_to_rows([image_id_for(path, start + offset)], [kept], loaded.label_to_cat_id)
            results.extend(rows_to_results(rows, os.path.basename(path)))
            drawn = draw_boxes(image, kept["boxes"], kept["labels"].tolist(), loaded.names, kept["scores"].tolist())
            write_png(drawn, os.path.join(output_dir, os.path.splitext(os.path.basename(path))[0] + ".png"))
        logger.info("%d/%d images", min(start + batch_size, len(files)), len(files))
    with open(os.path.join(output_dir, "detections.json"), "w") as f:
        json.dump(results, f)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="image files or folders of images")
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder of this package, or the authors' .pth")
    parser.add_argument("--output", required=True, help="folder for detections.json and the annotated PNGs")
    parser.add_argument("--threshold", type=float, default=0.5, help="lowest score kept (default 0.5)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass (default 4)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    results = predict(args.checkpoint, args.inputs, args.output, args.threshold, args.batch_size, args.device)
    print(f"{len(results)} detections written to {os.path.join(args.output, 'detections.json')}")


if __name__ == "__main__":
    main(sys.argv[1:])
