"""Tiny runs of every benchmark script, so they do not rot (real figures: benchmarks/results/)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def faces(tmp_path: Path) -> Path:
    """A tiny UTKFace-style folder (AGE_GENDER_RACE_DATE.jpg, 200x200)."""
    folder = tmp_path / "utk"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(60):
        img = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"{5 + i}_0_0_2017{i:04d}.jpg.chip.jpg"), img)
    return folder


def load(path: Path) -> dict:
    doc = json.loads(path.read_text())
    for key in ("benchmark", "machine", "versions", "settings"):
        assert key in doc
    assert doc["machine"]["cpus_usable"] >= 1 and doc["versions"]["torch"] == torch.__version__
    return doc


def test_common_records_and_csv_spec(tmp_path, faces):
    import common

    files = common.utkface_files(faces, 5, seed=1)
    assert len(files) == 5 and files == common.utkface_files(faces, 5, seed=1)
    spec = common.write_csv_spec(files, tmp_path / "s.csv")
    rows = (tmp_path / "s.csv").read_text().splitlines()
    assert spec == f"csv:{tmp_path / 's.csv'}" and rows[0] == "path,age" and len(rows) == 6
    assert rows[1].endswith("," + files[0].name.split("_")[0])
    s = common.summary([3.0, 1.0, 2.0])
    assert s["median"] == 2.0 and s["min"] == 1.0 and s["runs"] == [3.0, 1.0, 2.0]
    out = common.write_result("x", {"ratio": 1.5, "settings": {}}, tmp_path / "x.json")
    assert load(out)["ratio"] == 1.5


def test_data_pipeline_smoke(tmp_path, faces):
    import data_pipeline

    out = tmp_path / "dp.json"
    data_pipeline.main(["--data", str(faces), "--images", "8", "--batch-size", "4", "--workers", "0",
                        "--repeats", "1", "--size", "32", "--json", str(out)])
    doc = load(out)
    fig = doc["by_workers"]["0"]
    assert fig["package_images_per_s"]["median"] > 0 and fig["reference_images_per_s"]["median"] > 0
    assert doc["ratio"] == pytest.approx(
        fig["package_images_per_s"]["median"] / fig["reference_images_per_s"]["median"], rel=0.01)


def test_package_and_reference_batches_agree_in_shape_and_scale(faces):
    import data_pipeline

    from ordinalage.models.input_spec import InputSpec

    paths = sorted(faces.iterdir())[:8]
    spec = InputSpec(32)
    pkg = next(iter(data_pipeline.package_loader(paths, 32, 4, 0)))["image"]
    ref = next(iter(data_pipeline.reference_loader(paths, 32, 4, 0, spec)))["image"]
    assert pkg.dtype == torch.uint8 and pkg.shape == ref.shape == (4, 3, 32, 32)
    assert pkg.is_contiguous()  # __getitems__ ships NCHW-contiguous batches
    x = spec.normalize(pkg)
    # same normalisation: both pipelines map noise images to the same value range
    assert abs(x.mean().item() - ref.mean().item()) < 0.5 and abs(x.std().item() - ref.std().item()) < 0.3


def test_train_overhead_smoke(tmp_path):
    import train_overhead

    out = tmp_path / "to.json"
    train_overhead.main(["--steps", "1", "--repeats", "1", "--batch-size", "4", "--device", "cpu",
                         "--json", str(out)])
    doc = load(out)
    assert doc["device"] == "cpu" and doc["image_size"] == 64
    assert doc["package_images_per_s"]["median"] > 0 and doc["bare_images_per_s"]["median"] > 0


def test_end_to_end_smoke(tmp_path, faces, monkeypatch):
    import end_to_end

    from ordinalage.data import loader_workers

    monkeypatch.setenv("ORDINALAGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(loader_workers, "usable_cores", lambda: 2)  # auto -> 0 workers on any machine
    out = tmp_path / "e2e.json"
    end_to_end.main(["--data", str(faces), "--images", "60", "--epochs", "1", "--batch-size", "8",
                     "--settings", "auto:1", "--bare-steps", "1", "--json", str(out)])
    doc = load(out)
    r = doc["by_setting"]["auto:1"]
    assert r["workers"] == "auto" and r["resolved_workers"] == 0 and r["usable_cores"] == 2
    assert r["threads"] == 1 and r["fit_images_per_s"] > 0 and r["fit_epochs_per_s"] > 0
    assert doc["ratio"] == r["ratio"] and doc["headline"]["resolved_workers"] == 0 and doc["bare_epochs_per_s"] > 0


def test_eval_memory_smoke(tmp_path, faces, monkeypatch):
    import eval_memory

    monkeypatch.setenv("ORDINALAGE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "em.json"
    eval_memory.main(["--data", str(faces), "--n", "4", "--repeats", "1", "--workers", "0", "--json", str(out)])
    doc = load(out)
    fig = doc["by_workers"]["0"]
    assert fig["N"]["maxrss_mib"]["median"] > 50  # a process that imported torch
    assert doc["ratio"] == fig["ratio_maxrss"]


def test_tree_rss_counts_this_process():
    import os

    import eval_memory

    assert eval_memory._tree_rss_kib(os.getpid()) > 10_000
    assert eval_memory._tree_rss_kib(2**22 + 7) == 0  # no such process


def test_gpu_script_smoke(tmp_path):
    import gpu

    out = tmp_path / "gpu.json"
    gpu.main(["--smoke", "--json", str(out)])
    doc = load(out)
    run = doc["models"]["resnet18"]["runs"]["channels_last=off,compile=off"]
    assert run["images_per_s"]["median"] > 0 and doc["models"]["resnet18"]["flops_per_step"] > 0
    assert doc["settings"]["peak_tflops_used"] == gpu.H200_BF16_DENSE_TFLOPS
    assert doc["data_path"]["images_per_s_by_workers"]["0"] > 0


def test_flop_count_matches_a_known_answer():
    import gpu

    # resnet18 forward at 224 px is 1.82 GMACs = 3.64 GFLOPs per image; backward is about 2x forward
    flops = gpu.count_flops("resnet18", 224, 1, torch.device("cpu"))
    assert 3 * 3.4e9 < flops < 3 * 3.9e9


def test_improve_utkface_smoke(tmp_path, faces):
    """One factor, two seeds, tiny budget: ablation rows, the winner by validation MAE, the
    combination against the start, flip TTA, and the docs section replaced in place."""
    import improve_utkface

    docs = tmp_path / "results.md"
    docs.write_text("# Results\n\nbefore\n\n<!-- improve:start -->\nold\n<!-- improve:end -->\n\nafter\n")
    argv = ["improve_utkface.py", "--data", str(faces), "--factors", "learning rate", "--seeds", "2",
            "--runs", str(tmp_path / "runs"), "--json", str(tmp_path / "r.json"), "--docs", str(docs),
            "--tuned", str(tmp_path / "none.yaml"), "--device", "cpu", "--config-out", str(tmp_path / "best.yaml"),
            "--set", "train.epochs=1", "--set", "data.image_size=16", "--set", "model.width=4",
            "--set", "data.num_workers=0", "--set", "train.batch_size=16"]
    sys.argv = argv
    assert improve_utkface.main() == 0
    doc = json.loads((tmp_path / "r.json").read_text())
    rows = {a["option"]: a for a in doc["ablations"]}
    assert set(rows) == {"lr-1e-3", "lr-6e-3", "flip-tta"}
    assert rows["lr-1e-3"]["delta_val_mae"] == pytest.approx(rows["lr-1e-3"]["val"]["mae"] - doc["start"]["val"]["mae"])
    vals = {"lr-3e-3": doc["start"]["val"]["mae"], **{k: rows[k]["val"]["mae"] for k in ("lr-1e-3", "lr-6e-3")}}
    assert doc["winners"]["learning rate"]["option"] == min(vals, key=vals.get)
    assert doc["seeds"]["start"]["seeds"] == [0, 1]
    changed = doc["winners"]["learning rate"]["option"] != "lr-3e-3"
    assert ("combined" in doc["seeds"]) == changed == bool(doc["combined_overrides"])
    if changed:
        assert doc["seeds"]["combined"]["seeds"] == [0, 1]
    text = docs.read_text()
    assert text.startswith("# Results\n\nbefore\n") and text.endswith("after\n") and "old" not in text
    assert text.count("<!-- improve:start -->") == 1 and "| learning rate | AdamW 1e-3" in text
    assert (tmp_path / "runs" / "start-seed0" / "eval-test-tta" / "metrics.json").is_file()
    from ordinalage.config import load_config

    best = load_config(tmp_path / "best.yaml")  # the combined model's config resolves over the bake-off's
    assert (best.model.head, best.model.target, best.data.image_size) == ("class", "age", 64)
    if changed:
        assert str(best.train.lr) == doc["combined_overrides"]["train.lr"]
    # a rerun trains nothing new and reports the same numbers
    sys.argv = [*argv, "--report-only"]
    assert improve_utkface.main() == 0
    assert json.loads((tmp_path / "r.json").read_text())["ablations"] == doc["ablations"]


def test_cpu_speed_smoke(tmp_path):
    import cpu_speed

    out = tmp_path / "cs.json"
    cpu_speed.main(["--backbones", "scratch", "--variants", "eager,channels_last,eager-1thread", "--rounds", "1",
                    "--steps", "1", "--batch-size", "4", "--image-size", "32", "--json", str(out)])
    doc = load(out)
    variants = doc["backbones"][0]["variants"]
    assert set(variants) == {"eager", "channels_last", "eager-1thread"}
    assert variants["eager"]["speed_vs_eager"] == 1.0 and variants["eager-1thread"]["threads"] == 1
    assert all(v["images_per_s"] > 0 for v in variants.values())


def test_distill_utkface_smoke(tmp_path):
    import distill_utkface

    from ordinalage.cli import main as cli

    teacher = tmp_path / "teacher"
    sets = ["data.synth_n=120", "data.synth_size=48", "data.image_size=32", "data.num_workers=0", "model.width=8",
            f"data.cache_dir={tmp_path / 'cache'}", "train.device=cpu"]
    argv = ["train", "--head", "class", "--epochs", "1", "--members", "2", "--out", str(teacher)]
    assert cli([*argv, *[a for s in sets for a in ("--set", s)]]) == 0
    out = tmp_path / "d.json"
    assert distill_utkface.main(["--teacher", str(teacher), "--budget", "0.2", "--seeds", "0",
                                 "--runs", str(tmp_path / "runs"), "--json", str(out)]) == 0
    doc = load(out)
    (run,) = doc["runs"]
    assert run["kind"] == "student" and run["test_mae"] > 0 and 0 < run["budget_used"] <= 1.5
    (comparison,) = doc["comparisons"]
    assert comparison["b"] == "teacher" and comparison["n_images"] == doc["teacher"]["n_test"] > 0

    import tta_views

    out = tmp_path / "tta.json"
    assert tta_views.main([str(teacher), "--sets", "none,flip,flip+zoom", "--json", str(out)]) == 0
    rows = {r["views"]: r for r in load(out)["rows"]}
    assert [rows[k]["passes_per_face"] for k in ("none", "flip", "flip+zoom")] == [2, 4, 12]
    assert all(r["val_mae"] > 0 and r["test_mae"] > 0 for r in rows.values())
    assert rows["none"]["val_mae"] != rows["flip"]["val_mae"]
    from ordinalage.evaluation.evaluate import evaluate_run

    for tta, key in ((False, "none"), (True, "flip")):  # the same numbers as the package's own evaluation
        m = evaluate_run(teacher, split="val", show=False, tta=tta, out=tmp_path / f"ev{tta}", workers=0)
        assert m["mae"] == pytest.approx(rows[key]["val_mae"], abs=2e-3)


def test_photo_skew_smoke_on_an_ensemble(tmp_path):
    """The benchmark takes an ensemble's folder (the 30-minute recipe): its faces come from the first
    member's split, and its rows and latency are written whether or not the detector finds the faces."""
    import photo_skew

    from ordinalage.cli import main as cli

    run = tmp_path / "ens"
    sets = ["data.synth_n=120", "data.synth_size=64", "data.image_size=32", "data.num_workers=0", "model.width=8",
            f"data.cache_dir={tmp_path / 'cache'}", "train.device=cpu"]
    argv = ["train", "--head", "class", "--epochs", "1", "--members", "2", "--out", str(run)]
    assert cli([*argv, *[a for s in sets for a in ("--set", s)]]) == 0
    from ordinalage.reporting.card import first_member

    assert not (run / "split.csv").exists() and first_member(run) == run / "member-0"
    out = tmp_path / "p.json"
    assert photo_skew.main(["--run", str(run), "--n", "4", "--detectors", "haar", "--modes", "exposed,jitter",
                            "--variants", "plain", "--latency-n", "2", "--json", str(out)]) == 0
    doc = load(out)
    assert doc["chip_mae"] > 0 and doc["settings"]["n"] == 4
    assert [(r["detector"], r["mode"], r["faces"]) for r in doc["rows"]] == [("haar", "exposed", 4), ("haar", "jitter", 4)]
    assert doc["latency"]["haar"]["photos"] == 2


