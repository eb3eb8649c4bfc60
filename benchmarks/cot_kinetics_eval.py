"""CoT-Kinetics vs five baselines on SmolLM2-135M-Instruct's own arithmetic chains (reasoning-gym).

The model writes greedy few-shot chains ("a + b = c. c - d = e. The answer is e.") for reasoning-gym
problems of a difficulty it solves about half the time; the task's own scorer labels the final number.
Every energy term alone, the default energy (γ = 0.8) and the energy with the logit-lens potential are
compared with MaxProb, perplexity, entropy, CoE-R and CoE-C (both CoE token sets) on the same chains:
AUROC with percentile-bootstrap 95 % intervals, AUPR and FPR@95. Also draws the per-layer momentum and
curvature profiles of correct vs wrong chains and the ROC curves.

Chains are cached (keyed, atomic) under the hf-trust cache folder, so the scoring can be rerun alone.

    nice python benchmarks/cot_kinetics_eval.py --per-task 320 --seed 0
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import evaluate
import numpy as np
import torch

import hf_trust
from hf_trust import assets
from hf_trust.atomic import atomic_save, atomic_write_json, atomic_write_text
from hf_trust.demo.studies.cot_kinetics import ANSWER_MARKER, DEFAULT_TASKS, make_chains
from hf_trust.metrics.cot_kinetics import CotKineticsConfig

RESULTS = Path(__file__).resolve().parent / "results"
START, END = "<!-- cot_kinetics_eval:start -->", "<!-- cot_kinetics_eval:end -->"
LENS_LAYERS = list(range(0, 31, 5))  # 0, 5, …, 30: the lens costs one LM-head product per layer


def bootstrap(score: np.ndarray, labels: np.ndarray, n: int, seed: int) -> tuple[float, float]:
    """Percentile 95 % interval of AUROC over ``n`` resamples of the chains (with replacement)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        ix = rng.integers(0, len(labels), len(labels))
        if 0 < labels[ix].sum() < len(ix):
            vals.append(roc_auc_score(labels[ix], score[ix]))
    return float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-task", type=int, default=320)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--write", action="store_true", help="write the section into benchmarks/results/cot_kinetics.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    model, tok = assets.load_smollm2()
    chains = make_chains(
        model,
        tok,
        DEFAULT_TASKS,
        per_task=args.per_task,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        cache_dir=assets.cache_dir() / "cot_kinetics",
    )
    t_gen = time.time() - t0
    labels = np.array([c.correct for c in chains])
    print(f"{len(chains)} chains, accuracy {labels.mean():.3f} ({time.time() - t0:.0f} s)", flush=True)
    det = evaluate.load(hf_trust.metric_path("cot_kinetics"), "detection")
    kw = dict(
        predictions=[c.text or "-" for c in chains],
        references=labels.tolist(),
        token_ids=[c.output_ids or [tok.eos_token_id] for c in chains],
        prompt_ids=[c.prompt_ids for c in chains],
        model=model,
        tokenizer=tok,
    )
    # the marker follows a space inside the chain: ' The' is its own token
    cfg = CotKineticsConfig(think_start="", think_end=" " + ANSWER_MARKER, batch_size=8)
    t1 = time.time()
    out = det.compute(**kw, config=cfg.replace(lens_layers=LENS_LAYERS, term_weights={"kinetic": 0.0}))
    t_score = time.time() - t1
    authors = det.compute(**kw, config=cfg.replace(coe_token_set="authors_code"))
    print(f"scored in {t_score:.0f} s", flush=True)
    terms = {k: np.asarray(v) for k, v in out["terms"].items()}
    columns: dict[str, np.ndarray] = {
        "energy, default (0.8·momentum + 0.2·curvature)": -np.asarray(out["energy"]),
        "energy + potential (β = 1)": -(np.asarray(out["energy"]) + terms["potential"]),
        "momentum alone": -terms["momentum"],
        "curvature alone": -terms["curvature"],
        "potential alone (logit lens)": -terms["potential"],
        "kinetic alone (½·m·v²)": -terms["kinetic"],
        "MaxProb": np.asarray(out["baselines"]["maxprob"]),
        "perplexity": -np.asarray(out["baselines"]["perplexity"]),
        "entropy": -np.asarray(out["baselines"]["entropy"]),
        "CoE-R (paper tokens)": np.asarray(out["baselines"]["coe_r"]),
        "CoE-C (paper tokens)": np.asarray(out["baselines"]["coe_c"]),
        "CoE-R (authors' code tokens)": np.asarray(authors["baselines"]["coe_r"]),
        "CoE-C (authors' code tokens)": np.asarray(authors["baselines"]["coe_c"]),
    }
    from hf_trust.metrics.cot_kinetics.kinetics import detection_metrics

    rows = {}
    for i, (name, score) in enumerate(columns.items()):
        m = detection_metrics(score, labels)
        lo, hi = bootstrap(score, labels, args.bootstrap, seed=i)
        rows[name] = {**m, "ci": [lo, hi]}
        print(
            f"{name:48s} AUROC {m['auroc']:.3f} [{lo:.3f}, {hi:.3f}]  AUPR {m['aupr']:.3f}  FPR@95 {m['fpr_at_95']:.3f}"
        )
    # the table's own numbers must agree with the metric's detection table (same sign conventions)
    assert abs(rows["momentum alone"]["auroc"] - out["detection_table"]["momentum"]["auroc"]) < 1e-12
    assert abs(rows["MaxProb"]["auroc"] - out["detection_table"]["maxprob"]["auroc"]) < 1e-12

    plots = draw(out, labels, columns)
    record = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, torch threads 1",
        "n": len(chains),
        "accuracy": float(labels.mean()),
        "seed": args.seed,
        "tasks": [t.key() for t in DEFAULT_TASKS],
        "max_new_tokens": args.max_new_tokens,
        "lens_layers": LENS_LAYERS,
        "bootstrap": args.bootstrap,
        "seconds": {"generation_or_cache": t_gen, "scoring_with_lens": t_score},
        "rows": rows,
        "segments_ok": out["segment_status"].count("ok"),
        "examples": [{"question": c.question, "text": c.text, "correct": c.correct} for c in chains[:4]],
    }
    atomic_write_json(assets.cache_dir() / "cot_kinetics" / f"eval-{record['date']}-seed{args.seed}.json", record)
    if args.write:
        write_section(record, plots)


