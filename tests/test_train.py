"""The trainer: targets of every supervision mode, a run of each, exact resume, gradient accumulation and 2-process
DDP on CPU (gloo)."""
import dataclasses
import json
import os
import signal
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from repro.data import TrainCrop, TrainCrops, image_folder, open_imagenet
from repro.data.imagenet import EvalSet
from repro.evaluate import evaluate_model
from repro.labelmaps.reader import open_labelmaps
from repro.models import create_model, load_model
from repro.pooling import pool_labels
from repro.models import MODEL_FILE, Renormalized
from repro.pipeline import resources
from repro.runs import COMPUTE, Run, cached
from repro.specs import Spec
from repro.train import HISTORY_FILE, agreeing_indices, batch_split, cutmix, objective_spec, train_classifier
from repro.train.objectives import objective_class
from repro.train import trainer as trainer_module
from tests.fixtures import NUM_CLASSES, TINY_MODEL, tiny_config, without_timing

# layer norm only: the gradient of a batch is the mean of its halves' gradients
NO_BATCHNORM_MODEL = {"name": "vit_tiny_patch16_224",
                      "kwargs": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}}


@pytest.fixture(scope="module")
def data(imagenet):
    return open_imagenet(imagenet.root, {"source": "world"})


def crop_batch(imagenet, labelmaps, size=32, count=6):
    images = image_folder(imagenet.root, "train", imagenet.wnids)
    dataset = TrainCrops(images, TrainCrop(size), seed=0, labelmaps=labelmaps)
    return next(iter(DataLoader(dataset, batch_size=count, sampler=[(0, i) for i in range(count)])))


def supervision(**changes):
    return tiny_config(**{f"supervision.{k}": v for k, v in changes.items()})["supervision"]


def Supervision(sup_cfg, num_classes, crop_size, device, teacher=None):
    """The objective of a `supervision` config section."""
    return objective_class(sup_cfg["mode"])(objective_spec(sup_cfg), num_classes, crop_size, device, teacher)


def new_run(cfg, root):
    return Run(Spec("train", cfg), root).create()


def train(run, cfg, data, **options):
    """The trainer on a tiny config: its train section, objective and seed, with the config's resources."""
    return train_classifier(run, cfg["train"], data, objective_spec(cfg["supervision"]), seed=cfg["seed"],
                            resources=resources(cfg, run.dir), **options)


def assert_distributions(targets):
    assert (targets >= 0).all()
    assert torch.allclose(targets.sum(dim=1), torch.ones(len(targets)), atol=1e-5)


def test_original_and_smoothed_targets(imagenet, labelmaps):
    batch = crop_batch(imagenet, labelmaps)
    labels = batch["label"]
    _, targets, _ = Supervision(supervision(mode="original"), NUM_CLASSES, 32, torch.device("cpu"))(batch)
    assert torch.equal(targets, torch.nn.functional.one_hot(labels, NUM_CLASSES).float())
    _, smooth, _ = Supervision(supervision(mode="label_smoothing", smoothing=0.1), NUM_CLASSES, 32,
                               torch.device("cpu"))(batch)
    assert_distributions(smooth)
    assert torch.allclose(smooth[torch.arange(len(labels)), labels], torch.tensor(0.9 + 0.1 / NUM_CLASSES))
    assert torch.allclose(smooth.min(dim=1).values, torch.tensor(0.1 / NUM_CLASSES))


@pytest.mark.parametrize("variant", ["local_multi", "local_single", "global_multi", "global_single"])
def test_relabel_targets_pool_the_crop_box(imagenet, labelmaps, variant):
    batch = crop_batch(imagenet, labelmaps)
    images, targets, _ = Supervision(supervision(mode="relabel", variant=variant), NUM_CLASSES, 32,
                                     torch.device("cpu"))(batch)
    assert torch.equal(images, batch["image"])
    assert_distributions(targets)
    expected = pool_labels(batch["labelmap_values"], batch["labelmap_ids"], batch["box"], NUM_CLASSES, variant)
    assert torch.allclose(targets, expected)
    _, mixed, _ = Supervision(supervision(mode="relabel", variant=variant, mix_original=0.5), NUM_CLASSES, 32,
                              torch.device("cpu"))(batch)
    one_hot = torch.nn.functional.one_hot(batch["label"], NUM_CLASSES).float()
    assert torch.allclose(mixed, 0.5 * expected + 0.5 * one_hot)


