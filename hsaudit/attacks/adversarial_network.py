"""Adversarial network: a learned, smooth, universal mismodelling g(x) = x + delta(x).

Nachman & Shimmin, "AI Safety for High Energy Physics" (2019), arXiv:1910.08606, section on
the adversarial network: g is an MLP (4 hidden layers of 300 ReLU units) whose output is
bounded by tanh times a per-feature scale. Here the scale is the envelope: with
t = tanh(h(x)), delta = t * (upper - x) for t >= 0 and t * (x - lower) for t < 0, so g(x)
never leaves the box (integer features are rounded, straight-through in training). The
last layer starts at zero, so g starts as the identity.

g is universal: it is applied to every event in ``mask`` (default all), signal and
background alike; the objective's class only selects the events of the adversarial loss.
Losses (minimised): for the targeted events the target-class BCE (signal_as_background:
-log(1 - f(g(x))), i.e. L_sig; background_as_signal: -log f(g(x))) or, for shift_output,
-direction * f(g(x)); for background events that are not targeted the classifier term
lambda_cls (f(x) - f(g(x)))^2 (L_bg); for all background events the observables term
lambda_obs * sum_i ((g(x)_i - x_i) / std_i)^2 (observables = the input features). Training
stops when the KS statistic between attacked and nominal background exceeds ``ks_obs_max``
(0.04, any feature) or, where untargeted background exists, ``ks_nn_max`` (0.02, NN output);
the last state that passed is kept. The criterion is evaluated after every epoch, or every
``ks_check_every`` optimiser steps when that is > 0 (a finer stop). Two optional extensions
keep the linear correlations (the correlation check of the audit): ``lambda_corr`` adds
lambda_corr * ||C(g(x)) - C(x)||_F / ||C(x)||_F of each batch to the loss, and ``corr_max``
(> 0) also stops training when the relative correlation change of all attacked events
exceeds it. ``keep_hidden`` (with a ``monitor`` from the caller, e.g. the audit's own
checks per region after re-selection) keeps only states the monitor calls hidden: training
goes on through states it rejects (a histogram bin stepping out and back in must not end
the training), and the last accepted state is returned (``info["monitor_rejected"]``
counts the rejections; with no accepted state g stays the identity). The learned
g is returned as a state dict
(``extra["generator"]``) and can be saved and reapplied with ``apply_generator``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hsaudit.errors import AuditError
from hsaudit.attacks.base import (
    Attack, AttackContext, model_logits,
)
from hsaudit.attacks.checks import correlation_change, ks_statistic
from hsaudit.attacks.envelope import Envelope, project_box


class AdversarialGenerator(nn.Module):
    """g(x, lower, upper) = x + delta(x), delta bounded by the envelope box."""

    def __init__(self, n_features: int, hidden=(300, 300, 300, 300), mean=None, std=None, rho: float = 1.0):
        super().__init__()
        self.n_features = int(n_features)
        self.hidden = [int(h) for h in hidden]
        self.rho = float(rho)
        self.register_buffer("mean", torch.zeros(n_features) if mean is None else torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.ones(n_features) if std is None else torch.as_tensor(std, dtype=torch.float32))
        layers: list[nn.Module] = []
        width = self.n_features
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.out = nn.Linear(width, self.n_features)
        self.body = nn.Sequential(*layers)

    def reset_parameters(self, generator: torch.Generator) -> None:
        for m in self.body:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight, generator=generator)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        t = self.rho * torch.tanh(self.out(self.body((x - self.mean) / self.std)))
        return x + torch.where(t >= 0, t * (upper - x), t * (x - lower))

    def spec(self) -> dict:
        return {"n_features": self.n_features, "hidden": self.hidden, "rho": self.rho}


def generator_to_dict(g: AdversarialGenerator) -> dict:
    return {"spec": g.spec(), "state_dict": {k: v.detach().cpu().clone() for k, v in g.state_dict().items()}}


def generator_from_dict(d: dict) -> AdversarialGenerator:
    try:
        spec = d["spec"]
        g = AdversarialGenerator(spec["n_features"], spec["hidden"], rho=spec["rho"])
        g.load_state_dict(d["state_dict"])
    except (KeyError, RuntimeError, TypeError) as exc:
        raise AuditError(f"not a valid adversarial generator (spec + state_dict): {exc}") from None
    return g.eval()


def save_generator(d: dict | AdversarialGenerator, path) -> None:
    """Write the generator as ``<path>`` (state dict, torch.save) + ``<path>.json`` (spec)."""
    if isinstance(d, AdversarialGenerator):
        d = generator_to_dict(d)
    path = Path(path)
    torch.save(d["state_dict"], path)
    Path(str(path) + ".json").write_text(json.dumps(d["spec"], sort_keys=True))


def load_generator(path) -> AdversarialGenerator:
    """Load a saved generator (weights only: no code is unpickled)."""
    path = Path(path)
    try:
        spec = json.loads(Path(str(path) + ".json").read_text())
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise AuditError(f"cannot read adversarial generator from {path}: {exc}") from None
    return generator_from_dict({"spec": spec, "state_dict": state})


@torch.no_grad()
def apply_generator(generator, x, envelope: Envelope, mask=None, batch_size: int = 65536) -> torch.Tensor:
    """Reapply a learned g to events x inside ``envelope`` (per event: batching does not
    matter). ``mask``: events to move (default all). Returns an (N, F) float32 tensor."""
    g = generator_from_dict(generator) if isinstance(generator, dict) else generator
    x = torch.as_tensor(x, dtype=torch.float32)
    if tuple(x.shape) != tuple(envelope.nominal.shape) or x.shape[1] != g.n_features:
        raise AuditError(f"x has shape {tuple(x.shape)}; the envelope is {tuple(envelope.nominal.shape)} and "
                         f"the generator takes {g.n_features} features")
    dev = next(g.parameters()).device
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(dev)
        lo, hi = envelope.lower[i:i + batch_size].to(dev), envelope.upper[i:i + batch_size].to(dev)
        out.append(project_box(g(xb, lo, hi), lo, hi, envelope.integer.to(dev)).to(x.device))
    xa = torch.cat(out)
    if mask is not None:
        xa = torch.where(torch.as_tensor(np.asarray(mask, bool)).unsqueeze(1), xa, x)
    return xa


def _weighted_corr(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Differentiable weighted Pearson correlation matrix of a batch (constant columns: 0)."""
    w = w / w.sum().clamp_min(1e-12)
    xc = x - (w[:, None] * x).sum(0)
    cov = (w[:, None] * xc).T @ xc
    sd = torch.sqrt(torch.diagonal(cov).clamp_min(1e-24))
    return cov / (sd[:, None] * sd[None, :])


