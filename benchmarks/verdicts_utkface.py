"""The published UTKFace head bake-offs redone with folds, and their verdicts replicated across halves.

Three bake-offs (8 epochs per cell, 5 folds of `data.protocol=folds:5`, seed 0, no loader workers),
each an ordinary `ordinalage bakeoff` folder:

    heads:   the heads of configs/bakeoff/heads_utkface.yaml on the whole shared UTKFace folder
             (the field's heads join it with --field)
    half_a:  class, class_dldl and CORN (configs/bakeoff/replication_heads_utkface.yaml), whose
             published verdicts did not replicate, on half A of the folder by content hash (as
             benchmarks/transfer_utkface.py splits it)
    half_b:  the same on half B

Folds give every run its own test faces, so the verdict's interval covers training noise and
test-set noise. The replication table says, for every pair of heads, whether the verdict reached on
half A holds on half B: a "lower" verdict that the other half reverses is a failure of the
statistics. Writes benchmarks/results/verdicts_utkface.json and copies each bake-off's bakeoff.json
and bakeoff.md under benchmarks/results/verdicts_utkface/.

    python benchmarks/verdicts_utkface.py                # train what is missing (hours on 2 cores), then report
    python benchmarks/verdicts_utkface.py --report-only  # recompute the statistics from finished cells
    python benchmarks/verdicts_utkface.py --smoke        # synthetic faces, 1 epoch, tiny network (seconds)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, ROOT, UTKFACE, parser, replace_block, utkface_files, write_csv_spec, write_result  # noqa: E402
from transfer_utkface import split_halves  # noqa: E402

HEADS = ROOT / "configs" / "bakeoff" / "heads_utkface.yaml"
FIELD = ROOT / "configs" / "bakeoff" / "field_heads_utkface.yaml"
REPLICATION = ROOT / "configs" / "bakeoff" / "replication_heads_utkface.yaml"
SETS = ["data.protocol=folds:5", "data.num_workers=0", "train.device=cpu"]


def bakeoff(out: Path, config: Path, data: str | None, epochs: int, extra: list[str], analysis: list[str],
            report_only: bool) -> dict[str, Any]:
    """Run (or, with report_only, only re-report) one bake-off through the command line; its bakeoff.json."""
    config_arg = str(config.relative_to(ROOT)) if config.is_relative_to(ROOT) else str(config)  # as the spec records it
    cmd = [sys.executable, "-m", "ordinalage", "bakeoff", "--config", config_arg, "--epochs", str(epochs),
           "--seeds", "1", "--out", str(out), *analysis]
    if data:
        cmd += ["--data", data]
    for item in [*SETS, *extra]:
        cmd += ["--set", item]
    if report_only:
        cmd.append("--report-only")
    print("$ " + " ".join(cmd), file=sys.stderr)
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    if rc not in (0, 3):
        sys.exit(f"bake-off in {out} failed with exit status {rc}")
    return json.loads((out / "bakeoff.json").read_text(encoding="utf-8"))


def _relative(spec: str) -> str:
    """`csv:PATH` relative to the repository when it lies inside it (the spec names the bake-off's cells,
    so the same folder gives the same spec from any working directory)."""
    kind, _, path = spec.partition(":")
    try:
        return f"{kind}:{Path(path).resolve().relative_to(ROOT)}"
    except ValueError:
        return spec


def replication(first: dict[str, Any], second: dict[str, Any]) -> list[dict[str, Any]]:
    """Per pair: the verdict on each half and whether it holds (a reversal is a 'lower' verdict on one half
    against the opposite 'lower' on the other)."""
    other = {(p["a"], p["b"]): p for p in second["pairs"]}
    rows = []
    for p in first["pairs"]:
        q = other.get((p["a"], p["b"]))
        if q is None:
            continue
        va, vb = p["verdict"], q["verdict"]
        reversed_ = {va, vb} == {"a lower", "b lower"}
        rows.append({"a": p["a"], "b": p["b"], "half_a": va, "half_b": vb,
                     "diff_a": p["mae_diff"], "ci_a": p["ci"], "diff_b": q["mae_diff"], "ci_b": q["ci"],
                     "holds": va == vb, "reversed": reversed_})
    return rows


DOCS = ROOT / "docs" / "verdicts_utkface.md"
START, END = "<!-- verdicts:start -->", "<!-- verdicts:end -->"


def _ci(ci: list[float] | None) -> str:
    return "-" if ci is None else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def _said(p: dict[str, Any]) -> str:
    from ordinalage.reporting.verdict_text import named_verdict

    return named_verdict(p)


def docs_block(doc: dict[str, Any]) -> str:
    """docs/results.md's section on the redone verdicts, from verdicts_utkface.json."""
    s = doc["settings"]
    lines = [START, "", f"Settings: {s['config']}, {s['epochs']} epochs per cell, "
             f"`{' '.join('--set ' + x for x in s['sets'])}`, seed 0, rope ±{s['rope']:g} years, the test "
             "set's age mix. Reproduce: `python benchmarks/verdicts_utkface.py` "
             "([JSON](../benchmarks/results/verdicts_utkface.json)).", ""]
    if "heads" in doc["pairs"]:
        methods = doc["methods"]["heads"]
        first = next((p for p in doc["pairs"]["heads"] if p.get("n_test_sets")), {"n_images": 0, "n_test_sets": 1})
        lines += [f"Whole folder, 5 folds (every run tests its own faces, {first['n_images']} in all; "
                  "[bakeoff.md](../benchmarks/results/verdicts_utkface/heads/bakeoff.md)):", "",
                  "| method | folds | test MAE (mean ± sd over folds) |", "|---|---|---|"]
        lines += [f"| {m['method']} | {m['n_cells']}/{m['n_expected']} | "
                  + ("-" if m["mae"] is None else f"{m['mae']:.2f} ± {m['mae_std']:.2f}") + " |" for m in methods]
        lines += ["", "| a | b | MAE a - b | interval | images only | verdict |", "|---|---|---|---|---|---|"]
        for p in doc["pairs"]["heads"]:
            diff = "-" if p["mae_diff"] is None else f"{p['mae_diff']:+.3f}"
            lines.append(f"| {p['a']} | {p['b']} | {diff} | {_ci(p['ci'])} | {_ci(p['ci_images'])} | {_said(p)} |")
        undecided = [f"{p['a']}-{p['b']}" for p in doc["pairs"]["heads"] if p["verdict"] == "undecided"]
        lines += ["", f"Undecided at this many runs: {', '.join(undecided) or 'none'}."]
        if "heads_uniform_mix" in doc["pairs"]:
            test_mix = {(p["a"], p["b"]): p for p in doc["pairs"]["heads"]}
            changed = [f"{p['a']}-{p['b']} ({_said(test_mix[(p['a'], p['b'])])} -> {_said(p)})"
                       for p in doc["pairs"]["heads_uniform_mix"] if p["verdict"] != test_mix[(p["a"], p["b"])]["verdict"]]
            lines += ["", "For a uniform age mix (`--age-mix uniform`: every age group weighs the same), the verdicts that "
                      f"change: {'; '.join(changed) or 'none'}."]
        plan = doc.get("plan")
        if plan:
            designs = [r for r in plan["pairs"] if r["folds_design"]]
            need = "; ".join(f"{r['a']}-{r['b']} {r['folds_design']['folds']} x {r['folds_design']['seeds']}"
                             for r in designs)
            if len(designs) > 10:  # the field's 45 pairs: the largest need only
                most = max(designs, key=lambda r: r["folds_design"]["folds"] * r["folds_design"]["seeds"])
                need = (f"from {min(r['folds_design']['folds'] * r['folds_design']['seeds'] for r in designs)} runs up to "
                        f"{most['folds_design']['folds']} x {most['folds_design']['seeds']} ({most['a']}-{most['b']})")
            floors = [r["test_noise_floor"] for r in plan["pairs"]]
            cost = plan.get("folds_design_cpu_minutes")
            lines += ["", f"`ordinalage bakeoff plan` on this bake-off, for ±{plan['halfwidth']:g}-year intervals "
                      f"(folds x seeds per pair): {need}"
                      + (f"; every pair at once: about {cost:.0f} CPU minutes" if cost else "")
                      + f". On one fixed split no number of seeds gets there: its {plan['pairs'][0]['test_images']:.0f} "
                      f"test images alone leave ±{min(floors):.2f} to ±{max(floors):.2f} years."]
    h = s["halves"]
    lines += ["", f"Replication: the folder split in two halves by content hash (A {h['half_a']} faces, B "
              f"{h['half_b']}), the same 5-fold bake-off of class, class_dldl and CORN on each "
              "([A](../benchmarks/results/verdicts_utkface/half_a/bakeoff.md), "
              "[B](../benchmarks/results/verdicts_utkface/half_b/bakeoff.md)):", "",
              "| a | b | half A | interval A | half B | interval B | holds |", "|---|---|---|---|---|---|---|"]
    for r in doc["replication"]:
        holds = "yes" if r["holds"] else ("**reversed**" if r["reversed"] else "no (one side undecided)")
        said_a, said_b = (_said({"a": r["a"], "b": r["b"], "verdict": r[h]}) for h in ("half_a", "half_b"))
        lines.append(f"| {r['a']} | {r['b']} | {said_a} | {_ci(r['ci_a'])} | {said_b} | {_ci(r['ci_b'])} | {holds} |")
    lines += ["", f"{doc['held']} of {len(doc['replication'])} verdicts are the same on both halves; "
              f"{doc['reversed']} reversed.", "", END]
    return "\n".join(lines)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data", default=str(UTKFACE))
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "runs" / "verdicts_utkface"))
    p.add_argument("--report-only", action="store_true", help="recompute the statistics from finished cells")
    p.add_argument("--field", action="store_true", help="also the field's heads on the whole folder")
    p.add_argument("--halves-only", action="store_true", help="skip the whole-folder bake-off")
    p.add_argument("--smoke", action="store_true", help="synthetic faces, 1 epoch, tiny network")
    p.add_argument("--docs-only", action="store_true", help="rewrite docs/results.md's section from the JSON")
    args = p.parse_args()
    if args.docs_only:
        replace_block(DOCS, docs_block(json.loads((RESULTS / "verdicts_utkface.json").read_text(encoding="utf-8"))))
        return
    out = Path(args.out)
    extra: list[str] = []
    epochs = args.epochs
    heads, replicate = HEADS, REPLICATION
    if args.smoke:
        from ordinalage.data.synth import write_synth

        root = Path(tempfile.mkdtemp(prefix="verdicts-smoke-"))
        folder = root / "faces"  # apart from the outputs: the utkface reader looks into sub-folders
        write_synth(folder, n=300, seed=0, size=32)
        files = sorted(folder.glob("*.jpg"))
        out = root / "out"
        epochs = 1
        heads = root / "heads.yaml"  # two of the heads, so that the smoke run takes seconds
        heads.write_text(f"run_config: {ROOT / 'configs' / 'experiments' / 'utkface_bakeoff.yaml'}\n"
                         "methods:\n  class: {model.head: class}\n  coral: {model.head: coral}\n")
        replicate = heads
        extra = ["data.image_size=32", "model.width=8", "train.batch_size=32", "data.protocol=folds:3"]
    else:
        files = utkface_files(args.data)
    out.mkdir(parents=True, exist_ok=True)
    a, b = split_halves(files, 0)
    spec_a = _relative(write_csv_spec(a, out / "half_a.csv"))
    spec_b = _relative(write_csv_spec(b, out / "half_b.csv"))
    whole = f"utkface:{folder}" if args.smoke else None
    rope = 0.1
    analysis = ["--rope", str(rope), "--age-mix", "test"]
    results: dict[str, Any] = {}
    if not args.halves_only:  # the uniform age mix first, so that the folder's files end with the test mix
        uniform = ["--rope", str(rope), "--age-mix", "uniform"]
        family = FIELD if args.field else heads  # the same pairs under both mixes: Holm depends on how many
        results["heads_uniform_mix"] = bakeoff(out / "heads", family, whole, epochs, extra, uniform, args.report_only)
        results["heads"] = bakeoff(out / "heads", family, whole, epochs, extra, analysis, True)
    results["half_a"] = bakeoff(out / "half_a", replicate, spec_a, epochs, extra, analysis, args.report_only)
    results["half_b"] = bakeoff(out / "half_b", replicate, spec_b, epochs, extra, analysis, args.report_only)
    table = replication(results["half_a"], results["half_b"])
    plan = None
    if "heads" in results:
        from ordinalage.comparison.planner import plan as plan_runs

        plan = plan_runs(out / "heads", 0.1)
    if not args.smoke:
        for name in ("heads", "half_a", "half_b"):
            dest = RESULTS / "verdicts_utkface" / name
            dest.mkdir(parents=True, exist_ok=True)
            for f in ("bakeoff.json", "bakeoff.md"):
                shutil.copy(out / name / f, dest / f)
    path = write_result("verdicts_utkface", {
        "settings": {"config": str((FIELD if args.field and not args.halves_only else HEADS).relative_to(ROOT)), "replication_config": str(REPLICATION.relative_to(ROOT)),
                     "epochs": epochs, "sets": SETS + extra, "seeds": 1,
                     "halves": {"split_seed": 0, "half_a": len(a), "half_b": len(b)}, "smoke": args.smoke,
                     "rope": rope, "age_mix": "test"},
        "methods": {name: r["methods"] for name, r in results.items()},
        "pairs": {name: r["pairs"] for name, r in results.items()},
        "pairs_by_group": {name: r["pairs_by_group"] for name, r in results.items()},
        "group_disagreement": results.get("heads", {}).get("group_disagreement", []),
        "plan": plan,
        "replication": table,
        "reversed": sum(r["reversed"] for r in table),
        "held": sum(r["holds"] for r in table),
    }, out=args.json or (out / "smoke.json" if args.smoke else None))
    if not args.smoke and not args.json:
        replace_block(DOCS, docs_block(json.loads(path.read_text(encoding="utf-8"))))


if __name__ == "__main__":
    main()
