"""Attack properties in the style of advertorch / cleverhans / ART tests, on a small trained
model: zero budget is the identity, the envelope is never left, batch == one by one, inputs
are not modified, bad settings fail clearly, gradient attacks beat the random control."""

import numpy as np
import pytest
import torch

from hsaudit.errors import AuditError
from hsaudit.attacks import Envelope, make_attack, attack_names, model_probabilities
from hsaudit.attacks.toy import make_toy_events, train_toy_model

PER_EVENT = ["random", "fgsm", "pgd", "nuisance_pgd"]
FAST_SETTINGS = {
    "random": {},
    "fgsm": {"eps": 0.005, "iterations": 10},
    "pgd": {"steps": 20, "random_start": True},
    "nuisance_pgd": {"steps": 20},
    "nuisance_field": {"inputs": ["tau_pt", "tau_eta"], "steps": 20},
    "adversarial_network": {"hidden": [16, 16], "epochs": 3, "learning_rate": 0.01},
    "conservattack": {"iterations": 3},
}
ZERO_SETTINGS = {"fgsm": {"eps": 0.0}, "nuisance_pgd": {"k": 0.0}, "nuisance_field": {"k": 0.0}, "random": {"fraction": 0.0},
                 "pgd": {"steps": 0, "random_start": False}, "adversarial_network": {"epochs": 0}, "conservattack": {"iterations": 0}}


@pytest.fixture(scope="module")
def toy():
    torch.set_num_threads(1)
    d = make_toy_events(3000, seed=3)
    model = train_toy_model(d["x"], d["labels"], seed=0, epochs=100)
    # the jet count may move by one in this envelope, so integer handling is exercised
    rng = np.random.default_rng(5)
    up, down = d["up"].copy(), d["down"].copy()
    bump = rng.random(len(up)) < 0.3
    up[:, 4] += bump
    down[:, 4] -= bump & (d["x"][:, 4] > 0)
    env = Envelope.from_variants(d["x"], up, down, 1.0, d["integer_features"], d["feature_names"], "tes_jets")
    env_tes = Envelope.from_variants(d["x"], d["up"], d["down"], 1.0, d["integer_features"], d["feature_names"], "tes")
    return {**d, "model": model, "env": env, "env_tes": env_tes}


def _run(toy, name, objective="shift_output", x=None, env=None, seed=7, **extra):
    settings = {**FAST_SETTINGS[name], **extra}
    x = torch.as_tensor(toy["x"]) if x is None else x
    return make_attack(name, **settings).attack(toy["model"], x, env or toy["env"], objective,
                                                labels=toy["labels"][: len(x)], weights=toy["weights"][: len(x)],
                                                seed=seed)


@pytest.mark.parametrize("name", sorted(FAST_SETTINGS))
def test_zero_budget_returns_input_exactly(toy, name):
    x = torch.as_tensor(toy["x"])
    r = _run(toy, name, **ZERO_SETTINGS[name])
    assert torch.equal(r.x_adv, x)
    # and a zero-size envelope, whatever the settings
    env0 = toy["env"].scaled(0.0)
    r0 = _run(toy, name, env=env0)
    assert torch.equal(r0.x_adv, x)


@pytest.mark.parametrize("name", sorted(FAST_SETTINGS))
@pytest.mark.parametrize("objective", ["shift_output", "signal_as_background", "background_as_signal"])
def test_stays_in_envelope_and_integers_stay_integers(toy, name, objective):
    x = torch.as_tensor(toy["x"])
    x_before = x.clone()
    r = _run(toy, name, objective, x=x)
    env = toy["env"]
    inside = env.contains(r.x_adv)  # every event, every feature (integers must be integer)
    assert bool(inside.all()), f"{int((~inside).sum())} entries left the envelope"
    assert torch.equal(r.x_adv[:, 4], torch.round(r.x_adv[:, 4]))
    assert torch.equal(x, x_before), "the input tensor was modified"
    # events the attack may not move are returned exactly
    assert torch.equal(r.x_adv[~r.attacked], x[~r.attacked])
    # untouched features stay fixed
    for j in (1, 5):  # tau_eta, delta_phi: no systematic moves them
        assert torch.equal(r.x_adv[:, j], x[:, j])
    assert r.x_adv.dtype == torch.float32 and r.x_adv.shape == x.shape


