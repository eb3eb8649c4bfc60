"""Run under `accelerate launch`: ACGKDTrainer on 1 or 2 CPU processes (gloo); rank 0 writes the results."""

import sys

import torch

torch.set_num_threads(1)

from hf_trust.trainers.acgkd import ACGKDTrainer  # noqa: E402

from .fixtures import motif_teacher, small_args, student  # noqa: E402

out = sys.argv[1]
teacher, test = motif_teacher(1)
args = small_args(
    out + "_run", max_steps=8, gen_warmup_steps=5, num_pseudo_graphs=16, pseudo_batch_size=8, curriculum_every=4
)
trainer = ACGKDTrainer(teacher=teacher, student=student(0), args=args, eval_dataset=test[:40])
trainer.train()
metrics = trainer.evaluate()
state = {k: v.detach().clone() for k, v in trainer.accelerator.unwrap_model(trainer.model).state_dict().items()}
gathered = [None] * trainer.args.world_size
if trainer.args.world_size > 1:
    torch.distributed.all_gather_object(gathered, (state, trainer.core.bank.theta.detach().clone()))
else:
    gathered = [(state, trainer.core.bank.theta.detach().clone())]
if trainer.args.process_index == 0:
    torch.save({"world": trainer.args.world_size, "gathered": gathered, "metrics": metrics}, out)
