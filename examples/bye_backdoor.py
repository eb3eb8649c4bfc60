"""Clean a backdoored image-text fine-tuning set with BYE, end to end (Algorithm 1).

A LLaVA-style model (small vision tower + the real SmolLM2-135M decoder) is LoRA-fine-tuned on captioned
digits of which 10 % carry a white-patch trigger with the answer "banana"; BYE scores every sample by
attention entropy, drops the collapsed cluster, and the base model is fine-tuned again on what remains.

    python examples/bye_backdoor.py --seeds 0 1 2 --n-train 300 --steps 120
"""

from __future__ import annotations

import argparse
import json

import torch

from hf_trust.demo.recipes.bye import run_seed

if __name__ == "__main__":
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--n-train", type=int, default=300)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--steps", type=int, default=120)
    args = ap.parse_args()
    for seed in args.seeds:
        res = run_seed(seed, args.n_train, args.n_test, args.steps, progress=True)
        print(json.dumps({"seed": seed, **res}))
