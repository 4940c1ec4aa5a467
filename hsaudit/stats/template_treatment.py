"""Treatment of shape-systematic templates before they enter the likelihood: symmetrisation,
optional smoothing, and pruning of shape effects that the MC statistics cannot resolve.

Why: templates from finite simulation carry MC noise. A fit that profiles noisy histosys
templates is biased even on pseudo-data drawn from the nominal model: where the up and down
templates move a bin the same way (noise, or a second-order effect), the code4p
interpolation has a term quadratic in the nuisance parameter, alpha^2 is positive in every
toy, and the fit compensates the resulting excess with the signal strength. The usual fit
tools treat templates before fitting; this module does the same, configured by
``fit.shape_treatment`` (every key optional)::

    fit:
      shape_treatment:
        symmetrise: true        # up' = nom + (up - down)/2, down' = nom - (up - down)/2
        smoothing: none         # none | running_mean
        smoothing_width: 3      # bins of the running mean (odd, >= 3)
        prune: true             # drop shapes compatible with MC noise
        prune_pvalue: 0.05      # keep a shape only if its noise-only p-value is below this
        keep_normalisation: true  # a pruned shape keeps its normalisation effect (normsys)

Choices and why:

* **Symmetrisation** (two-sided, as ATLAS TRExFitter's ``Symmetrisation: TWOSIDED`` and
  the cabinetry-style tools): per bin the half difference ``d = (up - down)/2`` is kept and
  the common part ``(up + down)/2 - nom`` is dropped. That common part is either MC noise
  (shifted variants of the same events cross bin edges in both directions) or a
  second-order effect; it is what makes the interpolation quadratic and biases mu. After
  symmetrisation the template enters the fit linearly. ``|d|`` is capped at the nominal bin
  content so that neither template goes negative (a variation of more than 100% in a bin is
  not a one-sigma effect one can model additively).
* **Smoothing** (off by default): a running mean over ``smoothing_width`` neighbouring bins
  of the relative variation ``d / nom`` (bins are ordered in the NN output, so neighbours
  are related), rescaled so that the total yield change is kept: the normalisation effect
  is measured on the whole sample and is not what smoothing should change. It is off by
  default because the binning is optimised per channel (variable widths, few bins): a
  running mean over 3 of 10 such bins can wash out a genuine shape; pruning already handles
  the noise-dominated case.
* **Pruning** (CMS CombineHarvester-like: a shape whose effect is compatible with MC noise is
  dropped): the shape-only part of the symmetrised variation,
  ``s = d - nom * sum(d)/sum(nom)``, is tested against its MC-noise covariance with
  ``chi2 = s^T C_s^+ s`` (``ndf`` = rank of C_s). If the noise-only p-value is at least
  ``prune_pvalue`` the shape is replaced by a flat ratio equal to the total-yield ratio
  (``up = nom * sum(up')/sum(nom)``): only the normalisation effect stays (the normsys of
  :mod:`hsaudit.stats.from_histograms`; its histosys is then equal to the nominal and
  contributes nothing). ``keep_normalisation: false`` drops the normalisation effect too.
  The normalisation effect is not tested: it is measured on every event of the sample
  and is the leading, physical part of most variations (acceptance).
* **MC-noise variance**: the estimator of the bin difference ``D_b = up_b - down_b`` is a sum
  over events, ``D_b = sum_i a_ib`` with ``a_ib = w_up,i [i in b under up] - w_down,i [i in
  b under down]``: for shifted variants of the same events only the events that change bin
  (or leave or enter the channel) contribute; for weight variations ``a_ib = w_up,i -
  w_down,i``. Its Poisson-bootstrap covariance is ``C = sum_i a_i a_i^T``, and that of
  ``d = D/2`` is ``C/4``. :func:`hsaudit.fit_stage.template_histograms` computes C from the
  per-event bin indices (key ``"shape_noise"`` of a sample: ``{syst: (nb, nb)}``). Without
  it the nominal ``sumw2`` is used as a diagonal variance of ``d``: conservative (every event
  of a bin counted as if it moved; a shape is then pruned more readily).

Input and output are the histogram dicts of :mod:`hsaudit.stats.from_histograms`
(``{channel: {sample: {"nominal", "sumw2", "shapes": {syst: {"up", "down"}}}}}``); the input
is not modified. :func:`treat_templates` also returns a JSON-able record of what was done
per (channel, sample, systematic).
"""

