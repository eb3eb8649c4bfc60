"""Command line: ``hf-trust demo [--methods a,b] [--full] [--out DIR]`` and ``hf-trust list``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Optional


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hf-trust", description="hf-trust command line")
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the methods' recipes on the offline assets and print a results table")
    demo.add_argument(
        "--methods", nargs="+", metavar="NAME", help="recipes to run (default: all); comma or space separated"
    )
    demo.add_argument(
        "--full", action="store_true", help="the larger setting whose figures go into benchmarks/RESULTS.md"
    )
    demo.add_argument("--out", default="demo_report", help="report folder (default: demo_report)")
    demo.add_argument("--seeds", type=int, nargs="+", help="override the recipes' seeds")
    sub.add_parser("list", help="list the available demo recipes")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    # Import after parsing so that --help is instant.
    from hf_trust.demo.runner import DemoError

    try:
        if args.command == "list":
            from hf_trust.demo import available_recipes

            for name, recipe in available_recipes().items():
                print(f"{name:14s} {recipe.title} (~{recipe.minutes:g} min)")
            return 0
        import torch

        torch.set_num_threads(1)  # small ops on few cores: one thread is much faster
        from hf_trust.demo import run_demo

        methods = [m for item in (args.methods or []) for m in item.split(",") if m]
        run_demo(methods or None, full=args.full, out_dir=args.out, seeds=args.seeds)
        return 0
    except DemoError as exc:
        print(f"hf-trust: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hf-trust: interrupted; no report was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
