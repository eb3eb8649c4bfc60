"""LoRASculpt vs LoRA on SmolLM2-135M: learn one reasoning-gym task, measure forgetting of others.

The picture: target and general answer NLL over the steps for both arms, and the trade-off (general NLL
change against target NLL) with the matched-target LoRA point; the claims row compares LoRASculpt with
that control.

Both arms train the same steps on the same batches (all linear layers, same r/α/lr).  Target = answer NLL
on held-out items of the trained task; forgetting = rise of answer NLL on other task families (general
skills the base model has).  The "matched target" control is the LoRA checkpoint whose target NLL is
closest to LoRASculpt's final one, so that "learned less" is not read as "forgot less".
"""

from __future__ import annotations

import numpy as np

from hf_trust.demo import RecipeContext, RecipeResult, register_recipe
from hf_trust.demo.recipes._chat_data import encode
from hf_trust.demo.registry import MIN_SEEDS, stored_number, stored_rows
from hf_trust.demo.studies.chat_lm import answer_loss, answer_nll, collate

TARGET_TASK = "spell_backward"
GENERAL_TASKS = ("basic_arithmetic", "leg_counting", "chain_sum")
R, ALPHA = 16, 32  # LoRA rank and alpha of both arms


def train_arm(base, config, train, evals, steps, lr, batch_size, pad_id, eval_every=None, seed=0, base_nll=None):
    """Manual loop (the documented API): task loss + regularization_loss, apply_masks after each step,
    compute_masks at mask_step.  Returns the trajectory [(step, target_nll, general_nll)] (step 0 = the base
    model when ``base_nll`` is given) and the trained model."""
    import copy

    import torch
    from peft import get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(copy.deepcopy(base), config)
    sculpt = hasattr(model.base_model, "compute_masks")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    traj = [(0, *base_nll)] if base_nll is not None else []
    model.train()
    for step in range(steps):
        if sculpt and step == config.mask_step:
            model.base_model.compute_masks()
        pick = [train[i] for i in rng.choice(len(train), size=batch_size, replace=False)]
        # Left-padded, logits on the answer positions only: the 49k-way head is not evaluated on the prompt.
        loss = answer_loss(model, collate(pick, pad_id))[0]
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
    model.eval()
    return traj, model


def matched_general(lora_traj, target_nll):
    """General NLL of the LoRA run at the point where its target NLL first equals ``target_nll``: linear
    interpolation between the first two consecutive checkpoints that bracket it (the nearest checkpoint
    when none do).

    This is the matched-target control: LoRA stopped when it had learned the target as well as LoRASculpt
    did, so that "learned less" is not read as "forgot less"."""
    for (_, t0, g0), (_, t1, g1) in zip(lora_traj, lora_traj[1:]):
        if min(t0, t1) <= target_nll <= max(t0, t1) and t0 != t1:
            w = (target_nll - t0) / (t1 - t0)
            return g0 + w * (g1 - g0), True
    return min(lora_traj, key=lambda row: abs(row[1] - target_nll))[2], False


def plot_tradeoff(trajs, base_g, matched, path_fn):
    """Left: target and general answer NLL over steps; right: forgetting against target NLL (the trade-off)."""
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    colors = {"LoRA": "tab:blue", "LoRASculpt": "tab:orange"}
    for arm, traj in trajs.items():
        steps = [r[0] for r in traj]
        ax1.plot(steps, [r[1] for r in traj], "-o", color=colors[arm], label=f"{arm}: target")
        ax1.plot(steps, [r[2] for r in traj], "--s", color=colors[arm], label=f"{arm}: general")
        ax2.plot([r[1] for r in traj], [r[2] - base_g for r in traj], "-o", color=colors[arm], label=arm)
    ax1.set_xlabel("optimizer step")
    ax1.set_ylabel("answer NLL (nats/token)")
    ax1.legend(fontsize=8)
    ax1.set_title("learning the target, keeping the rest")
    s_t, s_gap, m_gap = matched
    ax2.scatter([s_t], [m_gap], marker="x", s=80, color="tab:blue", zorder=5, label="LoRA at matched target NLL")
    ax2.axhline(0.0, color="grey", lw=0.8)
    ax2.invert_xaxis()
    ax2.set_xlabel("target answer NLL (better →)")
    ax2.set_ylabel("general NLL − base (forgetting ↑)")
    ax2.legend(fontsize=8)
    ax2.set_title("trade-off (seed 0)")
    fig.tight_layout()
    return path_fn(fig)


