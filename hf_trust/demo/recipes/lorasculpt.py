"""LoRASculpt vs LoRA on SmolLM2-135M: learn one reasoning-gym task, measure forgetting of others.

Both arms train the same steps on the same batches (all linear layers, same r/α/lr).  Target = answer NLL
on held-out items of the trained task; forgetting = rise of answer NLL on other task families (general
skills the base model has).  The "matched target" control is the LoRA checkpoint whose target NLL is
closest to LoRASculpt's final one, so that "learned less" is not read as "forgot less".
"""

from __future__ import annotations

import numpy as np

from hf_trust.demo import RecipeContext, RecipeResult, register_recipe
from hf_trust.demo.recipes._chat_data import encode

TARGET_TASK = "spell_backward"
GENERAL_TASKS = ("basic_arithmetic", "leg_counting", "chain_sum")


def batches(examples, batch_size, pad_id):
    import torch

    for s in range(0, len(examples), batch_size):
        chunk = examples[s : s + batch_size]
        width = max(len(e[0]) for e in chunk)
        ids = torch.full((len(chunk), width), pad_id)
        labels = torch.full((len(chunk), width), -100)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, (i, l, *_) in enumerate(chunk):
            ids[r, : len(i)] = torch.tensor(i)
            labels[r, : len(l)] = torch.tensor(l)
            mask[r, : len(i)] = 1
        yield {"input_ids": ids, "labels": labels, "attention_mask": mask}


def answer_nll(model, examples, pad_id) -> float:
    import torch

    model.eval()
    total = n = 0.0
    with torch.no_grad():
        for b in batches(examples, 8, pad_id):
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1]
            lab = b["labels"][:, 1:]
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), lab.reshape(-1), ignore_index=-100, reduction="sum"
            )
            total += float(nll)
            n += int((lab != -100).sum())
    model.train()
    return total / max(n, 1)


def train_arm(base, config, train, evals, steps, lr, batch_size, pad_id, eval_every=None, seed=0):
    """Manual loop (the documented API): task loss + regularization_loss, apply_masks after each step,
    compute_masks at mask_step.  Returns the trajectory [(step, target_nll, general_nll)]."""
    import copy

    import torch
    from peft import get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(copy.deepcopy(base), config)
    sculpt = hasattr(model.base_model, "compute_masks")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    traj = []
    model.train()
    for step in range(steps):
        if sculpt and step == config.mask_step:
            model.base_model.compute_masks()
        pick = [train[i] for i in rng.choice(len(train), size=batch_size, replace=False)]
        batch = next(batches(pick, batch_size, pad_id))
        loss = model(**batch).loss
        if sculpt:
            loss = loss + model.base_model.regularization_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sculpt:
            model.base_model.apply_masks()
        if eval_every and (step + 1) % eval_every == 0 or step + 1 == steps:
            traj.append(
                (step + 1, answer_nll(model, evals["target"], pad_id), answer_nll(model, evals["general"], pad_id))
            )
    return traj, model


@register_recipe("lorasculpt", title="LoRASculpt vs LoRA: target learning and forgetting on SmolLM2", minutes=2.0)
def run(ctx: RecipeContext) -> RecipeResult:
    from peft import LoraConfig

    from hf_trust import LoRASculptConfig, assets

    result = RecipeResult()
    steps = 60 if ctx.full else 8
    n_train, n_eval = (240, 24) if ctx.full else (32, 6)
    r, alpha = 16, 32
    base, tok = assets.load_smollm2()
    pad = tok.pad_token_id
    tgt = assets.load_reasoning_tasks([TARGET_TASK], n_train + n_eval, seed=0)
    gen = assets.load_reasoning_tasks(list(GENERAL_TASKS), max(1, n_eval // len(GENERAL_TASKS)), seed=1)
    train = encode(tok, list(zip(tgt["question"][:n_train], tgt["answer"][:n_train])))
    evals = {
        "target": encode(tok, list(zip(tgt["question"][n_train:], tgt["answer"][n_train:]))),
        "general": encode(tok, list(zip(gen["question"], gen["answer"]))),
    }
    base_t, base_g = answer_nll(base, evals["target"], pad), answer_nll(base, evals["general"], pad)
    lr = 1e-3
    targets = "all-linear"
    rows = {"LoRA": [], "LoRASculpt": [], "LoRA matched target": []}
    for seed in ctx.progress(ctx.seeds, desc="seeds"):
        lora_cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM")
        sculpt_cfg = LoRASculptConfig(
            r=r,
            lora_alpha=alpha,
            lora_dropout=0.0,
            target_modules=targets,
            task_type="CAUSAL_LM",
            preserve_ratio=0.1,
            mask_step=max(1, steps // 4),
            cmr_lambda=1e-3,
        )
        lora_traj, _ = train_arm(
            base, lora_cfg, train, evals, steps, lr, 4, pad, eval_every=max(1, steps // 4), seed=seed
        )
        sculpt_traj, sculpt_model = train_arm(base, sculpt_cfg, train, evals, steps, lr, 4, pad, seed=seed)
        _, s_t, s_g = sculpt_traj[-1]
        _, l_t, l_g = lora_traj[-1]
        matched = min(lora_traj, key=lambda row: abs(row[1] - s_t))
        rows["LoRA"].append((l_t, l_g))
        rows["LoRASculpt"].append((s_t, s_g))
        rows["LoRA matched target"].append((matched[1], matched[2]))
        a, b, _ = next(iter(sculpt_model.base_model.lora_factors().values()))
        result.add(
            f"LoRASculpt seed {seed}",
            "density of A / of BA (first layer)",
            float((a != 0).float().mean()),
            note=f"BA density {float(((b @ a) != 0).float().mean()):.3f}",
        )
    result.add("base model", "target answer NLL", base_t)
    result.add("base model", "general answer NLL", base_g)
    for arm, vals in rows.items():
        t = np.array([v[0] for v in vals])
        g = np.array([v[1] for v in vals])

        def sd(x):
            return float(x.std()) if len(x) > 1 else None

        result.add(arm, "target answer NLL", float(t.mean()), std=sd(t), n=len(t))
        result.add(arm, "forgetting (general NLL − base)", float((g - base_g).mean()), std=sd(g), n=len(g))
    result.note(
        f"SmolLM2-135M-Instruct, LoRA r={r} α={alpha} on all linear layers, AdamW lr {lr}, {steps} steps of "
        f"batch 4 on {TARGET_TASK}; LoRASculpt ρ=0.1, mask at step {max(1, steps // 4)}, λ=1e-3; general = "
        f"{', '.join(GENERAL_TASKS)} ({len(evals['general'])} items)."
    )
    return result
