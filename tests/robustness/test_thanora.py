"""ThanoRA under bad input: no preprocessing, stale/corrupt caches, incomplete saved configs, nonsense values."""

from __future__ import annotations

import json
import math
import os
import warnings
from types import SimpleNamespace

import pytest
import torch
from peft import PeftModel, get_peft_model

import hf_trust  # noqa: F401  (registers the tuner)
from hf_trust import ThanoRAConfig, preprocess_thanora
from hf_trust.errors import HFTrustCacheError, HFTrustConfigError, HFTrustDataError
from tests.conftest import make_tiny_llama


class Toy(torch.nn.Module):
    def __init__(self, d: int = 12, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.l1 = torch.nn.Linear(d, d)
        self.l2 = torch.nn.Linear(d, d)

    def forward(self, x, attention_mask=None):
        return self.l2(self.l1(x))


class ToyWithLoss(Toy):
    """Toy whose forward also returns a loss (what the gradient statistic needs)."""

    def forward(self, x, attention_mask=None, labels=None):
        out = super().forward(x)
        return SimpleNamespace(logits=out, loss=out.pow(2).mean())


def batches(seed=0, n=40, d=12, rank=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, n, d, generator=g)
    if rank is not None:
        x = (torch.randn(n, rank, generator=g) @ torch.randn(rank, d, generator=g))[None]
    return [{"x": x, "attention_mask": torch.ones(1, n)}]


def tasks(seed=0):
    return {"a": batches(seed, rank=2), "b": batches(seed + 1)}


def cfg(**kw):
    kw.setdefault("r", 8)
    return ThanoRAConfig(task_names=["a", "b"], target_modules=["l1", "l2"], **kw)


# ---------------------------------------------------------------------- no preprocessing
def test_get_peft_model_without_preprocessing_warns():
    with pytest.warns(UserWarning, match="preprocess_thanora was not run"):
        get_peft_model(Toy(), cfg())


def test_no_warning_when_preprocessed_or_asked_for_uniform_random():
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model, c = Toy(), cfg()
        preprocess_thanora(model, c, tasks())
        get_peft_model(model, c)
        get_peft_model(Toy(), cfg(rank_allocation="uniform", task_init="random"))
    # ... and the warning is the one thing between the two: the same call without preprocessing warns
    with pytest.warns(UserWarning, match="preprocess_thanora"):
        get_peft_model(Toy(), cfg(rank_allocation="uniform"))


# ---------------------------------------------------------------------- cache
def _ranks_after(path, model=None, config=None, data=None, **kw):
    c = config or cfg(**kw)
    preprocess_thanora(model or Toy(), c, data if data is not None else tasks(), cache_file=path)
    return c


@pytest.mark.parametrize(
    "change",
    [
        {"r": 10},
        {"rank_allocation": "entropy"},
        {"allocation_temperature": 0.5},
        {"allocation_scale": 0.3},
        {"cooperative_rank": 0},
        {"task_init": "spectrum"},
        {"min_rank_per_task": 2},
        {"orthogonal_init": False},
        {"calib_tokens_per_task": 10},
    ],
)
def test_cache_is_recomputed_when_any_setting_changes(tmp_path, change):
    path = tmp_path / "c.pt"
    _ranks_after(path)
    fresh = cfg(**change)
    preprocess_thanora(Toy(), fresh, tasks())  # the truth for the changed settings, without any cache
    with pytest.warns(UserWarning, match=r"stale \(made for other config settings\)"):
        cached = _ranks_after(path, **change)
    assert cached.task_rank_map == fresh.task_rank_map
    assert cached.task_entropy_map == fresh.task_entropy_map
    # and the rewritten cache now serves the new settings without a warning, even without data
    again = cfg(**change)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        preprocess_thanora(Toy(), again, {}, cache_file=path)
    assert again.task_rank_map == fresh.task_rank_map


def test_cache_is_recomputed_for_another_model_or_other_data(tmp_path):
    path = tmp_path / "c.pt"
    _ranks_after(path)
    other = Toy(seed=5)
    with pytest.warns(UserWarning, match="stale .*model"):
        _ranks_after(path, model=other)
    with pytest.raises(HFTrustCacheError, match="no task_batches"):
        preprocess_thanora(Toy(seed=0), cfg(), {}, cache_file=path)  # cache now belongs to Toy(seed=5)
    swapped = {"a": tasks()["b"], "b": tasks()["a"]}
    with pytest.warns(UserWarning, match="stale .*data"):
        c = _ranks_after(path, model=Toy(seed=5), data=swapped)
    truth = cfg()
    preprocess_thanora(Toy(seed=5), truth, swapped)
    assert c.task_rank_map == truth.task_rank_map


def test_corrupt_cache_is_detected_and_rebuilt(tmp_path):
    path = tmp_path / "c.pt"
    good = _ranks_after(path)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])  # truncated
    with pytest.raises(HFTrustCacheError, match="corrupt"):
        preprocess_thanora(Toy(), cfg(), {}, cache_file=path)
    with pytest.warns(UserWarning, match="corrupt"):
        rebuilt = _ranks_after(path)
    assert rebuilt.task_rank_map == good.task_rank_map
    # a payload edited in place (valid file, wrong contents) fails the checksum
    saved = torch.load(path, weights_only=True)
    saved["payload"]["init"]["l1"][0, 0] += 1.0
    torch.save(saved, path)
    with pytest.warns(UserWarning, match="corrupt"):
        fixed = _ranks_after(path)
    assert fixed.task_rank_map == good.task_rank_map


