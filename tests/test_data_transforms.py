"""The augmentations equal the authors' specification on fixed inputs (sizes, boxes, areas, kept boxes)."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from deformable_detr.data.annotations import coco_to_target
from deformable_detr.data.synthetic import draw_image
from deformable_detr.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalize,
    RandomSizeCrop,
    crop,
    get_size_with_aspect_ratio,
    hflip,
    make_transforms,
    resize,
)

# Specification: the arithmetic of the authors' datasets/transforms.py and datasets/coco.py, on plain tensors.


def spec_target(annotations: list[dict], height: int, width: int) -> dict[str, torch.Tensor]:
    annotations = [a for a in annotations if a.get("iscrowd", 0) == 0]
    boxes = torch.tensor([a["bbox"] for a in annotations], dtype=torch.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    boxes[:, 0::2].clamp_(min=0, max=width)
    boxes[:, 1::2].clamp_(min=0, max=height)
    keep = (boxes[:, 3] > boxes[:, 1]) & (boxes[:, 2] > boxes[:, 0])
    return {
        "boxes": boxes[keep],
        "labels": torch.tensor([a["category_id"] for a in annotations], dtype=torch.int64)[keep],
        "area": torch.tensor([a["area"] for a in annotations], dtype=torch.float32)[keep],
    }


def spec_resize(boxes: torch.Tensor, area: torch.Tensor, old: tuple[int, int], new: tuple[int, int]):
    ratio_width, ratio_height = new[1] / old[1], new[0] / old[0]
    scaled = boxes * torch.as_tensor([ratio_width, ratio_height, ratio_width, ratio_height])
    return scaled, area * (ratio_width * ratio_height)


def spec_crop(boxes: torch.Tensor, labels: torch.Tensor, region: tuple[int, int, int, int]):
    top, left, height, width = region
    max_size = torch.as_tensor([width, height], dtype=torch.float32)
    cropped = torch.min((boxes - torch.as_tensor([left, top, left, top])).reshape(-1, 2, 2), max_size).clamp(min=0)
    area = (cropped[:, 1, :] - cropped[:, 0, :]).prod(dim=1)
    keep = torch.all(cropped[:, 1, :] > cropped[:, 0, :], dim=1)
    return cropped.reshape(-1, 4)[keep], labels[keep], area[keep]


def spec_hflip(boxes: torch.Tensor, width: int) -> torch.Tensor:
    return boxes[:, [2, 1, 0, 3]] * torch.as_tensor([-1, 1, -1, 1]) + torch.as_tensor([width, 0, width, 0])


ANNOTATIONS = [
    {"bbox": [10.5, 20.25, 50.0, 60.0], "area": 1234.5, "category_id": 3},
    {"bbox": [0.0, 0.0, 5.0, 5.0], "area": 20.0, "category_id": 1, "iscrowd": 1},  # crowd: dropped
    {"bbox": [600.0, 10.0, 100.0, 20.0], "area": 1500.0, "category_id": 2},  # clipped at the right edge
    {"bbox": [-30.0, 400.0, 80.0, 200.0], "area": 9000.0, "category_id": 7},  # clipped left and bottom
    {"bbox": [100.0, 100.0, 0.0, 30.0], "area": 0.0, "category_id": 5},  # zero width: dropped
    {"bbox": [700.0, 100.0, 10.0, 30.0], "area": 300.0, "category_id": 6},  # outside the image: dropped
    {"bbox": [300.0, 200.0, 40.5, 33.3], "area": 1000.0, "category_id": 9},
]
HEIGHT, WIDTH = 480, 640


def fixed_target():
    return coco_to_target(ANNOTATIONS, image_id=42, height=HEIGHT, width=WIDTH)


def plain(boxes: torch.Tensor) -> torch.Tensor:
    return boxes.as_subclass(torch.Tensor)


@pytest.mark.parametrize(
    "image_size, size, max_size, expected",
    [
        ((480, 640), 800, 1333, (800, 1066)),  # longer side truncated
        ((640, 480), 800, 1333, (1066, 800)),
        ((427, 640), 800, 1333, (800, 1199)),
        ((200, 1000), 800, 1333, (267, 1335)),  # shorter side round(1333 * 200 / 1000) = 267; longer may pass 1333
        ((800, 1000), 800, 1333, (800, 1000)),  # already at size: unchanged
        ((1, 2), 3, 5, (2, 4)),  # round(2.5) == 2: Python's round half to even
        ((480, 640), 512, None, (512, 682)),
        ((333, 500), 400, None, (400, 600)),
    ],
)
def test_output_size_rounds_like_the_authors(image_size, size, max_size, expected):
    assert get_size_with_aspect_ratio(image_size, size, max_size) == expected


def test_annotations_drop_crowd_clip_and_remove_degenerate_boxes_like_the_authors():
    target = fixed_target()
    expected = spec_target(ANNOTATIONS, HEIGHT, WIDTH)
    assert torch.equal(plain(target["boxes"]), expected["boxes"])
    assert torch.equal(target["labels"], expected["labels"])
    assert torch.equal(target["area"], expected["area"])
    assert target["labels"].tolist() == [3, 2, 7, 9]
    assert target["iscrowd"].tolist() == [0, 0, 0, 0]
    assert target["image_id"].dtype == torch.int64 and target["image_id"].shape == ()
    assert target["orig_size"].tolist() == [HEIGHT, WIDTH]


def test_annotations_remap_a_category_subset_to_consecutive_labels():
    target = coco_to_target(ANNOTATIONS, 42, HEIGHT, WIDTH, cat_id_to_label={9: 0, 3: 1})
    assert target["labels"].tolist() == [1, 0]
    assert plain(target["boxes"]).tolist() == [[10.5, 20.25, 60.5, 80.25], [300.0, 200.0, 340.5, 233.3000030517578]]


@pytest.mark.parametrize("size, max_size", [(800, 1333), (512, 1333), (400, None), (300, 500)])
def test_resize_scales_image_boxes_and_areas_like_the_authors(size, max_size):
    image = torch.randint(0, 256, (3, HEIGHT, WIDTH), dtype=torch.uint8)
    target = fixed_target()
    resized_image, resized = resize(image, target, size, max_size)
    new_size = get_size_with_aspect_ratio((HEIGHT, WIDTH), size, max_size)
    boxes, area = spec_resize(plain(target["boxes"]), target["area"], (HEIGHT, WIDTH), new_size)
    assert tuple(resized_image.shape) == (3, *new_size)
    assert resized["size"].tolist() == list(new_size)
    assert torch.equal(plain(resized["boxes"]), boxes)
    assert torch.equal(resized["area"], area)
    assert torch.equal(resized["labels"], target["labels"])


@pytest.mark.parametrize("region", [(0, 0, 480, 640), (100, 50, 200, 300), (15, 590, 384, 50), (450, 0, 30, 640)])
def test_crop_shifts_clips_recomputes_area_and_drops_emptied_boxes_like_the_authors(region):
    image = torch.arange(3 * HEIGHT * WIDTH, dtype=torch.int64).remainder(251).to(torch.uint8).view(3, HEIGHT, WIDTH)
    target = fixed_target()
    cropped_image, cropped = crop(image, target, *region)
    boxes, labels, area = spec_crop(plain(target["boxes"]), target["labels"], region)
    top, left, height, width = region
    assert torch.equal(cropped_image, image[:, top : top + height, left : left + width])
    assert cropped["size"].tolist() == [height, width]
    assert torch.equal(plain(cropped["boxes"]), boxes)
    assert torch.equal(cropped["labels"], labels)
    assert torch.equal(cropped["area"], area)
    assert len(cropped["iscrowd"]) == len(labels)


def test_crop_that_empties_every_box_gives_an_empty_target():
    _, cropped = crop(torch.zeros(3, HEIGHT, WIDTH, dtype=torch.uint8), fixed_target(), 250, 400, 10, 10)
    assert plain(cropped["boxes"]).shape == (0, 4)
    assert cropped["labels"].shape == (0,) and cropped["area"].shape == (0,)


def test_hflip_mirrors_image_and_boxes_like_the_authors():
    image = torch.randint(0, 256, (3, HEIGHT, WIDTH), dtype=torch.uint8)
    target = fixed_target()
    flipped_image, flipped = hflip(image, target)
    assert torch.equal(flipped_image, image.flip(-1))
    assert torch.equal(plain(flipped["boxes"]), spec_hflip(plain(target["boxes"]), WIDTH))
    assert torch.equal(flipped["area"], target["area"])


def test_random_size_crop_draws_sides_within_bounds_and_inside_the_image():
    torch.manual_seed(0)
    image = torch.zeros(3, 500, 700, dtype=torch.uint8)
    sizes = set()
    for _ in range(50):
        cropped_image, cropped = RandomSizeCrop(384, 600)(image, fixed_target())
        height, width = cropped_image.shape[-2:]
        assert 384 <= height <= 500 and 384 <= width <= 600
        assert cropped["size"].tolist() == [height, width]
        sizes.add((height, width))
    assert len(sizes) > 10


def test_normalize_equals_imagenet_normalisation_and_normalised_cxcywh_boxes():
    image = torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8)
    target = {"boxes": tv_tensors.BoundingBoxes([[6.0, 4.0, 30.0, 40.0]], format="XYXY", canvas_size=(40, 60))}
    normalised, out = Normalize()(image, target)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert normalised.dtype == torch.float32
    torch.testing.assert_close(normalised, (image.float() / 255 - mean) / std, rtol=1e-5, atol=1e-5)
    assert type(out["boxes"]) is torch.Tensor
    torch.testing.assert_close(out["boxes"], torch.tensor([[18.0 / 60, 22.0 / 40, 24.0 / 60, 36.0 / 40]]))


def test_val_pipeline_resizes_to_800_and_keeps_every_box():
    image = torch.randint(0, 256, (3, HEIGHT, WIDTH), dtype=torch.uint8)
    target = fixed_target()
    out_image, out = make_transforms("val")(image, target)
    assert tuple(out_image.shape) == (3, 800, 1066)
    assert out["size"].tolist() == [800, 1066] and out["orig_size"].tolist() == [HEIGHT, WIDTH]
    boxes, area = spec_resize(plain(target["boxes"]), target["area"], (HEIGHT, WIDTH), (800, 1066))
    expected = torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], dim=1)
    torch.testing.assert_close(out["boxes"], expected / torch.tensor([1066.0, 800.0, 1066.0, 800.0]))
    assert torch.equal(out["area"], area)


def test_train_pipeline_sizes_follow_the_authors_scales():
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, HEIGHT, WIDTH), dtype=torch.uint8)
    transform = make_transforms("train")
    shorter_sides = set()
    for _ in range(40):
        out_image, out = transform(image, fixed_target())
        height, width = out_image.shape[-2:]
        assert out["size"].tolist() == [height, width]
        shorter_sides.add(min(height, width))
        assert max(height, width) <= 1333
        assert len(out["boxes"]) == len(out["labels"]) == len(out["area"]) <= 4
        # A box spanning the whole crop can end 1 ulp past 1 after resize and division, as in the authors' code.
        assert bool(((out["boxes"] >= 0) & (out["boxes"] <= 1 + 1e-6)).all())
    assert shorter_sides <= set(range(480, 801, 32))
    assert len(shorter_sides) > 3


def test_image_scale_multiplies_every_size():
    image = torch.zeros(3, 120, 160, dtype=torch.uint8)
    target = coco_to_target([], 1, 120, 160)
    out_image, _ = make_transforms("val", image_scale=0.25)(image, target)
    assert tuple(out_image.shape[-2:]) == (200, 266)
    torch.manual_seed(1)
    transform = make_transforms("train", image_scale=0.25)
    for _ in range(20):
        out_image, out = transform(image, target)
        assert min(out_image.shape[-2:]) in {round(s * 0.25) for s in range(480, 801, 32)}
        assert out["boxes"].shape == (0, 4)


def test_flip_augmentation_keeps_every_box_whole_at_the_validation_size():
    image = torch.randint(0, 256, (3, HEIGHT, WIDTH), dtype=torch.uint8)
    _, expected = make_transforms("val", image_scale=0.25)(image, fixed_target())
    torch.manual_seed(0)
    transform = make_transforms("train", image_scale=0.25, augmentation="flip")
    mirrored = 0
    for _ in range(20):
        out_image, out = transform(image, fixed_target())
        assert out["size"].tolist() == expected["size"].tolist() == list(out_image.shape[-2:])
        assert torch.equal(out["labels"], expected["labels"]) and torch.equal(out["area"], expected["area"])
        cx, cy, w, h = out["boxes"].unbind(-1)
        ex, ey, ew, eh = expected["boxes"].unbind(-1)
        torch.testing.assert_close(torch.stack([cy, w, h]), torch.stack([ey, ew, eh]))
        if torch.allclose(cx, ex):
            continue
        torch.testing.assert_close(cx, 1 - ex)
        mirrored += 1
    assert 0 < mirrored < 20


def test_unknown_augmentation_is_rejected():
    with pytest.raises(ValueError, match="augmentation"):
        make_transforms("train", augmentation="mosaic")


def test_unknown_image_set_is_rejected():
    with pytest.raises(ValueError, match="image_set"):
        make_transforms("test")


@pytest.mark.parametrize("size", [100, 200, 480, 800])
def test_resized_pixels_match_pil_bilinear_up_to_rounding(size):
    picture, _ = draw_image(0, "train", 0, 320)
    picture = picture.crop((0, 0, 320, 240))
    image = torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1)  # CHW view of HWC memory, as decoded
    resized, _ = resize(image, coco_to_target([], 1, 240, 320), size, None)
    height, width = resized.shape[-2:]
    reference = torch.from_numpy(np.asarray(picture.resize((width, height), Image.Resampling.BILINEAR)).copy())
    difference = (resized.int() - reference.permute(2, 0, 1).int()).abs()
    assert difference.max() <= 1 and difference.float().mean() < 0.01
