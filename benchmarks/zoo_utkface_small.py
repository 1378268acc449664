"""Rebuild the shipped `utkface-small` model from the UTKFace folder's training split.

    python benchmarks/zoo_utkface_small.py                 # teacher, students, package (reuses finished runs)
    python benchmarks/zoo_utkface_small.py --train-only    # the runs, no packaging
    python benchmarks/zoo_utkface_small.py --package-only  # choose and package from finished runs
    python benchmarks/zoo_utkface_small.py --report-only   # rewrite the docs' block from the JSON

Settings come from configs/zoo/utkface_small.yaml. The teacher is `ordinalage train --config
<teacher.config> --epochs <teacher.epochs> --seed <seed> --set ...`; each student candidate is
`ordinalage distill TEACHER --epochs <student.epochs> --seed <seed> --set ... --set <candidate's>`.
The candidate with the lowest validation MAE (flip TTA) ships, evaluated on the test split with flip
TTA (the other candidates' test MAE is reported, never used to choose). Epochs rather than minutes,
so that a busy machine makes the same model, only later. Finished run folders under
benchmarks/runs/zoo_utkface_small/ are reused. Writes benchmarks/results/zoo_utkface_small.json (the
minutes each step took, the validation and test MAE).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import RESULTS, parser, replace_block, write_result  # noqa: E402

from ordinalage.runs.rundir import RunDir  # noqa: E402

SETTINGS = ROOT / "configs" / "zoo" / "utkface_small.yaml"
RUNS = ROOT / "benchmarks" / "runs" / "zoo_utkface_small"
DOCS = ROOT / "docs" / "predict.md"


def load_settings(path: Path = SETTINGS) -> dict[str, Any]:
    """The zoo model's recipe: teacher config and minutes, student minutes, seed, temperature."""
    settings = yaml.safe_load(path.read_text())
    settings["teacher"]["config"] = str((path.parent / settings["teacher"]["config"]).resolve())
    return settings


def finished(run_dir: Path) -> bool:
    summary = RunDir(run_dir).read_summary(tolerant=True)
    return bool(summary.get("finished")) and "test" in summary


def portable_command(command: list[str]) -> list[str]:
    """The command with paths inside the repository written relative to it (comparable across clones)."""
    return [arg.replace(f"{ROOT}/", "") for arg in command]


def run_step(label: str, command: list[str], run_dir: Path) -> float:
    """Run one `ordinalage` command into `run_dir` unless it finished before; return its wall minutes.
    A finished folder made by another command (recorded as `zoo_command` in its summary) is refused."""
    if finished(run_dir):
        summary = RunDir(run_dir).read_summary()
        made_by = summary.get("zoo_command")
        if made_by is not None and made_by != portable_command(command):
            sys.exit(f"{run_dir}: made by `ordinalage {' '.join(made_by)}`, not by the settings' "
                     f"`ordinalage {' '.join(portable_command(command))}`; move the folder away to retrain it")
        return float(summary.get("wall_seconds") or 0.0) / 60
    print(f"[zoo] {label}: {' '.join(command)}", file=sys.stderr)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ordinalage", *command, "--out", str(run_dir)], check=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    RunDir(run_dir).update_summary(wall_seconds=seconds, zoo_command=portable_command(command))
    return seconds / 60


def candidates(settings: dict[str, Any]) -> dict[str, list[str]]:
    """The student candidates: name -> their `--set` items beside the student's own (one unnamed
    candidate when the settings list none)."""
    return {str(name): list(items or []) for name, items in (settings["student"].get("candidates") or {"": []}).items()}


def image_size(run_dir: Path) -> int:
    """The input side (px) a run's model reads."""
    from ordinalage.config import load_config

    return int(load_config(run_dir / "config.yaml").data.image_size)


def student_dir(runs: Path, name: str) -> Path:
    return runs / (f"student-{name}" if name else "student")


