"""CONSERVAttack's incremental bookkeeping gives exactly the numbers of the straightforward one.

The reference below is the plain implementation the optimised attack replaced: each round
recomputes the divergence terms of the whole histogram, the full correlation matrix and every
per-candidate quantity from scratch. The optimised attack keeps per-bin divergence terms, the
correlation row of the moving feature and the block's state-independent numbers instead; it
must return the same events, bit for bit, and the same bookkeeping, for every objective and
setting.
"""

import math

import numpy as np
import pytest
import torch

from hsaudit.attacks import Envelope, make_attack
from hsaudit.attacks.base import AttackContext, model_logits
from hsaudit.attacks.conservattack import CONSERVAttack
from hsaudit.attacks.toy import make_toy_events, train_toy_model

_LN2 = math.log(2.0)
_CHUNK = 65536


def _ref_jsd_terms(h: np.ndarray, q: np.ndarray, total: float) -> np.ndarray:
    """Per-bin contribution to the JS divergence (natural log) of p = h / total vs q."""
    p = np.maximum(h / total, 0.0)
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        tp = np.where(p > 0, p * np.log(p / np.maximum(m, 1e-300)), 0.0)
        tq = np.where(q > 0, q * np.log(q / np.maximum(m, 1e-300)), 0.0)
    return 0.5 * (tp + tq)



def _ref_corr(s1, s2, total):
    mu = s1 / total
    cov = s2 / total - np.outer(mu, mu)
    sd = np.sqrt(np.maximum(np.diagonal(cov), 0))
    good = sd > 1e-12 * (1 + np.abs(mu))
    ok = np.outer(good, good)
    denom = np.where(ok, np.outer(sd, sd), 1.0)
    return np.where(ok, cov / denom, 0.0)



class _ReferenceState:
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
        for j in range(f):
            self.H[j] = np.bincount(self.bin_of(self.X[:, j], j), weights=w, minlength=bins)
        self.q = self.H / self.W
        self.D = np.zeros(f)
        self.S1 = (w[:, None] * self.X).sum(0)
        self.S2 = (self.X * w[:, None]).T @ self.X
        self.C0 = _ref_corr(self.S1, self.S2, self.W)
        self.c0norm = max(float(np.linalg.norm(self.C0)), 1e-12)
        self.C = self.C0.copy()
        self.E2 = 0.0
        std = np.sqrt(np.maximum((w[:, None] * self.X ** 2).sum(0) / self.W, 0))
        self.std = np.where(std > 0, std, 1.0)

    def bin_of(self, v, j):
        return np.clip(np.floor((v - self.cmin[j]) / self.span[j] * self.B), 0, self.B - 1).astype(np.int64)