def _settings(full: bool) -> dict:
    if full:
        return dict(steps=60, eval_every=15, n_train=240, n_eval=24, lr=1e-3)
    # Quick: 10 steps (mask at step 2), evaluated at steps 5 and 10; the verdict is read from the --full run.
    return dict(steps=10, eval_every=5, n_train=40, n_eval=6, lr=2e-3)


def _data(tok, cfg: dict) -> tuple[list, dict]:
    from hf_trust import assets

    n_train, n_eval = cfg["n_train"], cfg["n_eval"]
    tgt = assets.load_reasoning_tasks([TARGET_TASK], n_train + n_eval, seed=0)
    gen = assets.load_reasoning_tasks(list(GENERAL_TASKS), max(1, n_eval // len(GENERAL_TASKS)), seed=1)
    train = encode(tok, list(zip(tgt["question"][:n_train], tgt["answer"][:n_train])))
    evals = {
        "target": encode(tok, list(zip(tgt["question"][n_train:], tgt["answer"][n_train:]))),
        "general": encode(tok, list(zip(gen["question"], gen["answer"]))),
    }
    return train, evals


def _configs(mask_step: int):
    from peft import LoraConfig

    from hf_trust import LoRASculptConfig

    common = dict(r=R, lora_alpha=ALPHA, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    return LoraConfig(**common), LoRASculptConfig(**common, preserve_ratio=0.1, mask_step=mask_step, cmr_lambda=1e-3)


def _summary(result: RecipeResult, rows: dict, base_t: float, base_g: float) -> dict:
    """Table rows per arm; returns ``{arm: (target NLLs, general NLL − base)}`` over the seeds."""

    def sd(x):
        return float(x.std()) if len(x) > 1 else None

    result.add("base model", "target answer NLL", base_t)
    result.add("base model", "general answer NLL", base_g)
    summary = {}
    for arm, vals in rows.items():
        t = np.array([v[0] for v in vals])
        g = np.array([v[1] for v in vals]) - base_g
        summary[arm] = (t, g)
        result.add(arm, "target answer NLL", float(t.mean()), std=sd(t), n=len(t))
        result.add(arm, "forgetting (general NLL − base)", float(g.mean()), std=sd(g), n=len(g))
    return summary


CLAIM = "At equal target performance, sparse LoRA updates with the CMR forget less general skill than LoRA"


def _claim(result: RecipeResult, summary: dict) -> None:
    """From ≥ 3 seeds of this run: the mean difference to the matched-target control beyond 2 standard errors.
    With fewer seeds, from the stored ``--full`` run (mean ± std per arm, 3 seeds)."""
    diff = summary["LoRASculpt"][1] - summary["LoRA matched target"][1]
    n = len(diff)
    spread = float(diff.std(ddof=1)) if n > 1 else float("nan")
    if float(diff.mean()) >= 0:
        verdict = "not reproduced"
    elif n >= 3 and float(-diff.mean()) > 2 * spread / np.sqrt(n):
        verdict = "reproduced"
    else:
        verdict = "not at this size"
    no_forgetting = all(float(g.max()) <= 0 for _, g in summary.values())
    measured = (
        f"general NLL − base: LoRASculpt {summary['LoRASculpt'][1].mean():+.3f}, LoRA at matched target NLL "
        f"{summary['LoRA matched target'][1].mean():+.3f}, LoRA after the same steps "
        f"{summary['LoRA'][1].mean():+.3f} ({n} seed{'s' if n > 1 else ''}"
        + (f", spread of the difference {spread:.2g}" if n > 1 else "")
        + ")"
        + ("; no arm forgot in absolute terms, so any gap is relative" if no_forgetting else "")
    )
    stored = {r["arm"]: r for r in stored_rows("lorasculpt", "arm")}
    forgetting = "general NLL − base (negative = general answers became more likely)"
    arms = ("LoRASculpt, 60 steps", "LoRA at matched target NLL")
    if n >= MIN_SEEDS or not all(a in stored and forgetting in stored[a] for a in arms):
        result.add_claim(
            CLAIM, measured, verdict, seeds=n, interval="mean difference beyond 2 standard errors over seeds"
        )
        return
    # The --full run's three seeds are stored as mean ± std per arm: less forgetting only if
    # LoRASculpt's mean ± std interval lies wholly below the matched-target control's.
    (s_m, s_sd), (c_m, c_sd) = (
        (stored_number(stored[a][forgetting]), stored_number(stored[a][forgetting], 1)) for a in arms
    )
    stored_verdict = "not reproduced" if s_m >= c_m else "reproduced" if s_m + s_sd < c_m - c_sd else "not at this size"
    result.add_claim(
        CLAIM,
        f"--full: general NLL − base LoRASculpt {s_m:+.3f} ± {s_sd:.3f} vs LoRA at matched target NLL "
        f"{c_m:+.3f} ± {c_sd:.3f}; this run, indicative: {measured}",
        stored_verdict,
        stored="benchmarks/results/lorasculpt.md, --full run, 3 seeds, mean ± std per arm",
    )


@register_recipe(
    "lorasculpt",
    title="LoRASculpt vs LoRA: target learning and forgetting on SmolLM2",
    minutes=3.0,  # measured: 2 min 57 s of CPU time
)
def run(ctx: RecipeContext) -> RecipeResult:
    import torch

    from hf_trust import assets

    torch.set_num_threads(1)
    result = RecipeResult()
    cfg = _settings(ctx.full)
    steps, eval_every, lr = cfg["steps"], cfg["eval_every"], cfg["lr"]
    mask_step = max(1, steps // 4)
    base, tok = assets.load_smollm2()
    pad = tok.pad_token_id
    train, evals = _data(tok, cfg)
    base_t, base_g = answer_nll(base, evals["target"], pad), answer_nll(base, evals["general"], pad)
    rows = {"LoRA": [], "LoRASculpt": [], "LoRA matched target": []}
    interpolated = []
    first = None
    for seed in ctx.progress(ctx.seeds, desc="seeds"):
        lora_cfg, sculpt_cfg = _configs(mask_step)
        common = dict(eval_every=eval_every, seed=seed, base_nll=(base_t, base_g))
        lora_traj, _ = train_arm(base, lora_cfg, train, evals, steps, lr, 4, pad, **common)
        sculpt_traj, sculpt_model = train_arm(base, sculpt_cfg, train, evals, steps, lr, 4, pad, **common)
        _, s_t, s_g = sculpt_traj[-1]
        _, l_t, l_g = lora_traj[-1]
        m_g, inside = matched_general(lora_traj, s_t)
        interpolated.append(inside)
        rows["LoRA"].append((l_t, l_g))
        rows["LoRASculpt"].append((s_t, s_g))
        rows["LoRA matched target"].append((s_t, m_g))
        if first is None:
            first = ({"LoRA": lora_traj, "LoRASculpt": sculpt_traj}, (s_t, s_g - base_g, m_g - base_g))
        a, b, _ = next(iter(sculpt_model.base_model.lora_factors().values()))
        result.add(
            f"LoRASculpt seed {seed}",
            "density of A / of BA (first layer)",
            float((a != 0).float().mean()),
            note=f"BA density {float(((b @ a) != 0).float().mean()):.3f}",
        )
    result.add_plot(plot_tradeoff(first[0], base_g, first[1], lambda fig: ctx.savefig(fig, "lorasculpt_tradeoff.png")))
    _claim(result, _summary(result, rows, base_t, base_g))
    result.note(
        f"SmolLM2-135M-Instruct, LoRA r={R} α={ALPHA} on all linear layers, AdamW lr {lr}, {steps} steps of "
        f"batch 4 on {TARGET_TASK} ({len(train)} items); LoRASculpt ρ=0.1, mask at step {mask_step}, λ=1e-3; "
        f"general = {', '.join(GENERAL_TASKS)} ({len(evals['general'])} items), target {len(evals['target'])} "
        f"held-out items; evaluation every {eval_every} steps. Matched-target control: the LoRA trajectory "
        "interpolated to LoRASculpt's final target NLL"
        + ("" if all(interpolated) else " (nearest checkpoint where no two checkpoints bracket it)")
        + ". Negative forgetting means the general answers became more likely (format learning)."
    )
    return result
