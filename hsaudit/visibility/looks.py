"""Looks: the binned views of the simulation that a data-visibility test compares with data.

A *look* is one binning of the events of one region (docs/science.md section 4):

* ``feature``: one feature, equal-population bins of the nominal in that region (``n_bins``),
  merged until every bin expects >= ``min_expected`` events (hsaudit.visibility.binning);
* ``pair``: two features, a ``pair_bins`` x ``pair_bins`` grid of nominal quantiles (terciles
  by default), so a change of their correlation, linear or not, moves events between cells;
* ``nn_output``: the network output, in control regions only, binned like a feature. The
  signal-region output is the blinded fit observable and never a look.

A region whose features all have a single bin gets one ``count`` look (its total yield).

The prediction of a look is the analyst's nominal simulation: m_k = sum w over nominal events
of the region in bin k, with MC variance s_k^2 = sum w^2. All looks of all regions share one
axis of "global bins" (each look a contiguous slice), so a toy's counts in every look come from
one matrix product (hsaudit.visibility.pseudodata).

A *shift* (an attack, a +-1 sigma variant, a random control) is the same rows with attacked
features x' and region membership after the attack (``Looks.shift`` -> hsaudit.visibility.shift).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

import numpy as np

from hsaudit.errors import AuditError
from hsaudit.visibility.binning import merge_cells, quantile_edges, raw_cells
from hsaudit.visibility.settings import VisibilitySettings
from hsaudit.visibility.shift import Shift

NN_AXIS = "nn_output"


@dataclass
class Look:
    name: str                        # "feature:tau_pt", "pair:tau_pt*m_vis", "nn_output", "count"
    kind: str                        # "feature" | "pair" | "nn_output" | "count"
    region: str
    axes: tuple                      # feature names (or "nn_output"), 0-2 of them
    edges: tuple                     # internal edges per axis
    cellmap: np.ndarray              # raw cell -> bin
    n_bins: int
    offset: int = 0                  # first global bin

    @property
    def id(self) -> str:
        return f"{self.region}/{self.name}"

    def describe(self) -> dict:
        return {"id": self.id, "name": self.name, "kind": self.kind, "region": self.region,
                "features": list(self.axes), "ndf": int(self.n_bins)}


def _as_float_matrix(name, x, n_features=None):
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise AuditError(f"{name} must be a numeric (N, F) array: {exc}") from None
    if a.ndim != 2:
        raise AuditError(f"{name} must be a 2-d (N, F) array, got shape {a.shape}")
    if n_features is not None and a.shape[1] != n_features:
        raise AuditError(f"{name} has {a.shape[1]} features, expected {n_features} (the feature_names)")
    return a


def _as_vector(name, v, n, dtype=np.float64):
    try:
        a = np.asarray(v, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise AuditError(f"{name} must be a numeric (N,) array: {exc}") from None
    if a.shape != (n,):
        raise AuditError(f"{name} must have shape ({n},) like the feature rows, got {a.shape}")
    return a


def _as_regions(name, in_region, n, expected=None):
    if not isinstance(in_region, dict) or not in_region:
        raise AuditError(f"{name} must be a non-empty dict region -> (N,) bool array")
    if expected is not None and set(in_region) != set(expected):
        raise AuditError(f"{name} has regions {sorted(in_region)}, expected {sorted(expected)}")
    out = {}
    for r, m in in_region.items():
        a = np.asarray(m)
        if a.shape != (n,) or a.dtype != bool:
            raise AuditError(f"{name}['{r}'] must be a ({n},) bool array, got {a.dtype} {a.shape}")
        out[str(r)] = a
    return out


class Looks:
    """All looks of all regions, with the nominal prediction m, s^2 in every global bin."""

    def __init__(self, looks, feature_names, used_features, control_regions, settings,
                 x_used, weights, in_region, nn_output):
        self.looks: list[Look] = looks
        self.feature_names = list(feature_names)
        self.used_features = list(used_features)
        self.control_regions = list(control_regions)
        self.settings = settings
        self.regions = list(in_region)
        self._x = x_used
        self._w = weights
        self._in = in_region
        self._nn = nn_output
        off = 0
        for lk in self.looks:
            lk.offset = off
            off += lk.n_bins
        self.n_bins_total = off
        self.offsets = np.array([lk.offset for lk in self.looks], dtype=np.int64)
        self.ndf = np.array([lk.n_bins for lk in self.looks], dtype=np.int64)
        self.region_looks = {r: [i for i, lk in enumerate(self.looks) if lk.region == r] for r in self.regions}
        self.region_bins = {}
        for r, idx in self.region_looks.items():
            self.region_bins[r] = (self.looks[idx[0]].offset, self.looks[idx[-1]].offset + self.looks[idx[-1]].n_bins)
        self._col = {f: i for i, f in enumerate(self.used_features)}
        self._nominal_bins = {}
        self.m = np.zeros(self.n_bins_total)
        self.s2 = np.zeros(self.n_bins_total)
        for r in self.regions:
            rows, g = self.nominal_bins(r)
            w = np.broadcast_to(self._w[rows], g.shape)
            self.m += np.bincount(g.ravel(), w.ravel(), minlength=self.n_bins_total)
            self.s2 += np.bincount(g.ravel(), (w * w).ravel(), minlength=self.n_bins_total)
        self.var = self.m + self.s2

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return len(self.looks)

    @property
    def n_events(self) -> int:
        return self._w.shape[0]

    @property
    def weights(self) -> np.ndarray:
        return self._w

    @property
    def ids(self) -> list[str]:
        return [lk.id for lk in self.looks]

    def describe(self) -> list[dict]:
        return [lk.describe() for lk in self.looks]

    # ------------------------------------------------------------------ binning of rows
    def global_bins(self, region: str, x_rows: np.ndarray, nn_rows=None) -> np.ndarray:
        """(n_looks_of_region, n_rows) int32 global bin of each row in each look of ``region``
        (rows must be in the region); ``x_rows`` has the used-feature columns."""
        idx = self.region_looks[region]
        n = x_rows.shape[0]
        out = np.empty((len(idx), n), dtype=np.int32)
        axis_cells = {}

        def cells(axis, edges):
            key = (axis, edges.tobytes())
            c = axis_cells.get(key)
            if c is None:
                vals = nn_rows if axis == NN_AXIS else x_rows[:, self._col[axis]]
                c = axis_cells[key] = raw_cells(vals, edges)
            return c

        for j, li in enumerate(idx):
            lk = self.looks[li]
            if not lk.axes:
                cell = np.zeros(n, dtype=np.int64)
            elif len(lk.axes) == 1:
                cell = cells(lk.axes[0], lk.edges[0])
            else:
                cell = cells(lk.axes[0], lk.edges[0]) * (len(lk.edges[1]) + 1) + cells(lk.axes[1], lk.edges[1])
            np.add(lk.cellmap[cell], lk.offset, out=out[j], casting="unsafe")
        return out

    def nominal_bins(self, region: str) -> tuple[np.ndarray, np.ndarray]:
        """Rows of ``region`` and their global bins (n_looks_of_region, n_rows), computed once."""
        got = self._nominal_bins.get(region)
        if got is None:
            rows = np.nonzero(self._in[region])[0]
            g = self.global_bins(region, self._x[rows], None if self._nn is None else self._nn[rows])
            got = self._nominal_bins[region] = (rows, g)
        return got

    # ------------------------------------------------------------------ shifts
    def shift(self, x_shifted, in_region_after: dict, nn_output_shifted=None, eval_weights=None) -> Shift:
        """The change of every look's bin contents when the simulation is replaced by the
        shifted one (same rows, features ``x_shifted`` (N, F) and membership
        ``in_region_after``); see hsaudit.visibility.shift for d_k, v_k and lambda."""
        n = self.n_events
        x_all = _as_float_matrix("x_shifted", x_shifted, len(self.feature_names))
        if x_all.shape[0] != n:
            raise AuditError(f"x_shifted has {x_all.shape[0]} rows, the looks were built on {n}: pass the same rows")
        cols = [self.feature_names.index(f) for f in self.used_features]
        x_new = x_all[:, cols]
        after = _as_regions("in_region_after", in_region_after, n, self.regions)
        e = self._w if eval_weights is None else _as_vector("eval_weights", eval_weights, n)
        if not np.all(np.isfinite(e)):
            raise AuditError("eval_weights contain NaN or inf")
        has_nn = any(NN_AXIS in lk.axes for lk in self.looks)
        nn_new = None
        if has_nn:
            if nn_output_shifted is None:
                raise AuditError("the looks include the control-region NN output: pass nn_output_shifted "
                                 "(the network evaluated on x_shifted)")
            nn_new = _as_vector("nn_output_shifted", nn_output_shifted, n)
        d = np.zeros(self.n_bins_total)
        v = np.zeros(self.n_bins_total)
        for r in self.regions:
            before, aft = self._in[r], after[r]
            union = np.nonzero(before | aft)[0]
            if union.size == 0:
                continue
            ib, ia = before[union], aft[union]
            xa = x_new[union[ia]]
            if not np.all(np.isfinite(xa)):
                raise AuditError(f"x_shifted has NaN or inf in events that are in region '{r}' after the shift")
            nna = None
            if has_nn and r in self.control_regions:
                nna = nn_new[union[ia]]
                if not np.all(np.isfinite(nna)):
                    raise AuditError(f"nn_output_shifted has NaN or inf in events of region '{r}'")
            nl = len(self.region_looks[r])
            gb = np.full((nl, union.size), -1, dtype=np.int32)
            ga = np.full((nl, union.size), -1, dtype=np.int32)
            gb[:, ib] = self.nominal_bins(r)[1]   # union[ib] are the region's rows in order
            ga[:, ia] = self.global_bins(r, xa, nna)
            changed = gb != ga
            ew = np.broadcast_to(e[union], gb.shape)
            go_in = changed & (ga >= 0)
            go_out = changed & (gb >= 0)
            # only rows whose bin changed contribute: a shift of nothing gives exactly zero
            d += np.bincount(ga[go_in], ew[go_in], minlength=self.n_bins_total)
            d -= np.bincount(gb[go_out], ew[go_out], minlength=self.n_bins_total)
            v += np.bincount(ga[go_in], ew[go_in] ** 2, minlength=self.n_bins_total)
            v += np.bincount(gb[go_out], ew[go_out] ** 2, minlength=self.n_bins_total)
        return Shift(self, d, v)

    # ------------------------------------------------------------------ persistence
    def to_arrays(self) -> dict:
        meta = {
            "feature_names": self.feature_names, "used_features": self.used_features,
            "control_regions": self.control_regions, "regions": self.regions,
            "settings": self.settings.to_dict(),
            "looks": [{"name": lk.name, "kind": lk.kind, "region": lk.region, "axes": list(lk.axes),
                       "n_edges": [len(e) for e in lk.edges], "n_cells": len(lk.cellmap), "n_bins": lk.n_bins}
                      for lk in self.looks],
        }
        edges = [e for lk in self.looks for e in lk.edges]
        return {
            "looks_meta": np.array(json.dumps(meta)),
            "looks_edges": np.concatenate(edges) if edges else np.zeros(0),
            "looks_cellmap": np.concatenate([lk.cellmap for lk in self.looks]),
            "looks_x": self._x, "looks_w": self._w,
            "looks_in": np.stack([self._in[r] for r in self.regions]),
            "looks_nn": np.zeros(0) if self._nn is None else self._nn,
            "looks_has_nn": np.array(self._nn is not None),
        }

    @classmethod
    def from_arrays(cls, a) -> "Looks":
        meta = json.loads(str(a["looks_meta"]))
        edges, cm = a["looks_edges"], a["looks_cellmap"]
        looks, pe, pc = [], 0, 0
        for d in meta["looks"]:
            ed = []
            for k in d["n_edges"]:
                ed.append(np.array(edges[pe:pe + k], dtype=np.float64))
                pe += k
            looks.append(Look(d["name"], d["kind"], d["region"], tuple(d["axes"]), tuple(ed),
                              np.array(cm[pc:pc + d["n_cells"]], dtype=np.int64), int(d["n_bins"])))
            pc += d["n_cells"]
        settings = VisibilitySettings.from_config(meta["settings"])
        in_region = {r: np.array(a["looks_in"][i], dtype=bool) for i, r in enumerate(meta["regions"])}
        nn = np.array(a["looks_nn"]) if bool(a["looks_has_nn"]) else None
        return cls(looks, meta["feature_names"], meta["used_features"], meta["control_regions"], settings,
                   np.array(a["looks_x"]), np.array(a["looks_w"]), in_region, nn)

    def save(self, path) -> None:
        with open(path, "wb") as fh:
            np.savez_compressed(fh, **self.to_arrays())

    @classmethod
    def load(cls, path) -> "Looks":
        with np.load(path, allow_pickle=False) as a:
            return cls.from_arrays(a)


def _names_in(what, names, feature_names):
    unknown = [f for f in names if f not in feature_names]
    if unknown:
        raise AuditError(f"checks.{what} names unknown feature(s) {unknown}; known: {list(feature_names)}")


def build_looks(x_nominal, weights, in_region: dict, feature_names, control_regions,
                settings: VisibilitySettings, nn_output=None) -> Looks:
    """All looks of all regions from the nominal simulation.

    ``x_nominal`` (N, F) features in physical units (rows outside a region may hold NaN),
    ``weights`` (N,) normalised to the analysis luminosity, ``in_region`` region -> (N,) bool,
    ``control_regions`` the regions whose NN output is a look (every other region is a signal
    region: its NN output is blinded), ``nn_output`` (N,) the network output or None (then no
    ``nn_output`` looks are made).
    """
    if not isinstance(settings, VisibilitySettings):
        raise AuditError(f"settings must be a VisibilitySettings, got {type(settings).__name__}")
    feature_names = [str(f) for f in feature_names]
    if len(set(feature_names)) != len(feature_names):
        raise AuditError(f"feature_names must be unique, got {feature_names}")
    x = _as_float_matrix("x_nominal", x_nominal, len(feature_names))
    n = x.shape[0]
    w = _as_vector("weights", weights, n)
    if not np.all(np.isfinite(w)):
        raise AuditError("weights contain NaN or inf")
    regions = _as_regions("in_region", in_region, n)
    if isinstance(control_regions, str):
        control_regions = [control_regions]
    control_regions = [str(r) for r in control_regions]
    unknown = [r for r in control_regions if r not in regions]
    if unknown:
        raise AuditError(f"control region(s) {unknown} are not among the regions {sorted(regions)}")
    feats = list(settings.features) if settings.features is not None else list(feature_names)
    _names_in("features", feats, feature_names)
    pair_feats = list(settings.pair_features) if settings.pair_features is not None else feats
    _names_in("pair_features", pair_feats, feature_names)
    used = [f for f in feature_names if f in set(feats) | set(pair_feats)]
    x_used = x[:, [feature_names.index(f) for f in used]]
    nn = None
    if nn_output is not None and "nn_output" in settings.looks and control_regions:
        if NN_AXIS in used:
            raise AuditError(f"a feature is named '{NN_AXIS}', which is reserved for the NN-output look; rename it")
        nn = _as_vector("nn_output", nn_output, n)

    s = settings
    looks: list[Look] = []
    for r, mask in regions.items():
        rows = np.nonzero(mask)[0]
        wr = w[rows]
        total = float(wr.sum())
        if rows.size == 0 or not total > 0:
            raise AuditError(f"region '{r}' is empty (no events or no positive expected yield): "
                             "check the selection, the weights and the luminosity")
        xr = x_used[rows]
        bad = [used[j] for j in range(len(used)) if not np.all(np.isfinite(xr[:, j]))]
        if bad:
            raise AuditError(f"nominal features {bad} have NaN or inf in events of region '{r}'")
        n_fine = int(min(s.n_bins, max(1, np.floor(total / s.min_expected))))

        def binned(values, n_edges_bins):
            edges = quantile_edges(values, wr, n_edges_bins)
            cells = raw_cells(values, edges)
            return edges, cells

        def one_axis_look(name, kind, axis, values):
            edges, cells = binned(values, n_fine)
            k = len(edges) + 1
            cellmap = merge_cells(np.bincount(cells, wr, minlength=k), s.min_expected,
                                  np.bincount(cells, wr * wr, minlength=k), s.min_effective)
            nb = int(cellmap.max()) + 1
            if nb >= 2:
                looks.append(Look(name, kind, r, (axis,), (edges,), cellmap, nb))

        region_start = len(looks)
        if "feature" in s.looks:
            for f in feats:
                one_axis_look(f"feature:{f}", "feature", f, xr[:, used.index(f)])
        if "pair" in s.looks and len(pair_feats) >= 2:
            terc = {}
            for f in pair_feats:
                edges, cells = binned(xr[:, used.index(f)], s.pair_bins)
                if len(edges):
                    terc[f] = (edges, cells)
            for a, b in itertools.combinations([f for f in pair_feats if f in terc], 2):
                (ea, ca), (eb, cb) = terc[a], terc[b]
                cells = ca * (len(eb) + 1) + cb
                n_cells = (len(ea) + 1) * (len(eb) + 1)
                cellmap = merge_cells(np.bincount(cells, wr, minlength=n_cells), s.min_expected,
                                      np.bincount(cells, wr * wr, minlength=n_cells), s.min_effective)
                nb = int(cellmap.max()) + 1
                if nb >= 2:
                    looks.append(Look(f"pair:{a}*{b}", "pair", r, (a, b), (ea, eb), cellmap, nb))
        if nn is not None and r in control_regions:
            if not np.all(np.isfinite(nn[rows])):
                raise AuditError(f"nn_output has NaN or inf in events of control region '{r}'")
            one_axis_look("nn_output", "nn_output", NN_AXIS, nn[rows])
        if len(looks) == region_start:
            looks.append(Look("count", "count", r, (), (), np.zeros(1, dtype=np.int64), 1))
    return Looks(looks, feature_names, used, control_regions, settings, x_used, w, regions, nn)
