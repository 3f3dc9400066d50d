"""Reliability (docs/reliability.md): every bad input is one line naming the file or key, with exit status 2 and no
run marked finished; kills of real processes (mid-epoch, during a checkpoint write, during relabel, during result
writing) lose nothing, and the rerun ends with what an uninterrupted run computes."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from repro.cli import main
from repro.preemption import PREEMPTED_STATUS
from repro.specs import _tree_digest
from tests.fixtures import without_timing
from tests.paperscale import ANNOTATOR, SCALED_DOWN, build_paper_scale

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    return build_paper_scale(tmp_path_factory.mktemp("imagenet"))


def table3_args(root: Path, *changes: str, command: str = "table3") -> list[str]:
    """Table 3 at the paper profile on a copy of the fake ImageNet, scaled down to seconds, on the released maps."""
    sets = [f"data.root={root}", f"labelmap.official_dir={root / 'relabel_maps'}", *SCALED_DOWN, *changes]
    return [command, "--profile", "paper", "--runs", str(root / "runs"), "--results", str(root / "results"),
            *[arg for change in sets for arg in ("--set", change)]]


def copy_of(paper, tmp_path) -> Path:
    root = tmp_path / "imagenet"
    shutil.copytree(paper.root, root)
    return root


# --- bad inputs, one line each --------------------------------------------------------------------------------------

def first_map(root):
    return sorted((root / "relabel_maps").glob("*/*.pt"))[0]


def edit_first_map(edit):
    def damage(root):
        tensor = torch.load(first_map(root), weights_only=True)
        torch.save(edit(tensor), first_map(root))
    return damage


def nan_value(tensor):
    tensor[0, 0, 0, 0] = float("nan")
    return tensor


def id_5000(tensor):  # maps of another class count (ImageNet-21k's ids)
    tensor[1, 2, 0, 0] = 5000.0
    return tensor


def a_training_image(root):
    return sorted((root / "train").glob("*/*.JPEG"))[5]


def truncate_image(root):
    a_training_image(root).write_bytes(a_training_image(root).read_bytes()[:200])


def empty_image(root):
    a_training_image(root).write_bytes(b"")


def text_as_image(root):
    a_training_image(root).write_text("not an image")


def v2_folder_1000(root):
    folder = root / "v2" / "imagenetv2-top-images-format-val" / "1000"
    folder.mkdir()
    shutil.copy(a_training_image(root), folder / "0.jpeg")


def short_real(root):
    (root / "real.json").write_text(json.dumps([[0]] * 5))


def no_map_for_an_image(root):
    first_map(root).unlink()


FIRST_MAP = "relabel_maps/n01443537/n01443537_0.pt"
IMAGE = "train/n01443537/n01443537_5.JPEG"


@pytest.mark.parametrize("damage, changes, expected", [
    (edit_first_map(nan_value), [], f"error: label map of .*{FIRST_MAP} has non-finite values"),
    (edit_first_map(id_5000), [], f"error: label map of .*{FIRST_MAP} has class id 5000 outside 0..999"),
    (edit_first_map(lambda t: t[:, :3]), [],  # the first file damaged: it is named, not a good one
     rf"error: label map .*{FIRST_MAP} is \(3, 4, 4\), expected \(5, 4, 4\) \(like 8 of 9 files sampled\)"),
    (truncate_image, [], f"error: cannot read training image .*{IMAGE}: .*data.skip_unreadable=true"),
    (empty_image, [], f"error: cannot read training image .*{IMAGE}: cannot identify image file"),
    (text_as_image, [], f"error: cannot read training image .*{IMAGE}"),
    (v2_folder_1000, [], "problem: imagenetv2_top_images: .*/1000: class folder 1000 is outside ImageNet-1k's"),
    (short_real, [], r"problem: real: val/ILSVRC2012_val_\d+.JPEG has no entry in .*real.json \(5 entries\)"),
    (no_map_for_an_image, [], "problem: label maps: 1 of 48 training images have no map in .*relabel_maps, "
                              "e.g. train/n01443537/n01443537_0.JPEG"),
    (None, ["data.root=/nowhere"], "error: /nowhere has neither LOC_synset_mapping.txt nor a train/.*: set data.root"),
    (None, ["labelmap.official_dir=/no/maps"], "error: labelmap.official_dir /no/maps is not a folder"),
    (None, ["train.epochs=0"], "error: --set train.epochs=0: must be at least 1"),
], ids=["nan-map", "id-out-of-range", "first-map-damaged", "truncated-image", "empty-image", "text-image",
        "v2-folder-1000", "real-shorter-than-val", "image-without-map", "missing-data-root", "missing-map-dir",
        "epochs-0"])
def test_a_bad_input_is_one_line_status_2_and_no_run_marked_finished(paper, tmp_path, capsys, damage, changes,
                                                                      expected):
    root = copy_of(paper, tmp_path)
    if damage is not None:
        damage(root)
    status = main(table3_args(root, *changes))
    errors = [line for line in capsys.readouterr().err.splitlines()
              if line.startswith(("error:", "problem:", "Traceback"))]
    assert status == 2 and len(errors) == 1, errors
    assert re.search(expected, errors[0]), errors[0]
    unfinished = [run for run in (root / "runs").glob("*/*") if not (run / "metrics.json").exists()]
    started = (root / "runs").exists()
    assert not started or unfinished  # the run that met the bad input is left unfinished (or nothing started)
    assert not (root / "results" / "paper" / "table3.csv").exists()


def test_a_real_file_longer_than_val_is_a_warning(paper, tmp_path, capsys):
    root = copy_of(paper, tmp_path)
    val = sorted((root / "val").iterdir())
    solution = ["ImageId,PredictionString"]
    labels = {line.split(",")[0]: line.split(",")[1] for line in
              (root / "LOC_val_solution.csv").read_text().splitlines()[1:]}
    for number, path in enumerate(val, start=1):  # the val images renumbered 1..18: a whole val set
        name = f"ILSVRC2012_val_{number:08d}"
        path.rename(root / "val" / f"{name}.JPEG")
        solution.append(f"{name},{labels[path.stem]}")
    (root / "LOC_val_solution.csv").write_text("\n".join(solution) + "\n")
    wnids = sorted(p.name for p in (root / "train").iterdir())
    real = [[wnids.index(line.split(",")[1].split()[0])] for line in solution[1:]] + [[0]] * 3
    (root / "real.json").write_text(json.dumps(real))
    assert main(table3_args(root, command="check")) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "real.json has 21 entries for the 18 val images" in err


def test_a_nan_map_repaired_in_place_gives_a_new_run(paper, tmp_path, capsys):
    root = copy_of(paper, tmp_path)
    good = torch.load(first_map(root), weights_only=True)
    edit_first_map(nan_value)(root)
    assert main(table3_args(root)) == 2
    failed = {run.name for run in (root / "runs" / "labelmaps").iterdir()}
    torch.save(good, first_map(root))  # repaired in place
    _tree_digest.cache_clear()  # as a new process (a rerun) starts: the folder's digest is taken once per process
    assert main(table3_args(root)) == 0
    derived = {run.name for run in (root / "runs" / "labelmaps").iterdir() if (run / "metrics.json").exists()}
    assert derived and not derived & failed  # the repaired maps are a new run; the failed one is never reused


def test_skip_unreadable_trains_without_the_file_and_counts_it(paper, tmp_path, capsys):
    root = copy_of(paper, tmp_path)
    truncate_image(root)
    assert main(table3_args(root, "data.skip_unreadable=true")) == 0
    metrics = [json.loads(path.read_text()) for path in (root / "runs" / "train").glob("*/metrics.json")]
    assert len(metrics) == 4 and all(m["skipped_images"] == 1 for m in metrics)
    assert all(m["skipped_files"] == [IMAGE] for m in metrics)


def test_skip_unreadable_reaches_the_annotators_pass(paper, tmp_path):
    """Maps generated here (no released maps): the pass gives the file a blank map, listed in its store, where it
    stopped before although the students were told to skip it."""
    root = copy_of(paper, tmp_path)
    truncate_image(root)
    generated = ["labelmap.official_dir=null", f"annotator.checkpoint={paper.annotator}",
                 "annotator.model=" + json.dumps(ANNOTATOR), "annotator.pretrained=false",
                 "annotator.class_map=imagenet-1k", "labelmap.input_size=64", "labelmap.output_stride=16"]
    assert main(table3_args(root, "data.skip_unreadable=true", *generated)) == 0
    passes = [json.loads((run / "metrics.json").read_text()) for run in (root / "runs" / "labelmaps").iterdir()
              if "annotator" in json.loads((run / "spec.json").read_text())["spec"]]
    assert len(passes) == 1 and passes[0]["skipped_images"] == 1
    skipped = {json.loads((run / "spec.json").read_text())["spec"]["objective"]["mode"]:
               json.loads((run / "metrics.json").read_text())["skipped_files"]
               for run in (root / "runs" / "train").iterdir()}
    # label cleaning keeps the images whose map agrees with their label: never a blank map's
    assert skipped == {"original": [IMAGE], "label_smoothing": [IMAGE], "label_cleaning": [], "relabel": [IMAGE]}


def test_figure_a3_on_released_maps_leaves_out_an_unreadable_image_only_when_told(paper, tmp_path, capsys):
    """A released map exists for every image, a damaged copy's included: the crops analysed are those a student
    reads, so the analysis stops on the file as the students do, or leaves it out under data.skip_unreadable; the
    image is truncated, so that reading its header alone would miss it."""
    root = copy_of(paper, tmp_path)
    image = a_training_image(root)
    image.write_bytes(image.read_bytes()[:-100])  # its header reads: only decoding it whole, as students do, fails
    assert main(table3_args(root, command="figureA3")) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"error: cannot read training image {a_training_image(root)}") and \
        "data.skip_unreadable=true" in error
    assert main(table3_args(root, "data.skip_unreadable=true", command="figureA3")) == 0
    measured = pd.read_csv(root / "results" / "paper" / "figureA3_seeds.csv").query("metric == 'crops_measured'")
    assert measured["value"].tolist() == [len(list((root / "train").glob("*/*.JPEG"))) - 1]


class Booby:
    """A pickle that would create a file when loaded with full unpickling."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_booby_trapped_label_map_is_refused_without_running_its_code(paper, tmp_path):
    from repro.labelmaps import LabelMapError, open_labelmaps

    root = copy_of(paper, tmp_path)
    marker = tmp_path / "ran"
    torch.save(Booby(marker), sorted((root / "relabel_maps").glob("*/*.pt"))[3])
    maps = open_labelmaps(root / "relabel_maps")
    with pytest.raises(LabelMapError, match="cannot read label map .*n01443537_3.pt"):
        maps.read([3])
    assert not marker.exists()


