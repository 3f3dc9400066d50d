"""The one trainer behind every classifier of the suite: students of each supervision mode, and the annotator.

Single process on CPU, or one process per GPU under torchrun (DDP). Global batch = train.batch_size =
per-device batch x world size x train.accum_steps. timm models, optimizers and cosine schedule with warm-up
(stepped per optimizer update). Every epoch ends with an atomic checkpoint in the run directory, and so does the
optimizer update after a SIGTERM, SIGUSR1 or SIGUSR2 (the run then stops) or after resources.checkpoint_minutes
(`repro.preemption`). A restarted run resumes from the checkpoint and ends with the same weights as an
uninterrupted one: all randomness is a function of the seed, the epoch, the sample and the rank (crops of
(seed, epoch, index), shuffling of (seed, epoch), CutMix of (seed, epoch, step, rank), and torch's generator, for
dropout and drop-path, reseeded from (seed, epoch, rank) at every epoch start); a mid-epoch checkpoint holds the
place in the epoch and every rank's generator state.
"""
from __future__ import annotations

import json
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Callable, Mapping

import numpy as np
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from repro.contention import OTHERS_CPU_SHARE, ContentionProbe, others_share
from repro.crops import crop_rng
from repro.data.datasets import EpochSampler, TrainCrops, batch_problems, collate_crops
from repro.data.imagenet import ImageNetData
from repro.data.transforms import TrainCrop
from repro.evaluate.classification import (amp_dtype, autocast_for, eval_settings, evaluate_model, headline,
                                           predict_logits)
from repro.atomic import write_stream_atomic, write_text_atomic
from repro.models import MODEL_FILE, create_model, save_model
from repro.runs import Resources, Run
from repro.specs import added_option
from repro.train.distributed import all_gather, all_reduce_sum, broadcast_buffers, init_distributed
from repro.train.objectives import CUTMIX_STREAM, objective_class
from repro.preemption import CheckpointPacer, Preempted, leave_stop_signals_to_the_trainer

HISTORY_FILE = "history.jsonl"


def batch_split(batch_size: int, world_size: int, accum_steps: int) -> int:
    """The per-device micro-batch that makes the global batch batch_size on world_size devices."""
    per_device, rest = divmod(int(batch_size), world_size * int(accum_steps))
    if rest or per_device == 0:
        raise ValueError(f"batch_size {batch_size} does not split into {world_size} devices x "
                         f"{accum_steps} accumulation steps")
    return per_device


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def make_optimizer(model: nn.Module, train_cfg: Mapping) -> torch.optim.Optimizer:
    opt = train_cfg["opt"]
    kwargs = {}
    if opt in ("sgd", "momentum", "nesterov"):
        # timm's "sgd" is Nesterov SGD and "momentum" plain momentum SGD; the config names the choice explicitly
        opt, kwargs = "sgd", {"nesterov": bool(train_cfg["nesterov"])}
    # timm exempts norm and bias parameters (1-d) from weight decay unless told not to filter them
    filter_bias_and_bn = not added_option(train_cfg, "train", "decay_norm_and_bias")
    return create_optimizer_v2(model, opt=opt, lr=train_cfg["lr"], weight_decay=train_cfg["weight_decay"],
                               momentum=train_cfg["momentum"], filter_bias_and_bn=filter_bias_and_bn, **kwargs)


class NonFiniteLoss(ValueError):
    """Training produced a NaN or infinite loss: the run stops, unfinished, naming the step and the batch's files."""