@pytest.mark.parametrize("name", PER_EVENT)
def test_batch_equals_one_by_one(toy, name):
    n = 12
    x = torch.as_tensor(toy["x"][:n])
    env = toy["env"].subset(torch.arange(n))
    full = make_attack(name, **FAST_SETTINGS[name]).attack(toy["model"], x, env, "shift_output", seed=11)
    for i in range(n):
        single = make_attack(name, **FAST_SETTINGS[name]).attack(
            toy["model"], x[i:i + 1], env.subset([i]), "shift_output", seed=11)
        torch.testing.assert_close(single.x_adv[0], full.x_adv[i], rtol=1e-6, atol=1e-5)
    # and chunking inside one call does not matter either
    chunked = make_attack(name, **FAST_SETTINGS[name], batch_size=5).attack(toy["model"], x, env, "shift_output", seed=11)
    torch.testing.assert_close(chunked.x_adv, full.x_adv, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", sorted(FAST_SETTINGS))
def test_deterministic_per_seed(toy, name):
    a = _run(toy, name, seed=3)
    b = _run(toy, name, seed=3)
    assert torch.equal(a.x_adv, b.x_adv)


def test_random_attack_depends_on_seed(toy):
    a = _run(toy, "random", seed=1)
    b = _run(toy, "random", seed=2)
    assert not torch.equal(a.x_adv, b.x_adv)


def test_gradient_attacks_beat_random_control(toy):
    """Mean logit shift of the attacked events, in the attack direction, for each objective,
    in the tau-energy-scale envelope."""
    x = torch.as_tensor(toy["x"])
    model = toy["model"]
    with torch.no_grad():
        z0 = model.logits(x)
    gains = {}
    for objective, sign in (("signal_as_background", -1), ("background_as_signal", 1), ("shift_output", 1)):
        for name in ("random", "fgsm", "pgd", "nuisance_pgd", "conservattack", "adversarial_network"):
            settings = dict(FAST_SETTINGS[name])
            if name == "adversarial_network":
                settings["epochs"] = 8
            if name == "conservattack":
                settings["iterations"] = 10  # the public default
            r = make_attack(name, **settings).attack(model, x, toy["env_tes"], objective, labels=toy["labels"],
                                                     weights=toy["weights"], seed=1)
            with torch.no_grad():
                dz = sign * (model.logits(r.x_adv) - z0)
            gains[(objective, name)] = float(dz[r.attacked].mean())
    for objective in ("signal_as_background", "background_as_signal", "shift_output"):
        ref = abs(gains[(objective, "random")])
        for name in ("fgsm", "pgd", "nuisance_pgd", "conservattack", "adversarial_network"):
            g = gains[(objective, name)]
            assert g > 3 * ref + 0.005, f"{name} ({objective}): gain {g:.4f} vs random {ref:.4f}; all: {gains}"
        # PGD with the full box is at least as strong as the envelope-bounded FGSM here
        assert gains[(objective, "pgd")] >= gains[(objective, "fgsm")] - 1e-6
    print(gains)


def test_nuisance_pgd_at_least_standard_shift(toy):
    x = torch.as_tensor(toy["x"])
    env, model = toy["env"], toy["model"]
    r = make_attack("nuisance_pgd", steps=10).attack(model, x, env, "shift_output", seed=0)
    with torch.no_grad():
        z = model.logits(r.x_adv)
        z_up = model.logits(env.interpolate(torch.ones(len(x))))
        z_dn = model.logits(env.interpolate(-torch.ones(len(x))))
    assert bool((z >= torch.maximum(z_up, z_dn) - 1e-5).all())
    theta = r.extra["theta"]
    assert theta.shape == (len(x),) and float(theta.abs().max()) <= 1.0
    torch.testing.assert_close(env.interpolate(theta), r.x_adv)


def test_pgd_and_conservattack_do_not_move_wrong_class(toy):
    x = torch.as_tensor(toy["x"])
    for name in ("pgd", "conservattack"):
        r = _run(toy, name, "signal_as_background")
        bkg = torch.as_tensor(toy["labels"]) == 0
        assert torch.equal(r.x_adv[bkg], x[bkg])
        assert bool(r.attacked[bkg].logical_not().all())


def test_mask_restricts_the_attack(toy):
    x = torch.as_tensor(toy["x"])
    mask = np.zeros(len(x), bool)
    mask[:100] = True
    r = make_attack("pgd", steps=5).attack(toy["model"], x, toy["env"], "shift_output", mask=mask, seed=0)
    assert torch.equal(r.x_adv[100:], x[100:])
    assert not torch.equal(r.x_adv[:100], x[:100])


@pytest.mark.parametrize("name,settings,needle", [
    ("pgd", {"steps": -1}, "steps"),
    ("pgd", {"step_fraction": 2.0}, "step_fraction"),
    ("pgd", {"random_start": "yes"}, "random_start"),
    ("pgd", {"stepz": 3}, "unknown settings"),
    ("fgsm", {"eps": float("nan")}, "eps"),
    ("fgsm", {"iterations": 0}, "iterations"),
    ("nuisance_pgd", {"k": -1.0}, "k"),
    ("conservattack", {"bins": 1}, "bins"),
    ("adversarial_network", {"hidden": []}, "hidden"),
    ("random", {"fraction": 1.5}, "fraction"),
    ("random", {"direction": 0}, "direction"),
])
def test_invalid_settings_raise(name, settings, needle):
    with pytest.raises(AuditError, match=needle):
        make_attack(name, **settings)


def test_invalid_inputs_raise(toy):
    x = torch.as_tensor(toy["x"])
    model, env = toy["model"], toy["env"]
    atk = make_attack("pgd", steps=2)
    with pytest.raises(AuditError, match="unknown objective"):
        atk.attack(model, x, env, "make_it_signal")
    with pytest.raises(AuditError, match="needs labels"):
        atk.attack(model, x, env, "signal_as_background")
    with pytest.raises(AuditError, match="shape"):
        atk.attack(model, x[:10], env)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(AuditError, match="NaN"):
        atk.attack(model, bad, env)
    with pytest.raises(AuditError, match="outside its envelope"):
        atk.attack(model, x * 2, env)
    with pytest.raises(AuditError, match="labels"):
        atk.attack(model, x, env, "signal_as_background", labels=np.full(len(x), 2.0))
    with pytest.raises(AuditError, match="weights"):
        atk.attack(model, x, env, weights=np.ones(3))
    with pytest.raises(AuditError, match="seed"):
        atk.attack(model, x, env, seed=-1)
    with pytest.raises(AuditError, match="n_sigma"):
        make_attack("nuisance_pgd", k=2.0).attack(model, x, env)
    with pytest.raises(AuditError, match="unknown attack"):
        make_attack("deepfool")
    with pytest.raises(AuditError, match="torch.nn.Module"):
        atk.attack(lambda v: v, x, env)


def test_registry_lists_all_attacks():
    assert attack_names() == sorted(["random", "fgsm", "pgd", "nuisance_pgd", "nuisance_field", "adversarial_network",
                                     "conservattack"])


def test_model_without_logits_method(toy):
    """Any module returning probabilities works (logits are recovered from p)."""
    inner = toy["model"]

    class ProbOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, v):
            return self.inner(v)

    x = torch.as_tensor(toy["x"][:200])
    env = toy["env"].subset(torch.arange(200))
    a = make_attack("pgd", steps=5).attack(ProbOnly(), x, env, seed=0)
    b = make_attack("pgd", steps=5).attack(inner, x, env, seed=0)
    assert bool(env.contains(a.x_adv).all())
    pa = model_probabilities(inner, a.x_adv)
    pb = model_probabilities(inner, b.x_adv)
    assert abs(float(pa.mean() - pb.mean())) < 1e-3


