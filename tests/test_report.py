"""`ordinalage report` (one self-contained HTML page of a run, several runs or a bake-off), the model
card that `evaluate` writes (MODEL_CARD.md), the named attribute values of the breakdown, and the
card served at GET /model/card. Tiny synthetic runs (tests/tiny_training.py) and a tiny bake-off."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from tiny_training import tiny

from ordinalage.cli import main
from ordinalage.evaluation.breakdown import by_attribute, utkface_attributes, value_code, value_name
from ordinalage.evaluation.model_card import data_attributes, metric_intervals
from ordinalage.evaluation.predictions import read_predictions
from ordinalage.reporting import html as hr
from ordinalage.reporting.card import markdown_body, markdown_to_html
from ordinalage.reporting.hub_metadata import strip_front_matter

pytestmark = pytest.mark.usefixtures("one_thread")

IMG_SRC = re.compile(r"<img\b[^>]*\bsrc=\"([^\"]*)\"")
CARD_SECTIONS = ("## Model details", "## Intended use", "## Out-of-scope use", "## Factors",
                 "## Metrics", "## Evaluation data", "## Training data", "## Error by age group", "## Calibration",
                 "## Ethical considerations", "## Caveats and recommendations")


def _train(cache: str, out: Path, *sets: str) -> Path:
    from ordinalage.training.fit import fit

    return fit(tiny(cache, out, "train.epochs=1", *sets), quiet=True)


def check_self_contained(html: str) -> int:
    """Every <img> a data: URI whose base64 decodes to a PNG; nothing fetched from the network;
    no script. Returns the number of images."""
    srcs = IMG_SRC.findall(html)
    for src in srcs:
        assert src.startswith("data:image/png;base64,"), src[:60]
        assert base64.b64decode(src.split(",", 1)[1], validate=True).startswith(b"\x89PNG\r\n\x1a\n")
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", html, re.IGNORECASE)
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower() and "<link" not in html.lower()
    return len(srcs)


def _h2(html: str) -> list[str]:
    return re.findall(r"<h2>([^<]*)</h2>", html)


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory: pytest.TempPathFactory, synth_cache_dir: str) -> Path:
    """A tiny run evaluated on its test split with a breakdown, an interval and a threshold, and
    report.html written by `evaluate --report`."""
    run = _train(synth_cache_dir, tmp_path_factory.mktemp("runs"))
    assert main(["evaluate", str(run), "--device", "cpu", "--by", "gender", "--interval", "0.8",
                 "--threshold", "18", "--report"]) == 0
    return run


@pytest.fixture(scope="module")
def bakeoff_dir(tmp_path_factory: pytest.TempPathFactory, synth_cache_dir: str) -> Path:
    out = tmp_path_factory.mktemp("bakeoff") / "bo"
    argv = ["bakeoff", "--grid", "model.head=class,coral,regression", "--seeds", "2", "--data", "synth",
            "--epochs", "1", "--out", str(out)]
    for item in (f"data.cache_dir={synth_cache_dir}", "data.synth_n=160", "data.synth_size=48", "data.image_size=32",
                 "data.num_workers=0", "model.width=8", "train.batch_size=32", "train.device=cpu"):
        argv += ["--set", item]
    assert main(argv) == 0
    return out


# --------------------------------------------------------------------------------------------- a run


def test_report_of_an_evaluated_run(evaluated_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "sub" / "report.html"
    assert main(["report", str(evaluated_run), "--out", str(out), "--card"]) == 0
    html = out.read_text(encoding="utf-8")
    heads = _h2(html)
    for title in (hr.OVERVIEW, hr.TEST_METRICS, hr.CONFUSION, hr.ERROR_BY_AGE, hr.RELIABILITY, hr.INTERVALS,
                  hr.THRESHOLDS, hr.BREAKDOWN, hr.DATA, hr.TRAINING, hr.CONFIG):
        assert title in heads, (title, heads)
    assert hr.NOT_EVALUATED not in heads
    # confusion x2, error by age, reliability, threshold curve, training mix, training curves
    assert check_self_contained(html) >= 7
    metrics = json.loads((evaluated_run / "eval-test" / "metrics.json").read_text())
    assert f"{metrics['mae']:.3f}" in html and f"{metrics['baseline']['mae']:.3f}" in html
    assert "female" in html and "male" in html  # the breakdown by name, with its codes
    assert "head: class" not in html and "head: coral" in html  # config.yaml verbatim (the tiny run is CORAL)
    card = (out.parent / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlicense: ") and "## Error by gender" in card  # Hub metadata, then the card
    assert strip_front_matter(card).startswith("# Model card")
    # evaluate --report wrote the same kind of page beside metrics.json, and the card
    beside = (evaluated_run / "eval-test" / "report.html").read_text(encoding="utf-8")
    assert hr.TEST_METRICS in _h2(beside) and check_self_contained(beside) >= 5
    assert (evaluated_run / "eval-test" / "MODEL_CARD.md").is_file()


def test_report_of_a_run_without_evaluation_says_so(synth_cache_dir: str, tmp_path: Path, capsys) -> None:
    run = _train(synth_cache_dir, tmp_path / "runs")
    out = tmp_path / "r.html"
    assert main(["report", str(run), "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "run"
    html = out.read_text(encoding="utf-8")
    assert hr.NOT_EVALUATED in _h2(html) and f"ordinalage evaluate {run}" in html
    assert hr.TEST_METRICS not in _h2(html) and hr.TRAINING in _h2(html) and hr.CONFIG in _h2(html)
    check_self_contained(html)
    # --card on an unevaluated run: a card that says it is not evaluated and claims no metric
    assert main(["report", str(run), "--out", str(out), "--card"]) == 0
    card = (tmp_path / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "Not evaluated" in card and "## Model details" in card and "## Metrics" not in card


def test_a_folder_that_is_neither_a_run_nor_a_bakeoff_exits_2(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "no config.yaml" in err and "no bakeoff.json" in err and str(empty) in err
    assert main(["report", str(tmp_path / "absent"), "--out", str(tmp_path / "r.html")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


# --------------------------------------------------------------------------------------------- runs


def test_report_of_two_runs_with_paired_differences_and_a_skipped_pair(evaluated_run: Path, synth_cache_dir: str,
                                                                        tmp_path: Path) -> None:
    other = _train(synth_cache_dir, tmp_path / "a", "model.head=class")  # the same split: pairable
    moved = _train(synth_cache_dir, tmp_path / "b", "model.head=regression", "data.split_seed=1")  # other test images
    for run in (other, moved):
        assert main(["evaluate", str(run), "--device", "cpu", "--json"]) == 0
    out = tmp_path / "compare.html"
    assert main(["report", str(evaluated_run), str(other), str(moved), "--out", str(out)]) == 0
    html = out.read_text(encoding="utf-8")
    assert _h2(html) == [hr.COMPARE, hr.PAIRED]
    assert check_self_contained(html) == 1  # the MAE/accuracy bar chart
    for run in (evaluated_run, other, moved):
        assert re.search(rf"<td class=\"text\">{re.escape(run.name)}</td>", html)
    assert re.search(r'<td class="[^"]*\bbest\b', html)
    assert html.count("no difference shown") + html.count("better") >= 1  # the verdict of the pairable pair
    assert "Pairs skipped" in html and f"{evaluated_run.name} vs {moved.name}" in html


# --------------------------------------------------------------------------------------------- bake-off


def test_report_of_a_bakeoff(bakeoff_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bo.html"
    assert main(["report", str(bakeoff_dir), "--out", str(out)]) == 0
    html = out.read_text(encoding="utf-8")
    assert _h2(html) == [hr.OVERVIEW, hr.METHODS, hr.VERDICTS, hr.RANKS, hr.MAE_BY_GROUP, hr.CELLS, hr.MISSING]
    assert check_self_contained(html) == 2  # the CD diagram and MAE by group
    result = json.loads((bakeoff_dir / "bakeoff.json").read_text())
    for pair in result["pairs"]:
        assert pair["verdict"] in html
    assert "every cell finished" in html
    # a bake-off with a missing cell (and without its PNGs: drawn again from bakeoff.json)
    copy = tmp_path / "bo2"
    copy.mkdir()
    result["missing"] = [{"id": "corn--synth--f0-s0", "method": "corn", "seed": 0, "fold": 0, "dataset": "synth",
                          "status": "failed", "reason": "RuntimeError: out of memory <b>"}]
    (copy / "bakeoff.json").write_text(json.dumps(result))
    assert main(["report", str(copy), "--out", str(out)]) == 0
    html = out.read_text(encoding="utf-8")
    assert "corn--synth--f0-s0" in html and "out of memory &lt;b&gt;" in html  # autoescaped
    assert check_self_contained(html) == 2


def test_a_bakeoff_is_reported_alone_and_card_needs_one_run(bakeoff_dir: Path, evaluated_run: Path, tmp_path: Path,
                                                             capsys) -> None:
    assert main(["report", str(bakeoff_dir), str(evaluated_run), "--out", str(tmp_path / "x.html")]) == 2
    assert "reported alone" in capsys.readouterr().err
    assert main(["report", str(bakeoff_dir), "--out", str(tmp_path / "x.html"), "--card"]) == 2
    assert "one run folder" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- model card


def test_evaluate_writes_a_model_card_without_attribute_sections_on_synth(synth_cache_dir: str, tmp_path: Path) -> None:
    run = _train(synth_cache_dir, tmp_path / "runs")
    assert main(["evaluate", str(run), "--device", "cpu", "--json"]) == 0
    card = (run / "eval-test" / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert strip_front_matter(card).startswith(f"# Model card: {run.name}\n")
    for heading in CARD_SECTIONS:
        assert f"\n{heading}\n" in f"\n{card}", heading
    assert "## Error by" not in card.replace("## Error by age group", "")  # synth: no gender, race or source
    assert "carry no attributes besides age" in card and "synthetic faces" in card
    assert "not the sole basis for legal" in card.lower()
    # the MAE and its bootstrap interval, from predictions.csv, as printed
    pred = read_predictions(run / "eval-test" / "predictions.csv")
    ci = metric_intervals(pred)["mae"]
    assert ci["lo"] <= ci["value"] <= ci["hi"]
    assert f"[{ci['lo']:.3f}, {ci['hi']:.3f}]" in card
    assert (run / "eval-test" / "report.html").exists() is False  # only with --report


def test_model_card_with_attributes_names_them(evaluated_run: Path) -> None:
    card = (evaluated_run / "eval-test" / "MODEL_CARD.md").read_text(encoding="utf-8")
    for heading in (*CARD_SECTIONS, "## Error by gender", "## Age intervals", "## Age thresholds"):
        assert f"\n{heading}\n" in f"\n{card}", heading
    section = card.split("## Error by gender", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"\| female \| 1 \| \d+ \|", section) and re.search(r"\| male \| 0 \| \d+ \|", section)
    assert "## Error by race" not in card  # not asked for, and synthetic names are not people's
    caveats = card.split("## Caveats and recommendations", 1)[1]
    assert "By gender, the largest error is for" in caveats and "training prior" in caveats


def test_attributes_of_utkface_names_and_sources() -> None:
    paths = ["/d/UTK/25_1_2_2017.jpg", "/d/UTK/60_0_0_2017.jpg", "/d/UTK/39_1_2017.jpg", "/d/other/a.jpg"]
    one = data_attributes(paths[:3], ["utkface:/d/UTK"])
    assert one == {"gender": ["female", "male", None], "race": ["Asian", "White", None]}
    two = data_attributes(paths, ["utkface:/d/UTK", "folder:/d/other"])
    assert two["source"] == ["utkface:/d/UTK"] * 3 + ["folder:/d/other"] and two["gender"][3] is None
    assert data_attributes(paths[:2], ["synth"]) == {}  # drawn traits, not people's


def test_breakdown_values_by_name_with_codes() -> None:
    assert value_name("gender", 1) == "female" and value_name("gender", "0") == "male" and value_name("gender", 1.0) == "female"
    assert value_name("race", "3") == "Indian" and value_name("site", 3) == "3"
    assert value_code("race", "Asian") == "2" and value_code("race", "2") == "2" and value_code("site", "x") is None
    assert utkface_attributes("26_1_3_2017.jpg.chip.jpg", codes=True) == {"gender": "1", "race": "3"}
    true, pred = np.array([20.0, 20, 21, 30, 40]), np.array([22.0, 19, 21, 35, 43])
    coded = by_attribute(true, pred, [0, 1, 1, None, 0], "gender")
    named = by_attribute(true, pred, ["male", "female", "female", None, "male"], "gender")
    assert coded == named
    assert [(r["value"], r["code"], r["n"], r["mae"]) for r in coded] == [("female", "1", 2, 0.5), ("male", "0", 2, 2.5)]
    assert "code" not in by_attribute(true, pred, ["a", "b", "a", "b", "a"], "site")[0]


def test_markdown_to_html_subset() -> None:
    body = markdown_body("# T\n\nA `x` and **y** <b>.\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | <2> |\n\n> note")
    assert "<h1>T</h1>" in body and "<code>x</code>" in body and "<strong>y</strong>" in body
    assert "&lt;b&gt;" in body and "<ul><li>one</li><li>two</li></ul>" in body
    assert "<th>a</th>" in body and "<td>&lt;2&gt;</td>" in body and "<blockquote>" in body
    page = markdown_to_html("# T")
    assert page.startswith("<!doctype html>") and "<script" not in page


# --------------------------------------------------------------------------------------------- serve


def test_serve_shows_the_model_card(evaluated_run: Path, synth_cache_dir: str, tmp_path: Path) -> None:
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    import ordinalage
    from ordinalage.inference.serve import create_app

    bare = _train(synth_cache_dir, tmp_path / "runs")  # never evaluated
    shutil.rmtree(bare / "eval-test", ignore_errors=True)
    app = create_app([ordinalage.load(evaluated_run, device="cpu"), ordinalage.load(bare, device="cpu")], batching=False)
    with TestClient(app) as client:
        md = client.get("/model/card")
        assert md.status_code == 200 and md.headers["content-type"].startswith("text/markdown")
        assert md.text == (evaluated_run / "eval-test" / "MODEL_CARD.md").read_text(encoding="utf-8")
        page = client.get("/model/card", params={"format": "html"})
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "<h2>Metrics</h2>" in page.text and "<table>" in page.text and "<script" not in page.text
        other = client.get("/model/card", params={"model": 1})
        assert "Not evaluated" in other.text and f"ordinalage evaluate {bare}" in other.text
        assert "## Metrics" not in other.text
        assert client.get("/model/card", params={"model": 2}).status_code == 400
        assert client.get("/model/card", params={"format": "pdf"}).status_code == 422
        index = client.get("/").text
        assert 'href="model/card?format=html"' in index and "age_lo" in index