def stop_on_non_finite(loss: torch.Tensor, targets, env, epoch: int, step: int, files: list[str]) -> None:
    """Raises NonFiniteLoss on every rank as soon as one rank's loss is not finite (all ranks stop together, so
    none waits in a collective for the others), naming the images whose targets are not finite (a damaged label
    map), else the batch's first images (the model diverged)."""
    bad = (~torch.isfinite(loss.detach())).float().reshape(1)
    if env.distributed:
        torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
    if bad.item():
        if torch.is_tensor(targets) and targets.dim() == 2:
            damaged = (~torch.isfinite(targets)).any(dim=1).nonzero().flatten().tolist()
            files = [files[i] for i in damaged if i < len(files)] or files
        shown = ", ".join(files[:4]) + (f" and {len(files) - 4} more" if len(files) > 4 else "")
        raise NonFiniteLoss(f"loss {loss.item()} at epoch {epoch + 1}, step {step + 1} (rank {env.rank}'s batch: "
                            f"{shown}); check the label maps (python -m repro labelmaps verify) and the lr")


def merged(parts: list[dict]) -> dict:
    return {key: value for part in parts for key, value in part.items()}


def rng_state(device: torch.device) -> torch.Tensor:
    """torch's generator state on this rank (the CPU's, and the GPU's behind it on CUDA), for a mid-epoch
    checkpoint."""
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return torch.cat(states)


def start_of_epoch(position: dict | None, seed: int, epoch: int, env) -> int:
    """Seeds torch's generator for `epoch` (as left by a mid-epoch checkpoint, else afresh from (seed, epoch,
    rank)) and returns the first micro-step to run."""
    if position is None:
        torch.manual_seed(epoch_seed(seed, epoch, env.rank))
        return 0
    if len(position["rng"]) != env.world_size:
        raise ValueError(f"the checkpoint was written mid-epoch by {len(position['rng'])} processes: resume with "
                         f"{len(position['rng'])} (or delete the checkpoint to start again)")
    state = position["rng"][env.rank]
    cpu_size = torch.get_rng_state().numel()
    torch.set_rng_state(state[:cpu_size])
    if env.device.type == "cuda":
        torch.cuda.set_rng_state(state[cpu_size:], env.device)
    return int(position["micro"])


def make_scheduler(optimizer: torch.optim.Optimizer, train_cfg: Mapping, updates_per_epoch: int):
    """timm's schedule with linear warm-up, stepped after every optimizer update. Under `warmup_prefix` and
    `decay_ends_with_training` the decay spans the epochs after the warm-up and ends with the last one, as the
    official schedule does (timm's `num_epochs` then excludes the warm-up: given every epoch, its cosine stops short
    of min_lr, which a spec without the option keeps)."""
    prefix = bool(added_option(train_cfg, "train", "warmup_prefix"))
    to_the_end = prefix and bool(added_option(train_cfg, "train", "decay_ends_with_training"))
    epochs = int(train_cfg["epochs"])
    if to_the_end and epochs <= train_cfg["warmup_epochs"]:
        raise ValueError(f"train.epochs = {epochs} leaves no epoch after train.warmup_epochs = "
                         f"{train_cfg['warmup_epochs']} for the decay (train.warmup_prefix is true): train longer, "
                         "shorten the warm-up or set train.warmup_prefix=false")
    scheduler, _ = create_scheduler_v2(optimizer, sched=train_cfg["sched"],
                                       num_epochs=epochs - train_cfg["warmup_epochs"] if to_the_end else epochs,
                                       warmup_epochs=train_cfg["warmup_epochs"], warmup_lr=train_cfg["warmup_lr"],
                                       min_lr=train_cfg["min_lr"], step_on_epochs=False, warmup_prefix=prefix,
                                       updates_per_epoch=updates_per_epoch)
    return scheduler


def epoch_end_evaluation(entry: dict, epochs: int, eval_every: int, model: nn.Module, data: ImageNetData,
                         monitor: Mapping) -> None:
    """The val top-1 after the epoch of history `entry` where it is due (the last epoch's comes with the full
    evaluation), and the time it took."""
    started = time.perf_counter()
    epoch = entry["epoch"]
    if epoch < epochs and eval_every and epoch % eval_every == 0 and data.val is not None:
        logits = predict_logits(model, data.val, **monitor)
        entry["val_top1"] = 100.0 * float((logits.argmax(dim=1).numpy() == data.val.labels).mean())
    entry["eval_seconds"] = round(time.perf_counter() - started, 3)