def test_kd_targets_are_the_teachers_softmax_at_its_size(imagenet, labelmaps):
    torch.manual_seed(0)
    teacher = create_model(TINY_MODEL, NUM_CLASSES).train()  # handed over in training mode
    sup = Supervision(supervision(mode="kd", kd_input_size=48), NUM_CLASSES, 32, torch.device("cpu"), teacher)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())  # frozen by the objective
    assert sup.input_size == 48
    batch = crop_batch(imagenet, labelmaps, size=48)
    images, targets, seconds = sup(batch)
    assert images.shape[-2:] == (32, 32) and seconds > 0
    with torch.no_grad():
        assert torch.allclose(targets, teacher(batch["image"]).softmax(dim=1), atol=1e-6)
    assert_distributions(targets)


def test_renormalized_teacher_sees_its_own_normalisation():
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    pixels = torch.rand(2, 3, 4, 4)
    crops = (pixels - torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, -1, 1, 1)) / \
        torch.tensor(IMAGENET_DEFAULT_STD).view(1, -1, 1, 1)
    teacher = Renormalized(torch.nn.Identity(), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert torch.allclose(teacher(crops), (pixels - 0.5) / 0.5, atol=1e-6)


def test_cutmix_mixes_soft_targets_by_pasted_area():
    images = torch.arange(6, dtype=torch.float32)[:, None, None, None].expand(6, 3, 20, 16).clone()
    targets = torch.softmax(torch.randn(6, 5, generator=torch.Generator().manual_seed(0)), dim=1)
    mixed, mixed_targets, lam = cutmix(images, targets, np.random.default_rng(4), pairing="reversed")
    pasted = (mixed != images).float().mean().item()  # every image differs from its partner everywhere
    assert 0 < pasted < 1 and lam == pytest.approx(1 - pasted)
    assert torch.allclose(mixed_targets, lam * targets + (1 - lam) * targets.flip(0))
    assert_distributions(mixed_targets)


def test_label_cleaning_keeps_the_images_the_annotator_agrees_with(imagenet, labelmaps):
    images = image_folder(imagenet.root, "train", imagenet.wnids)
    store = open_labelmaps(labelmaps)
    predicted = store.global_logits(store.rows_for(images.relpaths)).argmax(dim=1).numpy()
    keep = agreeing_indices(labelmaps, images, NUM_CLASSES)
    assert np.array_equal(keep, np.flatnonzero(predicted == images.labels))
    assert 0 < len(keep) < len(images)


def test_label_cleaning_by_a_released_list_keeps_the_listed_images_and_digests_the_list(imagenet, tmp_path):
    """The paper cleans by the list Beyer et al. released; the annotator's agreement is the default."""
    from repro.train.objectives import LabelCleaning, objective_spec

    images = image_folder(imagenet.root, "train", imagenet.wnids)
    listed = tmp_path / "clean.txt"
    chosen = images.relpaths[::3]
    listed.write_text("".join(f"{relpath}\n" if i % 2 else f"{relpath.split('/')[-1]}\n"  # folders or none
                              for i, relpath in enumerate(chosen)) + "\nn00000000_1.JPEG\n")  # one not here
    supervision = tiny_config(**{"supervision.mode": "label_cleaning"})["supervision"]
    default = objective_spec(supervision)
    assert "clean_list" not in default  # absent: the embedded profiles' hashes stay
    spec = objective_spec({**supervision, "clean_list": str(listed)})
    assert spec["clean_list"]["path"] == str(listed) and spec != default
    kept, metrics = LabelCleaning.training_images(spec, images, None, NUM_CLASSES)
    assert kept.relpaths == tuple(chosen) and metrics["clean_fraction"] == len(chosen) / len(images)
    listed.write_text("n00000000_1.JPEG\n")
    with pytest.raises(ValueError, match="supervision.clean_list .* none of its 1 names"):
        LabelCleaning.training_images(objective_spec({**supervision, "clean_list": str(listed)}), images, None,
                                      NUM_CLASSES)
    with pytest.raises(FileNotFoundError, match="supervision.clean_list"):
        objective_spec({**supervision, "clean_list": str(tmp_path / "missing.txt")})
    # a run cleaned by a list reads no label maps: they are not in its spec, so no change of them retrains it
    from repro.config import profile_config, with_changes
    from repro.pipeline import student_spec

    cfg = with_changes(profile_config("proxy"), {"supervision.mode": "label_cleaning"})
    assert student_spec(cfg).body["labelmaps"] is not None
    listed.write_text(f"{images.relpaths[0]}\n")
    assert student_spec(with_changes(cfg, {"supervision.clean_list": str(listed)})).body["labelmaps"] is None


def test_batch_split():
    assert batch_split(1024, 8, 1) == 128 and batch_split(1024, 4, 2) == 128
    with pytest.raises(ValueError):
        batch_split(100, 3, 1)


@pytest.mark.parametrize("changes", [
    {"supervision.mode": "original", "train.channels_last": True},
    {"supervision.mode": "label_smoothing"},
    {"supervision.mode": "label_cleaning"},
    {"supervision.mode": "relabel", "supervision.cutmix": True, "supervision.cutmix_off_last_epochs": 0},
    {"supervision.mode": "kd", "supervision.kd_input_size": 40, "supervision.cutmix": True},
], ids=lambda c: "+".join(str(v) for k, v in c.items() if k in ("supervision.mode", "supervision.cutmix")))
def test_each_mode_trains_and_reports(tmp_path, data, labelmaps, changes):
    cfg = tiny_config(**changes)
    teacher = create_model(TINY_MODEL, NUM_CLASSES) if cfg["supervision"]["mode"] == "kd" else None
    run = new_run(cfg, tmp_path)
    metrics = train(run, cfg, data, labelmaps=labelmaps, teacher=teacher)
    for key in ("imagenet_top1", "imagenet_top5", "real_top1", "shankar_top1", "imagenetv2_top_images_top1",
                "imagenetv2_matched_frequency_top1", "imagenetv2_threshold_0.7_top1"):
        assert 0 <= metrics[key] <= 100
    assert np.isfinite(metrics["final_train_loss"]) and metrics["train_images_per_second"] > 0
    assert (metrics["teacher_seconds"] > 0) == (cfg["supervision"]["mode"] == "kd")
    # one process: its device time is its wall time, recorded epoch by epoch
    timed = {key: metrics[key] for key in ("train_seconds", "teacher_seconds")}
    assert metrics["device_seconds"] == pytest.approx(timed, abs=2e-3)
    # others' share of the machine while it trained: a number on Linux (repro.contention), unknown elsewhere
    assert 0 <= metrics["others_cpu_share"] <= 1 if Path("/proc/stat").exists() else metrics["others_cpu_share"] is None
    history = [json.loads(line) for line in (run.dir / HISTORY_FILE).read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1]
    assert load_model(run.dir / MODEL_FILE).num_classes == NUM_CLASSES


def state_of(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


class Interrupt(Exception):
    pass


def test_resume_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, data, labelmaps):
    # dropout draws from torch's generator, relabel + CutMix from the per-sample and per-step generators
    model = {**TINY_MODEL, "kwargs": {**TINY_MODEL["kwargs"], "drop_rate": 0.3}}
    cfg = tiny_config(**{"train.model": model, "train.epochs": 2, "train.warmup_epochs": 1,
                         "supervision.mode": "relabel", "supervision.cutmix": True,
                         "supervision.cutmix_off_last_epochs": 1})
    straight = new_run(cfg, tmp_path / "straight")
    expected = train(straight, cfg, data, labelmaps=labelmaps, eval_every=0)

    def interrupt_in_epoch_two(model, updates):
        if updates == 8:  # 6 updates per epoch
            raise Interrupt

    resumed = new_run(cfg, tmp_path / "resumed")
    with pytest.raises(Interrupt):
        train(resumed, cfg, data, labelmaps=labelmaps, eval_every=0, on_update=interrupt_in_epoch_two)
    assert torch.load(resumed.checkpoint_path, weights_only=True)["state"]["epoch"] == 1
    got = train(resumed, cfg, data, labelmaps=labelmaps, eval_every=0)
    for name, tensor in state_of(straight.dir / MODEL_FILE).items():
        assert torch.equal(tensor, state_of(resumed.dir / MODEL_FILE)[name]), name
    assert without_timing(got) == without_timing(expected)
    history = [json.loads(line) for line in (resumed.dir / HISTORY_FILE).read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    # a finished run is neither trained nor evaluated again
    assert train(resumed, cfg, data, labelmaps=labelmaps, on_update=interrupt_in_epoch_two) == got


def test_a_failing_final_evaluation_keeps_the_trained_epochs(tmp_path, data, monkeypatch):
    cfg = tiny_config(**{"train.epochs": 2})
    run = new_run(cfg, tmp_path)

    def broken(*args, **kwargs):
        raise OSError("val image unreadable")

    monkeypatch.setattr(trainer_module, "evaluate_model", broken)
    with pytest.raises(OSError, match="unreadable"):
        train(run, cfg, data, eval_every=0)
    assert torch.load(run.checkpoint_path, weights_only=True)["state"]["epoch"] == 2  # saved before evaluating
    monkeypatch.undo()

    def no_training(model, updates):
        raise AssertionError("the rerun trained again")

    metrics = train(run, cfg, data, eval_every=0, on_update=no_training)
    assert metrics["updates"] == 12 and metrics["imagenet_images"] == len(data.val)
    history = [json.loads(line) for line in (run.dir / HISTORY_FILE).read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2] and history[-1]["val_top1"] == metrics["imagenet_top1"]


def test_a_failing_epoch_end_evaluation_keeps_the_epoch_and_is_done_first_by_the_rerun(tmp_path, data,
                                                                                       monkeypatch):
    """The val top-1 after an epoch came before its checkpoint: an evaluation that failed (a GPU out of memory at
    resources.batch_size_eval) cost the epoch's training."""
    cfg = tiny_config(**{"train.epochs": 3})
    straight = new_run(cfg, tmp_path / "straight")
    expected = train(straight, cfg, data)
    run = new_run(cfg, tmp_path / "run")
    predict = trainer_module.predict_logits
    calls = []

    def out_of_memory_on_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return predict(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "predict_logits", out_of_memory_on_the_second)
    with pytest.raises(RuntimeError, match="out of memory"):
        train(run, cfg, data)
    assert torch.load(run.checkpoint_path, weights_only=True)["state"]["epoch"] == 2  # saved before evaluating
    monkeypatch.undo()
    updates = []
    metrics = train(run, cfg, data, on_update=lambda model, update: updates.append(update))
    assert updates == list(range(13, 19))  # only the third epoch trained again
    assert without_timing(metrics) == without_timing(expected)
    history, reference = ([json.loads(line) for line in (folder / HISTORY_FILE).read_text().splitlines()]
                          for folder in (run.dir, straight.dir))
    assert [h.get("val_top1") for h in history] == [h.get("val_top1") for h in reference]
    assert history[1]["val_top1"] is not None


MID_EPOCH_CFG = {"train.epochs": 2, "train.warmup_epochs": 1, "supervision.mode": "relabel",
                 "supervision.cutmix": True, "train.model": {**TINY_MODEL, "kwargs": {**TINY_MODEL["kwargs"],
                                                                                     "drop_rate": 0.3}}}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data, labelmaps):
    cfg = tiny_config(**MID_EPOCH_CFG)
    run = new_run(cfg, tmp_path_factory.mktemp("straight"))
    return train(run, cfg, data, labelmaps=labelmaps, eval_every=0), state_of(run.dir / MODEL_FILE)


def assert_same_run(got, weights, expected):
    assert without_timing(got) == without_timing(expected[0])
    for name, tensor in expected[1].items():
        assert torch.equal(tensor, weights[name]), name


def test_a_loader_worker_outlives_a_stop_signal_from_others_and_ends_on_its_parents_sigterm():
    """The training loader's workers leave a cluster's stop signals to the trainer (which checkpoints, then ends
    them with the loader), and still end when their parent terminates them."""
    import subprocess
    import time

    from repro.preemption import leave_stop_signals_to_the_trainer

    loader = DataLoader(list(range(8)), batch_size=1, num_workers=1, persistent_workers=True,
                        worker_init_fn=leave_stop_signals_to_the_trainer)
    batches = iter(loader)
    next(batches)
    worker = batches._workers[0]
    for stop in ("TERM", "USR1"):  # sent by another process, as a cluster's are
        subprocess.run(["kill", f"-{stop}", str(worker.pid)], check=True)
    time.sleep(1)
    assert worker.is_alive() and next(batches).tolist() == [1]
    os.kill(worker.pid, signal.SIGTERM)  # from its parent: what the loader's shutdown sends
    worker.join(timeout=20)
    assert worker.exitcode == 0
    del batches


def test_sigterm_mid_epoch_checkpoints_after_the_step_and_resumes_bit_for_bit(tmp_path, data, labelmaps,
                                                                              uninterrupted):
    from repro.preemption import Preempted

    cfg = tiny_config(**MID_EPOCH_CFG)
    run = new_run(cfg, tmp_path)

    def terminate_at_update_8(model, updates):  # 6 updates per epoch: in epoch 2
        if updates == 8:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Preempted, match="in epoch 2 after step 2"):
        train(run, cfg, data, labelmaps=labelmaps, eval_every=0, on_update=terminate_at_update_8)
    state = torch.load(run.checkpoint_path, weights_only=True)["state"]
    assert (state["epoch"], state["updates"], state["position"]["micro"]) == (1, 8, 2) and not run.done
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the trainer's handler is gone
    got = train(run, cfg, data, labelmaps=labelmaps, eval_every=0)
    assert_same_run(got, state_of(run.dir / MODEL_FILE), uninterrupted)


