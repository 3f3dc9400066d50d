"""Commands `relabel` (generate label maps with a machine annotator), `labelmaps verify|convert|info` and
`check-labelmaps` (are stored maps [k, H, W] or [k, W, H]?)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from repro.data.folders import read_classes
from repro.imagefiles import list_images
from repro.labelmaps.annotator import LITE0, build_annotator
from repro.labelmaps.generate import FORMATS, generate_labelmaps
from repro.labelmaps.convert import derive_store, official_to_packed, packed_to_official
from repro.labelmaps.errors import LabelMapError
from repro.labelmaps.orientation import check_orientation
from repro.labelmaps.quantize import DTYPES
from repro.labelmaps.reader import open_labelmaps
from repro.labelmaps.verification import verify

ERRORS = (LabelMapError, FileNotFoundError, FileExistsError, KeyError, TypeError, ValueError)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "relabel", help="label maps of an image folder from a machine annotator (Section 3.1)",
        description="Resize every image of <data>/<split> whole to --input-size, run the annotator with its head "
                    "as a 1x1 convolution, keep the top-k logits and class ids at every position. "
                    "Rerun the same command to resume an interrupted run.")
    p.add_argument("--annotator", required=True,
                   help=f"a timm model name, {LITE0!r} (EfficientNet-Lite0 with packaged ImageNet weights), or a "
                        f"checkpoint saved by repro.models.save_model")
    p.add_argument("--pretrained", action="store_true",
                   help="load a timm model's hub weights (paper scale: tf_efficientnet_l2.ns_jft_in1k_475); a timm "
                        "name needs this or --random-weights")
    p.add_argument("--random-weights", action="store_true",
                   help="label with a timm model's random initialisation, on purpose (tests, timing)")
    p.add_argument("--arch", default=None,
                   help="the timm architecture of a plain state-dict checkpoint (timm's or torchvision's own file), "
                        "e.g. resnet50")
    p.add_argument("--class-map", default=None,
                   help="keep only the data's classes (the wnid folders of --data) of a head of other classes: "
                        "imagenet-1k, or a file of the head's wnids; without it the maps carry the head's own ids")
    p.add_argument("--data", required=True, type=Path, help="image folder root, holding <split>/<wnid>/<image>")
    p.add_argument("--split", default="train", help="folder under --data to annotate (default train)")
    p.add_argument("--out", required=True, type=Path, help="output store directory")
    p.add_argument("--input-size", type=int, default=475, help="square input size in pixels (paper 475)")
    p.add_argument("--output-stride", type=int, choices=(8, 16, 32), default=None,
                   help="annotator stride: grid = input size / stride (default: the model's own, 32)")
    p.add_argument("--topk", type=int, default=5, help="classes kept per position (paper 5)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="fp32", help="stored value type (default fp32)")
    p.add_argument("--batch-size", type=int, default=64, help="images per annotator forward pass (default 64)")
    p.add_argument("--workers", type=int, default=0, help="image-loading processes (default 0)")
    p.add_argument("--format", choices=FORMATS, default="packed",
                   help="packed store (default) or official <wnid>/<stem>.pt files")
    p.add_argument("--limit", type=int, default=None, help="annotate only the first N images (sorted)")
    p.add_argument("--device", default=None, help="torch device (default cuda if available)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--skip-unreadable", action="store_true",
                   help="give an image that cannot be read a blank map, listed in the store's index, instead of "
                        "stopping (packed format only)")
    p.set_defaults(func=_relabel)

    p = subparsers.add_parser("labelmaps", help="check, convert and describe label-map stores")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = actions.add_parser("verify", help="check shapes, class ids, finiteness and coverage of a dataset; "
                                          "exit 1 on any problem")
    a.add_argument("store", type=Path)
    a.add_argument("--data", type=Path, default=None, help="image folder root whose images must all have maps")
    a.add_argument("--split", action="append", default=None, help="split(s) under --data (default train)")
    a.add_argument("--num-classes", type=int, default=None,
                   help="the classes the ids must lie below (default: the store's recorded count, else 1000)")
    a.set_defaults(func=_verify)
    a = actions.add_parser("convert", help="official <-> packed, or a packed store with fewer classes per "
                                           "position / another dtype (Table 6's variants)")
    a.add_argument("source", type=Path)
    a.add_argument("dest", type=Path)
    a.add_argument("--to", choices=FORMATS, default=None, help="output format (default: the other one)")
    a.add_argument("--topk", type=int, default=None, help="keep the top k' <= k classes per position")
    a.add_argument("--dtype", choices=tuple(DTYPES), default=None, help="value type of the packed output")
    a.add_argument("--prefix", default="train/", help="official -> packed: image path prefix (default train/)")
    a.add_argument("--ext", default=".JPEG", help="official -> packed: image file extension (default .JPEG)")
    a.add_argument("--transpose", action="store_true",
                   help="official -> packed: the files hold maps as [k, W, H]; store them as [k, H, W]")
    a.add_argument("--num-classes", type=int, default=None,
                   help="the classes the ids must lie below (default: the store's recorded count, else 1000)")
    a.add_argument("--overwrite", action="store_true", help="replace an existing destination")
    a.set_defaults(func=_convert)
    a = actions.add_parser("info", help="settings and storage size of a store")
    a.add_argument("store", type=Path)
    a.add_argument("--num-classes", type=int, default=None,
                   help="the classes the ids must lie below (default: the store's recorded count, else 1000)")
    a.set_defaults(func=_info)

    p = subparsers.add_parser(
        "check-labelmaps",
        help="are stored label maps [k, H, W] or [k, W, H]? (its verdict says which labelmap.transpose to set)",
        description="Compare the labelled class's probability inside vs outside each training image's boxes with "
                    "the maps read as stored ([k, H, W]) and transposed ([k, W, H]); a sign test over images "
                    "gives the verdict.")
    p.add_argument("--maps", required=True, type=Path, help="label maps: a packed store or an official directory")
    p.add_argument("--boxes", required=True, type=Path,
                   help="ImageNet's LOC_train_solution.csv (ImageId,PredictionString; boxes in pixels)")
    p.add_argument("--images", required=True, type=Path,
                   help="image folder root holding train/<wnid>/<ImageId>.JPEG (sizes and class order)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images (sorted)")
    p.set_defaults(func=_check_labelmaps)


def _fail(error: BaseException) -> int:
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    print(f"error: {message}", file=sys.stderr)
    return 2


def _print_summary(summary: dict) -> None:
    for key, value in summary.items():
        if key != "problems":
            print(f"{key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")


def _is_timm_name(annotator: str) -> bool:
    """Neither the packaged Lite0 nor a checkpoint file (one that is absent is reported as such by the loader)."""
    if annotator.startswith(("hf-hub:", "hf_hub:")):  # a Hub repository of timm weights
        return True
    return (annotator != LITE0 and not Path(annotator).exists() and "/" not in annotator
            and not annotator.endswith((".pt", ".pth", ".pth.tar", ".bin", ".safetensors", ".ckpt")))


def _relabel(args, experiments=None) -> int:
    try:
        if args.limit is not None and args.limit < 1:
            raise ValueError(f"--limit must be at least 1, got {args.limit}")
        relpaths = list_images(args.data, args.split)[:args.limit]
        if not relpaths:
            raise LabelMapError(f"no images under {args.data / args.split}")
        wnids = read_classes(args.data)[0] if args.class_map else None
        if args.pretrained and args.random_weights:
            raise ValueError("--pretrained and --random-weights: choose one")
        if _is_timm_name(args.annotator) and not (args.pretrained or args.random_weights):
            raise ValueError(f"--annotator {args.annotator} is a timm model name without weights: add --pretrained "
                             "for its published weights, or --random-weights to label with a random model on purpose")
        annotator = build_annotator(args.annotator, pretrained=args.pretrained, output_stride=args.output_stride,
                                    arch={"name": args.arch, "kwargs": {}} if args.arch else None, wnids=wnids,
                                    class_map=args.class_map)
        out = generate_labelmaps(annotator, relpaths, args.data, args.out, input_size=args.input_size,
                                 topk=args.topk, dtype=args.dtype, batch_size=args.batch_size,
                                 workers=args.workers, fmt=args.format, device=args.device,
                                 overwrite=args.overwrite, skip_unreadable=args.skip_unreadable)
        _print_summary(open_labelmaps(out).describe())
    except ERRORS as error:
        return _fail(error)
    return 0


def _verify(args, experiments=None) -> int:
    try:
        report = verify(args.store, image_root=args.data, splits=args.split or ["train"],
                        num_classes=args.num_classes, raise_on_failure=False)
    except ERRORS as error:
        return _fail(error)
    _print_summary(report)
    for problem in report["problems"][:20]:
        print(f"problem: {problem}", file=sys.stderr)
    if len(report["problems"]) > 20:
        print(f"... {len(report['problems']) - 20} more problems", file=sys.stderr)
    return 0 if report["ok"] else 1


def _convert(args, experiments=None) -> int:
    try:
        source = open_labelmaps(args.source, args.num_classes)
        target = args.to or ("packed" if source.format == "official" else "official")
        if target == "official":
            if source.format == "official":
                raise LabelMapError(f"{args.source} is already in the official format")
            if args.topk is not None or args.dtype not in (None, "fp32"):
                raise LabelMapError("the official format keeps a store's top-k and fp32 values; "
                                    "derive a packed store first for --topk/--dtype")
            out = packed_to_official(args.source, args.dest, overwrite=args.overwrite)
        elif source.format == "official":
            out = official_to_packed(args.source, args.dest, dtype=args.dtype or "fp32", topk=args.topk,
                                     prefix=args.prefix, ext=args.ext, transpose=args.transpose,
                                     num_classes=args.num_classes, overwrite=args.overwrite)
        else:
            out = derive_store(args.source, args.dest, topk=args.topk, dtype=args.dtype, overwrite=args.overwrite)
        _print_summary(open_labelmaps(out, args.num_classes).describe())
    except ERRORS as error:
        return _fail(error)
    return 0


def _info(args, experiments=None) -> int:
    try:
        _print_summary(open_labelmaps(args.store, args.num_classes).describe())
    except ERRORS as error:
        return _fail(error)
    return 0


def _check_labelmaps(args, experiments=None) -> int:
    try:
        report = check_orientation(open_labelmaps(args.maps), args.boxes, args.images, limit=args.limit,
                                   progress=sys.stderr.isatty())
    except ERRORS as error:
        return _fail(error)
    print("\n".join(report.lines()))
    return 0


def main(argv=None) -> int:
    """These commands on their own: `python -m repro.labelmaps.cli relabel ...`."""
    parser = argparse.ArgumentParser(prog="python -m repro.labelmaps.cli")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
