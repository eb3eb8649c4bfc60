"""Federated prompt learning: prompts, federation equivalences, VPTPR, diagnostics, adapters, errors."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from hf_trust.trainers.federated import (
    DirichletLabelPartitioner,
    DomainPartitioner,
    IIDPartitioner,
    derived_seed,
)
from hf_trust.trainers.fpl import (
    CLIPPromptModel,
    FederatedPromptTrainer,
    FPLConfig,
    FPLConfigError,
    PromptConfig,
    load_prompts,
    null_space_projector,
)
from tests.fpl.fpl_fixtures import CLASS_NAMES, WordTokenizer, make_image_dataset, make_tiny_clip


def _hash_backbone(clip) -> dict[str, str]:
    return {n: hashlib.sha256(p.detach().numpy().tobytes()).hexdigest() for n, p in clip.state_dict().items()}


def _zero_shot_logits(clip, ids, x):
    with torch.no_grad():
        t = clip.text_projection(clip.text_model(input_ids=ids).pooler_output)
        i = clip.visual_projection(clip.vision_model(pixel_values=x).pooler_output)
        t, i = t / t.norm(dim=-1, keepdim=True), i / i.norm(dim=-1, keepdim=True)
        return clip.logit_scale.exp() * i @ t.t()


def _trainer(kind="both", rounds=2, clients=3, **kw):
    clip = make_tiny_clip()
    prompt = PromptConfig(
        kind=kind,
        n_ctx_text=kw.pop("n_ctx_text", 3),
        n_ctx_vision=kw.pop("n_ctx_vision", 2),
        depth_text=kw.pop("depth_text", 2),
        depth_vision=kw.pop("depth_vision", 2),
    )
    ds = make_image_dataset()
    cfg = FPLConfig(rounds=rounds, batch_size=8, lr=kw.pop("lr", 0.05), seed=0, **kw)
    tr = FederatedPromptTrainer(
        clip, CLASS_NAMES, prompt=prompt, config=cfg, tokenizer=WordTokenizer(), eval_datasets={"test": ds}
    )
    parts = DirichletLabelPartitioner(num_clients=clients, alpha=0.5, min_size=4, seed=0).split(ds)
    return tr, parts, clip


def test_backbone_bit_identical_and_payload_exact():
    tr, parts, clip = _trainer("both", rounds=2)
    before = _hash_backbone(clip)
    start = {k: v.clone() for k, v in tr.global_params.items()}
    hist = tr.fit(parts)
    assert _hash_backbone(clip) == before
    assert all(not p.requires_grad for p in clip.parameters())
    # only prompt tensors travel; they moved
    assert sorted(tr.global_params) == ["prompts.text_0", "prompts.text_1", "prompts.vision_0", "prompts.vision_1"]
    assert all((tr.global_params[k] - start[k]).abs().max() > 0 for k in start)
    # n_ctx x width x depth, text + vision, float32, per uploading client
    numel = 3 * 32 * 2 + 2 * 32 * 2
    assert tr.model.payload_numel() == numel
    for row in hist:
        assert row["payload_bytes_up"] == numel * 4 * len(row["clients"])


def test_phrase_init_reproduces_zero_shot_logits():
    clip = make_tiny_clip()
    tok = WordTokenizer()
    x = make_image_dataset(8)[:8]["pixel_values"]
    ids = torch.tensor([[97] + tok(f"a photo of a {c}.")["input_ids"] + [98] for c in CLASS_NAMES])
    ref = _zero_shot_logits(clip, ids, x)
    model = CLIPPromptModel(
        clip, CLASS_NAMES, PromptConfig(kind="lpt", n_ctx_text=4, init_phrase="a photo of a"), tokenizer=tok
    )
    assert torch.equal(model.class_input_ids, ids)
    with torch.no_grad():
        got = model(x)
    assert (got - ref).abs().max() <= 1e-6
    # and through the trainer's evaluation at round 0
    ds = make_image_dataset(8)
    tr = FederatedPromptTrainer(
        make_tiny_clip(),
        CLASS_NAMES,
        prompt=PromptConfig(kind="lpt", n_ctx_text=4, init_phrase="a photo of a"),
        config=FPLConfig(rounds=1),
        tokenizer=tok,
    )
    acc = tr.evaluate(ds)["accuracy"]
    assert acc == pytest.approx(float((ref.argmax(-1) == ds[:]["label"]).float().mean()))


def test_removing_prompts_restores_base_model_exactly():
    clip = make_tiny_clip()
    x = make_image_dataset(4)[:4]["pixel_values"]
    ids = torch.tensor([[97, 1, 2, 6, 5, 98], [97, 1, 2, 7, 5, 98]])
    ref_t = clip.text_model(input_ids=ids).pooler_output.detach().clone()
    ref_v = clip.vision_model(pixel_values=x).last_hidden_state.detach().clone()
    model = CLIPPromptModel(
        clip,
        CLASS_NAMES,
        PromptConfig(kind="both", n_ctx_text=3, n_ctx_vision=5, depth_text=3, depth_vision=2),
        tokenizer=WordTokenizer(),
    )
    with torch.no_grad():
        hooked_v = clip.vision_model(pixel_values=x).last_hidden_state
    assert hooked_v.shape[1] == 1 + 16 + 5  # CLS + patches + appended prompts
    assert not torch.allclose(hooked_v[:, :17], ref_v, atol=1e-4)  # the tokens attend to the prompts
    base = model.remove_prompts()
    assert base is clip
    assert torch.equal(clip.text_model(input_ids=ids).pooler_output, ref_t)
    assert torch.equal(clip.vision_model(pixel_values=x).last_hidden_state, ref_v)


def test_deep_prompts_replace_positions_and_all_get_gradients():
    clip = make_tiny_clip()
    model = CLIPPromptModel(
        clip,
        CLASS_NAMES,
        PromptConfig(kind="both", n_ctx_text=2, n_ctx_vision=3, depth_text=3, depth_vision=2),
        tokenizer=WordTokenizer(),
    )
    seen = {}

    def grab_v(_m, args, _out):
        seen["v"] = args[0].detach().clone()

    def grab_t(_m, args, _out):
        seen["t"] = args[0].detach().clone()

    h = clip.vision_model.encoder.layers[1].register_forward_hook(grab_v)
    h2 = clip.text_model.encoder.layers[2].register_forward_hook(grab_t)
    x = make_image_dataset(4)[:4]["pixel_values"]
    model(x).logsumexp(-1).sum().backward()
    h.remove(), h2.remove()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.prompts.values())
    assert all(p.grad is None for p in clip.parameters())
    # hooks registered later run after ours: layer 1 of the vision tower sees vision_1 in the last slots
    assert torch.equal(seen["v"][0, -3:], model.prompts["vision_1"].detach())
    assert torch.equal(seen["t"][0, 1:3], model.prompts["text_2"].detach())


def test_one_client_equals_centralized():
    ds = make_image_dataset(40)
    clip = make_tiny_clip()
    prompt = PromptConfig(kind="both", n_ctx_text=2, n_ctx_vision=2, depth_text=2, depth_vision=1, seed=3)
    cfg = FPLConfig(rounds=1, local_epochs=3, batch_size=8, lr=0.05, momentum=0.9, weight_decay=5e-4, seed=4)
    tr = FederatedPromptTrainer(clip, CLASS_NAMES, prompt=prompt, config=cfg, tokenizer=WordTokenizer())
    tr.fit(IIDPartitioner(num_clients=1, seed=0).split(ds))

    central = CLIPPromptModel(make_tiny_clip(), CLASS_NAMES, prompt, tokenizer=WordTokenizer())
    params = [p for p in central.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(derived_seed(4, 0, 0))
    for _ in range(3):
        order = torch.randperm(len(ds), generator=gen)
        for s in range(0, len(ds), 8):
            b = ds[order[s : s + 8].tolist()]
            loss = torch.nn.functional.cross_entropy(central(b["pixel_values"]), b["label"])
            opt.zero_grad()
            loss.backward()
            opt.step()
    for name, p in central.named_parameters():
        if p.requires_grad:
            assert (tr.global_params[name] - p.detach()).abs().max() <= 1e-6, name


def test_equal_and_weighted_aggregation_differ_exactly_by_weights():
    results = {}
    for agg in ("weight", "equal"):
        tr, parts, _ = _trainer("lpt", rounds=1, clients=3, aggregation=agg)
        start = {k: v.clone() for k, v in tr.global_params.items()}
        tr.fit(parts)
        results[agg] = (tr, start, parts)
    tr, start, parts = results["weight"]
    deltas = tr.client_trainer.last_deltas
    sizes = parts.sizes()
    for agg, weights in (("weight", [s / sum(sizes) for s in sizes]), ("equal", [1 / 3] * 3)):
        tr_a = results[agg][0]
        assert tr_a.client_trainer.last_deltas.keys() == deltas.keys()
        for name in start:
            expect = start[name] + sum(w * deltas[k][name] for k, w in zip(range(3), weights))
            assert (tr_a.global_params[name] - expect).abs().max() <= 1e-6


def test_vptpr_projects_local_updates_into_null_space():
    p = torch.randn(2, 32)
    proj = null_space_projector(p, drop_ratio=0.2)
    assert (p @ proj).abs().max() < 1e-5  # the global prompt's row space is removed
    assert proj.norm().item() == pytest.approx(1.0, abs=1e-5)
    tr, parts, _ = _trainer("vpt", rounds=2, clients=2, vptpr=True, depth_vision=1, lr=0.5, optimizer="adam")
    tr.fit(parts)
    # the second round started from the first round's global prompt; every client's change lies in its null space
    hist_start = tr.global_params["prompts.vision_0"] - sum(
        w * d["prompts.vision_0"]
        for w, d in zip(
            [s / sum(parts.sizes()) for s in parts.sizes()], [tr.client_trainer.last_deltas[k] for k in range(2)]
        )
    )
    for k in range(2):
        d = tr.client_trainer.last_deltas[k]["prompts.vision_0"]
        assert d.abs().max() > 1e-4
        assert (d @ hist_start.t()).abs().max() / (d.norm() * hist_start.norm()) < 1e-4
    # without VPTPR the change is not confined that way
    tr2, parts2, _ = _trainer("vpt", rounds=2, clients=2, vptpr=False, depth_vision=1, lr=0.5, optimizer="adam")
    tr2.fit(parts2)
    d2 = tr2.client_trainer.last_deltas[0]["prompts.vision_0"]
    assert (d2 @ hist_start.t()).abs().max() / (d2.norm() * hist_start.norm()) > 1e-3


def test_diagnostics_saved_and_consistent(tmp_path):
    tr, parts, _ = _trainer("both", rounds=2, clients=3, output_dir=str(tmp_path), save_every=0)
    hist = tr.fit(parts)
    assert len(tr.diagnostics) == 2
    for d in tr.diagnostics:
        for g in ("text", "vision"):
            m = torch.tensor(d[g]["similarity"])
            assert torch.allclose(m, m.t(), atol=1e-12) and torch.allclose(m.diag(), torch.ones(3), atol=1e-9)
            assert all(-1 <= c <= 1 for c in d[g]["cos_to_global"])
    assert hist[-1]["update_cos_lpt"] == pytest.approx(tr.diagnostics[-1]["text"]["mean_cos_to_global"])
    saved = json.loads((tmp_path / "diagnostics.json").read_text())
    assert saved[0]["round"] == 1
    assert (tmp_path / "update_cosine.png").stat().st_size > 0 and (tmp_path / "client_similarity.png").is_file()
    assert (tmp_path / "partition.json").is_file() and (tmp_path / "history.json").is_file()
    s = tr.summary("eval_test_accuracy", last=2)
    accs = [r["eval_test_accuracy"] for r in hist]
    assert s["best"] == max(accs) and s["last_mean"] == pytest.approx(sum(accs) / 2)


def test_single_client_cosine_is_one_and_domain_partition_runs():
    ds = make_image_dataset(32)
    parts = DomainPartitioner(num_clients=2, seed=0).split(ds)
    tr = FederatedPromptTrainer(
        make_tiny_clip(),
        CLASS_NAMES,
        prompt=PromptConfig(kind="vpt", n_ctx_vision=2),
        config=FPLConfig(rounds=1, batch_size=8, lr=0.05, client_fraction=0.5),
        tokenizer=WordTokenizer(),
    )
    hist = tr.fit(parts)
    assert hist[0]["clients"] == [0]  # the first m clients, as in the study's loop
    assert tr.diagnostics[0]["vision"]["cos_to_global"] == [pytest.approx(1.0, abs=1e-9)]


def test_save_and_load_prompts_round_trip(tmp_path):
    tr, parts, _ = _trainer("both", rounds=1, clients=2)
    tr.fit(parts)
    x = make_image_dataset(6)[:6]["pixel_values"]
    with torch.no_grad():
        ref = tr.model(x)
    tr.save_prompts(tmp_path / "prompts")
    loaded = load_prompts(make_tiny_clip(), tmp_path / "prompts")
    with torch.no_grad():
        assert torch.equal(loaded(x), ref)
    from transformers import CLIPConfig, CLIPModel

    other = CLIPModel(
        CLIPConfig(
            text_config=dict(hidden_size=48, num_attention_heads=4),
            vision_config=dict(hidden_size=48, num_attention_heads=4, image_size=16, patch_size=4),
        )
    )
    with pytest.raises(FPLConfigError, match="widths"):
        load_prompts(other, tmp_path / "prompts")
    with pytest.raises(FileNotFoundError, match="no saved prompts"):
        load_prompts(make_tiny_clip(), tmp_path)


def test_clear_errors_on_bad_input():
    clip = make_tiny_clip()
    tok = WordTokenizer()
    with pytest.raises(FPLConfigError, match="kind"):
        PromptConfig(kind="prefix")
    with pytest.raises(FPLConfigError, match="n_ctx_text"):
        PromptConfig(n_ctx_text=0)
    with pytest.raises(FPLConfigError, match="4 tokens but n_ctx_text=3"):
        CLIPPromptModel(clip, CLASS_NAMES, PromptConfig(n_ctx_text=3, init_phrase="a photo of a"), tokenizer=tok)
    with pytest.raises(FPLConfigError, match="depth_vision=5 exceeds"):
        CLIPPromptModel(clip, CLASS_NAMES, PromptConfig(kind="vpt", depth_vision=5), tokenizer=tok)
    with pytest.raises(FPLConfigError, match="tokenizer"):
        CLIPPromptModel(clip, CLASS_NAMES, PromptConfig())
    with pytest.raises(FPLConfigError, match="positions"):
        CLIPPromptModel(clip, CLASS_NAMES, PromptConfig(n_ctx_text=30), tokenizer=tok)
    with pytest.raises(FPLConfigError, match="aggregation"):
        FPLConfig(aggregation="median")
    tr = FederatedPromptTrainer(
        make_tiny_clip(), CLASS_NAMES, prompt=PromptConfig(n_ctx_text=2), tokenizer=tok, config=FPLConfig(rounds=1)
    )
    ds = make_image_dataset(8).rename_column("pixel_values", "image")
    with pytest.raises(KeyError, match="no 'pixel_values' column"):
        tr.evaluate(ds)
    with pytest.raises(FPLConfigError, match="no dataset"):
        tr.fit(IIDPartitioner(num_clients=2).split(list(range(8))))


@pytest.mark.multiprocess
def test_two_process_accelerate_launch_equals_one_process(tmp_path):
    from tests.launch import accelerate_launch

    outs = {p: accelerate_launch("tests.fpl.mp_script", tmp_path / f"p{p}.pt", processes=p) for p in (1, 2)}
    assert outs[1]["world"] == 1 and outs[2]["world"] == 2
    for name, p in outs[1]["params"].items():
        assert (p - outs[2]["params"][name]).abs().max() <= 1e-5, name
    assert outs[1]["acc"] == outs[2]["acc"]
    d1, d2 = outs[1]["diagnostics"][-1], outs[2]["diagnostics"][-1]
    assert d1["clients"] == d2["clients"] == [0, 1, 2, 3]
    for g in ("text", "vision"):
        assert torch.allclose(torch.tensor(d1[g]["similarity"]), torch.tensor(d2[g]["similarity"]), atol=1e-5)


@pytest.mark.multiprocess
@pytest.mark.slow
def test_deepspeed_client_jobs_equal_simulation(tmp_path):
    from tests.launch import accelerate_launch

    pytest.importorskip("deepspeed")
    runs = accelerate_launch("tests.fpl.ds_script", tmp_path / "ds.pt", extra=("--use_deepspeed", "--zero_stage", "2"))
    assert set(runs["deepspeed"]) == set(runs["clients_per_rank"])
    for name, p in runs["clients_per_rank"].items():
        assert (runs["deepspeed"][name] - p).abs().max() <= 1e-5, name
        assert p.abs().sum() > 0
