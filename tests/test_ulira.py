"""u-lira: its statistics against independent references, its verdicts on models whose answer is known
(mnist1d), 1-ID requests, the shadow cache under two processes, and the CLI, record and report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from scipy import stats

from auditkit.audit.battery import run_audit
from auditkit.audit.policy import Policy
from auditkit.audit.shadows import CACHE_ENV, ShadowTrainer, ShadowUnlearning
from auditkit.audit.stats import benjamini_hochberg, gaussian_log_likelihood_ratio, likelihood_ratio_p_value
from auditkit.registry import Registry
from auditkit.training import train_model
from auditkit_plugins.attacks.ulira import fit_gaussians, held_out_balanced_accuracy, score_ids
from reliability_helpers import FORGET, fresh_workspace, run_cli_here

REGISTRY = Registry.default()


# ---------------------------------------------------------------- statistics


def test_log_likelihood_ratio_is_the_difference_of_scipy_log_densities():
    rng = np.random.default_rng(0)
    x, mean_in, mean_out = rng.normal(0, 3, (3, 50))
    sd_in, sd_out = rng.uniform(0.2, 4, (2, 50))
    expected = stats.norm.logpdf(x, mean_in, sd_in) - stats.norm.logpdf(x, mean_out, sd_out)
    np.testing.assert_allclose(gaussian_log_likelihood_ratio(x, mean_in=mean_in, sd_in=sd_in, mean_out=mean_out,
                                                             sd_out=sd_out), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sd_in,sd_out,df", [(2.0, 1.0, 7.0), (0.5, 1.5, 7.0), (1.0, 1.0, np.inf), (1.3, 0.9, np.inf),
                                             (1.0, 1.0, 3.0)])
def test_p_value_is_the_null_mass_where_the_ratio_is_at_least_as_high(sd_in, sd_out, df):
    # Independent reference: integrate scipy's density of the null over a fine grid, keeping the points
    # whose likelihood ratio (from scipy's log densities) reaches the observed one.
    mean_in, mean_out, scale = 1.2, -0.4, sd_out * np.sqrt(1 + 1 / 8)
    null = stats.t(df, loc=mean_out, scale=scale) if np.isfinite(df) else stats.norm(mean_out, scale)
    grid = np.linspace(mean_out - 60 * scale, mean_out + 60 * scale, 2_000_001)
    density = null.pdf(grid) * (grid[1] - grid[0])
    ratio = stats.norm.logpdf(grid, mean_in, sd_in) - stats.norm.logpdf(grid, mean_out, sd_out)
    for x in (-3.0, -0.4, 0.1, 0.9, 2.5, 5.0):
        observed = stats.norm.logpdf(x, mean_in, sd_in) - stats.norm.logpdf(x, mean_out, sd_out)
        expected = density[ratio >= observed].sum()
        p = likelihood_ratio_p_value(np.array([x]), mean_in=mean_in, sd_in=sd_in, mean_out=mean_out, sd_out=sd_out,
                                     null_scale=scale, null_df=df)[0]
        assert p == pytest.approx(expected, abs=2e-5), x


def test_benjamini_hochberg_matches_scipys_adjusted_p_values():
    rng = np.random.default_rng(1)
    for n in (1, 2, 7, 50, 300):
        p = np.concatenate([rng.uniform(size=n - n // 3), rng.beta(0.2, 8, n // 3)])
        for rate in (0.01, 0.05, 0.2):
            expected = stats.false_discovery_control(p, method="bh") <= rate
            np.testing.assert_array_equal(benjamini_hochberg(p, rate=rate), expected)
    # By hand: the largest i with p_(i) ≤ i·0.05/4 is i = 2 (0.02 ≤ 0.025), so the first two are rejected,
    # even though p_(1) = 0.013 > 0.0125 on its own.
    np.testing.assert_array_equal(benjamini_hochberg(np.array([0.02, 0.013, 0.2, 0.04]), rate=0.05),
                                  [True, True, False, False])


@pytest.mark.parametrize("variance", ["global", "per-example"])
def test_p_values_of_a_model_that_never_saw_the_ids_are_uniform(variance):
    # Gaussian shadows with a per-ID mean and a real unlearned/never-seen gap; the audited model is one more
    # never-seen draw. Its p-values are close to uniform: exact for a fixed region, only slightly liberal
    # because the region comes from the fitted means (measured: 5.7 % below 0.05, 1.2 % below 0.01), and BH
    # at 5 % flags anything in at most about 5 % of audits (measured 3.8 % and 4.5 % here).
    rng = np.random.default_rng(2)
    ids, pairs, audits = 20, 8, 400
    p_values, any_flag = [], 0
    for _ in range(audits):
        centre = rng.normal(0, 3, ids)
        never_seen = centre + rng.normal(0, 1.0, (pairs, ids))
        unlearned = centre + 1.0 + rng.normal(0, 1.6, (pairs, ids))
        target = centre + rng.normal(0, 1.0, ids)
        _, p = score_ids(target, unlearned, never_seen, variance=variance)
        p_values.append(p)
        any_flag += benjamini_hochberg(p, rate=0.05).any()
    p_values = np.concatenate(p_values)
    assert 0.04 < (p_values <= 0.05).mean() < 0.065 and (p_values <= 0.01).mean() < 0.015
    assert 0.45 < (p_values <= 0.5).mean() < 0.55
    assert any_flag / audits < 0.07


def test_global_variance_pools_each_kind_over_the_ids():
    rng = np.random.default_rng(3)
    unlearned, never_seen = rng.normal(0, 2, (6, 10)), rng.normal(0, 1, (6, 10))
    fit = fit_gaussians(unlearned, never_seen, variance="global")
    pooled = np.sqrt(((never_seen - never_seen.mean(0)) ** 2).sum() / (10 * 5))
    np.testing.assert_allclose(fit["sd_out"], pooled)
    assert fit["null_df"] == 50 and fit["null_scale"][0] == pytest.approx(pooled * np.sqrt(1 + 1 / 6))
    per_id = fit_gaussians(unlearned, never_seen, variance="per-example")
    np.testing.assert_allclose(per_id["sd_in"], np.maximum(unlearned.std(0, ddof=1), 0.1 * fit["sd_in"][0]))


def test_held_out_accuracy_separates_distinct_shadows_and_not_identical_ones():
    rng = np.random.default_rng(4)
    never_seen = rng.normal(0, 1, (8, 30))
    assert held_out_balanced_accuracy(never_seen + 4, never_seen, variance="global") > 0.95
    same = held_out_balanced_accuracy(rng.normal(0, 1, (8, 30)), never_seen, variance="global")
    assert 0.35 < same < 0.65
    assert held_out_balanced_accuracy(never_seen[:2] + 4, never_seen[:2], variance="global") is None


# ---------------------------------------------------------------- verdicts on real models (mnist1d)


class Mnist1d:
    """mnist1d with its plugin's default model and recipe (a smaller MLP memorises too little for some
    requests to be seen at 8 shadows); the request is a seeded 20 of the training IDs."""

    def __init__(self) -> None:
        plugin = REGISTRY.get("datasets", "mnist1d")
        self.data = REGISTRY.create("datasets", "mnist1d").load()
        self.model = REGISTRY.create("models", plugin.DEFAULT_MODEL, **plugin.DEFAULT_MODEL_OPTIONS)
        self.recipe = plugin.DEFAULT_RECIPE

    def build(self) -> torch.nn.Module:
        return self.model.build(input_shape=self.data.input_shape, num_classes=self.data.num_classes)

    def fit(self, positions: np.ndarray, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return train_model(self.build(), self.data.rows(positions), recipe=self.recipe, seed=seed).eval()

    def audit(self, *, forget: np.ndarray, original: torch.nn.Module, unlearned: torch.nn.Module, seed: int,
              shadows: int = 8):
        retain = np.setdiff1d(self.data.indices("train"), forget)
        validation, test = self.data.indices("validation"), self.data.indices("test")
        attacks = [REGISTRY.create("attacks", "loss"), REGISTRY.create("attacks", "u-lira", shadows=shadows)]
        unlearning = ShadowUnlearning(method=REGISTRY.create("methods", "nabla-tau"), method_name="nabla-tau",
                                      forget=forget, validation=validation, test=test, backend="reference")
        return run_audit(data=self.data, forget=forget, retain=retain, validation=validation, test=test,
                         models={"original": original, "unlearned": unlearned}, attacks=attacks,
                         policy=Policy(retain_sample_size=200), seed=seed, backend="reference",
                         reference_trainer=ShadowTrainer(build=self.build, recipe=self.recipe, model_key="mlp 256,256"),
                         shadow_unlearning=unlearning)


def _ulira(result, model: str):
    return next(r for r in result.attacks if (r.attack, r.model, r.population) == ("u-lira", model, "forget"))


@pytest.fixture(scope="module")
def mnist1d():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield Mnist1d()
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_the_original_is_flagged_and_a_retrained_model_is_not(mnist1d, seed, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    train = mnist1d.data.indices("train")
    forget = np.sort(np.random.default_rng(seed).choice(train, 20, replace=False))
    original = mnist1d.fit(train, seed=100 + seed)
    retrained = mnist1d.fit(np.setdiff1d(train, forget), seed=200 + seed)
    result = mnist1d.audit(forget=forget, original=original, unlearned=retrained, seed=seed)
    on_original, on_retrained = _ulira(result, "original"), _ulira(result, "unlearned")
    # The untouched original still holds the IDs: u-lira flags some, so it could have failed the audit.
    assert sum(row["flagged"] for row in on_original.per_example) >= 1
    assert next(p for p in result.power if p.attack == "u-lira").conclusive
    # The retrained model never saw them: nothing is flagged, and the u-lira check passes.
    assert not any(row["flagged"] for row in on_retrained.per_example)
    assert next(v for v in result.verdicts if v.attack == "u-lira").status == "pass"
    assert [row["id"] for row in on_retrained.per_example] == mnist1d.data.ids[forget].tolist()
    assert on_retrained.parameters["bh_rate"] == pytest.approx(1 - result.verdict_level)


# ---------------------------------------------------------------- the shadow cache under two processes


_FILL_CACHE = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    from auditkit.audit.shadows import ShadowTrainer, ShadowUnlearning, train_shadows
    from auditkit.registry import Registry
    from auditkit.training import TrainRecipe

    torch.set_num_threads(1)
    registry = Registry.default()
    data = registry.create("datasets", "digits").load()
    mlp = registry.create("models", "mlp", widths=(16,))
    trainer = ShadowTrainer(build=lambda: mlp.build(input_shape=data.input_shape, num_classes=data.num_classes),
                            recipe=TrainRecipe(epochs=40, batch_size=32, lr=3e-3), model_key="mlp 16")
    train = data.indices("train")
    forget = train[:5]
    unlearning = ShadowUnlearning(method=registry.create("methods", "finetune", epochs=2), method_name="finetune",
                                  forget=forget, validation=data.indices("validation"), test=data.indices("test"),
                                  backend="reference")
    trained = []
    shadows = train_shadows(trainer, data=data, retain=np.setdiff1d(train, forget), references=2, seed=7, pairs=2,
                            unlearning=unlearning,
                            progress=lambda r: trained.append(r.stage) if r.stage.startswith(("reference model",
                                "never-seen shadow", "unlearned shadow")) and r.completed == r.total else None)
    print(json.dumps({"hashes": shadows.reference_hashes + shadows.never_seen_hashes + shadows.unlearned_hashes,
                      "trained": sorted(set(trained))}))
""")


