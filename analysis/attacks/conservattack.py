"""CONSERVAttack: a greedy attack that keeps marginals and linear correlations in place.

Bechtle, Flek, Jung, Karimi, Saala, Schmidt, Schott, Soldin, Wiebusch, Willemsen, "Shapes
are not enough" (2026). For each still-correctly-classified sample and each feature, step
along sign(grad) with candidate step sizes; for each candidate, update the feature histogram
and the Pearson correlation matrix incrementally; accept the candidate minimising
alpha * JSD + beta * ||Delta C||_F subject to per-change caps; clip to the clean feature
range. Global acceptance: max per-feature Jensen-Shannon distance < 0.06 and relative
correlation change ||C_adv - C||_F / ||C||_F < 0.006. Public defaults: 10 iterations, 100
bins, min change 0.003, step 0.01, alpha = beta = 1, per-change caps 0.005.

Our reading of the settings (the paper's code is not public to us): candidate steps are
``min_change`` and ``step * m`` (m = 1..``n_steps``) in units of the feature's clean
(weighted) standard deviation; integer features step by 1. The per-change caps bound the
increase of the feature's JSD and of the relative correlation change caused by one change.
Moves are also clipped to the systematic's envelope box (our generalisation).

Vectorised: no Python loop over events. Per iteration and feature, every active event's
candidates are scored at once against the current histogram / moments (incremental: only
two histogram bins and one row of the correlation matrix change per move). The chosen
moves are then accepted in order of increasing score, with the histogram, JSD and
correlation of a prefix of that order computed exactly (cumulative sums), up to the
first prefix that would break a global constraint. So the result always meets the global
constraints exactly; within one feature pass the per-change scores refer to the state at
the start of the pass (the approximation that buys the vectorisation).

Objectives: ``signal_as_background`` / ``background_as_signal`` attack the events of that
class that the model still classifies correctly (output >= 0.5 = signal); ``shift_output``
keeps pushing every attacked event. JSD and correlations are computed over all events given
(|weights|), on ``bins`` uniform bins over the clean range of each feature.
"""

from __future__ import annotations

import math

import torch

from analysis.attacks.base import Attack, AttackContext, check_float, check_int, model_logits

_LN2 = math.log(2.0)
_CHUNK = 65536


