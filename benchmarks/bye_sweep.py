"""BYE selection rules over many seeds of the toy LLaVA backdoor (and the SmolLM2-decoder recipe when cached).

Stages (each reads what the earlier one cached, so the expensive fine-tunes run once):

    python benchmarks/bye_sweep.py entropies --seeds 0-9          # fine-tune + score each (trigger, rate, seed)
    python benchmarks/bye_sweep.py refit --seeds 0-9 --rules reference robust --rates 0.1
    python benchmarks/bye_sweep.py report                         # markdown table of every rule
    python benchmarks/bye_sweep.py plots --plot-runs patch:0.1:0   # per-layer entropy histograms
    python benchmarks/bye_sweep.py digits --seeds 0-2 --rules reference bsi2 top_kl:1 robust   # SmolLM2 recipe
    python benchmarks/bye_sweep.py digits-report --seeds 0-2
    python benchmarks/bye_sweep.py plots --plot-runs digits:0

Runs: triggers ``patch`` and ``blend`` × poison rates 5 / 10 / 20 % × seeds, plus the clean case (0 %).
Rules (``hf_trust.demo.studies.bye.RULES``): the reference (|Δμ| > 2(σ₁+σ₂)), the separation-index rule ``bsi``
(Ashman's D ≥ 2, our reconstruction), ``top_kl:1``
and ``robust``.  Cache files are keyed on every setting that determines them (seed, trigger, rate, n, steps and
the study's code version) and written atomically.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from hf_trust.atomic import atomic_save, atomic_write_json, atomic_write_text
from hf_trust.demo.studies import bye as study

torch.set_num_threads(1)
STUDY_VERSION = "1"
DEFAULT_CACHE = Path("/tmp/hf_trust_bye_sweep")


def _seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b) + 1) if b else [int(a)])
    return out


def _runs(seeds: list[int], triggers: list[str], rates: list[float], clean: bool) -> list[tuple[str, float, int]]:
    runs = []
    for rate in rates:
        for trig in triggers:
            runs += [(trig, rate, s) for s in seeds]
    if clean:
        runs += [("none", 0.0, s) for s in seeds]
    return runs


def _key(trigger: str, rate: float, seed: int, n: int, steps: int) -> str:
    return f"toy_v{STUDY_VERSION}_{trigger}_p{int(round(rate * 100)):02d}_s{seed}_n{n}_t{steps}"


def _save_npz(path: Path, r: dict[str, Any]) -> None:
    with open(path, "wb") as fh:  # a file object: np.savez would append ".npz" to the temporary name
        np.savez(fh, E=r["E"], poison=r["poison"], answers=r["answers"], asr=r["asr"], cp=r["cp"])


def stage_entropies(args: argparse.Namespace) -> None:
    args.cache.mkdir(parents=True, exist_ok=True)
    for trig, rate, seed in _runs(args.seeds, args.triggers, args.rates, not args.no_clean):
        path = args.cache / (_key(trig, rate, seed, args.n, args.steps) + ".npz")
        if path.exists():
            continue
        t0 = time.time()
        r = study.toy_entropy_run(seed, rate, "patch" if trig == "none" else trig, n=args.n, steps=args.steps)
        atomic_save(path, lambda p, r=r: _save_npz(p, r))
        print(f"{path.name}: ASR {r['asr']:.3f} CP {r['cp']:.3f} ({time.time() - t0:.0f} s)", flush=True)


def _load(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for trig, rate, seed in _runs(args.seeds, args.triggers, args.rates, not args.no_clean):
        path = args.cache / (_key(trig, rate, seed, args.n, args.steps) + ".npz")
        if not path.exists():
            continue
        z = np.load(path)
        rows.append(
            {
                "trigger": trig,
                "rate": rate,
                "seed": seed,
                "E": z["E"],
                "poison": z["poison"],
                "answers": z["answers"],
                "asr": float(z["asr"]),
                "cp": float(z["cp"]),
                "key": path.stem,
            }
        )
    return rows


def _refit_after(args: argparse.Namespace, key: str, rule: str, flagged: np.ndarray) -> Optional[dict]:
    """``{"asr", "cp"}`` after the cached re-fine-tune of ``rule`` on run ``key``; None when absent or stale."""
    p = args.cache / f"{key}_refit_{rule.replace(':', '')}.json"
    if not p.exists():
        return None
    rec = json.loads(p.read_text())
    if rec.get("flag_digest") != study.removal_digest(flagged):
        return None
    return {"asr": float(rec["asr"]), "cp": float(rec["cp"])}


def stage_refit(args: argparse.Namespace) -> None:
    for row in _load(args):
        if row["trigger"] == "none":
            continue
        res = study.apply_rules(row["E"], {k: study.RULES[k] for k in args.rules})
        for rule, (_rep, flagged) in res.items():
            path = args.cache / f"{row['key']}_refit_{rule.replace(':', '')}.json"
            digest = study.removal_digest(flagged)
            if path.exists() and json.loads(path.read_text()).get("flag_digest") == digest:
                continue
            t0 = time.time()
            if flagged.any():
                asr, cp = study.toy_refit(row["seed"], row["rate"], ~flagged, row["trigger"], args.n, args.steps)
            else:  # nothing removed: the re-fine-tune would see the same data as the poisoned model
                asr, cp = row["asr"], row["cp"]
            atomic_write_json(path, {"asr": asr, "cp": cp, "removed": int(flagged.sum()), "flag_digest": digest})
            print(f"{path.name}: ASR {asr:.3f} CP {cp:.3f} ({time.time() - t0:.0f} s)", flush=True)


def _fmt(v: np.ndarray) -> str:
    v = np.asarray(v, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return "–"
    return f"{v.mean():.2f} ± {v.std():.2f}" + (f" (n={len(v)})" if len(v) < args_n_hint else "")


args_n_hint = 10**9  # set per table


def stage_report(args: argparse.Namespace) -> None:
    global args_n_hint
    rows = _load(args)
    if not rows:
        raise SystemExit(f"no cached runs under {args.cache}; run the 'entropies' stage first.")
    summary: dict[str, Any] = {}
    lines = []
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["trigger"], r["rate"]), []).append(r)
    rules = list(study.RULES)
    lines.append(
        "| trigger | poison | seeds | ASR / CP before | rule | precision | recall | removed | status ok | ASR after "
        "| ASR after ≤ 0.05 | CP after |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (trig, rate), rs in sorted(groups.items(), key=lambda kv: (kv[0][0] == "none", kv[0][0], kv[0][1])):
        args_n_hint = len(rs)
        asr = np.array([r["asr"] for r in rs])
        cp = np.array([r["cp"] for r in rs])
        results = [study.apply_rules(r["E"]) for r in rs]
        for rule in rules:
            det = [study.detection(res[rule][1], r["poison"]) for res, r in zip(results, rs)]
            statuses = [res[rule][0].status for res in results]
            after, cp_after = [], []
            for res, r in zip(results, rs):
                a = _refit_after(args, r["key"], rule, res[rule][1])
                if a is not None:
                    after.append(a["asr"])
                    cp_after.append(a["cp"])
            prec = np.array([d["precision"] for d in det])
            rec = np.array([d["recall"] for d in det])
            rem = np.array([d["removed"] for d in det])
            before = f"{asr.mean():.2f} / {cp.mean():.2f}" if trig != "none" else f"– / {cp.mean():.2f}"
            lines.append(
                f"| {trig} | {int(round(rate * 100))} % | {len(rs)} | {before} | {rule} | {_fmt(prec)} | "
                f"{_fmt(rec)} | {_fmt(rem)} | {sum(s == 'ok' for s in statuses)}/{len(rs)} | "
                f"{_fmt(np.array(after)) if after else 'not run'} | "
                f"{f'{sum(a <= 0.05 for a in after)}/{len(after)}' if after else '–'} | "
                f"{_fmt(np.array(cp_after)) if cp_after else '–'} |"
            )
            summary[f"{trig}_{rate}_{rule}"] = {
                "precision": prec.tolist(),
                "recall": rec.tolist(),
                "removed": rem.tolist(),
                "status": statuses,
                "asr_after": after,
                "cp_after": cp_after,
                "seeds": [r["seed"] for r in rs],
            }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    atomic_write_json(args.out.with_suffix(".json"), summary)
    print("\n".join(lines))


def stage_plots(args: argparse.Namespace) -> None:
    """Per-layer entropy histograms (reference vs robust flags) for the runs named by --plot-runs."""
    for spec in args.plot_runs:
        if spec.startswith("digits:"):  # the SmolLM2-decoder recipe: patch trigger, 10 % poison
            trig, rate, seed = "digits", "0.1", spec.split(":")[1]
            path = _digit_stem(args, int(seed)).with_suffix(".npz")
            setting = f"SmolLM2-decoder LLaVA, digits, 10% patch poison, seed {seed}"
        else:
            trig, rate, seed = spec.split(":")
            path = args.cache / (_key(trig, float(rate), int(seed), args.n, args.steps) + ".npz")
            setting = f"toy, {trig} trigger, {float(rate):.0%} poison, seed {seed}"
        z = np.load(path)
        res = study.apply_rules(z["E"], {k: study.RULES[k] for k in ("reference", "robust")})
        for rule, (rep, flagged) in res.items():
            d = study.detection(flagged, z["poison"])
            fig = study.plot_layer_histograms(
                z["E"],
                flagged,
                z["poison"],
                title=f"{setting} — {rule} rule: layers "
                f"{rep.sensitive_layers}, status {rep.status}, P {d['precision']:.2f} R {d['recall']:.2f}, "
                f"removed {d['removed']:.0%}",
            )
            out = args.plot_dir / f"bye_hist_{trig}_p{int(round(float(rate) * 100)):02d}_s{seed}_{rule}.png"
            atomic_save(out, lambda p, fig=fig: fig.savefig(p, dpi=100, format="png", bbox_inches="tight"))
            print(out)


DIGIT_SIZE = {"n_train": 300, "n_test": 100, "steps": 120}


def _digit_stem(args: argparse.Namespace, seed: int) -> Path:
    """The seed's cache stem; ``<stem>.npz`` holds its entropies, which no selection rule changes."""
    return args.cache / f"digits_v{STUDY_VERSION}_s{seed}_n{DIGIT_SIZE['n_train']}_t{DIGIT_SIZE['steps']}"


