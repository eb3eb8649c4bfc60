"""Run under ``accelerate launch --use_deepspeed --num_processes 1``: LPT+VPT with every client as a
DeepSpeed job, and the same federation simulated without DeepSpeed; prints the largest difference."""

import sys

import torch

torch.set_num_threads(1)

from accelerate import Accelerator  # noqa: E402

from hf_trust.trainers.federated import IIDPartitioner  # noqa: E402
from hf_trust.trainers.fpl import FederatedPromptTrainer, FPLConfig, PromptConfig  # noqa: E402
from tests.fpl.fpl_fixtures import CLASS_NAMES, WordTokenizer, make_image_dataset, make_tiny_clip  # noqa: E402


def main(out: str) -> None:
    ds = make_image_dataset(32)
    parts = IIDPartitioner(num_clients=2).split(ds)
    runs = {}
    for execution in ("deepspeed", "clients_per_rank"):
        tr = FederatedPromptTrainer(
            make_tiny_clip(),
            CLASS_NAMES,
            prompt=PromptConfig(kind="both", n_ctx_text=2, n_ctx_vision=2),
            config=FPLConfig(
                rounds=2, batch_size=8, lr=0.05, momentum=0.0, weight_decay=0.0, seed=0, execution=execution
            ),
            tokenizer=WordTokenizer(),
            accelerator=Accelerator() if execution == "deepspeed" else None,
        )
        tr.fit(parts)
        runs[execution] = {k: v.detach().cpu().clone() for k, v in tr.global_params.items()}
    torch.save(runs, out)


if __name__ == "__main__":
    main(sys.argv[1])
