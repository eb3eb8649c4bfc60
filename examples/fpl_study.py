"""The federated prompt-learning study on offline data (tiny CLIP pretrained here on digit domains).

    python examples/fpl_study.py                      # 1 seed, 3 scenarios x {LPT, VPT, both}
    python examples/fpl_study.py --seeds 0 1 2 --rounds 8 --sweeps --out runs/fpl

Writes ``study.json`` (every run, verdicts on the study's directional findings) and per-run diagnostics
(update cosines, client-client similarity) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hf_trust.trainers.fpl.study import load_study_data, pretrain_tiny_clip, run_study


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sweeps", action="store_true", help="client-count and prompt-length sweeps")
    ap.add_argument("--pretrain-steps", type=int, default=150)
    ap.add_argument("--out", default="runs/fpl_study")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_study_data(font_per_class=40)
    clip, tok = pretrain_tiny_clip(data, steps=args.pretrain_steps, progress=tqdm)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    study = run_study(
        clip, tok, data, args.seeds, rounds=args.rounds, sweeps=args.sweeps, progress=tqdm, output_dir=str(out)
    )
    (out / "study.json").write_text(json.dumps(study, indent=1, default=float))
    for r in study["runs"]:
        extra = {k: r[k] for k in ("num_clients", "n_ctx") if k in r}
        print(
            f"{r['group']:8s} {r['scenario']:13s} {r['kind']:5s} seed={r['seed']} {extra} "
            f"zero-shot={r['zero_shot']:.3f} final={r['final']:.3f} best={r['best']:.3f}"
        )
    for claim, verdict in study["verdicts"].items():
        print(f"{claim}: {verdict}")


if __name__ == "__main__":
    main()
