"""`coinfer split`: train a backbone and a bottleneck per split point, write the bundle and report."""

from __future__ import annotations

import argparse

from coinfer.core.device import DEVICE_CHOICES
from coinfer.server.split.backbones import BACKBONES


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "split",
        help="train a backbone and an autoencoder bottleneck at each split point; write a bundle",
        description="Train (or load) a backbone, then an autoencoder at each candidate split point with the "
        "backbone frozen, and write a bundle with head, encoder, decoder and tail parts per point and "
        "BUNDLE/report.json. Point 0 uploads the raw image; the last point runs everything on the device.",
    )
    p.add_argument("--backbone", default="resnet18", help=f"one of {', '.join(BACKBONES)} (default resnet18)")
    p.add_argument("--dataset", default=None, help="dataset name (default digits)")
    p.add_argument("--data-dir", default=None, help="dataset folder or file, where the dataset needs one")
    p.add_argument("--out", required=True, metavar="BUNDLE", help="bundle folder to write")
    p.add_argument("--points", nargs="+", default=None, metavar="P",
                   help="candidate points by index or name, e.g. '1 3' or '1,3' (default: all four)")
    p.add_argument("--bits", type=int, choices=(8, 4, 2), default=None, help="latent quantisation bits (default 4)")
    p.add_argument("--compression", type=float, default=None,
                   help="target fp32 bytes / wire bytes per point (default 64)")
    p.add_argument("--bottleneck", choices=("auto", "paper", "ours"), default=None,
                   help="bottleneck design; auto trains both and keeps the better (default auto)")
    p.add_argument("--no-zlib", action="store_true", help="never add the codec's zlib stage")
    p.add_argument("--width-mult", type=float, default=None, help="backbone width multiplier (default 0.25)")
    p.add_argument("--weights", default=None, help="backbone state dict (.safetensors) instead of training")
    p.add_argument("--epochs", type=int, default=None, help="backbone training epochs")
    p.add_argument("--recon-steps", type=int, default=None, help="bottleneck reconstruction-only steps")
    p.add_argument("--distill-steps", type=int, default=None, help="bottleneck steps with distillation")
    p.add_argument("--finetune-steps", type=int, default=None, help="joint fine-tuning steps per point (default 0)")
    p.add_argument("--max-train-images", type=int, default=None,
                   help="training images used for the bottlenecks (0 = all; default 16000)")
    p.add_argument("--test-images", type=int, default=None, help="test images to measure on (0 = all)")
    p.add_argument("--seed", type=int, default=None, help="seed of splits and training (default 0)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for training (default 1: these small models train fastest "
                   "single-threaded, and much slower on shared, oversubscribed cores; 0 = torch's default)")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="cpu",
                   help="where the backbone, bottlenecks and fine-tuning train (default cpu; auto = cuda when "
                   "present); measurements and the bundle are on the CPU either way")
    p.add_argument("--quick", action="store_true", help="digits, short training: a few minutes on 2 cores")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(handler=_run)


def config_from_args(args: argparse.Namespace):
    """The SplitConfig an argument namespace asks for (``--quick`` first, explicit flags on top)."""
    import dataclasses

    from coinfer.core.training import with_loop
    from coinfer.server.split.backbones import check_backbone
    from coinfer.server.split.pipeline import SplitConfig, quick_config

    check_backbone(args.backbone)
    config = quick_config() if args.quick else SplitConfig()
    changes: dict = {"backbone": args.backbone, "overwrite": args.overwrite}
    for flag, key in (("dataset", "dataset"), ("data_dir", "data_dir"), ("bits", "bits"),
                      ("compression", "compression"), ("bottleneck", "bottleneck"), ("width_mult", "width_mult"),
                      ("weights", "weights"), ("max_train_images", "max_train_images"),
                      ("test_images", "test_images"), ("seed", "seed")):
        if getattr(args, flag) is not None:
            changes[key] = getattr(args, flag)
    if args.points is not None:
        changes["points"] = tuple(piece for item in args.points for piece in item.split(",") if piece)
    if args.no_zlib:
        changes["compress"] = False
    progress = not args.no_progress
    device = args.device
    backbone_train = dataclasses.replace(config.backbone_train, progress=progress, device=device)
    if args.epochs is not None:
        backbone_train = dataclasses.replace(backbone_train, epochs=args.epochs)
    bottleneck_train = with_loop(config.bottleneck_train, progress=progress, device=device)
    if args.recon_steps is not None:
        bottleneck_train = dataclasses.replace(bottleneck_train, recon_steps=args.recon_steps)
    if args.distill_steps is not None:
        bottleneck_train = dataclasses.replace(bottleneck_train, distill_steps=args.distill_steps)
    finetune = with_loop(config.finetune, progress=progress, device=device)
    if args.finetune_steps is not None:
        finetune = dataclasses.replace(finetune, steps=args.finetune_steps)
    changes.update(backbone_train=backbone_train, bottleneck_train=bottleneck_train, finetune=finetune)
    return dataclasses.replace(config, **changes)


def _run(args: argparse.Namespace) -> int:
    import torch

    from coinfer.server.split.pipeline import run_split

    config = config_from_args(args)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    report = run_split(config, args.out)
    print(report.table())
    print(f"bundle written to {args.out} (report: {args.out}/report.json, {report.timings_s['total_s']:.0f} s)")
    return 0