def train_runs(settings: dict[str, Any], runs: Path = RUNS) -> dict[str, Any]:
    """Train the teacher and distil each student candidate; return each run's minutes and scores."""
    teacher = runs / "teacher"
    t, s = settings["teacher"], settings["student"]
    sets = [arg for item in t.get("set", []) for arg in ("--set", item)]
    minutes = {"teacher": run_step("teacher", ["train", "--config", t["config"], "--epochs", str(t["epochs"]),
                                               "--seed", str(t["seed"]), *sets], teacher)}
    dirs = {"teacher": teacher}
    for name, extra in candidates(settings).items():
        sets = [arg for item in [*s.get("set", []), *extra] for arg in ("--set", item)]
        key = f"student {name}".strip()
        dirs[key] = student_dir(runs, name)
        minutes[key] = run_step(key, ["distill", str(teacher), "--epochs", str(s["epochs"]), "--seed", str(s["seed"]),
                                      "--temperature", str(s["temperature"]), *sets], dirs[key])
    rows: dict[str, Any] = {}
    for key, run_dir in dirs.items():
        summary = RunDir(run_dir).read_summary()
        rows[key] = {"run_dir": str(run_dir.relative_to(ROOT)), "minutes": round(minutes[key], 1),
                     "image_size": image_size(run_dir),
                     "val_mae": summary.get("best_value"), "test_mae": (summary.get("test") or {}).get("mae"),
                     "epochs": summary.get("epochs_done")}
    rows["cpu_minutes_total"] = round(sum(minutes.values()), 1)
    return rows


def choose_student(settings: dict[str, Any], runs: Path = RUNS) -> dict[str, Any]:
    """Each candidate's validation MAE with flip TTA (`ordinalage evaluate STUDENT --split val --tta`);
    the lowest ships. The test MAE (flip TTA) of the other candidates and the teacher's validation MAE
    are measured after the choice, for the report (the chosen one's test: `package`)."""
    from ordinalage.evaluation.evaluate import evaluate_run

    def mae(run: Path, split: str) -> float:
        return round(float(evaluate_run(run, split=split, tta=True, show=False)["mae"]), 4)

    val = {name: mae(student_dir(runs, name), "val") for name in candidates(settings)}
    chosen = min(val, key=val.__getitem__)
    return {"val_mae_tta": val, "chosen": chosen, "teacher_val_mae_tta": mae(runs / "teacher", "val"),
            "test_mae_tta": {name: mae(student_dir(runs, name), "test") for name in val if name != chosen}}


def evaluate_student(student: Path) -> dict[str, Any]:
    """The student on the test split with flip TTA: metrics, 90% intervals (calibration.json), error by
    age, gender and race, and MODEL_CARD.md (`ordinalage evaluate STUDENT --tta --interval 0.9 --by
    gender,race --calibrate`)."""
    from ordinalage.evaluation.evaluate import evaluate_run

    return evaluate_run(student, tta=True, interval=0.9, by=["gender", "race"], calibrate=True, show=False)


def package(settings: dict[str, Any], choice: dict[str, Any], runs: Path = RUNS, root: Path | None = None) -> dict[str, Any]:
    """Evaluate the chosen student and write it into the package's zoo (ordinalage/zoo/models/)."""
    from ordinalage.zoo.catalog import ZOO_DIR
    from ordinalage.zoo.package import package_model

    student, teacher = student_dir(runs, choice["chosen"]), runs / "teacher"
    metrics = evaluate_student(student)
    teacher_test = (RunDir(teacher).read_summary().get("test") or {}).get("mae")
    measured = {"test_mae": round(float(metrics["mae"]), 3), "test_one_off": round(float(metrics["one_off"]), 4),
                "test_ca5": round(float(metrics.get("ca5", float("nan"))), 4),
                "n_test": int(metrics["n"]), "image_size": image_size(student),
                "val_mae": choice["val_mae_tta"][choice["chosen"]],
                "teacher_test_mae": teacher_test, "split": "UTKFace folder, test split (split_seed 0), flip TTA"}
    model = package_model(student, settings["name"], root=root or ZOO_DIR,
                          description=settings["description"].format(image_size=image_size(student)),
                          license=settings["license"], data=settings["data"],
                          metrics=measured, card=Path(metrics["out"]) / "MODEL_CARD.md")
    size = sum((model.path / name).stat().st_size for name in model.files)
    return {"model": model.name, "metrics": measured, "files": model.files, "bytes": size}


