"""Figures of the hidden-systematics audit (matplotlib + mplhep, headless).

Every figure function takes plain numpy arrays / dicts, checks them (mistakes raise
``AuditError`` naming the argument), and returns a ``matplotlib.figure.Figure``;
``save_figure`` writes it as PNG and PDF atomically and closes it. Figures are built on
``matplotlib.figure.Figure`` directly (no pyplot state, no GUI backend: PNG is rendered with
Agg, PDF with matplotlib's PDF backend), so the functions work in batch jobs and threads.

Styles: ``style=None`` (default) is an experiment-neutral style (no experiment logo);
``style="CMS"`` / ``style="ATLAS"`` apply mplhep's ``mplhep.style.CMS`` / ``ATLAS`` and add
the experiment's "Simulation" label. The style is entered with a context manager
(``plot_style``) around the construction of one figure, so no rc parameter leaks out.

The figures are those of the audit report, after the papers cited in
docs/science.md:

``feature_comparison``   a feature nominal vs attacked with the standard +-1 sigma band and a
                         ratio panel (the check an analyst would look at);
``nn_output_with_bands`` NN output per region, stacked backgrounds + signal, systematic and
                         MC-statistical bands, optionally the attacked total;
``correlation_change``   C_attacked - C_nominal with the relative Frobenius norm
                         (Bechtle et al. 2026, "Shapes are not enough");
``significance_curves``  eps_S / sqrt(eps_B) vs threshold before/after attacks
                         (Nachman & Shimmin 2019, "AI Safety for High Energy Physics");
``toy_distributions``    pulls and mu_hat of the pseudo-experiments per scenario with
                         Gaussian fits (the CMS Combine bias-study recipe);
``lambda_scan``          performance vs robustness per model variant (Wunsch et al. 2020);
``impact_summary``       standard vs largest hidden impact on mu per systematic.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import matplotlib.ticker
import mplhep
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from scipy import stats

from hsaudit.arrays import finite_array
from hsaudit.errors import AuditError
from hsaudit.files import write_atomically
from hsaudit.histograms import weighted_histogram
from hsaudit.report import LARGER as HIDDEN_LARGER

STYLES = (None, "CMS", "ATLAS")

# Experiment-neutral defaults: readable fonts, inward ticks on all sides, no frame on legends.
NEUTRAL_RC = {
    "font.size": 11,
    "axes.labelsize": 12,
    "axes.titlesize": 12,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "xtick.direction": "in",
    "ytick.direction": "in",
    "xtick.top": True,
    "ytick.right": True,
    "xtick.minor.visible": True,
    "ytick.minor.visible": True,
    "axes.prop_cycle": matplotlib.cycler(
        color=["#3f90da", "#ffa90e", "#bd1f01", "#94a4a2", "#832db6", "#a96b59", "#e76300", "#b9ac70"]
    ),
    "image.cmap": "viridis",
}

NOMINAL_COLOR = "black"
ATTACK_COLOR = "#bd1f01"
BAND_COLOR = "#94a4a2"
SIGNAL_COLOR = "#bd1f01"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")


# --------------------------------------------------------------------------- style


@contextlib.contextmanager
def plot_style(style: str | None = None):
    """Context manager applying the neutral, CMS or ATLAS style; rc params restored on exit."""
    if style not in STYLES:
        raise AuditError(f"unknown plot style {style!r}; use one of None (neutral), 'CMS', 'ATLAS'")
    if style is None:
        ctx = matplotlib.rc_context(NEUTRAL_RC)
    else:
        # style.context saves and restores the full rcParams around the block.
        ctx = matplotlib.style.context(getattr(mplhep.style, style))
    with ctx:
        yield


def _styled(builder):
    """Run a figure builder inside ``plot_style(style)``; ``style`` is a keyword argument."""

    @functools.wraps(builder)
    def wrapper(*args, style: str | None = None, **kwargs):
        with plot_style(style):
            return builder(*args, style=style, **kwargs)

    return wrapper


def _experiment_label(ax, style: str | None, text: str = "", rlabel: str | None = None) -> None:
    # data=False already writes "Simulation" after the experiment name.
    if style == "CMS":
        mplhep.cms.label(text=text, data=False, ax=ax, loc=0, rlabel=rlabel or "")
    elif style == "ATLAS":
        mplhep.atlas.label(text=text, data=False, ax=ax, loc=0, rlabel=rlabel or "")
    elif rlabel:
        ax.set_title(rlabel, loc="right", fontsize="medium")


def _new_figure(figsize, style) -> Figure:
    if style is not None:
        # mplhep styles are designed around a 10 x 10 inch canvas; scale ours up accordingly.
        figsize = (figsize[0] * 1.6, figsize[1] * 1.6)
    return Figure(figsize=figsize, layout="constrained")


# --------------------------------------------------------------------------- input checks


def _array(x, what: str, *, allow_empty: bool = False) -> np.ndarray:
    return finite_array(x, what, ndim=1, allow_empty=allow_empty)


def _weights(w, n: int, what: str) -> np.ndarray:
    if w is None:
        return np.ones(n)
    a = _array(w, what, allow_empty=(n == 0))
    if a.shape != (n,):
        raise AuditError(f"{what} has {a.size} entries but its values have {n}")
    return a


def _sample(x, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(values, weights) from an array, a (values, weights) pair or {"values", "weights"}."""
    if isinstance(x, Mapping):
        if "values" not in x:
            raise AuditError(f"{what} must have a 'values' entry (and optionally 'weights')")
        v = _array(x["values"], f"{what} values")
        return v, _weights(x.get("weights"), v.size, f"{what} weights")
    if isinstance(x, tuple):
        if len(x) != 2:
            raise AuditError(f"{what} must be values or a (values, weights) pair, got a tuple of {len(x)}")
        v = _array(x[0], f"{what} values")
        return v, _weights(x[1], v.size, f"{what} weights")
    v = _array(x, f"{what} values")
    return v, np.ones(v.size)


