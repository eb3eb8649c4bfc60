"""LoRASculpt vs LoRA on SmolLM2-135M-Instruct: learn one reasoning-gym task, measure forgetting.

    python examples/lorasculpt_forgetting.py --steps 60 --seeds 0 1 2

Prints per arm the target-task answer NLL and the change of answer NLL on other task families, plus the
LoRA checkpoint whose target NLL matches LoRASculpt's ("matched target" control).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from hf_trust.demo import RecipeContext
from hf_trust.demo.recipes import lorasculpt
from hf_trust.demo.runner import format_table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--quick", action="store_true", help="the demo's short setting")
    ap.add_argument("--out", default="runs/lorasculpt")
    args = ap.parse_args()
    torch.set_num_threads(1)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    result = lorasculpt.run(RecipeContext(out_dir=Path(args.out), full=not args.quick, seeds=args.seeds))
    print(format_table({"lorasculpt": result}))
    for note in result.notes:
        print("-", note)


if __name__ == "__main__":
    main()