def docs_block(result: dict[str, Any]) -> str:
    """The shipped model's numbers for docs/predict.md, from zoo_utkface_small.json."""
    runs, pkg, choice = result["runs"], result["package"], result["choice"]
    m, t = pkg["metrics"], runs["teacher"]
    sizes = [f"{runs[f'student {name}'.strip()]['image_size']}" for name in choice["val_mae_tta"]]
    students = (f"of {len(sizes)} students, the same network on {', '.join(sizes[:-1])} and {sizes[-1]} px faces, the one "
                "with the lowest validation MAE ships" if len(sizes) > 1 else "one student")
    lines = ["<!-- zoo:start -->",
             f"It was distilled from an ensemble of four networks of the 30-minute recipe ({t['image_size']} px), all "
             f"trained on the UTKFace folder's training split; {students}:",
             "",
             "| | input | val MAE | test MAE | [one-off](glossary.md#one-off) | "
             "[CA(5)](glossary.md#can-cumulative-accuracy) | wall minutes (shared 2-core CPU) | epochs |",
             "|---|---|---|---|---|---|---|---|",
             f"| teacher: four networks averaged | {t['image_size']} px | {choice['teacher_val_mae_tta']:.2f} | "
             f"{t['test_mae']:.2f} | | | {t['minutes']:.0f} | {result['settings']['teacher']['epochs']} each |"]
    for name, val in choice["val_mae_tta"].items():
        st = runs[f"student {name}".strip()]
        if name == choice["chosen"]:
            lines.append(f"| **`utkface-small`**: one network | {st['image_size']} px | **{val:.2f}** | "
                         f"**{m['test_mae']:.2f}** | {m['test_one_off']:.3f} | {m['test_ca5']:.3f} | "
                         f"{st['minutes']:.0f} | {st['epochs']} |")
        else:
            lines.append(f"| student candidate | {st['image_size']} px | {val:.2f} | "
                         f"{choice['test_mae_tta'][name]:.2f} | | | {st['minutes']:.0f} | {st['epochs']} |")
    lines += ["",
              f"MAE in years, every model evaluated with flip TTA; the student with the lowest validation MAE ships. "
              f"Test: {m['n_test']} faces of the UTKFace folder (split_seed 0). {runs['cpu_minutes_total']:.0f} CPU "
              f"minutes in all; the model's folder in the package is {pkg['bytes'] / 2**20:.1f} MB "
              "(benchmarks/results/zoo_utkface_small.json).",
              "<!-- zoo:end -->"]
    return "\n".join(lines)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--train-only", action="store_true")
    p.add_argument("--package-only", action="store_true")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--runs", default=str(RUNS))
    args = p.parse_args()
    if args.report_only:
        replace_block(DOCS, docs_block(json.loads((RESULTS / "zoo_utkface_small.json").read_text(encoding="utf-8"))))
        return
    settings = load_settings()
    result: dict[str, Any] = {"settings": settings}
    runs = Path(args.runs)
    needed = [runs / "teacher", *(student_dir(runs, name) for name in candidates(settings))]
    if args.package_only and not all(finished(run) for run in needed):
        sys.exit(f"{runs}: the teacher and every student must have finished (run without --package-only)")
    result["runs"] = train_runs(settings, runs)  # finished runs are reused
    if not args.train_only:
        result["choice"] = choose_student(settings, runs)
        result["package"] = package(settings, result["choice"], runs)
    write_result("zoo_utkface_small", result, args.json)
    if "package" in result and not args.json:
        replace_block(DOCS, docs_block(result))


if __name__ == "__main__":
    main()
