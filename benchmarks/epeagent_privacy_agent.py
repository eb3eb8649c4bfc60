"""EPEAgent privacy-agent comparison on held-out generated users: none / rule-based / untrained / TRL-trained.

    python benchmarks/epeagent_privacy_agent.py --seeds 0 1 2 --train-steps 60 --out /tmp/epe_compare.json

Every arm runs the same deterministic 3-agent MAS (leaky upstream summarisers, a reading terminal agent; see
``hf_trust.demo.studies.epeagent``) on held-out users of both domains; only the privacy agent changes.  The two
model arms use SmolLM2-135M-Instruct as the context-stage rewriter without the deterministic pass after it, so
the model is measured on its own.  Leakage is the value-level detector's (``hf_trust.agents.leakage``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from hf_trust import assets
from hf_trust.atomic import atomic_write_json
from hf_trust.demo.studies.epeagent import ARMS, METRICS, compare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-steps", type=int, default=60)
    parser.add_argument("--users", type=int, default=10, help="held-out users per domain and seed")
    parser.add_argument("--utility", type=int, default=3, help="utility MCQs per domain and seed")
    parser.add_argument("--privacy", type=int, default=1, help="privacy MCQs and OEQs (each) per domain and seed")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--out", default="epeagent_compare.json")
    parser.add_argument("--adapter-dir", default="epeagent_privacy_agent")
    parser.add_argument(
        "--upstream", choices=["summarising", "reformatting"], default="summarising", help="scripted upstream agents"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    t0 = time.time()
    model, tok = assets.load_smollm2()
    res = compare(
        model,
        tok,
        seeds=args.seeds,
        train_steps=args.train_steps,
        n_users=args.users,
        n_utility=args.utility,
        n_privacy=args.privacy,
        max_new_tokens=args.max_new_tokens,
        output_dir=args.adapter_dir,
        upstream=args.upstream,
        log=lambda s: print(f"[{time.time() - t0:6.0f} s] {s}", flush=True),
    )
    table = {}
    for arm in ARMS:
        for domain, runs in res["results"][arm].items():
            row = {}
            for m in METRICS:
                vals = np.asarray([r[m] for r in runs if isinstance(r.get(m), float)], dtype=float)
                if len(vals):
                    row[m] = [float(np.nanmean(vals)), float(np.nanstd(vals)), int(len(vals))]
            row["episodes_per_seed"] = runs[0]["episodes"]
            row["seconds"] = float(sum(r["seconds"] for r in runs))
            table[f"{arm} | {domain}"] = row
            print(
                f"{arm:<22} {domain:<9} "
                + "  ".join(f"{m}={v[0]:.3f}±{v[1]:.3f}" for m, v in row.items() if isinstance(v, list))
            )
    atomic_write_json(
        args.out,
        {
            "args": vars(args),
            "machine": f"{platform.machine()} {platform.processor()}, torch threads 1",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "wall_seconds": time.time() - t0,
            "train_rows": res["train_rows"],
            "train_log": res["train_log"],
            "table": table,
            "raw": {
                arm: {
                    d: [{k: v for k, v in r.items() if k != "undeliverable"} for r in runs] for d, runs in per.items()
                }
                for arm, per in res["results"].items()
            },
        },
        default=str,
    )
    print(json.dumps({"wall_seconds": time.time() - t0}))


if __name__ == "__main__":
    main()