# The seed papers' settings as configuration entries (Nachman & Shimmin 2019): FGSM on signal
# events only, pushed towards background, eps = 0.001 x 10, relative steps for momenta and
# absolute for angles by feature kind; the adversarial network with its signal and
# background losses and the KS stops (0.04 observables, 0.02 NN output of the moved
# background).
SEED_PAPER_ATTACKS = {
    "fgsm_nachman_shimmin": {"type": "fgsm", "objective": "signal_as_background", "eps": 0.001, "iterations": 10},
    "adversarial_network_nachman_shimmin": {
        "type": "adversarial_network", "objective": "signal_as_background", "hidden": [300, 300, 300, 300],
        "epochs": 20, "lambda_cls": 1.0, "lambda_obs": 0.1, "ks_obs_max": 0.04, "ks_nn_max": 0.02,
        "ks_check_every": 5},
}


def test_fgsm_steps_by_feature_kind():
    """Momenta (and other features) step by eps |x|, angles by eps, decided by the kind, not
    the name: here the feature named like an angle is declared a momentum and vice versa."""
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(30, 5, (200, 3))).astype(np.float32)
    names = ["tau_eta", "pt", "m"]
    kinds = {"tau_eta": "momentum", "pt": "angle", "m": "other"}
    env = Envelope.from_uncertainties(x, [10.0, 10.0, 10.0], feature_names=names)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1), torch.nn.Sigmoid())
    xt = torch.as_tensor(x)
    r = make_attack("fgsm", eps=0.001, iterations=1, feature_kinds=kinds).attack(model, xt, env, seed=0)
    step = (r.x_adv - xt).abs()
    moved = step > 0
    assert bool(moved.any(0).all())
    torch.testing.assert_close(step[:, 0][moved[:, 0]], 0.001 * xt[:, 0][moved[:, 0]], rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(step[:, 1][moved[:, 1]], torch.full_like(step[:, 1][moved[:, 1]], 0.001), rtol=1e-2,
                               atol=2e-6)
    torch.testing.assert_close(step[:, 2][moved[:, 2]], 0.001 * xt[:, 2][moved[:, 2]], rtol=1e-3, atol=1e-5)
    # the same kinds as an envelope attribute, and as a list
    env.feature_kinds = kinds
    r2 = make_attack("fgsm", eps=0.001, iterations=1).attack(model, xt, env, seed=0)
    assert torch.equal(r2.x_adv, r.x_adv)
    r3 = make_attack("fgsm", eps=0.001, iterations=1, feature_kinds=["momentum", "angle", "other"]).attack(
        model, xt, env, seed=0)
    assert torch.equal(r3.x_adv, r.x_adv)
    with pytest.raises(AuditError, match="unknown kinds"):
        make_attack("fgsm", feature_kinds={"pt": "rapidity"})
    with pytest.raises(AuditError, match="unknown features"):
        make_attack("fgsm", feature_kinds={"ptt": "angle"}).attack(model, xt, env, seed=0)
    with pytest.raises(AuditError, match="one kind per feature"):
        make_attack("fgsm", feature_kinds=["angle"]).attack(model, xt, env, seed=0)


@pytest.mark.parametrize("name", sorted(SEED_PAPER_ATTACKS))
def test_seed_paper_configurations_run(toy, name):
    from hsaudit.attacks import attack_from_config

    entry = SEED_PAPER_ATTACKS[name]
    atk = attack_from_config(entry)
    x = torch.as_tensor(toy["x"])
    fast = {"epochs": 2, "hidden": [32, 32, 32, 32]} if entry["type"] == "adversarial_network" else {}
    r = atk.attack(toy["model"], x, toy["env_tes"], entry["objective"], labels=toy["labels"], weights=toy["weights"],
                   seed=0, **fast)
    sig = toy["labels"] == 1
    assert bool(toy["env_tes"].contains(r.x_adv).all())
    with torch.no_grad():
        dz = toy["model"].logits(r.x_adv) - toy["model"].logits(x)
    assert float(dz[sig].mean()) < 0  # signal pushed towards background
    if entry["type"] == "fgsm":
        assert torch.equal(r.x_adv[~sig], x[~sig])  # signal events only
        # 10 steps of 0.1 %: at most 1 % relative on every feature
        assert bool(((r.x_adv - x).abs() <= 0.0101 * x.abs() + 1e-5).all())
    else:
        p0 = torch.sigmoid(toy["model"].logits(x)).detach().numpy()
        p1 = torch.sigmoid(toy["model"].logits(r.x_adv)).detach().numpy()
        from hsaudit.attacks.checks import ks_statistic

        bkg = ~sig
        assert r.info["nn_ks_monitored"]
        assert ks_statistic(p1[bkg], p0[bkg], toy["weights"][bkg], toy["weights"][bkg]) <= 0.02


def test_pgd_matches_torchattacks_elementwise(toy):
    """Our PGD (no random start, final iterate) equals torchattacks' PGD mapped to the same
    box: u in [0, 1]^F -> x = lower + u (upper - lower), eps = 1 (the whole box), alpha = the
    step fraction, two-class logits (-z/2, z/2) with label 0 (push z up = shift_output)."""
    torchattacks = pytest.importorskip("torchattacks")
    from hsaudit.attacks.base import model_logits

    model, env = toy["model"], toy["env_tes"]
    x = torch.as_tensor(toy["x"])
    lower, width = env.lower, env.upper - env.lower

    class Box(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, u):
            z = model_logits(self.model, lower + u * width)
            return torch.stack([-0.5 * z, 0.5 * z], dim=1)

    ta = torchattacks.PGD(Box().eval(), eps=1.0, alpha=0.1, steps=10, random_start=False)
    u0 = torch.where(width > 0, (x - lower) / width.clamp_min(1e-30), torch.full_like(x, 0.5))
    x_ta = lower + ta(u0, torch.zeros(len(x), dtype=torch.long)) * width
    ours = make_attack("pgd", steps=10, step_fraction=0.1, keep_best=False).attack(model, x, env, seed=0).x_adv
    close = torch.isclose(ours, x_ta, rtol=1e-5, atol=1e-4).all(1)
    assert float(close.float().mean()) > 0.99, float(close.float().mean())
    with torch.no_grad():
        z0, za, zt = model.logits(x), model.logits(ours), model.logits(x_ta)
    gain_ours, gain_ta = float((za - z0).mean()), float((zt - z0).mean())
    assert gain_ours > 0 and abs(gain_ours - gain_ta) <= 0.001 * abs(gain_ta) + 1e-6, (gain_ours, gain_ta)
