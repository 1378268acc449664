"""The commands that apply a trained model: `predict` (photos), `live` (camera or video), `serve`
(browser page and HTTP API) and `export` (ONNX or TorchScript). `--model` (or a leading MODEL
positional) is a shipped model's name, a run folder (an ensemble's too) or a checkpoint file; without
one, predict, live and serve use the shipped utkface-small and say so on stderr.

The inference options where the library supports them: --tta on predict, live and serve;
--ensemble on predict, live and export; --prior on predict, live and serve; --interval on predict
and serve. Not offered: --interval on live (the overlay draws no interval), --ensemble on serve
(several MODELs are served side by side, ?model=INDEX), and --tta/--prior/--interval on export (the
exported graph gives the network's outputs; they apply when its predictions are read)."""

from __future__ import annotations

import argparse
from typing import Any

from ordinalage.cli.options import (
    add_batch_size,
    add_detector,
    add_device,
    add_ensemble,
    add_interval,
    add_json,
    add_model,
    add_out,
    add_prior,
    add_tta,
    model_of,
    print_json,
)
from ordinalage.cli.parser import add_command, add_deprecated, tag
from ordinalage.cli.types import resolve_detector

MODEL_HELP = "a run folder (an ensemble's too) or a checkpoint file"


def _chosen(model: str | None, detector: str | None = None) -> str:
    """The model to load (the shipped default when None), after saying its notices once on stderr."""
    import sys

    from ordinalage.inference.model_choice import model_notices, resolve_model

    resolved = resolve_model(model)
    for line in model_notices(resolved, detector):
        print(f"ordinalage: {line}", file=sys.stderr)
    return str(resolved.path)


def predict(args: argparse.Namespace) -> int:
    from ordinalage.inference.model_choice import split_model
    from ordinalage.inference.predict import run_predict

    name = resolve_detector(args.detector)
    detect, detector = ("none", None) if name == "none" else ("haar", name)
    model, inputs = split_model(args.model, args.inputs)
    result = run_predict(_chosen(model, detector), inputs, detect=detect, csv_path=args.csv,
                         annotate=args.annotate, device=args.device, batch_size=args.batch_size,
                         show=not args.json, tta=args.tta, prior=args.prior, interval=args.interval,
                         ensemble=args.ensemble or (), detector=detector)
    if args.json:
        print_json({"results": result})
    return 0


def live(args: argparse.Namespace) -> int:
    from ordinalage.inference.live import run_live

    result = run_live(_chosen(model_of(args), resolve_detector(args.detector)), source=args.source, output=args.out,
                      every=args.every, device=args.device,
                      max_frames=args.max_frames, tta=args.tta, ensemble=args.ensemble or (),
                      detector=resolve_detector(args.detector), prior=args.prior)
    if args.json:
        print_json(result)
    return 0


def serve(args: argparse.Namespace) -> int:
    from ordinalage.inference.serve import run_server

    detector = resolve_detector(args.detector)
    models = [*args.models, *([args.model] if args.model else [])] or [None]
    run_server([_chosen(m, detector) for m in models], host=args.host, port=args.port, max_mb=args.max_mb, device=args.device,
               max_pixels=args.max_pixels, prior=args.prior, interval=args.interval,
               detector=resolve_detector(args.detector), tta=args.tta)
    return 0


def export(args: argparse.Namespace) -> int:
    from ordinalage.errors import UsageError
    from ordinalage.inference.export import run_export

    if model_of(args) is None:
        raise UsageError("export: name the model to export (--model NAME|RUN|CHECKPOINT)", option="model")
    result = run_export(_chosen(model_of(args)), fmt=args.format, out=args.out,
                        ensemble=args.ensemble or ())
    if args.json:
        print_json(result)
    return 0


