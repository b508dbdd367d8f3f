"""Split-point benchmark: rate-accuracy of both bottleneck designs at every point of each backbone.

For each backbone (ResNet18, VGG11, MobileNetV2 on Fashion-MNIST by default): train it, then at
each of the four candidate points train both bottleneck designs at each element reduction, and
measure every one at every bit width on the test split through the real codec (one message per
image). From those rows come the issue's targets (``targets.py``), a JSON file and one
rate-accuracy PNG per backbone.

Defaults: thin backbones, a subset of the training and test images, 1,800 training steps per
bottleneck (600 reconstruction, 1,200 with distillation; 400 left the paper's 1x1 bottleneck and
ours short of the accuracy target at 64x), three element reductions, and training on a GPU
when there is one (``device='auto'``): about 10 minutes for all three backbones on one H100,
most of it the CPU-side codec evaluation. On 2 CPU cores the same settings take hours (the last
nine MobileNetV2 bottlenecks alone took 30 minutes); ``--recon-steps 300 --distill-steps 100
--reductions 5,20`` is the under-an-hour CPU budget. Backbone weights and every measured row are
kept in the output folder, so a rerun with the same settings skips what is done (an interrupted
run resumes, on any device: the device is not part of the cache keys).

    python -m coinfer.bench.split --out runs/bench/split [--quick] [--device cpu|cuda|auto]

On a GPU the worker processes share it; evaluation through the codec stays on the CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from coinfer.core.training import TrainConfig, with_loop
from coinfer.bench.split_targets import Row, compression_target, equal_payload
from coinfer.server.split.train import BottleneckTrainConfig

PAPER_COMPRESSION = "32x-128x (MAHPPO's C/32 channels, 8-bit or less; accuracy cost not published)"


@dataclass
class BenchConfig:
    """What the split benchmark runs."""

    dataset: str = "fashion-mnist"
    """Dataset name."""
    data_dir: str | None = None
    """Dataset folder where it needs one."""
    backbones: tuple[str, ...] = ("resnet18", "vgg11", "mobilenetv2")
    """Backbones measured, one table and one PNG each."""
    width_mult: float = 0.25
    """Backbone width multiplier."""
    backbone_train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=3, lr=3e-3, batch_size=128, desc="backbone"))
    """Backbone training."""
    train_images: int = 20000
    """Training images for the backbone (0 = all)."""
    bottleneck_train_images: int = 8000
    """Training images whose features train the bottlenecks."""
    test_images: int = 3000
    """Test images every row is measured on (0 = all)."""
    reductions: tuple[float, ...] = (5.0, 10.0, 20.0)
    """Element reductions (feature elements / latent elements) of the bottlenecks. At 8, 4 and 2
    bits these give nominal compressions of 20/40/80x, 40/80/160x and 80/160/320x: every bit
    width has a bottleneck on each side of 64x once the message header is paid."""
    bits: tuple[int, ...] = (8, 4, 2)
    """Codec bit widths every bottleneck is measured at."""
    designs: tuple[str, ...] = ("paper", "ours")
    """Bottleneck designs compared."""
    bottleneck_train: BottleneckTrainConfig = field(
        default_factory=lambda: BottleneckTrainConfig(recon_steps=600, distill_steps=1200, qat_bits=(8, 4, 2)))
    """Bottleneck training ("ours" takes turns over the bit widths; one bottleneck serves all)."""
    min_compression: float = 64.0
    """Compression of the issue's first target."""
    max_drop: float = 0.01
    """Accuracy loss allowed at that compression (0.01 = 1 pt)."""
    threads: int = 1
    """Torch threads per worker (small models train fastest single-threaded, especially on shared cores)."""
    workers: int = 2
    """Backbones measured at the same time, one process each (2 cores: two single-threaded workers)."""
    seed: int = 0
    """Seeds splits, subsets and training."""
    progress: bool = True
    """Show progress bars."""
    device: str = "auto"
    """Where backbones and bottlenecks train: 'cpu', 'cuda' or 'auto' (overrides the train configs'
    own device; not part of the cache keys, a GPU result is the same experiment)."""


