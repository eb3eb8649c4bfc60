"""ThanoRA components: cooperative block, tempered allocation, covariance init, regulariser factors, delete_adapter."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from peft import PeftModel, get_peft_model

import hf_trust  # noqa: F401  (registers the tuner)
from hf_trust import ThanoRAConfig, preprocess_thanora
from hf_trust.errors import HFTrustConfigError
from hf_trust.peft_tuners.thanora.layer import softmax_allocation, softmax_weights
from tests.conftest import make_tiny_llama
from tests.thanora.test_thanora import Toy, lm_batches, toy_batches


def cfg3(**kw):
    kw.setdefault("r", 8)
    kw.setdefault("lora_alpha", 16)
    return ThanoRAConfig(task_names=["simple", "complex"], target_modules=["l1", "l2"], **kw)


def llama_cfg(**kw):
    kw.setdefault("r", 9)
    kw.setdefault("target_modules", ["q_proj", "v_proj"])
    return ThanoRAConfig(task_names=["narrow", "wide"], lora_alpha=18, task_type="CAUSAL_LM", **kw)


def llama_tasks():
    return {"narrow": lm_batches(seed=1, lo=0, hi=4), "wide": lm_batches(seed=2)}


def randomize(model, seed=0, coop_only=False):
    """Random B (and, with ``coop_only``, random cooperative rows/columns only)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer, slices in model.base_model.thanora_layers():
            a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
            n = slices[-1][1]
            if coop_only:
                a[n:] = torch.randn(a[n:].shape, generator=g)
                b[:, n:] = torch.randn(b[:, n:].shape, generator=g)
            else:
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)


# ---------------------------------------------------------------------- cooperative rank
@pytest.mark.parametrize(
    "r, tasks, coop, expected",
    [
        (8, 2, "auto", 2),
        (9, 2, "auto", 3),
        (8, 3, "auto", 2),
        (3, 2, "auto", 1),
        (2, 2, "auto", 0),
        (8, 2, 3, 3),
        (8, 2, 0, 0),
    ],
)
def test_cooperative_rank_arithmetic(r, tasks, coop, expected):
    names = [f"t{i}" for i in range(tasks)]
    cfg = ThanoRAConfig(task_names=names, r=r, cooperative_rank=coop, target_modules=["l1"])
    assert cfg.cooperative_rank_for(r) == expected


def test_cooperative_block_layout_in_model_and_report():
    model, cfg = Toy(), cfg3(r=9)
    preprocess_thanora(model, cfg, toy_batches())
    assert all(sum(v) == 6 for v in cfg.task_rank_map.values())  # 9 − ⌊9/3⌋
    peft = get_peft_model(model, cfg)
    for row in peft.base_model.allocation_report():
        assert row["cooperative"] == 3 and sum(row["ranks"].values()) == 6
    layer = peft.base_model.model.l1
    assert layer.thanora_cooperative["default"] == (6, 9)
    assert layer.thanora_slices["default"][-1][1] == 6
    # explicit int and off
    c = cfg3(r=8, cooperative_rank=0)
    preprocess_thanora(Toy(), c, toy_batches())
    assert all(sum(v) == 8 for v in c.task_rank_map.values())
    with pytest.raises(HFTrustConfigError, match="cooperative_rank"):
        cfg3(r=8, cooperative_rank=7)


def test_regulariser_ignores_the_cooperative_block_exactly():
    base = make_tiny_llama()
    cfg = llama_cfg(subspace_lambda=0.7, intra_lambda=0.2)
    preprocess_thanora(base, cfg, llama_tasks())
    model = get_peft_model(base, cfg)
    randomize(model)
    before = model.base_model.regularization_loss().detach().clone()
    randomize(model, seed=5, coop_only=True)
    after = model.base_model.regularization_loss().detach()
    assert torch.equal(before, after)
    # ... while a task row does move it (so the check can fail)
    with torch.no_grad():
        _, layer, _ = next(model.base_model.thanora_layers())
        layer.lora_A["default"].weight[0] += 0.5
    assert not torch.equal(after, model.base_model.regularization_loss().detach())


