"""CoT-Kinetics metric: terms and baselines against independent recomputations, detection direction,
invariances, segments, batching and errors.

The independent recomputations below follow the written definitions (metric card; Chain-of-Embedding
paper) on the states that ``output_hidden_states=True`` returns, in numpy, without calling the metric's
own helpers.
"""

from __future__ import annotations

import copy

import evaluate
import numpy as np
import pytest
import torch

import hf_trust
from hf_trust.metrics.cot_kinetics.kinetics import (
    CurvatureTerm,
    KineticsError,
    LayerStep,
    MomentumTerm,
    TermContext,
    reasoning_span,
)
from tests.conftest import make_tiny_gpt2, make_tiny_llama, make_word_tokenizer

WORDS = ["<pad>", "<s>", "<think>", "</think>", "<th", "ink>"] + [str(i) for i in range(10)] + ["+", "=", ";", "Q", "A"]
END = 3  # id of "</think>"


@pytest.fixture(scope="module")
def tok():
    vocab = {w: i for i, w in enumerate(WORDS + [f"w{i}" for i in range(60)])}
    return make_word_tokenizer(list(vocab))


@pytest.fixture(scope="module")
def metric():
    return evaluate.load(hf_trust.metric_path("cot_kinetics"))


@pytest.fixture(scope="module")
def detection():
    return evaluate.load(hf_trust.metric_path("cot_kinetics"), "detection")


def chain(rng):
    a, b = rng.integers(0, 10, 2)
    s = (a + b) % 10
    good = rng.random() < 0.5
    shown = s if good else (s + rng.integers(1, 9)) % 10
    return f"<think> {a} + {b} = {shown} </think> A {shown}", int(good)


def final_norm(model):
    return model.model.norm if hasattr(model, "model") else model.transformer.ln_f


