"""The synthetic COCO-format generator: layout, requirements of the main job, determinism, the CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from deformable_detr.data.synthetic import CATEGORIES, draw_image, write_split
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("synthetic"))
    subprocess.run(
        [sys.executable, "-m", "deformable_detr.data.synthetic", "--out", out, "--train", "40", "--val", "10",
         "--size", "256", "--seed", "4"],
        check=True, cwd=REPO_ROOT, capture_output=True,
    )
    return out


def test_cli_writes_the_local_backend_layout(generated):
    for split, count in (("train", 40), ("val", 10)):
        coco = COCO(os.path.join(generated, "annotations", f"instances_{split}2017.json"))
        assert len(coco.imgs) == count
        for info in coco.imgs.values():
            with Image.open(os.path.join(generated, f"{split}2017", info["file_name"])) as image:
                assert image.format == "JPEG" and image.size == (info["width"], info["height"]) == (256, 256)


def test_objects_meet_the_main_job_requirements(generated):
    coco = COCO(os.path.join(generated, "annotations", "instances_train2017.json"))
    assert len(coco.cats) >= 4
    counts = [len(coco.imgToAnns[image_id]) for image_id in coco.imgs]
    assert min(counts) >= 1 and max(counts) <= 6 and len(set(counts)) > 3
    sides = np.array([a["bbox"][2:] for a in coco.anns.values()])
    assert sides.min() >= 16 and sides.max() <= 128
    assert {a["category_id"] for a in coco.anns.values()} == {c["id"] for c in CATEGORIES}
    overlapping = 0
    for image_id in coco.imgs:
        boxes = [a["bbox"] for a in coco.imgToAnns[image_id]]
        for i, (x0, y0, w0, h0) in enumerate(boxes):
            for x1, y1, w1, h1 in boxes[i + 1 :]:
                if x0 <= x1 + w1 and x1 <= x0 + w0 and y0 <= y1 + h1 and y1 <= y0 + h0:
                    overlapping += 1
    assert overlapping > 5


def test_backgrounds_are_textured_not_flat(generated):
    with Image.open(os.path.join(generated, "train2017", "000000000001.jpg")) as image:
        pixels = np.asarray(image, dtype=np.float32)
    assert pixels.std() > 10


def test_the_same_seed_gives_the_same_data_and_val_differs_from_train(tmp_path):
    first = write_split(str(tmp_path / "a"), "train", 3, 128, seed=9)
    second = write_split(str(tmp_path / "b"), "train", 3, 128, seed=9)
    with open(first) as a, open(second) as b:
        assert json.load(a) == json.load(b)
    assert (tmp_path / "a" / "train2017" / "000000000002.jpg").read_bytes() == (
        tmp_path / "b" / "train2017" / "000000000002.jpg"
    ).read_bytes()
    train_image, _ = draw_image(9, "train", 0, 128)
    val_image, _ = draw_image(9, "val", 0, 128)
    assert np.asarray(train_image).tolist() != np.asarray(val_image).tolist()


def test_crowd_only_and_empty_images_can_be_requested(tmp_path):
    path = write_split(str(tmp_path), "train", 30, 128, seed=2, crowd_fraction=0.3, empty_fraction=0.3)
    coco = COCO(path)
    annotations = [coco.imgToAnns[image_id] for image_id in coco.imgs]
    assert any(len(a) == 0 for a in annotations)
    crowd_only = [a for a in annotations if a and all(x["iscrowd"] for x in a)]
    assert crowd_only and all(len(a) == 1 for a in crowd_only)


def test_cli_rejects_too_small_images(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "deformable_detr.data.synthetic", "--out", str(tmp_path), "--size", "10"],
        cwd=REPO_ROOT, capture_output=True, text=True,
    )
    assert result.returncode != 0 and "--size" in result.stderr
