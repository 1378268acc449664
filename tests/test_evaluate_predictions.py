"""`ordinalage evaluate --predictions CSV` through the CLI, and evaluate_run on a fake model and loader."""

from __future__ import annotations

import csv
import json
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from ordinalage.cli import main
from ordinalage.groups import AgeGroups
from ordinalage.posterior.metrics import METRIC_NAMES

ALL_KEYS = set(METRIC_NAMES) | {"baseline"}


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def run_json(capsys, argv: list[str]) -> dict:
    rc = main(argv)
    out = capsys.readouterr().out
    assert rc == 0
    return json.loads(out)  # stdout holds exactly one JSON object


def test_age_columns_json(tmp_path, capsys):
    # default decades; true 5 15 25 35 -> groups 0 1 2 3; pred 7 25 26 95 -> groups 0 2 2 6 (95 clipped to 61-70)
    p = write_csv(tmp_path / "p.csv", ["file", "true_age", "pred_age", "p_0-10"],
                  [["a", 5, 7, 0.1], ["b", 15, 25, 0.2], ["c", 25, 26, 0.3], ["d", 35, 95, 0.4]])
    res = run_json(capsys, ["evaluate", "--predictions", str(p), "--json"])
    assert ALL_KEYS <= set(res)
    assert res["n"] == 4
    assert res["accuracy"] == pytest.approx(0.5)  # a and c
    assert res["one_off"] == pytest.approx((1 + 0.5 + 1 + 0) / 4)
    assert res["mae"] == pytest.approx((2 + 10 + 1 + 60) / 4)
    assert res["confusion"][3][6] == 1
    assert res["baseline_source"] == "this file"
    # baseline: majority of the file's truth (one each: lowest group 0), median age (15 + 25) / 2 = 20
    assert res["baseline"]["accuracy"] == pytest.approx(0.25)
    assert res["baseline"]["mae"] == pytest.approx((15 + 5 + 5 + 15) / 4)


def test_group_columns_labels_and_indices(tmp_path, capsys):
    p = write_csv(tmp_path / "g.csv", ["true_group", "pred_group"],
                  [["21-30", "21-30"], ["31-40", 2], [0, "11-20"]])
    res = run_json(capsys, ["evaluate", "--predictions", str(p), "--json"])
    assert res["n"] == 3 and res["accuracy"] == pytest.approx(1 / 3)
    assert res["mae"] is None and res["ca5"] is None and res["baseline"]["mae"] is None
    assert res["adjacent_accuracy"] == 1.0


def test_custom_groups_and_dropped_ages(tmp_path, capsys):
    # groups 0-20,21+: true age 150 is inside the open group; with 0-20,21-40 it is dropped and counted
    p = write_csv(tmp_path / "p.csv", ["true_age", "pred_age"], [[10, 12], [30, 50], [150, 60]])
    res = run_json(capsys, ["evaluate", "--predictions", str(p), "--groups", "0-20,21+", "--json"])
    assert res["n"] == 3 and res["accuracy"] == 1.0
    res = run_json(capsys, ["evaluate", "--predictions", str(p), "--groups", "0-20,21-40", "--json"])
    assert res["n"] == 2 and res["dropped_out_of_range"] == 1


def test_group_columns_win_over_binning(tmp_path, capsys):
    # a class head's age (expected midpoint) may bin elsewhere than its argmax group: the file's groups are used
    p = write_csv(tmp_path / "p.csv", ["true_age", "true_group", "pred_age", "pred_group"],
                  [[25, "21-30", 31.0, "21-30"], [45, "41-50", 44.0, "41-50"]])
    res = run_json(capsys, ["evaluate", "--predictions", str(p), "--json"])
    assert res["accuracy"] == 1.0 and res["mae"] == pytest.approx(3.5)


@pytest.mark.parametrize("header,rows,message", [
    (["true_age", "age"], [[1, 2]], "missing column(s) pred_age"),
    (["file", "x"], [["a", 1]], "missing column(s) true_age, pred_age"),
    (["true_group"], [["0-10"]], "missing column(s) pred_group"),
    (["true_age", "pred_age"], [[1, 2], [3, "abc"]], "line 3, column pred_age: 'abc' is not a finite number"),
    (["true_age", "pred_age"], [[1, 2], ["", 4]], "line 3, column true_age"),
    (["true_age", "pred_age"], [["nan", 2]], "line 2, column true_age"),
    (["true_age", "pred_age"], [], "no rows"),
    (["true_group", "pred_group"], [["0-10", 9]], "line 2, column pred_group: group index 9 is outside 0..6"),
    (["true_group", "pred_group"], [["0-10", "teen"]], "line 2, column pred_group: 'teen' is neither"),
])
def test_bad_files_exit_2(tmp_path, capsys, header, rows, message):
    p = write_csv(tmp_path / "bad.csv", header, rows)
    rc = main(["evaluate", "--predictions", str(p), "--json"])
    cap = capsys.readouterr()
    assert rc == 2
    assert cap.out == ""
    assert message in cap.err and str(p) in cap.err