def test_periodic_checkpoints_lose_at_most_the_steps_since_the_last(tmp_path, data, labelmaps, uninterrupted):
    cfg = tiny_config(**MID_EPOCH_CFG, **{"resources.checkpoint_minutes": 1e-9})  # after every update
    run = new_run(cfg, tmp_path)

    def crash_at_update_9(model, updates):
        if updates == 9:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(run, cfg, data, labelmaps=labelmaps, eval_every=0, on_update=crash_at_update_9)
    assert torch.load(run.checkpoint_path, weights_only=True)["state"]["position"]["micro"] == 2
    got = train(run, cfg, data, labelmaps=labelmaps, eval_every=0)
    assert_same_run(got, state_of(run.dir / MODEL_FILE), uninterrupted)


def test_a_nan_label_map_stops_training_in_its_first_epoch_naming_the_file(tmp_path, data, labelmaps):
    from repro.labelmaps import LabelMapError, open_labelmaps
    from repro.labelmaps.packed import write_packed

    stored = open_labelmaps(labelmaps)
    values, ids = stored.read(np.arange(stored.num_images))
    damaged = write_packed(tmp_path / "nan_maps", stored.paths, values, ids, num_classes=stored.num_classes)
    on_disk = np.load(damaged / "values.npy", mmap_mode="r+")
    on_disk[3, 0, 1, 1] = np.nan  # one cell of one image, damaged after the store was written
    on_disk.flush()
    cfg = tiny_config(**{"supervision.mode": "relabel", "train.epochs": 2})
    run = new_run(cfg, tmp_path)
    with pytest.raises(LabelMapError, match=f"label map of {stored.paths[3]} .* has non-finite values"):
        train(run, cfg, data, labelmaps=damaged, eval_every=0)
    assert not run.done and not run.checkpoint_path.exists()  # never cached as finished, nothing half-kept