def random_traces(n: int, seed: int):
    """(prompt ids, output ids) with a reasoning part, the end marker and a short answer."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        prompt = [1] + rng.integers(6, 80, int(rng.integers(2, 5))).tolist()
        reasoning = rng.integers(6, 80, int(rng.integers(3, 9))).tolist()
        out.append((prompt, reasoning + [END] + rng.integers(6, 80, 2).tolist()))
    return out


# ------------------------------------------------------------------ independent recomputation (numpy)
def independent_scores(model, prompt, output, lens_layers=(), gamma=0.8):
    """Every score of one trace from ``output_hidden_states=True``, written from the definitions."""
    seq = prompt + output
    ids = torch.tensor([seq])
    plen, T = len(prompt), len(seq)
    with torch.no_grad():
        normed = model(input_ids=ids, output_hidden_states=True)
        # the dynamics use pre-norm states: the same model with the final norm replaced by identity
        bare = copy.deepcopy(model)
        if hasattr(bare, "model"):
            bare.model.norm = torch.nn.Identity()
        else:
            bare.transformer.ln_f = torch.nn.Identity()
        pre = bare(input_ids=ids, output_hidden_states=True).hidden_states
    H = np.stack([h[0].double().numpy() for h in pre])  # (L+1, T, d), pre-norm
    HN = np.stack([h[0].double().numpy() for h in normed.hidden_states])  # last entry normed
    L = H.shape[0] - 1
    end = plen + output.index(END)
    positions = [t for t in range(plen, end) if t + 1 < T]
    mom, curv, pot = [], [], []
    for t in positions:
        traj = H[:, t]
        V = traj[1:] - traj[:-1]
        S = np.linalg.norm(traj[-1] - traj[0])
        mom.append(np.mean(np.linalg.norm(V, axis=1)) / S)
        cos = [V[i] @ V[i + 1] / (np.linalg.norm(V[i]) * np.linalg.norm(V[i + 1])) for i in range(L - 1)]
        curv.append(np.mean(np.arccos(np.clip(cos, -1, 1))))
        if lens_layers:
            vals = []
            for layer in lens_layers:
                with torch.no_grad():
                    logits = model.lm_head(final_norm(model)(torch.tensor(H[layer, t]).float()))
                lp = torch.log_softmax(logits.double(), -1)
                vals.append(-float(lp[seq[t + 1]]) / np.log(len(lp)))
            pot.append(np.mean(vals))
    # token-level baselines: every output token t is predicted at position t − 1
    lp = torch.log_softmax(normed.logits[0].double(), -1).numpy()
    rows = np.arange(plen - 1, T - 1)
    nxt = np.array(seq[plen:])
    p = np.exp(lp[rows])
    base = {
        "maxprob": p.max(1).mean(),
        "perplexity": np.exp(-lp[rows, nxt].mean()),
        "entropy": -(p * lp[rows]).sum(1).mean(),
    }

    def coe(positions_):
        hs = HN[:, positions_].mean(1)  # (L+1, d): average over tokens, per layer
        total = np.linalg.norm(hs[-1] - hs[0])
        mag = np.array([np.linalg.norm(hs[i + 1] - hs[i]) / total for i in range(L)])

        def angle(a, b):
            return np.arccos(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), -1, 1))

        ang = np.array([angle(hs[i + 1], hs[i]) for i in range(L)]) / angle(hs[-1], hs[0])
        return mag.mean() - ang.mean(), np.hypot((mag * np.cos(ang)).mean(), (mag * np.sin(ang)).mean())

    base["coe_r"], base["coe_c"] = coe(list(range(plen, T)))
    authors = coe([0] + list(range(plen, T - 1)))
    terms = {"momentum": np.mean(mom), "curvature": np.mean(curv)}
    if lens_layers:
        terms["potential"] = np.mean(pot)
    energy = gamma * terms["momentum"] + (1 - gamma) * terms["curvature"]
    surprisal = [-lp[t, seq[t + 1]] for t in positions]  # the mass option: −log p(y_{t+1})
    return {
        "energy": energy,
        "terms": terms,
        "baselines": base,
        "coe_authors": authors,
        "token_momentum": mom,
        "surprisal_momentum": float(np.mean(np.array(surprisal) * np.array(mom))),
    }


@pytest.mark.parametrize("factory", [make_tiny_llama, make_tiny_gpt2])
def test_terms_and_baselines_equal_independent_recomputation(metric, tok, factory):
    model = factory(layers=3)
    traces = random_traces(4, seed=3)
    kw = dict(
        predictions=["x"] * 4,
        token_ids=[o for _, o in traces],
        prompt_ids=[p for p, _ in traces],
        model=model,
        tokenizer=tok,
        think_start="",
        think_end="</think>",
        batch_size=3,  # left padding inside a batch must not change anything
    )
    out = metric.compute(**kw, lens_layers=[1, -1])
    authors = metric.compute(**kw, coe_token_set="authors_code")
    for i, (p, o) in enumerate(traces):
        ref = independent_scores(model, p, o, lens_layers=[1, 3])
        for k in ("momentum", "curvature", "potential"):
            np.testing.assert_allclose(out[k][i], ref["terms"][k], rtol=1e-5, err_msg=k)
        np.testing.assert_allclose(out["energy"][i], ref["energy"], rtol=1e-5)  # potential has weight 0
        for k, v in ref["baselines"].items():
            np.testing.assert_allclose(out["baselines"][k][i], v, rtol=1e-4, atol=1e-6, err_msg=k)
        np.testing.assert_allclose(authors["baselines"]["coe_r"][i], ref["coe_authors"][0], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(authors["baselines"]["coe_c"][i], ref["coe_authors"][1], rtol=1e-4, atol=1e-6)
    # the two CoE token sets are different definitions, and the energy does not depend on them
    assert not np.allclose(out["baselines"]["coe_r"], authors["baselines"]["coe_r"])
    assert out["energy"] == authors["energy"]


def test_gamma_weighs_momentum_against_curvature_and_aggregation(metric, tok):
    model = make_tiny_llama(layers=3)
    (p, o) = random_traces(1, seed=5)[0]
    kw = dict(predictions=["x"], token_ids=[o], prompt_ids=[p], model=model, tokenizer=tok, think_start="")
    ref = independent_scores(model, p, o)
    for gamma in (0.0, 0.3, 1.0):
        out = metric.compute(**kw, gamma=gamma)
        expect = gamma * ref["terms"]["momentum"] + (1 - gamma) * ref["terms"]["curvature"]
        np.testing.assert_allclose(out["energy"][0], expect, rtol=1e-6)
    mx = metric.compute(**kw, gamma=1.0, aggregation="max")
    np.testing.assert_allclose(mx["energy"][0], max(ref["token_momentum"]), rtol=1e-6)
    heavy = metric.compute(**kw, mass="surprisal")
    np.testing.assert_allclose(heavy["momentum"][0], ref["surprisal_momentum"], rtol=1e-5)
    kin = metric.compute(**kw, term_weights={"momentum": 0.0, "curvature": 0.0, "kinetic": 2.0})
    assert set(kin["terms"]) == {"momentum", "curvature", "kinetic"}
    np.testing.assert_allclose(kin["energy"][0], 2.0 * kin["kinetic"][0], rtol=1e-12)
    # a term named at weight 0 is reported alone without changing the energy
    shown = metric.compute(**kw, term_weights={"kinetic": 0.0})
    assert shown["kinetic"] == kin["kinetic"] and shown["energy"] == metric.compute(**kw)["energy"]


def test_saved_model_folder_gives_the_independent_values(tmp_path, metric, tok):
    model = make_tiny_llama()
    model.save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    (p, o) = random_traces(1, seed=9)[0]
    out = metric.compute(
        predictions=["x"], token_ids=[o], prompt_ids=[p], model_id=str(tmp_path / "tiny"), think_start=""
    )
    ref = independent_scores(model, p, o)
    np.testing.assert_allclose(out["energy"][0], ref["energy"], rtol=1e-5)
    np.testing.assert_allclose(out["momentum"][0], ref["terms"]["momentum"], rtol=1e-5)


# ------------------------------------------------------------------ detection direction
@pytest.mark.parametrize("factory", [make_tiny_llama, make_tiny_gpt2])
def test_detection_direction_of_every_score(detection, tok, factory):
    """Correctness is made to follow one score (the better half by that score's definition is labelled
    correct); that score's AUROC in the detection table must then be > 0.9. A flipped sign gives < 0.1."""
    model = factory(layers=3)
    traces = random_traces(24, seed=11)
    refs = [independent_scores(model, p, o, lens_layers=[2]) for p, o in traces]
    columns = {"cot_kinetics": [-r["energy"] for r in refs]}
    for k in ("momentum", "curvature", "potential"):
        columns[k] = [-r["terms"][k] for r in refs]  # lower energy term = sounder
    for k, sign in {"maxprob": 1, "perplexity": -1, "entropy": -1, "coe_r": 1, "coe_c": 1}.items():
        columns[k] = [sign * r["baselines"][k] for r in refs]  # CoE: larger = correct (CoE paper)
    for name, better in columns.items():
        better = np.asarray(better)
        labels = (better > np.median(better)).astype(int).tolist()
        out = detection.compute(
            predictions=["x"] * len(traces),
            references=labels,
            token_ids=[o for _, o in traces],
            prompt_ids=[p for p, _ in traces],
            model=model,
            tokenizer=tok,
            think_start="",
            lens_layers=[2],
            batch_size=12,
        )
        assert out["detection_table"][name]["auroc"] > 0.9, (name, out["detection_table"][name])
        if name == "cot_kinetics":
            assert out["auroc"] > 0.9