def test_frame_jitter_smoke(tmp_path):
    """Two tiny models that differ only in data.augment.affine_p, each through photo_skew on its validation faces."""
    import frame_jitter

    config = tmp_path / "tiny.yaml"
    config.write_text("data:\n  augment:\n    affine_p: 0.2\n")
    sets = ["data.synth_n=120", "data.synth_size=64", "data.image_size=32", "data.num_workers=0", "model.width=8",
            f"data.cache_dir={tmp_path / 'cache'}", "train.device=cpu"]
    out = tmp_path / "f.json"
    argv = ["--seeds", "0", "--epochs", "1", "--n", "4", "--config", str(config), "--runs", str(tmp_path / "runs"),
            "--json", str(out), *[a for s in sets for a in ("--set", s)]]
    assert frame_jitter.main(argv) == 0
    doc = load(out)
    assert [(r["kind"], r["affine_p"], r["epochs"]) for r in doc["runs"]] == [("base", 0.2, 1), ("jitter", 0.8, 1)]
    assert {(c["detector"], c["variant"]) for c in doc["cells"]} >= {("haar", "plain"), ("haar", "rot15")}
    assert doc["val_mae"]["base"]["mean"] > 0
    assert frame_jitter.main([*argv, "--report-only"]) == 0 and load(out)["runs"] == doc["runs"]