def test_cache_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    _ranks_after(path)
    before = path.read_bytes()

    def broken_save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"), pytest.warns(UserWarning, match="stale"):
        _ranks_after(path, r=10)
    assert path.read_bytes() == before  # the old cache is intact
    assert os.listdir(tmp_path) == ["c.pt"]  # no temporary file left behind


# ---------------------------------------------------------------------- incomplete saved adapter
def _saved_adapter(tmp_path):
    base = make_tiny_llama()
    c = ThanoRAConfig(
        task_names=["a", "b"], r=6, lora_alpha=12, task_type="CAUSAL_LM", target_modules=["q_proj", "v_proj"]
    )
    g = torch.Generator().manual_seed(0)
    data = {
        t: [{"input_ids": torch.randint(lo, hi, (2, 10), generator=g), "attention_mask": torch.ones(2, 10)}]
        for t, (lo, hi) in {"a": (0, 4), "b": (0, 128)}.items()
    }
    preprocess_thanora(base, c, data)
    model = get_peft_model(base, c)
    model.save_pretrained(tmp_path / "ad")
    return tmp_path / "ad"


def _edit_config(folder, fn):
    path = folder / "adapter_config.json"
    obj = json.loads(path.read_text())
    fn(obj)
    path.write_text(json.dumps(obj))


def test_reload_with_missing_task_rank_map_is_refused(tmp_path):
    folder = _saved_adapter(tmp_path)
    loaded = PeftModel.from_pretrained(make_tiny_llama(), folder)  # the intact adapter loads
    assert loaded.base_model.allocation_report()
    _edit_config(folder, lambda o: o.pop("task_rank_map"))
    with pytest.raises(HFTrustConfigError, match="task_rank_map has no entry"):
        PeftModel.from_pretrained(make_tiny_llama(), folder)


def test_reload_with_partial_task_rank_map_is_refused(tmp_path):
    folder = _saved_adapter(tmp_path)
    _edit_config(folder, lambda o: o["task_rank_map"].pop(sorted(o["task_rank_map"])[0]))
    with pytest.raises(HFTrustConfigError, match="task_rank_map has no entry"):
        PeftModel.from_pretrained(make_tiny_llama(), folder)


def test_reload_with_map_and_flag_stripped_is_not_silent(tmp_path):
    folder = _saved_adapter(tmp_path)

    def strip(o):
        o.pop("task_rank_map")
        o.pop("allocation_recorded")

    _edit_config(folder, strip)
    with pytest.warns(UserWarning, match="preprocess_thanora was not run"):
        PeftModel.from_pretrained(make_tiny_llama(), folder)