def _digit_summary_path(args: argparse.Namespace, seed: int) -> Path:
    """The per-seed summary holds every rule's detection figures, so its name carries the rules' configs."""
    stem = _digit_stem(args, seed)
    return stem.with_name(f"{stem.name}_r{study.rules_fingerprint()[:12]}.json")


def stage_digits(args: argparse.Namespace) -> None:
    """The SmolLM2-decoder recipe per seed: entropies cached, every rule's re-fine-tune cached."""
    args.cache.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        t0 = time.time()
        stem = _digit_stem(args, seed)
        r = study.run_digit_seed(
            seed,
            **DIGIT_SIZE,
            progress=True,
            refit_rules=tuple(args.rules),
            entropy_cache=str(stem) + ".npz",
            refit_cache_dir=str(args.cache),
        )
        summary = {
            "seed": seed,
            **DIGIT_SIZE,
            "asr_before": r["asr_before"],
            "cp_before": r["cp_before"],
            "max_auroc": r["max_auroc"],
            "best_layer": r["best_layer"],
            "rules": {
                k: {
                    kk: (vv.tolist() if isinstance(vv, np.ndarray) else vv)
                    for kk, vv in v.items()
                    if kk not in ("report", "flagged")
                }
                | {"removed_share_per_class": v["report"].removed_share_per_class}
                for k, v in r["rules"].items()
            },
        }
        atomic_write_json(_digit_summary_path(args, seed), summary)
        print(f"digits seed {seed}: {time.time() - t0:.0f} s", json.dumps(summary, default=str), flush=True)