def _predict_parser(sub: Any) -> None:
    p = add_command(sub, "predict", help="age of every face in photos",
                    example=["ordinalage predict runs/coral30 photos/ --json",
                             "ordinalage predict runs/coral30 face.jpg --detector none --tta --interval 0.9"])
    p.add_argument("inputs", nargs="+", metavar="[MODEL] IMAGE_OR_FOLDER",
                   help="images, or folders of images; a first one that is a run folder or checkpoint is the model "
                        "(as --model)")
    add_model(p, default_shipped=True)
    add_detector(p, allow_none=True)
    add_deprecated(p, "--detect", "--detector", dest="detector", choices=("haar", "none"))
    tag(p.add_argument("--csv", metavar="FILE", help="file: also write the faces as CSV"), "csv")
    tag(p.add_argument("--annotate", metavar="DIR", help="folder: copies of the images with boxes and ages"),
        "annotate")
    add_device(p)
    add_batch_size(p, "(faces per model call)", default=64)
    add_tta(p)
    add_prior(p, "em: estimated from each batch of faces (better: a file from `prior estimate`)")
    add_interval(p, "adds age_lo/age_hi (needs `evaluate --interval` run once on the run)")
    add_ensemble(p)
    add_json(p, '{"results": [one object per face]}')
    p.set_defaults(func=predict)


def _live_parser(sub: Any) -> None:
    p = add_command(sub, "live", help="webcam or video file with an age label on each face",
                    description="webcam or video file with an age label on each face (no --interval: the "
                    "overlay draws no interval)",
                    example=["ordinalage live runs/coral30", "ordinalage live runs/coral30 --source clip.mp4 "
                             "--out annotated.mp4 --json"])
    add_model(p, default_shipped=True, positional=MODEL_HELP)
    tag(p.add_argument("--source", default="0", help="camera index or video file"), "source")
    add_out(p, "file", "write the annotated video (mp4) here instead of showing a window", metavar="VIDEO")
    add_deprecated(p, "--output", "--out", dest="out", metavar="VIDEO")
    tag(p.add_argument("--every", type=int, default=1, metavar="N", help="run the model every N frames"), "every")
    tag(p.add_argument("--max-frames", type=int, default=None, dest="max_frames", metavar="N",
                       help="stop after N frames (default: the whole stream)"), "max-frames")
    add_device(p)
    add_tta(p)
    add_ensemble(p)
    add_prior(p, "not em (a frame holds too few faces: estimate a file with `prior estimate`)")
    add_detector(p)
    add_json(p, "the summary (frames, faces, tracks, fps, output)")
    p.set_defaults(func=live)


def _serve_parser(sub: Any) -> None:
    p = add_command(sub, "serve", help="browser page and HTTP API (POST /predict) over one or more models",
                    description="browser page and HTTP API (POST /predict) over one or more models (no "
                    "--ensemble: several MODELs are served side by side; an ensemble run folder is averaged)",
                    example="ordinalage serve runs/coral30 --port 8000 --interval 0.9")
    p.add_argument("models", nargs="*", metavar="MODEL", help=MODEL_HELP + "; several: ?model=INDEX picks one")
    add_model(p, default_shipped=True)
    tag(p.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1: this machine only)"), "host")
    tag(p.add_argument("--port", type=int, default=8000, help="port to listen on"), "port")
    tag(p.add_argument("--max-mb", type=float, default=10, dest="max_mb", metavar="MB",
                       help="largest upload in MB (413 above)"), "max-mb")
    tag(p.add_argument("--max-pixels", type=int, default=50_000_000, dest="max_pixels", metavar="N",
                       help="largest image in pixels (413 above)"), "max-pixels")
    add_device(p)
    add_tta(p)
    add_prior(p, "not em (one photo at a time: estimate a file with `prior estimate`)")
    add_interval(p, "adds age_lo/age_hi (needs `evaluate --interval` run once on the run)")
    add_detector(p)
    p.set_defaults(func=serve)


def _export_parser(sub: Any) -> None:
    p = add_command(sub, "export", help="export a model to ONNX or TorchScript, checked on the spot",
                    description="export a model to ONNX or TorchScript, checked on the spot (the graph gives the "
                    "network's outputs: --tta, --prior and --interval apply where its predictions are read, "
                    "so export has none of them)",
                    example="ordinalage export runs/coral30 --format onnx --out coral30.onnx --json")
    add_model(p, default_shipped=False, positional=MODEL_HELP)
    tag(p.add_argument("--format", choices=("onnx", "torchscript"), required=True, help="the file format"), "format")
    add_out(p, "file", "the model file to write (.onnx or .pt)", required=True)
    add_ensemble(p, ", in one graph")
    add_json(p, "the check of the export")
    p.set_defaults(func=export)


def register(sub: Any) -> None:
    _predict_parser(sub)
    _live_parser(sub)
    _export_parser(sub)
    _serve_parser(sub)