def test_a_diverging_loss_stops_training_naming_the_step_and_batch(tmp_path, data):
    from repro.train.trainer import NonFiniteLoss

    cfg = tiny_config(**{"train.model": NO_BATCHNORM_MODEL, "train.lr": 1e30, "train.warmup_epochs": 0})
    run = new_run(cfg, tmp_path)
    with pytest.raises(NonFiniteLoss, match=r"loss (nan|inf) at epoch 1, step \d+ \(rank 0's batch: train/"):
        train(run, cfg, data, eval_every=0)
    assert not run.done


def test_gradient_accumulation_matches_the_full_batch(tmp_path, data):
    weights = {}
    for accum in (1, 2):
        # SGD: the update is linear in the gradient, so summation-order noise stays at float precision
        cfg = tiny_config(**{"train.model": NO_BATCHNORM_MODEL, "train.accum_steps": accum})
        run = new_run(cfg, tmp_path)
        metrics = train(run, cfg, data, eval_every=0)
        assert metrics["updates"] == 6
        weights[accum] = state_of(run.dir / MODEL_FILE)
    for name, tensor in weights[1].items():
        assert torch.allclose(tensor, weights[2][name], rtol=1e-4, atol=1e-6), name


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_worker(rank, world, port, root, labelmaps, runs, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    data = open_imagenet(root, {"source": "world"})
    val = data.eval_sets[0]
    odd = dataclasses.replace(val, images=val.images.subset(range(len(val.images) - 1)),
                              label_sets={k: v[:-1] for k, v in val.label_sets.items()})
    data = dataclasses.replace(data, eval_sets=[odd])
    mismatched = []

    def same_weights_on_all_ranks(model, updates):
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(world)]
        torch.distributed.all_gather(gathered, flat)
        if not all(torch.equal(gathered[0], g) for g in gathered[1:]):
            mismatched.append(updates)

    cfg = tiny_config(**{"supervision.mode": "relabel", "supervision.cutmix": True, "train.epochs": 2})
    computed = {}

    def compute(spec, run, resources):
        computed.update(train(run, cfg, data, labelmaps=labelmaps, on_update=same_weights_on_all_ranks))
        return computed

    COMPUTE["train"] = compute  # this spawned process only
    run = cached(Spec("train", cfg), resources(cfg, runs))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"metrics": computed, "stored": run.metrics, "mismatched": mismatched}, f)
    torch.distributed.destroy_process_group()


