"""The decision and prior options end to end through the CLI on a tiny trained run: evaluate
--interval/--threshold/--challenge/--by/--calibrate/--prior, prior estimate, predict --interval
--prior, compare's decision columns, and the exit-2 paths naming the flag, column or line."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from ordinalage.cli import main


@pytest.fixture()
def run(tiny_run, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    copy = tmp_path / "run"
    shutil.copytree(tiny_run("class"), copy)  # this test writes into the run folder
    return copy


def _json(capsys: pytest.CaptureFixture) -> object:
    return json.loads(capsys.readouterr().out)


def test_evaluate_with_every_decision_and_prior_option(run: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["evaluate", str(run), "--interval", "0.9", "--threshold", "18", "--challenge", "18,21", "--by", "gender",
            "--calibrate", "--prior", "em", "--json"]
    assert main(args) == 0
    res = _json(capsys)
    assert {"interval", "threshold", "breakdown", "calibration", "prior"} <= set(res)
    assert res["interval"]["level"] == pytest.approx(0.9) and 0 <= res["interval"]["coverage"] <= 1
    assert [(r["threshold"], r["challenge"]) for r in res["threshold"]] == [(18, 18), (18, 21)]
    assert {r["value"] for r in res["breakdown"]["gender"]} <= {"male", "female"}
    assert res["prior"]["mode"] == "em" and res["prior"]["adapted"]["mae"] == pytest.approx(res["mae"])
    assert res["prior"]["as_trained"]["n"] == res["n"]
    out = run / "eval-test"
    for name in ("metrics.json", "prior.json", "prior.png", "error_by_age.png", "reliability.png", "threshold_18.png"):
        assert (out / name).is_file(), name
    assert (run / "calibration.json").is_file()
    # compare reads the new headline numbers from the run's evaluation
    assert main(["compare", str(run), "--json"]) == 0
    row = _json(capsys)["runs"][0]
    assert row["coverage"] == pytest.approx(res["interval"]["coverage"])
    assert row["false_accept"] == res["threshold"][0]["false_accept"]


def test_prior_estimate_then_predict_with_the_file_and_intervals(run: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    assert main(["evaluate", str(run), "--interval", "0.8", "--json"]) == 0  # stores calibration.json
    capsys.readouterr()
    prior = tmp_path / "mix.json"
    assert main(["prior", "estimate", str(run), "--split", "test", "--out", str(prior), "--json"]) == 0
    est = _json(capsys)
    assert prior.is_file() and prior.with_suffix(".png").is_file() and est["n_images"] > 0
    with (run / "split.csv").open() as fh:
        image = next(r["path"] for r in csv.DictReader(fh) if r["split"] == "test")
    assert main(["predict", str(run), image, "--detector", "none", "--interval", "0.8", "--prior", str(prior),
                 "--json"]) == 0
    face = _json(capsys)["results"][0]
    assert face["age_lo"] is not None and (face["age_hi"] is None or face["age_lo"] <= face["age_hi"])


def test_bad_decision_and_prior_input_exits_2_naming_it(run: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(run), "--interval", "1.5"])
    assert exc.value.code == 2 and "--interval" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--threshold", "abc"]) == 2
    assert "--threshold 'abc'" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--by", "shoe_size"]) == 2
    assert "shoe_size" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("age,weight\n20,1\n30,-2\n")
    assert main(["evaluate", str(run), "--prior", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "line 3" in err
    assert main(["serve", str(run), "--prior", "em"]) == 2
    assert "prior estimate" in capsys.readouterr().err


@pytest.mark.parametrize("head, extra", [("class", ()), ("corn", ()), ("coral", ("model.target=group",))])
def test_an_ensemble_of_one_model_twice_equals_the_model(head: str, extra: tuple[str, ...], tiny_run,  # type: ignore[no-untyped-def]
                                                         tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    one = tmp_path / "one"
    shutil.copytree(tiny_run(head, *extra), one)
    assert main(["evaluate", str(one), "--json"]) == 0
    single = _json(capsys)
    assert main(["evaluate", str(one), "--ensemble", str(one / "best.pt"), "--out", str(tmp_path / "ens"), "--json"]) == 0
    both = _json(capsys)
    assert both["ensemble"] == [str(one / "best.pt")]
    for key in ("n", "mae", "accuracy", "one_off", "ca5"):
        assert both[key] == pytest.approx(single[key]), key


def test_an_ensemble_of_models_with_other_labels_exits_2(tiny_run, capsys: pytest.CaptureFixture) -> None:  # type: ignore[no-untyped-def]
    other = tiny_run("class", "model.target=group")
    assert main(["evaluate", str(tiny_run("class")), "--ensemble", str(other)]) == 2
    assert "predicts other labels" in capsys.readouterr().err
