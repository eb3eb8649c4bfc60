"""The plain-PyTorch core of ACGKD (spec B2–B5) shared by :class:`ACGKDTrainer` and :func:`acgkd_distill`.

Generator side (teacher frozen, in ``eval()``; gradients still reach its inputs):
``L_gen = CE(T(G), ŷ) + α_BN·Σ_l(‖μ_l−μ̂_l‖ + ‖σ²_l−σ̂²_l‖) + α_H·H(X) [− β·KL(T‖S)]``.
Student side: ``L_KD = τ²·KL(T_τ ‖ S_τ)`` with the adversarial τ, on curriculum-sampled pseudo-graphs.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from hf_trust.errors import HFTrustConfigError

from .bank import GraphBatch, PseudoGraphBank
from .curriculum import CurriculumSampler
from .losses import AdvTemperature, BNStatHooks, adversarial_strength, feature_entropy, kd_loss
from .models import LiftedStudent, check_weighted_teacher


class DistillModel(nn.Module):
    """What trains and what ships: the (lifted) student plus the adversarial temperature φ.

    ``forward(..., tau_strength=s)`` also returns τ, so φ is used inside ``forward`` (DDP syncs its gradient).
    """

    def __init__(self, student: nn.Module, temperature: AdvTemperature):
        super().__init__()
        self.student = student
        self.temperature = temperature

    def forward(self, x, edge_index, edge_weight=None, batch=None, tau_strength: Optional[float] = None):
        logits = self.student(x, edge_index, edge_weight=edge_weight, batch=batch)
        if tau_strength is None:
            return logits
        return logits, self.temperature(tau_strength)


def _feat_dim(teacher: nn.Module) -> int:
    for name in ("in_dim", "num_node_features", "in_channels"):
        if isinstance(getattr(teacher, name, None), int):
            return getattr(teacher, name)
    raise HFTrustConfigError("Cannot tell the teacher's node-feature width: give it an `in_dim` attribute.")


def _num_classes(teacher: nn.Module) -> int:
    if isinstance(getattr(teacher, "classifier", None), nn.Linear):
        return teacher.classifier.out_features
    if isinstance(getattr(teacher, "num_classes", None), int):
        return teacher.num_classes
    raise HFTrustConfigError("Cannot tell the teacher's number of classes: give it `num_classes` or a `classifier`.")


def _optional_int(module: nn.Module, *names: str) -> Optional[int]:
    for name in names:
        value = getattr(module, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def check_teacher_student(teacher: Any, student: Any, reuse_teacher_head: bool) -> None:
    """Refuse a teacher/student pair that cannot be distilled, before any pseudo-graph is built.

    A missing student, a one-class teacher (its softmax is 1 everywhere, so the warm-up cross-entropy and every
    KD term are exactly 0 and nothing is learnt) and mismatched node-feature widths or class counts would
    otherwise fail deep inside the losses with a bare shape error, or not at all.
    """
    for role, module in (("teacher", teacher), ("student", student)):
        if not isinstance(module, nn.Module):
            raise HFTrustConfigError(
                f"acgkd: {role} must be a torch.nn.Module (e.g. GNNClassifier(...)), got {module!r}. Pass the "
                f"{role} model"
                + (
                    " (an encoder built with num_classes=None when reuse_teacher_head=True)."
                    if role == "student"
                    else "."
                )
            )
    classes = _num_classes(teacher)
    if classes < 2:
        raise HFTrustConfigError(
            f"acgkd: the teacher has {classes} class(es) (num_classes / classifier.out_features = {classes}); "
            "with one class its softmax is 1 for every graph, so the warm-up cross-entropy and the KD loss are "
            "exactly 0 and nothing would be learnt. Distil a teacher with at least 2 classes."
        )
    t_in, s_in = (
        _optional_int(teacher, "in_dim", "num_node_features", "in_channels"),
        _optional_int(student, "in_dim", "num_node_features", "in_channels"),
    )
    if t_in is not None and s_in is not None and t_in != s_in:
        raise HFTrustConfigError(
            f"acgkd: the student reads {s_in} node features (student.in_dim={s_in}) but the teacher, whose pseudo-"
            f"graphs it is trained on, reads {t_in} (teacher.in_dim={t_in}). Build the student with in_dim={t_in}."
        )
    s_classes = _optional_int(student, "num_classes")
    if isinstance(getattr(student, "classifier", None), nn.Linear):
        s_classes = student.classifier.out_features
    if not reuse_teacher_head and s_classes is not None and s_classes != classes:
        raise HFTrustConfigError(
            f"acgkd: the student predicts {s_classes} classes but the teacher {classes}; knowledge distillation "
            f"matches their class distributions one to one. Build the student with num_classes={classes}."
        )


class ACGKDCore:
    """Bank, generator optimizer, curriculum and the loss functions of one ACGKD run.

    Args:
        teacher: a trained weighted-edge teacher (see :mod:`hf_trust.trainers.acgkd.models`); it is frozen here.
        student: the student encoder (``reuse_teacher_head``) or a full student classifier.
        args: an :class:`ACGKDConfig` (or any object with its fields).
        rank: process index; curriculum draws (student batches and generator batches) are seeded per rank, so
            each rank refines its own copy of the bank (same initialisation) while DDP keeps the student in sync.
        bank: start from this bank (e.g. one saved from an earlier run) instead of a fresh one.
    """

    def __init__(
        self, teacher: nn.Module, student: nn.Module, args: Any, rank: int = 0, bank: Optional[PseudoGraphBank] = None
    ):
        check_teacher_student(teacher, student, args.reuse_teacher_head)
        check_weighted_teacher(teacher, need_head=args.reuse_teacher_head)
        check_weighted_teacher(student, need_head=False) if not args.reuse_teacher_head else None
        self.args, self.rank = args, rank
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        torch.manual_seed(args.seed)  # the GAT projection's init
        lifted = LiftedStudent(student, teacher) if args.reuse_teacher_head else student
        self.model = DistillModel(
            lifted, AdvTemperature(args.tau_init, args.tau_min, args.tau_max, args.adversarial_temperature)
        )
        self.num_classes = _num_classes(teacher)
        self.bank = (
            bank
            if bank is not None
            else PseudoGraphBank(
                args.num_pseudo_graphs,
                _feat_dim(teacher),
                (args.min_nodes, args.max_nodes),
                args.xi,
                args.target_mean_degree,
                candidates=args.candidate_pairs,
                feature_mode=args.feature_mode,
                seed=args.seed,
            )
        )
        self.targets = torch.arange(args.num_pseudo_graphs) % self.num_classes  # balanced ŷ = g mod C
        self.hooks = BNStatHooks(teacher) if args.alpha_bn > 0 else None
        g = torch.Generator().manual_seed(args.seed + 11)
        # The random structure of the feature-only baselines: one Bernoulli draw at init, then frozen.
        self.fixed_edges = torch.bernoulli(torch.sigmoid(self.bank.theta.detach()), generator=g)
        params = {
            "acgkd": [self.bank.z, self.bank.theta],
            "gfkd_arm": [self.bank.z, self.bank.theta],
            "deepinv_features": [self.bank.z],
            "randg": [],
        }[args.gen_mode]
        self.gen_opt = torch.optim.Adam(params, lr=args.gen_lr) if params else None
        self.sampler = CurriculumSampler(
            args.num_pseudo_graphs,
            args.max_steps,
            args.curriculum_r0,
            args.curriculum_ramp,
            args.curriculum,
            seed=args.seed + 1000 * rank,
        )
        self.gen_rng = torch.Generator().manual_seed(args.seed + 1)
        self.student_rng = torch.Generator().manual_seed(args.seed + 2 + 7919 * rank)
        self.history: dict[str, list[float]] = {"warmup_ce": [], "warmup_bn": [], "gen_loss": [], "tau": []}
        self.warmed_up = False

    # ---------------------------------------------------------------- views of the bank
    def concrete_temperature(self, step: int) -> float:
        a = self.args
        if a.concrete_temperature_final is None:
            return a.concrete_temperature
        frac = min(1.0, step / max(a.max_steps, 1))
        return a.concrete_temperature + frac * (a.concrete_temperature_final - a.concrete_temperature)

    def train_view(self, idx: torch.Tensor, step: int, rng: torch.Generator) -> GraphBatch:
        """The graphs a step trains on: a Concrete sample (ACGKD), a Bernoulli sample (GFKD) or the fixed
        random structure (feature-only baselines)."""
        mode = self.args.gen_mode
        if mode == "acgkd":
            return self.bank.sample(idx, self.concrete_temperature(step), "concrete", rng)
        return self._fixed_view(idx, step, rng)

    def student_view(self, idx: torch.Tensor, step: int, rng: torch.Generator) -> GraphBatch:
        """The graphs the student fits. ``student_edges="hard"`` thresholds the Concrete sample at ½, which is
        an exact Bernoulli(σ(θ)) draw, so the student sees binary graphs like real ones [ours]."""
        if self.args.gen_mode == "acgkd":
            mode = "straight_through" if self.args.student_edges == "hard" else "concrete"
            return self.bank.sample(idx, self.concrete_temperature(step), mode, rng)
        return self._fixed_view(idx, step, rng)

    def _fixed_view(self, idx: torch.Tensor, step: int, rng: torch.Generator) -> GraphBatch:
        mode = self.args.gen_mode
        pid = self.bank.pair_ids(idx)
        if mode == "gfkd_arm":
            w = torch.bernoulli(torch.sigmoid(self.bank.theta[pid].detach()), generator=rng)
            return self.bank.sample(idx, mode="fixed", theta=w)
        return self.bank.sample(idx, mode="fixed", theta=self.fixed_edges[pid])

    def eval_view(self, idx: Optional[torch.Tensor] = None) -> GraphBatch:
        """Deterministic graphs: hard edges ``1[θ>0]`` for learned structures, the fixed draw otherwise."""
        idx = torch.arange(self.bank.num_graphs) if idx is None else idx
        if self.args.gen_mode in ("acgkd", "gfkd_arm"):
            return self.bank.sample(idx, mode="hard")
        return self.bank.sample(idx, mode="fixed", theta=self.fixed_edges[self.bank.pair_ids(idx)])

    # ---------------------------------------------------------------- generator (B2)
    def _teacher(self, g: GraphBatch) -> torch.Tensor:
        if self.hooks is not None:
            self.hooks.pop()  # drop statistics of earlier no-grad teacher calls
        return self.teacher(g.x, g.edge_index, edge_weight=g.edge_weight, batch=g.batch)

    def gen_loss(self, g: GraphBatch, idx: torch.Tensor, per_graph: bool = False):
        a = self.args
        logits = self._teacher(g)
        ce = F.cross_entropy(logits, self.targets[idx].to(logits.device), reduction="none" if per_graph else "mean")
        bn = self.hooks.pop() if self.hooks is not None else logits.new_zeros(())
        loss = ce + a.alpha_bn * bn + a.alpha_entropy * feature_entropy(g.x)
        if a.beta_adv > 0:
            s = self.model(g.x, g.edge_index, g.edge_weight, g.batch)
            loss = loss - a.beta_adv * kd_loss(s, logits, 1.0)
        return loss, ce, bn, logits

    def generator_step(self, idx: torch.Tensor, step: int) -> Optional[float]:
        """One optimizer step on the bank; ``None`` for RandG (never trained)."""
        if self.gen_opt is None:
            return None
        self.gen_opt.zero_grad(set_to_none=True)
        if self.args.gen_mode == "gfkd_arm":
            loss = self._arm_step(idx)
        else:
            g = self.train_view(idx, step, self.gen_rng)
            loss, ce, bn, _ = self.gen_loss(g, idx)
            loss.backward()
            self._last = (float(ce.detach().mean()), float(bn.detach()))
        self.gen_opt.step()
        return float(loss.detach())

    def _arm_step(self, idx: torch.Tensor) -> torch.Tensor:
        """GFKD baseline: features by backprop on edges thresholded at p ≥ 0.5; structure by ARM,
        ``∇θ = (L(1[u>σ(−θ)]) − L(1[u<σ(θ)]))·(u−½)`` with two forward passes and no backprop into θ."""
        pid = self.bank.pair_ids(idx)
        theta = self.bank.theta[pid].detach()
        g = self.bank.sample(idx, mode="fixed", theta=(theta >= 0).to(theta.dtype))
        loss, ce, bn, _ = self.gen_loss(g, idx)
        loss.backward()
        self._last = (float(ce.detach().mean()), float(bn.detach()))
        u = torch.rand(theta.shape, generator=self.gen_rng)
        with torch.no_grad():
            l1 = self.gen_loss(
                self.bank.sample(idx, mode="fixed", theta=(u > torch.sigmoid(-theta)).float()), idx, True
            )[0]
            l2 = self.gen_loss(
                self.bank.sample(idx, mode="fixed", theta=(u < torch.sigmoid(theta)).float()), idx, True
            )[0]
            owner = torch.searchsorted(self.bank.pair_ptr, pid, right=True) - 1  # graph id of every pair
            pos = torch.empty(self.bank.num_graphs, dtype=torch.long)
            pos[idx] = torch.arange(idx.numel())
            grad = torch.zeros_like(self.bank.theta)
            grad[pid] = (l1 - l2)[pos[owner]] * (u - 0.5) / idx.numel()
        self.bank.theta.grad = grad
        return loss.detach()

    def warmup(self, progress: bool = False) -> None:
        """Phase 1: invert the teacher into the bank (all M graphs per iteration unless ``gen_warmup_batch``)."""
        from tqdm.auto import tqdm

        a = self.args
        if self.gen_opt is None:
            self.warmed_up = True
            return
        it = tqdm(range(a.gen_warmup_steps), desc="ACGKD generator warm-up", disable=not progress)
        for _i in it:
            if a.gen_warmup_batch:
                idx = torch.randperm(self.bank.num_graphs, generator=self.gen_rng)[: a.gen_warmup_batch]
            else:
                idx = torch.arange(self.bank.num_graphs)
            self.generator_step(idx, 0)
            self.history["warmup_ce"].append(self._last[0])
            self.history["warmup_bn"].append(self._last[1])
        self.warmed_up = True

    # ---------------------------------------------------------------- student (B3, B4)
    @torch.no_grad()
    def difficulty(self) -> torch.Tensor:
        g = self.eval_view()
        t = self.teacher(g.x, g.edge_index, edge_weight=g.edge_weight, batch=g.batch)
        if self.args.difficulty == "kl":
            was = self.model.training
            s = self.model.eval()(g.x, g.edge_index, g.edge_weight, g.batch)
            self.model.train(was)
            return F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), reduction="none", log_target=True).sum(-1)
        return 1 - F.softmax(t, -1).gather(1, self.targets.view(-1, 1)).squeeze(1)

    def phase2_generator(self, step: int) -> None:
        """The generator half of a phase-2 step: re-rank every K steps, then refine the sampled graphs."""
        if step % self.args.curriculum_every == 0:
            self.sampler.update(self.difficulty())
        for _ in range(self.args.gen_steps_per_student_step):
            idx = self.sampler.sample(step, self.args.pseudo_batch_size)
            loss = self.generator_step(idx, step)
            if loss is not None:
                self.history["gen_loss"].append(loss)

    def student_loss(self, model: nn.Module, step: int, device: Optional[torch.device] = None) -> torch.Tensor:
        """KD loss of the student on a fresh, detached pseudo-batch (B5's second half)."""
        idx = self.sampler.sample(step, self.args.pseudo_batch_size)
        with torch.no_grad():
            g = self.student_view(idx, step, self.student_rng).detach()
            t_logits = self.teacher(g.x, g.edge_index, edge_weight=g.edge_weight, batch=g.batch)
        if device is not None:
            g, t_logits = g.to(device), t_logits.to(device)
        strength = adversarial_strength(step, self.args.max_steps, self.args.lambda_adv_max)
        s_logits, tau = model(g.x, g.edge_index, g.edge_weight, g.batch, tau_strength=strength)
        loss = kd_loss(s_logits, t_logits, tau)
        if self.args.feature_match_weight > 0:
            loss = loss + self.args.feature_match_weight * self._feature_match(model, g)
        self.history["tau"].append(float(tau.detach()))
        return loss

    def _feature_match(self, model: nn.Module, g: GraphBatch) -> torch.Tensor:
        inner = getattr(model, "module", model).student
        if not isinstance(inner, LiftedStudent):
            raise HFTrustConfigError("feature_match_weight > 0 needs reuse_teacher_head=True (a lifted student).")
        with torch.no_grad():
            ht = self.teacher.readout(self.teacher.encode(g.x, g.edge_index, g.edge_weight, g.batch), g.batch)
        hs = inner.teacher_readout(inner.embed(g.x, g.edge_index, g.edge_weight, g.batch), g.batch)
        return F.mse_loss(hs, ht)

    # ---------------------------------------------------------------- diagnostics
    @torch.no_grad()
    def teacher_accuracy_on_bank(self) -> float:
        """Share of pseudo-graphs (deterministic view) the teacher assigns to their target class."""
        g = self.eval_view()
        pred = self.teacher(g.x, g.edge_index, edge_weight=g.edge_weight, batch=g.batch).argmax(-1)
        return float((pred == self.targets).float().mean())

    def close(self) -> None:
        if self.hooks is not None:
            self.hooks.remove()
            self.hooks = None


@torch.no_grad()
def graph_accuracy(model: nn.Module, graphs: list, batch_size: int = 256) -> float:
    """Accuracy of ``model(x, edge_index, batch=...)`` on real PyG graphs (edge weights 1)."""
    from torch_geometric.loader import DataLoader

    was = model.training
    model.eval()
    correct = total = 0
    for b in DataLoader(graphs, batch_size=batch_size):
        pred = model(b.x, b.edge_index, batch=b.batch).argmax(-1)
        correct += int((pred == b.y.view(-1)).sum())
        total += b.num_graphs
    model.train(was)
    return correct / max(total, 1)
