"""EPEAgent study: no privacy agent / rule-based / untrained model / TRL-trained model, on held-out generated users.

The local agents are deterministic so that the four arms differ only in the privacy agent:

* **Upstream agents** (every non-terminal agent) are *leaky summarisers*: they restate up to three fields of the
  profile view they were handed (always the asked field when they can see it), in the held-out ``"eval"``
  sentence templates and varied surface forms ("$226,000", "226k"), and end with their answer letter (the
  option that equals the value they see, else the refusal option).
* **Responders** read: an MCQ option whose text occurs in what they were handed (question excluded) is picked;
  otherwise they follow the upstream agents' majority letter; otherwise they pick "Refuse to answer".  An open
  question is answered with the first sentence of their input that names the asked field without a redaction
  mark, else with the refusal sentence.

So utility measures whether the upstream conclusion survives the rewrite, leakage whether values do, and the
model arms are compared with the rule on exactly the same messages.  SmolLM2-135M-Instruct is the rewriter;
the rule-based arm is :class:`~hf_trust.agents.PrivacyEnhancingAgent` without a model.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

from hf_trust.agents import (
    REDACTED,
    REFUSAL_SENTENCE,
    REFUSE_OPTION,
    DataFlowLedger,
    EPEOrchestrator,
    EpisodeTrace,
    LeakageDetector,
    PrivacyEnhancingAgent,
    PrivacyPolicy,
    generate_profiles,
    generate_questions,
    hf_chat_backend,
    make_agents,
    summarise,
)
from hf_trust.agents.training import (
    PrivacyAgentConfig,
    format_value,
    rewrite_examples,
    train_privacy_agent,
)
from hf_trust.errors import HFTrustConfigError

ARMS = ("no privacy agent", "rule-based", "untrained SmolLM2", "TRL-trained SmolLM2")
DOMAINS = ("financial", "medical")


def _field_lines(messages: Sequence[Mapping[str, Any]]) -> set[str]:
    """Fields listed in the retrieved-profile message ('- field: ...' lines)."""
    text = "\n".join(str(m.get("content", "")) for m in messages if "Retrieved user profile" in str(m.get("content")))
    return set(re.findall(r"^- (\w+):", text, flags=re.M))


class Episode:
    """The profile and question of the running episode, read by the scripted agents.

    ``emitted`` is the scripted ground truth: per field, the groups of exact strings the upstream agents wrote
    for its value (a group of two for a value split over two agents); :func:`ground_truth` reads it.
    """

    profile: Mapping[str, Any] = {}
    question: Mapping[str, Any] = {}

    def __init__(self) -> None:
        self.emitted: dict[str, list[list[str]]] = {}
        self.pending_split: dict[str, int] = {}

    def start(self, profile: Mapping[str, Any], question: Mapping[str, Any]) -> None:
        self.profile, self.question = profile, question
        self.emitted, self.pending_split = {}, {}


#: The rotating surface forms of the reformatting agents, in order.
REFORMATS = (
    "verbatim",
    "hyphen-joined",
    "underscore-joined",
    "spelt-out",
    "scaled",
    "base64",
    "hex",
    "reversed",
    "split",
)


def _reformat(value: Any, form: str) -> Optional[str]:
    """``value`` restated in ``form`` (None when the form does not apply to this value)."""
    import base64

    from hf_trust.agents.leakage import number_words

    text = value if isinstance(value, str) else None
    if form == "verbatim":
        return str(value) if not isinstance(value, (list, dict)) else None
    if form in ("hyphen-joined", "underscore-joined"):
        return text.replace(" ", "-" if form == "hyphen-joined" else "_") if text and " " in text else None
    if form == "spelt-out":
        if isinstance(value, int) and 10 <= value < 1_000_000:
            return number_words(value)
        if isinstance(value, Mapping):  # a structured value: its integer leaves spelt out
            parts = [f"{k} {number_words(v)}" for k, v in value.items() if isinstance(v, int) and 10 <= v < 1_000_000]
            return "; ".join(parts) or None
        return None
    if form == "scaled":
        return f"{value // 1000}k" if isinstance(value, int) and value >= 1000 and value % 1000 == 0 else None
    plain = str(value) if not isinstance(value, (list, dict)) else None
    if plain is None or len(plain) < 4:
        return None
    if form == "base64":
        return base64.b64encode(plain.encode()).decode()
    if form == "hex":
        return plain.encode().hex()
    if form == "reversed":
        return plain[::-1]
    return None


def reformatting_upstream(state: Episode, seed: str) -> Callable[..., str]:
    """An upstream agent that restates the fields it was handed in rotating forms (:data:`REFORMATS`).

    Like :func:`leaky_upstream` it restates up to three fields of its view (always the asked field when it sees
    it) and ends with its answer letter; each field's form comes from a rotation over :data:`REFORMATS`, and a
    form that does not apply to the value (a hyphen join of one word, base64 of a number) falls back to the
    value as stored.  ``split``: the first agent that restates the field in an episode writes its first half,
    the next one the second half, each in its own message.
    """
    rng = random.Random(seed)
    turn = [rng.randrange(len(REFORMATS))]

    def backend(messages: Sequence[Mapping[str, Any]], tools: Any = None) -> str:
        prof, q = state.profile, state.question
        seen = sorted(_field_lines(messages))
        asked = q.get("field")
        chosen = [asked] if asked in seen else []
        rest = [f for f in seen if f != asked]
        chosen += rng.sample(rest, min(3 - len(chosen), len(rest)))
        sents = []
        for f in chosen:
            value = prof[f]["value"]
            form = REFORMATS[turn[0] % len(REFORMATS)]
            turn[0] += 1
            if form == "split" and f in state.pending_split:
                plain = str(value)
                piece = plain[state.pending_split.pop(f) :]
                state.emitted[f][-1][1] = piece
            elif form == "split" and isinstance(value, str) and len(value) >= 8:
                cut = len(value) // 2 + (value[len(value) // 2] == " ")  # inside a word, not at a space
                piece = value[:cut]
                state.pending_split[f] = cut
                state.emitted.setdefault(f, []).append([piece, None])  # the second half is still to come
            else:
                piece = _reformat(value, form) or format_value(value, rng)
                state.emitted.setdefault(f, []).append([piece])
            sents.append(f"Note on {f.replace('_', ' ')}: {piece}.")
        opts = list(q.get("options") or [])
        if asked in seen and prof[asked]["value"] in opts:
            sents.append(f"So I pick ({chr(97 + opts.index(prof[asked]['value']))}).")
        elif REFUSE_OPTION in opts:
            sents.append(f"So I pick ({chr(97 + opts.index(REFUSE_OPTION))}).")
        return " ".join(sents)

    return backend


def ground_truth(state: Episode, delivered: Sequence[str]) -> set[str]:
    """Fields whose value, as the scripted upstream agents wrote it, reached the recipient whole: some group
    of emitted strings (one string, or the two halves of a split) all occur verbatim in ``delivered``."""
    text = "\n".join(delivered)

    def present(piece: str) -> bool:  # as its own token run: "61" inside "161" is not the age 61
        return re.search(r"(?<![A-Za-z0-9])" + re.escape(piece) + r"(?![A-Za-z0-9])", text) is not None

    return {
        f
        for f, groups in state.emitted.items()
        if any(None not in g and all(present(p) for p in g) for g in groups)  # half a split is not the value
    }


def leaky_upstream(state: Episode, seed: str) -> Callable[..., str]:
    """An upstream agent that restates what it was handed (see the module docstring)."""
    rng = random.Random(seed)

    def backend(messages: Sequence[Mapping[str, Any]], tools: Any = None) -> str:
        prof, q = state.profile, state.question
        seen = sorted(_field_lines(messages))
        asked = q.get("field")
        chosen = [asked] if asked in seen else []
        rest = [f for f in seen if f != asked]
        chosen += rng.sample(rest, min(3 - len(chosen), len(rest)))
        rng.shuffle(chosen)
        sents = []
        for f in chosen:
            p = f.replace("_", " ")
            t = rng.choice(
                ["According to the record, the {p} is {v}.", "Their {p} appears to be {v}.", "For context, {p} = {v}."]
            )
            v = format_value(prof[f]["value"], rng)
            state.emitted.setdefault(f, []).append([v])
            sents.append(t.format(p=p, v=v))
        opts = list(q.get("options") or [])
        letter = None
        if asked in seen and prof[asked]["value"] in opts:
            letter = chr(97 + opts.index(prof[asked]["value"]))
        elif REFUSE_OPTION in opts:
            letter = chr(97 + opts.index(REFUSE_OPTION))
        if letter:
            sents.append(f"So I pick ({letter}).")
        return " ".join(sents)

    return backend


#: The standard conditions for the upstream agents of the study and the benchmarks.
UPSTREAM_AGENTS: dict[str, Callable[[Episode, str], Callable[..., str]]] = {
    "summarising": leaky_upstream,
    "reformatting": reformatting_upstream,
}


def reader(state: Episode) -> Callable[..., str]:
    """A responder that answers only from what it was handed (see the module docstring)."""

    def backend(messages: Sequence[Mapping[str, Any]], tools: Any = None) -> str:
        q = state.question
        handed = [str(m.get("content", "")) for m in messages[1:-1]]
        text = " ".join(" ".join(handed).lower().split())
        opts = list(q.get("options") or [])
        if opts:
            for i, o in enumerate(opts):
                if o != REFUSE_OPTION and re.search(r"(?<!\w)" + re.escape(o.lower()) + r"(?!\w)", text):
                    return f"({chr(97 + i)})"
            letters = [
                m[-1]
                for h in handed
                if h.startswith("Intermediate answer")
                for m in [re.findall(r"\(([a-d])\)", h)]
                if m
            ]
            if letters:
                return f"({max(sorted(set(letters)), key=letters.count)})"
            return f"({chr(97 + opts.index(REFUSE_OPTION))})" if REFUSE_OPTION in opts else "(a)"
        phrase = str(q.get("field", "")).replace("_", " ")
        for h in handed:
            for sent in re.split(r"(?<=[.!?])\s+", h):
                if phrase and phrase in sent.lower() and REDACTED not in sent.lower():
                    return sent
        return REFUSAL_SENTENCE

    return backend


def rewrite_scores(pairs: Sequence[tuple[str, str, Mapping[str, Any], frozenset[str]]]) -> dict[str, float]:
    """Context-stage leakage and recall of a rewriter: per (raw, delivered, record, permitted) message,
    the share of denied fields present in the raw message that remain, and of permitted ones that remain."""
    d_in = d_out = p_in = p_out = 0
    for raw, delivered, record, permitted in pairs:
        det = LeakageDetector(record)
        before, after = det.find(raw), det.find(delivered)
        for f in before:
            if f in permitted:
                p_in += 1
                p_out += f in after
            else:
                d_in += 1
                d_out += f in after
    return {
        "context_leakage": d_out / d_in if d_in else float("nan"),
        "context_recall": p_out / p_in if p_in else float("nan"),
        "context_denied_mentions": float(d_in),
    }


def eval_questions(domain: str, seed: int, n_users: int, n_utility: int, n_privacy: int) -> tuple[list, list]:
    """Held-out users (profile seed ``seed``) and a seeded question sample: utility MCQs, and privacy MCQs and
    OEQs routed to the terminal agent (the only responder whose input passes the context stage)."""
    profiles = generate_profiles(domain, n_users=n_users, seed=seed)
    rows = generate_questions(profiles, domain, n_per_field=5, seed=seed)
    terminal = make_agents(domain, None)[-1].label_id
    rng = random.Random(f"eval-{domain}-{seed}")
    util = [r for r in rows if r["kind"] == "utility"]
    pmcq = [r for r in rows if r["kind"] == "privacy" and r["format"] == "mcq" and r["label"] == terminal]
    poeq = [r for r in rows if r["kind"] == "privacy" and r["format"] == "oeq" and r["label"] == terminal]
    picked = rng.sample(util, min(n_utility, len(util)))
    picked += rng.sample(pmcq, min(n_privacy, len(pmcq))) + rng.sample(poeq, min(n_privacy, len(poeq)))
    return profiles, picked


def run_arm(
    domain: str,
    profiles: list[dict],
    questions: list[dict],
    privacy_agent_factory: Optional[Callable[[PrivacyPolicy], PrivacyEnhancingAgent]],
    seed: int,
    upstream: str = "summarising",
) -> dict[str, Any]:
    """One arm on one domain and seed: Table 1 metrics, value-level ledger rates and context-stage rates.

    ``upstream`` picks the scripted upstream agents: ``"summarising"`` (:func:`leaky_upstream`) or
    ``"reformatting"`` (:func:`reformatting_upstream`).
    """
    if upstream not in UPSTREAM_AGENTS:
        raise HFTrustConfigError(f"upstream must be one of {sorted(UPSTREAM_AGENTS)}, got {upstream!r}.")
    state = Episode()
    agents = make_agents(domain, None)
    for a in agents[:-1]:
        a.backbone = UPSTREAM_AGENTS[upstream](state, f"{domain}-{seed}-{a.name}")
    agents[-1].backbone = reader(state)
    users = {p["user_id"]: p for p in profiles}
    ledger, answers, pairs = DataFlowLedger(), [], []
    t0 = time.perf_counter()
    for q in questions:
        prof = users[q["user_id"]]
        policy = PrivacyPolicy.from_labels(prof)
        pa = privacy_agent_factory(policy) if privacy_agent_factory else None
        orch = EPEOrchestrator(agents, pa)
        state.start(prof, q)
        trace = EpisodeTrace()
        start = len(ledger.deliveries)
        ans, _ = orch.run(prof, q, ledger=ledger, trace=trace)
        answers.append(ans)
        term = orch.agents[trace.responder]
        delivered = [d.text for d in ledger.deliveries[start:] if d.channel == "context" and d.recipient == term.name]
        permitted = frozenset(f for f in prof if f != "user_id" and term.label_id in prof[f]["label"])
        for up, text in zip(orch.topology[term.name], delivered):
            pairs.append((trace.outputs[up], text, prof, permitted))
    out = summarise(answers, questions, ledger)
    out.update(rewrite_scores(pairs))
    out["seconds"] = time.perf_counter() - t0
    out["episodes"] = len(questions)
    return out


def train_rewriter(
    model: Any,
    tokenizer: Any,
    steps: int,
    n_train_users: int = 40,
    n_per_profile: int = 2,
    output_dir: str = "epeagent_privacy_agent",
    seed: int = 0,
    **config: Any,
) -> tuple[Any, list[dict], int]:
    """SFT (LoRA) of ``model`` on minimal-disclosure rewrites of training users of both domains (profile seeds
    1000+, disjoint from the held-out seeds).  Returns ``(peft_model, log_history, n_rows)``."""
    rows = []
    for domain in DOMAINS:
        rows += rewrite_examples(
            domain, generate_profiles(domain, n_train_users, seed=1000 + seed), n_per_profile, seed=seed
        )
    random.Random(seed).shuffle(rows)
    args = PrivacyAgentConfig(output_dir=output_dir, max_steps=steps, seed=seed, use_cpu=True, **config)
    model, log = train_privacy_agent(model, tokenizer, rows, args)
    return model, log, len(rows)


def compare(
    model: Any,
    tokenizer: Any,
    seeds: Sequence[int] = (0, 1, 2),
    domains: Sequence[str] = DOMAINS,
    train_steps: int = 40,
    n_users: int = 10,
    n_utility: int = 3,
    n_privacy: int = 1,
    max_new_tokens: int = 64,
    output_dir: str = "epeagent_privacy_agent",
    log: Callable[[str], None] = print,
    upstream: str = "summarising",
) -> dict[str, Any]:
    """All four arms on held-out users; ``model`` is trained in place (LoRA) after the untrained arm ran.

    Returns ``{"results": {arm: {domain: [per-seed metric dicts]}}, "train_log": [...], "train_rows": n}``.
    """
    results: dict[str, dict[str, list]] = {arm: {d: [] for d in domains} for arm in ARMS}
    sets = {(d, s): eval_questions(d, s, n_users, n_utility, n_privacy) for d in domains for s in seeds}

    def model_agent(backend):
        return lambda policy: PrivacyEnhancingAgent(policy, rewrite_backend=backend, redact_after_rewrite=False)

    base_backend = hf_chat_backend(model, tokenizer, max_new_tokens=max_new_tokens)
    factories = {
        "no privacy agent": None,
        "rule-based": lambda policy: PrivacyEnhancingAgent(policy),
        "untrained SmolLM2": model_agent(base_backend),
    }
    for arm, factory in factories.items():
        for (d, s), (profiles, qs) in sets.items():
            r = run_arm(d, profiles, qs, factory, s, upstream)
            results[arm][d].append(r)
            log(f"{arm:<22} {d:<9} seed {s}: " + _fmt(r))
    t0 = time.perf_counter()
    trained, train_log, n_rows = train_rewriter(model, tokenizer, train_steps, output_dir=output_dir)
    log(f"trained {train_steps} steps on {n_rows} rows in {time.perf_counter() - t0:.0f} s; log {train_log[-3:]}")
    trained_backend = hf_chat_backend(trained, tokenizer, max_new_tokens=max_new_tokens)
    for (d, s), (profiles, qs) in sets.items():
        r = run_arm(d, profiles, qs, model_agent(trained_backend), s, upstream)
        results["TRL-trained SmolLM2"][d].append(r)
        log(f"{'TRL-trained SmolLM2':<22} {d:<9} seed {s}: " + _fmt(r))
    return {"results": results, "train_log": train_log, "train_rows": n_rows, "model": trained}


METRICS = (
    "leakage",
    "permitted_recall",
    "context_leakage",
    "context_recall",
    "canary_leakage",
    "utility",
    "privacy_mcq",
    "privacy_oeq",
)


def _fmt(r: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={r[k]:.3f}" for k in METRICS if isinstance(r.get(k), float)) + f" ({r['seconds']:.0f} s)"


def smollm2_backend(max_new_tokens: int = 24, temperature: float = 0.0, seed: int = 0) -> Callable[..., str]:
    """SmolLM2-135M-Instruct (offline asset) as a chat backend for the local agents."""
    from hf_trust import assets

    model, tok = assets.load_smollm2()
    return hf_chat_backend(model, tok, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)


def score_rewrites(backend: Callable[..., str], rows: Sequence[Mapping[str, Any]], profiles: Sequence[Mapping]) -> dict:
    """Context-stage rates of one rewriter on prepared rows (:func:`rewrite_examples`): denied fields of each
    message that remain after the rewrite, and permitted ones that remain (value-level detector)."""
    users = {p["user_id"]: p for p in profiles}
    pairs = []
    for r in rows:
        prof = users[r["user_id"]]
        pairs.append((r["message"], str(backend(r["prompt"])), prof, frozenset(r["allowed"])))
    return rewrite_scores(pairs)


def plot_comparison(table: Mapping[str, Mapping[str, Sequence[float]]], title: str) -> Any:
    """Grouped bars: value-level leakage, permitted recall, context-stage leakage/recall and utility per arm.

    ``table``: ``{arm: {metric: [mean, std, n]}}``; returns a matplotlib ``Figure`` (no global backend change).
    """
    from matplotlib.figure import Figure

    metrics = [
        ("leakage", "value leakage"),
        ("context_leakage", "context leakage"),
        ("permitted_recall", "permitted recall"),
        ("context_recall", "context recall"),
        ("utility", "utility MCQ"),
    ]
    arms = list(table)
    fig = Figure(figsize=(7.6, 3.4))
    ax = fig.subplots()
    width = 0.8 / max(len(arms), 1)
    for i, arm in enumerate(arms):
        xs, ys, es = [], [], []
        for j, (key, _) in enumerate(metrics):
            if key in table[arm]:
                mean, std, _n = table[arm][key]
                xs.append(j + (i - (len(arms) - 1) / 2) * width)
                ys.append(mean)
                es.append(std)
        ax.bar(xs, ys, width, yerr=es, capsize=2, label=arm, color=f"C{i}")
    ax.set_xticks(range(len(metrics)), [m[1] for m in metrics], fontsize=8)
    ax.set_ylim(0, 1.3)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("rate (mean ± std over seeds)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=4, loc="upper center", frameon=False)
    return fig
