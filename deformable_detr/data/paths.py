"""The COCO 2017 layout, named once: `<root>/<image_set>2017/` images and
`<root>/annotations/instances_<image_set>2017.json` annotations."""

import os

IMAGE_SETS = ("train", "val")
ANNOTATIONS_FOLDER = "annotations"


def image_folder(image_set: str) -> str:
    """The images' folder of `image_set` relative to the dataset root, e.g. 'val2017'."""
    return f"{image_set}2017"


def annotation_file_name(image_set: str) -> str:
    """e.g. 'instances_val2017.json'."""
    return f"instances_{image_set}2017.json"


def annotation_file(root: str, image_set: str) -> str:
    """The annotation file of `image_set` in the official layout under `root`."""
    return os.path.join(root, ANNOTATIONS_FOLDER, annotation_file_name(image_set))
