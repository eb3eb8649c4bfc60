"""The federated prompt-learning study on offline data (tiny CLIP pretrained on digit domains).

    python examples/fpl_study.py                      # 1 seed, 3 scenarios x {LPT, VPT, both}
    python examples/fpl_study.py --full --out runs/fpl  # 3 seeds, 5 rounds, client-count and prompt-length sweeps

The study (pretraining, scenarios, verdicts) is an experiment driver of the demo layer; this script runs it
through the command line, which writes its table, claims and picture under ``--out``. For the library API
itself (``FederatedPromptTrainer``, ``PromptConfig``, ``FPLConfig``) see ``examples/fpl_accelerate_clip.py``.
"""

from __future__ import annotations

import argparse
import sys

from hf_trust.cli import main as hf_trust_cli


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true", help="3 seeds, 5 rounds and the sweeps")
    ap.add_argument("--out", default="runs/fpl_study")
    args = ap.parse_args()
    return hf_trust_cli(["demo", "--methods", "fpl", "--out", args.out] + (["--full"] if args.full else []))


if __name__ == "__main__":
    sys.exit(main())
