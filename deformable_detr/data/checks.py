"""The data check before training: annotation records and file existence only (no image is decoded), so that
it costs seconds, and a run does not stop in its third epoch for a problem visible at its start.

It finds missing image files, boxes of zero or negative size or malformed, boxes outside their image,
annotations of unknown categories or images, and duplicate image or annotation ids; `data.check` decides
whether they stop the run (one error listing them) or are left out with a warning.
"""

import contextlib
import io
import logging
import math
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from PIL import Image
from pycocotools.coco import COCO

from deformable_detr.data.stores import ImageStore, LocalImageStore

logger = logging.getLogger(__name__)

# How many problems an error or warning lists; the rest are counted.
SHOWN_PROBLEMS = 20
# A box may end this many pixels past the image's edge (rounding in the annotation tools) before it is
# "outside the image"; the dataset clips boxes to the image anyway.
EDGE_TOLERANCE_PX = 1.0

MISSING_IMAGE = "missing image"
DUPLICATE_IMAGE_ID = "duplicate image id"
BAD_BOX = "malformed box"
EMPTY_BOX = "box of zero or negative size"
OUTSIDE_BOX = "box outside the image"
UNKNOWN_CATEGORY = "unknown category id"
UNKNOWN_IMAGE = "annotation of an unknown image id"
DUPLICATE_ANNOTATION_ID = "duplicate annotation id"


class DataCheckError(ValueError):
    """The data check found problems and `data.check` is 'stop'; the message lists them."""


@dataclass(frozen=True)
class Problem:
    """One problem of an annotation file: `annotation_id` None for an image record's problem."""

    kind: str
    image_id: object
    file_name: str | None
    annotation_id: object = None
    detail: str = ""

    def describe(self) -> str:
        where = f"image id {self.image_id}" + (f" ({self.file_name})" if self.file_name else "")
        if self.annotation_id is not None:
            where = f"annotation id {self.annotation_id} of {where}"
        return f"{self.kind}: {where}" + (f": {self.detail}" if self.detail else "")


@dataclass(frozen=True)
class CheckResult:
    """What the check found, and the annotation file's records without the bad ones."""

    problems: list[Problem]
    images: list[dict]
    annotations: list[dict]
    dropped_images: int
    dropped_annotations: int


def find_problems(
    dataset: dict, known_categories: Collection[int], missing_files: Collection[str], sizes: dict[object, tuple]
) -> CheckResult:
    """Check the records of a COCO annotation dict.

    Args:
        dataset: the annotation file's dict ("images", "annotations").
        known_categories: the category ids the model learns; others are unknown.
        missing_files: the `file_name`s whose image file does not exist.
        sizes: {image id: (width, height)} for images whose record has no size (read from the file's header).

    Returns the problems and the records that remain when the bad images (with their annotations) and the bad
    annotations are left out; of duplicate ids the first record stays.
    """
    problems: list[Problem] = []
    images: list[dict] = []
    image_by_id: dict[object, dict] = {}
    for image in dataset.get("images", []):
        image_id, file_name = image.get("id"), image.get("file_name")
        if image_id in image_by_id:
            problems.append(Problem(DUPLICATE_IMAGE_ID, image_id, file_name,
                                    detail=f"also {image_by_id[image_id].get('file_name')}"))
            continue
        image_by_id[image_id] = image
        if file_name in missing_files:
            problems.append(Problem(MISSING_IMAGE, image_id, file_name))
            continue
        images.append(image)
    kept_ids = {image["id"] for image in images}
    annotations: list[dict] = []
    seen_annotations: set[object] = set()
    for annotation in dataset.get("annotations", []):
        image_id, annotation_id = annotation.get("image_id"), annotation.get("id")
        image = image_by_id.get(image_id)
        file_name = image.get("file_name") if image else None
        problem = _annotation_problem(annotation, image, known_categories, sizes.get(image_id), seen_annotations)
        seen_annotations.add(annotation_id)
        if problem is not None:
            kind, detail = problem
            problems.append(Problem(kind, image_id, file_name, annotation_id, detail))
        elif image_id in kept_ids:
            annotations.append(annotation)
    dropped_images = len(image_by_id) - len(images)
    dropped_annotations = len(dataset.get("annotations", [])) - len(annotations)
    return CheckResult(problems, images, annotations, dropped_images, dropped_annotations)


