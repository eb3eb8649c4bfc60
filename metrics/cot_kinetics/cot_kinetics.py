"""CoT-Kinetics: an energy score of a reasoning trace from how the model's layers move each token's state.

Load with ``evaluate.load(hf_trust.metric_path("cot_kinetics"))`` (from any working directory); ``"detection"`` adds AUROC / AUPR /
FPR@95 against correctness labels, for the energy and for five baselines on the same generations.
The energy is a RECONSTRUCTION of the paper's equation (see the metric card).
"""

import datasets
import evaluate
import numpy as np

from hf_trust.metrics.cot_kinetics.kinetics import (
    AGGREGATIONS,
    BASELINE_DIRECTION,
    COE_TOKEN_SETS,
    ENERGY_DIRECTION,
    EnergyWeights,
    KineticsError,
    check_position_limit,
    check_references,
    detection_metrics,
    locate_parts,
    score_batch,
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
    think_start / think_end (`str`): reasoning delimiters (default "<think>" / "</think>").
    gamma (`float` in [0, 1]): energy = gamma·momentum + (1 − gamma)·curvature + beta·potential (0.8).
    beta (`float`): weight of the logit-lens potential (0 = lens off, the default).
    term_weights (`dict[str, float]`, optional): override or add term weights by name
        ("momentum", "curvature", "potential", "kinetic").
    normalize (`bool`): divide movement by the token's net displacement ‖h^L − h^0‖ (default True).
    mass (`str`): "unit" or "surprisal".
    aggregation (`str`): "average" (default), "median", "max" or "last" over the reasoning tokens.
    lens_layers (`list[int]`, optional): states 0 … L read by the logit lens (negative = from the end);
        giving it turns the lens on; beta != 0 without it uses every layer.
    coe_token_set (`str`): tokens the CoE baselines average: "paper" (output tokens, default) or
        "authors_code" (first prompt token + outputs without the last, as the CoE release does).
    include_answer (`bool`): also score the answer tokens (default False).
    batch_size (`int` >= 1): samples per forward pass (left padding), default 4.
    calibration (`list[float]`, optional): reference energies for `confidence` (default: this batch).
    device (`str`, optional): where to run the model.
Returns:
    energy, confidence, momentum, curvature (and potential / kinetic when computed), terms (dict of the
    per-sample term values), profiles (per-layer values of each term), segment_status, n_reasoning_tokens,
    mean_energy, weights; baselines (maxprob, perplexity, entropy, coe_r, coe_c per sample);
    "detection" adds auroc, aupr, fpr_at_95 of the energy and a `detection_table` for the energy, each
    energy term alone and every baseline.
Examples:
    >>> ck = evaluate.load(hf_trust.metric_path("cot_kinetics"))  # doctest: +SKIP
    >>> ck.compute(predictions=["<think>2+2=4</think> 4"], prompts=["2+2?"], model=model, tokenizer=tok)  # doctest: +SKIP
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
        think_start="<think>",
        think_end="</think>",
        gamma=0.8,
        beta=0.0,
        term_weights=None,
        normalize=True,
        mass="unit",
        aggregation="average",
        lens_layers=None,
        coe_token_set="paper",
        include_answer=False,
        batch_size=4,
        calibration=None,
        device=None,
        alpha=None,
    ):
        if alpha is not None:
            raise KineticsError(
                f"alpha={alpha!r} is not a parameter of this energy: weigh momentum against curvature with gamma "
                "(energy = gamma·momentum + (1 − gamma)·curvature + beta·potential) or use term_weights."
            )
        # validate everything cheap before touching a model
        weights = EnergyWeights(
            gamma=gamma,
            beta=beta,
            normalize=normalize,
            mass=mass,
            aggregation=aggregation,
            term_weights=dict(term_weights or {}),
        )
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise KineticsError(f"batch_size must be a positive integer, got {batch_size!r}.")
        if coe_token_set not in COE_TOKEN_SETS:
            raise KineticsError(f"coe_token_set must be one of {COE_TOKEN_SETS}, got {coe_token_set!r}.")
        if aggregation not in AGGREGATIONS:
            raise KineticsError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}.")
        if model is None:
            if model_id is None:
                raise KineticsError("pass model= and tokenizer= (loaded objects) or model_id= (a local model folder).")
            model, loaded_tok = _load_local(model_id)
            tokenizer = tokenizer or loaded_tok
        if tokenizer is None:
            raise KineticsError("a tokenizer is needed with model=; pass tokenizer=.")
        n = len(token_ids) if token_ids is not None else len(predictions)
        if n == 0:
            raise KineticsError("predictions is empty; pass at least one generated output.")
        if token_ids is None and any(not p for p in predictions):
            raise KineticsError("some predictions are empty strings; remove them or pass token_ids=.")
        if prompts is not None and len(prompts) != n:
            raise KineticsError(f"{len(prompts)} prompts for {n} predictions; pass one prompt per prediction.")
        if references is not None and len(references) != n:
            raise KineticsError(f"{len(references)} references for {n} predictions.")
        if references is not None:
            check_references(references)
        start_ids = tokenizer(think_start, add_special_tokens=False)["input_ids"] if think_start else []
        end_ids = tokenizer(think_end, add_special_tokens=False)["input_ids"] if think_end else []
        if (think_start and not start_ids) or (think_end and not end_ids):
            raise KineticsError("a think delimiter tokenizes to nothing; pass delimiters the tokenizer knows.")
        locate_parts(model)  # fails clearly for a model without decoder layers / LM head
        if device is not None:
            model = model.to(device)
        was_training = model.training
        model.eval()
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
        check_position_limit(model, [len(q) for q in seqs])  # before any batch runs
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        scores = []
        try:
            for s in range(0, n, batch_size):
                scores += score_batch(
                    model,
                    seqs[s : s + batch_size],
                    plens[s : s + batch_size],
                    start_ids,
                    end_ids,
                    weights,
                    lens_layers=lens_layers,
                    include_answer=include_answer,
                    pad_id=pad,
                    coe_token_set=coe_token_set,
                )
        finally:
            model.train(was_training)  # leave the caller's model as it came
        energy = np.array([r.energy for r in scores])
        ref = np.asarray(calibration if calibration is not None else energy, dtype=np.float64)
        q1, med, q3 = np.percentile(ref, [25, 50, 75])
        tau = max(q3 - q1, 1e-12)
        confidence = 1.0 / (1.0 + np.exp(-(med - energy) / tau))
        term_names = list(scores[0].terms)
        out = {
            "energy": energy.tolist(),
            "confidence": confidence.tolist(),
            **{k: [r.terms[k] for r in scores] for k in term_names},
            "terms": {k: [r.terms[k] for r in scores] for k in term_names},
            "profiles": {k: [r.profiles[k] for r in scores] for k in term_names},
            "segment_status": [r.segment_status for r in scores],
            "n_reasoning_tokens": [r.n_reasoning_tokens for r in scores],
            "mean_energy": float(energy.mean()),
            "weights": weights.weights(),
            "baselines": {k: [r.baselines[k] for r in scores] for k in BASELINE_DIRECTION},
        }
        if self.config_name == "detection":
            if references is None:
                raise KineticsError("the detection config needs references (1 = answer correct, 0 = wrong).")
            table = {"cot_kinetics": detection_metrics(ENERGY_DIRECTION * energy, references)}
            for k in term_names:
                table[k] = detection_metrics(ENERGY_DIRECTION * np.asarray(out["terms"][k]), references)
            for k, sign in BASELINE_DIRECTION.items():
                table[k] = detection_metrics(sign * np.asarray(out["baselines"][k]), references)
            out.update(table["cot_kinetics"])
            out["detection_table"] = table
            out["n"] = n
        return out
