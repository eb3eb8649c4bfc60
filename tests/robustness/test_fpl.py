"""Federated prompt learning: saved prompts and diagnostics survive crashes and name truncated files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from hf_trust.errors import HFTrustCacheError
from hf_trust.trainers.fpl import load_prompts, save_diagnostics
from tests.fpl.fpl_fixtures import make_image_dataset, make_tiny_clip
from tests.fpl.test_fpl import _trainer


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    tr, parts, _ = _trainer("both", rounds=1, clients=2)
    tr.fit(parts)
    return tr


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_prompt_files_are_named(trained, tmp_path):
    for name, pattern in (
        ("fpl_prompts.safetensors", r"fpl_prompts.safetensors does not match the SHA-256"),
        ("fpl_prompt_config.json", r"fpl_prompt_config.json is truncated or not JSON"),
    ):
        out = trained.save_prompts(tmp_path / name)
        _truncate(out / name)
        with pytest.raises(HFTrustCacheError, match=pattern):
            load_prompts(make_tiny_clip(), out)
    # A config from before the weights hash was recorded still gets a clear error for cut-off weights.
    out = trained.save_prompts(tmp_path / "old")
    meta = json.loads((out / "fpl_prompt_config.json").read_text())
    del meta["weights_sha256"]
    (out / "fpl_prompt_config.json").write_text(json.dumps(meta))
    _truncate(out / "fpl_prompts.safetensors")
    with pytest.raises(HFTrustCacheError, match=r"cannot read .*fpl_prompts.safetensors.*truncated"):
        load_prompts(make_tiny_clip(), out)


def _crash_on(monkeypatch, name: str) -> None:
    real_fsync = os.fsync

    def crashing_fsync(fd):
        if f".{name}." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError("simulated crash during write")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", crashing_fsync)


@pytest.mark.parametrize("name", ["fpl_prompts.safetensors", "fpl_prompt_config.json"])
def test_crash_while_saving_prompts_keeps_the_previous_pair_loadable(trained, tmp_path, monkeypatch, name):
    out = trained.save_prompts(tmp_path / "p")
    x = make_image_dataset(4)[:4]["pixel_values"]
    with torch.no_grad():
        before = load_prompts(make_tiny_clip(), out)(x)
        for p in trained.model.prompts.values():
            p.add_(1.0)  # the new prompts differ from the saved ones
    try:
        _crash_on(monkeypatch, name)
        with pytest.raises(OSError, match="simulated crash"):
            trained.save_prompts(out)
        monkeypatch.undo()
        if name == "fpl_prompt_config.json":
            # new weights are in place, the config still describes the old ones: detected, not mixed up
            with pytest.raises(HFTrustCacheError, match="does not match the SHA-256"):
                load_prompts(make_tiny_clip(), out)
        else:
            with torch.no_grad():
                assert torch.equal(load_prompts(make_tiny_clip(), out)(x), before)
    finally:
        with torch.no_grad():
            for p in trained.model.prompts.values():
                p.sub_(1.0)
    assert not list(Path(out).glob("*.tmp"))


def test_crash_while_saving_diagnostics_leaves_the_previous_file(tmp_path, monkeypatch):
    rows = [{"round": 1, "text": {"mean_cos_to_global": 0.5, "similarity": [[1.0]], "cos_to_global": [0.5]}}]
    save_diagnostics(rows, tmp_path)
    before = {n: (tmp_path / n).read_bytes() for n in ("diagnostics.json", "update_cosine.png")}
    newer = rows + [{**rows[0], "round": 2}]
    for name in before:
        _crash_on(monkeypatch, name)
        with pytest.raises(OSError, match="simulated crash"):
            save_diagnostics(newer, tmp_path)
        monkeypatch.undo()
        assert (tmp_path / name).read_bytes() == before[name]
    assert not list(tmp_path.glob("*.tmp"))