def test_budget_burst_smoke(tmp_path):
    import budget_burst

    out, run = tmp_path / "bb.json", tmp_path / "run"
    sets = ["data.synth_n=120", "data.synth_size=48", "data.image_size=32", "data.num_workers=0", "model.width=8",
            f"data.cache_dir={tmp_path / 'cache'}", "train.device=cpu"]
    argv = ["--config", str(ROOT / "configs" / "head" / "class.yaml"), "--budget", "15s", "--burst-s", "1", "--burners", "1",
            "--run", str(run), "--json", str(out)]
    assert budget_burst.main(argv + [a for s in sets for a in ("--set", s)]) == 0
    doc = load(out)
    (model,) = doc["models"]
    assert model["probe_ms_per_step"] > 0 and model["epochs"] >= 1 and 0 < doc["budget_used"] <= 1.5
    assert doc["test_mae"] > 0 and doc["wall_minutes"] > 0
    with pytest.raises(SystemExit, match="holds a run already"):
        budget_burst.main(argv)


def test_budget_utkface_smoke(tmp_path):
    import budget_utkface

    out = tmp_path / "bu.json"
    assert budget_utkface.main(["--smoke", "--budgets", "0.3", "--models", "start", "--seeds", "1",
                                "--runs", str(tmp_path / "runs"), "--json", str(out)]) == 0
    doc = load(out)
    (run,) = doc["runs"]
    assert run["model"] == "start" and run["minutes"] == 0.3 and run["epochs"] >= 1
    assert run["test_mae"] > 0 and run["wall_seconds"] > 0 and run["load_avg_before"] is not None
    assert doc["cells"][0]["n"] == 1 and (tmp_path / "runs" / "mae_vs_minutes.png").is_file()
    # a second call reuses the finished run instead of training again
    assert budget_utkface.main(["--smoke", "--budgets", "0.3", "--models", "start", "--seeds", "1",
                                "--runs", str(tmp_path / "runs"), "--json", str(out), "--report-only"]) == 0
    assert load(out)["runs"][0]["wall_seconds"] == run["wall_seconds"]


