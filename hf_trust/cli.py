"""Command line.

``hf-trust demo [--methods a,b] [--full] [--out DIR] [--list] [--push-to URL]``,
``hf-trust list``, ``hf-trust push ADAPTER_DIR --repo-id user/name [evidence files] [--dry-run --out DIR]`` and
``hf-trust flower-run APP [SUPERLINK] [--run-config ...] [--timeout S]`` (a ``flwr run`` whose exit status is the
run's outcome: 0 completed, 1 failed, stopped, lost or timed out, 2 a usage or installation error).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Optional


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hf-trust", description="hf-trust command line")
    sub = p.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    sub.add_parser("list", help="list the available demo recipes")
    _add_push(sub)
    _add_flower_run(sub)
    return p


def _add_demo(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="run the methods' recipes on the offline assets and print a results table")
    demo.add_argument(
        "--methods", nargs="+", metavar="NAME", help="recipes to run (default: all); comma or space separated"
    )
    demo.add_argument(
        "--full", action="store_true", help="the larger setting whose figures go into benchmarks/RESULTS.md"
    )
    demo.add_argument(
        "--out",
        default="demo_report",
        help=(
            "report folder (default: demo_report); must be new, empty or a previous hf-trust report holding "
            "only its own, unedited files"
        ),
    )
    demo.add_argument("--seeds", type=int, nargs="+", help="override the recipes' seeds")
    demo.add_argument("--list", action="store_true", help="list the methods with their expected time and exit")
    demo.add_argument(
        "--push-to",
        metavar="URL",
        help="after the run, push every adapter the recipes saved to this Hub endpoint (e.g. a local Hub stand-in)",
    )
    demo.add_argument(
        "--push-namespace", default="hf-trust-demo", help="user or organisation for the pushed repositories"
    )
    demo.add_argument("--push-token", help="token for --push-to (default: HF_TOKEN or the stored login)")


def _add_push(sub: argparse._SubParsersAction) -> None:
    push = sub.add_parser(
        "push",
        help="upload a ThanoRA / LoRASculpt / LoRA adapter folder with its model card and measured evaluation results",
    )
    push.add_argument("adapter_dir", help="folder written by save_pretrained (holds adapter_config.json)")
    push.add_argument("--repo-id", required=True, help="target model repository, 'user/name' (created if missing)")
    push.add_argument("--bye-report", metavar="JSON", help="BYE report of the training data (BYEReport.save)")
    push.add_argument(
        "--forgetting", metavar="JSON", help="LoRASculpt forgetting measurement (see hf_trust.hub_cards.evidence)"
    )
    push.add_argument("--cot-kinetics", metavar="JSON", help="CoT-Kinetics scores (see hf_trust.hub_cards.evidence)")
    push.add_argument(
        "--eval-results",
        metavar="YAML",
        help="further evaluation results in the Hub's .eval_results format (a YAML or JSON list)",
    )
    push.add_argument("--metrics", metavar="JSON", help="name -> value shown in the card's metrics table")
    push.add_argument(
        "--legacy-model-index",
        action="store_true",
        help="also write the results as 'model-index' in the card (for tools that do not read .eval_results)",
    )
    push.add_argument(
        "--base-model",
        metavar="ID",
        help="the base model's Hub id, written into the card and the uploaded adapter_config.json (default: "
        "from adapter_config.json; a local folder there is replaced by the Hub id in its config.json or refused)",
    )
    push.add_argument(
        "--dry-run",
        action="store_true",
        help="upload nothing: write the exact files that would be uploaded into --out DIR (no token needed)",
    )
    push.add_argument("--out", metavar="DIR", help="with --dry-run: a new or empty folder for the files")
    push.add_argument("--endpoint", help="Hub endpoint URL (default: the Hub, or HF_ENDPOINT)")
    push.add_argument("--token", help="Hub token with write access (default: HF_TOKEN or the stored login)")
    push.add_argument("--private", action="store_true", help="create the repository as private")


def _add_flower_run(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser(
        "flower-run",
        help="start a Flower app on a SuperLink, stream its logs, exit 0 only if the run completed",
        description=(
            "Start APP with `flwr run APP [SUPERLINK]`, pass its logs through (`flwr log --stream`) and exit with the "
            "run's outcome as the SuperLink records it (`flwr ls`): 0 for finished:completed; 1 for a failed or "
            "stopped run, a lost SuperLink or the timeout (one line names the run, its status and details); 2 for "
            "a usage error or a missing Flower installation. Uses the `flwr` next to this Python, else on PATH "
            "(or $HF_TRUST_FLWR)."
        ),
    )
    run.add_argument("app", help="the Flower app folder (holds pyproject.toml), or a remote app spec '@account/app'")
    run.add_argument("superlink", nargs="?", help="the SuperLink connection name (default: flwr's default)")
    run.add_argument(
        "--run-config",
        "-c",
        action="append",
        default=[],
        metavar="CONFIG",
        help="run config overrides, as for `flwr run` (e.g. \"num-server-rounds=5 output-dir='runs/x'\"); repeatable",
    )
    run.add_argument(
        "--federation-config",
        action="append",
        default=[],
        metavar="CONFIG",
        help="federation config overrides, as for `flwr run`; repeatable",
    )
    run.add_argument("--federation", help="the federation to submit the run to ('@account/name'), as for `flwr run`")
    run.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="bound of the whole command; past it the run is stopped (`flwr stop`) and the exit status is 1",
    )


def _flower_run(args: argparse.Namespace) -> int:
    """0 for a completed run; 1 with one line naming the run, its status and details otherwise."""
    from hf_trust.flower_run import FlowerRunFailed, flower_run

    try:
        result = flower_run(
            args.app,
            args.superlink,
            run_config=args.run_config,
            federation_config=args.federation_config,
            federation=args.federation,
            timeout=args.timeout,
        )
    except FlowerRunFailed as exc:
        print(f"hf-trust: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(f"hf-trust: {result.summary()}", file=sys.stderr)
    return 0 if result.completed else 1


def _push(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hf_trust.errors import HFTrustConfigError, HFTrustFileNotFoundError
    from hf_trust.hub_cards import push_adapter, resolve_base_model
    from hf_trust.hub_cards.evidence import load_eval_results, load_json
    from hf_trust.hub_cards.push import check_repo_id

    if args.dry_run != bool(args.out):
        raise HFTrustConfigError(
            "--dry-run and --out DIR go together: --dry-run writes the files that would be uploaded into --out DIR"
        )
    check_repo_id(args.repo_id)
    evidence = {
        key: load_json(path, what)
        for key, path, what in (
            ("bye_report", args.bye_report, "--bye-report"),
            ("forgetting", args.forgetting, "--forgetting"),
            ("cot_kinetics", args.cot_kinetics, "--cot-kinetics"),
        )
        if path
    }
    if not Path(args.adapter_dir).is_dir():
        raise HFTrustFileNotFoundError(
            f"adapter folder {args.adapter_dir} does not exist; pass the folder save_pretrained wrote."
        )
    # Resolved here as well so the user reads which id the Hub will link to, and where it came from.
    base_model, source = resolve_base_model(args.base_model, args.adapter_dir)
    print(f"Base model: {base_model or 'not recorded'} ({source})")
    info = push_adapter(
        args.adapter_dir,
        args.repo_id,
        evidence=evidence,
        eval_results=load_eval_results(args.eval_results) if args.eval_results else None,
        metrics=load_json(args.metrics, "--metrics") if args.metrics else None,
        legacy_model_index=args.legacy_model_index,
        base_model=base_model,
        endpoint=args.endpoint,
        token=args.token,
        private=args.private,
        dry_run_dir=args.out if args.dry_run else None,
    )
    if args.dry_run:
        print(f"Dry run: nothing was uploaded. The files a push to {args.repo_id} would upload are in {info}:")
        for path in sorted(p for p in info.rglob("*") if p.is_file()):
            print(f"  {path.relative_to(info).as_posix()}  ({path.stat().st_size} bytes)")
        return 0
    print(f"Pushed {args.adapter_dir} to {info.commit_url or args.repo_id} (commit {info.oid})")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    # Import after parsing so that --help is instant (`import hf_trust` itself loads neither torch nor PEFT).
    from hf_trust.errors import HFTrustError

    try:
        if args.command == "list" or (args.command == "demo" and args.list):
            from hf_trust.demo.runner import describe_recipes

            print(describe_recipes())
            return 0
        if args.command == "push":
            return _push(args)
        if args.command == "flower-run":
            return _flower_run(args)
        import torch

        torch.set_num_threads(1)  # small ops on few cores: one thread is much faster
        from hf_trust.demo import run_demo

        methods = [m for item in (args.methods or []) for m in item.split(",") if m]
        run_demo(
            methods or None,
            full=args.full,
            out_dir=args.out,
            seeds=args.seeds,
            push_to=args.push_to,
            push_namespace=args.push_namespace,
            push_token=args.push_token,
        )
        return 0
    except (HFTrustError, FileNotFoundError) as exc:
        print(f"hf-trust: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hf-trust: interrupted; the previous report (if any) is unchanged", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
