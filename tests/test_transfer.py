"""Table 8's transfer data: the five torchvision datasets read from tiny copies in their released layouts, the
world's downstream tasks, and the held-out validation share."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from repro.data.transfer import TORCHVISION_TASKS, heldout_split, open_transfer
from tests.transfer_fixtures import BUILDERS, CLASSES, TEST_PER_CLASS, TRAIN_PER_CLASS


@pytest.mark.parametrize("task", sorted(TORCHVISION_TASKS))
def test_each_dataset_is_read_in_its_released_layout(task, tmp_path):
    BUILDERS[task](tmp_path)
    data = open_transfer({"source": "torchvision", "task": task, "heldout": 0.25, "heldout_seed": 0}, tmp_path)
    train_per_class = TRAIN_PER_CLASS * (2 if task == "dtd" else 1)  # DTD trains on its train + val
    heldout = data.eval_sets[0].images
    test = data.eval_sets[1].images
    assert data.num_classes == len(CLASSES) and [s.name for s in data.eval_sets] == ["heldout", "test"]
    assert len(data.train) + len(heldout) == len(CLASSES) * train_per_class
    assert len(test) == len(CLASSES) * TEST_PER_CLASS
    assert not set(data.train.relpaths) & set(heldout.relpaths)
    for images in (data.train, heldout, test):
        assert all(images.path(i).is_file() for i in range(len(images)))
        assert np.array_equal(np.unique(images.labels), np.arange(len(CLASSES)))
    # labels follow the images: the fixture's pixels brighten with the class
    means = [np.asarray(Image.open(test.path(i))).mean() for i in range(len(test))]
    assert all(np.diff([np.mean([m for m, label in zip(means, test.labels) if label == c])
                        for c in range(len(CLASSES))]) > 30)


def test_a_missing_dataset_is_one_line_naming_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"transfer task fgvc_aircraft: torchvision's FGVCAircraft found no "
                                                f"trainval split under {tmp_path / 'fgvc-aircraft-2013b'}"):
        open_transfer({"source": "torchvision", "task": "fgvc_aircraft", "heldout": 0.2, "heldout_seed": 0},
                      tmp_path)
    with pytest.raises(ValueError, match="unknown transfer task 'cub'"):
        open_transfer({"source": "torchvision", "task": "cub", "heldout": 0.2, "heldout_seed": 0}, tmp_path)


def test_the_heldout_share_is_per_class_seeded_and_disjoint():
    labels = np.repeat(np.arange(4), [10, 5, 2, 1])
    kept, held = heldout_split(labels, 0.2, seed=3)
    assert sorted([*kept, *held]) == list(range(len(labels)))
    assert np.bincount(labels[held], minlength=4).tolist() == [2, 1, 1, 0]  # a class of one is never held out
    assert np.array_equal(held, heldout_split(labels, 0.2, seed=3)[1])
    assert not np.array_equal(held, heldout_split(labels, 0.2, seed=4)[1])


def test_the_worlds_tasks_are_its_downstream_folders(tmp_path):
    for split, count in (("train", 3), ("test", 2)):
        for c, name in enumerate(("flag_a", "flag_b")):
            for k in range(count):
                path = tmp_path / "downstream" / "flags" / split / name / f"{k:05d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 8), (100 * c, 0, 0)).save(path)
    data = open_transfer({"source": "world", "task": "flags", "heldout": 0.34, "heldout_seed": 0}, tmp_path)
    assert data.wnids == ["flag_a", "flag_b"] and len(data.train) == 4 and len(data.eval_sets[0].images) == 2
    assert data.eval_sets[1].images.relpaths[0] == "test/flag_a/00000.jpg" and not data.skip_unreadable
    assert open_transfer({"source": "world", "task": "flags", "heldout": 0.34, "heldout_seed": 0,
                          "skip_unreadable": True}, tmp_path).skip_unreadable
    with pytest.raises(FileNotFoundError, match="transfer task cars: no .*downstream/cars/train; the world's tasks"):
        open_transfer({"source": "world", "task": "cars", "heldout": 0.2, "heldout_seed": 0}, tmp_path)


def test_the_check_names_a_missing_transfer_dataset_before_any_training(imagenet, tmp_path, capsys):
    from repro.cli import main

    BUILDERS["dtd"](tmp_path / "transfer")
    status = main(["check", "table8", "--profile", "paper", "--set", f"data.root={imagenet.root}",
                   "--set", f"transfer.root={tmp_path / 'transfer'}", "--set", 'transfer.tasks=["dtd", "food101"]',
                   "--runs", str(tmp_path / "runs")])
    out, err = capsys.readouterr()
    assert status == 2
    assert "transfer task dtd: 3 classes" in out + err and "problem: transfer task dtd" not in err
    assert f"problem: transfer task food101: torchvision's Food101 found no train split under " \
           f"{tmp_path / 'transfer' / 'food-101'}" in err


def test_every_transfer_option_reaches_the_fine_tunes_spec_and_none_the_students(tmp_path):
    from repro.config import profile_config, with_changes
    from repro.experiment import Context
    from repro.pipeline import student_spec
    from repro.downstream.table8 import finetunes

    def specs(cfg):
        ctx = Context(profile="proxy", config=cfg, seeds=[0], runs_root=tmp_path, results_root=tmp_path)
        return {(task, backbone, lr, wd): student_spec(c).hash for task, backbone, lr, wd, _, c in finetunes(ctx)}

    cfg = profile_config("proxy")
    base = specs(cfg)
    assert len(base) == 5 * 2 * 2 * 2 and len(set(base.values())) == len(base)
    for key, value in (("heldout", 0.3), ("heldout_seed", 1), ("train", {"iterations": 7, "batch_size": 32})):
        changed = specs(with_changes(cfg, {f"transfer.{key}": value}))
        assert not set(changed.values()) & set(base.values()), key
    assert student_spec(with_changes(cfg, {"transfer.heldout": 0.3})) == student_spec(cfg)
    # the students' data.skip_unreadable reaches the fine-tunes' data, named only where set
    skipping = specs(with_changes(cfg, {"data.skip_unreadable": True}))
    assert not set(skipping.values()) & set(base.values())
    with pytest.raises(ValueError, match="data.task 'cars' is not one of transfer.tasks"):
        student_spec(with_changes(cfg, {"data.task": "cars"}))


def test_the_every_task_claim_fails_on_one_failing_task_and_holds_only_when_all_hold():
    from repro import results
    from repro.claims import FAILS, HOLDS, NO_DATA, NOT_SHOWN
    from repro.downstream.table8 import not_worse_on_every_task

    def measured(gains: dict[str, list[float]]):
        rows = [{"model": "resnet50", "setting": setting, "seed": seed, "metric": f"{task}_top1",
                 "value": 50 + (gain if setting == "relabel" else 0)}
                for task, per_seed in gains.items() for seed, gain in enumerate(per_seed)
                for setting in ("vanilla", "relabel")]
        return results.measurements(rows)

    assert not_worse_on_every_task(measured({}))[0] == NO_DATA
    verdict, detail = not_worse_on_every_task(measured({"faces": [1, 2, 1.5], "flags": [3, 2, 4]}))
    assert verdict == HOLDS and detail == ("of 2 tasks: 2 hold, 0 fail, 0 not shown; ReLabel's mean above "
                                           "vanilla's on 2")
    assert not_worse_on_every_task(measured({"faces": [1, 2, 1.5], "flags": [3, -2, 1]}))[0] == NOT_SHOWN
    assert not_worse_on_every_task(measured({"faces": [1, 2, 1.5], "flags": [-3, -2, -4]}))[0] == FAILS


def test_each_scale_reads_only_its_own_tasks_claims():
    from repro import results
    from repro.experiment import discover, verdicts_for

    measured = results.measurements([{"model": "resnet50", "setting": setting, "seed": 0, "metric": "flags_top1",
                                      "value": 50.0} for setting in ("vanilla", "relabel")])
    table8 = discover()["table8"]
    proxy = [v.claim for v in verdicts_for(table8, measured, "proxy")]
    paper = [v.claim for v in verdicts_for(table8, measured, "paper")]
    assert len(proxy) == len(paper) == 6 and proxy[0] == paper[0]  # the every-task claim, then five tasks
    assert "relabel ≥ vanilla on flags" in proxy and not any("food101" in claim for claim in proxy)
    assert "relabel ≥ vanilla on food101" in paper and not any("flags" in claim for claim in paper)


def test_every_fine_tune_starts_from_one_of_table3s_students_of_its_own_seed():
    from repro.config import profile_config
    from repro.experiment import Context, discover
    from repro.specs import Spec

    ctx = Context("proxy", profile_config("proxy"), [0, 1], "unused", "unused")
    table3 = {spec.hash: spec for spec in discover()["table3"].plan(ctx)}
    finetunes = discover()["table8"].plan(ctx)
    starts = [Spec.from_json(spec["train"]["init"]["run"]) for spec in finetunes]
    assert len(finetunes) == 5 * 2 * 4 * 2 == len({spec.hash for spec in finetunes})
    assert {start.hash for start in starts} <= set(table3) and len({start.hash for start in starts}) == 4
    assert all(spec["seed"] == start["seed"] for spec, start in zip(finetunes, starts))