def test_budget_utkface_assembles_ensembles_and_keeps_recorded_runs(tmp_path):
    import budget_utkface

    out, runs = tmp_path / "bu.json", tmp_path / "runs"
    common = ["--smoke", "--runs", str(runs), "--json", str(out), "--seeds", "1"]
    assert budget_utkface.main([*common, "--budgets", "0.15", "--models", "single", "--seeds", "3"]) == 0
    assert budget_utkface.main([*common, "--budgets", "0.45", "--models", "recipe"]) == 0
    (row,) = load(out)["runs"]
    assert [Path(p).name for p in row["assembled_from"]] == [f"single-0.15min-seed{i}" for i in range(3)]
    assert len(row["epochs"]) == 3 and row["test_mae"] > 0
    assert row["wall_seconds"] > sum(load_summary(runs / f"single-0.15min-seed{i}")["wall_seconds"] for i in range(3))
    # re-decoding the ensemble: the run's own rule (the recipe's median) repeats its test MAE (flip TTA)
    import decode_ensembles

    dec = tmp_path / "dec.json"
    assert decode_ensembles.main([str(runs / "recipe-0.45min-seed0"), "--json", str(dec)]) == 0
    by_split = {r["split"]: r for r in load(dec)["rows"]}
    assert by_split["test"]["run_decoder"] == "median"
    assert by_split["test"]["median"] == pytest.approx(row["test_mae"], abs=1e-4)
    assert len(by_split["val"]["members_mean"]) == 3 and by_split["val"]["mean"] != by_split["val"]["median"]
    # a run that the JSON records but whose folder is gone is reported from the JSON, not trained again
    shutil.rmtree(runs / "recipe-0.45min-seed0")
    assert budget_utkface.main([*common, "--budgets", "0.45", "--models", "recipe", "--report-only"]) == 0
    (again,) = load(out)["runs"]
    assert again["recorded"] and again["test_mae"] == row["test_mae"]


