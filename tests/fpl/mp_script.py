"""Run under ``accelerate launch --num_processes P``: one LPT+VPT federation (with VPTPR and diagnostics);
rank 0 saves the global prompts and diagnostics to argv[1]."""

import sys

import torch

torch.set_num_threads(1)

from hf_trust.trainers.federated import DirichletLabelPartitioner  # noqa: E402
from hf_trust.trainers.fpl import FederatedPromptTrainer, FPLConfig, PromptConfig  # noqa: E402
from tests.fpl.fpl_fixtures import CLASS_NAMES, WordTokenizer, make_image_dataset, make_tiny_clip  # noqa: E402


def main(out: str) -> None:
    ds = make_image_dataset(48)
    parts = DirichletLabelPartitioner(num_clients=4, alpha=0.5, min_size=4, seed=0).split(ds)
    tr = FederatedPromptTrainer(
        make_tiny_clip(),
        CLASS_NAMES,
        prompt=PromptConfig(kind="both", n_ctx_text=3, n_ctx_vision=2, depth_text=2),
        config=FPLConfig(rounds=2, batch_size=8, lr=0.05, seed=0, vptpr=True),
        tokenizer=WordTokenizer(),
        eval_datasets={"test": ds},
    )
    hist = tr.fit(parts)
    if tr.federation.accelerator.is_main_process:
        torch.save(
            {
                "params": tr.global_params,
                "world": tr.federation.world,
                "diagnostics": tr.diagnostics,
                "acc": [r["eval_test_accuracy"] for r in hist],
            },
            out,
        )


if __name__ == "__main__":
    main(sys.argv[1])
