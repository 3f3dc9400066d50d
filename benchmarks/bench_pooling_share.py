"""LabelPooling's share of a training step at the paper's recipe (issue 17, item 4; the paper says 0.5%, the
target is ≤ 0.2%): timm's ResNet-50 (random weights) at the paper profile's crop size, batch and precision (224 px,
256 per device, bf16 autocast on a GPU, channels-last), wrapped in DistributedDataParallel with one process, one
SGD step against reading that batch's maps from a packed store and LabelPooling them over RandomResizedCrop boxes
(`repro.costs.pooling_benchmark`, the `costs` experiment's measurement). The maps are EfficientNet-Lite0's top-5
15x15 maps of 4 real photos renumbered over 1,000 classes (`varied_label_maps`). Prints the medians and the
shares.

    python benchmarks/bench_pooling_share.py              # on a GPU machine (on a CPU: the same, very slowly)
    python benchmarks/bench_pooling_share.py --small      # a smoke test: batch 4 at 64 px, 64 maps, 2 repeats
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from repro.config import profile_config, with_changes
from repro.costs import pooling_benchmark
from repro.labelmaps.examples import example_label_maps, varied_label_maps
from repro.labelmaps.packed import write_packed

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import work_dir  # noqa: E402

CLASSES = 1000


def one_process_group() -> torch.device:
    """A process group of one (NCCL on a GPU, gloo on a CPU) on a free local port: DDP's all-reduce in each step."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    dist.init_process_group("nccl" if cuda else "gloo", rank=0, world_size=1, device_id=device if cuda else None)
    return device


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=1024, help="label maps in the store (default 1024)")
    parser.add_argument("--dtype", default="fp16", help="the store's dtype (default fp16)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--small", action="store_true", help="a smoke test: batch 4 at 64 px, 64 maps")
    args = parser.parse_args(argv)
    changes = {"train.model": {"name": "resnet50", "kwargs": {}}}  # timm's full ResNet-50, as the paper's
    if args.small:
        changes.update({"train.batch_size": 4, "train.crop_size": 64})
        args.maps, args.repeats = 64, 2
    cfg = with_changes(profile_config("paper"), changes)
    device = one_process_group()
    try:
        _, values, ids = example_label_maps()
        values, ids = varied_label_maps(values, ids, args.maps, num_classes=CLASSES, seed=0)
        with work_dir(None, "bench-pooling-share-") as work:
            store = write_packed(work / "maps", [f"n{i:08d}/{i}.JPEG" for i in range(args.maps)], values, ids,
                                 num_classes=CLASSES, dtype=args.dtype)
            wrap = (lambda model: DistributedDataParallel(model, device_ids=[device.index])) if device.type == "cuda" \
                else DistributedDataParallel
            measured = pooling_benchmark(cfg, store, CLASSES, repeats=args.repeats, warmup=3, wrap=wrap)
    finally:
        dist.destroy_process_group()
    step, read, pool = measured["train_step_seconds"], measured["read_seconds"], measured["pool_seconds"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, ResNet-50 at {cfg['train']['crop_size']} px, batch {measured['batch']}, amp "
          f"{cfg['train']['amp']}, channels-last {cfg['train']['channels_last']}, DDP with 1 process, "
          f"{args.dtype} store of {args.maps} top-5 15x15 maps; medians of {args.repeats}:")
    print(f"  training step  {step * 1e3:9.2f} ms")
    print(f"  read the maps  {read * 1e3:9.2f} ms  ({read / step:.2%} of a step; in loader workers, beside it)")
    print(f"  LabelPooling   {pool * 1e3:9.2f} ms  ({pool / step:.3%} of a step; target ≤ 0.2%)")


if __name__ == "__main__":
    main()