def write_history(run: Run, history: list[dict]) -> None:
    write_text_atomic(run.dir / HISTORY_FILE, "".join(json.dumps(entry, sort_keys=True) + "\n" for entry in history))


def save_checkpoint(path, state: dict) -> None:
    write_stream_atomic(path, lambda file: torch.save(state, file))


@dataclass(frozen=True)
class InitialWeights:
    """Weights to start from (`train.init`): a finished run's state dict, its head's class count, and the class
    count of the new head (None keeps the head)."""
    state_dict: Mapping
    num_classes: int
    reset_head: int | str | None  # "data": the data's class count


def initial_model(model_spec: Mapping, num_classes: int, init: InitialWeights | None) -> nn.Module:
    if init is None:
        return create_model(model_spec, num_classes)
    model = create_model(model_spec, init.num_classes)
    model.load_state_dict(init.state_dict)
    if init.reset_head is not None:
        model.reset_classifier(num_classes if init.reset_head == "data" else int(init.reset_head))
    head = model.get_classifier().out_features
    if head != num_classes:
        raise ValueError(f"train.init: the initial model has a {head}-class head and the data {num_classes} "
                         f"classes: set train.init.reset_head to {num_classes}")
    return model


def train_loader(dataset: TrainCrops, batch_size: int, workers: int, seed: int, world_size: int = 1, rank: int = 0,
                 pin_memory: bool = False) -> DataLoader:
    """The training loader: this rank's shuffled (epoch, index) keys (`EpochSampler`, set its epoch before each
    pass), whole batches only, persistent workers."""
    sampler = EpochSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)
    # its own generator: creating the loader's iterator must not draw from torch's global RNG
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=True,
                      pin_memory=pin_memory, persistent_workers=workers > 0, collate_fn=collate_crops,
                      generator=torch.Generator().manual_seed(seed), worker_init_fn=leave_stop_signals_to_the_trainer)