# --- kills of real processes ----------------------------------------------------------------------------------------

# The suite's CLI in a child process, with a hook that announces (and waits at) a point of the work, or kills
# itself there, so a test can signal it at a known place: HOOK names the place, AT the occurrence.
DRIVER = textwrap.dedent("""
    import os, signal, sys, time
    hook, at = os.environ.get("HOOK"), int(os.environ.get("AT", "0"))
    seen = {"n": 0}

    def reached():
        seen["n"] += 1
        return seen["n"] == at

    if hook == "pause_at_update":
        from timm.scheduler.scheduler import Scheduler
        step = Scheduler.step_update

        def step_update(self, num_updates, metric=None):  # on the class: a scheduler's state stays picklable
            step(self, num_updates, metric)
            if reached():
                print("REACHED", flush=True)
                time.sleep(60)
        Scheduler.step_update = step_update
    elif hook == "kill_in_checkpoint_write":
        import repro.train.trainer as trainer
        from repro.atomic import write_stream_atomic

        def save_checkpoint(path, state):
            if reached():
                def half_then_kill(file):
                    file.write(b"PK" * 1000)
                    file.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
                write_stream_atomic(path, half_then_kill)
            write_stream_atomic(path, lambda file: __import__("torch").save(state, file))
        trainer.save_checkpoint = save_checkpoint
    elif hook == "kill_after_progress":
        import repro.labelmaps.generate as generate
        commit = generate.commit_progress
        generate.PROGRESS_IMAGES = 8

        def commit_progress(partial, settings, done, **seconds):
            commit(partial, settings, done, **seconds)
            if done and reached():
                os.kill(os.getpid(), signal.SIGKILL)
        generate.commit_progress = commit_progress
    elif hook == "kill_in_plot":
        import repro.results as results
        plot = results.bar_plot

        def bar_plot(*args, **kwargs):
            plot(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        results.bar_plot = bar_plot
    elif hook == "kill_between_renames":
        import repro.results as results
        replace = os.replace

        def replace_then_kill(source, target):
            replace(source, target)
            if results.STAGING in str(source) and reached():  # the moves of result files only
                os.kill(os.getpid(), signal.SIGKILL)
        results.os.replace = replace_then_kill
    from repro.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def child(args, hook=None, at=0, **popen):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOOK": hook or "", "AT": str(at)}
    return subprocess.Popen([sys.executable, "-c", DRIVER, *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def finish(process, timeout=600) -> tuple[int, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out + err


def wait_until_reached(process) -> None:
    for line in process.stdout:
        if line.strip() == "REACHED":
            return
    raise AssertionError(f"the child ended before its hook: {process.wait()} {process.stderr.read()[-2000:]}")


def trained_runs(runs: Path) -> dict[str, Path]:
    """The training runs by their objective (their hashes hold the data's path, which differs between copies)."""
    return {json.dumps(json.loads((run / "spec.json").read_text())["spec"]["objective"], sort_keys=True): run
            for run in sorted(runs.glob("train/*"))}


@pytest.fixture(scope="module")
def uninterrupted(paper, tmp_path_factory):
    """Table 3 (two epochs, so that update 8 is mid-epoch 2) computed without interruption."""
    root = tmp_path_factory.mktemp("straight") / "imagenet"
    shutil.copytree(paper.root, root)
    status, output = finish(child(table3_args(root, "train.epochs=2")))
    assert status == 0, output[-3000:]
    return root


def assert_same_as_uninterrupted(root: Path, straight: Path) -> None:
    expected, got = trained_runs(straight / "runs"), trained_runs(root / "runs")
    assert expected.keys() == got.keys() and len(got) == 4
    for objective, run in expected.items():
        weights = [torch.load(r / "model.pt", weights_only=True)["state_dict"] for r in (run, got[objective])]
        for name, tensor in weights[0].items():
            assert torch.equal(tensor, weights[1][name]), (objective, name)
        metrics = [json.loads((r / "metrics.json").read_text()) for r in (run, got[objective])]
        assert without_timing(metrics[0]) == without_timing(metrics[1]), objective
    assert (root / "results" / "paper" / "table3_seeds.csv").read_text() == \
        (straight / "results" / "paper" / "table3_seeds.csv").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["SIGTERM", "SIGUSR1", "SIGUSR2"])
def test_a_stop_signal_mid_epoch_checkpoints_exits_75_and_resumes_bit_for_bit(paper, tmp_path, uninterrupted, stop):
    root = copy_of(paper, tmp_path)
    process = child(table3_args(root, "train.epochs=2"), hook="pause_at_update", at=8)
    wait_until_reached(process)  # in epoch 2 of the first run, after its 8th update
    process.send_signal(getattr(signal, stop))
    status, output = finish(process)
    assert status == PREEMPTED_STATUS and "stopped: checkpoint written in epoch 2 after step 2" in output, output
    state = torch.load(next((root / "runs" / "train").glob("*/checkpoint.pt")), weights_only=True)["state"]
    assert (state["epoch"], state["updates"], state["position"]["micro"]) == (1, 8, 2)
    status, output = finish(child(table3_args(root, "train.epochs=2")))
    assert status == 0 and "resuming in epoch 2 after step 2" in output, output[-3000:]
    assert_same_as_uninterrupted(root, uninterrupted)


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["SIGTERM", "SIGUSR1", "SIGUSR2"])
def test_a_stop_signal_to_every_process_of_the_job_leaves_the_stop_to_the_trainer(paper, tmp_path, uninterrupted,
                                                                                   stop):
    """A cluster signals every process of a job (Slurm's time limit, scancel, pre-emption), the loader workers
    too: they must not die of it before the trainer has written its checkpoint."""
    root = copy_of(paper, tmp_path)
    with_workers = table3_args(root, "train.epochs=2", "resources.workers=2")
    process = child(with_workers, hook="pause_at_update", at=8, start_new_session=True)
    wait_until_reached(process)
    os.killpg(process.pid, getattr(signal, stop))  # the child's session: the trainer and its workers
    status, output = finish(process)
    assert status == PREEMPTED_STATUS and "stopped: checkpoint written in epoch 2 after step 2" in output, output
    status, output = finish(child(with_workers))
    assert status == 0 and "resuming in epoch 2 after step 2" in output, output[-3000:]
    assert_same_as_uninterrupted(root, uninterrupted)