def test_adapter_without_preprocessing_reloads_its_exact_split(tmp_path):
    # the uniform split of an unpreprocessed adapter is recorded, so a reload does not depend on defaults
    c = ThanoRAConfig(task_names=["a", "b"], r=5, task_type="CAUSAL_LM", target_modules=["q_proj"], task_init="random")
    model = get_peft_model(make_tiny_llama(), ThanoRAConfig(**{**c.to_dict(), "rank_allocation": "uniform"}))
    model.save_pretrained(tmp_path / "u")
    saved = json.loads((tmp_path / "u" / "adapter_config.json").read_text())
    assert saved["allocation_recorded"] is True
    assert set(saved["task_rank_map"]) == {f"model.layers.{i}.self_attn.q_proj" for i in range(2)}
    assert all(v == [2, 2] for v in saved["task_rank_map"].values())  # 5 − ⌊5/3⌋ = 4 → 2 + 2


# ---------------------------------------------------------------------- nonsense values
@pytest.mark.parametrize(
    "field, value",
    [
        ("allocation_temperature", math.nan),
        ("allocation_temperature", math.inf),
        ("allocation_temperature", 0.0),
        ("allocation_temperature", -1.0),
        ("allocation_scale", math.nan),
        ("allocation_scale", 1.5),
        ("subspace_lambda", math.nan),
        ("subspace_lambda", -0.1),
        ("intra_lambda", math.inf),
        ("init_row_norm", 0.0),
        ("cooperative_rank", -1),
        ("cooperative_rank", 2.5),
        ("cooperative_rank", "half"),
        ("cooperative_rank", True),
        ("calib_tokens_per_task", 0),
        ("preview_samples_per_task", 0),
        ("min_rank_per_task", 0),
        ("rank_allocation", "greedy"),
        ("task_init", "pissa"),
        ("subspace_factors", "C"),
        ("normalize_B", "yes"),
    ],
)
def test_nonsense_values_name_the_field(field, value):
    with pytest.raises(HFTrustConfigError, match=f"ThanoRAConfig.{field}"):
        cfg(**{field: value})


# ---------------------------------------------------------------------- bad calibration batches
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("statistic", ["activation", "gradient"])
def test_non_finite_calibration_batch_names_the_task_and_the_fix(bad, statistic):
    data = tasks()
    x = data["b"][0]["x"].clone()
    x[0, 3, 5] = bad
    data["b"] = [{"x": x, "attention_mask": torch.ones(1, x.shape[1])}]
    with pytest.raises(HFTrustDataError, match=r"task 'b', calibration batch 0: input `x` holds 1 NaN/inf") as err:
        preprocess_thanora(ToyWithLoss(), cfg(allocation_statistic=statistic), data)
    assert "isfinite" in str(err.value)  # names the fix


def test_non_finite_activations_inside_the_model_name_the_layer():
    model = Toy()
    with torch.no_grad():
        model.l1.weight[0, 0] = math.inf  # finite inputs, but the first layer overflows
    with pytest.raises(HFTrustDataError, match=r"task 'a': the input of layer l2 holds NaN/inf"):
        preprocess_thanora(model, cfg(), tasks())


def test_calibration_batch_of_the_wrong_width_is_a_data_error():
    data = tasks()
    data["a"] = batches(d=10)  # the model's layers take width 12
    with pytest.raises(HFTrustDataError, match=r"task 'a': layer l1 takes inputs of width 12, .* width 10"):
        preprocess_thanora(Toy(), cfg(), data)


def test_token_ids_outside_the_vocabulary_are_a_data_error():
    g = torch.Generator().manual_seed(0)
    data = {
        t: [{"input_ids": torch.randint(0, hi, (2, 8), generator=g), "attention_mask": torch.ones(2, 8)}]
        for t, hi in {"a": 128, "b": 500}.items()  # the tiny Llama's vocabulary has 128 tokens
    }
    c = ThanoRAConfig(task_names=["a", "b"], r=4, task_type="CAUSAL_LM", target_modules=["q_proj"])
    with pytest.raises(HFTrustDataError, match=r"task 'b', calibration batch 0 .* fails in the model's forward"):
        preprocess_thanora(make_tiny_llama(), c, data)
