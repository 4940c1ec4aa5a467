"""Batched maximum-likelihood fits of many toys at once (torch, float64, CUDA when present).

The negative log-likelihood is pyhf's, term by term (including its constants)::

    NLL(theta) = sum_b [lam_b - n_b log lam_b + lgamma(n_b + 1)]
               + sum_c [0.5 ((aux_c - theta_c) / sigma_c)^2 + log(sigma_c sqrt(2 pi))]

with lam_b the expected yield (see :mod:`hsaudit.stats.model`) and c running over the
constrained parameters (lumi, alphas, gammas). Every toy has its own main data ``n``
(N, B) and auxiliary data ``aux`` (N, A); ``aux`` is ordered like the constrained part
of the parameter vector, ``theta[:, model.n_normfactors:]``.

Minimiser: per-toy projected Newton with Levenberg-Marquardt damping (a trust-region
scheme) using the exact analytic gradient and Hessian; bounds are enforced by clipping
plus an active set (a parameter at a bound with the gradient pointing outwards is held).
A toy is converged when the estimated distance to the minimum
``edm = g^T H^-1 g / 2 < tol`` (free parameters), the Hessian is positive definite and
the NLL finite. For large yields the NLL itself is only known to about
``eps * sum_b n_b (|log n_b| + 1)`` (float64 round-off of terms of size n log n), so the
tolerance of a toy is raised to that noise floor: a tighter edm cannot be reached there. Toys that do not converge are flagged (``status``), never raise.
Uncertainties: ``sqrt(diag(H^-1))`` over the free parameters at the minimum (as
MINUIT's HESSE; fixed parameters get 0).

Status codes: 0 ok, 1 max iterations reached, 2 non-finite likelihood, 3 Hessian not
positive definite at the minimum, 4 invalid toy data (NaN, inf or negative counts).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from hsaudit.errors import AuditError

STATUS_OK, STATUS_MAXITER, STATUS_NONFINITE, STATUS_NOT_PD, STATUS_BAD_DATA = 0, 1, 2, 3, 4
STATUS_TEXT = {
    STATUS_OK: "converged",
    STATUS_MAXITER: "maximum number of iterations reached",
    STATUS_NONFINITE: "non-finite likelihood",
    STATUS_NOT_PD: "Hessian not positive definite at the minimum",
    STATUS_BAD_DATA: "invalid toy data (NaN, inf or negative counts)",
}
_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)
# relative round-off of the NLL sum (a few float64 epsilons per term), see the docstring
_NLL_NOISE = 16 * np.finfo(np.float64).eps


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class CompiledModel:
    """The model's arrays as torch tensors on one device, with batched NLL/grad/Hessian."""

    def __init__(self, model, device):
        self.device = torch.device(device)
        t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64), device=self.device)  # noqa: E731
        self.F = model.n_normfactors
        self.has_lumi = model.lumi_name is not None
        self.K = len(model.alpha_names)
        self.R = int(self.has_lumi) + self.K
        self.Ng = model.n_gammas
        self.P = model.n_pars
        self.S, self.B = model.nominal.shape
        self.nom = t(model.nominal)
        self.nf_mask = t(model.normfactor_masks)
        self.lumi_mask = t(model.lumi_mask) if self.has_lumi else None
        ns = np.flatnonzero(model.has_normsys)
        hs = np.flatnonzero(model.has_histosys)
        self.ns_idx = torch.as_tensor(ns, device=self.device)
        self.hs_idx = torch.as_tensor(hs, device=self.device)
        self.ns_pos = ns.tolist()
        self.hs_pos = hs.tolist()
        c = model.normsys_coef[:, ns]
        self.c = [t(c[i]) for i in range(6)]
        self.log_hi = t(np.log(model.normsys_hi[ns]))
        self.log_lo = t(np.log(model.normsys_lo[ns]))
        up, dn = model.histosys_up[hs], model.histosys_dn[hs]
        self.h_up, self.h_dn = t(up), t(dn)
        self.h_S, self.h_A = t(0.5 * (up + dn)), t(0.0625 * (up - dn))
        self.stat_mask = t(model.stat_mask)
        self.gamma_bins = torch.as_tensor(model.gamma_bins, device=self.device)
        self.aux_sigma = t(model.aux_sigma)
        self.inv_var = 1.0 / self.aux_sigma**2
        self.lo = t(model.bounds[:, 0])
        self.hi = t(model.bounds[:, 1])
        self.fixed = torch.as_tensor(model.fixed, device=self.device)
        self.init = t(model.init)
        self.aux_nominal = t(model.aux_nominal)
        self.log_norm_const = float(np.sum(np.log(model.aux_sigma)) + len(model.aux_sigma) * _LOG_SQRT_2PI)

    # ------------------------------------------------------------------ pieces
    def _parts(self, theta: torch.Tensor, order: int):
        N = theta.shape[0]
        F, R, K = self.F, self.R, self.K
        S, B = self.S, self.B
        dev, dt = theta.device, theta.dtype
        mu = theta[:, :F]
        fac = 1.0 + self.nf_mask[None] * (mu[:, :, None, None] - 1.0)  # (N,F,S,B)
        Fn = fac.prod(dim=1)
        G = torch.ones((N, S, B), dtype=dt, device=dev)
        A = self.nom.expand(N, S, B).clone()
        off = F
        if order:
            a = torch.zeros((N, R, S, B), dtype=dt, device=dev)
            a2 = torch.zeros_like(a)
            l1 = torch.zeros_like(a)
            l2 = torch.zeros_like(a)
        if self.has_lumi:
            lum = theta[:, off][:, None, None]
            G = G * (1.0 + self.lumi_mask * (lum - 1.0))
            if order:
                l1[:, 0] = self.lumi_mask / lum
                l2[:, 0] = -self.lumi_mask / lum**2
            off += 1
        alpha = theta[:, off : off + K]
        rk0 = int(self.has_lumi)
        if len(self.ns_pos):
            al = alpha[:, self.ns_idx][:, :, None, None]
            c1, c2, c3, c4, c5, c6 = self.c
            up = al >= 1.0
            dn = al <= -1.0
            p = 1.0 + al * (c1 + al * (c2 + al * (c3 + al * (c4 + al * (c5 + al * c6)))))
            ex = torch.where(up, al * self.log_hi, -al * self.log_lo)
            f = torch.where(up | dn, torch.exp(ex), p)
            G = G * f.prod(dim=1)
            if order:
                dp = c1 + al * (2 * c2 + al * (3 * c3 + al * (4 * c4 + al * (5 * c5 + al * 6 * c6))))
                d2p = 2 * c2 + al * (6 * c3 + al * (12 * c4 + al * (20 * c5 + al * 30 * c6)))
                r1 = dp / p
                lk = torch.where(up, self.log_hi, torch.where(dn, -self.log_lo, r1))
                l2k = torch.where(up | dn, torch.zeros_like(p), d2p / p - r1 * r1)
                l1[:, [rk0 + k for k in self.ns_pos]] = lk
                l2[:, [rk0 + k for k in self.ns_pos]] = l2k
        if len(self.hs_pos):
            al = alpha[:, self.hs_idx][:, :, None, None]
            big = al > 1.0
            small = al < -1.0
            asq = al * al
            inner = al * self.h_S + asq * (15.0 + asq * (-10.0 + 3.0 * asq)) * self.h_A
            delta = torch.where(big, al * self.h_up, torch.where(small, al * self.h_dn, inner))
            A = A + delta.sum(dim=1)
            if order:
                d1 = self.h_S + self.h_A * al * (30.0 + asq * (-40.0 + 18.0 * asq))
                d1 = torch.where(big, self.h_up.expand_as(d1), torch.where(small, self.h_dn.expand_as(d1), d1))
                dd2 = self.h_A * (30.0 + asq * (-120.0 + 90.0 * asq))
                dd2 = torch.where(big | small, torch.zeros_like(dd2), dd2)
                a[:, [rk0 + k for k in self.hs_pos]] = d1
                a2[:, [rk0 + k for k in self.hs_pos]] = dd2
        gam = torch.ones((N, B), dtype=dt, device=dev)
        if self.Ng:
            gam[:, self.gamma_bins] = theta[:, F + R :]
            G = G * (1.0 + self.stat_mask * (gam[:, None, :] - 1.0))
        C = G * Fn
        nu = A * C
        out = {"nu": nu, "A": A, "G": G, "C": C, "fac": fac, "gam": gam}
        if order:
            out.update(a=a, a2=a2, l1=l1, l2=l2)
        return out

    def yields(self, theta: torch.Tensor):
        p = self._parts(theta, 0)
        return p["nu"], p["nu"].sum(dim=1)

    def constant(self, n: torch.Tensor) -> torch.Tensor:
        """pyhf NLL minus the internal (deviance-like) objective; depends on data only."""
        return (n - torch.xlogy(n, n) + torch.lgamma(n + 1.0)).sum(-1) + self.log_norm_const

    def evaluate(self, theta, n, aux, order: int = 2):
        """Internal objective f (N,) [+ gradient (N,P), Hessian (N,P,P)].

        f = sum_b [lam - n - n log(lam/n)] + 0.5 sum_c ((theta_c - aux_c)/sigma_c)^2,
        i.e. the pyhf NLL minus ``constant(n)``: numerically small near the minimum."""
        F, R, Ng, P = self.F, self.R, self.Ng, self.P
        p = self._parts(theta, order)
        nu = p["nu"]
        lam = nu.sum(dim=1)
        npos = n > 0
        ratio = torch.where(npos, lam / torch.where(npos, n, torch.ones_like(n)), torch.ones_like(lam))
        main = lam - n - torch.where(npos, n * torch.log(ratio), torch.zeros_like(n))
        z = theta[:, F:] - aux
        f = main.sum(-1) + 0.5 * (z * z * self.inv_var).sum(-1)
        bad = ~(lam > 0).all(dim=-1)
        f = torch.where(bad, torch.full_like(f, float("inf")), f)
        if not order:
            return f
        N = theta.shape[0]
        A, G, C, fac, gam = p["A"], p["G"], p["C"], p["fac"], p["gam"]
        a, a2, l1, l2 = p["a"], p["a2"], p["l1"], p["l2"]
        safe_lam = torch.where(lam > 0, lam, torch.ones_like(lam))
        w = 1.0 - n / safe_lam  # dNLL/dlam
        W = n / safe_lam**2  # d2NLL/dlam2
        # normfactor derivatives: E_f = dnu/dmu_f = mask_f * A G prod_{f' != f} fac_f'
        if F == 1:
            excl = torch.ones_like(fac)
        else:
            excl = torch.stack(
                [torch.prod(torch.cat([fac[:, :f], fac[:, f + 1 :]], dim=1), dim=1) for f in range(F)], dim=1
            )
        AG = A * G
        E = self.nf_mask[None] * AG[:, None] * excl  # (N,F,S,B)
        D = a + A[:, None] * l1  # (N,R,S,B): dnu/dtheta_r = C D_r
        JF = E.sum(dim=2)  # (N,F,B)
        JR = (C[:, None] * D).sum(dim=2)  # (N,R,B)
        JQ = torch.cat([JF, JR], dim=1)  # (N,Q,B)
        Q = F + R
        grad = torch.empty((N, P), dtype=theta.dtype, device=theta.device)
        grad[:, :Q] = (JQ * w[:, None]).sum(-1)
        HQQ = torch.einsum("nqb,nrb->nqr", JQ * W[:, None], JQ)
        wC = w[:, None] * C  # (N,S,B)
        if R:
            T1 = torch.einsum("nrsb,nqsb->nrq", wC[:, None] * a, l1)
            T2 = torch.einsum("nrsb,nqsb->nrq", (wC * A)[:, None] * l1, l1)
            diag = (wC[:, None] * (a2 + A[:, None] * l2)).sum(dim=(2, 3))
            KRR = T1 + T1.transpose(1, 2) + T2 + torch.diag_embed(diag + self.inv_var[:R])
            # normfactor x (lumi, alpha): sum w mask_f G excl_f D_r
            KFR = torch.einsum("nfsb,nrsb->nfr", w[:, None, None] * self.nf_mask[None] * G[:, None] * excl, D)
            K = torch.cat([torch.cat([torch.zeros_like(HQQ[:, :F, :F]), KFR], dim=2),
                           torch.cat([KFR.transpose(1, 2), KRR], dim=2)], dim=1)
            HQQ = HQQ + K
        if F > 1:
            KFF = torch.zeros_like(HQQ[:, :F, :F])
            for f1 in range(F):
                for f2 in range(F):
                    if f1 != f2:
                        others = [k for k in range(F) if k not in (f1, f2)]
                        ex2 = fac[:, others].prod(dim=1) if others else torch.ones_like(A)
                        KFF[:, f1, f2] = (w[:, None] * AG * ex2 * self.nf_mask[f1] * self.nf_mask[f2]).sum(dim=(1, 2))
            HQQ = HQQ + torch.nn.functional.pad(KFF, (0, R, 0, R))
        if Ng:
            gb = self.gamma_bins
            gam_g = gam[:, gb]
            jg = (self.stat_mask * nu).sum(dim=1)[:, gb] / gam_g  # dlam_b/dgamma_b
            grad[:, Q:] = w[:, gb] * jg
            # second derivatives of nu wrt (q, gamma_b): stat_mask * dnu/dq / gamma_b
            dQ = torch.cat([E, C[:, None] * D], dim=1)  # (N,Q,S,B) = dnu/dq
            HQG = JQ[:, :, gb] * (W[:, gb] * jg)[:, None] + (self.stat_mask * dQ).sum(dim=2)[:, :, gb] * (
                w[:, gb] / gam_g
            )[:, None]
            dG = W[:, gb] * jg * jg + self.inv_var[R:]
        else:
            HQG = torch.zeros((N, Q, 0), dtype=theta.dtype, device=theta.device)
            dG = torch.zeros((N, 0), dtype=theta.dtype, device=theta.device)
        grad[:, F:] += z * self.inv_var
        return f, grad, (HQQ, HQG, dG)