def test_two_processes_filling_one_cache_train_each_shadow_once(tmp_path):
    env = {**os.environ, CACHE_ENV: str(tmp_path / "cache")}
    script = tmp_path / "fill.py"
    script.write_text(_FILL_CACHE)
    runs = [subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                             text=True) for _ in range(2)]
    outputs = []
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
        outputs.append(json.loads(out))
    # Same shadows in both (so both read valid, complete entries), and every training happened once: under
    # the entry's lock the second process waited and loaded what the first wrote.
    assert outputs[0]["hashes"] == outputs[1]["hashes"] and len(set(outputs[0]["hashes"])) == 6
    trainings = outputs[0]["trained"] + outputs[1]["trained"]
    assert sorted(trainings) == sorted(set(trainings)) and len(trainings) == 6
    entries = sorted((tmp_path / "cache" / "reference-models").glob("*.pt"))
    assert len(entries) == 8  # 6 shadows and the 2 unlearned ones' models before unlearning
    assert not list((tmp_path / "cache" / "reference-models").glob("*.tmp*"))
    for entry in entries:
        assert isinstance(torch.load(entry, weights_only=True), dict)


# ---------------------------------------------------------------- CLI, record, report


ULIRA = ["--attacks", "loss,u-lira", "--attack-option", "u-lira.shadows=4", "--json"]
ONE_ID = ["--attacks", "loss,u-lira", "--attack-option", "u-lira.shadows=16", "--json"]