def test_missing_file_exit_2(tmp_path, capsys):
    rc = main(["evaluate", "--predictions", str(tmp_path / "nope.csv")])
    assert rc == 2
    assert f"ordinalage: error: {tmp_path / 'nope.csv'}: predictions file not found" in capsys.readouterr().err


def test_out_writes_json_and_pngs(tmp_path, capsys):
    rng = np.random.default_rng(0)
    ta = rng.uniform(0, 70, 60).round(1)
    pa = ta + rng.normal(0, 6, 60).round(1)
    p = write_csv(tmp_path / "p.csv", ["true_age", "pred_age"], list(zip(ta, pa, strict=True)))
    out = tmp_path / "report"
    res = run_json(capsys, ["evaluate", "--predictions", str(p), "--out", str(out), "--json"])
    assert json.loads((out / "metrics.json").read_text()) == res
    for name in ("confusion_count.png", "confusion_norm.png"):
        img = cv2.imread(str(out / name))
        assert img is not None and img.ndim == 3 and min(img.shape[:2]) > 200


def test_table_goes_to_stderr(tmp_path, capsys):
    p = write_csv(tmp_path / "p.csv", ["true_age", "pred_age"], [[5, 6], [25, 40]])
    assert main(["evaluate", "--predictions", str(p)]) == 0
    cap = capsys.readouterr()
    assert cap.out == ""
    assert "one-off" in cap.err and "baseline (this file)" in cap.err


# ---------------------------------------------------------------------------------------------
# evaluate_run with a fake model and loader: pixel value = true age, the model says age + 2


def _fake_loaded(run_dir: Path | None, ckpt: Path):
    import torch

    from ordinalage.config import Config
    from ordinalage.models.input_spec import InputSpec

    groups = AgeGroups.parse(None)

    class Decoded(types.SimpleNamespace):
        pass

    class Older(torch.nn.Module):
        def forward(self, x):  # (N, 3, S, S) -> (N, 1)
            return x.mean(dim=(1, 2, 3)).unsqueeze(1) + 2.0

        def decode(self, logits):
            age = logits[:, 0]
            group = torch.from_numpy(groups.clip_indices(age.numpy()))
            proba = torch.nn.functional.one_hot(group, len(groups)).float()
            rank = torch.stack([age > 10, age > 20, age > 5], dim=1).float()  # non-monotone when 5 < age <= 20
            return Decoded(group=group, age=age, group_proba=proba, rank_proba=rank)

    return types.SimpleNamespace(
        model=Older(), config=Config(), groups=groups,
        input_spec=InputSpec(size=4, mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255)),
        reference={"majority_group": 2, "median_age": 30.0}, checkpoint_path=ckpt, run_dir=run_dir, epoch=3,
        train_prior=None, label_ages=np.arange(101.0))


def _fake_build_loader(records, groups, cfg, size, batch_size, train, seed, num_workers=None, **kw):
    import torch

    def batches():
        yield None  # a batch whose images all failed to decode
        for start in range(0, len(records), batch_size):
            items = [(i, r) for i, r in enumerate(records[start:start + batch_size], start) if "bad" not in r.path]
            if not items:
                yield None
                continue
            ages = torch.tensor([r.age for _, r in items])
            yield {"image": ages.to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, size, size).contiguous(),
                   "age": ages, "group": torch.from_numpy(groups.indices(ages.numpy())),
                   "index": torch.tensor([i for i, _ in items])}

    return batches()


@pytest.fixture
def fake_run(tmp_path, monkeypatch):
    import ordinalage.runs.checkpoint as checkpoint

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("{}\n")
    (run / "best.pt").write_bytes(b"")
    rows = [[f"/x/{i}.jpg", age, 0, "test"] for i, age in enumerate([3, 8, 14, 25, 33, 47, 52, 66])]
    rows += [["/x/bad.jpg", 40, 3, "test"], ["/x/t.jpg", 20, 1, "train"]]
    write_csv(run / "split.csv", ["path", "age", "group", "split"], rows)
    monkeypatch.setattr(checkpoint, "load_model",
                        lambda path, device="cpu": _fake_loaded(run, run / "best.pt"))
    fake = types.ModuleType("ordinalage.data.dataset")
    fake.build_loader = _fake_build_loader
    monkeypatch.setitem(sys.modules, "ordinalage.data.dataset", fake)
    return run


