"""ThanoRA ablation and PEFT peers at equal rank on a reasoning-gym task mixture.

Arms (same r, α, target modules, optimiser, steps and mixed batches per seed; no task ids in training):

* ``LoRA``, ``PiSSA`` (``init_lora_weights="pissa_niter_4"``), ``CorDA`` (IPM, instruction-previewed mode, covariance from a mixed preview),
  ``EVA`` (``rho=1``: equal rank in every layer) — what a PEFT user would try first;
* ``ThanoRA`` (cooperative block, softmax allocation, covariance init, λ = 1e-2) and its ablations
  ``no cooperative block``, ``uniform split``, ``random task-block init``, ``λ = 0`` and the earlier regulariser
  with unit columns of B (``normalize_B=True``).

For every regularised arm the ratio ‖∇ regulariser‖ / ‖∇ task loss‖ of each step is recorded and drawn
(``thanora_grad_ratio.png``; ``--plot-from a.json,b.json`` redraws it from the saved runs of several processes).

Metric: held-out answer NLL per task (answer tokens only), mean over tasks, after training (and of the base).
Also: the per-layer allocation of the full-depth SmolLM2-135M for a sweep of the temperature τ (entropies
measured once; the split recomputed per τ), drawn as heat maps.

    python benchmarks/thanora_ablation.py --layers 2 --steps 12 --n-train 32 --n-eval 8 --n-calib 4 --seeds 0 1 2

``--layers L`` keeps the first L decoder layers of SmolLM2-135M-Instruct (with its final norm and LM head) so the
ablation fits a shared 2-core CPU; ``--layers 30`` is the whole model.  ``--arms`` runs a subset (two processes
can split the arms); every finished run is written to ``--json`` at once.  Batches are left-padded so that the
49k-way LM head is evaluated only on answer positions (calibration forwards skip it entirely).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)

from peft import LoraConfig, get_peft_model  # noqa: E402

import hf_trust  # noqa: E402,F401
from hf_trust import ThanoRAConfig, assets, preprocess_thanora  # noqa: E402
from hf_trust.atomic import atomic_save, atomic_write_json  # noqa: E402
from hf_trust.demo.studies.chat_lm import answer_loss, answer_nll, collate, encode  # noqa: E402
from hf_trust.peft_tuners.thanora import plot_allocation_heatmap, softmax_allocation  # noqa: E402

TASKS = ("spell_backward", "basic_arithmetic", "leg_counting")
THANORA_ARMS = {
    "ThanoRA": {},
    "ThanoRA, no cooperative block": {"cooperative_rank": 0},
    "ThanoRA, uniform split": {"rank_allocation": "uniform"},
    "ThanoRA, random task-block init": {"task_init": "random"},
    "ThanoRA, λ = 0": {"subspace_lambda": 0.0},
    "ThanoRA, unit-column B term (earlier form)": {"normalize_B": True},
}
PEER_ARMS = ("LoRA", "PiSSA", "CorDA", "EVA")


def truncated_smollm2(layers: int):
    model, tok = assets.load_smollm2()
    if layers < model.config.num_hidden_layers:
        model.model.layers = model.model.layers[:layers]
        model.config.num_hidden_layers = layers
        if getattr(model.config, "layer_types", None):
            model.config.layer_types = model.config.layer_types[:layers]
    return model.eval(), tok


def build(arm: str, base, common: dict, calib: dict, mixed_calib: list, seed: int):
    """A fresh PEFT model of ``arm`` on a copy of ``base`` (its preprocessing included)."""
    from peft.tuners.lora.config import CordaConfig, EvaConfig

    torch.manual_seed(seed)
    m = copy.deepcopy(base)
    if arm == "LoRA":
        return get_peft_model(m, LoraConfig(**common)), False
    if arm == "PiSSA":
        return get_peft_model(m, LoraConfig(init_lora_weights="pissa_niter_4", **common)), False
    if arm == "CorDA":
        from peft.tuners.lora.corda import preprocess_corda

        cfg = LoraConfig(init_lora_weights="corda", corda_config=CordaConfig(corda_method="ipm"), **common)

        def run_model():
            # CorDA's hooks expect one unpadded example per forward.
            with torch.no_grad():
                for b in mixed_calib:
                    for row in range(b["input_ids"].shape[0]):
                        keep = b["attention_mask"][row].bool()
                        m(input_ids=b["input_ids"][row, keep][None], logits_to_keep=1)

        preprocess_corda(m, cfg, run_model=run_model)
        return get_peft_model(m, cfg), False
    if arm == "EVA":
        from peft.tuners.lora.eva import initialize_lora_eva_weights

        cfg = LoraConfig(init_lora_weights="eva", eva_config=EvaConfig(rho=1.0), **common)
        peft = get_peft_model(m, cfg, low_cpu_mem_usage=True)
        initialize_lora_eva_weights(peft, mixed_calib, show_progress_bar=False)
        return peft, False
    cfg = ThanoRAConfig(task_names=list(TASKS), calib_tokens_per_task=512, **common, **THANORA_ARMS[arm])
    preprocess_thanora(m, cfg, calib, seed=seed)
    return get_peft_model(m, cfg), True


def _norm(grads) -> float:
    return float(torch.sqrt(sum(g.detach().double().pow(2).sum() for g in grads if g is not None)))


def train(model, regularized: bool, train_rows, steps: int, lr: float, batch: int, pad: int, seed: int):
    """(seconds per step, per-step ‖∇ regulariser‖ / ‖∇ task‖ before each update; empty without a regulariser).

    The two gradients are taken apart at no extra cost: the regulariser's (it only involves the adapter's own
    factors) by ``autograd.grad``, the task's by the step's backward; their sum is what the optimiser sees.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)  # the same batches for every arm of a seed
    model.train()
    ratios = []
    t0 = time.perf_counter()
    for _ in range(steps):
        pick = [train_rows[i] for i in rng.choice(len(train_rows), size=batch, replace=False)]
        loss = answer_loss(model, collate(pick, pad))[0]
        reg_grads = None
        if regularized:
            reg = model.base_model.regularization_loss()
            if reg.requires_grad:
                reg_grads = torch.autograd.grad(reg, params, allow_unused=True)
        opt.zero_grad()
        loss.backward()
        if regularized:
            task_norm = _norm(p.grad for p in params)
            reg_norm = _norm(reg_grads) if reg_grads is not None else 0.0
            ratios.append(reg_norm / task_norm if task_norm > 0 else float("inf"))
            for p, g in zip(params, reg_grads or ()):
                if g is not None:
                    p.grad += g
        opt.step()
    model.eval()
    return (time.perf_counter() - t0) / steps, ratios