def _edges(bins, samples: Sequence[np.ndarray], what: str = "bins") -> np.ndarray:
    if np.isscalar(bins):
        if isinstance(bins, bool) or int(bins) != bins or int(bins) < 1:
            raise AuditError(f"{what} must be a positive number of bins or an array of edges, got {bins!r}")
        lo = min(float(s.min()) for s in samples if s.size)
        hi = max(float(s.max()) for s in samples if s.size)
        if hi <= lo:
            hi = lo + 1.0
        return np.linspace(lo, hi, int(bins) + 1)
    e = _array(bins, f"{what} (edges)")
    if e.size < 2 or np.any(np.diff(e) <= 0):
        raise AuditError(f"{what} must be at least two strictly increasing edges")
    return e


def _histogram(values: np.ndarray, weights: np.ndarray, edges: np.ndarray):
    """Weighted counts and sum of squared weights per bin (under/overflow folded into the edges)."""
    return weighted_histogram(values, weights, edges, outside="fold")


def _axis_label(label: str | None, unit: str | None, default: str) -> str:
    text = label or default
    return f"{text} [{unit}]" if unit else text


def _safe_ratio(num, den):
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _step_band(ax, edges, lo, hi, **kwargs):
    """Shade between ``lo`` and ``hi`` drawn as steps over the bins (NaN bins left empty)."""
    ax.fill_between(edges, np.r_[lo, lo[-1]], np.r_[hi, hi[-1]], step="post", **kwargs)


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise AuditError(
            f"figure name {name!r} must be a plain file stem (letters, digits, '_', '-', '.', '+', '=')"
        )
    return name


# --------------------------------------------------------------------------- saving


def save_figure(fig: Figure, directory, name: str, *, dpi: int = 150) -> dict[str, str]:
    """Write ``fig`` as ``directory/name.png`` and ``.pdf`` atomically; close it.

    Each file is first written under a temporary name in the same directory, then renamed,
    so readers never see half-written figures. PDF/PNG metadata carry no timestamps, so the
    same figure gives the same bytes. Returns ``{"png": path, "pdf": path}`` (strings).
    """
    if not isinstance(fig, Figure):
        raise AuditError(f"save_figure needs a matplotlib Figure, got {type(fig).__name__}")
    _check_name(name)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    metadata = {"png": {"Software": None}, "pdf": {"CreationDate": None, "ModDate": None, "Producer": None}}
    try:
        for fmt in ("png", "pdf"):
            final = write_atomically(directory / f"{name}.{fmt}", lambda fh, fmt=fmt: fig.savefig(
                fh, format=fmt, dpi=dpi, metadata=metadata[fmt], facecolor="white"))
            out[fmt] = str(final)
    finally:
        # Figures built here are not registered with pyplot; a pyplot figure has a manager.
        if getattr(fig.canvas, "manager", None) is not None:
            import matplotlib.pyplot as plt

            plt.close(fig)
        fig.clear()
    return out


# --------------------------------------------------------------------------- 1. feature comparison


