"""CoT-Kinetics: an energy score of a reasoning trace from how the model's layers move each token's state.

Load with ``evaluate.load(hf_trust.metric_path("cot_kinetics"))`` (from any working directory); ``"detection"`` adds AUROC / AUPR /
FPR@95 against correctness labels, for the energy and for five baselines on the same generations.
The energy is a RECONSTRUCTION of the paper's equation (see the metric card). Settings: one
``CotKineticsConfig`` (``config.py``), as ``config=`` or by field name; the math is in ``kinetics.py``, the model
plumbing in ``forward.py``; this file is the evaluate boilerplate only.
"""

import dataclasses

import datasets
import evaluate
import numpy as np

from hf_trust.metrics.cot_kinetics.config import CotKineticsConfig, from_settings
from hf_trust.metrics.cot_kinetics.forward import check_position_limit, locate_parts, score_batch
from hf_trust.metrics.cot_kinetics.kinetics import (
    BASELINE_DIRECTION,
    ENERGY_DIRECTION,
    KineticsError,
    check_references,
    confidence,
    detection_metrics,
)

_CITATION = """\
@article{bi2025cotkinetics,
  title={CoT-Kinetics: A Theoretical Modeling Assessing LRM Reasoning Process},
  author={Bi, Jinhe and Yan, Danqi and Wang, Yifan and Huang, Wenke and Chen, Haokun and Wan, Guancheng and Ye, Mang and Xiao, Xun and Sch{\\"u}tze, Hinrich and Tresp, Volker and Ma, Yunpu},
  journal={arXiv preprint arXiv:2505.13408},
  year={2025}
}
"""

_DESCRIPTION = """\
CoT-Kinetics treats each generated token's hidden state as a particle moved by the transformer layers
(layer index = time) and scores the reasoning segment by an energy made of pluggable terms: semantic
momentum (scale-free movement between layers, with a mass) and curvature (the turn between successive
layer moves), weighed by `gamma`, plus an optional logit-lens potential (off by default). Lower energy is
read as sounder reasoning; `confidence` maps it to (0, 1) against the batch (or a calibration set). The
equation is reconstructed from descriptions of the paper (see the metric card).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): generated outputs (reasoning, then answer), without the prompt.
    references (`list[int]`, "detection" only): 1 if the sample's final answer is correct, else 0.
    prompts (`list[str]`, optional): the prompt of each prediction (prepended, never scored).
    model / tokenizer: a loaded causal LM and its tokenizer; or `model_id`: a local model folder.
    token_ids (`list[list[int]]`, optional): exact generated ids (prompt excluded); overrides `predictions`.
    prompt_ids (`list[list[int]]`, optional): exact prompt ids to go with `token_ids`.
    config (`CotKineticsConfig`, optional): the settings of the energy and of how traces are read (also
        accepted at `evaluate.load(..., config=...)`); any of its fields may instead be given by name here or at
        `evaluate.load`, and overrides the config's value. Fields (see the class docstring and the metric card):
        gamma (0.8), beta (0), term_weights, normalize (True), mass ("unit"), aggregation ("average"),
        lens_layers, think_start ("<think>"), think_end ("</think>"), include_answer (False),
        coe_token_set ("paper"), batch_size (4). Any other name is refused.
    calibration (`list[float]`, optional): reference energies for `confidence` (default: this batch).
    device (`str`, optional): where to run the model.
Returns:
    energy, confidence, momentum, curvature (and potential / kinetic when computed), terms (dict of the
    per-sample term values), profiles (per-layer values of each term), segment_status, n_reasoning_tokens,
    mean_energy, weights, config (the settings used, as a dict); baselines (maxprob, perplexity, entropy, coe_r, coe_c per sample);
    "detection" adds auroc, aupr, fpr_at_95 of the energy and a `detection_table` for the energy, each
    energy term alone and every baseline.
Examples:
    >>> ck = evaluate.load(hf_trust.metric_path("cot_kinetics"))  # doctest: +SKIP
    >>> ck.compute(predictions=["<think>2+2=4</think> 4"], prompts=["2+2?"], model=model, tokenizer=tok)  # doctest: +SKIP
    >>> ck.compute(..., config=CotKineticsConfig(gamma=0.5, lens_layers=[-1]))  # doctest: +SKIP
"""