def quick_bench_config() -> BenchConfig:
    """Seconds-to-minutes settings on digits: checks the benchmark runs; its figures are not the targets'."""
    return BenchConfig(
        dataset="digits", backbones=("resnet18",), train_images=0, bottleneck_train_images=0, test_images=0,
        backbone_train=TrainConfig(epochs=12, lr=3e-3, batch_size=64, desc="backbone"),
        bottleneck_train=with_loop(BottleneckTrainConfig(recon_steps=100, distill_steps=40, qat_bits=(8, 4, 2)), batch_size=64),
        reductions=(4.0, 16.0),
    )


_NOT_IN_KEY = ("progress", "desc", "device")
"""Train-config fields that do not change what is measured, so a rerun with other values reuses the caches."""
_BOTTLENECK_LOOP_FIELDS = ("batch_size", "lr", "weight_decay", "seed")
"""The loop fields a bottleneck's training reads (its budget and warm-up come from its own steps)."""


def _train_key(train: TrainConfig) -> dict:
    """The recipe fields that change what is trained; unset ones (None) are left out, so caches
    written before a field existed stay valid."""
    return {k: v for k, v in asdict(train).items() if k not in _NOT_IN_KEY and v is not None}


def _bottleneck_key(train: BottleneckTrainConfig) -> dict:
    """A bottleneck recipe as one flat dict: its own fields and the loop fields it reads."""
    stage = {k: v for k, v in asdict(train).items() if k != "loop"}
    return {**stage, **{k: getattr(train.loop, k) for k in _BOTTLENECK_LOOP_FIELDS}}


def _settings_key(config: BenchConfig, backbone: str) -> dict:
    return {"backbone": backbone, "dataset": config.dataset, "width_mult": config.width_mult,
            "train_images": config.train_images, "seed": config.seed,
            "backbone_train": _train_key(config.backbone_train)}


def _backbone(config: BenchConfig, name: str, splits, folder: Path):
    """Train the backbone, or reuse weights a previous run with the same settings left in ``folder``."""
    from safetensors.torch import save_file

    from coinfer.core.models import build_model
    from coinfer.core.training import train_classifier
    from coinfer.server.split.backbones import backbone_config, load_weights
    from coinfer.server.split.train import split_subset

    model = build_model(backbone_config(name, splits, config.width_mult))
    weights, sidecar = folder / f"{name}-backbone.safetensors", folder / f"{name}-backbone.json"
    key = _settings_key(config, name)
    if weights.is_file() and sidecar.is_file() and json.loads(sidecar.read_text()) == key:
        load_weights(model, weights)
        return model.eval(), True
    train = dataclasses.replace(splits, train=split_subset(splits.train, config.train_images, config.seed))
    train_classifier(model, train, dataclasses.replace(config.backbone_train, seed=config.seed,
                                                       progress=config.progress, desc=f"{name} backbone"))
    folder.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), str(weights))
    sidecar.write_text(json.dumps(key, indent=2) + "\n")
    return model.eval(), False


def _rows_key(config: BenchConfig, name: str) -> dict:
    """Everything a row depends on: a rerun with the same key reuses the rows already measured."""
    return {**_settings_key(config, name), "bottleneck_train_images": config.bottleneck_train_images,
            "test_images": config.test_images, "bits": list(config.bits),
            "bottleneck_train": _bottleneck_key(config.bottleneck_train)}


