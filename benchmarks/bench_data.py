"""Images/s of the training pipeline (decode + augment + normalise) in one worker, on 640x480 JPEGs.

    python -m benchmarks.bench_data [--images 64] [--rounds 4] [--threads 1]   (from the repository root)

Compares this package's pipeline (torchvision.io decode to uint8, transforms.v2 in uint8, one normalisation)
with the authors' design (PIL decode and PIL resize/crop, ToTensor, Normalize) under the same random
augmentation choices, and breaks the time down by stage. One thread by default: DataLoader workers run torch
with one thread each.
"""

import argparse
import io
import random
import time
from collections import defaultdict

import numpy as np
import torch
import torchvision.transforms.functional as F_pil
from PIL import Image

from deformable_detr.data.annotations import coco_to_target
from deformable_detr.data.images import decode
from deformable_detr.data.synthetic import draw_image
from deformable_detr.data.transforms import (
    CROP_MAX_SIZE,
    CROP_MIN_SIZE,
    CROP_RESIZE_SCALES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TRAIN_MAX_SIZE,
    TRAIN_SCALES,
    Normalize,
    get_size_with_aspect_ratio,
    make_transforms,
)


def make_jpegs(count: int) -> list[bytes]:
    """640x480 JPEGs (quality 90) of shapes on textured backgrounds."""
    jpegs = []
    for index in range(count):
        image, _ = draw_image(seed=123, split="train", index=index, size=640)
        buffer = io.BytesIO()
        image.crop((0, 0, 640, 480)).save(buffer, format="JPEG", quality=90)
        jpegs.append(buffer.getvalue())
    return jpegs


ANNOTATIONS = [
    {"bbox": [50.0, 60.0, 120.0, 80.0], "area": 9000.0, "category_id": 1},
    {"bbox": [300.0, 200.0, 64.0, 100.0], "area": 6000.0, "category_id": 2},
]


def run_ours(jpegs: list[bytes], stages: dict[str, float]) -> None:
    augment = make_transforms("train")
    augment.transforms = augment.transforms[:-1]  # timed separately below
    normalize = Normalize()
    for index, data in enumerate(jpegs):
        start = time.perf_counter()
        image = decode(data, f"bench image {index}")
        decoded = time.perf_counter()
        target = coco_to_target(ANNOTATIONS, index, 480, 640)
        image, target = augment(image, target)
        augmented = time.perf_counter()
        normalize(image, target)
        stages["decode"] += decoded - start
        stages["augment"] += augmented - decoded
        stages["normalise"] += time.perf_counter() - augmented


def pil_resize(image: Image.Image, size: int, max_size: int | None) -> Image.Image:
    height, width = get_size_with_aspect_ratio((image.height, image.width), size, max_size)
    return image.resize((width, height), Image.Resampling.BILINEAR)


def run_pil(jpegs: list[bytes], stages: dict[str, float]) -> None:
    """The authors' design: PIL decode and geometry, then ToTensor and Normalize on float."""
    for data in jpegs:
        start = time.perf_counter()
        image = Image.open(io.BytesIO(data)).convert("RGB")
        decoded = time.perf_counter()
        if random.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if random.random() < 0.5:
            image = pil_resize(image, random.choice(TRAIN_SCALES), TRAIN_MAX_SIZE)
        else:
            image = pil_resize(image, random.choice(CROP_RESIZE_SCALES), None)
            width = random.randint(CROP_MIN_SIZE, min(image.width, CROP_MAX_SIZE))
            height = random.randint(CROP_MIN_SIZE, min(image.height, CROP_MAX_SIZE))
            top, left = random.randint(0, image.height - height), random.randint(0, image.width - width)
            image = pil_resize(image.crop((left, top, left + width, top + height)), random.choice(TRAIN_SCALES), TRAIN_MAX_SIZE)
        augmented = time.perf_counter()
        tensor = F_pil.to_tensor(image)
        converted = time.perf_counter()
        F_pil.normalize(tensor, IMAGENET_MEAN, IMAGENET_STD)
        stages["decode"] += decoded - start
        stages["augment"] += augmented - decoded
        stages["to float"] += converted - augmented
        stages["normalise"] += time.perf_counter() - converted


def measure(name: str, runner, jpegs: list[bytes], rounds: int) -> float:
    runner(jpegs[:4], defaultdict(float))  # warm-up
    stages: dict[str, float] = defaultdict(float)
    for round_index in range(rounds):
        torch.manual_seed(round_index)
        random.seed(round_index)
        runner(jpegs, stages)
    total = sum(stages.values())
    rate = rounds * len(jpegs) / total
    breakdown = ", ".join(f"{stage} {100 * seconds / total:.0f} %" for stage, seconds in stages.items())
    print(f"{name:<34} {rate:7.1f} images/s   ({breakdown})")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    np.random.seed(0)
    jpegs = make_jpegs(args.images)
    print(f"{args.images} JPEGs 640x480, {args.rounds} rounds, torch threads {args.threads}")
    ours = measure("uint8 tensors + transforms.v2", run_ours, jpegs, args.rounds)
    pil = measure("PIL (the authors' design)", run_pil, jpegs, args.rounds)
    print(f"speed-up {ours / pil:.2f}x")


if __name__ == "__main__":
    main()