@pytest.mark.slow
def test_sigkill_mid_epoch_loses_only_the_steps_since_the_last_periodic_checkpoint(paper, tmp_path, uninterrupted):
    root = copy_of(paper, tmp_path)
    every_update = "resources.checkpoint_minutes=1e-9"
    process = child(table3_args(root, "train.epochs=2", every_update), hook="pause_at_update", at=9)
    wait_until_reached(process)
    process.kill()
    assert finish(process)[0] == -signal.SIGKILL
    state = torch.load(next((root / "runs" / "train").glob("*/checkpoint.pt")), weights_only=True)["state"]
    assert state["updates"] == 8 and state["position"]["micro"] == 2  # update 9's checkpoint was not reached
    status, output = finish(child(table3_args(root, "train.epochs=2", every_update)))
    assert status == 0, output[-3000:]
    assert_same_as_uninterrupted(root, uninterrupted)


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_keeps_the_previous_checkpoint(paper, tmp_path, uninterrupted):
    root = copy_of(paper, tmp_path)
    status, _ = finish(child(table3_args(root, "train.epochs=2"), hook="kill_in_checkpoint_write", at=2))
    assert status == -signal.SIGKILL
    checkpoint = next((root / "runs" / "train").glob("*/checkpoint.pt"))
    assert torch.load(checkpoint, weights_only=True)["state"]["epoch"] == 1  # epoch 1's, whole
    assert list(checkpoint.parent.glob(".checkpoint.pt.*.tmp"))  # the half-written file, never read
    status, output = finish(child(table3_args(root, "train.epochs=2")))
    assert status == 0 and "resuming after epoch 1" in output, output[-3000:]
    assert not list(checkpoint.parent.glob(".checkpoint.pt.*.tmp"))  # removed by the rerun
    assert_same_as_uninterrupted(root, uninterrupted)


