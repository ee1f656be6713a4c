"""Command-line front of the training package. Parsers are built without importing torch;
handlers import it when they run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _synth(args: argparse.Namespace) -> int:
    from training.synth import write_dataset

    counts = {"train": args.train, "val": args.val, "test": args.test}
    written = write_dataset(args.out, counts, args.seed, args.image_size, progress=not args.quiet, cue_scale=args.cue_scale)
    print(f"wrote {written} to {args.out} (labels: non-violent, violent; see training/synth.py for how text and image relate to the label)")
    return 0


def _train(args: argparse.Namespace) -> int:
    from training.data import DataError
    from training.train import TrainConfig, train

    cfg = TrainConfig(
        data=args.data, out=args.out, mode=args.mode, image_encoder=args.image_encoder, pretrained=args.pretrained,
        text_encoder=args.text_encoder, text_max_length=args.text_max_length, freeze_text=args.freeze_text,
        fusion=args.fusion, fusion_dim=args.fusion_dim, image_size=args.image_size, epochs=args.epochs,
        adapt_epochs=args.adapt_epochs, batch_size=args.batch_size, lr=args.lr, text_lr=args.text_lr,
        adapt_head_epochs=args.adapt_head_epochs, weight_decay=args.weight_decay,
        patience=args.patience, seed=args.seed, teacher=args.teacher, max_bad_fraction=args.max_bad_fraction,
        device=args.device, resume=args.resume, progress=not args.quiet,
        distill_alpha=args.distill_alpha, distill_temperature=args.distill_temperature,
        threshold_rule=args.threshold_rule, threshold_target=args.threshold_target, positive_label=args.positive_label,
    )
    try:
        summary = train(cfg)
    except DataError as exc:
        print(f"framewatch train: {exc}", file=sys.stderr)
        return 2
    test = summary["splits"].get("test", {})
    point = summary["operating_point"]
    print(f"{summary['variant']}: test accuracy {test.get('accuracy', float('nan')):.3f} (majority class "
          f"{test.get('majority_accuracy', float('nan')):.3f}), F1 {test.get('f1', float('nan')):.3f}, ROC-AUC "
          f"{test.get('roc_auc', float('nan')):.3f}; threshold {summary['threshold']:.3f} chosen on val by rule "
          f"{point['rule']} {point['target']}, {summary['train_seconds']} s → {args.out}")
    for warning in point["warnings"]:
        print(f"framewatch train: warning: {warning}", file=sys.stderr)
    return 0


def _report(args: argparse.Namespace) -> int:
    from training.report import ReportError, write_report

    try:
        md_path, json_path = write_report(args.runs, args.out, measure_latency=not args.no_latency, trivial=not args.no_trivial)
    except (ReportError, FileNotFoundError) as exc:
        print(f"framewatch report: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {md_path} and {json_path}")
    return 0


def _clip(args: argparse.Namespace) -> int:
    from training.clip_zeroshot import evaluate_clip

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
    from training.export import export_run

    report = export_run(args.run_dir, args.out, input_size=args.input_size, fp16=args.fp16, opset=args.opset, max_batch=args.max_batch)
    print(f"exported {args.run_dir} → {args.out}: max |Δp| vs PyTorch {report['max_abs_diff']:.2e} on {report['parity_images']} images"
          + (f", fp16 max |Δp| {report['fp16_max_abs_diff']:.2e}" if "fp16_max_abs_diff" in report else ""))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="data set tools (synthetic generator)", description="Data set tools.")
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

    tr = commands.add_parser(
        "train", help="train a classifier (baseline, guidance, teacher, distill)",
        description="Train on an imagefolder data set. Writes RUN_DIR/config.json, metrics.json (per split: precision, "
        "recall, accuracy, F1, ROC-AUC, confusion matrix, threshold chosen on val), model.pt, checkpoints/ and PNG plots.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    tr.add_argument("--data", type=Path, required=True, help="data folder (imagefolder layout)")
    tr.add_argument("--out", type=Path, required=True, help="run folder to write")
    tr.add_argument("--mode", choices=["baseline", "guidance", "teacher", "distill"], default="guidance",
                    help="baseline: images only; guidance: text guides training, image-only result; teacher: fused image+text "
                    "model (needs text at inference); distill: image-only student of a fused teacher")
    tr.add_argument("--image-encoder", default="mobileone_s4", help="timm model name (mobileone_s0 for fast CPU runs)")
    tr.add_argument("--pretrained", action="store_true", help="load timm's pretrained weights (needs the hub or a local cache)")
    tr.add_argument("--text-encoder", default="distilbert-base-uncased",
                    help="Hugging Face encoder name or local folder; 'minilm' = the offline all-MiniLM-L6-v2 package")
    tr.add_argument("--text-max-length", type=int, default=121, help="tokens, a square number (121 → 11×11 map)")
    freeze = tr.add_mutually_exclusive_group()
    freeze.add_argument("--freeze-text", dest="freeze_text", action="store_true", default=True, help="keep the text encoder fixed")
    freeze.add_argument("--train-text", dest="freeze_text", action="store_false", help="fine-tune the text encoder too")
    tr.add_argument("--fusion", choices=["paper", "official"], default="paper",
                    help="paper: three conv+BatchNorm+ReLU; official: the official code's two conv+ReLU")
    tr.add_argument("--fusion-dim", type=int, default=None, help="fusion output channels (default: half the image channels)")
    tr.add_argument("--image-size", type=int, default=224)
    tr.add_argument("--epochs", type=int, default=10, help="epochs of the first stage")
    tr.add_argument("--adapt-epochs", type=int, default=None, help="epochs of the guidance adapt stage (default: --epochs); distill's student gets --epochs, like the baseline")
    tr.add_argument("--batch-size", type=int, default=32)
    tr.add_argument("--lr", type=float, default=3e-4)
    tr.add_argument("--text-lr", type=float, default=2e-5, help="learning rate of a trained text encoder (default 2e-5)")
    tr.add_argument("--adapt-head-epochs", type=int, default=1,
                    help="guidance: epochs training only the new head on the frozen guided encoder before full fine-tuning (default 1)")
    tr.add_argument("--weight-decay", type=float, default=0.05)
    tr.add_argument("--patience", type=int, default=3, help="early stopping: epochs without a better val ROC-AUC")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--teacher", type=Path, default=None, help="distill: reuse the soft labels of this teacher/guidance run")
    tr.add_argument("--distill-alpha", type=float, default=0.5, help="distill: weight of the hard-label loss")
    tr.add_argument("--distill-temperature", type=float, default=2.0)
    tr.add_argument("--max-bad-fraction", type=float, default=0.01, help="stop before training when more rows are bad")
    tr.add_argument("--positive-label", default=None, metavar="NAME",
                    help="the violent class's label, when the labels do not say it (default: dataset.json 'positive', "
                    "else the one label named violent/violence)")
    tr.add_argument("--threshold-rule", choices=["fpr", "precision", "f1"], default="fpr",
                    help="how the operating point is chosen on val: fpr = the lowest threshold with at most TARGET false "
                    "alarms (default, 0.05); precision = the lowest with precision at least TARGET (0.9); f1 = the F1 maximum")
    tr.add_argument("--threshold-target", type=float, default=None, metavar="TARGET", help="the rule's target (see --threshold-rule)")
    tr.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 …")
    tr.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoints/last.pt")
    tr.add_argument("--quiet", action="store_true", help="no progress bars")
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