def test_budget_utkface_plot_legend_gives_the_seed_range():
    import budget_utkface

    assert budget_utkface._seeds_label([{"n": 3}, {"n": 3}]) == "n=3"
    assert budget_utkface._seeds_label([{"n": 3}, {"n": 2}, {"n": 3}]) == "n=2-3"


def test_budget_utkface_assembles_only_from_single_runs_of_the_same_settings():
    """The recipe (augmentation 0.8) is never assembled from `single` runs (0.2); the models measured
    with 0.2 are, and they pin 0.2 so that rerunning them repeats their rows."""
    import budget_utkface

    assert budget_utkface.same_but_members("recipe4", "single") and budget_utkface.same_but_members("recipe", "single")
    assert not budget_utkface.same_but_members("jitter4", "single")
    configs = {m: budget_utkface.config_of(type("A", (), {"runs": "r", "smoke": False, "set": []})(), m, 30, 0)
               for m in ("jitter4", "recipe4", "single", "ordinal", "ordinal_jitter")}
    assert {m: c.data.augment.affine_p for m, c in configs.items()} == {
        "jitter4": 0.8, "recipe4": 0.2, "single": 0.2, "ordinal": 0.2, "ordinal_jitter": 0.8}
    assert configs["jitter4"].train.members == 4 and configs["ordinal_jitter"].model.head == "coral"