class _threads:
    """Temporarily set torch's CPU thread count (None: leave it)."""

    def __init__(self, n: int | None):
        self.n = n

    def __enter__(self):
        self.old = torch.get_num_threads()
        if self.n:
            torch.set_num_threads(int(self.n))

    def __exit__(self, *exc):
        if self.n:
            torch.set_num_threads(self.old)


_CACHE: dict = {}


def compiled(model, device=None) -> CompiledModel:
    """The (cached) compiled form of ``model`` on ``device``."""
    device = str(torch.device(device or default_device()))
    key = (id(model), device)
    hit = _CACHE.get(key)
    if hit is None or hit[0] is not model:
        if len(_CACHE) > 16:
            _CACHE.clear()
        hit = (model, CompiledModel(model, device))
        _CACHE[key] = hit
    return hit[1]


@dataclass
class FitResult:
    """Per-toy fit results (numpy arrays, first axis = toy)."""

    params: np.ndarray  # (N, P) best-fit parameters
    uncertainties: np.ndarray  # (N, P) sqrt(diag(H^-1)); 0 for fixed, NaN where H not PD
    nll: np.ndarray  # (N,) pyhf-identical NLL at the best fit
    converged: np.ndarray  # (N,) bool
    status: np.ndarray  # (N,) int, see STATUS_TEXT
    n_iter: np.ndarray  # (N,) iterations used
    par_names: list = field(default_factory=list)
    poi_index: int = 0
    covariance: np.ndarray | None = None  # (N, P, P) when requested

    @property
    def mu_hat(self) -> np.ndarray:
        return self.params[:, self.poi_index]

    @property
    def sigma_mu(self) -> np.ndarray:
        return self.uncertainties[:, self.poi_index]

    @property
    def n_failed(self) -> int:
        return int((~self.converged).sum())

    def failures(self) -> dict:
        """{status text: count} for the toys that failed."""
        out = {}
        for code in np.unique(self.status[~self.converged]):
            out[STATUS_TEXT[int(code)]] = int((self.status == code).sum())
        return out

    def __len__(self) -> int:
        return len(self.nll)