# ------------------------------------------------------------------ invariances, segments, batching
def test_answer_edits_leave_energy_bit_identical(metric, tok):
    model = make_tiny_llama()
    preds = ["<think> 1 + 2 = 3 ; 3 + 4 = 7 </think> A 7", "<think> 1 + 2 = 3 ; 3 + 4 = 7 </think> A 9 9 9"]
    kw = dict(predictions=preds, prompts=["Q 1 2 4"] * 2, model=model, tokenizer=tok, batch_size=1, lens_layers=[0, 2])
    out = metric.compute(**kw)
    assert out["energy"][0] == out["energy"][1]
    for k in ("momentum", "curvature", "potential"):
        assert out[k][0] == out[k][1], k
    # ...but the answer-aware option does see the edit
    both = metric.compute(**kw, include_answer=True)
    assert both["energy"][0] != both["energy"][1]


@pytest.mark.parametrize("factory", [make_tiny_llama, make_tiny_gpt2])
def test_terms_finite_and_profiles_vary_across_layers(metric, tok, factory):
    model = factory(layers=3)
    rng = np.random.default_rng(0)
    preds = [chain(rng)[0] for _ in range(4)]
    out = metric.compute(predictions=preds, prompts=["Q"] * 4, model=model, tokenizer=tok, beta=0.5)
    for key in ("energy", "momentum", "curvature", "potential", "confidence"):
        assert np.isfinite(out[key]).all(), key
    prof = {k: np.asarray(v) for k, v in out["profiles"].items()}
    assert prof["momentum"].shape == (4, 3) and prof["curvature"].shape == (4, 2) and prof["potential"].shape == (4, 4)
    for k, v in prof.items():
        assert v.std(axis=1).min() > 0, k  # contributions differ across layers
    # beta = 0.5 with no lens_layers reads every state 0 … L
    np.testing.assert_allclose(
        out["energy"],
        0.8 * np.array(out["momentum"]) + 0.2 * np.array(out["curvature"]) + 0.5 * np.array(out["potential"]),
    )
    assert all(0 < c < 1 for c in out["confidence"])


def test_default_has_no_logit_lens(metric, tok):
    out = metric.compute(predictions=["<think> 1 + 2 = 3 </think> A 3"], model=make_tiny_llama(), tokenizer=tok)
    assert "potential" not in out and set(out["terms"]) == {"momentum", "curvature"}
    assert out["weights"] == {"momentum": 0.8, "curvature": pytest.approx(0.2), "potential": 0.0}


