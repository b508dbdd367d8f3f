"""`coinfer bench`: run every benchmark part and write one JSON per part plus REPORT.md.

Each part is a function ``run_benchmark(out_dir: Path, quick: bool) -> dict`` in its own role's
module; its dict carries a ``targets`` list of rows ``{name, ours, target, anchor, met}`` that the
report renders side by side (a row's ``ours_text``, when it has one, is shown instead of
``ours``). A part that fails is recorded as failed and the others still run; a part that cannot
run on this machine (the fleet placement bench without root) says ``"status": "skipped"`` with
the reason, which does not fail the run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import inspect
import json
import platform
import time
import traceback
from pathlib import Path

# name -> module with run_benchmark(out_dir, quick) (rl's is called run_benchmarks).
PARTS: dict[str, str] = {
    "dekd": "coinfer.bench.dekd",
    "dekd_shape": "coinfer.bench.dekd_shape",
    "split": "coinfer.bench.split",
    "rl": "coinfer.bench.rl",
    "runtime": "coinfer.bench.runtime",
    "reliability": "coinfer.bench.reliability",
    "fleet_placement": "coinfer.bench.fleet_placement",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="run the benchmarks and write runs/bench/REPORT.md")
    p.add_argument("--out", default="runs/bench", help="folder for the JSON files, plots and REPORT.md")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma list of parts to run (from: {', '.join(PARTS)})")
    p.add_argument("--quick", action="store_true", help="small settings: checks the benchmarks run, figures are not the targets'")
    p.add_argument("--jobs", type=int, default=None, help="rl part: worker processes for its training runs (default: one per core)")
    p.add_argument("--seeds", default=None, help="rl part: training seeds, comma list (default 0,1,2,3,4; dense and heterogeneous take the first 3)")
    p.add_argument("--sb3-seeds", default=None, help="rl part: sb3-ppo training seeds (default: as --seeds)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from coinfer.core.errors import InvalidInput

    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise InvalidInput(f"unknown benchmark part(s) {unknown}; choose from {', '.join(PARTS)}")
    extras = _part_options(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    for name in parts:
        print(f"== benchmark {name} ==", flush=True)
        started = time.perf_counter()
        try:
            module = importlib.import_module(PARTS[name])
            runner = getattr(module, "run_benchmark", None) or getattr(module, "run_benchmarks")
            accepted = inspect.signature(runner).parameters
            result = runner(out / name, quick=args.quick, **{k: v for k, v in extras.items() if k in accepted})
            status = "ok"
        except Exception as exc:  # one broken part must not hide the others' figures
            traceback.print_exc()
            result, status = {"error": f"{type(exc).__name__}: {exc}"}, "failed"
        result = dict(result)
        result.setdefault("status", status)
        result["wall_s"] = round(time.perf_counter() - started, 1)
        result["finished"] = dt.datetime.now().isoformat(timespec="seconds")
        (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        results[name] = result
    (out / "REPORT.md").write_text(render_report(with_earlier_parts(results, out), quick=args.quick))
    print(f"wrote {out / 'REPORT.md'}")
    return 0 if all(r.get("status") in ("ok", "skipped") for r in results.values()) else 1


def _part_options(args: argparse.Namespace) -> dict:
    """Options handed to the parts whose runner takes them (checked before any part runs)."""
    from coinfer.core.errors import InvalidInput
    from coinfer.bench.rl import SEEDS, parse_seeds, seeds_per_algo

    if args.jobs is not None and args.jobs < 1:
        raise InvalidInput(f"--jobs must be >= 1, got {args.jobs}")
    try:
        seeds = seeds_per_algo(parse_seeds(args.seeds) if args.seeds is not None else SEEDS,
                               parse_seeds(args.sb3_seeds) if args.sb3_seeds is not None else None)
    except argparse.ArgumentTypeError as exc:
        raise InvalidInput(f"--seeds/--sb3-seeds: {exc}") from None
    return {"jobs": args.jobs, "seeds": seeds}


def with_earlier_parts(results: dict[str, dict], out: Path) -> dict[str, dict]:
    """``results`` plus the JSON of parts not run this time but found in ``out`` (each keeps its own
    ``finished`` stamp), so running one part does not drop the others from REPORT.md."""
    merged: dict[str, dict] = {}
    for name in PARTS:
        if name in results:
            merged[name] = results[name]
            continue
        path = out / f"{name}.json"
        if path.is_file():
            try:
                earlier = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # a damaged earlier file is left out, not fatal to this run's report
            if isinstance(earlier, dict):
                merged[name] = earlier
    return merged


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def render_report(results: dict[str, dict], quick: bool) -> str:
    """Markdown: per part, each figure beside its target and the anchor's figure."""
    lines = [
        "# coinfer benchmark report",
        "",
        f"Run {dt.datetime.now().strftime('%Y-%m-%d %H:%M')} on {platform.node()} "
        f"({platform.machine()}, {platform.processor() or 'unknown CPU'}, Python {platform.python_version()})"
        + (" — QUICK settings: figures are not comparable with the targets." if quick else "."),
        "",
    ]
    for name, result in results.items():
        lines += [f"## {name}", ""]
        if result.get("status") != "ok":
            verdict = "skipped" if result.get("status") == "skipped" else "failed"
            lines += [f"**{verdict}**: {result.get('error', 'unknown error')}", ""]
            continue
        rows = result.get("targets", [])
        if rows:
            lines += ["| figure | ours | target | anchor | met |", "| --- | --- | --- | --- | --- |"]
            for row in rows:
                met = row.get("met")
                # A row's text, where it has one, holds the figure with its context (or why it is missing).
                ours = row.get("ours_text") or row.get("ours")
                lines.append(
                    f"| {row.get('name', '')} | {_fmt(ours)} | {_fmt(row.get('target'))} | "
                    f"{_fmt(row.get('anchor'))} | {'yes' if met else ('no' if met is not None else '')} |"
                )
        finished = f" Finished {result['finished']}." if result.get("finished") else ""
        lines += ["", f"Wall time: {result.get('wall_s', '?')} s.{finished} Full figures: `{name}.json`.", ""]
    return "\n".join(lines) + "\n"