@_styled
def feature_comparison(
    nominal,
    attacked,
    up,
    down,
    bins=30,
    *,
    nominal_weights=None,
    attacked_weights=None,
    up_weights=None,
    down_weights=None,
    feature: str = "feature",
    label: str | None = None,
    unit: str | None = None,
    region: str = "",
    systematic: str = "systematic",
    attack: str = "attack",
    density: bool = False,
    logy: bool = False,
    style: str | None = None,
) -> Figure:
    """A feature's distribution nominal vs attacked in one region, with ratio panel.

    The standard systematic band is the bin-by-bin envelope of the +-1 sigma (``up`` /
    ``down``) histograms and the nominal one, shaded around the nominal in both panels; the
    nominal's MC statistical uncertainty is hatched. For weight-based systematics pass the
    nominal values as ``up``/``down`` with the shifted weights. ``bins``: a number of uniform
    bins over the range of all samples, or an array of edges; under/overflow are folded into
    the first/last bin. ``density`` normalises every histogram to unit area.
    """
    nv = _array(nominal, "nominal")
    av = _array(attacked, "attacked")
    uv = _array(up, "up")
    dv = _array(down, "down")
    nw = _weights(nominal_weights, nv.size, "nominal_weights")
    aw = _weights(attacked_weights, av.size, "attacked_weights")
    uw = _weights(up_weights, uv.size, "up_weights")
    dw = _weights(down_weights, dv.size, "down_weights")
    edges = _edges(bins, [nv, av, uv, dv])
    hn, hn2 = _histogram(nv, nw, edges)
    ha, ha2 = _histogram(av, aw, edges)
    hu, _ = _histogram(uv, uw, edges)
    hd, _ = _histogram(dv, dw, edges)
    if density:
        for h, h2 in ((hn, hn2), (ha, ha2), (hu, None), (hd, None)):
            area = float(np.sum(h * np.diff(edges)))
            if area > 0:
                h /= area
                if h2 is not None:
                    h2 /= area**2
    band_lo = np.minimum(np.minimum(hu, hd), hn)
    band_hi = np.maximum(np.maximum(hu, hd), hn)

    fig = _new_figure((6.0, 5.6), style)
    ax, rax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    _step_band(ax, edges, band_lo, band_hi, color=BAND_COLOR, alpha=0.45, linewidth=0,
               label=f"{systematic} $\\pm1\\sigma$ band")
    _step_band(ax, edges, hn - np.sqrt(hn2), hn + np.sqrt(hn2), facecolor="none", edgecolor="0.35",
               hatch="////", linewidth=0, label="MC stat. unc.")
    mplhep.histplot(hn, edges, ax=ax, histtype="step", color=NOMINAL_COLOR, label="Nominal", flow=None)
    mplhep.histplot(ha, edges, yerr=np.sqrt(ha2), ax=ax, histtype="errorbar", color=ATTACK_COLOR,
                    label=f"Attacked ({attack})", markersize=4, flow=None)
    ax.set_ylabel("Normalised entries" if density else "Weighted events")
    if logy:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    ax.legend(loc="best")
    _experiment_label(ax, style, rlabel=f"{region}" if region else None)

    # Ratio panel: everything relative to the nominal histogram.
    _step_band(rax, edges, _safe_ratio(band_lo, hn), _safe_ratio(band_hi, hn), color=BAND_COLOR, alpha=0.45,
               linewidth=0)
    rel_stat = _safe_ratio(np.sqrt(hn2), hn)
    _step_band(rax, edges, 1 - rel_stat, 1 + rel_stat, facecolor="none", edgecolor="0.35", hatch="////",
               linewidth=0)
    ratio = _safe_ratio(ha, hn)
    centres = 0.5 * (edges[1:] + edges[:-1])
    rax.errorbar(centres, ratio, yerr=_safe_ratio(np.sqrt(ha2), hn), fmt="o", color=ATTACK_COLOR, markersize=3)
    rax.axhline(1.0, color=NOMINAL_COLOR, linewidth=1)
    finite = np.concatenate([ratio[np.isfinite(ratio)], _safe_ratio(band_hi, hn)[np.isfinite(hn) & (hn > 0)]])
    spread = float(np.max(np.abs(finite - 1))) if finite.size else 0.1
    spread = min(max(1.3 * spread, 0.02), 1.0)
    rax.set_ylim(1 - spread, 1 + spread)
    rax.set_ylabel("Att. / nom.")
    rax.set_xlabel(_axis_label(label, unit, feature))
    rax.set_xlim(edges[0], edges[-1])
    return fig


# --------------------------------------------------------------------------- 2. NN output with bands