def load_summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_accuracy_utkface_equal_time_smoke(tmp_path, faces, monkeypatch):
    import accuracy_utkface

    monkeypatch.setenv("ORDINALAGE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "eq.json"
    monkeypatch.setattr(sys, "argv", [
        "accuracy_utkface.py", "--data", str(faces), "--budget", "20s", "--backbones", "scratch",
        "--settings", "coral-years,regression-l1", "--seeds", "1", "--workers", "0", "--runs", str(tmp_path / "runs"),
        "--json", str(out), "--set", "data.image_size=32", "--set", "model.width=8", "--set", "train.batch_size=8"])
    assert accuracy_utkface.main() == 0
    doc = json.loads(out.read_text())
    assert "of wall time per run" in doc["budget"] and len(doc["runs"]) == 2
    assert all(r["budget"]["minutes"] == pytest.approx(1 / 3, abs=1e-3) and r["epochs"] >= 1 for r in doc["runs"])
    assert not (tmp_path / "docs").exists()  # equal-time mode leaves docs/results.md alone


def test_augment_batched_smoke(tmp_path, faces, monkeypatch):
    import augment_batched

    monkeypatch.setattr(augment_batched, "UTKFACE", faces)
    images = augment_batched.faces(4, 32)
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.uint8
    out = augment_batched.albumentations_batch(images)()
    assert len(out) == 4 and all(o.shape == (32, 32, 3) for o in out)
    v2 = augment_batched.torchvision_v2_batch(images)()
    assert all(o.shape == (3, 32, 32) and o.dtype == torch.uint8 for o in v2)
    assert augment_batched.main(["--json", str(tmp_path / "a.json"), "--batch", "4", "--size", "32",
                                 "--repeats", "2", "--loops", "1"]) == 0
    doc = load(tmp_path / "a.json")
    assert {"albumentations", "torchvision_v2"} <= set(doc["by_backend"])
    assert doc["by_backend"]["albumentations"]["core_ms_vs_albumentations"] == 1.0


def test_verdict_calibration_smoke_and_docs_match_the_json(tmp_path):
    """A few simulations per design; and the table in docs/bakeoff.md is the committed JSON's."""
    import verdict_calibration

    sys.argv = ["verdict_calibration.py", "--reps", "5", "--json", str(tmp_path / "c.json")]
    verdict_calibration.main()
    doc = load(tmp_path / "c.json")
    assert len(doc["designs"]) == len(verdict_calibration.DESIGNS)
    assert all(0 <= d["coverage_verdict"] <= 1 for d in doc["designs"])
    committed = json.loads((ROOT / "benchmarks" / "results" / "verdict_calibration.json").read_text())
    docs = (ROOT / "docs" / "bakeoff.md").read_text()
    assert verdict_calibration.docs_block(committed) in docs


def test_verdicts_utkface_smoke(tmp_path):
    """The replication pipeline on synthetic faces: three bake-offs of two heads (whole, half A, half B),
    3 folds, 1 epoch; every pair gets a verdict on both halves and a replication row."""
    import verdicts_utkface

    sys.argv = ["verdicts_utkface.py", "--smoke", "--json", str(tmp_path / "v.json")]
    verdicts_utkface.main()
    doc = load(tmp_path / "v.json")
    assert set(doc["pairs"]) == {"heads", "heads_uniform_mix", "half_a", "half_b"}
    assert len(doc["replication"]) == 1  # the smoke run compares two heads
    for row in doc["replication"]:
        assert row["half_a"] in ("a lower", "b lower", "equivalent", "undecided") and isinstance(row["holds"], bool)
    assert "<!-- verdicts:start -->" in verdicts_utkface.docs_block(doc)


def test_docs_results_verdicts_match_the_json():
    import verdicts_utkface

    path = ROOT / "benchmarks" / "results" / "verdicts_utkface.json"
    assert verdicts_utkface.docs_block(json.loads(path.read_text())) in (ROOT / "docs" / "verdicts_utkface.md").read_text()


def test_zoo_script_refuses_a_finished_run_made_by_another_command(tmp_path: Path, monkeypatch) -> None:
    import zoo_utkface_small as zoo

    from ordinalage.runs.rundir import RunDir

    run = tmp_path / "teacher"
    run.mkdir()
    command = ["train", "--config", str(zoo.ROOT / "configs" / "x.yaml"), "--epochs", "30"]
    RunDir(run).write_summary({"finished": True, "test": {}, "wall_seconds": 120.0,
                               "zoo_command": zoo.portable_command(command)})
    assert zoo.portable_command(command)[2] == "configs/x.yaml"  # comparable across clones
    monkeypatch.setattr(zoo.subprocess, "run", lambda *a, **k: pytest.fail("a finished run was retrained"))
    assert zoo.run_step("teacher", command, run) == 2.0  # the same command: reused, nothing runs
    with pytest.raises(SystemExit, match=r"made by `ordinalage train --config configs/x.yaml --epochs 30`"):
        zoo.run_step("teacher", [*command[:-1], "40"], run)