def _as_batch(model, data, what: str) -> np.ndarray:
    arr = model.concat_channels(data, what)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2:
        raise AuditError(f"{what}: expected shape (n_toys, {model.n_bins}), got {arr.shape}")
    return arr


def _prepare(model, data, aux, fixed, init):
    n = _as_batch(model, data, "data")
    N = n.shape[0]
    if aux is None:
        aux = np.broadcast_to(model.aux_nominal, (N, model.n_aux))
    aux = np.asarray(aux, dtype=np.float64)
    if aux.ndim == 1:
        aux = np.broadcast_to(aux, (N, len(aux)))
    if aux.shape != (N, model.n_aux):
        raise AuditError(f"aux data: expected shape ({N}, {model.n_aux}), got {aux.shape}")
    theta0 = np.broadcast_to(model.init if init is None else np.asarray(init, dtype=np.float64), (N, model.n_pars)).copy()
    free = np.broadcast_to(~model.fixed, (N, model.n_pars)).copy()
    for name, value in (fixed or {}).items():
        sl = model.par_slice(name)
        theta0[:, sl] = np.asarray(value, dtype=np.float64).reshape(-1, 1) if np.ndim(value) else value
        free[:, sl] = False
    theta0 = np.clip(theta0, model.bounds[:, 0], model.bounds[:, 1])
    return n, aux, theta0, free