def test_merge_save_and_export_include_the_cooperative_block(tmp_path):
    base = make_tiny_llama()
    cfg = llama_cfg()
    preprocess_thanora(base, cfg, llama_tasks())
    model = get_peft_model(base, cfg)
    randomize(model)
    randomize(model, seed=3, coop_only=True)
    model.eval()
    ids = lm_batches(1, seed=12)[0]
    with torch.no_grad():
        ref = model(**ids).logits
        # The cooperative block contributes: zeroing its B columns changes the output.
        saved = {n: l.lora_B["default"].weight.clone() for n, l, _ in model.base_model.thanora_layers()}
        for _, layer, slices in model.base_model.thanora_layers():
            layer.lora_B["default"].weight[:, slices[-1][1] :] = 0
        assert (model(**ids).logits - ref).abs().max() > 1e-4
        for n, layer, _ in model.base_model.thanora_layers():
            layer.lora_B["default"].weight.copy_(saved[n])
    factors = {n: (a.clone(), b.clone(), s) for n, (a, b, s) in model.base_model.lora_factors().items()}
    assert all(a.shape[0] == 9 and b.shape[1] == 9 for a, b, _ in factors.values())
    model.save_pretrained(tmp_path / "th")
    model.base_model.export_as_lora(tmp_path / "lora")
    torch.manual_seed(0)
    loaded = PeftModel.from_pretrained(make_tiny_llama(), tmp_path / "th")
    assert loaded.base_model.allocation_report()[0]["cooperative"] == 3
    stock = PeftModel.from_pretrained(make_tiny_llama(), tmp_path / "lora")
    with torch.no_grad():
        assert (loaded(**ids).logits - ref).abs().max() < 1e-6
        assert (stock(**ids).logits - ref).abs().max() < 1e-6
        merged_model = model.merge_and_unload()
        merged = merged_model(**ids).logits
    assert (merged - ref).abs().max() < 1e-5
    # exact ΔW over all r rows (task and cooperative blocks): merged W − base W = s·BA
    fresh = make_tiny_llama()
    for name, (a, b, s) in factors.items():
        delta = merged_model.get_submodule(name).weight - fresh.get_submodule(name).weight
        assert (delta - s * b @ a).abs().max() < 1e-6


# ---------------------------------------------------------------------- tempered allocation
def _independent_softmax_split(h, r, tau, gamma, r_min):
    h = np.asarray(h, dtype=np.float64)
    e = np.exp((h - h.max()) / tau)
    w = (1 - gamma) / len(h) + gamma * e / e.sum()
    free = r - len(h) * r_min
    q = w * free
    base = np.floor(q).astype(int)
    rest = free - base.sum()
    order = sorted(range(len(h)), key=lambda i: (-(q[i] - base[i]), i))
    for i in order[:rest]:
        base[i] += 1
    return [int(x) + r_min for x in base]


@pytest.mark.parametrize("tau, gamma", [(0.05, 1.0), (0.02, 0.5), (0.2, 1.0), (1.0, 0.3)])
def test_softmax_allocation_matches_independent_formula(tau, gamma):
    for h in ([0.62, 0.69, 0.69], [0.43, 0.45, 0.56], [0.3, 0.9], [0.5, 0.51, 0.52, 0.7]):
        for r in (6, 12, 17):
            if r < len(h):
                continue
            assert softmax_allocation(h, r, tau, gamma, 1) == _independent_softmax_split(h, r, tau, gamma, 1)
    assert softmax_weights([0.5, 0.5, 0.5], tau, gamma).tolist() == pytest.approx([1 / 3] * 3)


def test_allocation_non_uniform_under_distinct_and_uniform_under_identical_statistics():
    model, cfg = Toy(), cfg3(r=12)  # 12 − 4 cooperative = 8 task ranks
    preprocess_thanora(model, cfg, toy_batches())
    r1, r2 = cfg.task_rank_map["l1"], cfg.task_rank_map["l2"]
    assert r1[1] > r1[0] and r2[0] > r2[1]  # the more complex task of each layer gets more
    assert r1 != [4, 4] and r2 != [4, 4]
    same = toy_batches()["simple"]
    c2 = cfg3(r=12)
    preprocess_thanora(Toy(), c2, {"simple": same, "complex": same})
    assert c2.task_rank_map["l1"] == [4, 4] == c2.task_rank_map["l2"]
    # γ = 0 is uniform whatever the entropies; the older power rule at τ = 1 is near-proportional
    c3 = cfg3(r=12, allocation_scale=0.0)
    preprocess_thanora(Toy(), c3, toy_batches())
    assert c3.task_rank_map["l1"] == [4, 4]


# ---------------------------------------------------------------------- covariance init
def test_covariance_init_matches_independent_svd_of_W_times_C():
    torch.manual_seed(2)
    model = Toy()
    batches = toy_batches()
    extra = {k: [v[0], toy_batches(seed=7)[k][0], toy_batches(seed=8)[k][0]] for k, v in batches.items()}
    cfg = cfg3(
        r=8,
        cooperative_rank=0,
        rank_allocation="manual",
        manual_ranks=[3, 5],
        orthogonal_init=False,
        preview_samples_per_task=2,
    )
    # one-shot generators (streamed) and a preview cap of 2 of the 3 one-example batches
    preprocess_thanora(model, cfg, {k: (b for b in v) for k, v in extra.items()})
    w = model.l1.weight.detach().double().numpy()
    init = model.l1._peft_thanora_init.double().numpy()
    offset = 0
    for t, rt in zip(cfg.task_names, [3, 5]):
        x = np.concatenate([b["x"][0].double().numpy() for b in extra[t][:2]])  # the first 2 examples only
        cov = x.T @ x / x.shape[0]
        _, _, vh = np.linalg.svd(w @ cov)
        angles = scipy.linalg.subspace_angles(init[offset : offset + rt].T, vh[:rt].T)
        assert angles.max() < 1e-6, angles
        offset += rt
    # the covariance init is not the activation-spectrum init (the test can tell them apart)
    x = batches["complex"][0]["x"][0].double().numpy()
    vx = np.linalg.svd(x)[2][:5]
    assert scipy.linalg.subspace_angles(init[3:8].T, vx.T).max() > 0.1