def _load_local(model_id: str):
    """Model and tokenizer from a local folder; a clear error when the folder is not there."""
    from pathlib import Path

    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(str(model_id)).expanduser()
    if not (path / "config.json").is_file():
        raise KineticsError(
            f"model_id={str(model_id)!r}: no model folder with a config.json at {path.resolve()}; CoT-Kinetics "
            "never downloads, so pass a local folder (save_pretrained) or model= and tokenizer= objects."
        )
    return (
        AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True),
        AutoTokenizer.from_pretrained(str(path), local_files_only=True),
    )


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CotKinetics(evaluate.Metric):
    """The metric; its settings are one :class:`CotKineticsConfig` (``config=`` or its field names as keywords)."""

    def __init__(self, *args, config=None, **kwargs):
        settings = {k: kwargs.pop(k) for k in list(kwargs) if k in _SETTING_NAMES}
        if not set(kwargs) <= _EVALUATE_INIT:
            # EvaluationModule would swallow an unknown keyword silently; a misspelt setting must not pass
            settings.update({k: v for k, v in kwargs.items() if k not in _EVALUATE_INIT})
        self.kinetics_config = from_settings(config, settings)
        super().__init__(*args, **{k: v for k, v in kwargs.items() if k in _EVALUATE_INIT})

    def _info(self):
        features = {"predictions": datasets.Value("string")}
        if self.config_name == "detection":
            features["references"] = datasets.Value("int32")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(features),
            reference_urls=["https://arxiv.org/abs/2505.13408", "https://github.com/Alsace08/Chain-of-Embedding"],
        )

    def _compute(
        self,
        predictions,
        references=None,
        prompts=None,
        model=None,
        tokenizer=None,
        model_id=None,
        token_ids=None,
        prompt_ids=None,
        calibration=None,
        device=None,
        config=None,
        **settings,
    ):
        # validate everything cheap before touching a model
        cfg = from_settings(config if config is not None else self.kinetics_config, settings)
        n = _check_inputs(predictions, references, prompts, token_ids)
        model, tokenizer = _resolve_model(model, tokenizer, model_id)
        start_ids, end_ids = _delimiter_ids(tokenizer, cfg)
        locate_parts(model)  # fails clearly for a model without decoder layers / LM head
        seqs, plens = _encode(tokenizer, n, predictions, prompts, token_ids, prompt_ids)
        check_position_limit(model, [len(q) for q in seqs])  # before any batch runs
        scores = _score_all(model, tokenizer, seqs, plens, start_ids, end_ids, cfg, device)
        out = _outputs(scores, cfg, calibration)
        if self.config_name == "detection":
            if references is None:
                raise KineticsError("the detection config needs references (1 = answer correct, 0 = wrong).")
            table = _detection_table(out, references)
            out.update(table["cot_kinetics"])
            out["detection_table"] = table
            out["n"] = n
        return out


#: Keywords ``evaluate.load`` passes to a module's constructor (everything else is a CoT-Kinetics setting).
_EVALUATE_INIT = frozenset(
    {
        "config_name",
        "keep_in_memory",
        "cache_dir",
        "num_process",
        "process_id",
        "seed",
        "experiment_id",
        "hash",
        "max_concurrent_cache_files",
        "timeout",
    }
)
_SETTING_NAMES = frozenset(f.name for f in dataclasses.fields(CotKineticsConfig))


def _check_inputs(predictions, references, prompts, token_ids) -> int:
    """The number of samples, after checking that every per-sample list has one entry per sample."""
    n = len(token_ids) if token_ids is not None else len(predictions)
    if n == 0:
        raise KineticsError("predictions is empty; pass at least one generated output.")
    if token_ids is None and any(not p for p in predictions):
        raise KineticsError("some predictions are empty strings; remove them or pass token_ids=.")
    if prompts is not None and len(prompts) != n:
        raise KineticsError(f"{len(prompts)} prompts for {n} predictions; pass one prompt per prediction.")
    if references is not None and len(references) != n:
        raise KineticsError(f"{len(references)} references for {n} predictions; pass one label per prediction.")
    if references is not None:
        check_references(references)
    return n


