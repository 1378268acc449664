"""`ordinalage bakeoff` (grid x seeds on tiny synthetic faces), `compare --paired` and
`ordinalage.bakeoff(...)`: outputs and their schema, reruns that skip finished cells, failed cells
recorded, bad grids refused before anything trains, two workers on one journal, kill -9 then rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ordinalage
from ordinalage.cli import main
from ordinalage.comparison.spec import build_spec, grid_methods, parse_grid_flag
from ordinalage.errors import UsageError
from ordinalage.evaluation.verdicts import VERDICTS
from ordinalage.groups import AgeGroups

ROOT = Path(__file__).resolve().parents[1]
PAIR_FIELDS = {"a", "b", "mae_diff", "ci", "ci_images", "ci_runs", "rope", "p_a_lower", "p_equivalent", "p_b_lower",
               "p_holm", "verdict"}


def tiny_sets(cache_dir: str) -> list[str]:
    """A width-8 scratch CNN on 160 synthetic 32 px faces (about a second per epoch)."""
    return [f"data.cache_dir={cache_dir}", "data.synth_n=160", "data.synth_size=48", "data.image_size=32",
            "data.num_workers=0", "model.width=8", "train.batch_size=32", "train.device=cpu"]


def _argv(out: Path, cache_dir: str, *extra: str, grid: str = "model.head=class,coral", seeds: int = 2,
          epochs: int = 1) -> list[str]:
    argv = ["bakeoff", "--grid", grid, "--seeds", str(seeds), "--data", "synth", "--epochs", str(epochs),
            "--out", str(out)]
    for item in tiny_sets(cache_dir):
        argv += ["--set", item]
    return argv + list(extra)


def _starts(out: Path) -> dict[str, int]:
    """How often each cell was started from scratch (cells.log)."""
    counts: dict[str, int] = {}
    log = out / "cells.log"
    for line in log.read_text().splitlines() if log.is_file() else []:
        _, _, _, event, cell = line.split()
        if event == "start":
            counts[cell] = counts.get(cell, 0) + 1
    return counts


# --------------------------------------------------------------------------------------------- spec


def test_grid_flags_and_method_names() -> None:
    assert parse_grid_flag("model.head=class,coral") == ("model.head", ["class", "coral"])
    assert parse_grid_flag("model.label_sigma=0,2.5") == ("model.label_sigma", [0, 2.5])
    methods = grid_methods({"model.head": ["class", "coral"], "data.sampling": ["none", "weighted"]})
    assert [m.name for m in methods] == ["class,none", "class,weighted", "coral,none", "coral,weighted"]
    assert methods[1].params == {"model.head": "class", "data.sampling": "weighted"}
    with pytest.raises(UsageError, match="KEY=V1,V2"):
        parse_grid_flag("model.head")


def test_spec_errors_name_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="at least two"):
        build_spec(grid=["model.head=coral"], seeds=1, data=["synth"], epochs=1)
    with pytest.raises(UsageError, match="no dataset"):
        build_spec(grid=["model.head=class,coral"], seeds=1, epochs=1)
    with pytest.raises(UsageError, match="not both"):
        build_spec(grid=["model.head=class,coral"], seeds=1, data=["synth"], epochs=1, budget="1m")
    bad = tmp_path / "b.yaml"
    bad.write_text("grid: {model.head: [class, coral]}\ndata: [synth]\nepochz: 3\n")
    with pytest.raises(UsageError, match=r"b\.yaml.*epochz"):
        build_spec(config=bad)


def test_folds_of_the_protocol_become_cells() -> None:
    spec = build_spec(grid=["model.head=class,coral"], seeds=2, data=["synth"], epochs=1,
                      sets=["data.protocol=folds:3"])
    assert spec.folds == 3 and len(spec.cells()) == 2 * 3 * 2
    assert {c.fold for c in spec.cells()} == {0, 1, 2}


@pytest.mark.parametrize(("grid", "needle"), [("model.haed=class,coral", "model.haed"),
                                              ("model.head=class,softmax", "softmax")])
def test_a_bad_grid_exits_2_before_anything_trains(tmp_path: Path, capsys, grid: str, needle: str) -> None:
    out = tmp_path / "bo"
    assert main(["bakeoff", "--grid", grid, "--seeds", "1", "--data", "synth", "--epochs", "1",
                 "--out", str(out)]) == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()


# --------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def bakeoff_dir(tmp_path_factory, synth_cache_dir: str) -> Path:
    out = tmp_path_factory.mktemp("bakeoff") / "bo"
    assert main(_argv(out, synth_cache_dir, grid="model.head=class,coral,regression")) == 0
    return out


def test_bakeoff_writes_its_files_and_schema(bakeoff_dir: Path) -> None:
    for name in ("bakeoff.json", "bakeoff.md", "cd_diagram.png", "mae_by_group.png"):
        assert (bakeoff_dir / name).stat().st_size > 0, name
    result = json.loads((bakeoff_dir / "bakeoff.json").read_text())
    assert len(result["cells"]) == 6 and result["missing"] == []
    for cell in result["cells"]:
        assert set(cell) >= {"params", "seed", "fold", "dataset", "run", "minutes", "test", "status", "reason"}
        assert cell["status"] == "done" and set(cell["test"]) >= {"mae", "accuracy", "one_off", "ca5"}
        assert (Path(cell["run"]) / "best.pt").is_file()  # an ordinary run folder
    assert [(p["a"], p["b"]) for p in result["pairs"]] == [("class", "coral"), ("class", "regression"),
                                                           ("coral", "regression")]
    for pair in result["pairs"]:
        assert set(pair) >= PAIR_FIELDS
        lo, hi = pair["ci"]
        assert lo <= pair["mae_diff"] <= hi and pair["n_runs"] == 2 and pair["n_images"] > 0
        assert pair["verdict"] in VERDICTS and pair["rope"] == 0.1 and pair["ci_method"] == "hybrid t"
        assert pair["verdict_text"].startswith(f"{pair['a']} - {pair['b']}: ")
        assert pair["p_a_lower"] + pair["p_equivalent"] + pair["p_b_lower"] == pytest.approx(1.0)
    assert result["age_mix"]["name"] == "test"
    assert [g["group"] for g in result["pairs_by_group"]] == AgeGroups.parse(None).labels
    assert all(len(g["pairs"]) == 3 for g in result["pairs_by_group"])
    assert result["friedman"] is None  # one dataset
    assert result["ranks"]["blocks"] == "runs" and len(result["ranks"]["average_ranks"]) == 3
    # the paired difference is the difference of the two methods' MAEs pooled over the same images
    by = {(c["method"], c["seed"]): c["test"]["mae"] for c in result["cells"]}
    expected = sum(by[("class", s)] - by[("coral", s)] for s in (0, 1)) / 2
    assert result["pairs"][0]["mae_diff"] == pytest.approx(expected, abs=1e-3)
    md = (bakeoff_dir / "bakeoff.md").read_text()
    assert "## Verdicts for the test set's own age mix (rope ±0.1 years)" in md and "None: every cell finished." in md
    assert "## Verdicts per true age group" in md


def test_report_only_recomputes_verdicts_for_another_mix_and_rope(bakeoff_dir: Path, tmp_path: Path, capsys,
                                                                   synth_cache_dir: str) -> None:
    before = _starts(bakeoff_dir)
    argv = _argv(bakeoff_dir, synth_cache_dir, grid="model.head=class,coral,regression")
    assert main([*argv, "--report-only", "--age-mix", "uniform", "--rope", "0.5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert _starts(bakeoff_dir) == before  # nothing trained
    assert result["age_mix"]["name"] == "uniform" and result["rope"] == 0.5
    shares = [v for v in result["age_mix"]["shares"].values() if v > 0]
    assert shares == pytest.approx([1 / len(shares)] * len(shares))
    assert all(p["rope"] == 0.5 for p in result["pairs"])
    # bad input: exit 2 with a message, and bakeoff.json left as it was
    written = (bakeoff_dir / "bakeoff.json").read_text()
    for extra, needle in ((["--rope", "-1"], "--rope"), (["--rope", "x"], "--rope"),
                          (["--age-mix", str(tmp_path / "nope.csv")], "no such file")):
        assert main([*argv, "--report-only", *extra]) == 2
        assert needle in capsys.readouterr().err
    mix = tmp_path / "mix.csv"
    mix.write_text("age,weight\n5,1\n150,1\n")
    assert main([*argv, "--report-only", "--age-mix", str(mix)]) == 2
    assert "lies in none of the age groups" in capsys.readouterr().err
    assert (bakeoff_dir / "bakeoff.json").read_text() == written
    assert main(["bakeoff", "--grid", "model.head=class,coral", "--data", "synth", "--epochs", "1",
                 "--out", str(tmp_path / "empty"), "--report-only"]) == 2
    assert "run it first" in capsys.readouterr().err


def test_rerun_skips_finished_cells_and_methods_can_be_added(bakeoff_dir: Path, synth_cache_dir: str) -> None:
    before = _starts(bakeoff_dir)
    assert sorted(before.values()) == [1] * 6
    assert main(_argv(bakeoff_dir, synth_cache_dir, grid="model.head=class,coral,regression")) == 0
    assert _starts(bakeoff_dir) == before
    with pytest.raises(SystemExit):  # argparse: --seeds must be an int
        main(_argv(bakeoff_dir, synth_cache_dir, "--seeds", "x"))
    assert main(_argv(bakeoff_dir, synth_cache_dir, grid="model.head=class,coral,regression", seeds=3)) == 2
    # a method added to the finished bake-off: only its cells train, the comparison covers all four
    assert main(_argv(bakeoff_dir, synth_cache_dir, grid="model.head=class,coral,regression,corn")) == 0
    assert _starts(bakeoff_dir) == {**before, "corn--synth--f0-s0": 1, "corn--synth--f0-s1": 1}
    result = json.loads((bakeoff_dir / "bakeoff.json").read_text())
    assert len(result["pairs"]) == 6 and result["missing"] == []


def test_compare_paired_on_two_runs_and_on_sets_of_runs(bakeoff_dir: Path, capsys) -> None:
    a, b = bakeoff_dir / "class--synth--f0-s0", bakeoff_dir / "coral--synth--f0-s0"
    assert main(["compare", str(a), str(b), "--paired", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert set(one) >= PAIR_FIELDS and one["n_runs"] == 1 and one["ci_method"] == "images only"
    assert one["verdict"] in ("undecided", *(v + " on these test images" for v in VERDICTS[:3]))
    assert "seed noise not measured" in one["verdict_text"] and one["training_noise"] is False
    assert main(["compare", str(bakeoff_dir / "class--*"), str(bakeoff_dir / "coral--*"), "--paired", "--json"]) == 0
    both = json.loads(capsys.readouterr().out)
    pair = json.loads((bakeoff_dir / "bakeoff.json").read_text())["pairs"][0]
    assert both["n_runs"] == 2 and both["mae_diff"] == pytest.approx(pair["mae_diff"])
    assert both["ci"] == pytest.approx(pair["ci"]) and both["verdict"] == pair["verdict"]


def test_compare_paired_exits_2_when_the_test_images_differ(bakeoff_dir: Path, tmp_path: Path, capsys,
                                                            synth_cache_dir: str) -> None:
    other = tmp_path / "other"
    sets = [s for item in [*tiny_sets(synth_cache_dir), "data.split_seed=5"] for s in ("--set", item)]
    assert main(["train", "--head", "class", "--epochs", "1", "--out", str(other), *sets]) == 0
    assert main(["compare", str(bakeoff_dir / "class--synth--f0-s0"), str(other), "--paired"]) == 2
    assert "test images differ" in capsys.readouterr().err


def test_a_failing_cell_is_recorded_and_listed_as_missing(tmp_path: Path, synth_cache_dir: str) -> None:
    config = tmp_path / "b.yaml"
    config.write_text("methods:\n  coral: {model.head: coral}\n"
                      f"  broken: {{model.head: class, data.sources: ['utkface:{tmp_path / 'nowhere'}']}}\n")
    out = tmp_path / "bo"
    sets = [s for item in tiny_sets(synth_cache_dir) for s in ("--set", item)]
    argv = ["bakeoff", "--config", str(config), "--seeds", "1", "--data", "synth", "--epochs", "1", "--out", str(out)]
    assert main([*argv, *sets]) == 3  # finished, with missing cells
    result = json.loads((out / "bakeoff.json").read_text())
    missing = result["missing"]
    assert [m["method"] for m in missing] == ["broken"] and "nowhere" in missing[0]["reason"]
    assert result["pairs"][0]["mae_diff"] is None and "no run finished by both" in result["pairs"][0]["verdict_text"]
    assert "broken--synth--f0-s0" in (out / "bakeoff.md").read_text()


def test_python_api_returns_what_bakeoff_json_holds(tmp_path: Path, synth_cache_dir: str) -> None:
    result = ordinalage.bakeoff(grid={"model.head": ["class", "regression"]}, seeds=1, data="synth", epochs=1,
                                out=tmp_path / "bo", sets=tiny_sets(synth_cache_dir), quiet=True)
    assert result == json.loads((tmp_path / "bo" / "bakeoff.json").read_text())
    assert [m["method"] for m in result["methods"]] == ["class", "regression"]


# --------------------------------------------------------------------------------------------- workers


def test_two_workers_on_one_journal_run_each_cell_once(tmp_path: Path, synth_cache_dir: str) -> None:
    out = tmp_path / "bo"
    assert main(_argv(out, synth_cache_dir, "--jobs", "2", grid="model.head=class,coral")) == 0
    assert (out / "journal.log").is_file()
    assert _starts(out) == {c: 1 for c in ("class--synth--f0-s0", "class--synth--f0-s1", "coral--synth--f0-s0",
                                           "coral--synth--f0-s1")}
    assert json.loads((out / "bakeoff.json").read_text())["missing"] == []


def test_kill_9_mid_cell_then_a_rerun_finishes_the_grid(tmp_path: Path, synth_cache_dir: str) -> None:
    out = tmp_path / "bo"
    argv = _argv(out, synth_cache_dir, grid="model.head=class,coral", seeds=1, epochs=4)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "ordinalage", *argv], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not any(out.glob("*/last.pt")):  # the first cell has finished an epoch
            assert proc.poll() is None and time.monotonic() < deadline, "the worker ended before a checkpoint"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed = [p.parent.name for p in out.glob("*/last.pt")]
    assert not (out / "bakeoff.json").exists()
    assert main(argv) == 0
    result = json.loads((out / "bakeoff.json").read_text())
    assert result["missing"] == [] and len(result["cells"]) == 2
    log = (out / "cells.log").read_text()
    assert all(f"resume {cell}" in log or f"start {cell}" in log for cell in killed)
    assert all(n == 1 or cell in killed for cell, n in _starts(out).items())


def test_bakeoff_plan_from_a_pilot(bakeoff_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["bakeoff", "plan", str(bakeoff_dir), "--halfwidth", "0.5", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan == json.loads((bakeoff_dir / "plan.json").read_text())
    n_pairs = len(json.loads((bakeoff_dir / "bakeoff.json").read_text())["pairs"])
    assert len(plan["pairs"]) == n_pairs and plan["halfwidth"] == 0.5 and plan["cell_minutes"] > 0
    for row in plan["pairs"]:
        assert row["run_sd"] >= 0 and row["image_sd"] > 0 and row["test_images"] > 0
    assert main(["bakeoff", "plan", str(tmp_path), "--halfwidth", "0.1"]) == 2
    assert "no finished bake-off" in capsys.readouterr().err
    assert main(["bakeoff", "plan", str(bakeoff_dir), "--halfwidth", "-1"]) == 2
    assert "--halfwidth" in capsys.readouterr().err
    assert not (tmp_path / "plan.json").exists()