@pytest.mark.slow
def test_sigkill_during_relabel_resumes_to_the_same_store(paper, tmp_path):
    import timm

    annotator = tmp_path / "test_resnet.pth"  # a bare timm state dict with ImageNet-1k's head
    torch.save(timm.create_model("test_resnet").state_dict(), annotator)
    args = ["relabel", "--annotator", str(annotator), "--arch", "test_resnet", "--class-map", "imagenet-1k",
            "--data", str(paper.root), "--input-size", "64", "--batch-size", "4", "--device", "cpu"]
    status, output = finish(child([*args, "--out", str(tmp_path / "straight")]))
    assert status == 0, output[-3000:]
    status, _ = finish(child([*args, "--out", str(tmp_path / "killed")], hook="kill_after_progress", at=2))
    assert status == -signal.SIGKILL and not (tmp_path / "killed").exists()
    assert json.loads((tmp_path / "killed.partial" / "progress.json").read_text())["done"] == 16
    status, output = finish(child([*args, "--out", str(tmp_path / "killed")]))
    assert status == 0 and "16/48" in output.replace(" ", ""), output[-3000:]
    for name in ("values.npy", "ids.npy"):
        assert np.array_equal(np.load(tmp_path / "straight" / name), np.load(tmp_path / "killed" / name))


