"""ImageNet's localisation files (`LOC_val_solution.csv`, `LOC_train_solution.csv`): one row per image,
"ImageId,PredictionString" with PredictionString "wnid x1 y1 x2 y2 wnid x1 y1 x2 y2 ..." in pixels of the
original image. They give the boxes of Figures 2 and 5 and the labels of a flat val folder."""
from __future__ import annotations

import csv
import os

BOX_FIELDS = 5  # wnid x1 y1 x2 y2


def read_loc_solution(path: str | os.PathLike) -> dict[str, list[tuple[str, list[float]]]]:
    """ImageId -> [(wnid, [x1, y1, x2, y2]), ...] from a LOC_*_solution.csv."""
    boxes = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"ImageId", "PredictionString"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected the columns ImageId,PredictionString, got {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            if row["PredictionString"] is None:
                raise ValueError(f"{path}:{line}: no PredictionString after ImageId {row['ImageId']!r}")
            tokens = row["PredictionString"].split()
            if not tokens or len(tokens) % BOX_FIELDS:
                raise ValueError(f"{path}:{line}: PredictionString has {len(tokens)} fields, not groups of "
                                 f"{BOX_FIELDS} (wnid x1 y1 x2 y2)")
            try:
                boxes[row["ImageId"]] = [(tokens[i], [float(v) for v in tokens[i + 1:i + BOX_FIELDS]])
                                         for i in range(0, len(tokens), BOX_FIELDS)]
            except ValueError:
                raise ValueError(f"{path}:{line}: a box coordinate is not a number: {row['PredictionString']!r}"
                                 ) from None
    return boxes