class _RowCache:
    """Rows measured so far for one backbone, saved after every bottleneck so a run can resume."""

    def __init__(self, path: Path, key: dict, valid: bool) -> None:
        self.path, self.key = path, key
        self.rows: list[Row] = []
        if valid and path.is_file():
            data = json.loads(path.read_text())
            if data.get("key") == json.loads(json.dumps(key)):
                self.rows = [Row(**{**r, "latent_shape": tuple(r["latent_shape"])}) for r in data["rows"]]

    def get(self, point: int, design: str, reduction: float, bits: tuple[int, ...]) -> list[Row] | None:
        found = [r for r in self.rows if (r.point, r.design, r.reduction) == (point, design, reduction)]
        return found if sorted(r.bits for r in found) == sorted(bits) else None

    def add(self, rows: list[Row]) -> None:
        self.rows += rows
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"key": self.key, "rows": [asdict(r) for r in self.rows]}, indent=1) + "\n")
        tmp.replace(self.path)


def bench_backbone(config: BenchConfig, name: str, splits, folder: Path) -> dict:
    """Every row of one backbone, its targets and its PNG (rows of an interrupted run are reused)."""
    from coinfer.core.measure import accuracy, predict
    from coinfer.core.data import to_float
    from coinfer.server.split import sizing
    from coinfer.bench.split_plots import rate_accuracy_png
    from coinfer.server.split.train import compute_point_features, evaluate_bottleneck, train_bottleneck

    started = time.perf_counter()
    model, reused = _backbone(config, name, splits, folder)
    backbone_s = time.perf_counter() - started
    backbone_acc = accuracy(predict(model, to_float(splits.test.x)), splits.test.y)
    print(f"[split bench] {name}: backbone test accuracy {100 * backbone_acc:.2f}% "
          f"({'reused' if reused else f'trained in {backbone_s:.0f} s'})", flush=True)
    cache = _RowCache(folder / f"{name}-rows.json", _rows_key(config, name), valid=reused)
    rows: list[Row] = []
    rows_reused = 0
    fp32: dict[int, int] = {}
    last = model.num_points - 1
    train_cfg = with_loop(config.bottleneck_train, seed=config.seed, progress=config.progress)
    for point in range(1, last):
        shape = model.feature_shape(point)
        fp32[point] = sizing.fp32_bytes(shape)
        feats = tail = None
        for design in config.designs:
            seen = set()
            for reduction in config.reductions:
                bcfg = sizing.for_reduction(shape, design, reduction)
                if bcfg in seen:  # a narrow feature gives the same one-channel latent twice
                    continue
                seen.add(bcfg)
                done = cache.get(point, design, reduction, config.bits)
                if done is not None:
                    rows += done
                    rows_reused += len(done)
                    continue
                if feats is None:
                    feats = compute_point_features(model, point, splits, config.bottleneck_train_images, config.seed,
                                                   include_val=False, device=train_cfg.loop.device)
                    tail = model.segment(point, last)
                t0 = time.perf_counter()
                ae, _ = train_bottleneck(bcfg, feats, tail, train_cfg, desc=f"{name} p{point} {design} /{reduction:g}")
                train_s = time.perf_counter() - t0
                measured = []
                for bits in config.bits:
                    ev = evaluate_bottleneck(ae, tail, feats.test, feats.test_labels, bits, None)
                    r = Row(point, model.point_names[point], design, reduction, bcfg.latent_shape(1), bits,
                            ev.accuracy, round(ev.payload_bytes_mean, 2),
                            round(fp32[point] / ev.payload_bytes_mean, 2), round(train_s, 1))
                    measured.append(r)
                    print(f"[split bench] {name} p{point} {design:<5} /{reduction:<4g} {bits}-bit latent "
                          f"{list(r.latent_shape)}: acc {100 * r.accuracy:6.2f}%  {r.payload_bytes:8.1f} B  "
                          f"{r.compression:7.1f}x", flush=True)
                cache.add(measured)
                rows += measured
        del feats
    comp = compression_target(rows, backbone_acc, config.min_compression, config.max_drop)
    eq = equal_payload(rows)
    png = rate_accuracy_png(folder / f"rate-accuracy-{name}.png", name, config.dataset, rows, backbone_acc, fp32,
                            config.min_compression)
    return {
        "backbone_accuracy": backbone_acc,
        "backbone_reused": reused,
        "rows_reused": rows_reused,
        "point_names": list(model.point_names),
        "point_fp32_bytes": fp32,
        "rows": [asdict(r) for r in rows],
        "compression_target": {
            "min_compression": comp.min_compression, "max_drop_pt": 100 * comp.max_drop,
            "points_met": comp.points_met,
            "best_per_point": {p: (asdict(r) if r else None) for p, r in comp.best_per_point.items()},
        },
        "equal_payload": [asdict(e) | {"ours_better": e.ours_better} for e in eq],
        "png": str(png),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def _target_rows(name: str, result: dict, config: BenchConfig) -> list[dict]:
    comp = result["compression_target"]
    met_points = comp["points_met"]
    best = comp["best_per_point"]
    detail = "; ".join(
        f"p{p}: {100 * r['accuracy']:.2f}% at {r['compression']:.0f}x ({r['design']} {r['bits']}-bit)" if r else f"p{p}: none"
        for p, r in best.items())
    eq = result["equal_payload"]
    won = [e["point"] for e in eq if e["ours_better"]]
    eq_detail = "; ".join(f"p{e['point']}: {e['wins']}-{e['losses']}" + (
        f" ({e['mean_gap_pt']:+.2f} pt)" if e["mean_gap_pt"] is not None else "") for e in eq)
    return [
        {"name": f"{name}: points with compression >= {config.min_compression:g}x within "
                 f"{100 * config.max_drop:g} pt of the backbone",
         "ours": f"{len(met_points)} {met_points} (backbone {100 * result['backbone_accuracy']:.2f}%; {detail})",
         "target": ">= 2", "anchor": PAPER_COMPRESSION, "met": len(met_points) >= 2},
        {"name": f"{name}: points where our bottleneck beats the paper's at equal payload",
         "ours": f"{len(won)} of {len(eq)} {won} (wins-losses: {eq_detail})",
         "target": ">= 3 of 4", "anchor": "MAHPPO 1x1-conv bottleneck, same training budget", "met": len(won) >= 3},
        {"name": f"{name}: rate-accuracy plot", "ours": result["png"], "target": "one PNG per backbone",
         "anchor": "-", "met": Path(result["png"]).is_file()},
    ]


def _bench_worker(config: BenchConfig, name: str, out: Path) -> dict:
    """One backbone in its own process (or in this one): load the data, run, return its result."""
    import torch

    from coinfer.core.data import load_dataset
    from coinfer.server.split.train import split_subset

    previous_threads = torch.get_num_threads()
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    try:
        splits = load_dataset(config.dataset, config.data_dir, seed=config.seed)
        splits = dataclasses.replace(splits, test=split_subset(splits.test, config.test_images, config.seed))
        return bench_backbone(config, name, splits, out)
    finally:
        torch.set_num_threads(previous_threads)


def run_benchmark(out_dir: str | Path, quick: bool = False, config: BenchConfig | None = None) -> dict:
    """Run the benchmark into ``out_dir`` (JSON, PNGs, backbone weights) and return its summary."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    config = config or (quick_bench_config() if quick else BenchConfig())
    # One device for everything, also in the settings written out: the train configs carry it from here on.
    config = dataclasses.replace(
        config, backbone_train=dataclasses.replace(config.backbone_train, device=config.device),
        bottleneck_train=with_loop(config.bottleneck_train, device=config.device))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    summary: dict = {"part": "split", "quick": quick, "dataset": config.dataset,
                     "settings": asdict(config), "backbones": {}, "targets": []}
    results: dict[str, dict] = {}

    def record(name: str, result: dict) -> None:
        results[name] = result
        summary["backbones"] = {b: results[b] for b in config.backbones if b in results}
        summary["targets"] = [row for b in summary["backbones"] for row in _target_rows(b, results[b], config)]
        summary["wall_s"] = round(time.perf_counter() - started, 1)
        # Written after every backbone, so a long run shows its progress.
        (out / "split.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")

    workers = min(config.workers, len(config.backbones))
    if workers <= 1:
        for name in config.backbones:
            record(name, _bench_worker(config, name, out))
    else:
        # Separate processes, not threads: torch keeps one thread pool per process.
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_bench_worker, config, name, out): name for name in config.backbones}
            for future in as_completed(futures):
                record(futures[future], future.result())
    print_summary(summary)
    return summary


def print_summary(summary: dict) -> None:
    """Our figure beside each target."""
    print(f"\nsplit benchmark on {summary['dataset']}{' (quick: figures are not the targets)' if summary['quick'] else ''}")
    for row in summary["targets"]:
        mark = "MET " if row["met"] else "MISS"
        print(f"  [{mark}] {row['name']}\n         ours: {row['ours']}\n         target: {row['target']}"
              f"   anchor: {row['anchor']}")
    print(f"  wall time {summary.get('wall_s', 0):.0f} s")


def _reductions(text: str) -> tuple[float, ...]:
    """``--reductions``: a comma list of element reductions, each greater than 1."""
    try:
        values = tuple(float(piece) for piece in text.split(",") if piece.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of numbers, got {text!r}") from None
    if not values or any(not v > 1 for v in values):
        raise argparse.ArgumentTypeError(f"give one or more reductions, each greater than 1, got {text!r}")
    return values


def _steps(text: str) -> int:
    """A non-negative number of optimiser steps."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of steps, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"steps must be 0 or more, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line."""
    from coinfer.core.device import DEVICE_CHOICES

    parser = argparse.ArgumentParser(prog="python -m coinfer.bench.split", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/bench/split", help="output folder (JSON, PNGs, backbone weights)")
    parser.add_argument("--quick", action="store_true", help="digits, one backbone, short training")
    parser.add_argument("--backbones", default=None, help="comma list (default resnet18,vgg11,mobilenetv2)")
    parser.add_argument("--data-dir", default=None,
                        help="dataset folder (default: fashion-mnist's idx files under /usr/share/datasets)")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default=None,
                        help="where backbones and bottlenecks train (default auto: a GPU if torch sees one; evaluation stays on the CPU)")
    parser.add_argument("--reductions", type=_reductions, default=None,
                        help="comma list of bottleneck element reductions (default 5,10,20; --quick 4,16)")
    parser.add_argument("--recon-steps", type=_steps, default=None, help="bottleneck reconstruction-only steps")
    parser.add_argument("--distill-steps", type=_steps, default=None, help="bottleneck steps with distillation")
    parser.add_argument("--workers", type=int, default=None,
                        help="backbones measured at once, one process each (default 2: two cores)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The BenchConfig the parsed arguments ask for (``--quick`` first, explicit flags on top)."""
    from coinfer.core.errors import InvalidInput

    config = quick_bench_config() if args.quick else BenchConfig()
    if args.backbones:
        from coinfer.server.split.backbones import check_backbone

        config.backbones = tuple(check_backbone(b.strip()) for b in args.backbones.split(",") if b.strip())
    config.progress = not args.no_progress
    if args.data_dir is not None:
        config.data_dir = args.data_dir
    if args.device is not None:
        config.device = args.device
    if args.workers is not None:
        if args.workers < 1:
            raise InvalidInput(f"--workers must be >= 1, got {args.workers}")
        config.workers = args.workers
    if args.reductions is not None:
        config.reductions = args.reductions
    steps = {k: v for k, v in (("recon_steps", args.recon_steps), ("distill_steps", args.distill_steps)) if v is not None}
    if steps:
        config.bottleneck_train = dataclasses.replace(config.bottleneck_train, **steps)
    return config


def main(argv: list[str] | None = None) -> int:
    from coinfer.core.device import resolve_device
    from coinfer.core.errors import CoinferError

    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        resolve_device(config.device)  # no GPU for --device cuda: say so now, not inside a worker
    except CoinferError as exc:
        print(f"split bench: error: {exc}", file=sys.stderr)
        return 2
    run_benchmark(args.out, args.quick, config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