def _layers(layers: list[int]) -> str:
    return f"layers {layers}" if len(layers) <= 6 else f"{len(layers)} layers"


def stage_digits_report(args: argparse.Namespace) -> None:
    global args_n_hint
    runs = [
        json.loads(_digit_summary_path(args, s).read_text())
        for s in args.seeds
        if _digit_summary_path(args, s).exists()
    ]
    if not runs:
        raise SystemExit(f"no digit runs cached under {args.cache}; run the 'digits' stage first.")
    args_n_hint = len(runs)
    lines = [
        "| rule | precision | recall | removed | status ok | ASR after | ASR after ≤ 0.05 | clean acc. after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rule in study.RULES:
        rr = [r["rules"][rule] for r in runs]

        def col(k: str, rr: list = rr) -> str:
            return _fmt(np.array([x.get(k, np.nan) for x in rr], dtype=float))

        ok = sum(x["status"] == "ok" for x in rr)
        lines.append(
            f"| {rule} | {col('precision')} | {col('recall')} | {col('removed')} | {ok}/{len(rr)} | "
            f"{col('asr_after')} | {sum(x.get('asr_after', 1.0) <= 0.05 for x in rr)}/{len(rr)} | {col('cp_after')} |"
        )
    lines += ["", "| seed | ASR / CP before | best layer (AUROC) | " + " | ".join(study.RULES) + " |"]
    lines.append("|---" * (3 + len(study.RULES)) + "|")
    for r in runs:
        cells = [
            f"{x['status']}, {_layers(x['layers'])}, removed {x['removed']:.0%}, P {x['precision']:.2f} / "
            f"R {x['recall']:.2f} → ASR {x.get('asr_after', float('nan')):.2f}, CP {x.get('cp_after', float('nan')):.2f}"
            for x in (r["rules"][k] for k in study.RULES)
        ]
        lines.append(
            f"| {r['seed']} | {r['asr_before']:.2f} / {r['cp_before']:.2f} | {r['best_layer']} "
            f"({r['max_auroc']:.3f}) | " + " | ".join(cells) + " |"
        )
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["entropies", "refit", "report", "plots", "digits", "digits-report"])
    ap.add_argument("--seeds", type=_seeds, default=_seeds("0-9"))
    ap.add_argument("--triggers", nargs="+", default=["patch", "blend"], choices=list(study.TRIGGERS))
    ap.add_argument("--rates", nargs="+", type=float, default=[0.1, 0.05, 0.2])
    ap.add_argument("--no-clean", action="store_true")
    ap.add_argument("--rules", nargs="+", default=["reference", "robust"], choices=list(study.RULES))
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--out", type=Path, default=Path("/tmp/hf_trust_bye_sweep/table.md"))
    ap.add_argument("--plot-runs", nargs="+", default=["patch:0.1:0", "patch:0.1:9"], help="trigger:rate:seed")
    ap.add_argument("--plot-dir", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    stages = {
        "entropies": stage_entropies,
        "refit": stage_refit,
        "report": stage_report,
        "plots": stage_plots,
        "digits": stage_digits,
        "digits-report": stage_digits_report,
    }
    stages[args.stage](args)


if __name__ == "__main__":
    main()