def test_ddp_two_processes_on_cpu(tmp_path, imagenet, labelmaps, data):
    runs = tmp_path / "runs"
    mp.spawn(ddp_worker, args=(2, free_port(), str(imagenet.root), str(labelmaps), str(runs), str(tmp_path)),
             nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert results[0]["mismatched"] == results[1]["mismatched"] == []
    metrics = results[0]["metrics"]
    assert results[1]["stored"] == results[0]["stored"]  # rank 1 waited for rank 0's metrics.json
    assert metrics["updates"] == 2 * 6  # 2 epochs of 48 images / (2 ranks x 4)
    assert without_timing(results[1]["metrics"]) == without_timing(metrics)
    # every one of the 23 (odd) val images counted once: the same numbers as one process scoring the saved model
    val = data.eval_sets[0]
    odd = EvalSet("imagenet", val.images.subset(range(23)), {k: v[:23] for k, v in val.label_sets.items()})
    model = load_model(next(runs.glob("train/*")) / MODEL_FILE)
    single = evaluate_model(model, [odd], size=32, crop_pct=1.0, batch_size=16)
    assert metrics["imagenet_images"] == 23
    for key in ("imagenet_top1", "imagenet_top5", "real_top1", "shankar_top1", "imagenet_per_class_top1"):
        assert metrics[key] == pytest.approx(single[key]), key


def ddp_preempted_worker(rank, world, port, root, labelmaps, runs, out, signal_at):
    """Two ranks training MID_EPOCH_CFG; rank 1 alone gets SIGTERM after update `signal_at` (0: none)."""
    from repro.preemption import Preempted

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    data = open_imagenet(root, {"source": "world"})
    cfg = tiny_config(**{**MID_EPOCH_CFG, "train.batch_size": 4})

    def signal_rank_1(model, updates):
        if rank == 1 and updates == signal_at:
            os.kill(os.getpid(), signal.SIGTERM)

    run = Run(Spec("train", cfg), runs).create()
    try:
        metrics = train(run, cfg, data, labelmaps=labelmaps, eval_every=0, on_update=signal_rank_1)
        outcome = {"metrics": without_timing(metrics)}
    except Preempted as stopped:
        outcome = {"stopped": str(stopped)}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(outcome, f)
    torch.distributed.destroy_process_group()


def test_ddp_a_signal_to_one_rank_stops_both_and_resumes_bit_for_bit(tmp_path, imagenet, labelmaps):
    def spawn(runs, signal_at):
        mp.spawn(ddp_preempted_worker, nprocs=2, join=True, args=(2, free_port(), str(imagenet.root),
                                                                  str(labelmaps), str(runs), str(tmp_path),
                                                                  signal_at))
        return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    straight = spawn(tmp_path / "straight", 0)
    stopped = spawn(tmp_path / "resumed", 8)  # 12 updates per epoch: mid-epoch 1
    assert all("checkpoint written in epoch 1 after step 8" in rank["stopped"] for rank in stopped)
    state = torch.load(next((tmp_path / "resumed").glob("train/*/checkpoint.pt")), weights_only=True)["state"]
    assert len(state["position"]["rng"]) == 2  # each rank's generator
    resumed = spawn(tmp_path / "resumed", 0)
    assert resumed[0]["metrics"] == straight[0]["metrics"] == resumed[1]["metrics"]
    weights = [state_of(next(runs.glob("train/*")) / MODEL_FILE) for runs in (tmp_path / "straight",
                                                                            tmp_path / "resumed")]
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name