def dense_hessian(hess, Q: int) -> torch.Tensor:
    """(N, P, P) Hessian from the structured form (HQQ, HQG, dG) returned by evaluate."""
    HQQ, HQG, dG = hess
    top = torch.cat([HQQ, HQG], dim=2)
    bottom = torch.cat([HQG.transpose(1, 2), torch.diag_embed(dG)], dim=2)
    return torch.cat([top, bottom], dim=1)


def _matvec(hess, x, Q: int) -> torch.Tensor:
    HQQ, HQG, dG = hess
    xQ, xG = x[:, :Q], x[:, Q:]
    yQ = torch.einsum("nqr,nr->nq", HQQ, xQ) + torch.einsum("nqg,ng->nq", HQG, xG)
    yG = torch.einsum("nqg,nq->ng", HQG, xQ) + dG * xG
    return torch.cat([yQ, yG], dim=1)


_SINGULAR_PIVOT = 1e-11


def _solve(hess, rhs, act, Q: int, damp=None):
    """Solve H_act x_act = rhs_act (x = 0 elsewhere) by eliminating the diagonal gamma
    block (Schur complement). Returns (x, positive_definite, (S_chol, Cd, d))."""
    HQQ, HQG, dG = hess
    actQ, actG = act[:, :Q], act[:, Q:]
    HQQ = torch.where(actQ[:, :, None] & actQ[:, None, :], HQQ, torch.zeros_like(HQQ))
    if damp is not None:
        HQQ = HQQ + torch.diag_embed(damp[:, None] * torch.diagonal(HQQ, dim1=1, dim2=2).abs().clamp(min=1e-12))
        dG = dG + damp[:, None] * dG.abs().clamp(min=1e-12)
    HQQ = HQQ + torch.diag_embed((~actQ).to(HQQ.dtype))
    d = torch.where(actG, dG, torch.ones_like(dG))
    C = torch.where(actQ[:, :, None] & actG[:, None, :], HQG, torch.zeros_like(HQG))
    Cd = C / d[:, None, :]
    S = HQQ - torch.einsum("nqg,nrg->nqr", Cd, C)
    L, info = torch.linalg.cholesky_ex(S)
    # a numerically singular S (e.g. two parameters with identical effects) can pass the
    # factorisation by round-off: its smallest pivot relative to the diagonal is then at the
    # level of float64 precision, and the solution and uncertainties are meaningless
    pivots = torch.diagonal(L, dim1=1, dim2=2) ** 2 / torch.diagonal(S, dim1=1, dim2=2).abs().clamp(min=1e-300)
    pd = (info == 0) & (d > 0).all(-1) & (torch.nan_to_num(pivots, nan=0.0).amin(-1) > _SINGULAR_PIVOT)
    rQ = torch.where(actQ, rhs[:, :Q], torch.zeros_like(rhs[:, :Q]))
    rG = torch.where(actG, rhs[:, Q:], torch.zeros_like(rhs[:, Q:]))
    xQ = torch.cholesky_solve((rQ - torch.einsum("nqg,ng->nq", Cd, rG))[:, :, None], L)[:, :, 0]
    xG = (rG - torch.einsum("nqg,nq->ng", C, xQ)) / d
    x = torch.cat([xQ, xG], dim=1)
    x = torch.where(pd[:, None] & torch.isfinite(x) & act, x, torch.zeros_like(x))
    return x, pd, (L, Cd, d)