@pytest.mark.slow
def test_sigkill_during_result_writing_leaves_the_results_in_step(paper, tmp_path, uninterrupted):
    root = copy_of(paper, tmp_path)
    shutil.copytree(uninterrupted / "runs", root / "runs")  # every run cached: the experiment only writes
    out = root / "results" / "paper"
    status, _ = finish(child(table3_args(root, "train.epochs=2"), hook="kill_in_plot"))
    assert status == -signal.SIGKILL and not (out / "table3.csv").exists()  # nothing half-written in place
    assert finish(child(table3_args(root, "train.epochs=2")))[0] == 0
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    status, _ = finish(child(table3_args(root, "train.epochs=2"), hook="kill_in_plot"))
    after = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    assert status == -signal.SIGKILL and after == before  # the former results stay whole
    # two seeds: new numbers, so the files moved before the kill differ from the former meta's record
    status, _ = finish(child([*table3_args(root, "train.epochs=2"), "--seeds", "2"], hook="kill_between_renames",
                             at=2))
    assert status == -signal.SIGKILL
    status, output = finish(child(["compare", "--profile", "paper", "--results", str(root / "results")]))
    assert status == 1 and "differ from what its meta file recorded" in output, output[-3000:]
    assert finish(child(table3_args(root, "train.epochs=2")))[0] == 0
    status, output = finish(child(["compare", "--profile", "paper", "--results", str(root / "results")]))
    assert "differ from what its meta file recorded" not in output


def test_stale_temporaries_are_told_apart_by_host_so_another_nodes_live_writer_is_kept(tmp_path):
    """The ranks of a job on several nodes write into one run folder, and containers reuse pids: a temporary
    names its host, and only this host's dead writers' or another host's hour-old temporaries are removed."""
    import os
    import time

    from repro.atomic import HOST, remove_stale_temporaries, temporary_name

    mine = temporary_name(tmp_path / "spec.json")
    assert mine.name == f".spec.json.{HOST}.{os.getpid()}.{mine.name.split('.')[-2]}.tmp"
    names = {"live_here": mine.name, "dead_here": f".a.{HOST}.999999999.1.tmp",
             "live_elsewhere": ".b.other-node.999999999.1.tmp", "old_elsewhere": ".c.other-node.12.1.tmp"}
    for name in names.values():
        (tmp_path / name).write_text("partial")
    hours_ago = time.time() - 2 * 3600
    os.utime(tmp_path / names["old_elsewhere"], (hours_ago, hours_ago))
    removed = {path.name for path in remove_stale_temporaries(tmp_path)}
    assert removed == {names["dead_here"], names["old_elsewhere"]}
    assert (tmp_path / names["live_here"]).exists() and (tmp_path / names["live_elsewhere"]).exists()