def test_batching_with_left_padding_equals_one_by_one(metric, tok):
    model = make_tiny_llama()
    rng = np.random.default_rng(1)
    preds = [chain(rng)[0] + " ; w3" * int(rng.integers(0, 4)) for _ in range(5)]
    one = metric.compute(predictions=preds, prompts=["Q 5"] * 5, model=model, tokenizer=tok, batch_size=1)
    many = metric.compute(predictions=preds, prompts=["Q 5"] * 5, model=model, tokenizer=tok, batch_size=5)
    np.testing.assert_allclose(one["energy"], many["energy"], atol=1e-5)
    for k in ("perplexity", "coe_r", "coe_c"):
        np.testing.assert_allclose(one["baselines"][k], many["baselines"][k], rtol=1e-4, atol=1e-6)


def test_token_ids_path_equals_text_path(metric, tok):
    model = make_tiny_llama()
    text = "<think> 2 + 2 = 4 </think> A 4"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    prompt = tok("Q 2 2")["input_ids"]
    a = metric.compute(predictions=[text], prompts=["Q 2 2"], model=model, tokenizer=tok)
    b = metric.compute(predictions=["ignored"], token_ids=[ids], prompt_ids=[prompt], model=model, tokenizer=tok)
    assert a["energy"] == b["energy"]


def test_momentum_and_curvature_are_scale_invariant():
    torch.manual_seed(0)
    states = [torch.randn(6, 32, dtype=torch.float64) for _ in range(4)]
    results = []
    for c in (1.0, 7.5):
        terms = [MomentumTerm(), CurvatureTerm()]
        h_prev = v_prev = None
        for layer, h in enumerate(states):
            h = h * c
            v = None if h_prev is None else h - h_prev
            for t in terms:
                t.observe(LayerStep(layer, h, v, v_prev), None)
            h_prev, v_prev = h, v
        ctx = TermContext(
            h0=states[0] * c, h_last=states[-1] * c, mass=torch.ones(6, dtype=torch.float64), normalize=True
        )
        results.append([t.finish(ctx) for t in terms])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def test_segment_edge_cases(tok):
    def enc(s):
        return tok(s, add_special_tokens=False)["input_ids"]

    start, end = enc("<think>"), enc("</think>")
    prompt = enc("Q <think> 1")  # the prompt mentions the delimiter: ignored
    out = enc("<think> 1 + 2 </think> A 3")
    assert reasoning_span(prompt + out, len(prompt), start, end) == (len(prompt) + 1, len(prompt) + 4, "ok")
    truncated = enc("<think> 1 + 2 = 3 ; 4")
    first, last, status = reasoning_span(prompt + truncated, len(prompt), start, end)
    assert status == "no_think_end" and last == len(prompt) + len(truncated)
    multi_start, multi_end = enc("<th ink>"), enc("; ;")  # delimiters of several tokens
    seq = enc("Q") + enc("<th ink> 5 + 5 ; ; A 0")
    assert reasoning_span(seq, 1, multi_start, multi_end) == (3, 6, "ok")
    assert reasoning_span(enc("Q 1 2"), 1, start, end)[2] == "no_delimiters"


def test_model_left_as_it_came(metric, tok):
    model = make_tiny_llama().train()
    metric.compute(predictions=["<think> 1 </think> A 1"], model=model, tokenizer=tok)
    assert model.training
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_clear_errors(metric, detection, tok):
    model = make_tiny_llama()
    with pytest.raises(KineticsError, match="one prompt per prediction"):
        metric.compute(predictions=["<think> 1 </think>"], prompts=["Q", "Q"], model=model, tokenizer=tok)
    with pytest.raises(KineticsError, match="empty strings"):
        metric.compute(predictions=[""], model=model, tokenizer=tok)
    with pytest.raises(KineticsError, match="tokenizes to nothing"):
        metric.compute(predictions=["<think> 1 </think>"], model=model, tokenizer=tok, think_end="   ")
    with pytest.raises(KineticsError, match="causal language model"):
        metric.compute(predictions=["<think> 1 </think>"], model=torch.nn.Linear(2, 2), tokenizer=tok)
    with pytest.raises(KineticsError, match="model_id"):
        metric.compute(predictions=["<think> 1 </think>"])
    with pytest.raises(KineticsError, match="both correct"):
        detection.compute(predictions=["<think> 1 </think> A 1"] * 2, references=[1, 1], model=model, tokenizer=tok)
    with pytest.raises(KineticsError, match="coe_token_set"):
        metric.compute(predictions=["<think> 1 </think>"], model=model, tokenizer=tok, coe_token_set="all")
    with pytest.raises(KineticsError, match="aggregation"):
        metric.compute(predictions=["<think> 1 </think>"], model=model, tokenizer=tok, aggregation="sum")
    with pytest.raises(KineticsError, match="gamma must lie in"):
        metric.compute(predictions=["<think> 1 </think>"], model=model, tokenizer=tok, gamma=1.5)
    with pytest.raises(KineticsError, match="unknown term"):
        metric.compute(predictions=["<think> 1 </think>"], model=model, tokenizer=tok, term_weights={"spin": 1.0})