from __future__ import annotations

import copy

import numpy as np
from scipy import stats

from hsaudit.errors import AuditError

DEFAULTS = {
    "symmetrise": True,
    "smoothing": "none",
    "smoothing_width": 3,
    "prune": True,
    "prune_pvalue": 0.05,
    "keep_normalisation": True,
}
SMOOTHING = ("none", "running_mean")


def treatment_settings(raw) -> dict:
    """Validated ``fit.shape_treatment`` settings (missing keys take :data:`DEFAULTS`;
    ``false`` switches every treatment off)."""
    if raw is None or raw is True:
        return dict(DEFAULTS)
    if raw is False:
        return {**DEFAULTS, "symmetrise": False, "prune": False, "smoothing": "none"}
    if not isinstance(raw, dict):
        raise AuditError(f"fit.shape_treatment must be a mapping (or true/false), got {raw!r}")
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise AuditError(f"fit.shape_treatment: unknown key(s) {unknown}; known: {sorted(DEFAULTS)}")
    out = {**DEFAULTS, **raw}
    for key in ("symmetrise", "prune", "keep_normalisation"):
        if not isinstance(out[key], bool):
            raise AuditError(f"fit.shape_treatment.{key} must be true or false, got {out[key]!r}")
    if out["smoothing"] not in SMOOTHING:
        raise AuditError(f"fit.shape_treatment.smoothing must be one of {list(SMOOTHING)}, got {out['smoothing']!r}")
    w = out["smoothing_width"]
    if not isinstance(w, int) or isinstance(w, bool) or w < 3 or w % 2 == 0:
        raise AuditError(f"fit.shape_treatment.smoothing_width must be an odd integer >= 3, got {w!r}")
    p = out["prune_pvalue"]
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= float(p) <= 1.0:
        raise AuditError(f"fit.shape_treatment.prune_pvalue must be a number in [0, 1], got {p!r}")
    out["prune_pvalue"] = float(p)
    return out


def symmetrised_half_difference(nominal, up, down) -> np.ndarray:
    """d = (up - down)/2 per bin, capped at |d| <= max(nom, 0) (see the module docstring)."""
    nom = np.clip(np.asarray(nominal, dtype=np.float64), 0.0, None)
    d = 0.5 * (np.asarray(up, dtype=np.float64) - np.asarray(down, dtype=np.float64))
    return np.clip(d, -nom, nom)


