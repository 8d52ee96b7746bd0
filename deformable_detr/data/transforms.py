"""The authors' COCO augmentations, on uint8 CHW tensors with `torchvision.transforms.v2`.

Targets carry `boxes` as `tv_tensors.BoundingBoxes` (XYXY, absolute pixels) until `Normalize`, which turns
them into normalised (cx, cy, w, h). Randomness comes from torch's global generator, which DataLoader seeds
per worker, so a run is reproducible for a given seed.
"""

from collections.abc import Callable, Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from deformable_detr.config.data import AUGMENTATIONS

Target = dict[str, torch.Tensor]
Transform = Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The authors' sizes at image_scale 1.0.
TRAIN_SCALES = tuple(range(480, 801, 32))
TRAIN_MAX_SIZE = 1333
CROP_RESIZE_SCALES = (400, 500, 600)
CROP_MIN_SIZE, CROP_MAX_SIZE = 384, 600
VAL_SCALE = 800

# Fields with one entry per box: filtered together when boxes are dropped.
PER_BOX_FIELDS = ("boxes", "labels", "area", "iscrowd")


def get_size_with_aspect_ratio(
    image_size: tuple[int, int], size: int, max_size: int | None = None
) -> tuple[int, int]:
    """Output (h, w) for a shorter side of `size` and a longer side of at most `max_size`.

    Rounds exactly as the authors do: the shorter side is reduced to `round(max_size * short / long)`
    (Python's round) when the longer side would exceed `max_size`, and the longer side is truncated.
    `image_size` is (h, w).
    """
    height, width = image_size
    if max_size is not None:
        short, long = float(min(height, width)), float(max(height, width))
        if long / short * size > max_size:
            size = int(round(max_size * short / long))
    if (width <= height and width == size) or (height <= width and height == size):
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def _filter_boxes(target: Target, keep: torch.Tensor) -> Target:
    """Keep the boxes where `keep` [K] is True, with their per-box fields."""
    filtered = {key: value[keep] if key in PER_BOX_FIELDS else value for key, value in target.items()}
    # Indexing unwraps tv_tensors; the boxes must stay BoundingBoxes for the next transform.
    filtered["boxes"] = tv_tensors.wrap(filtered["boxes"], like=target["boxes"])
    return filtered


