"""`framewatch data`, `train`, `report`, `evaluate-clip` and `export`: the training side's commands.
Parsers are built without importing torch; handlers import it when they run."""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path
from typing import TYPE_CHECKING

from framewatch.cli.settings import add_log_flags
from framewatch.errors import FrameWatchError

if TYPE_CHECKING:
    from framewatch.training.config import TrainConfig


def _synth(args: argparse.Namespace) -> int:
    from framewatch.training.synth import write_dataset

    counts = {"train": args.train, "val": args.val, "test": args.test}
    written = write_dataset(args.out, counts, args.seed, args.image_size, progress=not args.quiet, cue_scale=args.cue_scale)
    print(f"wrote {written} to {args.out} (labels: non-violent, violent; see training/synth.py for how text and image relate to the label)")
    return 0


def _check(args: argparse.Namespace) -> int:
    from framewatch.training.datacheck import check_dataset, print_report, write_report

    if not args.data.exists():
        raise FrameWatchError(f"data {args.data} does not exist (a data folder, or a .jsonl manifest)")
    report = check_dataset(args.data, args.text_encoder, args.text_max_length, args.image_size, args.near_bits, progress=not args.quiet,
                           needs_text=not args.image_only)
    out = args.json or ((args.data.parent if args.data.is_file() else args.data) / "data_check.json")
    write_report(report, out)
    print_report(report)
    print(f"report: {out}")
    return 1 if report["problems"] else 0


def _preview(args: argparse.Namespace) -> int:
    from framewatch.training.preview import write_preview

    out = write_preview(args.data, args.out, args.augment, args.samples, args.variants, args.image_size, args.seed)
    print(f"wrote {out}")
    return 0