def smooth_relative(nominal, d, width: int = 3) -> np.ndarray:
    """Running mean over ``width`` bins of the relative variation d/nom, back in yields and
    rescaled to keep sum(d) (the normalisation effect); bins with nom <= 0 keep d = 0."""
    nom = np.asarray(nominal, dtype=np.float64)
    d = np.asarray(d, dtype=np.float64)
    if len(d) < 3:
        return d.copy()
    ok = nom > 0
    rel = np.where(ok, d / np.where(ok, nom, 1.0), 0.0)
    kernel = np.ones(min(width, 2 * ((len(d) - 1) // 2) + 1))
    half = len(kernel) // 2
    # edge bins average over the bins that exist (no padding with invented values)
    num = np.convolve(np.pad(rel * ok, half), kernel, mode="valid")
    den = np.convolve(np.pad(ok.astype(float), half), kernel, mode="valid")
    out = np.where(ok, nom * num / np.where(den > 0, den, 1.0), 0.0)
    total, new_total = d.sum(), out.sum()
    shape_part = out - nom * new_total / max(nom[ok].sum(), 1e-300)
    # keep the normalisation effect exactly; the smoothed shape rides on top of it
    return shape_part + nom * total / max(nom[ok].sum(), 1e-300)


def shape_noise_test(nominal, d, noise_cov) -> dict:
    """Chi2 of the shape-only part of ``d`` against its MC-noise covariance ``noise_cov``
    (of d, (nb, nb)); returns chi2, ndf and the noise-only p-value."""
    nom = np.clip(np.asarray(nominal, dtype=np.float64), 0.0, None)
    d = np.asarray(d, dtype=np.float64)
    nb = len(d)
    C = np.asarray(noise_cov, dtype=np.float64)
    if C.shape != (nb, nb):
        raise AuditError(f"shape noise covariance has shape {C.shape}, expected ({nb}, {nb})")
    if nom.sum() <= 0:
        return {"chi2": 0.0, "ndf": 0, "pvalue": 1.0}
    # the projection removing the normalisation part: s = P d
    P = np.eye(nb) - np.outer(nom / nom.sum(), np.ones(nb))
    s = P @ d
    Cs = P @ C @ P.T
    scale = max(float(np.abs(Cs).max()), 1e-300)
    ndf = int(np.linalg.matrix_rank(Cs / scale, tol=1e-9))
    if ndf == 0:
        # no noise and no shape freedom: nothing MC statistics could resolve or confuse
        # (chi2 None: a shape with no MC noise at all, resolved by definition; JSON-safe)
        shape = float(np.abs(s).max())
        return {"chi2": 0.0 if shape == 0 else None, "ndf": 0, "pvalue": 1.0 if shape == 0 else 0.0}
    chi2 = float(s @ np.linalg.pinv(Cs / scale, rcond=1e-9, hermitian=True) @ s) / scale
    return {"chi2": chi2, "ndf": ndf, "pvalue": float(stats.chi2.sf(chi2, ndf))}


def treat_templates(histograms: dict, settings=None, decisions: dict | None = None) -> tuple[dict, dict]:
    """(treated histograms, record) for ``settings`` (validated by :func:`treatment_settings`).

    ``decisions`` ({"channel/sample/systematic": pruned (bool)}, e.g. from the record of a
    central treatment: :func:`pruning_decisions`) imposes the pruning decisions instead of
    testing (entries not listed are tested).

    A sample's optional ``"shape_noise"`` ({syst: (nb, nb) covariance of up - down from
    the MC events}) gives the pruning variance; without it the nominal ``sumw2`` is used
    (conservative, see the module docstring). The returned histograms carry no
    ``"shape_noise"`` key."""
    cfg = treatment_settings(settings)
    if not isinstance(histograms, dict):
        raise AuditError("histograms must be a dict {channel: {sample: {...}}}")
    out, record = {}, {"settings": cfg, "shapes": [], "summary": {}}
    n_pruned = n_kept = n_conservative = 0
    for ch, samples in histograms.items():
        out[ch] = {}
        for sname, h in samples.items():
            h2 = {k: copy.deepcopy(v) for k, v in h.items() if k not in ("shapes", "shape_noise")}
            noise = h.get("shape_noise") or {}
            nom = np.asarray(h["nominal"], dtype=np.float64)
            shapes = {}
            for syst, ud in (h.get("shapes") or {}).items():
                up = np.asarray(ud["up"], dtype=np.float64)
                dn = np.asarray(ud["down"], dtype=np.float64)
                if up.shape != nom.shape or dn.shape != nom.shape:
                    raise AuditError(f"channel '{ch}', sample '{sname}', shape '{syst}': templates do not "
                                     f"match the nominal binning ({len(nom)} bins)")
                entry = {"channel": ch, "sample": sname, "systematic": syst}
                if not cfg["symmetrise"] and not cfg["prune"] and cfg["smoothing"] == "none":
                    shapes[syst] = {"up": up.copy(), "down": dn.copy()}
                    continue
                if cfg["symmetrise"]:
                    d = symmetrised_half_difference(nom, up, dn)
                    base_up, base_dn = np.clip(nom, 0, None) + d, np.clip(nom, 0, None) - d
                else:
                    d = 0.5 * (up - dn)
                    base_up, base_dn = up.copy(), dn.copy()
                if syst in noise:
                    cov_d = np.asarray(noise[syst], dtype=np.float64) / 4.0
                    entry["noise"] = "events"
                else:
                    sumw2 = h.get("sumw2")
                    if sumw2 is None:
                        raise AuditError(f"channel '{ch}', sample '{sname}': needs 'sumw2' (or 'shape_noise') "
                                         f"to test shape '{syst}' against MC noise")
                    cov_d = np.diag(np.clip(np.asarray(sumw2, dtype=np.float64), 0, None))
                    entry["noise"] = "nominal sumw2 (conservative)"
                    n_conservative += 1
                test = shape_noise_test(nom, d, cov_d)
                entry.update({"chi2": test["chi2"], "ndf": test["ndf"], "pvalue": test["pvalue"]})
                key = f"{ch}/{sname}/{syst}"
                if decisions is not None and key in decisions:
                    pruned = bool(decisions[key])
                else:
                    pruned = cfg["prune"] and test["pvalue"] >= cfg["prune_pvalue"]
                nom_pos = np.clip(nom, 0, None)
                total = nom_pos.sum()
                if pruned:
                    n_pruned += 1
                    if cfg["keep_normalisation"] and total > 0:
                        ru, rd = base_up.sum() / total, base_dn.sum() / total
                        new_up, new_dn = nom_pos * ru, nom_pos * rd
                    else:
                        new_up, new_dn = nom_pos.copy(), nom_pos.copy()
                    entry["action"] = "pruned: normalisation kept" if cfg["keep_normalisation"] else "pruned"
                else:
                    n_kept += 1
                    new_up, new_dn = base_up, base_dn
                    if cfg["smoothing"] == "running_mean":
                        if cfg["symmetrise"]:
                            ds = smooth_relative(nom_pos, d, cfg["smoothing_width"])
                            new_up, new_dn = nom_pos + ds, np.clip(nom_pos - ds, 0, None)
                        else:
                            new_up = nom_pos + smooth_relative(nom_pos, up - nom_pos, cfg["smoothing_width"])
                            new_dn = nom_pos + smooth_relative(nom_pos, dn - nom_pos, cfg["smoothing_width"])
                        new_up = np.clip(new_up, 0, None)
                        new_dn = np.clip(new_dn, 0, None)
                    entry["action"] = "kept" + (" (symmetrised)" if cfg["symmetrise"] else "")
                shapes[syst] = {"up": new_up, "down": new_dn}
                record["shapes"].append(entry)
            if "shapes" in h:
                h2["shapes"] = shapes
            out[ch][sname] = h2
    per_syst: dict = {}
    for e in record["shapes"]:
        c = per_syst.setdefault(e["systematic"], {"kept": 0, "pruned": 0})
        c["pruned" if e["action"].startswith("pruned") else "kept"] += 1
    record["summary"] = {"n_shapes_kept": n_kept, "n_shapes_pruned": n_pruned,
                         "n_tested_with_conservative_variance": n_conservative, "per_systematic": per_syst}
    return out, record


def pruning_decisions(record: dict) -> dict:
    """{"channel/sample/systematic": pruned} from a :func:`treat_templates` record."""
    return {f"{e['channel']}/{e['sample']}/{e['systematic']}": e["action"].startswith("pruned")
            for e in record["shapes"]}


__all__ = ["DEFAULTS", "treatment_settings", "treat_templates", "pruning_decisions", "symmetrised_half_difference",
           "smooth_relative", "shape_noise_test"]