def quadrature_band(nominal, shifted) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) edge of the systematic band around ``nominal`` histogram counts.

    Per bin, the positive deviations of all ``shifted`` histograms (every up and every down
    variation) are added in quadrature for the upper edge, the negative ones for the lower.
    """
    nominal = np.asarray(nominal, dtype=np.float64)
    up2 = np.zeros_like(nominal)
    down2 = np.zeros_like(nominal)
    for h in shifted:
        delta = np.asarray(h, dtype=np.float64) - nominal
        up2 += np.where(delta > 0, delta, 0.0) ** 2
        down2 += np.where(delta < 0, delta, 0.0) ** 2
    return nominal - np.sqrt(down2), nominal + np.sqrt(up2)



@_styled
def nn_output_with_bands(
    nominal: Mapping[str, object],
    variations: Mapping[str, Mapping[str, Mapping[str, object]]] | None = None,
    bins=20,
    *,
    signal: str | Sequence[str] = (),
    attacked: Mapping[str, object] | None = None,
    attack: str = "attacked",
    region: str = "",
    stack: bool = True,
    signal_scale: float = 1.0,
    logy: bool = False,
    xlabel: str = "NN output",
    style: str | None = None,
) -> Figure:
    """NN-output histograms of one region with systematic and MC-statistical bands.

    ``nominal``: ``{process: sample}`` where a sample is values, ``(values, weights)`` or
    ``{"values": ..., "weights": ...}``. Processes named in ``signal`` are overlaid as lines
    (scaled by ``signal_scale``); the others are backgrounds, stacked (``stack=True``) or summed.
    ``variations``: ``{systematic: {"up": {process: sample}, "down": {...}}}``; a process missing
    from a variation is taken as unaffected (its nominal). The systematic band around the total
    background adds the per-bin upward and downward deviations of every systematic in
    quadrature, separately; the MC statistical band is sqrt(sum w^2) of the total background.
    ``attacked``: optional ``{process: sample}`` for the attacked background, drawn as a line
    (missing processes: nominal). ``bins``: number of uniform bins on [0, 1] or edges.
    """
    if not isinstance(nominal, Mapping) or not nominal:
        raise AuditError("nominal must be a non-empty mapping {process: sample}")
    signals = (signal,) if isinstance(signal, str) else tuple(signal)
    unknown = [s for s in signals if s not in nominal]
    if unknown:
        raise AuditError(f"signal process(es) {unknown} not in nominal processes {sorted(nominal)}")
    if np.isscalar(bins):
        bins = _edges(bins, [np.array([0.0, 1.0])])
    edges = _edges(bins, [])
    nom = {p: _histogram(*_sample(s, f"nominal[{p!r}]"), edges) for p, s in nominal.items()}
    backgrounds = [p for p in nominal if p not in signals]
    if not backgrounds:
        raise AuditError("nominal has no background process (every process is listed in signal)")
    total = np.sum([nom[p][0] for p in backgrounds], axis=0)
    total_w2 = np.sum([nom[p][1] for p in backgrounds], axis=0)

    shifted_totals = []
    syst_names = []
    for syst, var in (variations or {}).items():
        if not isinstance(var, Mapping) or set(var) != {"up", "down"}:
            raise AuditError(f"variations[{syst!r}] must be a mapping with exactly 'up' and 'down'")
        syst_names.append(syst)
        for direction in ("up", "down"):
            procs = var[direction]
            if not isinstance(procs, Mapping):
                raise AuditError(f"variations[{syst!r}][{direction!r}] must be a mapping {{process: sample}}")
            extra = sorted(set(procs) - set(nominal))
            if extra:
                raise AuditError(f"variations[{syst!r}][{direction!r}] has unknown process(es) {extra}")
            shifted = np.zeros_like(total)
            for p in backgrounds:
                if p in procs:
                    shifted += _histogram(*_sample(procs[p], f"variations[{syst!r}][{direction!r}][{p!r}]"), edges)[0]
                else:
                    shifted += nom[p][0]
            shifted_totals.append(shifted)
    stat = np.sqrt(total_w2)
    syst_lo, syst_hi = quadrature_band(total, shifted_totals)

    fig = _new_figure((6.0, 5.6), style)
    ax, rax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    if stack:
        mplhep.histplot([nom[p][0] for p in backgrounds], edges, ax=ax, stack=True, histtype="fill",
                        label=backgrounds, alpha=0.8, flow=None)
    else:
        mplhep.histplot(total, edges, ax=ax, histtype="step", color=NOMINAL_COLOR, label="Background", flow=None)
    if syst_names:
        _step_band(ax, edges, syst_lo, syst_hi, color=BAND_COLOR, alpha=0.5, linewidth=0,
                   label="Syst. (" + ", ".join(syst_names) + ")")
    _step_band(ax, edges, total - stat, total + stat, facecolor="none", edgecolor="0.25", hatch="////",
               linewidth=0, label="MC stat. unc.")
    for i, s in enumerate(signals):
        lab = s if signal_scale == 1 else f"{s} $\\times${signal_scale:g}"
        mplhep.histplot(nom[s][0] * signal_scale, edges, ax=ax, histtype="step", linewidth=2,
                        color=SIGNAL_COLOR if i == 0 else None, label=lab, flow=None)
    att_total = None
    if attacked is not None:
        if not isinstance(attacked, Mapping):
            raise AuditError("attacked must be a mapping {process: sample}")
        extra = sorted(set(attacked) - set(nominal))
        if extra:
            raise AuditError(f"attacked has unknown process(es) {extra}")
        att_total = np.zeros_like(total)
        for p in backgrounds:
            att_total += (_histogram(*_sample(attacked[p], f"attacked[{p!r}]"), edges)[0] if p in attacked
                          else nom[p][0])
        mplhep.histplot(att_total, edges, ax=ax, histtype="step", color="black", linestyle="--",
                        label=f"Background, {attack}", flow=None)
    ax.set_ylabel("Weighted events")
    if logy:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0, top=1.35 * float(max(np.max(total + stat), np.max(syst_hi), 1e-12)))
    ax.legend(loc="upper center", ncols=2)
    _experiment_label(ax, style, rlabel=region or None)

    if syst_names:
        _step_band(rax, edges, _safe_ratio(syst_lo, total), _safe_ratio(syst_hi, total), color=BAND_COLOR,
                   alpha=0.5, linewidth=0)
    rel = _safe_ratio(stat, total)
    _step_band(rax, edges, 1 - rel, 1 + rel, facecolor="none", edgecolor="0.25", hatch="////", linewidth=0)
    rax.axhline(1.0, color=NOMINAL_COLOR, linewidth=1)
    if att_total is not None:
        rax.stairs(_safe_ratio(att_total, total), edges, color="black", linestyle="--")
    rax.set_ylabel("Rel. to nom.")
    rax.set_xlabel(xlabel)
    rax.set_xlim(edges[0], edges[-1])
    return fig


# --------------------------------------------------------------------------- 3. correlation change


def relative_frobenius_change(corr_nominal, corr_attacked) -> float:
    """||C_att - C_nom||_F / ||C_nom||_F (Bechtle et al. 2026)."""
    cn = np.asarray(corr_nominal, dtype=np.float64)
    ca = np.asarray(corr_attacked, dtype=np.float64)
    return float(np.linalg.norm(ca - cn) / np.linalg.norm(cn))


@_styled
def correlation_change(
    corr_nominal,
    corr_attacked,
    names: Sequence[str],
    *,
    title: str = "",
    threshold: float | None = None,
    annotate: bool | None = None,
    style: str | None = None,
) -> Figure:
    """Heatmap of C_attacked - C_nominal, annotated with the relative Frobenius norm.

    ``threshold`` (e.g. the check's 0.006) is printed next to the norm when given. Cell values
    are written in the cells when ``annotate`` (default: up to 12 features).
    """
    names = list(names)
    n = len(names)
    if n == 0:
        raise AuditError("names is empty; give one name per feature of the correlation matrices")
    mats = []
    for what, c in (("corr_nominal", corr_nominal), ("corr_attacked", corr_attacked)):
        try:
            m = np.asarray(c, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise AuditError(f"{what} must be a square matrix of numbers ({exc})") from None
        if m.shape != (n, n):
            raise AuditError(f"{what} has shape {m.shape} but names has {n} entries; expected ({n}, {n})")
        if not np.all(np.isfinite(m)):
            raise AuditError(f"{what} contains non-finite values (NaN/inf); a constant feature has no correlation")
        mats.append(m)
    cn, ca = mats
    if np.linalg.norm(cn) == 0:
        raise AuditError("corr_nominal is all zeros; the relative change is undefined")
    delta = ca - cn
    rel = relative_frobenius_change(cn, ca)
    vmax = float(np.max(np.abs(delta))) or 1e-6

    size = max(4.5, 0.45 * n + 2.5)
    fig = _new_figure((size + 1.0, size), style)
    ax = fig.subplots()
    im = ax.imshow(delta, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    cbar = fig.colorbar(im, ax=ax, shrink=0.85)
    cbar.set_label(r"$C_{\mathrm{attacked}} - C_{\mathrm{nominal}}$")
    ax.set_xticks(range(n), names, rotation=60, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), names)
    ax.minorticks_off()
    ax.tick_params(top=False, right=False)
    if annotate is None:
        annotate = n <= 12
    if annotate:
        for i in range(n):
            for j in range(n):
                v = delta[i, j]
                ax.text(j, i, f"{v:+.3f}", ha="center", va="center", fontsize="x-small",
                        color="white" if abs(v) > 0.6 * vmax else "black")
    note = rf"$\|\Delta C\|_F / \|C\|_F = {rel:.4f}$"
    if threshold is not None:
        note += f" (threshold {threshold:g}: {'passed' if rel < threshold else 'FAILED'})"
    # Figure-level title: above the experiment label of the styled variants.
    fig.suptitle(f"{title}\n{note}" if title else note, fontsize="medium")
    _experiment_label(ax, style) if style else None
    return fig


# --------------------------------------------------------------------------- 4. significance curves


@_styled
def significance_curves(
    thresholds,
    rel_sig_before,
    rel_sig_after,
    *,
    optimal_threshold: float | None = None,
    before_label: str = "Nominal",
    after_label: str = "Attacked",
    title: str = "",
    style: str | None = None,
) -> Figure:
    """Relative discovery significance eps_S / sqrt(eps_B) vs the NN-output threshold.

    ``rel_sig_after`` is one curve or ``{attack: curve}`` for several attacks. The nominal
    optimal threshold (default: argmax of ``rel_sig_before``) is marked, and the relative loss
    of each attacked curve at that threshold is given in the legend (Nachman & Shimmin report
    the significance at the expected optimal cut). The line at 1 is where the classifier stops
    helping.
    """
    t = _array(thresholds, "thresholds")
    before = _array(rel_sig_before, "rel_sig_before")
    if before.shape != t.shape:
        raise AuditError(f"rel_sig_before has {before.size} points but thresholds has {t.size}")
    after_curves = rel_sig_after if isinstance(rel_sig_after, Mapping) else {after_label: rel_sig_after}
    if not after_curves:
        raise AuditError("rel_sig_after is empty; give at least one attacked curve")
    curves = {}
    for name, c in after_curves.items():
        a = _array(c, f"rel_sig_after[{name!r}]")
        if a.shape != t.shape:
            raise AuditError(f"rel_sig_after[{name!r}] has {a.size} points but thresholds has {t.size}")
        curves[name] = a
    if optimal_threshold is None:
        i_opt = int(np.argmax(before))
        optimal_threshold = float(t[i_opt])
    else:
        if not np.isfinite(optimal_threshold):
            raise AuditError("optimal_threshold must be finite")
        i_opt = int(np.argmin(np.abs(t - optimal_threshold)))

    fig = _new_figure((6.0, 4.5), style)
    ax = fig.subplots()
    ax.plot(t, before, color=NOMINAL_COLOR, linewidth=2, label=f"{before_label} (peak {before[i_opt]:.2f})")
    for k, (name, a) in enumerate(curves.items()):
        loss = 1 - a[i_opt] / before[i_opt] if before[i_opt] > 0 else float("nan")
        ax.plot(t, a, linewidth=1.8, linestyle=["-", "--", "-.", ":"][k % 4],
                label=f"{name} ({-100 * loss:+.0f}% at optimum)")
    ax.axvline(optimal_threshold, color="0.4", linestyle=":", linewidth=1.2,
               label=f"Nominal optimal threshold {optimal_threshold:.3g}")
    ax.axhline(1.0, color="0.6", linewidth=0.8)
    ax.set_xlabel("NN output threshold")
    # Unicode root: the mathtext fonts of the experiment styles have no \sqrt glyph.
    ax.set_ylabel("$\\epsilon_S$ / \u221a$\\epsilon_B$")
    ax.set_xlim(float(t.min()), float(t.max()))
    ax.set_ylim(bottom=0)
    ax.legend(loc="best")
    if title:
        fig.suptitle(title, fontsize="medium")
    _experiment_label(ax, style) if style else None
    return fig


# --------------------------------------------------------------------------- 5. toys


@_styled
def toy_distributions(
    pulls: Mapping[str, object],
    mu_hat: Mapping[str, object],
    *,
    mu_true: float | Mapping[str, float] = 1.0,
    bins: int = 25,
    title: str = "",
    style: str | None = None,
) -> Figure:
    """Pull and mu_hat distributions of the toys per scenario, each with a Gaussian fit.

    ``pulls`` / ``mu_hat``: ``{scenario: array}`` (e.g. nominal, up, down, attacks), the same
    scenarios in both. The fitted mean and width (with their errors) are in the legend; the
    pull panel shows N(0, 1) for reference and the mu_hat panel marks ``mu_true``. Drop failed
    fits before calling: non-finite toys are an error here.
    """
    if not isinstance(pulls, Mapping) or not pulls:
        raise AuditError("pulls must be a non-empty mapping {scenario: array of pulls}")
    if not isinstance(mu_hat, Mapping) or set(mu_hat) != set(pulls):
        raise AuditError(
            f"mu_hat must have the same scenarios as pulls: pulls {sorted(pulls)}, "
            f"mu_hat {sorted(mu_hat) if isinstance(mu_hat, Mapping) else type(mu_hat).__name__}"
        )
    data = {}
    for s in pulls:
        p = _array(pulls[s], f"pulls[{s!r}]")
        m = _array(mu_hat[s], f"mu_hat[{s!r}]")
        if p.size < 2 or m.size < 2:
            raise AuditError(f"scenario {s!r} has fewer than 2 toys; a Gaussian fit needs more")
        data[s] = (p, m)
    if isinstance(mu_true, Mapping):
        missing = sorted(set(pulls) - set(mu_true))
        if missing:
            raise AuditError(f"mu_true has no value for scenario(s) {missing}")
        truths = {s: float(mu_true[s]) for s in pulls}
    else:
        truths = {s: float(mu_true) for s in pulls}

    fig = _new_figure((10.0, 4.6), style)
    axes = fig.subplots(1, 2)
    all_p = np.concatenate([d[0] for d in data.values()])
    all_m = np.concatenate([d[1] for d in data.values()])
    for ax, arr, k, xlabel in ((axes[0], all_p, 0, r"Pull $(\hat\mu - \mu_{\mathrm{true}}) / \sigma_{\hat\mu}$"),
                                (axes[1], all_m, 1, r"$\hat\mu$")):
        lo, hi = float(arr.min()), float(arr.max())
        if k == 0:
            lo, hi = min(lo, -4.0), max(hi, 4.0)
        if hi <= lo:
            hi = lo + 1.0
        edges = np.linspace(lo, hi, int(bins) + 1)
        grid = np.linspace(lo, hi, 300)
        width_bin = edges[1] - edges[0]
        for i, (s, d) in enumerate(data.items()):
            x = d[k]
            color = f"C{i % 8}"
            h, _ = weighted_histogram(x, None, edges, outside="drop", sums="cumulative")
            # the pull panel quotes the fit of the summary (same function, same window);
            # mu_hat is fitted the same way over the panel's range
            from hsaudit.stats.toys import gaussian_fit

            g = gaussian_fit(x) if k == 0 else gaussian_fit(x, lo=lo, hi=hi)
            mean, emean, width, ewidth = g["mean"], g["mean_unc"], g["width"], g["width_unc"]
            mplhep.histplot(h, edges, ax=ax, histtype="step", color=color, flow=None,
                            label=f"{s}: $\\mu$={mean:.2f}$\\pm${emean:.2f}, $\\sigma$={width:.2f}$\\pm${ewidth:.2f}")
            if width > 0:
                ax.plot(grid, x.size * width_bin * stats.norm.pdf(grid, mean, width), color=color,
                        linestyle="--", linewidth=1)
        if k == 0:
            n_ref = max(d[0].size for d in data.values())
            ax.plot(grid, n_ref * width_bin * stats.norm.pdf(grid), color="0.5", linestyle=":", linewidth=1.2,
                    label="N(0, 1)")
        else:
            for t in sorted(set(truths.values())):
                ax.axvline(t, color="0.4", linestyle=":", linewidth=1.2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("Toys")
        ax.set_ylim(bottom=0, top=ax.get_ylim()[1] * 1.45)
        ax.legend(loc="upper left", fontsize="x-small")
        _experiment_label(ax, style) if style else None
    if title:
        fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------- 6. lambda scan


def _optional_impacts(x, what: str, n: int) -> np.ndarray:
    """Array of impacts where None / NaN mean 'no hidden attack found'."""
    if len(x) != n:
        raise AuditError(f"{what} has {len(x)} entries but lambdas has {n}")
    out = np.array([np.nan if v is None else v for v in x], dtype=np.float64)
    if np.any(np.isinf(out)):
        raise AuditError(f"{what} contains inf")
    if np.any(out[np.isfinite(out)] < 0):
        raise AuditError(f"{what} must be >= 0 (an absolute impact on mu)")
    return out


def _symlog_x(ax, linthresh: float) -> None:
    """Symmetric-log x axis (lambda = 0 visible) without the default flood of minor ticks."""
    ax.set_xscale("symlog", linthresh=linthresh)
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())


@_styled
def lambda_scan(
    lambdas,
    auc,
    expected_significance,
    hidden_impact,
    standard_impact,
    *,
    labels: Sequence[str] | None = None,
    style: str | None = None,
) -> Figure:
    """Performance vs robustness per model variant (the lambda scan of Wunsch et al. 2020).

    Left: AUC and expected significance vs the penalty strength lambda (symlog axis, so
    lambda = 0 is shown). Middle: standard and largest hidden impact on mu vs lambda.
    Right: expected significance vs largest hidden impact, one labelled point per model.
    ``hidden_impact`` entries may be None / NaN for "no hidden attack found" (drawn as open
    markers at 0).
    """
    lam = _array(lambdas, "lambdas")
    n = lam.size
    if np.any(lam < 0):
        raise AuditError("lambdas must be >= 0")
    a = _array(auc, "auc")
    z = _array(expected_significance, "expected_significance")
    std = _array(standard_impact, "standard_impact")
    for what, arr in (("auc", a), ("expected_significance", z), ("standard_impact", std)):
        if arr.size != n:
            raise AuditError(f"{what} has {arr.size} entries but lambdas has {n}")
    hid = _optional_impacts(list(hidden_impact), "hidden_impact", n)
    if labels is None:
        labels = [f"$\\lambda$={v:g}" for v in lam]
    elif len(labels) != n:
        raise AuditError(f"labels has {len(labels)} entries but lambdas has {n}")
    order = np.argsort(lam, kind="stable")
    found = np.isfinite(hid)

    fig = _new_figure((13.0, 4.4), style)
    ax1, ax2, ax3 = fig.subplots(1, 3)
    linthresh = float(np.min(lam[lam > 0])) if np.any(lam > 0) else 1.0
    ax1.plot(lam[order], a[order], "o-", color="C0", label="AUC")
    ax1.set_ylabel("AUC", color="C0")
    ax1b = ax1.twinx()
    ax1b.plot(lam[order], z[order], "s--", color="C1", label="Expected significance")
    ax1b.set_ylabel(r"Expected significance $Z$", color="C1")
    _symlog_x(ax1, linthresh)
    ax1.set_xlabel(r"Penalty strength $\lambda$")
    # Panel titles in the neutral style only: the experiment label takes that place otherwise.
    titles = style is None
    if titles:
        ax1.set_title("Performance", fontsize="medium")

    ax2.plot(lam[order], std[order], "o-", color=NOMINAL_COLOR, label=r"Standard $\pm1\sigma$")
    hid0 = np.where(found, hid, 0.0)
    of = order[found[order]]
    ax2.plot(lam[of], hid[of], "D-", color=ATTACK_COLOR, label="Largest hidden")
    if np.any(~found):
        ax2.plot(lam[~found], np.zeros(int((~found).sum())), "D", markerfacecolor="none", color=ATTACK_COLOR,
                 label="No hidden attack found", clip_on=False, zorder=5)
    _symlog_x(ax2, linthresh)
    ax2.set_xlabel(r"Penalty strength $\lambda$")
    ax2.set_ylabel(r"Impact on $\mu$")
    ax2.set_ylim(bottom=0)
    ax2.legend(loc="best")
    if titles:
        ax2.set_title("Robustness", fontsize="medium")

    ax3.scatter(hid0[found], z[found], marker="D", color=ATTACK_COLOR, label="Largest hidden impact")
    if np.any(~found):
        ax3.scatter(hid0[~found], z[~found], marker="D", facecolors="none", edgecolors=ATTACK_COLOR,
                    label="No hidden attack found", clip_on=False, zorder=5)
    ax3.scatter(std, z, marker="o", color=NOMINAL_COLOR, label="Standard impact")
    for i in range(n):
        # A thin line joins the standard and the hidden impact of the same model.
        ax3.plot([std[i], hid0[i]], [z[i], z[i]], color="0.6", linewidth=0.8, zorder=0)
        ax3.annotate(labels[i], (max(hid0[i], std[i]), z[i]), textcoords="offset points", xytext=(5, 4),
                     fontsize="x-small")
    ax3.set_xlabel(r"Impact on $\mu$")
    ax3.set_ylabel(r"Expected significance $Z$")
    ax3.set_xlim(left=0)
    ax3.legend(loc="best")
    if titles:
        ax3.set_title("Performance vs robustness", fontsize="medium")
    ax3.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=5))
    if style:
        _experiment_label(ax1, style)
    return fig


# --------------------------------------------------------------------------- 7. impact summary


@_styled
def impact_summary(
    systematics: Sequence[str],
    standard_impact,
    hidden_impact,
    verdicts: Sequence[str],
    *,
    attacks: Sequence[str | None] | None = None,
    standard_unc=None,
    hidden_unc=None,
    title: str = "",
    style: str | None = None,
) -> Figure:
    """Standard vs largest hidden impact on mu per systematic (horizontal bars), with their
    uncertainties as error bars when ``standard_unc`` / ``hidden_unc`` are given.

    ``hidden_impact`` entries may be None / NaN ("no hidden attack found", written on the
    row). Systematics whose verdict is "larger than quoted" get a red,
    hatched hidden bar and a "!" flag; ``attacks`` (the responsible attack per row) are
    written at the end of the hidden bars.
    """
    names = list(systematics)
    n = len(names)
    if n == 0:
        raise AuditError("systematics is empty; nothing to summarise")
    std = _array(standard_impact, "standard_impact")
    if std.size != n:
        raise AuditError(f"standard_impact has {std.size} entries but systematics has {n}")
    if np.any(std < 0):
        raise AuditError("standard_impact must be >= 0 (an absolute impact on mu)")
    hid = _optional_impacts(list(hidden_impact), "hidden_impact", n)
    verdicts = list(verdicts)
    if len(verdicts) != n:
        raise AuditError(f"verdicts has {len(verdicts)} entries but systematics has {n}")
    if attacks is not None and len(attacks) != n:
        raise AuditError(f"attacks has {len(attacks)} entries but systematics has {n}")
    flagged = np.array([v == HIDDEN_LARGER for v in verdicts])

    fig = _new_figure((7.0, 1.2 + 0.55 * n), style)
    ax = fig.subplots()
    y = np.arange(n)[::-1]
    h = 0.38
    std_err = None if standard_unc is None else _array(standard_unc, "standard_unc")
    ax.barh(y + h / 2, std, height=h, color=BAND_COLOR, label=r"Quoted impact", xerr=std_err,
            error_kw={"ecolor": "0.25", "capsize": 2, "lw": 0.8})
    found = np.isfinite(hid)
    hid0 = np.where(found, hid, 0.0)
    colors = np.where(flagged, ATTACK_COLOR, "#3f90da")
    hid_err = None
    if hidden_unc is not None:
        hid_err = np.nan_to_num(_optional_impacts(list(hidden_unc), "hidden_unc", n))[found]
    ax.barh(y[found] - h / 2, hid0[found], height=h, color=list(colors[found]), xerr=hid_err,
            error_kw={"ecolor": "0.25", "capsize": 2, "lw": 0.8})
    for i in np.where(found & flagged)[0]:
        ax.barh(y[i] - h / 2, hid0[i], height=h, color="none", edgecolor="white", hatch="//", linewidth=0)
    xmax = float(max(np.max(std + (0 if std_err is None else std_err)),
                     np.max(hid0[found] + (0 if hid_err is None else hid_err)) if found.any() else 0.0, 1e-12))
    for i in range(n):
        if not found[i]:
            ax.text(0.01 * xmax, y[i] - h / 2, "no hidden attack found", va="center", fontsize="x-small",
                    color="0.35")
        elif attacks is not None and attacks[i]:
            err = 0.0 if hid_err is None else float(hid_err[np.flatnonzero(found).tolist().index(i)])
            ax.text(hid0[i] + err + 0.01 * xmax, y[i] - h / 2, f"{attacks[i]} ({verdicts[i]})", va="center",
                    fontsize="x-small")
        if flagged[i]:
            ax.text(1.02, y[i], "!", transform=ax.get_yaxis_transform(), color=ATTACK_COLOR,
                    fontweight="bold", va="center")
    ax.set_yticks(y, names)
    ax.tick_params(axis="y", which="minor", left=False, right=False)
    ax.set_xlim(0, 1.6 * xmax)
    ax.set_ylim(-0.8, n + 0.4)
    ax.set_xlabel(r"Impact on $\mu$ ($|\Delta\hat\mu|$)")
    handles, labs = ax.get_legend_handles_labels()
    if (found & ~flagged).any():
        handles.append(Patch(facecolor="#3f90da"))
        labs.append("Largest hidden impact")
    if flagged.any():
        handles.append(Patch(facecolor=ATTACK_COLOR, hatch="//", edgecolor="white"))
        labs.append("Largest hidden impact, larger than quoted")
    ax.legend(handles, labs, loc="upper right", fontsize="small", ncol=len(handles))
    if title:
        fig.suptitle(title, fontsize="medium")
    _experiment_label(ax, style) if style else None
    return fig


@_styled
def figure_nuisance_field(field: Mapping, *, title: str = "", style: str | None = None) -> Figure:
    """A fitted smooth nuisance field theta(x) (``hsaudit.attacks.nuisance_field``): one
    panel per input, theta along that input with the other inputs at their median, the
    bound +-k dashed and the standard shifts theta = +-1 dotted. ``field`` is the attack's
    ``extra["field"]``."""
    from hsaudit.attacks.nuisance_field import NuisanceField

    if not isinstance(field, Mapping) or not field.get("inputs"):
        raise AuditError("figure_nuisance_field needs the field description of a nuisance_field attack "
                         "(its extra['field']) with at least one input")
    fld = NuisanceField.from_dict(dict(field))
    n = len(fld.inputs)
    fig = _new_figure((3.6 * n, 3.2), style)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for i, (ax, name) in enumerate(zip(axes, fld.inputs)):
        g, th = fld.profile(i)
        if fld.discrete[i]:
            ax.plot(g, th, "o-", color="#3f90da", drawstyle="default")
        else:
            ax.plot(g, th, "-", color="#3f90da")
            kg, kth = fld.profile(i, fld.knots[i].numpy())
            ax.plot(kg, kth, "o", color="#3f90da", markersize=3)
        for v, ls in ((fld.k, "--"), (-fld.k, "--"), (1.0, ":"), (-1.0, ":")):
            ax.axhline(v, color="0.5", linestyle=ls, linewidth=0.8)
        ax.axhline(0.0, color="0.8", linewidth=0.6)
        ax.set_xlabel(name)
        ax.set_ylim(-1.15 * max(fld.k, 1.0), 1.15 * max(fld.k, 1.0))
        if i == 0:
            ax.set_ylabel(r"$\theta$ (others at median)")
    if title:
        fig.suptitle(title, fontsize="medium")
    _experiment_label(axes[0], style) if style else None
    return fig
