"""labelmap.transpose (the student reads its maps with H and W swapped) and `check-labelmaps` (which way round
stored maps are, measured against the training images' boxes)."""
import copy
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from repro import cli
from repro.config import profile_config, with_changes
from repro.data.folders import image_folder, read_classes
from repro.labelmaps.convert import official_to_packed
from repro.labelmaps.maps import TransposedLabelMaps
from repro.labelmaps.official import OFFICIAL_SETTINGS, save_official
from repro.labelmaps.packed import write_packed
from repro.labelmaps.reader import open_labelmaps
from repro.pipeline import labelmaps_ref, official_ref, stored_labelmaps_ref, student_spec
from repro.pooling import pool_labels
from repro.runs import Resources
from repro.steps import open_student_labelmaps
from repro.train.objectives import agreeing_indices

WNIDS = ["n90000000", "n90000001", "n90000002"]
SIZES = [(64, 40), (40, 64), (72, 48), (48, 30)]  # (width, height), never square
PER_CLASS = 5
GRID = 15
TOPK = 5
NUM_CLASSES = 8


def write_official_maps(directory, relpaths, values, ids):
    for relpath, v, i in zip(relpaths, values, ids):
        wnid, name = relpath.split("/")[1:]
        save_official(directory / wnid / f"{name.rsplit('.', 1)[0]}.pt", v, i)
    return directory


# ---- labelmap.transpose ----

def relabel_config(**changes):
    return with_changes(profile_config("smoke"), {"supervision.mode": "relabel", **changes})


@pytest.mark.parametrize("extra", [False, True])
def test_transpose_wraps_the_released_maps_only_and_false_leaves_a_students_spec_as_before(extra, tmp_path):
    cfg = relabel_config(**{"extra_data.enabled": extra})
    as_stored = student_spec(cfg)
    # the code path before the key existed: a config without it builds the very same spec
    without_key = copy.deepcopy(cfg)
    del without_key["labelmap"]["transpose"]
    assert as_stored == student_spec(without_key)
    assert "transposed" not in json.dumps(as_stored.body)
    assert as_stored["labelmaps"] == stored_labelmaps_ref(cfg)
    # the maps the suite generates are [k, H, W]: nothing to turn
    with pytest.raises(ValueError, match="labelmap.transpose = true turns the released maps of "
                                         "labelmap.official_dir, which is not set"):
        student_spec(with_changes(cfg, {"labelmap.transpose": True}))

    relpaths = [f"train/{WNIDS[0]}/{WNIDS[0]}_{i}.JPEG" for i in range(3)]
    official = write_official_maps(tmp_path / "official", relpaths, *random_maps(3, GRID, GRID))
    released = with_changes(cfg, {"labelmap.official_dir": str(official)})
    transposed = student_spec(with_changes(released, {"labelmap.transpose": True}))
    assert transposed["labelmaps"] == {"transposed": student_spec(released)["labelmaps"]}
    if extra:  # the pool's maps are generated, [k, H, W], and read as stored (a real paper-scale Table 5 case)
        assert transposed["extra_data"]["labelmaps"] == as_stored["extra_data"]["labelmaps"]
        assert "transposed" not in json.dumps(transposed["extra_data"])
    # the stored maps a transposing student needs are the same runs: nothing is generated twice
    assert transposed.dependencies() == student_spec(released).dependencies()


def random_maps(count, height, width, seed=0):
    gen = torch.Generator().manual_seed(seed)
    values = (torch.randn(count, TOPK, height, width, generator=gen) * 3).sort(dim=1, descending=True).values
    ids = torch.rand(count, NUM_CLASSES, height, width, generator=gen).argsort(dim=1)[:, :TOPK]
    return values, ids


def test_pooling_transposed_maps_over_a_box_equals_pooling_the_maps_over_the_box_with_x_and_y_swapped(tmp_path):
    values, ids = random_maps(6, 5, 7)  # H != W
    relpaths = [f"train/{WNIDS[0]}/{WNIDS[0]}_{i}.JPEG" for i in range(6)]
    maps = TransposedLabelMaps(open_labelmaps(write_packed(tmp_path / "packed", relpaths, values, ids,
                                                           num_classes=NUM_CLASSES)))
    gen = torch.Generator().manual_seed(1)
    corner = torch.rand(6, 2, generator=gen) * 0.5
    boxes = torch.cat([corner, corner + 0.2 + torch.rand(6, 2, generator=gen) * 0.3], dim=1)  # x1, y1, x2, y2
    swapped = boxes[:, [1, 0, 3, 2]]
    read_values, read_ids = maps.read(np.arange(6))
    assert maps.grid == (7, 5) and read_values.shape == (6, TOPK, 7, 5)
    assert torch.allclose(pool_labels(read_values, read_ids, boxes, NUM_CLASSES),
                          pool_labels(values, ids, swapped, NUM_CLASSES), atol=1e-6)
    # and not the same as pooling the stored maps over the box itself
    assert not torch.allclose(pool_labels(read_values, read_ids, boxes, NUM_CLASSES),
                              pool_labels(values, ids, boxes, NUM_CLASSES), atol=1e-3)