def _bounded_step(hess, g, th, free, lo, hi, Q: int, damp, max_passes: int = 8):
    """Minimiser of the (damped) quadratic model over the free parameters, with the
    parameters whose step would cross a bound clamped at that bound (active set):
    solve, clamp the violators, re-solve the rest given the clamped shifts, repeat."""
    delta = torch.zeros_like(th)
    clamped = torch.zeros_like(free)
    ok = torch.ones(th.shape[0], dtype=torch.bool, device=th.device)
    for it in range(max_passes):
        act = free & ~clamped
        rhs = -(g + _matvec(hess, delta, Q)) if it else -g
        st, ok, _ = _solve(hess, rhs, act, Q, damp)
        cand = th + st
        vlo = act & (cand < lo)
        vhi = act & (cand > hi)
        step = torch.where(act, st, delta)
        if it == max_passes - 1 or not bool((vlo | vhi).any()):
            delta = step
            break
        delta = torch.where(vlo, lo - th, torch.where(vhi, hi - th, delta))
        clamped = clamped | vlo | vhi
    new = torch.where(free, torch.minimum(torch.maximum(th + delta, lo), hi), th)
    return new - th, ok


def _take(hess, idx):
    return tuple(h[idx] for h in hess)


def _put(hess, idx, new, mask):
    for h, hn in zip(hess, new):
        m = mask.view((-1,) + (1,) * (hn.dim() - 1))
        h[idx] = torch.where(m, hn, h[idx])


