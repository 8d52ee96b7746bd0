"""How a dataset's category ids become the model's labels (`LabelSpace`), and the model's class count from it
(`fit_num_classes`: `num_classes: auto`, or a clear error when a given count is too small).

Three ways, chosen by the `data:` settings:
- category ids (`labels: category_ids`, COCO 2017's and the authors' checkpoints'): label = category id, so
  the model needs max id + 1 classes (91 for COCO's ids 1..90);
- contiguous (`labels: contiguous`, the default with `num_classes: auto`): labels 0..K-1 for the categories
  sorted by id;
- a category subset (`cat_ids`): labels 0..K-1 in the order of `cat_ids`.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from deformable_detr.config.model import AUTO_NUM_CLASSES
from deformable_detr.config.parsing import HYPERPARAMETERS, key_name

DEFAULT_NUM_CLASSES = 91


@dataclass(frozen=True)
class LabelSpace:
    """The categories a model learns and their labels.

    label_to_cat_id: the category id of each label 0..K-1, or None when labels are the category ids.
    names: {category id: name} of every category the model learns.
    source: where the categories come from (the training annotation file), for messages.
    """

    label_to_cat_id: list[int] | None
    names: dict[int, str]
    source: str

    @classmethod
    def of(
        cls, names: Mapping[int, str], labels: str | None, cat_ids: Sequence[int] | None, source: str
    ) -> "LabelSpace":
        """The label space of the categories `names` ({id: name}): a subset `cat_ids` (labels in its order),
        else `labels` 'contiguous' (sorted ids) or 'category_ids'/None (labels are the ids)."""
        bad = [cat_id for cat_id in names if isinstance(cat_id, bool) or not isinstance(cat_id, int) or cat_id < 1]
        if bad:
            raise ValueError(f"{source}: category ids must be positive integers, got {bad[:10]}")
        if not names:
            raise ValueError(f"{source}: the annotation file lists no categories")
        if cat_ids is not None:
            return cls(list(cat_ids), {cat_id: names[cat_id] for cat_id in cat_ids}, source)
        if labels == "contiguous":
            return cls(sorted(names), dict(sorted(names.items())), source)
        return cls(None, dict(sorted(names.items())), source)

    @property
    def cat_id_to_label(self) -> dict[int, int] | None:
        """The inverse of `label_to_cat_id`; None when labels are the category ids."""
        if self.label_to_cat_id is None:
            return None
        return {cat_id: label for label, cat_id in enumerate(self.label_to_cat_id)}

    def label(self, cat_id: int) -> int:
        return cat_id if self.label_to_cat_id is None else self.cat_id_to_label[cat_id]

    def __contains__(self, cat_id: object) -> bool:
        return cat_id in self.names

    def num_classes(self) -> int:
        """The fewest classifier outputs that hold every label: K, or the largest category id + 1."""
        return len(self.label_to_cat_id) if self.label_to_cat_id is not None else max(self.names) + 1


def fit_num_classes(hparams: Mapping[str, Any], label_space: LabelSpace) -> dict[str, Any]:
    """`hparams` with `num_classes` (its default when absent) an integer that holds every label of `label_space`.

    'auto' becomes `label_space.num_classes()`; an integer is kept when it is large enough (COCO's 91 for
    80 categories with ids up to 90), else ValueError names the first category whose label does not fit.
    """
    num_classes = hparams.get("num_classes", DEFAULT_NUM_CLASSES)
    needed = label_space.num_classes()
    if num_classes == AUTO_NUM_CLASSES:
        return {**hparams, "num_classes": needed}
    if isinstance(num_classes, int) and not isinstance(num_classes, bool) and num_classes < needed:
        for cat_id, name in label_space.names.items():
            label = label_space.label(cat_id)
            if label >= num_classes:
                mode = "labels are the category ids" if label_space.label_to_cat_id is None else "labels 0..K-1"
                raise ValueError(
                    f"{key_name(HYPERPARAMETERS, 'num_classes')} is {num_classes}, but category {cat_id} "
                    f"({name!r}) of {label_space.source} has label {label} ({mode}): the model needs "
                    f"num_classes >= {needed}; set it so, or to 'auto'"
                )
    return {**hparams, "num_classes": num_classes}