def _from_videos(args: argparse.Namespace) -> int:
    import json

    from framewatch.training.fromvideo import frames_from_videos

    summary = frames_from_videos(args.manifest, args.out, args.image_size, args.sample_fps, args.keyframes_only, args.interpolation,
                                 args.labels.split(",") if args.labels else None, args.seed, progress=not args.quiet)
    for failure in summary["failed"]:
        print(f"skipped: {failure}", file=sys.stderr)
    for nothing in summary["empty"]:
        print(f"no frames: {nothing}", file=sys.stderr)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("failed", "empty")}))
    print(f"wrote {sum(summary['frames'].values())} frames to {args.out}; train with `framewatch train --data {args.out} --image-size {args.image_size}`")
    return 0


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per field of the training schema (framewatch.training.config.TrainConfig); each
    help line shows the schema's default. Flags left out keep the recipe's value."""
    from framewatch.training.config import RECIPES_DIR, TrainConfig

    parser.add_argument("--config", metavar="RECIPE", default=None,
                        help="a recipe YAML file, or the name of a shipped one (training/recipes/: "
                        + ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))) + ")")
    booleans = {name for name, field in TrainConfig.model_fields.items() if field.annotation is bool}
    skip = {"freeze_text", "progress"}
    for name, field in TrainConfig.model_fields.items():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        default = " (required)" if field.is_required() else "" if field.default is None else f" (default {field.default})"
        text = f"{field.description or ''}{default}".strip()
        if name in booleans:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif typing.get_origin(field.annotation) is typing.Literal:
            parser.add_argument(flag, choices=list(typing.get_args(field.annotation)), default=None, help=text)
        elif name in ("data", "out", "teacher", "image_weights"):
            parser.add_argument(flag, type=Path, default=None, help=text)
        else:
            annotation = str(field.annotation)
            kind = int if "int" in annotation else float if "float" in annotation else str
            parser.add_argument(flag, type=kind, default=None, help=text)
    freeze = parser.add_mutually_exclusive_group()
    freeze.add_argument("--freeze-text", dest="freeze_text", action="store_true", default=None, help="keep the text encoder fixed (default)")
    freeze.add_argument("--train-text", dest="freeze_text", action="store_false", help="fine-tune the text encoder too")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_log_flags(parser)


def train_config(args: argparse.Namespace) -> TrainConfig:
    from framewatch.training.config import TrainConfig, resolve

    flags = {name: getattr(args, name, None) for name in TrainConfig.model_fields}
    if args.quiet:
        flags["progress"] = False
    return resolve(args.config, **flags)


def _train(args: argparse.Namespace) -> int:
    from framewatch.training.train import train

    cfg = train_config(args)
    summary = train(cfg)
    test = summary["splits"].get("test", {})
    point = summary["operating_point"]
    print(f"{summary['variant']}: test accuracy {test.get('accuracy', float('nan')):.3f} (majority class "
          f"{test.get('majority_accuracy', float('nan')):.3f}), F1 {test.get('f1', float('nan')):.3f}, ROC-AUC "
          f"{test.get('roc_auc', float('nan')):.3f}; threshold {summary['threshold']:.3f} chosen on val by rule "
          f"{point['rule']} {point['target']}, {summary['train_seconds']} s → {cfg.out}")
    for warning in point["warnings"]:
        print(f"framewatch train: warning: {warning}", file=sys.stderr)
    return 0


def _report(args: argparse.Namespace) -> int:
    from framewatch.training.report import write_report

    md_path, json_path = write_report(args.runs, args.out, measure_latency=not args.no_latency, trivial=not args.no_trivial, on=args.on)
    print(f"wrote {md_path} and {json_path}")
    return 0


def _clip(args: argparse.Namespace) -> int:
    from framewatch.training.clip_zeroshot import evaluate_clip

    prompts: list[str] | dict[str, str] | None = None
    if args.prompt:
        named = [p.partition("=") for p in args.prompt]
        if not all(sep for _, sep, _ in named):
            print("framewatch evaluate-clip: give every prompt as LABEL=PROMPT (prompts are bound to classes by name)", file=sys.stderr)
            return 2
        prompts = {label: text for label, _, text in named}
    result = evaluate_clip(args.data, args.model, prompts, args.image_size, args.split, args.out, positive_label=args.positive_label)
    metrics = result["splits"][args.split]
    print(f"CLIP zero-shot ({args.model}) on {args.split}: F1 {metrics['f1']:.3f}, ROC-AUC {metrics['roc_auc']:.3f}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from framewatch.training.export import export_run

    report = export_run(args.run_dir, args.out, input_size=args.input_size, fp16=args.fp16, opset=args.opset, max_batch=args.max_batch)
    print(f"exported {args.run_dir} → {args.out}: max |Δp| vs PyTorch {report['max_abs_diff']:.2e} on {report['parity_images']} images"
          + (f", fp16 max |Δp| {report['fp16_max_abs_diff']:.2e}" if "fp16_max_abs_diff" in report else ""))
    return 0


COMMANDS = ("data", "train", "report", "evaluate-clip", "export")


class TrainingMissing(FrameWatchError):
    """This installation carries no framewatch.training (the worker image leaves it out)."""


def _missing(args: argparse.Namespace) -> int:
    raise TrainingMissing(f"`{args.command}` needs the training package, which this image leaves out; "
                          "run it where framewatch[train] is installed")


def register(commands: argparse._SubParsersAction) -> None:
    import importlib.util

    if importlib.util.find_spec("framewatch.training") is None:
        for name in COMMANDS:
            commands.add_parser(name, help="(not installed in this image)").set_defaults(handler=_missing, accepts_anything=True)
        return
    data = commands.add_parser("data", help="data set tools: synth, check, preview, from-videos",
                               description="Data set tools: a synthetic set, checks before training, an augmentation preview, frames from video.")
    data_cmds = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    synth = data_cmds.add_parser(
        "synth", help="write a synthetic stream-moderation image–text data set",
        description="Write frames in game and real-life styles with captions built from stream metadata "
        "(title, category, moderation history, device), in the imagefolder layout train/ val/ test/. "
        "training/synth.py documents how text and image relate to the label.",
    )
    synth.add_argument("out", type=Path, help="output folder")
    synth.add_argument("--train", type=int, default=800, help="training samples (default 800)")
    synth.add_argument("--val", type=int, default=200, help="validation samples (default 200; 0 = carve from train)")
    synth.add_argument("--test", type=int, default=400, help="test samples (default 400)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--image-size", type=int, default=96, help="square frame size in pixels (default 96)")
    synth.add_argument("--cue-scale", type=float, default=2.0, help="size of violence cues and look-alikes (see training/synth.py)")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(handler=_synth)
    check = data_cmds.add_parser(
        "check", help="report bad rows, class balance, leakage between splits, caption lengths, image sizes",
        description="Decode every image once and report: bad rows and unreadable files, class balance per split, the same or "
        "a near-identical image in two splits (leakage), captions longer than the text encoder's max_length (truncated), "
        "empty captions, image sizes. A table on the terminal and JSON beside the data (--json). Exit 1 when there are problems.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    check.add_argument("data", type=Path, help="data folder (imagefolder) or .jsonl manifest")
    check.add_argument("--text-encoder", default="minilm", help="whose tokenizer counts caption tokens")
    check.add_argument("--text-max-length", type=int, default=25, help="tokens the text encoder keeps")
    check.add_argument("--image-size", type=int, default=96, help="the training size (smaller images are counted)")
    check.add_argument("--near-bits", type=int, default=4, help="near-duplicate: difference hashes within this many of 64 bits")
    check.add_argument("--json", type=Path, default=None, help="report file (default: DATA/data_check.json)")
    check.add_argument("--image-only", action="store_true", help="for image-only training (baseline): rows without text are fine")
    check.add_argument("--quiet", action="store_true", help="no progress bar")
    check.set_defaults(handler=_check)
    preview = data_cmds.add_parser(
        "preview", help="write a picture of augmented training frames",
        description="A grid of training frames: the original, then augmented draws of the kind training makes (the "
        "draws themselves differ from a run's: those depend on the run's seed and its rows after carving).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    preview.add_argument("data", type=Path, help="data folder or .jsonl manifest")
    preview.add_argument("--out", type=Path, default=Path("augmentation_preview.png"))
    preview.add_argument("--augment", choices=["stream", "flip", "none"], default="stream")
    preview.add_argument("--samples", type=int, default=6, help="frames (rows)")
    preview.add_argument("--variants", type=int, default=5, help="augmented draws per frame (columns)")
    preview.add_argument("--image-size", type=int, default=96)
    preview.add_argument("--seed", type=int, default=0)
    preview.set_defaults(handler=_preview)
    videos = data_cmds.add_parser(
        "from-videos", help="cut an image–text data set from labelled videos with the worker's decoder",
        description="Read a CSV or JSONL manifest (path, label, text, optional start_s, end_s, split, group), decode each video "
        "with the worker's own decoder, sampling and resize, and write an imagefolder data set of lossless PNG frames at the "
        "model's input size: a training frame is the same pixels the worker scores for that moment. Videos without a split "
        "are assigned by group (the path), seeded, 70/15/15.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    videos.add_argument("manifest", type=Path)
    videos.add_argument("--out", type=Path, required=True, help="data folder to write (new or empty)")
    videos.add_argument("--image-size", type=int, default=96, help="the model's input size")
    videos.add_argument("--sample-fps", type=float, default=1.0, help="frames per second of video (the worker's decode.sample_fps)")
    videos.add_argument("--keyframes-only", action="store_true", help="key frames only (the worker's decode.keyframes_only)")
    videos.add_argument("--interpolation", choices=["bilinear", "bicubic", "nearest"], default="bilinear",
                        help="the resize filter (the artifact's preprocessing.resize)")
    videos.add_argument("--labels", default=None, help="comma-separated label names (default: non-violent,violent)")
    videos.add_argument("--seed", type=int, default=0, help="assigns videos without a split")
    videos.add_argument("--quiet", action="store_true", help="no progress bar")
    videos.set_defaults(handler=_from_videos)

    tr = commands.add_parser(
        "train", help="train a classifier (baseline, guidance, teacher, distill)",
        description="Train on an imagefolder data set. Options come from the schema's defaults, then a recipe (--config), "
        "then these flags. Writes RUN_DIR/config.json (the resolved configuration), metrics.json (per split: precision, "
        "recall, accuracy, F1, ROC-AUC, confusion matrix, threshold chosen on val), model.pt, checkpoints/ and PNG plots.",
    )
    add_train_flags(tr)
    tr.set_defaults(handler=_train)

    rep = commands.add_parser(
        "report", help="compare runs side by side (the paper's Table 3)",
        description="Precision, recall, accuracy, F1 and ROC-AUC on test, as mean ± std over seeds of the same variant, and "
        "the deployed model's latency per image (reparameterized, batch 1 and 32, measured now). Writes Markdown and JSON.",
    )
    rep.add_argument("runs", type=Path, nargs="+", help="run folders")
    rep.add_argument("--out", type=Path, default=Path("report.md"), help="Markdown output; JSON is written beside it")
    rep.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    rep.add_argument("--no-trivial", action="store_true",
                     help="leave out the trivial row (a logistic regression on six colour statistics of the runs' data set)")
    rep.add_argument("--on", type=Path, default=None, metavar="DATA",
                     help="also score every run's deployed model on DATA's test split (e.g. a `feedback export`) and compare the last "
                     "run with the first: the retrained model against the one it replaces, with a bootstrap interval over streams")
    rep.set_defaults(handler=_report)

    clip = commands.add_parser(
        "evaluate-clip", help="CLIP zero-shot baseline",
        description="Zero-shot classification with a Hugging Face CLIP model and one prompt per class "
        "(the paper's: 'a in-game photo' / 'a violative photo').",
    )
    clip.add_argument("--data", type=Path, required=True)
    clip.add_argument("--model", default="openai/clip-vit-base-patch16", help="CLIP name or local folder")
    clip.add_argument("--prompt", action="append", metavar="LABEL=PROMPT",
                      help="a class's prompt, by label name (repeat the flag); default: the paper's prompts bound by class "
                      "('a violative photo' for the violent class, 'a in-game photo' for the others)")
    clip.add_argument("--positive-label", default=None, metavar="NAME", help="the violent class's label (see train --help)")
    clip.add_argument("--image-size", type=int, default=224)
    clip.add_argument("--split", default="test")
    clip.add_argument("--out", type=Path, default=None, help="write a run folder with metrics.json for `framewatch report`")
    clip.set_defaults(handler=_clip)

    exp = commands.add_parser(
        "export", help="export a run's image-only model to an ONNX artifact",
        description="Reparameterize, fold preprocessing (uint8 NHWC RGB in, probabilities out) into the graph, export ONNX, "
        "check it, verify parity with PyTorch on the run's own images, and write model.json.",
    )
    exp.add_argument("run_dir", type=Path)
    exp.add_argument("--out", type=Path, required=True, help="artifact folder")
    exp.add_argument("--input-size", type=int, default=None, help="pixels (default: the training size)")
    exp.add_argument("--fp16", action="store_true", help="also write model.fp16.onnx (FP16 graph, FP32 I/O) for TensorRT 11")
    exp.add_argument("--opset", type=int, default=17)
    exp.add_argument("--max-batch", type=int, default=64)
    exp.set_defaults(handler=_export)