def test_a_student_under_transpose_reads_every_map_transposed_and_label_cleaning_keeps_the_same_images(
        tmp_path):
    root = tmp_path / "images"
    relpaths = [f"train/{wnid}/{wnid}_{i}.JPEG" for wnid in WNIDS[:2] for i in range(3)]
    for relpath in relpaths:
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", SIZES[0]).save(root / relpath)
    # positive values, ids constant over the map: an image's top class is its slot 0, its label on images 0, 2, 4
    values = random_maps(len(relpaths), 5, 7)[0].abs().sort(dim=1, descending=True).values + 1
    labels = [index // 3 for index in range(len(relpaths))]
    ids = torch.stack([((label + index % 2 + torch.arange(TOPK)) % NUM_CLASSES)[:, None, None].expand(TOPK, 5, 7)
                       for index, label in enumerate(labels)])
    official = write_official_maps(tmp_path / "official", relpaths, values, ids)
    # maps made by the suite record their class count; the data hold every class the ids name
    (official / OFFICIAL_SETTINGS).write_text(json.dumps({"num_classes": NUM_CLASSES}))
    for wnid in (f"n9{i:07d}" for i in range(NUM_CLASSES)):
        (root / "train" / wnid).mkdir(parents=True, exist_ok=True)
    cfg = relabel_config(**{"data.source": "imagenet", "data.root": str(root),
                            "labelmap.official_dir": str(official), "labelmap.transpose": True})
    ref = labelmaps_ref(cfg)
    assert ref == {"transposed": official_ref(official)}
    resources = Resources(tmp_path / "runs")
    maps = open_student_labelmaps(ref, resources, NUM_CLASSES)
    stored = open_student_labelmaps(ref["transposed"], resources, NUM_CLASSES)
    rows = np.arange(stored.num_images)
    assert torch.equal(maps.read(rows)[0], stored.read(rows)[0].transpose(2, 3))
    assert torch.equal(maps.read(rows)[1], stored.read(rows)[1].transpose(2, 3))
    # workers receive the maps pickled
    assert torch.equal(pickle.loads(pickle.dumps(maps)).read(rows)[0], maps.read(rows)[0])
    images = image_folder(root, "train", read_classes(root)[0])
    assert agreeing_indices(maps, images, NUM_CLASSES).tolist() == [0, 2, 4]
    assert agreeing_indices(stored, images, NUM_CLASSES).tolist() == [0, 2, 4]


# ---- check-labelmaps ----

def image_box(width, height):
    """One box off the diagonal, its mirror image about the diagonal disjoint from it: left and low."""
    return [0.05 * width, 0.55 * height, 0.4 * width, 0.95 * height]


def grid_mask(box, width, height):
    centres = (np.arange(GRID) + 0.5) / GRID
    in_x = (box[0] <= centres * width) & (centres * width <= box[2])
    in_y = (box[1] <= centres * height) & (centres * height <= box[3])
    return torch.from_numpy(in_y[:, None] & in_x[None, :])


def object_maps(label, mask, gen, signal=True):
    """values, ids [k, GRID, GRID] in the image's [H, W] grid: the labelled class high inside the box."""
    others = [c for c in range(NUM_CLASSES) if c != label][:TOPK - 1]
    ids = torch.tensor([label, *others])[:, None, None].expand(TOPK, GRID, GRID).clone()
    noise = torch.randn(TOPK, GRID, GRID, generator=gen)
    own = torch.where(mask, 4.0, -2.0) if signal else torch.zeros(GRID, GRID)
    values = torch.cat([(own + noise[0])[None], noise[1:]])
    values, order = values.sort(dim=0, descending=True)
    return values, ids.gather(0, order)


@pytest.fixture(scope="module")
def orientation_data(tmp_path_factory):
    """train/<wnid>/<wnid>_<i>.JPEG (15 images of 4 non-square sizes), LOC_train_solution.csv with one box of each
    image's class (plus rows the command must pass over), and maps official and packed: with the object where the
    image has it ("stored"), transposed ("transposed") and without spatial signal ("flat")."""
    base = tmp_path_factory.mktemp("orientation")
    root = base / "images"
    gen = torch.Generator().manual_seed(0)
    rows = ["ImageId,PredictionString"]
    relpaths, maps = [], {"stored": [], "transposed": [], "flat": []}
    for label, wnid in enumerate(WNIDS):
        (root / "train" / wnid).mkdir(parents=True)
        for i in range(PER_CLASS):
            width, height = SIZES[(label * PER_CLASS + i) % len(SIZES)]
            relpath = f"train/{wnid}/{wnid}_{i}.JPEG"
            Image.new("RGB", (width, height), (40 * label, 90, 160)).save(root / relpath)
            box = image_box(width, height)
            other = WNIDS[(label + 1) % len(WNIDS)]  # a box of another class, on the mirrored side: ignored
            rows.append(f"{wnid}_{i},{wnid} {' '.join(f'{v:.0f}' for v in box)} "
                        f"{other} {0.6 * width:.0f} {0.05 * height:.0f} {0.95 * width:.0f} {0.45 * height:.0f}")
            relpaths.append(relpath)
            values, ids = object_maps(label, grid_mask(box, width, height), gen)
            maps["stored"].append((values, ids))
            maps["transposed"].append((values.transpose(1, 2), ids.transpose(1, 2)))
            maps["flat"].append(object_maps(label, grid_mask(box, width, height), gen, signal=False))
    rows.append("n90000009_0,n90000009 1 2 3 4")  # an image without a map
    boxes = base / "LOC_train_solution.csv"
    boxes.write_text("\n".join(rows) + "\n")
    stores = {}
    for name, pairs in maps.items():
        values, ids = torch.stack([v for v, _ in pairs]), torch.stack([i for _, i in pairs])
        official = write_official_maps(base / name / "official", relpaths, values, ids)
        stores[name] = {"official": official, "packed": official_to_packed(official, base / name / "packed",
                                                                           num_classes=NUM_CLASSES)}
    return {"root": root, "boxes": boxes, **stores}


def check(capsys, maps, boxes, images, *more):
    code = cli.main(["check-labelmaps", "--maps", str(maps), "--boxes", str(boxes), "--images", str(images),
                     *more])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("fmt", ["official", "packed"])
@pytest.mark.parametrize("orientation,verdict", [
    ("stored", "verdict: maps are [k, H, W]: keep labelmap.transpose=false"),
    ("transposed", "verdict: maps are [k, W, H]: set labelmap.transpose=true"),
    ("flat", "verdict: undecided")])
def test_check_labelmaps_tells_the_orientation_of_maps_from_the_boxes(orientation_data, capsys, fmt, orientation,
                                                                      verdict):
    code, out, err = check(capsys, orientation_data[orientation][fmt], orientation_data["boxes"],
                           orientation_data["root"])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[-1] == verdict
    assert lines[0].startswith(f"images: {len(WNIDS) * PER_CLASS} of {len(WNIDS) * PER_CLASS} ")
    stored_line, transposed_line = lines[1], lines[2]
    assert stored_line.startswith("[k, H, W] (as stored): inside ")
    assert transposed_line.startswith("[k, W, H] (transposed): inside ")
    contrast = [float(line.rsplit("contrast ", 1)[1]) for line in (stored_line, transposed_line)]
    if orientation == "stored":
        assert contrast[0] > 0.5 > contrast[1]
        assert "beats [k, W, H] on 100.0% of 15 images" in out
    elif orientation == "transposed":
        assert contrast[1] > 0.5 > contrast[0]
        assert "beats [k, W, H] on 0.0% of 15 images" in out
    else:
        assert abs(contrast[0]) < 0.1 and abs(contrast[1]) < 0.1


def test_check_labelmaps_limit_takes_the_first_images_and_too_few_are_undecided(orientation_data, capsys):
    code, out, err = check(capsys, orientation_data["stored"]["packed"], orientation_data["boxes"],
                           orientation_data["root"], "--limit", "3")
    assert code == 0, err
    assert out.splitlines()[0].startswith(f"images: 3 of {len(WNIDS) * PER_CLASS} ")
    assert "beats [k, W, H] on 100.0% of 3 images" in out  # p = 0.25: not significant
    assert out.splitlines()[-1] == "verdict: undecided"


def test_check_labelmaps_errors_name_the_bad_input(orientation_data, capsys, tmp_path):
    maps, boxes, root = orientation_data["stored"]["official"], orientation_data["boxes"], orientation_data["root"]

    def fails(expected, maps=maps, boxes=boxes, images=root, more=()):
        code, out, err = check(capsys, maps, boxes, images, *more)
        assert code == 2 and out == ""
        assert err.startswith("error: ") and len(err.splitlines()) == 1 and expected in err, err

    fails(f"no boxes file {tmp_path / 'missing.csv'}", boxes=tmp_path / "missing.csv")
    fails(f"no label-map directory {tmp_path / 'nomaps'}", maps=tmp_path / "nomaps")
    fails(f"no image folder {tmp_path / 'train'}", images=tmp_path)
    elsewhere = tmp_path / "elsewhere.csv"
    elsewhere.write_text("ImageId,PredictionString\nn01440764_1,n01440764 1 2 30 40\n")
    fails(f"has boxes of its class in {elsewhere}", boxes=elsewhere)
    malformed = tmp_path / "malformed.csv"
    malformed.write_text("ImageId,PredictionString\nn90000000_0,n90000000 1 2 30\n")
    fails(f"{malformed}:2: PredictionString has 4 fields", boxes=malformed)
    not_a_number = tmp_path / "nan.csv"
    not_a_number.write_text("ImageId,PredictionString\nn90000000_0,n90000000 1 2 x 40\n")
    fails(f"{not_a_number}:2: a box coordinate is not a number", boxes=not_a_number)
    header = tmp_path / "header.csv"
    header.write_text("image,boxes\nn90000000_0,n90000000 1 2 30 40\n")
    fails(f"{header}: expected the columns ImageId,PredictionString", boxes=header)
    fails("--limit must be at least 1, got 0", more=("--limit", "0"))
