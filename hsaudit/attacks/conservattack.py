"""CONSERVAttack: a greedy attack that keeps marginals and linear correlations in place.

Bechtle, Flek, Jung, Karimi, Saala, Schmidt, Schott, Soldin, Wiebusch, Willemsen, "Shapes
are not enough" (2026). For each still-correctly-classified sample and each feature, step
along sign(grad) with candidate step sizes; for each candidate, update the feature histogram
and the Pearson correlation matrix incrementally; accept the candidate minimising
alpha * JSD + beta * ||Delta C||_F subject to per-change caps; clip to the clean feature
range. Global acceptance: max per-feature Jensen-Shannon distance < 0.06 and relative
correlation change ||C_adv - C||_F / ||C||_F < 0.006. Public defaults: 10 iterations, 100
bins, min change 0.003, step 0.01, alpha = beta = 1, per-change caps 0.005.

The published search is sequential: each sample sees the histogram and correlation state
left by the samples before it, so a later sample can refill the bin an earlier one vacated
and the marginals stay in place while single samples move far (about one standard
deviation per feature). This implementation keeps that property without a Python loop over
samples. Per iteration and feature it runs *rounds*: every pending sample scores all its
candidates at once against the current state (incrementally: a move changes two
histogram bins and one row of the correlation matrix) and picks the cheapest feasible one
(``choose: cheapest``, the paper's rule; ``largest``: the largest feasible step); the
samples are ranked by that cost; a conflict-free set is kept, namely the samples that rank
first in both bins their move touches (so no two kept moves share a histogram bin and the
divergence changes add up exactly); these are ordered by their divergence change (refills
first) and the longest prefix whose exact cumulative state meets the total constraints is
applied (moments by prefix sums, so the correlation state is exact too). The state is then updated and the next
round scores the remaining samples against it, i.e. it sees the bins the previous round
vacated. The events are visited in blocks of ``block_size`` in a fixed order; a block's
rounds go on until each of its events has moved (with ``retry``, the default; else also
until it has no feasible candidate) or a round accepts nothing (or after ``block_rounds``
rounds when that is > 0: faster, but it fools far less, since most moves are refills
found in late rounds). A move must change the
event's histogram bin: moves inside a bin are free for the histogram but pile events up at
bin edges, which any other binning sees. The bookkeeping runs in numpy float64 on the CPU
(many small exact updates); the model's gradients and outputs run on its device.
``sub_bins`` > 1 keeps the internal histograms ``sub_bins`` times finer than ``bins``: the JS
distance of a histogram can only shrink when bins are merged, so the constraint then also
holds on the coarser binning, and other binnings of an independent scorer see less.

Two constraint modes (``constraint_mode``):

``global`` (default, the paper's stated acceptance): per change, the increase of the
    feature's JS distance <= ``jsd_cap`` and of the relative correlation change <=
    ``corr_cap``; in total, max per-feature JS distance < ``jsd_max`` (0.06) and relative
    correlation change < ``corr_rel_max`` (0.006), both against the clean sample.
``published`` (the constraints the public code effectively applies): the same per-change
    caps, and the total JS distance of every feature against the *clean* histogram <=
    ``jsd_total_cap`` (0.005); no cumulative limit on the correlation change. With the
    paper's 100 bins a single move of one of N unit-weight events already costs a JS
    distance of about sqrt(1 / (4 N q ln 2)) (q the bin content fraction): below roughly a
    thousand events no move fits under 0.005 and nothing moves.

Candidate steps, in units of the feature's clean (weighted) standard deviation: ``min_change``
and ``n_steps`` values spaced geometrically from ``step`` to ``max_step`` (integer features
step by 1). Moves are also clipped to the systematic's envelope box (our generalisation).
JS distances (base 2) use ``bins`` uniform bins over the clean range of each feature and are
computed, like the correlations, over all events given (|weights|).

Objectives: ``signal_as_background`` / ``background_as_signal`` attack the events of that
class that the model still classifies correctly (output >= 0.5 = signal) and stop moving an
event once it is fooled; ``shift_output`` keeps pushing every attacked event.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hsaudit.attacks.base import Attack, AttackContext, model_logits

_LN2 = math.log(2.0)
_CHUNK = 65536
MODES = ("global", "published")  # the schema's constraint_mode values
CHOICES = ("cheapest", "largest")  # the schema's choose values


def _jsd_terms(h: np.ndarray, q: np.ndarray, total: float) -> np.ndarray:
    """Per-bin contribution to the JS divergence (natural log) of p = h / total vs q."""
    p = np.maximum(h / total, 0.0)
    m = np.maximum(0.5 * (p + q), 1e-300)
    # empty bins contribute 0 (log of 1 there instead of 0 log 0: no warnings to silence)
    tp = p * np.log(np.where(p > 0, p / m, 1.0))
    tq = q * np.log(np.where(q > 0, q / m, 1.0))
    return 0.5 * (tp + tq)


def _corr_from_moments(s1, s2, total):
    mu = s1 / total
    cov = s2 / total - np.outer(mu, mu)
    sd = np.sqrt(np.maximum(np.diagonal(cov), 0))
    good = sd > 1e-12 * (1 + np.abs(mu))
    ok = np.outer(good, good)
    denom = np.where(ok, np.outer(sd, sd), 1.0)
    return np.where(ok, cov / denom, 0.0)


class _State:
    """Histograms, JS divergences and moments of the current sample (float64, centred)."""

    def __init__(self, x32: np.ndarray, w: np.ndarray, bins: int):
        self.w = w
        self.W = float(w.sum())
        self.shift = (w[:, None] * x32.astype(np.float64)).sum(0) / self.W
        self.X = x32.astype(np.float64) - self.shift
        self.cmin, self.cmax = self.X.min(0), self.X.max(0)
        self.span = np.where(self.cmax > self.cmin, self.cmax - self.cmin, 1.0)
        self.B = bins
        f = x32.shape[1]
        self.H = np.zeros((f, bins))
        # binned with bin_of, the function every move is booked with, not with
        # hsaudit.histograms: its edges cmin + span * k / B put values that lie on an edge
        # (discrete features) in another bin than floor((v - cmin) / span * B) does
        for j in range(f):
            self.H[j] = np.bincount(self.bin_of(self.X[:, j], j), weights=w, minlength=bins)
        self.q = self.H / self.W
        self.D = np.zeros(f)
        self.S1 = (w[:, None] * self.X).sum(0)
        self.S2 = (self.X * w[:, None]).T @ self.X
        self.C0 = _corr_from_moments(self.S1, self.S2, self.W)
        self.c0norm = max(float(np.linalg.norm(self.C0)), 1e-12)
        self.C = self.C0.copy()
        self.E2 = 0.0
        std = np.sqrt(np.maximum((w[:, None] * self.X ** 2).sum(0) / self.W, 0))
        self.std = np.where(std > 0, std, 1.0)
        # per-bin divergence terms of the current histograms, kept up to date bin by bin
        self.T = np.stack([_jsd_terms(self.H[j], self.q[j], self.W) for j in range(f)])

    def feature_pass(self, j) -> dict:
        """What the scoring of moves of feature j needs and what stays fixed while only
        feature j moves: means, variances and 1 / sd of the other features, their clean
        correlations with j and the dot products between them."""
        W = self.W
        mu_all = self.S1 / W
        var_all = np.maximum(np.diagonal(self.S2) / W - mu_all * mu_all, 0)
        sd_all = np.sqrt(var_all)
        not_j = np.ones(len(mu_all), dtype=bool)
        not_j[j] = False
        valid = not_j & (sd_all > 0)
        inv_sd = np.where(valid, 1.0 / np.maximum(sd_all, 1e-300), 0.0)
        c0 = np.where(valid, self.C0[j], 0.0)
        R = mu_all * inv_sd
        return {"mu_all": mu_all, "var_all": var_all, "not_j": not_j, "inv_sd": inv_sd, "c0": c0, "R": R,
                "RR": R @ R, "CR": c0 @ R, "CC": c0 @ c0}

    def update_correlation(self, j):
        """Row and column j of the correlation matrix from the moments (the same numbers
        ``_corr_from_moments`` gives; the other entries do not depend on feature j) and the
        squared Frobenius distance to the clean matrix."""
        mu = self.S1 / self.W
        sd = np.sqrt(np.maximum(np.diagonal(self.S2) / self.W - mu * mu, 0))
        good = sd > 1e-12 * (1 + np.abs(mu))
        ok = good[j] & good
        cov = self.S2[j] / self.W - mu[j] * mu
        row = np.where(ok, cov / np.where(ok, sd[j] * sd, 1.0), 0.0)
        self.C[j, :] = row
        self.C[:, j] = row
        self.E2 = float(((self.C - self.C0) ** 2).sum())

    def bin_of(self, v, j):
        return np.clip(np.floor((v - self.cmin[j]) / self.span[j] * self.B), 0, self.B - 1).astype(np.int64)


class CONSERVAttack(Attack):
    name = "conservattack"
    per_event = False
    # settings, defaults and ranges: hsaudit.config_schema.CONSERVAttackSettings

    def is_trivial(self, s):
        return s["iterations"] == 0 or (s["min_change"] == 0 and (s["step"] == 0 or s["n_steps"] == 0))

    @staticmethod
    def candidate_steps(s) -> list[float]:
        """Candidate step sizes in units of the feature's clean standard deviation."""
        steps = {s["min_change"]}
        if s["n_steps"] == 1:
            steps.add(s["step"])
        elif s["n_steps"] > 1 and s["step"] > 0:
            r = (s["max_step"] / s["step"]) ** (1.0 / (s["n_steps"] - 1))
            steps |= {s["step"] * r ** m for m in range(s["n_steps"])}
        return sorted(steps - {0.0})

    # ------------------------------------------------------------------
    def run(self, ctx: AttackContext, s):
        dev = ctx.device
        x32 = ctx.x.detach().cpu().numpy().astype(np.float32)  # a copy
        n, f = x32.shape
        w = np.abs(ctx.weights.detach().cpu().numpy().astype(np.float64))
        st = _State(x32, w, s["bins"] * s["sub_bins"])
        lo32 = np.maximum(ctx.lower.cpu().numpy(), x32.min(0))
        hi32 = np.minimum(ctx.upper.cpu().numpy(), x32.max(0))
        integer = ctx.integer.cpu().numpy()
        cand = np.asarray(self.candidate_steps(s), dtype=np.float32)
        movable_f = ((hi32 - lo32) > 0).any(0)
        published = s["constraint_mode"] == "published"
        lim = {
            # totals compared as divergences (distance = sqrt(D / ln 2))
            "d_total": (s["jsd_total_cap"] if published else s["jsd_max"]) ** 2 * _LN2,
            "strict": not published,  # global limits are strict (<), the published cap is <=
            "corr": math.inf if published else s["corr_rel_max"],
        }
        classes = ctx.objective in ("signal_as_background", "background_as_signal")
        sign = ctx.sign.to(dev)

        def logits(idx):
            with torch.no_grad():
                if len(idx) <= _CHUNK:
                    return model_logits(ctx.model, torch.from_numpy(x32[idx]).to(dev)).cpu().numpy()
                return torch.cat([model_logits(ctx.model, torch.from_numpy(x32[idx[i:i + _CHUNK]]).to(dev)).cpu()
                                  for i in range(0, len(idx), _CHUNK)]).numpy()

        def still_correct(idx):
            z = logits(idx)
            return z >= 0 if ctx.objective == "signal_as_background" else z < 0

        active = ctx.attacked.cpu().numpy().copy()
        if classes:
            idx0 = np.nonzero(active)[0]
            active[idx0] = still_correct(idx0)
        stats = {"accepted_moves": 0, "iterations_run": 0, "rounds": 0, "stopped_by_constraint": 0}
        for _ in range(s["iterations"]):
            idx_all = np.nonzero(active)[0]
            if len(idx_all) == 0:
                break
            stats["iterations_run"] += 1
            grads = []
            for i in range(0, len(idx_all), _CHUNK):
                ib = torch.from_numpy(idx_all[i:i + _CHUNK]).to(dev)
                xe = torch.from_numpy(x32[idx_all[i:i + _CHUNK]]).to(dev).requires_grad_(True)
                (g,) = torch.autograd.grad((sign[ib] * model_logits(ctx.model, xe)).sum(), xe)
                grads.append(torch.sign(g).cpu().numpy())
            dirn_all = np.concatenate(grads).astype(np.float32)
            for j in range(f):
                if not movable_f[j]:
                    continue
                sel = dirn_all[:, j] != 0
                pend, d = idx_all[sel], dirn_all[sel, j]
                if classes:  # events fooled earlier in this iteration stay where they are
                    keep = active[pend]
                    pend, d = pend[keep], d[keep]
                if len(pend) == 0:
                    continue
                # while feature j moves, every moment and correlation not involving j stays put
                fp = st.feature_pass(j)
                for i in range(0, len(pend), s["block_size"]):
                    be, bd = pend[i:i + s["block_size"]], d[i:i + s["block_size"]]
                    block = be
                    # each event moves at most once per block pass, so whether it is fooled
                    # matters from the next block on: one model call per block
                    blk = _Block(st, fp, j, be, bd, x32, cand, lo32, hi32, bool(integer[j]))
                    n_rounds = 0
                    while len(blk.e) > 0 and stats["rounds"] < s["max_rounds"] and (
                            s["block_rounds"] == 0 or n_rounds < s["block_rounds"]):
                        n_rounds += 1
                        stats["rounds"] += 1
                        done, infeasible, hit = self._round(st, fp, blk, x32, lim, s)
                        stats["stopped_by_constraint"] += int(hit)
                        if not done.any():
                            break
                        stats["accepted_moves"] += int(done.sum())
                        blk.keep(~done if s["retry"] else ~(done | infeasible))
                    if classes:
                        active[block] = still_correct(block)
        info = {**stats, **self._final_state(st, ctx.x.detach().cpu().numpy(), x32, s)}
        return torch.from_numpy(x32).to(dev), info, {}

    def _final_state(self, st: _State, x0, x32, s) -> dict:
        """Exact constraint values of the float32 result (recomputed from scratch) on the
        ``bins`` bins of the clean range (the internal histogram may be finer)."""
        B = s["bins"]
        jsd = []
        for j in range(x32.shape[1]):
            def hist(v):
                b = np.clip(np.floor((v.astype(np.float64) - st.shift[j] - st.cmin[j]) / st.span[j] * B), 0, B - 1)
                return np.bincount(b.astype(np.int64), weights=st.w, minlength=B)
            q = hist(x0[:, j]) / st.W
            jsd.append(float(np.sqrt(max(_jsd_terms(hist(x32[:, j]), q, st.W).sum(), 0.0) / _LN2)))
        Xf = x32.astype(np.float64) - st.shift
        Cf = _corr_from_moments((st.w[:, None] * Xf).sum(0), (Xf * st.w[:, None]).T @ Xf, st.W)
        rel = float(np.linalg.norm(Cf - st.C0) / st.c0norm)
        if s["constraint_mode"] == "published":
            met = max(jsd) <= s["jsd_total_cap"] + 1e-9
        else:
            met = max(jsd) < s["jsd_max"] and rel < s["corr_rel_max"]
        return {"constraint_mode": s["constraint_mode"], "max_jsd": max(jsd), "jsd_per_feature": jsd,
                "correlation_rel_change": rel, "constraints_met": bool(met)}

    def _round(self, st: _State, fp: dict, blk: "_Block", x32, lim, s):
        """One round for feature j over the block's pending events: score every candidate
        against the current state, pick a conflict-free set, apply the longest feasible
        prefix. Returns (accepted, infeasible) masks over the pending events and whether a
        total constraint cut the prefix."""
        j, e = blk.j, blk.e
        X, W, H, q = st.X, st.W, st.H[j], st.q[j]
        not_j, inv_sd, c0, R = fp["not_j"], fp["inv_sd"], fp["c0"], fp["R"]
        RR, CR, CC = fp["RR"], fp["CR"], fp["CC"]
        # --- candidate scoring (vectorised over events x candidates)
        P = (st.S2[j] / W) * inv_sd
        PP, PR, CP = P @ P, P @ R, c0 @ P
        diff_old = float((((st.C[j] - st.C0[j]) ** 2)[not_j]).sum())
        rel_cur = math.sqrt(st.E2) / st.c0norm
        jsd_cur = math.sqrt(max(st.D[j], 0.0) / _LN2)
        xn32, bn, moved, b0 = blk.xn32, blk.bn, blk.moved, blk.b0
        b, b2, bbQQ, wd, wsq, add, we, leave = blk.b, blk.b2, blk.bbQQ, blk.wd, blk.wsq, blk.add, blk.we, blk.leave
        # the event leaves bin b0 (one per event) and enters bin bn (one per candidate); the
        # divergence terms change only where the histogram changed since the last round
        T = st.T[j]
        if blk.changed is not None:
            hit = np.zeros(st.B, dtype=bool)
            hit[blk.changed] = True
            r0 = hit[b0]
            if r0.any():
                bb = b0[r0]
                leave[r0] = _jsd_terms(H[bb] - we[r0, 0], q[bb], W) - T[bb]
            ra = hit[bn]
            if ra.any():
                bb = bn[ra]
                add[ra] = _jsd_terms(H[bb] + we[np.nonzero(ra)[0], 0], q[bb], W) - T[bb]
        blk.changed = None
        dD = leave[:, None] + add
        d_new = np.maximum(st.D[j] + dD, 0)
        jsd_new = np.sqrt(d_new / _LN2)
        # correlation row j after the move (only row/column j changes). With b = w delta / W,
        # m = new mean of j, sj = 1 / new sd of j, row_k = sj (P_k + b Q_ek - m R_k) with
        # P = S2[j] / W / sd, Q = X / sd, R = mu / sd: per-event dot products, no (K, C, F) array.
        m = (st.S1[j] + wd) / W
        varj = np.maximum((st.S2[j, j] + wsq) / W - m * m, 0)
        sj = np.where(varj > 0, 1.0 / np.sqrt(np.maximum(varj, 1e-300)), 0.0)
        Q = blk.Q
        PQ, QR, CQ = (Q @ P)[:, None], (Q @ R)[:, None], (Q @ c0)[:, None]
        sq = PP + bbQQ + m * m * RR + b2 * PQ - 2 * m * PR - b2 * m * QR
        lin = CP + b * CQ - m * CR
        diff_new = np.maximum(sj * sj * sq - 2 * sj * lin + CC, 0)
        rel_new = np.sqrt(np.maximum(st.E2 + 2 * (diff_new - diff_old), 0)) / st.c0norm
        ok = moved & (jsd_new - jsd_cur <= s["jsd_cap"]) & (rel_new - rel_cur <= s["corr_cap"])
        ok &= (d_new < lim["d_total"]) if lim["strict"] else (d_new <= lim["d_total"])
        if lim["corr"] != math.inf:
            ok &= rel_new < lim["corr"]
        cost = s["alpha"] * jsd_new + s["beta"] * rel_new
        rows = np.arange(len(e))
        if s["choose"] == "largest":  # the largest feasible step (candidates sorted by size)
            kk = np.where(ok, np.arange(ok.shape[1])[None, :], -1).max(1)
            k = np.maximum(kk, 0)
            sc = np.where(kk >= 0, cost[rows, k], np.inf)
        else:
            score = np.where(ok, cost, np.inf)
            k = score.argmin(1)
            sc = score[rows, k]
        infeasible = ~np.isfinite(sc)
        done = np.zeros(len(e), dtype=bool)
        feas = np.nonzero(~infeasible)[0]
        if len(feas) == 0:
            return done, infeasible, False
        kf = k[feas]
        xnew32 = xn32[feas, kf]
        bo_f, bn_f, dD_f = b0[feas], bn[feas, kf], dD[feas, kf]
        # --- conflict-free set: the events ranking first (cheapest) in both bins they touch
        order = np.argsort(sc[feas], kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        first = np.full(st.B, len(order), dtype=rank.dtype)
        np.minimum.at(first, bo_f, rank)
        np.minimum.at(first, bn_f, rank)
        win = (first[bo_f] == rank) & (first[bn_f] == rank)
        # bins are disjoint, so the divergence changes add up exactly and any order of the
        # winners gives the same end state: apply those that lower the divergence first
        wi = np.nonzero(win)[0]
        wi = wi[np.lexsort((rank[wi], dD_f[wi]))]
        ew, xw32 = e[feas[wi]], xnew32[wi]
        xo_w, xn_w = X[ew, j], xw32.astype(np.float64) - st.shift[j]
        ww = st.w[ew]
        # --- exact cumulative state of every prefix
        d_cum = st.D[j] + np.cumsum(dD_f[wi])
        dlt = ww * (xn_w - xo_w)
        s1 = st.S1[j] + np.cumsum(dlt)
        s2jj = st.S2[j, j] + np.cumsum(ww * (xn_w * xn_w - xo_w * xo_w))
        s2row = st.S2[j][None, :] + np.cumsum(dlt[:, None] * X[ew], 0)
        good = (d_cum < lim["d_total"]) if lim["strict"] else (d_cum <= lim["d_total"])
        if lim["corr"] != math.inf:  # the published mode has no cumulative correlation limit
            muj = s1 / W
            varj = np.maximum(s2jj / W - muj * muj, 0)
            cov = s2row / W - muj[:, None] * fp["mu_all"][None, :]
            den = np.sqrt(varj[:, None] * fp["var_all"][None, :])
            row = np.where(den > 0, cov / np.maximum(den, 1e-300), 0.0)
            e2 = st.E2 + 2 * ((((row - st.C0[j][None, :]) ** 2)[:, not_j]).sum(1) - diff_old)
            good &= np.sqrt(np.maximum(e2, 0)) / st.c0norm < lim["corr"]
        bad = np.nonzero(~good)[0]
        n_ok = len(wi) if len(bad) == 0 else int(bad[0])
        if n_ok == 0:
            return done, infeasible, True
        ea = ew[:n_ok]
        x32[ea, j] = xw32[:n_ok]
        X[ea, j] = xn_w[:n_ok]
        changed = np.concatenate([bn_f[wi[:n_ok]], bo_f[wi[:n_ok]]])
        np.add.at(H, bn_f[wi[:n_ok]], ww[:n_ok])
        np.add.at(H, bo_f[wi[:n_ok]], -ww[:n_ok])
        T[changed] = _jsd_terms(H[changed], q[changed], W)
        st.D[j] = max(float(T.sum()), 0.0)  # exact, removes drift of the sums
        st.S1[j] = s1[n_ok - 1]
        st.S2[j, :] = s2row[n_ok - 1]
        st.S2[:, j] = s2row[n_ok - 1]
        st.S2[j, j] = s2jj[n_ok - 1]
        st.update_correlation(j)
        done[feas[wi[:n_ok]]] = True
        blk.changed = changed
        return done, infeasible, n_ok < len(wi)


class _Block:
    """A block's pending events for feature j and everything about their candidate moves
    that does not depend on the state (an event moves at most once per block pass), so that
    a round only computes what the state changes."""

    _FIELDS = ("e", "xn32", "bn", "moved", "b0", "Q", "b", "b2", "bbQQ", "wd", "wsq", "add", "we", "leave")

    def __init__(self, st: _State, fp: dict, j, e, d, x32, cand, lo32, hi32, integer):
        self.j, self.e, self.changed = j, e, None
        x_old32 = x32[e, j]
        steps = np.ones(1, np.float32) if integer else cand * np.float32(st.std[j])
        xn32 = x_old32[:, None] + d[:, None] * steps[None, :]
        if integer:
            xn32 = np.round(xn32)
        self.xn32 = np.minimum(np.maximum(xn32, lo32[e, j][:, None]), hi32[e, j][:, None]).astype(np.float32)
        xo = x_old32.astype(np.float64)[:, None] - st.shift[j]
        xn = self.xn32.astype(np.float64) - st.shift[j]
        self.b0 = st.bin_of(xo, j)[:, 0]
        self.bn = st.bin_of(xn, j)
        # a move must change the histogram bin (see the module docstring)
        self.moved = (xn != xo) & (self.bn != self.b0[:, None])
        we = st.w[e][:, None]
        W = st.W
        H, q, T = st.H[j], st.q[j], st.T[j]
        # column j of Q is multiplied by inv_sd[j] = 0: stale values of X[:, j] do not matter
        self.Q = st.X[e] * fp["inv_sd"]
        QQ = (self.Q * self.Q).sum(1)[:, None]
        delta = xn - xo
        b = we * delta / W
        wd = we * delta
        wsq = we * (xn * xn - xo * xo)
        add = _jsd_terms(H[self.bn] + we, q[self.bn], W) - T[self.bn]
        leave = _jsd_terms(H[self.b0] - we[:, 0], q[self.b0], W) - T[self.b0]
        self.b, self.b2, self.bbQQ, self.wd, self.wsq, self.add = b, 2 * b, b * b * QQ, wd, wsq, add
        self.we, self.leave = we, leave

    def keep(self, left):
        """Drop the events with ``left`` False (the order of the rest is kept)."""
        idx = np.flatnonzero(left)
        for name in self._FIELDS:
            setattr(self, name, getattr(self, name).take(idx, axis=0))