def plot_ratio(results: dict, path: Path) -> None:
    """Per-step ‖∇ regulariser‖ / ‖∇ task‖ of every regularised arm: one faint line per seed, bold median."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    k = 0
    for arm, runs in results["runs"].items():
        curves = [r["grad_ratio"] for r in runs.values() if r.get("grad_ratio")]
        if not curves:
            continue
        c = colors[k % len(colors)]
        k += 1
        floor = 1e-12  # step 1 has B = 0: the ratio is 0 there, drawn at the floor of the log axis
        for y in curves:
            ax.plot(range(1, len(y) + 1), np.maximum(y, floor), color=c, alpha=0.3, lw=0.8)
        med = np.median(np.array([y for y in curves if len(y) == len(curves[0])]), axis=0)
        ax.plot(
            range(1, len(med) + 1),
            np.maximum(med, floor),
            color=c,
            lw=2,
            label=f"{arm} (median of {len(curves)} seeds)",
        )
    ax.axhline(1.0, color="k", ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("‖∇ regulariser‖ / ‖∇ task loss‖")
    a = results["args"]
    ax.set_title(
        f"ThanoRA gradient balance, SmolLM2 first {a['layers']} layers, r = {a['r']}, lr {a['lr']}", fontsize=9
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_save(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


def tau_sweep(out: Path, taus, r: int, n_calib: int, layers: int) -> dict:
    """Per-layer allocation of SmolLM2 (first ``layers`` decoder layers) for each τ (entropies measured once)."""
    import matplotlib.pyplot as plt

    model, tok = truncated_smollm2(layers)
    calib = {}
    for i, t in enumerate(TASKS):
        ds = assets.load_reasoning_tasks([t], n_calib, seed=100 + i)
        enc = encode(tok, list(zip(ds["question"], ds["answer"])))
        calib[t] = [collate(enc[s : s + 4], tok.pad_token_id, with_labels=False) for s in range(0, n_calib, 4)]
    cfg = ThanoRAConfig(
        task_names=list(TASKS),
        r=r,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
        task_init="random",
        calib_tokens_per_task=512,
    )
    preprocess_thanora(model, cfg, calib)
    budget = cfg.task_budget(r)
    modules = sorted(cfg.task_entropy_map, key=lambda n: (int(n.split(".")[2]), n))
    sweep = {}
    fig, axes = plt.subplots(len(taus), 1, figsize=(max(8, 0.25 * len(modules)), 2.2 * len(taus)), sharex=True)
    for ax, tau in zip(np.atleast_1d(axes), taus):
        split = {n: softmax_allocation(cfg.task_entropy_map[n], budget, tau, 1.0, 1) for n in modules}
        sweep[str(tau)] = split
        share = np.array([[split[n][k] / budget for n in modules] for k in range(len(TASKS))])
        ax.imshow(share, aspect="auto", cmap="viridis", vmin=0, vmax=1)
        ax.set_yticks(range(len(TASKS)))
        ax.set_yticklabels(TASKS, fontsize=7)
        n_nonuni = sum(max(v) != min(v) for v in split.values())
        ax.set_title(f"τ = {tau}: {n_nonuni}/{len(modules)} modules non-uniform", fontsize=8)
    ax.set_xticks(range(0, len(modules), 7))
    ax.set_xticklabels([f"L{modules[i].split('.')[2]}" for i in range(0, len(modules), 7)], fontsize=7)
    fig.suptitle(f"ThanoRA task shares per module, SmolLM2-135M first {layers} layers, r = {r} ({budget} task ranks)")
    fig.tight_layout()
    fig.savefig(out / "thanora_tau_sweep.png", dpi=110)
    plt.close(fig)
    return {"entropy": cfg.task_entropy_map, "splits": sweep, "budget": budget}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--n-train", type=int, default=48)
    ap.add_argument("--n-eval", type=int, default=16)
    ap.add_argument("--n-calib", type=int, default=16)
    ap.add_argument("--arms", nargs="+", default=list(PEER_ARMS) + list(THANORA_ARMS))
    ap.add_argument("--taus", type=float, nargs="+", default=[0.02, 0.05, 0.1, 0.5])
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--sweep-layers", type=int, default=30, help="decoder layers of the model the τ sweep measures")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--json", default="/tmp/thanora_ablation.json")
    ap.add_argument("--ratio-png", default="thanora_grad_ratio.png", help="gradient-ratio figure, under --out")
    ap.add_argument("--plot-from", help="only redraw the gradient-ratio figure from these saved --json results")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.plot_from:
        # Two processes can split the arms: merge their saved runs into one figure.
        merged: dict = {"runs": {}}
        for path in args.plot_from.split(","):
            saved = json.loads(Path(path).read_text())
            merged["args"] = saved["args"]
            for arm, seeds in saved["runs"].items():
                merged["runs"].setdefault(arm, {}).update(seeds)
        plot_ratio(merged, out / args.ratio_png)
        return
    results: dict = {"args": vars(args), "runs": {}}

    base, tok = truncated_smollm2(args.layers)
    pad = tok.pad_token_id
    train_rows, evals, calib, mixed = [], {}, {}, []
    for t in TASKS:
        ds = assets.load_reasoning_tasks([t], args.n_train + args.n_eval + args.n_calib, seed=0)
        enc = encode(tok, list(zip(ds["question"], ds["answer"])))
        train_rows += enc[: args.n_train]
        evals[t] = enc[args.n_train : args.n_train + args.n_eval]
        cal = enc[args.n_train + args.n_eval :]
        calib[t] = [collate(cal[s : s + 4], pad, with_labels=False) for s in range(0, len(cal), 4)]
        mixed += calib[t]
    # Named modules rather than "all-linear": preprocess_corda does not expand that shorthand.
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    common = dict(r=args.r, lora_alpha=2 * args.r, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM")
    results["base_nll"] = {t: answer_nll(base, evals[t], pad) for t in TASKS}
    print("base", results["base_nll"], flush=True)
    # Arm-major: every seed of an arm before the next arm, so a run cut short still has whole arms.
    for arm, seed in [(a, s) for a in args.arms for s in args.seeds]:
        t0 = time.perf_counter()
        try:
            model, reg = build(arm, base, common, calib, mixed, seed)
            step, ratios = train(model, reg, train_rows, args.steps, args.lr, args.batch, pad, seed)
            nll = {t: answer_nll(model, evals[t], pad) for t in TASKS}
            row = {"nll": nll, "mean": statistics.mean(nll.values()), "step_s": step}
            if reg:
                row["grad_ratio"] = ratios
            if reg:
                rep = model.base_model.allocation_report()
                row["non_uniform"] = sum(max(x["ranks"].values()) != min(x["ranks"].values()) for x in rep)
                row["modules"] = len(rep)
                row["cross_cos"] = model.base_model.cross_block_cosine()
                if arm == "ThanoRA" and seed == args.seeds[0]:
                    fig = plot_allocation_heatmap(rep, f"ThanoRA allocation, SmolLM2 first {args.layers} layers")
                    fig.savefig(out / "thanora_allocation_heatmap.png", dpi=110)
                    import matplotlib.pyplot as plt

                    plt.close(fig)
        except Exception as exc:  # a peer that fails is a result, not a crash of the whole table
            row = {"error": f"{type(exc).__name__}: {exc}"}
        row["wall_s"] = time.perf_counter() - t0
        results["runs"].setdefault(arm, {})[str(seed)] = row
        print(seed, arm, json.dumps(row, default=str), flush=True)
        atomic_write_json(args.json, results, default=str)
    if any(r.get("grad_ratio") for runs in results["runs"].values() for r in runs.values()):
        plot_ratio(results, out / args.ratio_png)
    if not args.skip_sweep:
        results["tau_sweep"] = tau_sweep(out, args.taus, 16, args.n_calib, args.sweep_layers)
        atomic_write_json(args.json, results, default=str)
    print(format_table(results))


def format_table(results: dict) -> str:
    lines = ["| arm | " + " | ".join(TASKS) + " | mean answer NLL | n |", "|---" * (len(TASKS) + 3) + "|"]
    base = results["base_nll"]
    lines.append(
        "| base (no training) | "
        + " | ".join(f"{base[t]:.3f}" for t in TASKS)
        + f" | {np.mean(list(base.values())):.3f} | 1 |"
    )
    for arm, runs in results["runs"].items():
        ok = [r for r in runs.values() if "nll" in r]
        if not ok:
            lines.append(f"| {arm} | failed: {next(iter(runs.values()))['error'][:80]} |")
            continue
        cell = lambda v: f"{np.mean(v):.3f} ± {np.std(v):.3f}"  # noqa: E731
        lines.append(
            f"| {arm} | "
            + " | ".join(cell([r["nll"][t] for r in ok]) for t in TASKS)
            + f" | {cell([r['mean'] for r in ok])} | {len(ok)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