class ReferenceCONSERVAttack(CONSERVAttack):
    """The optimised attack's settings and interface with the plain rounds."""

    def run(self, ctx: AttackContext, s):
        dev = ctx.device
        x32 = ctx.x.detach().cpu().numpy().astype(np.float32)  # a copy
        n, f = x32.shape
        w = np.abs(ctx.weights.detach().cpu().numpy().astype(np.float64))
        st = _ReferenceState(x32, w, s["bins"] * s["sub_bins"])
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
                for i in range(0, len(pend), s["block_size"]):
                    be, bd = pend[i:i + s["block_size"]], d[i:i + s["block_size"]]
                    block = be
                    cache: dict = {}
                    # each event moves at most once per block pass, so whether it is fooled
                    # matters from the next block on: one model call per block
                    n_rounds = 0
                    while len(be) > 0 and stats["rounds"] < s["max_rounds"] and (
                            s["block_rounds"] == 0 or n_rounds < s["block_rounds"]):
                        n_rounds += 1
                        stats["rounds"] += 1
                        done, infeasible, hit = self._round(st, j, be, bd, x32, cand, lo32, hi32, bool(integer[j]),
                                                            lim, s, cache)
                        stats["stopped_by_constraint"] += int(hit)
                        if not done.any():
                            break
                        stats["accepted_moves"] += int(done.sum())
                        left = ~done if s["retry"] else ~(done | infeasible)
                        be, bd = be[left], bd[left]
                        for k in ("xn32", "xo", "xn", "bn", "moved", "Xe", "we", "leave", "add"):
                            cache[k] = cache[k][left]
                        cache["bo"] = np.broadcast_to(cache["bo"][left, :1], cache["bn"].shape)
                    if classes:
                        active[block] = still_correct(block)
        info = {**stats, **self._final_state(st, ctx.x.detach().cpu().numpy(), x32, s)}
        return torch.from_numpy(x32).to(dev), info, {}

    def _final_state(self, st: _ReferenceState, x0, x32, s) -> dict:
        """Exact constraint values of the float32 result (recomputed from scratch) on the
        ``bins`` bins of the clean range (the internal histogram may be finer)."""
        B = s["bins"]
        jsd = []
        for j in range(x32.shape[1]):
            def hist(v):
                b = np.clip(np.floor((v.astype(np.float64) - st.shift[j] - st.cmin[j]) / st.span[j] * B), 0, B - 1)
                return np.bincount(b.astype(np.int64), weights=st.w, minlength=B)
            q = hist(x0[:, j]) / st.W
            jsd.append(float(np.sqrt(max(_ref_jsd_terms(hist(x32[:, j]), q, st.W).sum(), 0.0) / _LN2)))
        Xf = x32.astype(np.float64) - st.shift
        Cf = _ref_corr((st.w[:, None] * Xf).sum(0), (Xf * st.w[:, None]).T @ Xf, st.W)
        rel = float(np.linalg.norm(Cf - st.C0) / st.c0norm)
        if s["constraint_mode"] == "published":
            met = max(jsd) <= s["jsd_total_cap"] + 1e-9
        else:
            met = max(jsd) < s["jsd_max"] and rel < s["corr_rel_max"]
        return {"constraint_mode": s["constraint_mode"], "max_jsd": max(jsd), "jsd_per_feature": jsd,
                "correlation_rel_change": rel, "constraints_met": bool(met)}

    def _round(self, st: _ReferenceState, j, e, d, x32, cand, lo32, hi32, integer, lim, s, cache):
        """One round for feature j over the events ``e`` (directions ``d``): score every
        candidate against the current state, pick a conflict-free set, apply the longest
        feasible prefix. Returns (accepted, infeasible) masks over ``e`` and whether a total
        constraint cut the prefix."""
        X, W, H, q = st.X, st.W, st.H[j], st.q[j]
        f = X.shape[1]
        not_j = np.ones(f, dtype=bool)
        not_j[j] = False
        # --- candidate scoring (vectorised over events x candidates)
        mu_all = st.S1 / W
        var_all = np.maximum(np.diagonal(st.S2) / W - mu_all * mu_all, 0)
        sd_all = np.sqrt(var_all)
        valid = not_j & (sd_all > 0)
        inv_sd = np.where(valid, 1.0 / np.maximum(sd_all, 1e-300), 0.0)
        c0 = np.where(valid, st.C0[j], 0.0)
        P, R = (st.S2[j] / W) * inv_sd, mu_all * inv_sd
        PP, RR, PR = P @ P, R @ R, P @ R
        CP, CR, CC = c0 @ P, c0 @ R, c0 @ c0
        diff_old = float((((st.C[j] - st.C0[j]) ** 2)[not_j]).sum())
        rel_cur = math.sqrt(st.E2) / st.c0norm
        jsd_cur = math.sqrt(max(st.D[j], 0.0) / _LN2)
        if "xn32" not in cache:
            # per block: what does not depend on the state (the block's events move only once)
            x_old32 = x32[e, j]
            steps = np.ones(1, np.float32) if integer else cand * np.float32(st.std[j])
            xn32 = x_old32[:, None] + d[:, None] * steps[None, :]
            if integer:
                xn32 = np.round(xn32)
            xn32 = np.minimum(np.maximum(xn32, lo32[e, j][:, None]), hi32[e, j][:, None]).astype(np.float32)
            xo = x_old32.astype(np.float64)[:, None] - st.shift[j]
            xn = xn32.astype(np.float64) - st.shift[j]
            bo = np.broadcast_to(st.bin_of(xo, j), xn.shape)
            bn = st.bin_of(xn, j)
            # a move must change the histogram bin (see the module docstring)
            moved = (xn != xo) & (bn != bo)
            cache.update(xn32=xn32, xo=xo, xn=xn, bo=bo, bn=bn, moved=moved, Xe=X[e], we=st.w[e][:, None])
        xn32, xo, xn, bo, bn, moved = (cache[k] for k in ("xn32", "xo", "xn", "bo", "bn", "moved"))
        we = cache["we"]
        # the event leaves bin bo (one per event) and enters bin bn (one per candidate); the
        # divergence terms change only where the histogram changed since the last round
        T = _ref_jsd_terms(H, q, W)
        b0 = bo[:, 0]
        if "leave" not in cache:
            cache["leave"] = _ref_jsd_terms(H[b0] - we[:, 0], q[b0], W) - T[b0]
            cache["add"] = _ref_jsd_terms(H[bn] + we, q[bn], W) - T[bn]
        elif cache.get("changed") is not None:
            hit = np.zeros(st.B, dtype=bool)
            hit[cache["changed"]] = True
            r0 = hit[b0]
            if r0.any():
                bb = b0[r0]
                cache["leave"][r0] = _ref_jsd_terms(H[bb] - we[r0, 0], q[bb], W) - T[bb]
            ra = hit[bn]
            if ra.any():
                bb = bn[ra]
                cache["add"][ra] = _ref_jsd_terms(H[bb] + np.broadcast_to(we, bn.shape)[ra], q[bb], W) - T[bb]
        cache["changed"] = None
        dD = cache["leave"][:, None] + cache["add"]
        d_new = np.maximum(st.D[j] + dD, 0)
        jsd_new = np.sqrt(d_new / _LN2)
        # correlation row j after the move (only row/column j changes). With b = w delta / W,
        # m = new mean of j, sj = 1 / new sd of j, row_k = sj (P_k + b Q_ek - m R_k) with
        # P = S2[j] / W / sd, Q = X / sd, R = mu / sd: per-event dot products, no (K, C, F) array.
        delta = xn - xo
        b = we * delta / W
        m = (st.S1[j] + we * delta) / W
        varj = np.maximum((st.S2[j, j] + we * (xn * xn - xo * xo)) / W - m * m, 0)
        with np.errstate(divide="ignore"):
            sj = np.where(varj > 0, 1.0 / np.sqrt(np.maximum(varj, 1e-300)), 0.0)
        Q = cache["Xe"] * inv_sd
        QQ, PQ, QR, CQ = (Q * Q).sum(1)[:, None], (Q @ P)[:, None], (Q @ R)[:, None], (Q @ c0)[:, None]
        sq = PP + b * b * QQ + m * m * RR + 2 * b * PQ - 2 * m * PR - 2 * b * m * QR
        lin = CP + b * CQ - m * CR
        diff_new = np.maximum(sj * sj * sq - 2 * sj * lin + CC, 0)
        rel_new = np.sqrt(np.maximum(st.E2 + 2 * (diff_new - diff_old), 0)) / st.c0norm
        ok = moved & (jsd_new - jsd_cur <= s["jsd_cap"]) & (rel_new - rel_cur <= s["corr_cap"])
        ok &= (d_new < lim["d_total"]) if lim["strict"] else (d_new <= lim["d_total"])
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
        bo_f, bn_f, dD_f = bo[feas, kf], bn[feas, kf], dD[feas, kf]
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
        muj = s1 / W
        varj = np.maximum(s2jj / W - muj * muj, 0)
        cov = s2row / W - muj[:, None] * mu_all[None, :]
        den = np.sqrt(varj[:, None] * var_all[None, :])
        with np.errstate(divide="ignore", invalid="ignore"):
            row = np.where(den > 0, cov / np.maximum(den, 1e-300), 0.0)
        e2 = st.E2 + 2 * ((((row - st.C0[j][None, :]) ** 2)[:, not_j]).sum(1) - diff_old)
        rel = np.sqrt(np.maximum(e2, 0)) / st.c0norm
        good = ((d_cum < lim["d_total"]) if lim["strict"] else (d_cum <= lim["d_total"])) & (rel < lim["corr"])
        bad = np.nonzero(~good)[0]
        n_ok = len(wi) if len(bad) == 0 else int(bad[0])
        if n_ok == 0:
            return done, infeasible, True
        ea = ew[:n_ok]
        x32[ea, j] = xw32[:n_ok]
        X[ea, j] = xn_w[:n_ok]
        np.add.at(H, bn_f[wi[:n_ok]], ww[:n_ok])
        np.add.at(H, bo_f[wi[:n_ok]], -ww[:n_ok])
        st.D[j] = max(float(_ref_jsd_terms(H, q, W).sum()), 0.0)  # exact, removes drift of the sums
        st.S1[j] = s1[n_ok - 1]
        st.S2[j, :] = s2row[n_ok - 1]
        st.S2[:, j] = s2row[n_ok - 1]
        st.S2[j, j] = s2jj[n_ok - 1]
        st.C = _ref_corr(st.S1, st.S2, W)
        st.E2 = float(((st.C - st.C0) ** 2).sum())
        done[feas[wi[:n_ok]]] = True
        cache["changed"] = np.concatenate([bn_f[wi[:n_ok]], bo_f[wi[:n_ok]]])
        return done, infeasible, n_ok < len(wi)