def draw(out: dict, labels: np.ndarray, columns: dict[str, np.ndarray]) -> list[str]:
    """Per-layer profiles (correct vs wrong, mean ± s.e.) and ROC curves, saved atomically as PNG."""
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_curve

    names = []
    fig = Figure(figsize=(11, 3.6))
    axes = fig.subplots(1, 3)
    for ax, term, ylabel in zip(
        axes,
        ("momentum", "curvature", "potential"),
        ("‖h^{l+1} − h^l‖ / ‖h^L − h^0‖", "turn angle (rad)", "lens surprisal / log|V|"),
    ):
        prof = np.asarray(out["profiles"][term])  # (chains, steps)
        xs = np.arange(prof.shape[1]) if term != "potential" else np.asarray(LENS_LAYERS)
        for lab, colour, title in ((1, "tab:green", "correct"), (0, "tab:red", "wrong")):
            sel = prof[labels == lab]
            mu, se = sel.mean(0), sel.std(0) / np.sqrt(max(len(sel), 1))
            ax.plot(xs, mu, color=colour, label=f"{title} (n={len(sel)})")
            ax.fill_between(xs, mu - 2 * se, mu + 2 * se, color=colour, alpha=0.2)
        ax.set_xlabel("layer step" if term != "potential" else "lens layer")
        ax.set_ylabel(ylabel)
        ax.set_title(term)
        ax.legend(fontsize=8)
    fig.suptitle("SmolLM2-135M-Instruct, reasoning tokens: per-layer profiles (mean ± 2 s.e.)")
    atomic_save(
        RESULTS / "cot_kinetics_profiles.png", lambda p: fig.savefig(p, format="png", dpi=110, bbox_inches="tight")
    )
    names.append("cot_kinetics_profiles.png")
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    for name, score in columns.items():
        if "authors" in name or "kinetic" in name:
            continue
        fpr, tpr, _ = roc_curve(labels, score)
        ax.plot(fpr, tpr, label=name, lw=2 if "energy" in name else 1)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate (wrong chains accepted)")
    ax.set_ylabel("true positive rate (correct chains accepted)")
    ax.legend(fontsize=7)
    atomic_save(RESULTS / "cot_kinetics_roc.png", lambda p: fig.savefig(p, format="png", dpi=110, bbox_inches="tight"))
    names.append("cot_kinetics_roc.png")
    plt.close("all")
    return names


def write_section(r: dict, plots: list[str]) -> None:
    lines = [
        START,
        f"### Detection on the model's own chains (run {r['date']}, `benchmarks/cot_kinetics_eval.py --per-task {r['n']}`)",
        "",
        f"SmolLM2-135M-Instruct (Q4_1 weights dequantised to fp32), greedy, ≤ {r['max_new_tokens']} new tokens, "
        f"3-shot worked examples of the same task; reasoning-gym tasks {json.dumps(r['tasks'])}, seed {r['seed']}; "
        f"labelled by the task's own scorer. n = {r['n']} chains, answer accuracy **{r['accuracy']:.3f}**; "
        f"In {r['segments_ok']} chains the answer marker was found; the energy scores the tokens before it. "
        f"Logit-lens layers {r['lens_layers']}. AUROC with percentile-bootstrap 95 % intervals "
        f"({r['bootstrap']} resamples of the chains). Machine: {r['machine']}, shared with other jobs.",
        "",
        "| score (higher = predicted correct) | AUROC [95 % CI] | AUPR | FPR@95 |",
        "|---|---|---|---|",
    ]
    best = max(v["auroc"] for v in r["rows"].values())
    for name, v in r["rows"].items():
        auroc = f"{v['auroc']:.3f}"
        if v["auroc"] == best:
            auroc = f"**{auroc}**"
        lines.append(
            f"| {name} | {auroc} [{v['ci'][0]:.2f}, {v['ci'][1]:.2f}] | {v['aupr']:.3f} | {v['fpr_at_95']:.3f} |"
        )
    lines += ["", *[f"![{p}]({p})" for p in plots], "", END]
    path = RESULTS / "cot_kinetics.md"
    text = path.read_text()
    section = "\n".join(lines)
    if START in text and END in text:
        text = text[: text.index(START)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    atomic_write_text(path, text)


if __name__ == "__main__":
    main()
