"""ThanoRA vs vanilla LoRA on SmolLM2-135M over a heterogeneous reasoning-gym mixture.

Both arms use the same r, α, target modules, optimiser, steps and the same mixed batches (no task ids at
training).  ThanoRA additionally sees a few calibration examples per task for its allocation.  Reported:
per-task and mean score (the task's own scorer on greedy answers), answer NLL, the per-layer allocation
table and plot, and the cross-block cosine of the trained ThanoRA adapter.
"""

from __future__ import annotations

import numpy as np

from hf_trust.demo import RecipeContext, RecipeResult, register_recipe
from hf_trust.demo.recipes._chat_data import encode

#: Heterogeneous in input and output: word reversal (characters), arithmetic (digits), counting (story).
TASKS = ("spell_backward", "basic_arithmetic", "leg_counting")


def collate(examples, pad_id):
    import torch

    width = max(len(e[0]) for e in examples)
    ids = torch.full((len(examples), width), pad_id)
    labels = torch.full((len(examples), width), -100)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for r, (i, l, _) in enumerate(examples):
        ids[r, : len(i)] = torch.tensor(i)
        labels[r, : len(l)] = torch.tensor(l)
        mask[r, : len(i)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def answer_nll(model, examples, pad_id) -> float:
    import torch

    total = n = 0.0
    with torch.no_grad():
        for s in range(0, len(examples), 8):
            b = collate(examples[s : s + 8], pad_id)
            out = model(**b)
            k = int((b["labels"][:, 1:] != -100).sum())
            total += float(out.loss) * k
            n += k
    return total / max(n, 1)


def task_scores(model, tok, examples, entries, task) -> float:
    """Mean reasoning-gym score of greedy answers (short generations, one item at a time: no padding)."""
    import torch

    from hf_trust import assets

    scores = []
    with torch.no_grad():
        for (_, _, p_ids), entry in zip(examples, entries):
            ids = torch.tensor([p_ids])
            gen = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=10,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )
            text = tok.decode(gen[0, ids.shape[1] :], skip_special_tokens=True).strip()
            scores.append(assets.score_reasoning(task, text, entry))
    return float(np.mean(scores))


def train_arm(base, config, train, steps, lr, batch_size, pad_id, seed, calib=None):
    """Same batches for every arm (seeded); ThanoRA adds its preprocessing and regularization_loss."""
    import copy

    import torch
    from peft import get_peft_model

    from hf_trust import preprocess_thanora

    torch.manual_seed(seed)
    model_in = copy.deepcopy(base)
    thanora = calib is not None
    if thanora:
        preprocess_thanora(model_in, config, calib, seed=seed)
    model = get_peft_model(model_in, config)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(steps):
        pick = [train[i] for i in rng.choice(len(train), size=batch_size, replace=False)]
        loss = model(**collate(pick, pad_id)).loss
        if thanora:
            loss = loss + model.base_model.regularization_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model


def settings(full: bool) -> dict:
    if full:
        return dict(
            steps=120,
            n_train=96,
            n_eval=16,
            n_calib=16,
            r=16,
            alpha=32,
            lr=1e-3,
            batch=6,
            targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            tokens=768,
        )
    return dict(
        steps=8,
        n_train=16,
        n_eval=3,
        n_calib=4,
        r=12,
        alpha=24,
        lr=2e-3,
        batch=3,
        targets=["q_proj", "v_proj"],
        tokens=192,
    )


@register_recipe("thanora", title="ThanoRA vs LoRA on a reasoning-gym mixture (SmolLM2-135M)", minutes=1.5)
def run(ctx: RecipeContext) -> RecipeResult:
    from peft import LoraConfig

    from hf_trust import ThanoRAConfig, assets
    from hf_trust.peft_tuners.thanora.report import format_allocation, plot_allocation

    cfg = settings(ctx.full)
    result = RecipeResult()
    base, tok = assets.load_smollm2()
    pad = tok.pad_token_id
    data = {t: assets.load_reasoning_tasks([t], cfg["n_train"] + cfg["n_eval"] + cfg["n_calib"], seed=0) for t in TASKS}
    train, evals, calib = [], {}, {}
    for t, ds in data.items():
        enc = encode(tok, list(zip(ds["question"], ds["answer"])))
        n_tr, n_ev = cfg["n_train"], cfg["n_eval"]
        train += enc[:n_tr]
        evals[t] = (enc[n_tr : n_tr + n_ev], ds["entry"][n_tr : n_tr + n_ev])
        calib[t] = [collate(enc[n_tr + n_ev :][i : i + 4], pad) for i in range(0, cfg["n_calib"], 4)]
    common = dict(
        r=cfg["r"], lora_alpha=cfg["alpha"], lora_dropout=0.0, target_modules=cfg["targets"], task_type="CAUSAL_LM"
    )
    scores = {"LoRA": [], "ThanoRA": []}
    nlls = {"LoRA": [], "ThanoRA": []}
    report = cosine = None
    for seed in ctx.progress(ctx.seeds, desc="seeds"):
        for arm in ("LoRA", "ThanoRA"):
            if arm == "LoRA":
                model = train_arm(base, LoraConfig(**common), train, cfg["steps"], cfg["lr"], cfg["batch"], pad, seed)
            else:
                tcfg = ThanoRAConfig(task_names=list(TASKS), calib_tokens_per_task=cfg["tokens"], **common)
                model = train_arm(base, tcfg, train, cfg["steps"], cfg["lr"], cfg["batch"], pad, seed, calib=calib)
                report, cosine = model.base_model.allocation_report(), model.base_model.cross_block_cosine()
            scores[arm].append([task_scores(model, tok, *evals[t], t) for t in TASKS])
            nlls[arm].append([answer_nll(model, evals[t][0], pad) for t in TASKS])
    sd = lambda x: float(np.std(x)) if len(x) > 1 else None  # noqa: E731
    for arm in scores:
        s, n = np.array(scores[arm]), np.array(nlls[arm])
        for i, t in enumerate(TASKS):
            result.add(arm, f"{t} score", float(s[:, i].mean()), std=sd(s[:, i]), n=len(s))
        result.add(arm, "mean score", float(s.mean(1).mean()), std=sd(s.mean(1)), n=len(s))
        result.add(arm, "mean answer NLL", float(n.mean(1).mean()), std=sd(n.mean(1)), n=len(n))
    result.add("ThanoRA (last seed)", "cross-block |cos| A / B", cosine["A"], note=f"B: {cosine['B']:.4f}")
    ranks = np.array([[row["ranks"][t] for t in TASKS] for row in report])
    result.add("ThanoRA (last seed)", "layers with non-uniform split", float((ranks.max(1) != ranks.min(1)).mean()))
    (ctx.out_dir / "thanora_allocation.md").write_text(format_allocation(report) + "\n")
    result.add_plot(ctx.savefig(plot_allocation(report, "ThanoRA allocation (SmolLM2-135M)"), "thanora_allocation.png"))
    result.note(
        f"SmolLM2-135M-Instruct, r={cfg['r']} α={cfg['alpha']} on {', '.join(cfg['targets'])}; AdamW lr {cfg['lr']}, "
        f"{cfg['steps']} steps of batch {cfg['batch']} from one mixed pool of {len(train)} items ({', '.join(TASKS)}); "
        f"score on {cfg['n_eval']} held-out items per task (greedy, 10 new tokens); ThanoRA: activation entropy on "
        f"{cfg['tokens']} tokens/task, λ_sp=1e-2. Allocation table: thanora_allocation.md."
    )
    return result