@pytest.fixture(scope="module")
def toy():
    torch.set_num_threads(1)
    d = make_toy_events(800, seed=4)
    model = train_toy_model(d["x"], d["labels"], seed=1, epochs=40)
    env = Envelope.from_variants(d["x"], d["up"], d["down"], 3.0, d["integer_features"], d["feature_names"], "tes")
    return {**d, "model": model, "env": env}


CASES = [
    ("signal_as_background", {}),
    ("signal_as_background", {"choose": "largest", "sub_bins": 2, "block_rounds": 2, "retry": False}),
    ("background_as_signal", {"constraint_mode": "published", "jsd_total_cap": 0.02}),
    ("shift_output", {"jsd_max": 0.02, "corr_rel_max": 0.002, "block_size": 7}),
]


@pytest.mark.parametrize("objective,settings", CASES)
def test_optimised_rounds_give_identical_output(toy, objective, settings):
    settings = {"iterations": 2, **settings}
    args = (toy["model"], toy["x"], toy["env"], objective)
    kw = {"labels": toy["labels"], "weights": toy["weights"], "seed": 0}
    fast = make_attack("conservattack", **settings).attack(*args, **kw)
    ref = ReferenceCONSERVAttack(**settings).attack(*args, **kw)
    assert fast.info["accepted_moves"] > 0
    assert np.array_equal(fast.numpy(), ref.numpy())
    for key in ("accepted_moves", "rounds", "iterations_run", "stopped_by_constraint", "max_jsd",
                "jsd_per_feature", "correlation_rel_change", "constraints_met"):
        assert fast.info[key] == ref.info[key], key