def test_evaluate_run_fake(fake_run, capsys):
    from ordinalage.evaluation.evaluate import evaluate_predictions_file, evaluate_run

    res = evaluate_run(fake_run, batch_size=3, device="cpu", show=True)
    assert "baseline (training split)" in capsys.readouterr().err
    assert ALL_KEYS | {"split", "checkpoint", "skipped"} <= set(res)
    # 8 readable test images; the model adds 2 years: 8 -> 10 stays in 0-10, 66 -> 68 stays in 61-70
    assert res["n"] == 8 and res["skipped"] == ["/x/bad.jpg"]
    assert res["mae"] == pytest.approx(2.0) and res["ca3"] == 1.0 and res["accuracy"] == 1.0
    # rank probabilities [age>10, age>20, age>5] rise (0 then 1) for predicted ages in (5, 20]:
    # predictions 5 10 16 27 35 49 54 68 -> 10 and 16 -> 2/8
    assert res["rank_inconsistency"] == pytest.approx(2 / 8)
    # baseline: always 21-30 and 30 years: right for 25 only; |30 - age| summed = 27+22+16+5+3+17+22+36
    assert res["baseline"]["accuracy"] == pytest.approx(1 / 8)
    assert res["baseline"]["mae"] == pytest.approx(148 / 8)
    out = fake_run / "eval-test"
    assert Path(res["out"]) == out
    with (out / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == [f"/x/{i}.jpg" for i in range(8)]
    assert list(rows[0])[:5] == ["file", "true_age", "true_group", "pred_age", "pred_group"]
    assert list(rows[0])[5:] == [f"p_{lab}" for lab in AgeGroups.parse(None).labels]
    assert rows[3]["pred_group"] == "21-30" and float(rows[3]["pred_age"]) == pytest.approx(27.0)
    assert json.loads((out / "metrics.json").read_text())["n"] == 8
    assert cv2.imread(str(out / "confusion_norm.png")) is not None
    # the written predictions file reproduces the metrics
    again = evaluate_predictions_file(out / "predictions.csv", show=False)
    for key in ("n", "accuracy", "mae", "rmse", "one_off", "qwk"):
        assert again[key] == pytest.approx(res[key])
    assert again["confusion"] == res["confusion"]


def test_evaluate_run_train_split_and_bare_checkpoint(fake_run, tmp_path):
    from ordinalage.evaluation.evaluate import evaluate_run

    res = evaluate_run(fake_run, split="train", device="cpu", show=False)
    assert res["n"] == 1 and res["split"] == "train"
    res = evaluate_run(fake_run / "best.pt", split="all", out=tmp_path / "o", device="cpu", show=False)
    assert res["n"] == 9 and (tmp_path / "o" / "confusion_count.png").is_file()


def test_tta_averages_the_logits_of_each_image_and_its_mirror(fake_run, monkeypatch):
    """The model reads the left column only; images hold the age there and 0 elsewhere, so the mirror
    says 0 + 2 years and the flip-averaged age is (age + 2 + 2) / 2."""

    import ordinalage.runs.checkpoint as checkpoint
    from ordinalage.evaluation.evaluate import evaluate_run

    loaded = _fake_loaded(fake_run, fake_run / "best.pt")
    loaded.model.forward = lambda x: x[..., 0].mean(dim=(1, 2)).unsqueeze(1) + 2.0
    monkeypatch.setattr(checkpoint, "load_model", lambda path, device="cpu": loaded)

    def left_column_loader(records, groups, cfg, size, batch_size, train, seed, num_workers=None, **kw):
        for batch in _fake_build_loader(records, groups, cfg, size, batch_size, train, seed):
            if batch is not None:
                batch["image"] = batch["image"].clone()
                batch["image"][..., 1:] = 0
            yield batch

    sys.modules["ordinalage.data.dataset"].build_loader = left_column_loader
    plain = evaluate_run(fake_run, device="cpu", show=False)
    tta = evaluate_run(fake_run, device="cpu", show=False, tta=True)
    assert plain["mae"] == pytest.approx(2.0) and plain["tta"] == "none"
    ages = np.array([3, 8, 14, 25, 33, 47, 52, 66], dtype=float)
    assert tta["mae"] == pytest.approx(np.mean(np.abs((ages + 4) / 2 - ages))) and tta["tta"] == "flip"
    assert Path(tta["out"]) == fake_run / "eval-test-tta" and Path(plain["out"]) == fake_run / "eval-test"
