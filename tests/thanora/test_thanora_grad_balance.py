"""ThanoRA's gradient balance: the regulariser must not drown the task gradient while B is still near 0."""

from __future__ import annotations

import copy

import pytest
import torch
from datasets import Dataset
from peft import get_peft_model
from transformers import Qwen2Config, Qwen2ForCausalLM, TrainingArguments

import hf_trust  # noqa: F401  (registers the tuner)
from hf_trust import ThanoRAConfig, ThanoRATrainer, preprocess_thanora
from hf_trust.errors import HFTrustConfigError

SEEDS = range(5)


def tiny_qwen2(seed: int) -> Qwen2ForCausalLM:
    cfg = Qwen2Config(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(cfg)


def lm_batches(g: torch.Generator, hi: int, n: int = 2) -> list[dict]:
    return [
        {"input_ids": torch.randint(0, hi, (4, 16), generator=g), "attention_mask": torch.ones(4, 16, dtype=torch.long)}
        for _ in range(n)
    ]


def thanora_qwen2(seed: int, **kw):
    """A preprocessed ThanoRA adapter with the default config (covariance init, both factors, default λ)."""
    g = torch.Generator().manual_seed(seed)
    tasks = {"narrow": lm_batches(g, 6), "wide": lm_batches(g, 64)}
    cfg = ThanoRAConfig(
        task_names=list(tasks), r=8, lora_alpha=16, task_type="CAUSAL_LM", target_modules="all-linear", **kw
    )
    model = tiny_qwen2(seed)
    preprocess_thanora(model, cfg, tasks, seed=seed)
    return get_peft_model(model, cfg), tasks["narrow"] + tasks["wide"]


def ratio_curve(seed: int, lr: float, steps: int = 6, **kw) -> list[float]:
    """‖∇ regulariser‖ / ‖∇ task‖ before each of ``steps`` AdamW steps of task loss + regulariser."""
    model, data = thanora_qwen2(seed, **kw)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    ratios = []
    for s in range(steps):
        batch = data[s % len(data)]
        task = model(**batch, labels=batch["input_ids"]).loss
        ratios.append(model.base_model.gradient_norms(task)["ratio"])
        loss = task + model.base_model.regularization_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ratios


@pytest.mark.trains
@pytest.mark.parametrize("lr", [5e-5, 1e-3])  # the Trainer's default learning rate, and a LoRA-typical one
def test_regulariser_gradient_stays_below_task_gradient_in_the_first_steps(lr):
    torch.set_num_threads(1)
    worst = [max(ratio_curve(seed, lr)) for seed in SEEDS]
    # Measured worst ratio over the 6 steps, seeds 0–4: ≤ 2.5e-5 (lr 5e-5) and ≤ 4.9e-4 (lr 1e-3), identical natively
    # and under ATEN_CPU_CAPABILITY=avx2 / default; the unit-column B term gave 58–79 and 2.3–3.3 on the same runs.
    assert sum(w <= 1.0 for w in worst) == len(SEEDS), worst
    # The earlier form, kept as an option, is the one that drowns the task (so this test can tell them apart).
    earlier = [max(ratio_curve(seed, lr, normalize_B=True)) for seed in SEEDS[:2]]
    assert sum(w > 1.0 for w in earlier) == 2, earlier


def _independent_norms(model, task_loss):
    """‖∇ λ·L_sp‖ and ‖∇ task‖ recomputed from the factors alone (plain B columns, unit A rows), in float64."""
    params = [p for p in model.parameters() if p.requires_grad]
    task_grads = torch.autograd.grad(task_loss, params, retain_graph=True, allow_unused=True)
    task_sq = sum(float(g.double().pow(2).sum()) for g in task_grads if g is not None)
    lam = model.peft_config["default"].subspace_lambda
    leaves, total, n_layers = [], 0.0, 0
    for _, layer, slices in model.base_model.thanora_layers():
        a = layer.lora_A["default"].weight.detach().double().requires_grad_(True)
        b = layer.lora_B["default"].weight.detach().double().requires_grad_(True)
        leaves += [a, b]
        for i in range(len(slices)):
            for j in range(i + 1, len(slices)):
                (s0, e0), (s1, e1) = slices[i], slices[j]
                ai = a[s0:e0] / a[s0:e0].norm(dim=1, keepdim=True)
                aj = a[s1:e1] / a[s1:e1].norm(dim=1, keepdim=True)
                total = total + ((ai @ aj.T) ** 2).sum() + ((b[:, s0:e0].T @ b[:, s1:e1]) ** 2).sum()
        n_layers += 1
    reg_grads = torch.autograd.grad(lam * total / n_layers, leaves)
    return sum(float(g.pow(2).sum()) for g in reg_grads) ** 0.5, task_sq**0.5


def _randomize_B(model, seed=0, scale=0.1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer, _ in model.base_model.thanora_layers():
            w = layer.lora_B["default"].weight
            w.copy_(torch.randn(w.shape, generator=g) * scale)


def test_gradient_norms_equal_an_independent_recomputation():
    model, data = thanora_qwen2(0, subspace_lambda=0.7, orthogonal_init=False)
    _randomize_B(model)
    batch = data[0]
    task = model(**batch, labels=batch["input_ids"]).loss
    calls = model.base_model._regularizer_calls
    got = model.base_model.gradient_norms(task)
    reg, tsk = _independent_norms(model, task)
    assert got["regularizer"] == pytest.approx(reg, rel=1e-4) and reg > 0
    assert got["task"] == pytest.approx(tsk, rel=1e-5)
    assert got["ratio"] == pytest.approx(reg / tsk, rel=1e-4)
    assert model.base_model._regularizer_calls == calls  # a measurement is not the step's regulariser call
    task.backward()  # the task graph was kept for the step's own backward


def test_trainer_logs_the_ratio_it_measures(tmp_path):
    model, data = thanora_qwen2(1, subspace_lambda=0.5, orthogonal_init=False)
    _randomize_B(model, seed=1)
    ids = torch.cat([b["input_ids"] for b in data[:1]])  # one batch of 4 = the whole dataset: one known step
    # The first label of each row is masked: it is never a prediction target, but transformers < 5 counts it in the
    # Trainer's `num_items_in_batch` (64 tokens instead of the 60 predicted), which scales the task loss the Trainer
    # optimises by 60/64. Masking it makes the Trainer's loss the model's mean loss on every supported version.
    labels = ids.clone()
    labels[:, 0] = -100
    ds = Dataset.from_list([{"input_ids": r.tolist(), "labels": l.tolist()} for r, l in zip(ids, labels)])
    ref = copy.deepcopy(model)
    ref.train()
    expected = ref.base_model.gradient_norms(ref(input_ids=ids, labels=labels).loss)
    args = TrainingArguments(
        str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=1,
        report_to=[],
        learning_rate=1e-3,
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
    )
    trainer = ThanoRATrainer(model=model, args=args, train_dataset=ds)
    trainer.train()
    (row,) = trainer.grad_ratio_history
    assert row["step"] == 1
    assert row["ratio"] == pytest.approx(expected["ratio"], rel=1e-4) and expected["ratio"] > 0
    assert row["task"] == pytest.approx(expected["task"], rel=1e-4)
    logged = [h for h in trainer.state.log_history if "thanora_grad_ratio" in h]
    assert len(logged) == 1 and logged[0]["thanora_grad_ratio"] == pytest.approx(row["ratio"], rel=1e-6)
    # off on request, and a nonsense period is refused with the argument's name
    off = ThanoRATrainer(model=model, args=args, train_dataset=ds, grad_ratio_steps=0)
    off.train()
    assert off.grad_ratio_history == []
    with pytest.raises(HFTrustConfigError, match="grad_ratio_steps"):
        ThanoRATrainer(model=model, args=args, train_dataset=ds, grad_ratio_steps=-1)


def test_task_budget_is_r_minus_the_cooperative_rank():
    for coop, r, expected in (("auto", 8, 6), ("auto", 3, 2), (0, 8, 8), (3, 8, 5)):
        cfg = ThanoRAConfig(task_names=["a", "b"], r=r, cooperative_rank=coop)
        assert cfg.task_budget(r) == expected == r - cfg.cooperative_rank_for(r)