def hflip(image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
    """Mirror image [C, H, W] and boxes left-right."""
    target = dict(target)
    target["boxes"] = F.horizontal_flip(target["boxes"])
    return F.horizontal_flip(image), target


def resize(
    image: torch.Tensor, target: Target, size: int, max_size: int | None = None
) -> tuple[torch.Tensor, Target]:
    """Resize the shorter side to `size` (longer at most `max_size`); boxes and areas scale with the image."""
    old_height, old_width = image.shape[-2:]
    height, width = get_size_with_aspect_ratio((old_height, old_width), size, max_size)
    # Bilinear with antialiasing, as PIL's resize in the authors' pipeline. Decoded images are HWC in memory
    # (channels-last); as a batch of one, torch takes its fast uint8 channels-last kernel (1.5x here).
    image = F.resize(image.unsqueeze(0), [height, width], antialias=True)[0]
    target = dict(target)
    target["boxes"] = F.resize(target["boxes"], [height, width])
    target["area"] = target["area"] * ((width / old_width) * (height / old_height))
    target["size"] = torch.tensor([height, width], dtype=torch.int64)
    return image, target


def crop(
    image: torch.Tensor, target: Target, top: int, left: int, height: int, width: int
) -> tuple[torch.Tensor, Target]:
    """Crop a region; boxes are shifted and clipped to it, areas recomputed from the clipped boxes (as the
    authors do) and boxes left empty are dropped with their labels."""
    target = dict(target)
    boxes = F.crop(target["boxes"], top, left, height, width)  # shifts and clamps to the crop
    plain = boxes.as_subclass(torch.Tensor)
    target["boxes"] = boxes
    target["area"] = (plain[:, 2] - plain[:, 0]) * (plain[:, 3] - plain[:, 1])
    target["size"] = torch.tensor([height, width], dtype=torch.int64)
    # SanitizeBoundingBoxes keeps sides >= min_size; the authors keep sides > 0, so compare directly.
    keep = (plain[:, 2] > plain[:, 0]) & (plain[:, 3] > plain[:, 1])
    return F.crop(image, top, left, height, width), _filter_boxes(target, keep)


def _random_choice(values: Sequence[int]) -> int:
    return values[int(torch.randint(len(values), ()))]


def _random_int(low: int, high: int) -> int:
    """Uniform integer in [low, high], both included."""
    return int(torch.randint(low, high + 1, ()))


class Compose:
    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        for transform in self.transforms:
            image, target = transform(image, target)
        return image, target


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        if float(torch.rand(())) < self.p:
            return hflip(image, target)
        return image, target


class RandomResize:
    """Resize the shorter side to one of `sizes`, chosen uniformly."""

    def __init__(self, sizes: Sequence[int], max_size: int | None = None) -> None:
        self.sizes = list(sizes)
        self.max_size = max_size

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        return resize(image, target, _random_choice(self.sizes), self.max_size)


class RandomSizeCrop:
    """Crop a region of random height and width in [min_size, max_size] at a random position."""

    def __init__(self, min_size: int, max_size: int) -> None:
        self.min_size = min_size
        self.max_size = max_size

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        image_height, image_width = image.shape[-2:]
        # The authors' code fails on images smaller than min_size; crop the whole side there instead.
        width = _random_int(min(self.min_size, image_width), min(image_width, self.max_size))
        height = _random_int(min(self.min_size, image_height), min(image_height, self.max_size))
        top = _random_int(0, image_height - height)
        left = _random_int(0, image_width - width)
        return crop(image, target, top, left, height, width)


class RandomSelect:
    """Apply `first` with probability p, otherwise `second`."""

    def __init__(self, first: Transform, second: Transform, p: float = 0.5) -> None:
        self.first, self.second, self.p = first, second, p

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        if float(torch.rand(())) < self.p:
            return self.first(image, target)
        return self.second(image, target)


class Normalize:
    """uint8 [3, H, W] -> float32 ImageNet-normalised; boxes -> plain float32 normalised (cx, cy, w, h)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        # (x / 255 - mean) / std == x * (1 / (255 std)) - mean / std: one conversion and two in-place passes.
        self.scale = torch.tensor([1.0 / (255.0 * s) for s in std]).view(-1, 1, 1)
        self.shift = torch.tensor([-m / s for m, s in zip(mean, std)]).view(-1, 1, 1)

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        height, width = image.shape[-2:]
        # The conversion also makes the layout CHW-contiguous: broadcasting over channels on a channels-last
        # image is several times slower.
        image = image.to(torch.float32, memory_format=torch.contiguous_format).mul_(self.scale).add_(self.shift)
        target = dict(target)
        boxes = F.convert_bounding_box_format(target["boxes"], new_format=tv_tensors.BoundingBoxFormat.CXCYWH)
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        target["boxes"] = boxes.as_subclass(torch.Tensor) / scale
        return image, target


def _scaled(values: Sequence[int], image_scale: float) -> list[int]:
    return [int(round(value * image_scale)) for value in values]




def make_transforms(image_set: str, image_scale: float = 1.0, augmentation: str = "detr") -> Compose:
    """The train / val pipeline; every size is the authors' multiplied by `image_scale` and rounded.

    augmentation: the training augmentation (one of AUGMENTATIONS); validation ignores it.
    """
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {augmentation!r}")
    scales = _scaled(TRAIN_SCALES, image_scale)
    (max_size,) = _scaled([TRAIN_MAX_SIZE], image_scale)
    val_resize = RandomResize(_scaled([VAL_SCALE], image_scale), max_size=max_size)
    if image_set == "train" and augmentation == "flip":
        return Compose([RandomHorizontalFlip(), val_resize, Normalize()])
    if image_set == "train":
        crop_min, crop_max = _scaled([CROP_MIN_SIZE, CROP_MAX_SIZE], image_scale)
        return Compose(
            [
                RandomHorizontalFlip(),
                RandomSelect(
                    RandomResize(scales, max_size=max_size),
                    Compose(
                        [
                            RandomResize(_scaled(CROP_RESIZE_SCALES, image_scale)),
                            RandomSizeCrop(crop_min, crop_max),
                            RandomResize(scales, max_size=max_size),
                        ]
                    ),
                ),
                Normalize(),
            ]
        )
    if image_set == "val":
        return Compose([val_resize, Normalize()])
    raise ValueError(f"image_set must be 'train' or 'val', got {image_set!r}")