def _annotation_problem(
    annotation: dict, image: dict | None, known_categories: Collection[int], size: tuple | None, seen: set
) -> tuple[str, str] | None:
    if annotation.get("id") in seen:
        return DUPLICATE_ANNOTATION_ID, ""
    if image is None:
        return UNKNOWN_IMAGE, ""
    category = annotation.get("category_id")
    if category not in known_categories:
        return UNKNOWN_CATEGORY, f"category {category!r} is not one of the training categories"
    box = annotation.get("bbox")
    if (not isinstance(box, list | tuple) or len(box) != 4
            or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in box)):
        return BAD_BOX, f"bbox {box!r} is not 4 finite numbers [x, y, width, height]"
    x, y, width, height = box
    if width <= 0 or height <= 0:
        return EMPTY_BOX, f"bbox {box!r}"
    if size is None and "width" in image and "height" in image:
        size = (image["width"], image["height"])
    if size is not None:
        image_width, image_height = size
        if (x < -EDGE_TOLERANCE_PX or y < -EDGE_TOLERANCE_PX or x + width > image_width + EDGE_TOLERANCE_PX
                or y + height > image_height + EDGE_TOLERANCE_PX):
            return OUTSIDE_BOX, f"bbox {box!r} in an image of {image_width}x{image_height}"
    return None


def missing_files(store: ImageStore, image_folder: str, file_names: Sequence[str]) -> set[str]:
    """The `file_names` under `image_folder` that do not exist in `store` (one listing for a bucket, one
    stat per file on disk)."""
    wanted = set(file_names)
    if hasattr(store, "list_files"):
        return wanted - store.list_files(image_folder)
    return {name for name in wanted if not os.path.isfile(store.describe(f"{image_folder}/{name}"))}


def header_sizes(store: ImageStore, image_folder: str, images: Sequence[dict], missing: Collection[str]) -> dict:
    """{image id: (width, height)} from the headers of the images whose record has no size: local files only
    (a bucket would need one request per image; those boxes are clipped when the image is decoded)."""
    unsized = [image for image in images if ("width" not in image or "height" not in image)
               and image.get("file_name") not in missing]
    if not unsized:
        return {}
    if not isinstance(store, LocalImageStore):
        logger.info("data check: %d image records have no width/height; their boxes are checked when decoded",
                    len(unsized))
        return {}
    sizes = {}
    for image in unsized:
        path = store.describe(f"{image_folder}/{image['file_name']}")
        try:
            with Image.open(path) as opened:  # reads the header only
                sizes[image["id"]] = opened.size
        except OSError as error:
            # Undecodable files are data.on_bad_image's business, when the image is read.
            logger.info("data check: cannot read the header of %s (%s)", path, error)
    return sizes


def check_dataset(
    coco: COCO, store: ImageStore, image_folder: str, known_categories: Collection[int], source: str, mode: str
) -> COCO:
    """`coco` checked against the store and the model's categories.

    Args:
        source: how messages name the split, e.g. 'data/train.json (train)'.
        mode: 'stop' raises DataCheckError listing the problems; 'skip' returns a COCO without the bad images
            and annotations and logs a warning that counts and names them.
    """
    dataset = coco.dataset
    records = dataset.get("images", [])
    missing = missing_files(store, image_folder, [image.get("file_name") for image in records])
    result = find_problems(dataset, set(known_categories), missing, header_sizes(store, image_folder, records, missing))
    if not result.problems:
        return coco
    listing = "\n".join(f"  - {problem.describe()}" for problem in result.problems[:SHOWN_PROBLEMS])
    if len(result.problems) > SHOWN_PROBLEMS:
        listing += f"\n  ... and {len(result.problems) - SHOWN_PROBLEMS} more"
    counts = ", ".join(f"{count} {kind}" for kind, count in _count_kinds(result.problems).items())
    if mode == "stop":
        raise DataCheckError(
            f"data check of {source}: {len(result.problems)} problems ({counts}); images in "
            f"{store.describe(image_folder)}:\n{listing}\nFix the data, or set data.check: skip to leave these "
            "images and annotations out (data.check: off skips the check)"
        )
    logger.warning(
        "data check of %s: left out %d images and %d annotations for %d problems (%s; data.check: skip):\n%s",
        source, result.dropped_images, result.dropped_annotations, len(result.problems), counts, listing,
    )
    checked = COCO()
    checked.dataset = {**dataset, "images": result.images, "annotations": result.annotations}
    with contextlib.redirect_stdout(io.StringIO()):
        checked.createIndex()
    return checked


def _count_kinds(problems: list[Problem]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for problem in problems:
        counts[problem.kind] = counts.get(problem.kind, 0) + 1
    return counts