class AdversarialNetworkAttack(Attack):
    name = "adversarial_network"
    per_event = False
    universal = True
    # settings and defaults: hsaudit.config_schema.AdversarialNetworkSettings

    def is_trivial(self, s):
        return s["epochs"] == 0 or s["rho"] == 0.0

    def run(self, ctx: AttackContext, s):
        dev = ctx.device
        x, lo, hi = ctx.x, ctx.lower, ctx.upper
        n, f = x.shape
        torch_gen = torch.Generator().manual_seed(ctx.seed)
        w = ctx.weights.abs()
        mean = (w[:, None] * x).sum(0) / w.sum()
        std = torch.sqrt(((w[:, None] * (x - mean) ** 2).sum(0) / w.sum()).clamp_min(0))
        std = torch.where(std > 0, std, torch.ones_like(std))
        g = AdversarialGenerator(f, s["hidden"], mean.cpu(), std.cpu(), s["rho"])
        g.reset_parameters(torch_gen)
        g = g.to(dev)
        opt = torch.optim.Adam(g.parameters(), lr=s["learning_rate"])
        attacked = ctx.attacked  # every event g is applied to (universal)
        target = ctx.target & attacked  # events the adversarial loss is about
        background = (ctx.labels == 0) if ctx.labels is not None else torch.ones(n, dtype=torch.bool, device=dev)
        keep_nn = background & ~target  # background not targeted: its NN output must not change
        with torch.no_grad():
            z0 = torch.cat([model_logits(ctx.model, x[i:i + 65536]) for i in range(0, n, 65536)])
            f0 = torch.sigmoid(z0)
        movable = (hi - lo > 0).any(0).cpu().numpy()
        bg_np = background.cpu().numpy()
        keep_np = keep_nn.cpu().numpy()
        w_np = w.cpu().numpy().astype(np.float64)
        x_np = x.cpu().numpy()

        def apply_all():
            with torch.no_grad():
                xa = torch.cat([project_box(g(x[i:i + 65536], lo[i:i + 65536], hi[i:i + 65536]),
                                            lo[i:i + 65536], hi[i:i + 65536], ctx.integer)
                                for i in range(0, n, 65536)])
                return torch.where(attacked.unsqueeze(1), xa, x)

        def ks_now(xa):
            xa_np = xa.cpu().numpy()
            ks_obs = 0.0
            if bg_np.any():
                for j in np.nonzero(movable)[0]:
                    ks_obs = max(ks_obs, ks_statistic(xa_np[bg_np, j], x_np[bg_np, j], w_np[bg_np], w_np[bg_np]))
            ks_nn = 0.0
            if keep_np.any():
                with torch.no_grad():
                    fa = torch.sigmoid(torch.cat([model_logits(ctx.model, xa[i:i + 65536]) for i in range(0, n, 65536)]))
                ks_nn = ks_statistic(fa.cpu().numpy()[keep_np], f0.cpu().numpy()[keep_np], w_np[keep_np], w_np[keep_np])
            return ks_obs, ks_nn

        if s["keep_hidden"] and ctx.monitor is None:
            raise AuditError("keep_hidden needs a monitor (the audit passes its checks as one)")
        use_monitor = s["keep_hidden"]
        best_state = {k: v.detach().clone() for k, v in g.state_dict().items()}
        history = []
        stopped_by = "epochs"
        kept = {"epochs": 0.0}
        bs = s["train_batch_size"]
        every = s["ks_check_every"]
        n_batches = (n + bs - 1) // bs

        def check(epoch_float) -> bool:
            """KS stopping criterion; True = stop (g reverted to the last passing state)."""
            nonlocal best_state, stopped_by
            g.eval()
            ks_obs, ks_nn = ks_now(apply_all())
            g.train()
            entry = {"epoch": round(epoch_float, 4), "ks_obs": ks_obs, "ks_nn": ks_nn}
            corr, accepted = None, True
            if s["corr_max"] > 0 or use_monitor:
                xa_np = apply_all().cpu().numpy()
            if s["corr_max"] > 0:
                corr = correlation_change(x_np, xa_np, w_np)
                entry["correlation"] = corr
            if use_monitor:
                accepted = bool(ctx.monitor(xa_np))
                entry["monitor_accepted"] = accepted
            history.append(entry)
            if ks_obs > s["ks_obs_max"] or ks_nn > s["ks_nn_max"] or (corr is not None and corr > s["corr_max"]):
                stopped_by = ("ks_obs" if ks_obs > s["ks_obs_max"] else "ks_nn" if ks_nn > s["ks_nn_max"]
                              else "correlation")
                g.load_state_dict(best_state)
                return True
            if not accepted:
                return False  # not kept, but training goes on
            best_state = {k: v.detach().clone() for k, v in g.state_dict().items()}
            kept["epochs"] = epoch_float
            return False

        stop = False
        for epoch in range(s["epochs"]):
            perm = torch.randperm(n, generator=torch_gen).to(dev)
            g.train()
            for ib, i in enumerate(range(0, n, bs)):
                b = perm[i:i + bs]
                xb, lob, hib = x[b], lo[b], hi[b]
                xg = g(xb, lob, hib)
                xg = xg + (project_box(xg, lob, hib, ctx.integer) - xg).detach()
                zg = model_logits(ctx.model, xg)
                wb = w[b]
                ab, kb, bgb = target[b].float() * wb, keep_nn[b].float() * wb, background[b].float() * wb
                if ctx.objective == "signal_as_background":
                    adv = nn.functional.softplus(zg)  # -log(1 - f)
                elif ctx.objective == "background_as_signal":
                    adv = nn.functional.softplus(-zg)  # -log f
                else:
                    adv = -ctx.sign[b] * torch.sigmoid(zg)
                loss = (ab * adv).sum() / ab.sum().clamp_min(1e-12)
                if s["lambda_cls"] > 0:
                    loss = loss + s["lambda_cls"] * (kb * (torch.sigmoid(zg) - f0[b]) ** 2).sum() / kb.sum().clamp_min(1e-12)
                if s["lambda_obs"] > 0:
                    obs = (((xg - xb) / g.std) ** 2).sum(1)
                    loss = loss + s["lambda_obs"] * (bgb * obs).sum() / bgb.sum().clamp_min(1e-12)
                if s["lambda_corr"] > 0:
                    # keep the linear correlations of the batch (the correlation check)
                    c0, c1 = _weighted_corr(xb, wb), _weighted_corr(xg, wb)
                    loss = loss + s["lambda_corr"] * torch.linalg.norm(c1 - c0) / torch.linalg.norm(c0).clamp_min(1e-12)
                opt.zero_grad()
                loss.backward()
                opt.step()
                last = ib == n_batches - 1
                if (every and (ib + 1) % every == 0) or last:
                    if check(epoch + (ib + 1) / n_batches):
                        stop = True
                        break
            if stop:
                break
        g.load_state_dict(best_state)  # the last state that passed every criterion
        epochs_kept = kept["epochs"]
        g.eval()
        xa = apply_all()
        info = {"epochs_kept": epochs_kept, "stopped_by": stopped_by, "history": history,
                "nn_ks_monitored": bool(keep_np.any()),
                "monitor_rejected": sum(1 for h in history if h.get("monitor_accepted") is False)}
        return xa, info, {"generator": generator_to_dict(g.cpu())}