# ---------------------------------------------------------------------- regulariser factors
def _independent_cross(model, factors, normalize_B=False):
    total, n = 0.0, 0
    for _, layer, slices in model.base_model.thanora_layers():
        a = layer.lora_A["default"].weight.detach().double()
        b = layer.lora_B["default"].weight.detach().double()
        for i in range(len(slices)):
            for j in range(i + 1, len(slices)):
                (s0, e0), (s1, e1) = slices[i], slices[j]
                if factors in ("A", "both"):
                    ai = a[s0:e0] / a[s0:e0].norm(dim=1, keepdim=True)
                    aj = a[s1:e1] / a[s1:e1].norm(dim=1, keepdim=True)
                    total += float(((ai @ aj.T) ** 2).sum())
                if factors in ("B", "both"):
                    bi, bj = b[:, s0:e0], b[:, s1:e1]
                    if normalize_B:
                        bi, bj = bi / bi.norm(dim=0, keepdim=True), bj / bj.norm(dim=0, keepdim=True)
                    total += float(((bi.T @ bj) ** 2).sum())
        n += 1
    return total / n


@pytest.mark.parametrize("normalize_B", [False, True])
@pytest.mark.parametrize("factors", ["A", "B", "both"])
def test_regulariser_factors(factors, normalize_B):
    base = make_tiny_llama()
    cfg = llama_cfg(
        subspace_factors=factors,
        orthogonal_init=False,
        task_init="random",
        rank_allocation="uniform",
        normalize_B=normalize_B,
    )
    model = get_peft_model(base, cfg)
    randomize(model)
    expected = _independent_cross(model, factors, normalize_B)
    assert float(model.base_model.subspace_loss()) == pytest.approx(expected, rel=1e-4)
    assert ThanoRAConfig(task_names=["a", "b"], r=4, regularize_B=False).subspace_factors == "A"


# ---------------------------------------------------------------------- delete_adapter
def _dict_attrs_holding(obj, name):
    out = []
    for attr in dir(obj):
        if attr.startswith("_"):
            continue
        try:
            v = getattr(obj, attr)
        except AttributeError:
            continue
        if callable(getattr(v, "keys", None)) and hasattr(v, "__contains__") and name in v:
            out.append(attr)
    return out


def test_delete_adapter_leaves_no_thanora_state_and_keeps_the_other_adapter():
    base = make_tiny_llama()
    cfg = llama_cfg(rank_allocation="uniform", task_init="random")
    model = get_peft_model(base, cfg, adapter_name="foobar")
    model.add_adapter("other", llama_cfg(rank_allocation="uniform", task_init="random", r=6))
    layers = [m for _, m, _ in model.base_model.thanora_layers("foobar")]
    held = [(m, a) for m in layers for a in _dict_attrs_holding(m, "foobar")]
    assert {"thanora_slices", "thanora_cooperative"} <= {a for _, a in held}
    model.delete_adapter("foobar")
    assert [a for m, a in held if "foobar" in getattr(m, a)] == []
    assert all(m.thanora_slices["other"] == [(0, 2), (2, 4)] for m in layers)  # 6 − 2 = 4 → 2 + 2


def test_dora_variant_merges_exactly_and_refuses_stock_lora_export(tmp_path):
    base = make_tiny_llama()
    cfg = llama_cfg(use_dora=True, rank_allocation="uniform", task_init="random")
    model = get_peft_model(base, cfg)
    randomize(model)
    model.eval()
    ids = lm_batches(1, seed=4)[0]
    with torch.no_grad():
        ref = model(**ids).logits
    with pytest.raises(HFTrustConfigError, match="use_dora"):
        model.base_model.export_as_lora(tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with torch.no_grad():
        assert (model.merge_and_unload()(**ids).logits - ref).abs().max() < 1e-5


def test_add_weighted_adapter_gets_its_own_split_and_leaves_the_sources_alone():
    cfg = dict(rank_allocation="uniform", task_init="random")
    model = get_peft_model(make_tiny_llama(), llama_cfg(target_modules=["q_proj"], **cfg), "first")
    model.add_adapter("second", llama_cfg(target_modules=["v_proj"], r=6, **cfg))
    before = {k: list(v) for k, v in model.peft_config["first"].task_rank_map.items()}
    model.base_model.add_weighted_adapter(["first", "second"], [1.0, 1.0], "both", combination_type="cat")
    assert model.peft_config["first"].task_rank_map == before  # the copied config did not write into its map
    combined = model.peft_config["both"]
    layers = list(model.base_model.thanora_layers("both"))
    assert len(layers) == 4  # q_proj and v_proj of both decoder layers
    for name, layer, slices in layers:
        assert combined.task_rank_map[name] == [e - s for s, e in slices]
        assert layer.thanora_cooperative["both"] == (slices[-1][1], layer.r["both"])