def test_forget_with_u_lira_records_every_id_and_the_report_escapes_them(tmp_path_factory, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    ws = fresh_workspace(tmp_path_factory, tmp_path / "ws")
    result = run_cli_here([*FORGET, *ULIRA, "--out", "runs/u"], cwd=ws)
    assert result.code in (0, 1, 4), result.err
    summary = json.loads(result.out)
    assert "shadows: 4 shadow models needed" in result.err and "unlearning runs" in result.err
    record = json.loads((ws / "runs/u/record.json").read_text())
    entry = next(a for a in record["audit"]["attacks"]
                 if (a["attack"], a["model"], a["population"]) == ("u-lira", "unlearned", "forget"))
    requested = (ws / "request.csv").read_text().split()[1:]
    assert sorted(row["id"] for row in entry["per_example"]) == sorted(requested)
    assert all(set(row) == {"id", "score", "p_value", "flagged"} and 0 <= row["p_value"] <= 1
               for row in entry["per_example"])
    assert summary["per_example"]["u-lira"] == {"flagged": sum(r["flagged"] for r in entry["per_example"]),
                                                "ids": len(requested)}
    assert entry["parameters"]["unlearned_shadows"]["method"] == "nabla-tau" and len(entry["reference_models"]) == 4
    html = (ws / "runs/u/report.html").read_text()
    assert "Per-example audit: u-lira" in html and requested[0] in html

    # An ID the report did not generate is escaped, and a bidi override shown, not obeyed.
    entry["per_example"][0]["id"] = "<script>alert(1)</script>\u202egnp.exe"
    entry["per_example"][0]["p_value"] = 0.0
    (ws / "edited.json").write_text(json.dumps(record))
    rendered = run_cli_here(["report", "edited.json", "-o", "edited.html"], cwd=ws)
    assert rendered.code == 0, rendered.err
    html = (ws / "edited.html").read_text()
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "\u202e" not in html


def test_a_one_id_request_is_decided_by_u_lira(tmp_path_factory, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    ws = fresh_workspace(tmp_path_factory, tmp_path / "ws")
    one = (ws / "request.csv").read_text().split()[1]
    (ws / "one.csv").write_text(f"id\n{one}\n")
    args = ["forget", "--ids", "one.csv", *FORGET[3:]]
    population = run_cli_here([*args, "--out", "runs/population", "--json"], cwd=ws)
    assert population.code == 4 and json.loads(population.out)["outcome"] == "inconclusive"
    # With one ID each spread comes from K/2 shadows alone (t with K/2 − 1 degrees of freedom): 16 shadows.
    decided = run_cli_here([*args, *ONE_ID, "--out", "runs/per-example"], cwd=ws)
    summary = json.loads(decided.out)
    assert decided.code in (0, 1) and summary["outcome"] in ("passed", "failed"), decided.err
    power = json.loads((ws / "runs/per-example/record.json").read_text())["audit"]["power"]
    assert next(p for p in power if p["attack"] == "u-lira")["conclusive"]  # it flags the ID on the original
    # `auditkit audit` of that output, with the method it was unlearned by, reaches the same verdict.
    audited = run_cli_here(["audit", "--ids", "one.csv", "--checkpoint", "runs/per-example/model.pt", "--original",
                            "model.pt", "--config", "fast.toml", *ONE_ID, "--out", "runs/audited"], cwd=ws)
    assert json.loads(audited.out)["outcome"] == summary["outcome"], audited.err
