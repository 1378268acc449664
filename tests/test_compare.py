"""`ordinalage compare` over fake run folders written by the test."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
import yaml

from ordinalage.cli import main
from ordinalage.errors import UsageError
from ordinalage.evaluation.compare import compare_runs


def make_run(root: Path, name: str, head: str, metrics: dict | None, where: str = "summary",
             backbone: str = "scratch", epochs: int = 5) -> Path:
    run = root / name
    run.mkdir(parents=True)
    cfg = {"data": {"sources": ["synth"]}, "model": {"head": head, "backbone": backbone, "target": "age"},
           "train": {"epochs": 9}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    summary: dict = {"head": head, "epochs_done": epochs}
    if metrics is not None and where == "summary":
        summary["test"] = metrics
    elif metrics is not None:
        (run / "eval-test").mkdir()
        (run / "eval-test" / "metrics.json").write_text(json.dumps(metrics))
    (run / "summary.json").write_text(json.dumps(summary))
    return run


M_CORAL = {"n": 100, "accuracy": 0.55, "one_off": 0.74, "mae": 6.1, "rmse": 8.0, "qwk": 0.80,
           "rank_inconsistency": 0.0, "groups": [], "confusion": []}
M_CLASS = {"n": 100, "accuracy": 0.60, "one_off": 0.70, "mae": 6.5, "rmse": 7.5, "qwk": 0.80,
           "rank_inconsistency": None, "groups": [], "confusion": []}
M_CORN = {"n": 100, "accuracy": 0.50, "one_off": 0.76, "mae": 5.9, "rmse": 8.5, "qwk": 0.79,
          "rank_inconsistency": 0.02}


@pytest.fixture
def runs(tmp_path) -> list[Path]:
    return [make_run(tmp_path, "coral", "coral", M_CORAL),
            make_run(tmp_path, "class", "class", M_CLASS, backbone="vgg16"),
            make_run(tmp_path, "corn", "corn", M_CORN, where="eval", epochs=3)]


def test_json_best_marks(runs, capsys):
    assert main(["compare", *map(str, runs), "--json"]) == 0
    cap = capsys.readouterr()
    res = json.loads(cap.out)
    assert [r["run"] for r in res["runs"]] == ["coral", "class", "corn"]
    best = res["best"]
    assert best["accuracy"] == "class"  # max 0.60
    assert best["one_off"] == "corn"  # max 0.76 (from eval-test/metrics.json)
    assert best["mae"] == "corn"  # min 5.9
    assert best["rmse"] == "class"  # min 7.5
    assert best["qwk"] == "coral"  # 0.80 tie: the first run
    assert best["rank_inconsistency"] == "coral"  # min 0.0; None (class head) is not ranked
    assert "n" not in best and "ca5" not in best  # counts are not scores; no run has ca5
    row = res["runs"][1]
    assert (row["head"], row["backbone"], row["target"], row["data"], row["epochs"]) == ("class", "vgg16", "age", "synth", 5)
    assert res["runs"][2]["metrics_source"] == "eval-test/metrics.json"


def test_table_marks_best_and_ties(runs, capsys):
    res = compare_runs([str(r) for r in runs], show=True)
    err = capsys.readouterr().err
    assert capsys.readouterr().out == ""
    assert "6.100" in err and "5.900*" in err and "6.500" in err  # best MAE marked, others not
    assert "0.600*" in err and "0.550 " in err
    assert err.count("0.800*") == 2  # the qwk tie is marked on both rows
    assert res["best"]["mae"] == "corn"


def test_plot_written(runs, tmp_path):
    png = tmp_path / "plots" / "compare.png"
    res = compare_runs([str(r) for r in runs], plot=str(png), show=False)
    assert res["plot"] == str(png)
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 200 and img.shape[1] > 400


def test_run_without_metrics_is_listed(tmp_path, capsys):
    a = make_run(tmp_path, "a", "coral", M_CORAL)
    b = make_run(tmp_path, "b", "coral", None)
    res = compare_runs([str(a), str(b)], show=True)
    assert res["runs"][1]["mae"] is None and res["best"]["mae"] == "a"
    assert "no test metrics yet: b" in capsys.readouterr().err


def test_same_names_use_paths(tmp_path):
    a = make_run(tmp_path / "x", "run", "coral", M_CORAL)
    b = make_run(tmp_path / "y", "run", "corn", M_CORN)
    res = compare_runs([str(a), str(b)], show=False)
    assert [r["run"] for r in res["runs"]] == [str(a), str(b)] and res["best"]["mae"] == str(b)


def test_not_a_run(tmp_path, runs, capsys):
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(UsageError, match=f"{plain}: not a run folder"):
        compare_runs([str(runs[0]), str(plain)], show=False)
    assert main(["compare", str(tmp_path / "missing")]) == 2
    assert "missing: not a run folder" in capsys.readouterr().err
    (runs[0] / "summary.json").write_text("{oops")
    with pytest.raises(UsageError, match="summary.json: not valid JSON"):
        compare_runs([str(runs[0])], show=False)