def _minimise(cm: CompiledModel, theta, n, aux, free, max_iter: int, tol: float, want_cov: bool):
    N, P = theta.shape
    Q = cm.F + cm.R
    dev = theta.device
    lo, hi = cm.lo, cm.hi
    f, g, hess = cm.evaluate(theta, n, aux)
    lam = torch.zeros(N, dtype=theta.dtype, device=dev)
    status = torch.full((N,), STATUS_MAXITER, dtype=torch.int64, device=dev)
    n_iter = torch.zeros(N, dtype=torch.int64, device=dev)
    bad = ~torch.isfinite(n).all(-1) | (n < 0).any(-1) | ~torch.isfinite(aux).all(-1)
    status[bad] = STATUS_BAD_DATA
    nonfinite = ~torch.isfinite(f) & ~bad
    status[nonfinite] = STATUS_NONFINITE
    active = torch.nonzero(~bad & ~nonfinite).squeeze(-1)
    n_ok = torch.where(torch.isfinite(n) & (n > 0), n, torch.zeros_like(n))
    tol_toy = torch.clamp(_NLL_NOISE * (n_ok * (torch.log(n_ok.clamp(min=1.0)) + 1.0)).sum(-1), min=tol)
    for _ in range(max_iter):
        if active.numel() == 0:
            break
        th, fa, ga, Ha, la, fr = theta[active], f[active], g[active], _take(hess, active), lam[active], free[active]
        na, xa = n[active], aux[active]
        fi = fr & ~((th <= lo) & (ga > 0)) & ~((th >= hi) & (ga < 0))
        gr = torch.where(fi, ga, torch.zeros_like(ga))
        step0, pd, _ = _solve(Ha, -gr, fi, Q)
        edm = -0.5 * (gr * step0).sum(-1)
        conv = pd & (edm < tol_toy[active]) & torch.isfinite(edm)
        la = torch.where(~pd & (la == 0), torch.full_like(la, 1e-3), la)
        s, pdd = _bounded_step(Ha, ga, th, fi, lo, hi, Q, la)
        new = th + s
        pred = -((ga * s).sum(-1) + 0.5 * (s * _matvec(Ha, s, Q)).sum(-1))
        fn, gn, Hn = cm.evaluate(new, na, xa)
        actual = fa - fn
        rho = torch.where(pred > 0, actual / torch.where(pred > 0, pred, torch.ones_like(pred)), torch.ones_like(pred))
        tiny = actual.abs() <= 1e-13 * (1.0 + fa.abs())
        accept = pdd & torch.isfinite(fn) & ((actual > 0) & (rho > 1e-4) | tiny)
        la_new = torch.where(
            accept,
            torch.where(rho > 0.75, la / 5.0, torch.where(rho < 0.25, torch.clamp(la * 3.0, min=1e-4), la)),
            torch.clamp(la * 10.0, min=1e-3),
        )
        la_new = torch.where(la_new < 1e-8, torch.zeros_like(la_new), la_new)
        theta[active] = torch.where(accept[:, None], new, th)
        f[active] = torch.where(accept, fn, fa)
        g[active] = torch.where(accept[:, None], gn, ga)
        _put(hess, active, Hn, accept)
        lam[active] = la_new
        n_iter[active] += 1
        status[active[conv]] = STATUS_OK
        blown = ~torch.isfinite(la_new) | (la_new > 1e12)
        status[active[blown & ~conv]] = STATUS_NONFINITE
        active = active[~conv & ~blown]
    # uncertainties over the free (not user-fixed) parameters at the minimum:
    # [H^-1]_QQ = S^-1, [H^-1]_QG = -S^-1 Cd, [H^-1]_GG = diag(1/d) + Cd^T S^-1 Cd
    _, pd, (L, Cd, d) = _solve(hess, torch.zeros_like(theta), free, Q)
    eyeQ = torch.eye(Q, dtype=L.dtype, device=L.device).expand_as(L)
    L = torch.where(pd[:, None, None] & torch.isfinite(L).all(-1).all(-1)[:, None, None], L, eyeQ)
    d = torch.where(pd[:, None], d, torch.ones_like(d))
    Sinv = torch.cholesky_inverse(L)
    varQ = torch.diagonal(Sinv, dim1=1, dim2=2)
    SCd = torch.einsum("nqr,nrg->nqg", Sinv, Cd)
    varG = 1.0 / d + (Cd * SCd).sum(1)
    unc = torch.sqrt(torch.cat([varQ, varG], dim=1).clamp(min=0))
    unc = torch.where(free, unc, torch.zeros_like(unc))
    unc = torch.where(pd[:, None], unc, torch.full_like(unc, float("nan")))
    cov = None
    if want_cov:
        cov = torch.cat([
            torch.cat([Sinv, -SCd], dim=2),
            torch.cat([-SCd.transpose(1, 2), torch.diag_embed(1.0 / d) + torch.einsum("nqg,nqh->ngh", Cd, SCd)], dim=2),
        ], dim=1)
        frm = free[:, :, None] & free[:, None, :]
        cov = torch.where(frm, cov, torch.zeros_like(cov))
        cov = torch.where(pd[:, None, None], cov, torch.full_like(cov, float("nan")))
    status = torch.where((status == STATUS_OK) & ~pd, torch.full_like(status, STATUS_NOT_PD), status)
    status = torch.where((status == STATUS_OK) & ~torch.isfinite(f), torch.full_like(status, STATUS_NONFINITE), status)
    return theta, unc, cov, f, status, n_iter


