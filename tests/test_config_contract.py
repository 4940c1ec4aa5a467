"""The command-line contract of a configuration with a typo: ``law run MergeFeatures`` with
``attacks.pgd.stpes: 3`` stops at load with the key path, a non-zero exit and no output."""

import yaml

from hsaudit.config import CONFIG_DIR


def test_a_typo_stops_law_before_any_task_runs(tmp_path):
    from law_cli import files_below, run_law

    raw = yaml.safe_load((CONFIG_DIR / "ci.yaml").read_text())
    raw["attacks"]["pgd"]["stpes"] = 3
    config = tmp_path / "typo.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    data = tmp_path / "data"
    res = run_law(data, "MergeFeatures", "--config", str(config), "--version", "V", timeout=120)
    assert res.returncode != 0, res.output[-2000:]
    lines = [line for line in res.output.splitlines() if "attacks.pgd.stpes" in line]
    assert lines and "unknown setting; known: steps, step_fraction" in lines[0], res.output[-2000:]
    assert "Traceback" not in res.output
    assert files_below(data) == []
    print(f"law run MergeFeatures with a typo: exit {res.returncode} after {res.seconds:.1f} s")