def _jsd_terms(h: torch.Tensor, q: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """Per-bin contribution to the JS divergence (natural log) of p = h / total vs q."""
    p = (h / total).clamp_min(0)
    m = 0.5 * (p + q)
    tp = torch.where(p > 0, p * torch.log(p / m.clamp_min(1e-300)), torch.zeros_like(p))
    tq = torch.where(q > 0, q * torch.log(q / m.clamp_min(1e-300)), torch.zeros_like(q))
    return 0.5 * (tp + tq)


def _corr_from_moments(s1, s2, total):
    mu = s1 / total
    cov = s2 / total - torch.outer(mu, mu)
    var = torch.diagonal(cov).clamp_min(0)
    sd = torch.sqrt(var)
    good = sd > 1e-12 * (1 + mu.abs())
    denom = torch.outer(sd, sd)
    ok = torch.outer(good, good)
    return torch.where(ok, cov / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(cov)), mu, var, good


class CONSERVAttack(Attack):
    name = "conservattack"
    per_event = False
    defaults = {
        "iterations": 10,
        "bins": 100,
        "min_change": 0.003,
        "step": 0.01,
        "n_steps": 3,
        "alpha": 1.0,
        "beta": 1.0,
        "jsd_cap": 0.005,
        "corr_cap": 0.005,
        "jsd_max": 0.06,
        "corr_rel_max": 0.006,
    }

    def validate(self, s):
        s["iterations"] = check_int("iterations", s["iterations"], 0)
        s["bins"] = check_int("bins", s["bins"], 2)
        s["n_steps"] = check_int("n_steps", s["n_steps"], 0)
        for k in ("min_change", "step", "alpha", "beta", "jsd_cap", "corr_cap", "jsd_max", "corr_rel_max"):
            s[k] = check_float(k, s[k], 0.0)
        return s

    def is_trivial(self, s):
        return s["iterations"] == 0 or (s["min_change"] == 0 and (s["step"] == 0 or s["n_steps"] == 0))

    def run(self, ctx: AttackContext, s):
        dev = ctx.device
        dt = torch.float64
        x32 = ctx.x.clone()
        n, f = x32.shape
        w = ctx.weights.abs().to(dt)
        W = w.sum()
        # moments in float64 of the centred features (less cancellation in var = <x^2> - <x>^2)
        shift = (w[:, None] * x32.to(dt)).sum(0) / W
        X = x32.to(dt) - shift
        cmin, cmax = X.min(0).values, X.max(0).values
        lo32 = torch.maximum(ctx.lower, x32.min(0).values)
        hi32 = torch.minimum(ctx.upper, x32.max(0).values)
        std = torch.sqrt(((w[:, None] * X ** 2).sum(0) / W).clamp_min(0))
        std = torch.where(std > 0, std, torch.ones_like(std))
        B = s["bins"]
        span = torch.where(cmax > cmin, cmax - cmin, torch.ones_like(cmax))

        def bin_of(v, j):
            return ((v - cmin[j]) / span[j] * B).floor().clamp(0, B - 1).long()

        H = torch.zeros(f, B, dtype=dt, device=dev)
        for j in range(f):
            H[j].index_add_(0, bin_of(X[:, j], j), w)
        q = H / W
        D = torch.zeros(f, dtype=dt, device=dev)  # current JS divergence per feature
        S1 = (w[:, None] * X).sum(0)
        S2 = (X * w[:, None]).T @ X
        C0, _, _, _ = _corr_from_moments(S1, S2, W)
        c0norm = torch.linalg.norm(C0).clamp_min(1e-12)
        C = C0.clone()
        E2 = torch.zeros((), dtype=dt, device=dev)
        steps = sorted({s["min_change"]} | {s["step"] * m for m in range(1, s["n_steps"] + 1)} - {0.0})
        cand = torch.tensor(steps, dtype=torch.float32, device=dev)
        movable_f = ((hi32 - lo32) > 0).any(0)
        jsd_lim = s["jsd_max"] ** 2 * _LN2  # compare divergences: distance = sqrt(D / ln 2)
        stats = {"accepted_moves": 0, "iterations_run": 0, "stopped_by_constraint": 0}

        for _ in range(s["iterations"]):
            with torch.no_grad():
                z = torch.cat([model_logits(ctx.model, x32[i:i + _CHUNK]) for i in range(0, n, _CHUNK)])
            active = ctx.attacked.clone()
            if ctx.objective == "signal_as_background":
                active &= z >= 0
            elif ctx.objective == "background_as_signal":
                active &= z < 0
            idx_all = torch.nonzero(active).squeeze(1)
            if len(idx_all) == 0:
                break
            stats["iterations_run"] += 1
            grads = []
            for i in range(0, len(idx_all), _CHUNK):
                ib = idx_all[i:i + _CHUNK]
                xe = x32[ib].detach().requires_grad_(True)
                (g,) = torch.autograd.grad((ctx.sign[ib] * model_logits(ctx.model, xe)).sum(), xe)
                grads.append(torch.sign(g))
            dirn_all = torch.cat(grads)
            for j in range(f):
                if not bool(movable_f[j]):
                    continue
                dj = dirn_all[:, j]
                sel = dj != 0
                idx, d = idx_all[sel], dj[sel]
                if len(idx) == 0:
                    continue
                D, E2, C, n_acc, hit = self._feature_pass(
                    j, idx, d, x32, X, shift, w, W, H, q, D, S1, S2, C, C0, E2, c0norm, cand, std, lo32, hi32,
                    bool(ctx.integer[j]), bin_of, jsd_lim, s)
                stats["accepted_moves"] += n_acc
                stats["stopped_by_constraint"] += int(hit)
        # exact final constraint values on the float32 result
        Hf = torch.zeros(f, B, dtype=dt, device=dev)
        jsd = []
        for j in range(f):
            Hf[j].index_add_(0, bin_of(x32[:, j].to(dt) - shift[j], j), w)
            jsd.append(float(torch.sqrt(_jsd_terms(Hf[j], q[j], W).sum().clamp_min(0) / _LN2)))
        Xf = x32.to(dt)
        Cf, _, _, _ = _corr_from_moments((w[:, None] * Xf).sum(0), (Xf * w[:, None]).T @ Xf, W)
        rel = float(torch.linalg.norm(Cf - C0) / c0norm)
        info = {
            **stats,
            "max_jsd": max(jsd),
            "jsd_per_feature": jsd,
            "correlation_rel_change": rel,
            "constraints_met": max(jsd) < s["jsd_max"] and rel < s["corr_rel_max"],
        }
        return x32, info, {}

    def _feature_pass(self, j, idx, d, x32, X, shift, w, W, H, q, D, S1, S2, C, C0, E2, c0norm, cand, std, lo32, hi32,
                      integer, bin_of, jsd_lim, s):
        """Score every candidate of every event for feature j, then accept the best moves in
        order of increasing score while the exact global constraints hold."""
        dt = X.dtype
        f = X.shape[1]
        not_j = torch.ones(f, dtype=torch.bool, device=X.device)
        not_j[j] = False
        corr_lim = s["corr_rel_max"]
        # --- candidate scoring (chunked over events; every operation is vectorised)
        mu_all = S1 / W
        sd_all = torch.sqrt((torch.diagonal(S2) / W - mu_all * mu_all).clamp_min(0))
        valid = not_j & (sd_all > 0)
        inv_sd = torch.where(valid, 1.0 / sd_all.clamp_min(1e-300), torch.zeros_like(sd_all))
        P, R, c0 = (S2[j] / W) * inv_sd, mu_all * inv_sd, torch.where(valid, C0[j], torch.zeros_like(sd_all))
        PP, RR, PR = (P * P).sum(), (R * R).sum(), (P * R).sum()
        CP, CR, CC = (c0 * P).sum(), (c0 * R).sum(), (c0 * c0).sum()
        best_new, best_score = [], []
        for i in range(0, len(idx), _CHUNK):
            e, de = idx[i:i + _CHUNK], d[i:i + _CHUNK]
            x_old32 = x32[e, j]
            steps = torch.ones(1, device=X.device) if integer else cand * std[j].float()
            xn32 = x_old32[:, None] + de[:, None] * steps[None, :]
            if integer:
                xn32 = torch.round(xn32)
            xn32 = torch.minimum(torch.maximum(xn32, lo32[e, j][:, None]), hi32[e, j][:, None])
            xo, xn = x_old32.to(dt)[:, None] - shift[j], xn32.to(dt) - shift[j]
            we = w[e][:, None]
            moved = xn != xo
            # histogram: one event leaves bin bo and enters bin bn
            bo = bin_of(xo, j).expand_as(xn)
            bn = bin_of(xn, j)
            ho, hn = H[j][bo], H[j][bn]
            qo, qn = q[j][bo], q[j][bn]
            dD = (_jsd_terms(ho - we, qo, W) - _jsd_terms(ho, qo, W)
                  + _jsd_terms(hn + we, qn, W) - _jsd_terms(hn, qn, W))
            dD = torch.where(bn == bo, torch.zeros_like(dD), dD)
            d_new = (D[j] + dD).clamp_min(0)
            jsd_new = torch.sqrt(d_new / _LN2)
            jsd_cur = torch.sqrt(D[j].clamp_min(0) / _LN2)
            # correlation row j after the move (only row/column j changes). With
            # b = w delta / W, m = new mean of j, s = 1 / new sd of j, the new row is
            # row_k = s (P_k + b Q_ek - m R_k) (P = S2[j] / W / sd, Q = X / sd, R = mu / sd), so
            # sum_k (row_k - C0_jk)^2 expands into per-event dot products: no (K, C, F) tensor.
            delta = xn - xo
            b = we * delta / W
            m = (S1[j] + we * delta) / W
            varj = ((S2[j, j] + we * (xn * xn - xo * xo)) / W - m * m).clamp_min(0)
            sj = torch.where(varj > 0, 1.0 / torch.sqrt(varj).clamp_min(1e-300), torch.zeros_like(varj))
            Q = X[e] * inv_sd  # (K, F), zero outside the valid k
            QQ, PQ, QR, CQ = (Q * Q).sum(1)[:, None], (Q @ P)[:, None], (Q @ R)[:, None], (Q @ c0)[:, None]
            sq = PP + b * b * QQ + m * m * RR + 2 * b * PQ - 2 * m * PR - 2 * b * m * QR
            lin = CP + b * CQ - m * CR
            diff_new = (sj * sj * sq - 2 * sj * lin + CC).clamp_min(0)
            diff_old = ((C[j] - C0[j]) ** 2)[not_j].sum()
            e2_new = (E2 + 2 * (diff_new - diff_old)).clamp_min(0)
            rel_new = torch.sqrt(e2_new) / c0norm
            rel_cur = torch.sqrt(E2) / c0norm
            ok = (moved & (jsd_new - jsd_cur <= s["jsd_cap"]) & (rel_new - rel_cur <= s["corr_cap"])
                  & (d_new < jsd_lim) & (rel_new < corr_lim))
            score = torch.where(ok, s["alpha"] * jsd_new + s["beta"] * rel_new, torch.full_like(jsd_new, math.inf))
            sc, k = score.min(dim=1)
            best_score.append(sc)
            best_new.append(xn32.gather(1, k[:, None]).squeeze(1))
        score = torch.cat(best_score)
        xnew = torch.cat(best_new)
        keep = torch.isfinite(score)
        if not bool(keep.any()):
            return D, E2, C, 0, False
        order = torch.argsort(score[keep], stable=True)
        e_sorted, xn_sorted = idx[keep][order], xnew[keep][order]
        # --- exact sequential acceptance by prefix sums
        n_acc_total = 0
        hit = False
        for i in range(0, len(e_sorted), _CHUNK):
            e, xn32 = e_sorted[i:i + _CHUNK], xn_sorted[i:i + _CHUNK]
            xo, xn = X[e, j], xn32.to(dt) - shift[j]
            we = w[e]
            bo, bn = bin_of(xo, j), bin_of(xn, j)
            delta = xn - xo
            s1 = S1[j] + torch.cumsum(we * delta, 0)
            s2jj = S2[j, j] + torch.cumsum(we * (xn * xn - xo * xo), 0)
            s2row = S2[j][None, :] + torch.cumsum((we * delta)[:, None] * X[e], 0)
            mu = S1 / W
            var = (torch.diagonal(S2) / W - mu * mu).clamp_min(0)
            old_diff = ((C[j] - C0[j]) ** 2)[not_j].sum()

            def state(k):
                """Exact histogram, divergence and relative correlation change after the
                first k moves of this chunk (k >= 1)."""
                h = H[j].clone()
                h.index_add_(0, bn[:k], we[:k])
                h.index_add_(0, bo[:k], -we[:k])
                dk = _jsd_terms(h, q[j], W).sum()
                muj = s1[k - 1] / W
                varj = (s2jj[k - 1] / W - muj * muj).clamp_min(0)
                cov = s2row[k - 1] / W - muj * mu
                den = torch.sqrt(varj * var)
                row = torch.where(den > 0, cov / den.clamp_min(1e-300), torch.zeros_like(cov))
                e2k = E2 + 2 * (((row - C0[j]) ** 2)[not_j].sum() - old_diff)
                relk = torch.sqrt(e2k.clamp_min(0)) / c0norm
                return h, dk, bool((dk < jsd_lim) & (relk < s["corr_rel_max"]))

            # the longest prefix whose end state meets the global constraints: all of the
            # chunk if possible, else bisection (pred(lo) true, pred(hi) false)
            h_all, d_all, ok_all = state(len(e))
            if ok_all:
                n_ok, h_ok, d_ok = len(e), h_all, d_all
            else:
                lo_k, hi_k, h_ok, d_ok = 0, len(e), H[j], D[j]
                while hi_k - lo_k > 1:
                    mid = (lo_k + hi_k) // 2
                    h_m, d_m, ok_m = state(mid)
                    if ok_m:
                        lo_k, h_ok, d_ok = mid, h_m, d_m
                    else:
                        hi_k = mid
                n_ok = lo_k
            if n_ok > 0:
                ea = e[:n_ok]
                x32[ea, j] = xn32[:n_ok]
                X[ea, j] = xn[:n_ok]
                H[j] = h_ok
                D[j] = d_ok
                S1[j] = s1[n_ok - 1]
                S2[j, :] = s2row[n_ok - 1]
                S2[:, j] = s2row[n_ok - 1]
                S2[j, j] = s2jj[n_ok - 1]
                C, _, _, _ = _corr_from_moments(S1, S2, W)
                E2 = ((C - C0) ** 2).sum()
                n_acc_total += n_ok
            if n_ok < len(e):
                hit = True
                break
        return D, E2, C, n_acc_total, hit