def fit_toys(
    model,
    data,
    aux=None,
    *,
    fixed: dict | None = None,
    init=None,
    device=None,
    max_iter: int = 100,
    tol: float = 1e-10,
    chunk_size: int | None = None,
    return_covariance: bool = False,
    threads: int | None = 1,
) -> FitResult:
    """Maximum-likelihood fit of every toy in a batch.

    data: (N, B) main data (or (B,), or {channel: (N, nbins)}); aux: (N, A) auxiliary
    data ordered like ``model.aux_nominal`` (None: nominal for every toy).
    fixed: {parameter name: value (scalar or (N,))} held constant, e.g. ``{"mu": 0.0}``.
    init: initial parameter vector (P,) or (N, P); default ``model.init``.
    Toys are processed in chunks of ``chunk_size`` (default: sized from the model) to
    bound memory; results do not depend on the chunking beyond float round-off.
    threads: torch CPU threads during the fit (default 1: the per-operation work is
    small, and OpenMP threads slow down badly on a loaded machine; run toy chunks as
    separate jobs for parallelism). None leaves torch's setting alone.
    """
    n_np, aux_np, theta0, free_np = _prepare(model, data, aux, fixed, init)
    dev = torch.device(device or default_device())
    cm = compiled(model, dev)
    N = n_np.shape[0]
    if chunk_size is None:
        per_toy = (max(1, cm.R) + cm.F) * cm.S * cm.B + (cm.F + cm.R) * cm.P
        chunk_size = int(max(256, min(65536, 2**22 // per_toy)))
    outs = []
    with _threads(threads if dev.type == "cpu" else None):
        for start in range(0, N, chunk_size):
            sl = slice(start, min(N, start + chunk_size))
            t = lambda a: torch.as_tensor(np.array(a[sl]), device=dev)  # noqa: E731
            n = t(n_np).to(torch.float64)
            with torch.no_grad():
                theta, unc, cov, f, status, n_iter = _minimise(
                    cm, t(theta0).to(torch.float64), n, t(aux_np).to(torch.float64), t(free_np), max_iter, tol,
                    return_covariance,
                )
                const = cm.constant(torch.where(torch.isfinite(n), n, torch.zeros_like(n)))
            outs.append((theta, unc, cov if return_covariance else None, f + const, status, n_iter))
    cat = lambda i: torch.cat([o[i] for o in outs]).cpu().numpy()  # noqa: E731
    status = cat(4)
    return FitResult(
        params=cat(0),
        uncertainties=cat(1),
        nll=cat(3),
        converged=status == STATUS_OK,
        status=status,
        n_iter=cat(5),
        par_names=list(model.par_names),
        poi_index=model.poi_index,
        covariance=cat(2) if return_covariance else None,
    )


def _point_batch(model, pars, data, aux, device):
    """(compiled model, pars, n, aux) as broadcast (N, ...) tensors for evaluating the NLL at
    given parameter points."""
    pars = np.atleast_2d(np.asarray(pars, dtype=np.float64))
    n_np, aux_np, _, _ = _prepare(model, data, aux, None, None)
    N = max(len(pars), len(n_np))
    cm = compiled(model, device)
    t = lambda a: torch.as_tensor(np.array(np.broadcast_to(a, (N,) + a.shape[1:])), device=cm.device)  # noqa: E731
    return cm, t(pars), t(n_np), t(aux_np)


def nll(model, pars, data, aux=None, device="cpu") -> np.ndarray:
    """pyhf-identical NLL at parameter vector(s) ``pars`` (N, P) for data (N, B), aux (N, A)."""
    cm, th, n, ax = _point_batch(model, pars, data, aux, device)
    with torch.no_grad():
        out = cm.evaluate(th, n, ax, order=0) + cm.constant(n)
    return out.cpu().numpy()


def nll_grad_hess(model, pars, data, aux=None, device="cpu"):
    """(nll (N,), gradient (N, P), Hessian (N, P, P)) of the pyhf-identical NLL."""
    cm, th, n, ax = _point_batch(model, pars, data, aux, device)
    with torch.no_grad():
        f, g, hess = cm.evaluate(th, n, ax, order=2)
        H = dense_hessian(hess, cm.F + cm.R)
        f = f + cm.constant(n)
    return f.cpu().numpy(), g.cpu().numpy(), H.cpu().numpy()