def train_classifier(run: Run, train_cfg: Mapping, data: ImageNetData, objective: Mapping, *, seed: int,
                     resources: Resources, labelmaps: str | os.PathLike | None = None,
                     teacher: nn.Module | None = None, init: InitialWeights | None = None, eval_every: int = 1,
                     on_update: Callable[[nn.Module, int], None] | None = None) -> dict:
    """Train train_cfg["model"] on data.train with `objective`, evaluate on data.eval_sets, return metrics.

    run:        the run whose directory holds checkpoint.pt, history.jsonl, log.txt and the final model.pt
    train_cfg:  the `train` section of a spec (model, optimiser, schedule, crops, evaluation view)
    data:       `repro.data.open_imagenet(...)`: the training list (one split or a union, e.g. extra + train) and
                the evaluation sets
    objective:  an objective's spec (`repro.train.objectives.objective_spec`): how a batch becomes its targets
    labelmaps:  the label-map store of the training images, for an objective whose crops carry label maps
    teacher:    the teacher of an objective that needs one
    init:       weights to start from, else timm's initialisation under `seed`
    eval_every: top-1 on data.val after every eval_every-th epoch (0: none); the last epoch always runs the full
                evaluation on every set, stored in the checkpoint so a finished run is never evaluated twice
    on_update:  called with (model, number of updates so far) after every optimizer update

    Returns the evaluation metrics (`repro.evaluate.set_metrics` keys) plus train_seconds (training wall time
    summed over sessions, teacher forward included), teacher_seconds, train_images_per_second, train_images,
    updates and final_train_loss. Every rank returns the same dict.
    """
    seed = int(seed)
    env = init_distributed()
    objective_cls = objective_class(objective["mode"])
    num_classes = data.num_classes
    if objective_cls.crops_carry_labelmaps and labelmaps is None:
        raise ValueError(f"supervision mode {objective['mode']} needs the label maps of the training images")
    log = run.log if env.is_main else (lambda message, echo=True: None)
    images = data.train

    device = env.device
    cuda = device.type == "cuda"
    amp = bool(train_cfg["amp"]) and cuda
    # channels_last pays on CPU too: 1.5-1.6x for the proxy's ResNets (benchmarks/bench_train_step.py)
    channels_last = bool(train_cfg["channels_last"])
    autocast = partial(autocast_for, device, amp)
    if teacher is not None:
        teacher = teacher.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    supervision = objective_cls(objective, num_classes, int(train_cfg["crop_size"]), device, teacher, autocast)

    accum = int(train_cfg["accum_steps"])
    per_device = batch_split(train_cfg["batch_size"], env.world_size, accum)
    crop = TrainCrop(supervision.input_size, train_cfg["scale"], train_cfg["ratio"], train_cfg["hflip"],
                     train_cfg["color_jitter"], added_option(train_cfg, "train", "lighting"))
    dataset = TrainCrops(images, crop, seed, labelmaps if objective_cls.crops_carry_labelmaps else None)
    loader = train_loader(dataset, per_device, int(resources.workers), seed, env.world_size, env.rank, cuda)
    sampler = loader.sampler
    updates_per_epoch = len(loader) // accum
    if updates_per_epoch == 0:
        raise ValueError(f"{len(images)} training images make no full batch of {train_cfg['batch_size']}")
    iterations = added_option(train_cfg, "train", "iterations")
    if iterations is not None:  # a number of updates (fine-tuning's unit), rounded up to whole epochs
        train_cfg = {**train_cfg, "epochs": -(-int(iterations) // updates_per_epoch)}
    epochs = int(train_cfg["epochs"])

    torch.manual_seed(seed)
    model = initial_model(train_cfg["model"], num_classes, init).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, train_cfg)
    scheduler = make_scheduler(optimizer, train_cfg, updates_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype() == torch.float16)

    # "position": where a mid-epoch checkpoint stopped in epoch "epoch" + 1; "skipped": unreadable images skipped
    # device_seconds: each epoch's time times its processes, so that a run resumed on another number of GPUs (at an
    # epoch end) is costed as it ran
    state = {"epoch": 0, "updates": 0, "train_seconds": 0.0, "teacher_seconds": 0.0,
             "device_seconds": {"train_seconds": 0.0, "teacher_seconds": 0.0}, "history": [],
             "final_metrics": None, "position": None, "skipped": {}}
    if run.checkpoint_path.exists():
        checkpoint = torch.load(run.checkpoint_path, map_location="cpu", weights_only=True)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if checkpoint["scaler"]:  # empty where bf16 needed none (a checkpoint from before fp16 on emulated bf16)
            scaler.load_state_dict(checkpoint["scaler"])
        state = {"position": None, "skipped": {}, **checkpoint["state"]}
        # a checkpoint written before device time was kept: its epochs ran on as many processes as this session
        state.setdefault("device_seconds", {key: state[key] * env.world_size
                                            for key in ("train_seconds", "teacher_seconds")})
        where = (f"in epoch {state['epoch'] + 1} after step {state['position']['micro']}" if state["position"]
                 else f"after epoch {state['epoch']}")
        log(f"resuming {where} ({state['updates']} updates)")
    monitor = eval_settings(train_cfg, resources)
    if state["history"] and "eval_seconds" not in state["history"][-1]:  # stopped in its epoch-end evaluation
        epoch_end_evaluation(state["history"][-1], epochs, eval_every, model, data, monitor)

    def checkpoint_state() -> dict:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "state": state}

    ddp_model = (DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
                 if env.distributed else model)
    loss_fn = supervision.criterion()

    pacer = CheckpointPacer(resources.checkpoint_minutes, env)
    skip_unreadable = data.skip_unreadable
    try:
        for epoch in range(state["epoch"], epochs):
            position, state["position"] = state["position"], None
            first_micro = start_of_epoch(position, seed, epoch, env)
            sampler.set_epoch(epoch, start=first_micro * per_device)
            ddp_model.train()
            micro_steps = updates_per_epoch * accum
            bar = tqdm(total=micro_steps, initial=first_micro, desc=f"epoch {epoch + 1}/{epochs}", leave=False,
                       dynamic_ncols=True, disable=not (env.is_main and sys.stderr.isatty()))
            started = time.perf_counter()
            probe = ContentionProbe()
            carried = position or {"loss_sum": 0.0, "teacher_seconds": 0.0, "seconds": 0.0,
                                   "lr": optimizer.param_groups[0]["lr"]}
            loss_sum = torch.tensor(carried["loss_sum"], dtype=torch.float64, device=device)
            teacher_seconds, lr = carried["teacher_seconds"], carried["lr"]
            for micro, batch in enumerate(loader, start=first_micro):
                if micro == micro_steps:
                    break
                for index, message in batch_problems(batch, skip_unreadable):
                    state["skipped"][images.relpaths[index]] = message
                cutmix_rng = (crop_rng(seed, epoch, micro, env.rank, CUTMIX_STREAM)
                              if supervision.use_cutmix(epoch, epochs) else None)
                inputs, targets, seconds = supervision(batch, cutmix_rng)
                teacher_seconds += seconds
                if channels_last:
                    inputs = inputs.contiguous(memory_format=torch.channels_last)
                last_micro = (micro + 1) % accum == 0
                # gradients are all-reduced only on the last micro-batch of an update
                with nullcontext() if last_micro or not env.distributed else ddp_model.no_sync():
                    with autocast():
                        loss = loss_fn(ddp_model(inputs).float(), targets)
                    scaler.scale(loss / accum).backward()
                stop_on_non_finite(loss, targets, env, epoch, micro,
                                   [images.relpaths[i] for i in batch["index"].tolist()])
                loss_sum += loss.detach()
                bar.update()
                if micro % 20 == 0 and not bar.disable:
                    bar.set_postfix(loss=f"{loss.item():.3f}")
                if not last_micro:
                    continue
                lr = optimizer.param_groups[0]["lr"]
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                state["updates"] += 1
                scheduler.step_update(num_updates=state["updates"])
                if on_update is not None:
                    on_update(model, state["updates"])
                checkpoint_now, stop = pacer.poll()
                if checkpoint_now:
                    state["position"] = {"micro": micro + 1, "loss_sum": loss_sum.item(),
                                         "teacher_seconds": teacher_seconds, "lr": lr,
                                         "seconds": carried["seconds"] + time.perf_counter() - started,
                                         "rng": all_gather(rng_state(device), env)}
                    if skip_unreadable:
                        state["skipped"] = merged(all_gather(state["skipped"], env))
                    if env.is_main:
                        save_checkpoint(run.checkpoint_path, checkpoint_state())
                    state["position"] = None
                    pacer.saved()
                    if stop:
                        log(f"stopped by {pacer.signal_name or 'another rank'} in epoch {epoch + 1} after step "
                            f"{micro + 1}; rerunning the same command resumes there")
                        raise Preempted(f"checkpoint written in epoch {epoch + 1} after step {micro + 1} to "
                                        f"{run.checkpoint_path}; rerun the same command to resume",
                                        signal_name=pacer.stopped_by)
            if cuda:
                torch.cuda.synchronize(device)
            seconds = carried["seconds"] + time.perf_counter() - started
            probed_wall, others_cpu, cpus = probe.others() or (0.0, 0.0, 0)
            bar.close()
            broadcast_buffers(model, env)
            loss_total, teacher_total, seconds_total, probed_total, others_total = all_reduce_sum(
                [loss_sum.item(), teacher_seconds, seconds, probed_wall, others_cpu], env)
            # ranks run in lock-step, so their clocks agree closely: keep the mean
            seconds, teacher_seconds = seconds_total / env.world_size, teacher_total / env.world_size
            state["train_seconds"] += seconds
            state["device_seconds"]["train_seconds"] += seconds * env.world_size
            state["device_seconds"]["teacher_seconds"] += teacher_seconds * env.world_size
            # the part of an epoch before a mid-epoch resume is not probed; the share is over what was
            contention = state.setdefault("contention", {"wall": 0.0, "others": 0.0, "cpus": 0})
            contention["wall"] += probed_total / env.world_size
            contention["others"] += others_total / env.world_size
            contention["cpus"] = contention["cpus"] or cpus
            state["teacher_seconds"] += teacher_seconds
            if skip_unreadable:
                state["skipped"] = merged(all_gather(state["skipped"], env))
            entry = {"epoch": epoch + 1, "updates": state["updates"],
                     "train_loss": loss_total / (micro_steps * env.world_size),
                     "lr": lr, "seconds": round(seconds, 3),
                     "teacher_seconds": round(teacher_seconds, 3),
                     "images_per_second": micro_steps * per_device * env.world_size / seconds,
                     OTHERS_CPU_SHARE: others_share(probed_total / env.world_size, others_total / env.world_size,
                                                    cpus)}
            state["epoch"] = epoch + 1
            state["history"].append(entry)
            if env.is_main:
                save_checkpoint(run.checkpoint_path, checkpoint_state())
                pacer.saved()
            # every evaluation comes after its epoch's checkpoint, so a failing one (a GPU out of memory at
            # resources.batch_size_eval) never costs training: the rerun evaluates the epoch first
            epoch_end_evaluation(entry, epochs, eval_every, model, data, monitor)
            if env.is_main:
                write_history(run, state["history"])
                val = f" val top-1 {entry['val_top1']:.2f}" if entry.get("val_top1") is not None else ""
                skipped = f" ({len(state['skipped'])} unreadable images skipped)" if state["skipped"] else ""
                log(f"epoch {epoch + 1}/{epochs} loss {entry['train_loss']:.4f} lr {entry['lr']:.4g}{val} "
                    f"{entry['images_per_second']:.0f} img/s {seconds:.1f}s{skipped}")
    finally:
        pacer.close()

    if state["final_metrics"] is None:  # trained to the end; evaluated once, also after a resume
        eval_started = time.perf_counter()
        state["final_metrics"] = evaluate_model(model, data.eval_sets, **monitor)
        last = state["history"][-1]
        last["val_top1"] = state["final_metrics"].get("imagenet_top1")
        last["eval_seconds"] = round(last["eval_seconds"] + time.perf_counter() - eval_started, 3)
        if env.is_main:
            save_checkpoint(run.checkpoint_path, checkpoint_state())
            write_history(run, state["history"])
            final = state["final_metrics"]
            log("evaluated: " + (", ".join(headline(final, e.name) for e in data.eval_sets) or "no evaluation set"))
    if env.is_main:
        save_model(model, train_cfg["model"], num_classes, run.dir / MODEL_FILE)
    if env.distributed:
        torch.distributed.barrier()
    probed = state.get("contention")  # absent from a checkpoint written before the probe existed
    return {**state["final_metrics"],
            "train_seconds": round(state["train_seconds"], 3),
            "teacher_seconds": round(state["teacher_seconds"], 3),
            "device_seconds": {key: round(value, 3) for key, value in state["device_seconds"].items()},
            "train_images_per_second": state["updates"] * int(train_cfg["batch_size"]) / state["train_seconds"],
            # other processes' share of the machine while this run was timed (None: not measured)
            OTHERS_CPU_SHARE: others_share(probed["wall"], probed["others"], probed["cpus"]) if probed else None,
            "train_images": len(images), "epochs": epochs, "updates": state["updates"],
            # the spec fixes the global batch; how it was split is recorded beside the result
            "world_size": env.world_size, "per_device_batch": per_device, "global_batch": int(train_cfg["batch_size"]),
            "final_train_loss": state["history"][-1]["train_loss"],
            # only where skipping is on: the metrics of every other run keep their keys
            **({"skipped_images": len(state["skipped"]), "skipped_files": sorted(state["skipped"])}
               if skip_unreadable else {})}