def _resolve_model(model, tokenizer, model_id):
    """``(model, tokenizer)`` from the objects given, or loaded from the local folder ``model_id``."""
    if model is None:
        if model_id is None:
            raise KineticsError("pass model= and tokenizer= (loaded objects) or model_id= (a local model folder).")
        model, loaded_tok = _load_local(model_id)
        tokenizer = tokenizer or loaded_tok
    if tokenizer is None:
        raise KineticsError("a tokenizer is needed with model=; pass tokenizer=.")
    return model, tokenizer


def _delimiter_ids(tokenizer, cfg: CotKineticsConfig) -> tuple[list[int], list[int]]:
    """Token ids of the think delimiters (empty for a delimiter set to "")."""
    start_ids = tokenizer(cfg.think_start, add_special_tokens=False)["input_ids"] if cfg.think_start else []
    end_ids = tokenizer(cfg.think_end, add_special_tokens=False)["input_ids"] if cfg.think_end else []
    if (cfg.think_start and not start_ids) or (cfg.think_end and not end_ids):
        raise KineticsError(
            "a think delimiter tokenizes to nothing; set CotKineticsConfig.think_start / think_end to text the "
            'tokenizer knows (or "" for none).'
        )
    return start_ids, end_ids


def _encode(tokenizer, n, predictions, prompts, token_ids, prompt_ids) -> tuple[list[list[int]], list[int]]:
    """Each sample's full token sequence (prompt + output) and its prompt length."""
    seqs, plens = [], []
    for i in range(n):
        if prompt_ids is not None:
            p = list(prompt_ids[i])
        elif prompts is not None:
            p = tokenizer(prompts[i])["input_ids"]
        else:
            p = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        o = (
            list(token_ids[i])
            if token_ids is not None
            else tokenizer(predictions[i], add_special_tokens=False)["input_ids"]
        )
        if not o:
            raise KineticsError(f"prediction {i} tokenizes to nothing.")
        seqs.append(p + o)
        plens.append(len(p))
    return seqs, plens


def _score_all(model, tokenizer, seqs, plens, start_ids, end_ids, cfg: CotKineticsConfig, device):
    """Every sample's :class:`TraceScores`, ``cfg.batch_size`` at a time, the model left as it came."""
    if device is not None:
        model = model.to(device)
    was_training = model.training
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scores = []
    try:
        for s in range(0, len(seqs), cfg.batch_size):
            batch = slice(s, s + cfg.batch_size)
            scores += score_batch(model, seqs[batch], plens[batch], start_ids, end_ids, cfg, pad_id=pad)
    finally:
        model.train(was_training)  # leave the caller's model as it came
    return scores


def _outputs(scores, cfg: CotKineticsConfig, calibration) -> dict:
    """The returned dict: per-sample energies, confidence, terms, profiles, segments and baselines."""
    energy = np.array([r.energy for r in scores])
    term_names = list(scores[0].terms)
    return {
        "energy": energy.tolist(),
        "confidence": confidence(energy, calibration),
        **{k: [r.terms[k] for r in scores] for k in term_names},
        "terms": {k: [r.terms[k] for r in scores] for k in term_names},
        "profiles": {k: [r.profiles[k] for r in scores] for k in term_names},
        "segment_status": [r.segment_status for r in scores],
        "n_reasoning_tokens": [r.n_reasoning_tokens for r in scores],
        "mean_energy": float(energy.mean()),
        "weights": cfg.weights(),
        "config": cfg.to_dict(),
        "baselines": {k: [r.baselines[k] for r in scores] for k in BASELINE_DIRECTION},
    }


def _detection_table(out: dict, references) -> dict[str, dict[str, float]]:
    """AUROC / AUPR / FPR@95 of the energy, each energy term alone and every baseline, on the same samples."""
    table = {"cot_kinetics": detection_metrics(ENERGY_DIRECTION * np.asarray(out["energy"]), references)}
    for k, values in out["terms"].items():
        table[k] = detection_metrics(ENERGY_DIRECTION * np.asarray(values), references)
    for k, sign in BASELINE_DIRECTION.items():
        table[k] = detection_metrics(sign * np.asarray(out["baselines"][k]), references)
    return table
