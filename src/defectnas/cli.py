"""The ``defectnas`` command line (see CONTRACT.md for the stable surface).

Why argparse and one function per command: each command is a few lines that parse flags into
the library's own calls, so everything the CLI does is also available from Python. Errors meant
for the user (:class:`~defectnas.errors.DefectnasError`) print as one line and exit with 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .config import PRESETS, ModelConfig, TrainConfig
from .errors import ConfigError, DataError, DataWarning, DefectnasError, LayoutError


# ----------------------------------------------------------------- shared flags
TRAINING_SEED = "splits, initialisation, batch order"


def _add_common(p: argparse.ArgumentParser, seed: str | None = None) -> None:
    """--quiet and --seed, which every command takes (scripts pass them to all); ``seed``: what it
    seeds in this command (None: nothing, and the help says so)."""
    p.add_argument("--quiet", action="store_true", help="no progress bars or progress messages")
    p.add_argument("--seed", type=int, default=0, help=f"random seed ({seed})" if seed else
                   "random seed: not used by this command (accepted, as by every command)")


def _add_data_options(p: argparse.ArgumentParser, required: bool = True, format_flag: str = "--format") -> None:
    p.add_argument("--data", required=required, help="table of query–product pairs (CSV/TSV/JSONL/Parquet, .gz/.zip), or an ESCI/WANDS folder")
    g = p.add_argument_group("data layout (for tables that are not a known dataset)")
    g.add_argument(format_flag, dest="format", default="auto", help="auto, esci, wands, homedepot, crowdflower, pairs or table")
    p.set_defaults(format_flag=format_flag)
    g.add_argument("--query-col", help="column holding the query")
    g.add_argument("--title-col", help="column holding the product title")
    g.add_argument("--label-col", help="column holding the label")
    g.add_argument("--defect-labels", help="comma-separated label values that mean defect, e.g. I,Irrelevant")
    g.add_argument("--defect-below", type=float, help="numeric scores below this are defects")
    g.add_argument("--invalid-rows", choices=["error", "skip"], default="skip",
                   help="rows with an empty query or title (once normalised and tokenised) or a missing label: skip (default: "
                        "left out, counted and named in one warning line; predict keeps them unscored with a reason) or error (exit 2)")


def _threads(text: str) -> int:
    """argparse type of every --threads flag: a whole number, 0 or more (0: the default)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (the default) or more, got {value}")
    return value


def _device(text: str) -> str:
    """argparse type of --device: a torch device this machine has (:func:`~defectnas.config.check_device`),
    refused when the flag is parsed rather than in a traceback once the data is read."""
    from .config import check_device

    try:
        return check_device(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _valid_fraction(text: str) -> float:
    """argparse type of --valid-frac: a share of queries in (0, 1)."""
    value = _test_fraction(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be above 0: training needs a validation split")
    return value


def _json_object(text: str) -> dict:
    """argparse type of a JSON-object flag (--space-options): the decoder's reason and column when
    it does not parse (argparse's own message would be "invalid loads value")."""
    from .data.readers import json_problem

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {json_problem(exc)} of {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object ({{\"name\": [values]}}), got {text!r}")
    return value


def _test_fraction(text: str) -> float:
    """argparse type of --test-frac: a share of queries in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a share of queries from 0 to less than 1, got {value:g}")
    return value


def _target(text: str) -> float:
    """argparse type of --target-precision / --target-recall: a rate in (0, 1], checked before any data is read."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value:g}")
    return value


def _set_threads(threads: int) -> None:
    """Pin torch's CPU threads for a scoring command (0 or None: torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def _load_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"format": args.format, "query_col": args.query_col, "title_col": args.title_col, "label_col": args.label_col,
            "defect_labels": args.defect_labels, "defect_below": args.defect_below, "invalid_rows": args.invalid_rows}


def _read_for_model(args: argparse.Namespace, **options: Any):
    """``read_pairs`` of ``--data`` for a command given ``--model``: without layout flags, a table
    with the columns the model was trained with (its splits.json) is read with them, said once."""
    from .data import read_pairs, read_splits

    layout = (read_splits(args.model) or {}).get("layout") or None
    read = read_pairs(args.data, **options, **_load_kwargs(args), remembered_layout=layout)
    if read.notes.get("layout") == "remembered":
        flag = lambda k: args.format_flag if k == "format" else f"--{k.replace('_', '-')}"  # noqa: E731 (export, select: --data-format)
        unlabelled = "label" not in read.pairs.columns  # an unlabelled file to predict: its flags name no label column
        flags = " ".join(f"{flag(k)} {v}" for k, v in layout.items()
                         if not (unlabelled and k in ("label_col", "defect_labels", "defect_below")))
        _echo(args, f"note: {args.data} read as {args.model} was trained ({flags}); give layout flags to read it otherwise")
    return read


def _add_model_options(p: argparse.ArgumentParser, epochs_default: str = "") -> None:
    p.add_argument("--preset", choices=sorted(PRESETS), help="a named set of options (seed: word embeddings only, fastest; accurate: fine-tunes the top pre-trained layers, slower); --config and flags override it")
    p.add_argument("--config", help="JSON file of options (flat, or {\"model\": {...}, \"train\": {...}}); flags override it")
    p.add_argument("--epochs", type=int, help="maximum classification epochs (default " + (epochs_default or f"{TrainConfig.epochs}: test AP peaked "
                   "after one on every sample measured") + "; more than one turns on early stopping)")
    p.add_argument("--batch-size", type=int, help=f"pairs per step (default {TrainConfig.batch_size})")
    p.add_argument("--lr", type=float, help=f"Adam learning rate (default {TrainConfig.lr:g})")
    p.add_argument("--defect-weight", type=float, help=f"cross-entropy weight of defects (default {TrainConfig.defect_weight:g})")
    p.add_argument("--alpha", type=float, help=f"weight of cross-entropy in the joint loss (default {TrainConfig.alpha:g})")
    p.add_argument("--beta", type=float, help=f"weight of the triplet loss in the joint loss (default {TrainConfig.beta:g})")
    p.add_argument("--embedding-init", choices=["trained", "minilm"], help=f"token vocabulary: trained on the data, or all-MiniLM-L6-v2's (default {ModelConfig.embedding_init})")
    p.add_argument("--pretrained-model", help="with --embedding-init minilm: a local path or hub name instead of the bundled MiniLM")
    p.add_argument("--matching", action=argparse.BooleanOptionalAction, default=None,
                   help="the multi-perspective matching layer (on by default; --no-matching leaves it out)")
    p.add_argument("--backbone-layers", type=int, help=f"pre-trained contextual layers under the product (title) tower (0: word embeddings only; default {ModelConfig.backbone_layers})")
    p.add_argument("--query-backbone-layers", type=int, help=f"pre-trained contextual layers under the query tower (runs per request; default {ModelConfig.query_backbone_layers})")
    p.add_argument("--backbone-trainable", type=int, help=f"top pre-trained layers fine-tuned (the rest stay frozen; default {ModelConfig.backbone_trainable})")
    p.add_argument("--teacher", help="model directory of a fitted teacher (e.g. a `bert` cross-encoder from compare): distil its probabilities")
    p.add_argument("--distill-weight", type=float, help=f"weight of the distillation loss (default {TrainConfig.distill_weight:g})")
    p.add_argument("--threads", type=_threads, dest="num_threads", help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", type=_device, help="torch device, e.g. cpu or cuda (checked at once)")


_MODEL_FLAGS = ("epochs", "batch_size", "lr", "defect_weight", "alpha", "beta", "embedding_init", "pretrained_model", "matching",
                "backbone_layers", "query_backbone_layers", "backbone_trainable", "teacher", "distill_weight", "num_threads", "device")


def _options(args: argparse.Namespace) -> dict[str, Any]:
    from .config import load_options_file

    options = dict(PRESETS[args.preset]) if getattr(args, "preset", None) else {}
    options.update(load_options_file(args.config) if getattr(args, "config", None) else {})
    options.update({k: getattr(args, k) for k in _MODEL_FLAGS if getattr(args, k, None) is not None})
    if getattr(args, "variant", None):
        options["variant"] = args.variant
    options["seed"] = args.seed
    return options


def _echo(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(message, file=sys.stderr)


# ------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> None:
    from . import DefectClassifier
    from .data import load_pairs, split_by_query
    from .data._common import counted
    from .data.load import layout_options
    from .storage import atomic_write_json

    options = _options(args)
    if args.valid_frac is not None:
        options["valid_frac"] = args.valid_frac
    valid_frac = options.setdefault("valid_frac", 0.1)
    clf = DefectClassifier(**options)
    clf.configs()  # every option checked (--lr -1, --device cuda without a GPU, a --teacher that is a file) before the data is read
    out = Path(args.out)
    resume = args.resume and (out / "checkpoint.safetensors").exists()
    if args.resume and not resume:  # even with --quiet: a mistyped --out must not pass unnoticed
        print(f"note: --resume: no checkpoint in {out} to resume from: starting from scratch", file=sys.stderr)
    df = load_pairs(args.data, **_load_kwargs(args))
    parts = split_by_query(df, valid_frac=valid_frac, test_frac=args.test_frac, seed=args.seed)
    held_out = parts["test"] if len(parts["test"]) else parts["valid"]
    sizes = ", ".join(f"{name} {counted(len(part), 'pair')} ({counted(int(part['label'].sum()), 'defect')})" for name, part in parts.items())
    _echo(args, f"{args.data}: {sizes} (split by query)")
    out.mkdir(parents=True, exist_ok=True)
    _note_earlier_checkpoint(args, out)
    clf.fit(parts["train"], parts["valid"], checkpoint_dir=out, resume=resume, quiet=args.quiet, log=lambda m: _echo(args, m),
            invalid_rows=args.invalid_rows)
    clf.save(out)
    from .data import write_splits

    write_splits(out, parts, data=str(args.data), seed=args.seed, test_frac=args.test_frac, valid_frac=valid_frac,
                 layout=layout_options(**_load_kwargs(args)))  # evaluate, predict, ... read the same layout without the flags
    metrics = clf.evaluate(held_out)
    atomic_write_json(out / "metrics.json", metrics)
    if not args.keep_checkpoint:
        (out / "checkpoint.safetensors").unlink(missing_ok=True)
    _echo(args, f"model saved to {out}; metrics on {'test' if len(parts['test']) else 'validation'} queries:")
    print(json.dumps(metrics, indent=2))


def cmd_distill_query(args: argparse.Namespace) -> None:
    import numpy as np

    from . import DefectClassifier
    from .search.child import latency_inputs
    from .serving.cache import title_tower_hash
    from .serving.encoding import request_latency_ms
    from .storage import atomic_write_json
    from .timing import interleaved_ms
    from .training.query_distillation import QueryDistillationConfig, student_config

    if Path(args.out).resolve() == Path(args.model).resolve():
        raise ConfigError(f"--out {args.out} is the model's own directory; give a new one")
    _set_threads(args.threads)
    _two_tower_only(args, "distill-query", "it has no query tower to distil (evaluate and predict take it as it is)")
    teacher = DefectClassifier.load(args.model)
    student_config(teacher.model_config_, args.layers)  # what cannot be distilled is refused before any data is read
    QueryDistillationConfig(layers=args.layers, epochs=args.epochs, text_windows=args.text_windows, init=args.init, lr=args.lr,
                            logit_weight=args.logit_weight)
    df = _read_for_model(args).pairs
    parts = _model_splits(args, df)
    _echo(args, f"{args.data}: train {len(parts['train'])}, valid {len(parts['valid'])}, test {len(parts['test'])} pairs "
                f"({'by the model’s own splits' if parts['from_model'] else 'split by query'})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _note_earlier_checkpoint(args, out)
    student = teacher.distill_query(parts["train"], parts["valid"], layers=args.layers, epochs=args.epochs,
                                    text_windows=args.text_windows, init=args.init, lr=args.lr, logit_weight=args.logit_weight,
                                    seed=args.seed, checkpoint_dir=out, resume=args.resume, quiet=args.quiet,
                                    log=lambda m: _echo(args, m), invalid_rows=args.invalid_rows)
    student.save(out)
    from .data import write_splits

    write_splits(out, parts, data=str(args.data), distilled_from=str(args.model))
    held_name = "test" if len(parts["test"]) else "valid"
    held_out = parts[held_name]
    _echo(args, f"scoring the {held_name} split ({len(held_out)} pairs) with both models, then timing a served request of each")
    metrics = student.evaluate(held_out)
    if held_name == "valid":  # no test queries: say that these numbers are on the split that chose the epoch
        metrics["note"] = "no test queries in --data: measured on the validation split, which also chose the epoch and the calibration"
    atomic_write_json(out / "metrics.json", metrics)
    before = teacher.evaluate(held_out)
    queries, titles = latency_inputs(parts["valid"])
    served = interleaved_ms({"model": teacher, "distilled": student}, lambda clf: request_latency_ms(clf, queries, titles, 30, threads=1))
    speedup = float(np.median(served["model"]) / np.median(served["distilled"]))
    report = {"model": str(Path(args.model).resolve()), "layers": {"model": teacher.model_config_.query_backbone_layers, "distilled": args.layers},
              "held_out": held_name, "pairs": len(held_out),
              "average_precision": {"model": before["average_precision"], "distilled": metrics["average_precision"],
                                    "change": metrics["average_precision"] - before["average_precision"]},
              "f1": {"model": before["f1"], "distilled": metrics["f1"]},
              "valid_ap": {"model": teacher.valid_ap_, "distilled": student.valid_ap_,
                           "best_epoch": max(student.history_[1:], key=lambda r: r["valid_ap"])["epoch"]},
              "shares_title_tower": title_tower_hash(out) == title_tower_hash(args.model),
              "served_ms_per_request": served, "speedup": round(speedup, 2),
              "timing": "serve's request of 1 query x 100 cached products, 1 thread, median of 30 after warm-up, 3 interleaved rounds",
              "history": student.history_}
    atomic_write_json(out / "distillation.json", report)
    if not args.keep_checkpoint:
        (out / "checkpoint.safetensors").unlink(missing_ok=True)
    caches = ("the model's product caches serve it as they are" if report["shares_title_tower"]
              else "its title tower differs from the model's, so build its own product cache")
    print(f"distilled model saved to {out}: {held_name} AP {metrics['average_precision']:.4f} against the model's "
          f"{before['average_precision']:.4f} ({report['average_precision']['change']:+.4f}"
          f"{'; validation split: it also chose the epoch' if held_name == 'valid' else ''}); served "
          f"{np.median(served['distilled']):.1f} against {np.median(served['model']):.1f} ms per request ({speedup:.2f}x faster); "
          f"{caches} (details: {out / 'distillation.json'})")
    note = _distillation_note(report["average_precision"]["change"], len(parts["train"]), args.init)
    if note:
        _echo(args, note)


DISTILLATION_LOSS_NOTE = 0.02  # held-out AP a distilled query tower may lose before distill-query says so


def _distillation_note(ap_change: float, train_pairs: int, init: str = "bottom+top") -> str | None:
    """A line for a distilled model that lost more than DISTILLATION_LOSS_NOTE held-out AP (None otherwise)."""
    if ap_change >= -DISTILLATION_LOSS_NOTE:
        return None
    first = ("drop --init bottom (the default start, the model's top query layer included, lost 0.019 AP less on Home Depot); "
             if init != "bottom+top" else "")
    return (f"note: the distilled model loses {-ap_change:.3f} AP here. It learns the model's query encodings from the "
            f"queries and titles of {train_pairs} training pairs (on the Home Depot sample's 36,289 pairs it scores as the "
            f"model does); {first}try more epochs or --text-windows 3 (more texts), --layers 3, or keep the model and serve it "
            "faster with `export --int8`")


def _note_earlier_checkpoint(args: argparse.Namespace, out: Path) -> None:
    """One line when --out holds an earlier run's checkpoint and --resume was not given: it is
    about to be replaced by this run's first epoch."""
    if not args.resume and (out / "checkpoint.safetensors").exists():
        _echo(args, f"note: {out} holds the checkpoint of an earlier run; starting again, and replacing it after the first epoch "
                    "(stop now and add --resume to continue that run instead)")


def _model_splits(args: argparse.Namespace, df) -> dict:
    """train / valid / test parts of ``df``: by the model's own splits.json when it has one (the
    queries it validated and was tested on stay held out; queries it never saw go to train), else
    split by query as train does (--seed, --test-frac)."""
    from .data import SPLITS_FILE, read_splits, split_by_query

    path = Path(args.model) / SPLITS_FILE
    test_frac = args.test_frac  # None: not given
    splits = read_splits(args.model)
    if splits is None:
        _echo(args, f"note: {args.model} has no {SPLITS_FILE} (not saved by train): {args.data} is split by query with --seed {args.seed}; "
                    f"queries the model was trained on may land in the held-out splits")
        return {**split_by_query(df, valid_frac=0.1, test_frac=0.2 if test_frac is None else test_frac, seed=args.seed), "from_model": False}
    if test_frac is not None:
        _echo(args, f"note: --test-frac {test_frac:g} is ignored: {path} names the queries the model was validated and tested on, "
                    "and those are held out")
    valid, test = set(splits.get("valid", [])), set(splits.get("test", []))
    if not df["query"].isin(valid).any():
        raise DataError(f"{args.data}: none of its queries are in the model's validation split ({path}); is it the data the model was trained on?")
    q = df["query"]
    return {"train": df[~q.isin(valid | test)].reset_index(drop=True), "valid": df[q.isin(valid)].reset_index(drop=True),
            "test": df[q.isin(test)].reset_index(drop=True), "from_model": True}


def _load_any_model(args: argparse.Namespace):
    """``--model`` of any kind train, search or ``compare --save-models`` wrote, through the one
    generic loader (:func:`defectnas.baselines.load_model`; a ``dl-gs`` grid gives its winner, an
    ordinary DefectClassifier). Every kind carries its calibration and validation-chosen threshold;
    baselines have no per-group thresholds and no product cache."""
    from .baselines import load_model

    model = load_model(args.model)
    return getattr(model, "best_", model)


def _two_tower_only(args: argparse.Namespace, what: str, instead: str) -> None:
    """One line (exit 2) when ``--model`` is not a two-tower model directory: its kind, and ``instead``."""
    from .baselines._common import read_config

    kind = read_config(args.model).get("model_type", "two-tower")
    if kind != "two-tower":
        raise ConfigError(f"{args.model}: a {kind!r} model; {what} works on two-tower models (train, search); {instead}")


def _load_for_thresholds(args: argparse.Namespace, clf, labels: bool, skipped_as: str = "left out"):
    """The table read (PairsRead) with the model's per-group column kept and the pairs the model
    cannot score set aside (--invalid-rows); says once when the group column is missing."""

    column = (clf.group_thresholds_ or {}).get("column")
    read = _read_for_model(args, labels=labels, require_both_classes=False, keep=[column] if column else (),
                           id_col=getattr(args, "pairs_id_col", None), skipped_as=skipped_as)
    if column and column not in read.pairs.columns:
        _echo(args, f"note: the model has per-{column} thresholds but {args.data} has no {column!r} column; "
                    f"the global threshold {clf.threshold_:.4g} is used")
    return clf.screen(read, args.invalid_rows) if hasattr(clf, "screen") else read  # baselines score any non-empty text


def _held_out(args: argparse.Namespace, df, refuse_mostly_training: bool = False):
    """``df`` restricted to the model's own ``--split`` (valid or test) when asked; otherwise
    unchanged, with one line when some of its queries were in the model's training split
    (metrics and operating points on them are optimistic). Needs the model's splits.json.

    ``refuse_mostly_training`` (threshold): ConfigError instead when most pairs were training
    pairs — an operating point chosen there is saved and would not keep its target."""
    from .data import SPLITS_FILE, read_splits

    path = Path(args.model) / SPLITS_FILE
    split = getattr(args, "split", None)
    splits = read_splits(args.model)
    if splits is None:
        if split:
            raise ConfigError(f"{args.model}: no {SPLITS_FILE} (a model saved before train wrote it, or not by train): "
                              f"--split needs it; give held-out data instead")
        return df
    if split:
        keep = df["query"].isin(set(splits.get(split, [])))
        if not keep.any():
            raise DataError(f"{args.data}: none of its queries are in the model's {split} split ({path}); is it the data the model was trained on?")
        _echo(args, f"{args.data}: {int(keep.sum())} of {len(df)} pairs are in the model's {split} split ({df['query'][keep].nunique()} queries)")
        return df[keep].reset_index(drop=True)
    seen = df["query"].isin(set(splits.get("train", [])))
    if refuse_mostly_training and seen.sum() > len(df) / 2:
        raise ConfigError(f"{args.data}: {int(seen.sum())} of its {len(df)} pairs ({seen.mean():.0%}) were in the model's training split, "
                          f"where it scores better than on new queries, so a threshold chosen there would not keep its target; give "
                          f"--split valid (the model's validation queries), other labelled data, or --allow-training-pairs")
    if seen.any():
        _echo(args, f"warning: {args.data}: {df['query'][seen].nunique()} of its {df['query'].nunique()} queries ({int(seen.sum())} pairs) "
                    f"were in the model's training split, so these numbers are optimistic; --split valid or --split test "
                    f"keeps the model's held-out queries")
    return df


def cmd_evaluate(args: argparse.Namespace) -> None:
    import warnings

    from .reporting import plot_reliability
    from .storage import atomic_write_json

    clf = _load_any_model(args)
    df = _held_out(args, _load_for_thresholds(args, clf, labels=True).pairs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the missing group column is said above, once
        warnings.simplefilter("always", DataWarning)  # ...but what evaluate says of the result (no defect, AP at chance) is new
        metrics, labels, probs = clf.evaluate(df, return_probabilities=True)
    if args.json:
        atomic_write_json(args.json, metrics)
    plot = args.plot or (Path(args.json).with_suffix(".reliability.png") if args.json else None)
    if plot:
        plot_reliability(labels, probs, plot, title=Path(args.model).name)
    point = clf.operating_point_
    if point and "threshold_by" in metrics and (clf.group_thresholds_ or {}).get("together"):
        point = clf.group_thresholds_["together"]  # what the rows' own thresholds reached there, as they are applied here
    _echo(args, f"operating point: {clf.threshold_rule_}"
                + (f" (there: precision {point['precision']:.3f}, recall {point['recall']:.3f})" if point else "")
                + f"; here: precision {metrics['precision']:.3f} [{metrics['precision_low']:.3f}, {metrics['precision_high']:.3f}], "
                  f"recall {metrics['recall']:.3f} [{metrics['recall_low']:.3f}, {metrics['recall_high']:.3f}] (95% Wilson intervals)"
                + (f"; reliability diagram → {plot}" if plot else ""))
    print(json.dumps(metrics, indent=2))


def cmd_threshold(args: argparse.Namespace) -> None:
    from . import DefectClassifier
    from .baselines._common import read_config
    from .thresholds import choose_operating_point, save_operating_point

    kind = read_config(args.model).get("model_type")
    if kind != "two-tower":
        raise ConfigError(f"{args.model}: a {kind!r} model; threshold works on two-tower model directories (train, search)")
    if min(args.min_group, args.min_group_defects, args.min_flagged) < 1:
        raise ConfigError("--min-group, --min-group-defects and --min-flagged must be at least 1")
    clf = DefectClassifier.load(args.model)
    df = clf.screen(_read_for_model(args, keep=[args.by] if args.by else ()), args.invalid_rows).pairs
    df = _held_out(args, df, refuse_mostly_training=not args.allow_training_pairs)
    if args.by and args.by not in df.columns:
        raise DataError(f"{args.data}: no column {args.by!r} for --by")
    metric, target = ("precision", args.target_precision) if args.target_precision is not None else ("recall", args.target_recall)
    source = str(Path(args.data).resolve()) if Path(args.data).exists() else str(args.data)
    record, groups = choose_operating_point(df["label"].to_numpy(), clf.predict_proba(df), metric, target, source,
                                            df[args.by] if args.by else None, args.by, args.min_group, args.min_group_defects,
                                            args.min_flagged)
    save_operating_point(args.model, record, groups)
    if groups:
        _echo(args, f"{len(groups['thresholds'])} {args.by} groups have their own threshold; "
                    f"{len(groups['fallback'])} use the global one (see group_thresholds in config.json)")
    _echo(args, f"threshold {record['threshold']:.4g} saved to {Path(args.model) / 'config.json'}: precision {record['precision']:.3f} "
                f"(95% interval {record['precision_low']:.3f}–{record['precision_high']:.3f}, {record['flagged']} flagged), "
                f"recall {record['recall']:.3f} on {record['n']} pairs" + (" — the global threshold alone" if groups else ""))
    if groups:
        both = groups["together"]
        _echo(args, f"with the per-{args.by} thresholds, as predict and evaluate apply them: precision {both['precision']:.3f} "
                    f"(95% interval {both['precision_low']:.3f}–{both['precision_high']:.3f}, {both['flagged']} flagged), "
                    f"recall {both['recall']:.3f} on the same {record['n']} pairs")
    print(json.dumps({"operating_point": record, **({"group_thresholds": groups} if groups else {})}, indent=2))


def cmd_predict(args: argparse.Namespace) -> None:
    import numpy as np
    import pandas as pd

    from .data.writers import check_writable_table, write_table

    check_writable_table(args.out)  # before any data is read or scored
    _set_threads(args.threads)
    if args.cache:
        _two_tower_only(args, "--cache", "predict without --cache scores it from raw text")
    clf = _load_any_model(args)
    cache = None
    if args.cache:
        from .serving.cache import ProductCache, model_hash

        cache = ProductCache(args.cache)
        cache.check_model(model_hash(args.model), args.model)  # another model's cache: one line, exit 2
    read = _load_for_thresholds(args, clf, labels=False, skipped_as="kept unscored")
    df = read.pairs
    probs = (clf.predict_proba(df) if cache is None else clf.predict_proba(df, cache=cache)) if len(df) else np.zeros(0)
    id_col = (read.notes.get("columns") or {}).get("product_id")
    if cache is not None and (not id_col or id_col not in read.source.columns):
        _echo(args, f"note: {args.data} has no product id column (product_id, its format's id column, or --id-col): each pair's product "
                    f"is known by an id made from its title, as `cache` names a catalogue's products without ids, so only titles "
                    f"cached that way come from {args.cache}")
    if cache is not None and len(df):
        from .batch import cache_rows

        hits = int((cache_rows(cache, df["product_id"].astype(str).tolist(), df["title"].tolist(),
                               df["product_locale"].astype(str).tolist() if "product_locale" in df.columns else None) >= 0).sum())
        _echo(args, f"{hits} of {len(df)} pairs took their title encoding from {args.cache}; the others' titles were encoded "
                    "(product not cached, or cached with another title)")
    rows = clf.row_thresholds(df, warn=False)
    flags = probs >= (clf.threshold_ if rows is None else rows)
    out = read.source.copy()  # the user's table: every column, original values, row order
    written = ["defect_probability", "is_defect"] + (["invalid_reason"] if len(read.positions) != len(out) else [])
    replaced = [c for c in written if c in out.columns]
    if replaced:  # a table scored before (by another model): the contract's column names are this model's now
        _echo(args, f"note: {args.data} already has {', '.join(replaced)}: replaced by this model's in {args.out} (rename them to keep both)")
    scored = np.full(len(out), np.nan)
    scored[read.positions] = probs
    out["defect_probability"] = scored
    if len(read.positions) == len(out):
        out["is_defect"] = flags
    else:  # unscored rows stay, with an empty score and the reason
        is_defect = pd.array([pd.NA] * len(out), dtype="boolean")
        is_defect[read.positions] = flags
        out["is_defect"] = is_defect
        out["invalid_reason"] = read.reasons.where(read.reasons != "", None).to_numpy()
    write_table(out, args.out)
    unscored = len(out) - len(read.positions)
    _echo(args, f"{len(df)} pairs scored, {int(flags.sum())} flagged as defects"
                + (f", {unscored} rows left unscored (see invalid_reason)" if unscored else "") + f" → {args.out}")


def cmd_select(args: argparse.Namespace) -> None:
    import numpy as np

    from .baselines import load_model
    from .data import load_pairs
    from .data.writers import write_table
    from .raters.selection import TRAFFIC_COLUMNS, find_traffic_column, quepid_table, select_pairs

    model = load_model(args.model)
    column = (getattr(model, "group_thresholds_", None) or {}).get("column")
    keep = [c for c in (*TRAFFIC_COLUMNS, args.traffic_col, column) if c]
    read = _read_for_model(args, labels=False, require_both_classes=False, keep=keep)
    if hasattr(model, "screen"):  # pairs the model cannot see (no word pieces) are not worth a rater's time
        read = model.screen(read, args.invalid_rows)
    pool = read.pairs
    traffic = find_traffic_column(list(pool.columns), args.traffic_col)
    queries, titles = pool["query"].tolist(), pool["title"].tolist()
    probs = model.predict_proba(queries, titles)
    rows = model.row_thresholds(pool, warn=False) if hasattr(model, "row_thresholds") else None
    others = {Path(d).name or str(d): load_model(d).predict_proba(queries, titles) for d in args.compare_with or ()}
    labelled = [load_pairs(p, labels=False, require_both_classes=False, **_load_kwargs(args)) for p in args.labelled or ()]  # only the pairs
    columns = {k: v if v in read.source.columns else None for k, v in read.notes["columns"].items()}
    if columns["label"]:  # rows of the table that already carry a label are skipped
        given = read.source[columns["label"]].iloc[read.positions]
        pool = pool.assign(label=given.where(given.astype(str).str.strip() != "").to_numpy())
    chosen = select_pairs(pool.assign(_position=read.positions), probs, model.threshold_ if rows is None else rows, args.budget,
                          max_per_query=args.max_per_query, other_probs=others, traffic_col=traffic, labelled=labelled)
    # the user's rows as given (every column, original values), best first, with the scores and the reason
    added = ["rank", "defect_probability", "is_defect", "uncertainty", *(["disagreement"] if others else []), "priority", "reason"]
    positions = chosen.table["_position"].to_numpy(dtype=np.int64)
    table = read.source.iloc[positions].reset_index(drop=True)
    for name in added:
        table[name if name not in table.columns else f"select_{name}"] = chosen.table[name].to_numpy()
    if args.output_format == "quepid":  # the query and docid as given, so that they match the engine's
        docid = args.docid
        if docid in ("product_id", "title"):  # the layout's own column for it (e.g. Home Depot's product_uid)
            docid = columns.get(docid) or columns["title"]
            if docid == columns["title"] and args.docid == "product_id":
                _echo(args, f"note: {args.data} has no product id column; Quepid's docid is the title as given")
        if docid not in table.columns:
            raise DataError(f"{args.data}: no column {docid!r} for --docid (columns: {', '.join(map(str, read.source.columns))})")
        write_table(quepid_table(table.assign(query=table[columns["query"]]), docid), args.out)
        details = Path(args.out).with_name(Path(args.out).stem + ".details.csv")
        write_table(table, details)
    else:
        write_table(table.assign(rating=""), args.out)
    if len(table) < args.budget:
        _echo(args, f"note: only {len(table)} of the {args.budget} pairs asked could be chosen ({chosen.candidates} unlabelled distinct "
                    f"pairs, at most {args.max_per_query} per query)")
    _echo(args, f"{len(table)} pairs to rate from {chosen.table['query'].nunique() if len(table) else 0} queries → {args.out}"
                + (f" (details: {details})" if args.output_format == "quepid" else "")
                + f"; skipped {chosen.skipped_labelled} already labelled and {chosen.skipped_duplicates} repeated pairs"
                + (f"; weighted by {traffic!r}" if traffic else ""))
    print(json.dumps({"out": str(args.out), "chosen": len(table), "candidates": chosen.candidates,
                      "skipped_labelled": chosen.skipped_labelled, "skipped_duplicates": chosen.skipped_duplicates,
                      "queries": int(chosen.table["query"].nunique()) if len(table) else 0, "capped_queries": chosen.capped_queries,
                      "traffic_column": traffic, "compared_with": list(others)}, indent=2))


def cmd_quickstart(args: argparse.Namespace) -> None:
    from .quickstart import resolve_data, run_quickstart

    data = resolve_data(args.data, echo=lambda m: _echo(args, m))  # --data, $DEFECTNAS_DATA, else the embedded ESCI sample
    run_quickstart(data, args.out, _options(args), seed=args.seed, quiet=args.quiet, load_kwargs=_load_kwargs(args),
                   echo=lambda m: _echo(args, m))


def cmd_compare(args: argparse.Namespace) -> None:
    from .timing import yield_idle_cpu_threads

    yield_idle_cpu_threads()  # before scikit-learn, LightGBM and torch load their OpenMP (see quickstart)
    from .compare import run_compare, run_sweep

    if args.repeats < 1:
        raise ConfigError("--repeats must be at least 1")
    if args.sweep and (args.models or args.save_models):
        given = " and ".join(f for f, on in (("--models", args.models), ("--save-models", args.save_models)) if on)
        raise ConfigError(f"--sweep {args.sweep} fits dl-jl only and saves no model: drop {given}, or drop --sweep for the table of --models")
    options = _options(args)
    options.pop("seed")  # the runner seeds each repeat itself
    threads = options.pop("num_threads", None) or 2
    common = dict(fast=args.fast, repeats=args.repeats, seed=args.seed, options=options, load_kwargs=_load_kwargs(args),
                  threads=threads, quiet=args.quiet, echo=lambda m: _echo(args, m))
    if args.sweep:
        values = None
        if args.sweep_values:
            try:
                values = [float(v) for v in args.sweep_values.split(",") if v.strip()]
            except ValueError:
                raise ConfigError(f"--sweep-values must be comma-separated numbers, got {args.sweep_values!r}") from None
        run_sweep(args.data, args.out, args.sweep, values, **common)
    else:
        run_compare(args.data, args.out, args.models, save_models=args.save_models, **common)


def cmd_data(args: argparse.Namespace) -> None:
    import warnings

    import pandas as pd

    from .data import coverage_report, coverage_warning, describe, format_description, read_pairs
    from .data.tokenizer import TextTokenizer
    from .model.pretrained import resolve_model_path

    if args.path and args.data and args.path != args.data:
        raise ConfigError(f"data: two tables given ({args.path} and --data {args.data}); give one")
    args.path = args.path or args.data
    if not args.path:
        raise ConfigError("data: give the table, as PATH or --data PATH")
    try:
        read = read_pairs(args.path, labels=not args.no_labels, require_both_classes=False, **_load_kwargs(args))
    except LayoutError as refused:  # a table predict scores (query and title, no label) is described too, as unlabelled
        if args.no_labels or args.label_col:
            raise
        try:
            read = read_pairs(args.path, labels=False, **_load_kwargs(args))
        except DefectnasError:
            raise refused from None
        _echo(args, f"note: {args.path}: no label column recognised, described as unlabelled pairs (--label-col L to read one)")
    df = read.pairs
    coverage = tokenizer = None
    try:
        source = resolve_model_path(args.pretrained_model or "")
        tokenizer = TextTokenizer.from_pretrained(source / "tokenizer.json")
        name = "pre-trained vocabulary (" + (args.pretrained_model or "MiniLM") + ")"
        coverage = coverage_report(tokenizer, pd.unique(pd.concat([df["query"], df["title"]])).tolist(), name)
    except ConfigError as e:
        _echo(args, f"note: no vocabulary coverage nor word-piece lengths ({e})")
    caps = (ModelConfig.query_max_len, ModelConfig.title_max_len)  # train's default token caps
    print(format_description(describe(df, read.integrity(), coverage, tokenizer, caps)))
    warning = coverage and coverage_warning(coverage)
    if warning:
        warnings.warn(f"{args.path}: {warning}", DataWarning, stacklevel=1)


def cmd_download(args: argparse.Namespace) -> None:
    from .data import download

    paths = download(args.name, args.out, base_url=args.base_url, quiet=args.quiet)
    for p in paths:
        print(p)


def cmd_cache(args: argparse.Namespace) -> None:
    from .data._common import counted
    from .serving.cache import build_cache
    from .serving.catalog import read_catalog

    catalog, notes = read_catalog(args.catalog, id_col=args.id_col, title_col=args.title_col, invalid_rows=args.invalid_rows)
    skipped = [f"{counted(notes[key], noun)} {what} left out{why}" for key, noun, what, why in (
        ("empty_titles", "row", "without a title", ""), ("empty_ids", "row", "without a product id", ""),
        ("duplicate_ids", "id", "with different titles", " (ambiguous)")) if notes[key]]
    _echo(args, f"{args.catalog}: {counted(len(catalog), 'product')} from {counted(notes['rows'], 'row')}" + "".join(f"; {s}" for s in skipped))
    _set_threads(args.threads)
    report = build_cache(args.model, catalog, args.out, batch_size=args.batch_size, rebuild=args.rebuild, quiet=args.quiet,
                         invalid_rows=args.invalid_rows, dtype=args.dtype, ray_address=args.ray_address)  # dtype None: the cache's own
    products = counted(report.count, "product")
    if not report.written:
        _echo(args, f"{args.out}: up to date ({products})")
    elif report.encoded == 0 and report.removed == 0:  # the same products, stored anew (another --dtype, or an older cache format)
        _echo(args, f"{args.out}: {products} rewritten as a new generation ({report.dtype}), nothing re-encoded; "
                    f"{report.bytes / 2**20:.1f} MiB")
    else:
        _echo(args, f"{args.out}: {products} ({report.added} added, {report.changed} changed, {report.removed} removed, "
                    f"{report.kept} kept); encoded {report.encoded} in {report.seconds:.1f} s ({report.products_per_second:.0f}/s), "
                    f"{report.bytes / 2**20:.1f} MiB as {report.dtype}")


def cmd_export(args: argparse.Namespace) -> None:
    from .serving.onnx_backend import serve_advice
    from .serving.onnx_export import export_onnx

    _set_threads(args.threads)
    pairs = None
    if args.data:
        from .data import split_by_query

        df = _read_for_model(args).pairs
        parts = split_by_query(df, valid_frac=0.1, test_frac=args.test_frac, seed=args.seed)  # the split `train` made with this seed
        pairs = parts["test"] if len(parts["test"]) else parts["valid"]
        _echo(args, f"{args.data}: the AP loss is measured on the {'test' if len(parts['test']) else 'validation'} split "
                    f"({len(pairs)} pairs, as train --seed {args.seed} --test-frac {args.test_frac} split it)")
    elif args.int8:
        raise ConfigError("--int8 needs --data (a labelled table): the quantized model's AP loss is measured on its test split")
    spec = export_onnx(args.model, args.out, int8=args.int8, eval_pairs=pairs, eval_source=str(args.data or ""),
                       log=lambda m: _echo(args, m))
    _echo(args, f"{args.out}: ONNX export ({spec['precision']}) of {spec['source_model']['name']}; {serve_advice(spec, args.out)}")
    print(json.dumps({k: spec[k] for k in ("precision", "parity", "quantization")}, indent=2))


def cmd_audit(args: argparse.Namespace) -> None:
    from .audit import AuditConfig, run_audit

    _set_threads(args.threads)
    cfg = AuditConfig(model=args.model, log=args.log, out=args.out, cache=args.cache, catalog=args.catalog, by=list(args.by or []),
                      baseline_log=args.baseline_log, ray_address=args.ray_address, batch_rows=args.batch_rows,
                      threads=args.threads, query_col=args.query_col, id_col=args.id_col, title_col=args.title_col,
                      position_col=args.position_col, seed=args.seed, quiet=args.quiet, invalid_rows=args.invalid_rows)
    summary = run_audit(cfg, echo=lambda m: _echo(args, m))
    o = summary["overall"]
    extra = ", skipped_rows.csv" if summary.get("skipped_rows", {}).get("rows") else ""
    _echo(args, f"{args.out}: scored.parquet, queries.csv, summary.json, report.html{extra}")
    print(json.dumps({"rows": summary["rows"], "queries": o["queries"], "missing": o["missing"],
                      **{k: o[k] for k in ("unweighted", "position_weighted", "traffic_weighted", "at_threshold")},
                      **({"baseline": summary["baseline"]["overall"]} if "baseline" in summary else {})}, indent=2))


def cmd_serve(args: argparse.Namespace) -> None:
    import ipaddress
    import os

    import uvicorn

    from .data._common import counted
    from .serving.app import API_KEY_ENV, SERVE_LOOP, ReusePortListener, ServeSettings, create_app, open_listeners, run_workers

    for name in ("max_products", "max_query_chars", "max_title_chars", "threads", "workers", "max_batch"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    if args.query_cache < 0:
        raise ConfigError("--query-cache must be 0 (off) or more")
    for name in ("max_concurrency", "max_queue", "request_timeout_ms", "shutdown_timeout_s", "cache_reload_s", "batch_wait_ms"):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be 0 or more")
    if args.max_body_bytes < 0:
        raise ConfigError("--max-body-bytes must be 0 (derived from the other bounds) or more")
    settings = ServeSettings(max_products=args.max_products, max_query_chars=args.max_query_chars,
                             max_title_chars=args.max_title_chars, max_body_bytes=args.max_body_bytes, threads=args.threads,
                             api_key=args.api_key or os.environ.get(API_KEY_ENV) or None, backend=args.backend,
                             query_cache=args.query_cache, max_int8_ap_loss=args.max_int8_ap_loss, allow_int8_loss=args.allow_int8_loss,
                             max_concurrency=args.max_concurrency, max_queue=args.max_queue, request_timeout_ms=args.request_timeout_ms,
                             cache_reload_s=args.cache_reload_s, batch_wait_ms=args.batch_wait_ms, max_batch=args.max_batch)
    if not args.worker_healthcheck_s > 0:
        raise ConfigError(f"--worker-healthcheck-s must be > 0, got {args.worker_healthcheck_s:g}")
    sockets, port = open_listeners(args.host, args.port, args.workers)  # a port in use or out of range: one line, before loading
    app = create_app(args.model, args.cache, settings)  # also checks model and cache before any worker starts
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback and not settings.api_key:
        _echo(args, f"warning: serving on {args.host} without an API key (set --api-key or {API_KEY_ENV})")
    scorer = app.state.scorer
    products = counted(len(scorer.cache), "cached product") if scorer.cache else "no cache (raw titles only)"
    workers = f", {args.workers} worker processes" if args.workers > 1 else ""
    host = f"[{args.host}]" if ":" in args.host else args.host
    _echo(args, f"serving {scorer.name} with {products} on http://{host}:{port}{workers} (API docs at /docs)")
    options = {"host": args.host, "port": port, "log_level": "warning" if args.quiet else "info", "access_log": args.access_log,
               "timeout_graceful_shutdown": args.shutdown_timeout_s or None, "http": args.http, "loop": SERVE_LOOP}
    if args.workers == 1:
        if args.balance_connections:
            _echo(args, "note: --balance-connections balances connections between worker processes; with --workers 1 it does nothing")
        uvicorn.Server(uvicorn.Config(app, **options)).run(sockets=sockets)
        return
    del app, scorer
    if args.balance_connections and not isinstance(sockets[0], ReusePortListener):
        _echo(args, "note: --balance-connections needs a fixed --port on Linux (the workers then listen on sockets of their own); "
                    "ignored here")
    run_workers(args.model, args.cache, settings, args.workers, sockets, balance_connections=args.balance_connections,
                timeout_worker_healthcheck=math.ceil(args.worker_healthcheck_s), **options)  # uvicorn takes whole seconds


def cmd_search(args: argparse.Namespace) -> None:
    from .timing import yield_idle_cpu_threads

    yield_idle_cpu_threads()  # before torch loads: worker processes inherit it (see quickstart)
    from .config import load_options_file
    from .search.config import SearchConfig, load_saved, merge_for_resume
    from .search.runner import no_search_to_resume, run_search

    given = {k: getattr(args, k) for k in _SEARCH_FLAGS if getattr(args, k, None) is not None}
    given["data"] = str(Path(args.data).resolve()) if Path(args.data).exists() else args.data
    given["load_kwargs"] = {k: v for k, v in _load_kwargs(args).items() if v is not None}
    given["seed"] = args.seed
    if args.matching:
        given["matching"] = True
    if args.config:
        given["options"] = load_options_file(args.config)
    saved = load_saved(args.out) if args.resume else None
    if args.resume and saved is None and args.quiet:  # a mistyped --out must not pass unnoticed: --quiet keeps this line
        print(f"warning: {no_search_to_resume(args.out)}", file=sys.stderr)
    if saved is not None:
        if args.seed == 0:  # --seed left at its default: continue with the search's own seed
            given.pop("seed")
        cfg = merge_for_resume(saved, given)
    else:
        cfg = SearchConfig.from_dict(given)
    result = run_search(cfg, args.out, resume=args.resume, quiet=args.quiet, log=lambda m: _echo(args, m))
    if not result.trials:  # only a budget too small for one batch and its retrains does this (the line above said so)
        raise ConfigError(f"--budget-minutes {cfg.budget_minutes:g} left no time to train a single child and retrain it: nothing "
                          f"saved but the noise floor in {args.out}; give more minutes (the floor, one batch of children and the retrains' "
                          f"estimate must fit: without --quiet the line above adds them up; with --resume the floor is kept), retrain "
                          f"less (--top-k 1 --pareto-max 1 --distill-query 0), or 0 for no bound")
    report = result.final  # final.json's dict
    best = next((c for c in report.get("candidates", []) if c.get("best")), None)
    floor = {k: v for k, v in result.noise_floor.items() if k in ("metric", "child_seeds", "repeats", "mean", "std_of_mean", "seed_std")}
    summary = {"out": str(result.out), "trials": len(result.trials), "noise_floor": floor,
               "best_dir": str(result.best_dir) if result.best_dir else None,
               "best": {k: best.get(k) for k in ("architecture", "valid_metric", "valid_metric_std", "test_ap", "test_f1", "latency_ms",
                                                  "search_metric", "selection_bias")} if best else None,
               "pareto": [{k: e[k] for k in ("n", "latency_ms", "valid_metric", "test_ap")} for e in report.get("pareto", [])],
               "paired_test": report.get("paired_test"),
               "distilled": {k: v for k, v in (report.get("distilled") or {}).items() if k not in ("served_ms",)} or None,
               "report": str(result.out / "report.html") if (result.out / "report.html").exists() else None,
               "seconds": round(result.seconds, 1)}  # the whole search's, a resumed one's earlier runs included
    if args.resume:
        summary["run_seconds"] = round(result.run_seconds, 1)
    print(json.dumps(summary, indent=2))


_SEARCH_FLAGS = ("space", "space_options", "trials", "top_k", "latency_weight", "latency_target_ms", "latency_budget_ms", "reward_metric", "child_seeds",
                 "child_epochs", "child_rows", "child_valid_rows", "noise_repeats", "pareto_max", "pareto_min_ratio", "final_seeds", "final_epochs",
                 "final_rows", "distill_query", "distill_epochs", "split_seed", "budget_minutes", "batch_size", "population", "sample_size", "workers", "ray_address", "strategy",
                 "variant", "threads", "valid_frac", "test_frac")


# --------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """argparse, with a mistyped flag or value refused in one line (argparse prints the whole usage
    block first, which for ``search``'s 40 flags buries the one line that says what was wrong)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the options)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="defectnas", description="Find search defects: products shown for a query that are not relevant to it.")
    parser.add_argument("--version", action="version", version=f"defectnas {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a defect classifier and save it as a model directory")
    _add_data_options(p)
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--variant", choices=["dl-gs", "dl-jl", "transfer"], help="loss: dl-gs (CE, default), dl-jl (CE + triplet), transfer (triplet pre-training, then CE)")
    p.add_argument("--test-frac", type=_test_fraction, default=0.2, help="share of queries held out for metrics.json (0: none, report validation)")
    p.add_argument("--valid-frac", type=_valid_fraction, help="share of queries held out for early stopping, calibration and the threshold "
                   "(default 0.1, or valid_frac of --config)")
    p.add_argument("--resume", action="store_true", help="continue a killed run from its last checkpoint in --out")
    p.add_argument("--keep-checkpoint", action="store_true", help="keep checkpoint.safetensors after training")
    _add_model_options(p)
    _add_common(p, seed=TRAINING_SEED)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("distill-query", help="a faster copy of a model: its query tower distilled into fewer pre-trained layers "
                       "(same title tower, so the model's product caches serve it)",
                       description="Train a query tower of --layers pre-trained layers to reproduce a trained model's (its encodings of "
                                   "the training queries and of word runs of the training titles), keeping the model's title tower and "
                                   "head. The result is an ordinary model directory that serves faster (a request's cost is mostly the query tower) and that the model's "
                                   "product caches serve as they are. Uses the model's own train/valid/test queries (splits.json) when it "
                                   "has them; writes metrics.json (held-out) and distillation.json (AP and served ms of both).")
    p.add_argument("--model", required=True, help="the trained model (the teacher) whose query tower is distilled into a student's")
    _add_data_options(p)
    p.add_argument("--out", required=True, help="model directory to write (not the model's own)")
    p.add_argument("--layers", type=int, default=2, help="pre-trained layers of the new query tower (default 2: ~2x faster than 6)")
    p.add_argument("--epochs", type=int, default=4, help="passes over the query-like texts (default 4, at least 1)")
    p.add_argument("--text-windows", type=int, default=0, help="runs of 1-5 consecutive words taken from each training title as "
                                                                "more query-like texts, besides the queries and one prefix per title "
                                                                "(default 0; each adds about a title's count of texts to an epoch)")
    p.add_argument("--init", choices=["bottom+top", "bottom"], default="bottom+top",
                   help="which of the model's query layers the new ones start as: the bottom layers-1 and the top one (default), "
                        "or the bottom ones")
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate, cosine decay (default 5e-4)")
    p.add_argument("--logit-weight", type=float, default=0.0, help="weight of also matching the model's scores on training pairs "
                                                                    "(default 0: encodings only; > 0 triples an epoch's time)")
    p.add_argument("--test-frac", type=_test_fraction, help="without the model's splits.json: share of queries held out for metrics.json "
                   "(default 0.2; with it, the model's own test queries are used and this is ignored, with a note)")
    p.add_argument("--resume", action="store_true", help="continue a killed run from its last checkpoint in --out")
    p.add_argument("--keep-checkpoint", action="store_true", help="keep checkpoint.safetensors afterwards")
    p.add_argument("--threads", type=_threads, default=0, help="torch CPU threads (default: torch's choice)")
    _add_common(p, seed="the split, when the model has no splits.json; the student's batch order")
    p.set_defaults(func=cmd_distill_query)

    p = sub.add_parser("evaluate", help="precision/recall/F1 of a saved model on labelled data")
    p.add_argument("--model", required=True, help="model directory")
    _add_data_options(p)
    p.add_argument("--json", help="also write the metrics to this file (and a reliability diagram beside it, FILE stem + .reliability.png)")
    p.add_argument("--split", choices=["valid", "test"], help="only the pairs of --data whose queries were in the model's own validation "
                   "or test split (train records them in splits.json)")
    p.add_argument("--plot", help="write the reliability diagram (PNG) here")
    _add_common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("threshold", help="set the decision threshold for a target precision or recall (optionally per group) and save it",
                       description="Choose the threshold that reaches a target precision (the most recall that keeps it) or a target "
                                   "recall (the most precision that keeps it) on labelled data — normally validation data the model "
                                   "was not trained on — and save it into the model's config.json with how it was chosen. With --by, "
                                   "one threshold per value of that column; small groups, and groups where the target cannot be "
                                   "reached, use the global threshold. predict and evaluate apply per-group thresholds when their "
                                   "input has the column.")
    p.add_argument("--model", required=True, help="model directory (config.json is updated in place, atomically)")
    p.add_argument("--split", choices=["valid", "test"], help="only the pairs of --data whose queries were in the model's own validation "
                   "(normally) or test split (train records them in splits.json)")
    _add_data_options(p)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-precision", type=_target, help="precision to reach, in (0, 1]")
    target.add_argument("--target-recall", type=_target, help="recall to reach, in (0, 1]")
    p.add_argument("--by", help="column of the data (e.g. product_locale): one threshold per value")
    p.add_argument("--min-group", type=int, default=200, help="with --by: pairs a group needs for its own threshold (default 200)")
    p.add_argument("--min-group-defects", type=int, default=20, help="with --by: defects a group needs for its own threshold (default 20)")
    p.add_argument("--min-flagged", type=int, default=20, help="a target precision counts only where at least this many pairs are "
                   "flagged (default 20; precision 1.0 on one pair says nothing)")
    p.add_argument("--allow-training-pairs", action="store_true", help="save a threshold chosen on data whose pairs were mostly in "
                   "the model's training split (refused by default: it would not keep its target on new queries)")
    _add_common(p)
    p.set_defaults(func=cmd_threshold)

    p = sub.add_parser("predict", help="add defect_probability and is_defect to a table of pairs")
    p.add_argument("--model", required=True, help="model directory")
    _add_data_options(p)
    p.add_argument("--out", required=True, help="output table (.csv, .tsv, .jsonl or .parquet)")
    p.add_argument("--cache", help="product cache built with this model (defectnas cache): a pair whose product id it holds under the "
                                   "same title takes the cached encoding instead of encoding the title again")
    p.add_argument("--id-col", dest="pairs_id_col", help="column of product ids, for --cache (default: the format's own, a table's product_id)")
    p.add_argument("--threads", type=_threads, default=0, help="torch CPU threads (0: torch's default)")
    _add_common(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("select", help="choose the pairs raters should judge next (uncertain or disputed, weighted by traffic, spread over queries)",
                       description="Score an unlabelled table and pick --budget pairs whose labels would help most: closest to the "
                                   "model's threshold (in logits), or most disputed by the --compare-with models, times traffic when the "
                                   "table has impressions/count/traffic/clicks; at most --max-per-query per query; pairs already "
                                   "labelled (--labelled tables, or a label in the table) are skipped.")
    p.add_argument("--model", required=True, help="model directory (train, search, or any baseline compare saved)")
    _add_data_options(p, format_flag="--data-format")  # --format is the output layout here (CONTRACT)
    p.add_argument("--budget", type=int, required=True, help="pairs to choose")
    p.add_argument("--out", required=True, help="output table (.csv, .tsv, .jsonl or .parquet): the chosen pairs, scores, reason, "
                   "and an empty rating column for raters")
    p.add_argument("--format", dest="output_format", choices=["table", "quepid"], default="table", help="quepid: query,docid,rating for Quepid's rating import "
                   "(details beside it as <out>.details.csv)")
    p.add_argument("--docid", default="product_id", help="quepid: the column used as docid (default product_id; title when the engine has no ids)")
    p.add_argument("--max-per-query", type=int, default=3, help="at most this many pairs of one query (default 3)")
    p.add_argument("--compare-with", action="append", metavar="DIR", help="another saved model (cross-encoder, GBDT, ...): "
                   "pairs where it disagrees are informative too; repeatable")
    p.add_argument("--labelled", action="append", metavar="PATH", help="a table of pairs already labelled, to skip (repeatable; same column options)")
    p.add_argument("--traffic-col", help="numeric traffic column (default: the first of impressions, count, traffic, clicks present)")
    _add_common(p)
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("quickstart", help="the main job: train the three variants, print and save the results table "
                       "(data: --data, else $DEFECTNAS_DATA, else the embedded ESCI sample)")
    _add_data_options(p, required=False)
    p.add_argument("--out", default="defectnas-quickstart", help="output folder (results.*, pr_curve.png, model/)")
    _add_model_options(p)
    _add_common(p, seed=TRAINING_SEED)
    p.set_defaults(func=cmd_quickstart)

    p = sub.add_parser("cache", help="encode a product catalogue once with a saved model (for serve)")
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--catalog", required=True, help="table with product id and title (or any pairs dataset, or an ESCI/WANDS folder)")
    p.add_argument("--out", required=True, help="cache directory to create, or to update incrementally")
    p.add_argument("--id-col", help="column of product ids (default: product_id, product_uid or id; a table with none of them: "
                                    "ids are hashes of the titles; a row whose id cell is empty is invalid, see --invalid-rows)")
    p.add_argument("--title-col", help="column of product titles (default: title, product_title or product_name)")
    p.add_argument("--batch-size", type=int, default=512, help="titles encoded per batch")
    p.add_argument("--rebuild", action="store_true", help="re-encode everything, even a cache of another model")
    p.add_argument("--invalid-rows", choices=["error", "skip"], default="skip",
                   help="products without a title or without an id (an empty cell of the id column), with a title the model sees as "
                        "nothing, or whose (locale, id) carries two titles: "
                        "skip (default: left out, named in one warning line) or error (exit 2)")
    p.add_argument("--dtype", choices=["float16", "float32", "int8"], default=None,
                   help="how encodings are stored: float16 (half the bytes; scores still computed in float32), float32 (exact when "
                        "encoded so) or int8 (a scale per row; about half float16's bytes, for catalogues where storage limits). Default: "
                        "an existing cache's own dtype, else float16. Converting a cache re-encodes nothing: to a wider dtype "
                        "(int8 → float16/float32, float16 → float32) its values keep the narrower one's rounding (said in a warning "
                        "line); --rebuild encodes them anew")
    p.add_argument("--ray-address", help="encode the titles on a Ray cluster: auto, local, or ray://host:port (one actor per CPU; "
                                         "needs pip install 'defectnas[ray]'; the cache is written here, as without Ray)")
    p.add_argument("--threads", type=_threads, default=0, help="torch CPU threads (0: torch's default)")
    _add_common(p)
    p.set_defaults(func=cmd_cache)

    p = sub.add_parser("export", help="write the online path (query tower, scoring head; title tower for raw titles) as ONNX for serve --backend onnx",
                       description="Export a model directory as ONNX graphs (query tower, scoring head, title tower) with tokenizer.json, "
                                   "calibration.json and export.json (threshold, the fp32 parity check against PyTorch, and with --int8 the "
                                   "AP loss of dynamic int8 quantization, measured on the test split of --data as train splits it).")
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--format", dest="export_format", choices=["onnx"], default="onnx", help="export format (onnx)")
    p.add_argument("--out", required=True, help="export directory to write")
    p.add_argument("--int8", action="store_true", help="dynamic int8 quantization of the query tower and head (needs --data)")
    _add_data_options(p, required=False, format_flag="--data-format")  # --format is the export format here
    p.add_argument("--test-frac", type=_test_fraction, default=0.2, help="share of queries train held out as the test split (as train's --test-frac)")
    p.add_argument("--threads", type=_threads, default=0, help="torch CPU threads for the parity check and the AP-loss measurement (0: torch's default)")
    _add_common(p, seed="the split --int8 measures its AP loss on, when the model has no splits.json (as train's --seed)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("audit", help="defect rates of a search engine's result log: per query, position and group (+ before/after)",
                       description="Score every shown pair of a result log (query, product_id or title, 1-based position, optional "
                                   "impressions/count and grouping columns; any table format, or OpenSearch UBI query events) with a "
                                   "model and its product cache, and write scored.parquet, queries.csv, summary.json and report.html "
                                   "to --out. Rates are expected defect rates from calibrated probabilities, with counts at the "
                                   "model's threshold beside them; products missing from the catalogue are counted and listed.")
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--log", required=True, help="result log: one row per shown result (or UBI query events, NDJSON)")
    p.add_argument("--cache", help="product cache built with this model (defectnas cache)")
    p.add_argument("--catalog", help="product catalogue (id, title): encoded into a temporary cache; with --cache, it only "
                                     "names the products in the report (and titles those the cache lacks)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--by", nargs="+", action="extend", metavar="COLUMN", help="grouping columns of the log (rates per value)")
    p.add_argument("--baseline-log", help="the log before a change: audited with the same model, change per query and group")
    p.add_argument("--ray-address", help="score on Ray actors: auto, local, or ray://host:port (needs pip install ray)")
    p.add_argument("--batch-rows", type=int, default=200_000, help="log rows read and held at once (bounds memory)")
    p.add_argument("--threads", type=_threads, default=0, help="torch CPU threads of the local scorer (0: torch's default)")
    p.add_argument("--query-col", help="column of the query (default: query, search_term, user_query or keywords)")
    p.add_argument("--id-col", help="column of the product id (default: product_id, product_uid, doc_id or hit_id)")
    p.add_argument("--title-col", help="column of the title (default: title, product_title or product_name)")
    p.add_argument("--position-col", help="column of the 1-based position (default: position or rank)")
    p.add_argument("--invalid-rows", choices=["error", "skip"], default="error",
                   help="a row with an empty query, neither product id nor title, or a bad position or traffic cell: error (default: "
                        "one line naming it, exit 2) or skip (left out of every rate, counted, and listed with the reason in "
                        "skipped_rows.csv)")
    _add_common(p, seed="the bootstrap of the rates' intervals")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("serve", help="HTTP scoring service: POST /score, POST /v1/rerank, GET /healthz, GET /metrics, docs at /docs")
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--cache", help="product cache built by `defectnas cache` with this model (without it: raw titles only)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0: one the system chooses, said at start)")
    p.add_argument("--threads", type=_threads, default=1, help="CPU threads for scoring, torch or onnxruntime (per worker; default 1)")
    p.add_argument("--workers", type=int, default=1, help="server processes (e.g. one per CPU core); each loads the model")
    p.add_argument("--max-products", type=int, default=1000, help="products per request (default 1000; more: 413)")
    p.add_argument("--max-query-chars", type=int, default=200, help="characters per query (more: 422)")
    p.add_argument("--max-title-chars", type=int, default=500, help="characters per raw title (more: 422)")
    p.add_argument("--max-body-bytes", type=int, default=0,
                   help="request body cap in bytes (more: 413). Default 0: derived from the bounds above as the largest body a "
                        "request within them can take as JSON, every character \\u-escaped (12 bytes for one beyond the BMP), "
                        "so no such request is refused (about 6.1 MB with the defaults)")
    p.add_argument("--api-key", help="require this key in header X-API-Key (default: env DEFECTNAS_API_KEY, else none)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                   help="torch: --model is a model directory (PyTorch); onnx: --model is an ONNX export (defectnas export), run on onnxruntime")
    p.add_argument("--query-cache", type=int, default=4096, help="query encodings kept in an LRU (default 4096; 0: off); hits and misses in /healthz and /metrics")
    p.add_argument("--max-int8-ap-loss", type=float, default=0.01,
                   help="refuse an int8 export whose AP loss (measured at export, 0-1) is over this (default 0.01)")
    p.add_argument("--allow-int8-loss", action="store_true", help="serve an int8 export whatever its measured (or unmeasured) AP loss")
    p.add_argument("--max-concurrency", type=int, default=16, help="requests served at once per worker (0: no bound; default 16)")
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting for a slot; beyond, 503 with Retry-After at once (default 64)")
    p.add_argument("--request-timeout-ms", type=float, default=30_000,
                   help="a request not answered this long after arriving gets 503 (0: no deadline; default 30000)")
    p.add_argument("--cache-reload-s", type=float, default=2.0,
                   help="check the --cache directory this often (seconds) for a new generation written by defectnas cache, and serve "
                        "it without a restart (0: never; default 2)")
    p.add_argument("--batch-wait-ms", type=float, default=0,
                   help="micro-batching (torch backend or an fp32 ONNX export): cached-product requests arriving within this many ms share one query-tower "
                        "pass (0: off, the default)")
    p.add_argument("--max-batch", type=int, default=32, help="with --batch-wait-ms: requests per query-tower pass at most (default 32)")
    p.add_argument("--shutdown-timeout-s", type=float, default=30,
                   help="on SIGTERM/Ctrl-C, wait this long for requests in flight to finish (0: as long as they take; default 30)")
    p.add_argument("--worker-healthcheck-s", type=float, default=60,
                   help="with --workers N: seconds a worker may leave uvicorn's health ping unanswered — while it starts (imports "
                        "torch, loads the model) or when hung — before it is killed and restarted (default 60; uvicorn's own 5 "
                        "killed workers still starting on a busy 2-core machine, over and over)")
    p.add_argument("--balance-connections", action=argparse.BooleanOptionalAction, default=False,
                   help="with --workers N on Linux: a worker holding more than its share of the keep-alive connections closes one "
                        "after its answer, so that clients reconnect to the others (default off: no p99 gain measured, README)")
    p.add_argument("--http", choices=["auto", "httptools", "h11"], default="auto",
                   help="uvicorn's HTTP parser (auto: httptools when installed, else the pure-Python h11)")
    _add_common(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("search", help="architecture search (serving space: accuracy and served latency; seed space: the paper's)",
                       description="Search the two-tower model's architecture with REINFORCE (the paper's LSTM controller), "
                                   "random search or regularized evolution. The serving space (default) searches what moves "
                                   "accuracy or served latency; the seed space the paper's per-layer ops of the product encoder. "
                                   "Before sampling, the noise floor is measured (the default architecture under several seed "
                                   "sets); every child trains under the same K seeds and is scored by validation AP. The top-k "
                                   "and the accuracy-latency Pareto front are retrained with fresh seeds and saved (DIR/best, "
                                   "DIR/pareto/<n>: model directories for evaluate, predict, cache and serve), and a paired test "
                                   "says whether the best beats train's default by more than noise. Then best's query tower is "
                                   "distilled into --distill-query K layers (DIR/distilled, on the front unless dominated). "
                                   "Resumable: rerun with --resume.")
    _add_data_options(p)
    p.add_argument("--out", required=True, help="search folder: trials.jsonl, controller checkpoint, plots, final.json, top_k.json, "
                                                "best/, pareto/<n>/, distilled/")
    from .search.config import SearchConfig  # no torch: cheap

    d = SearchConfig()
    p.add_argument("--space", choices=["serving", "seed"], help="serving (default): query depth, fine-tuning, token cap, cells, width, "
                   "matching, sentence vector; seed: the paper's per-layer ops of 5 title cells")
    p.add_argument("--space-options", type=_json_object, dest="space_options",
                   help='JSON of the space\'s option lists, e.g. \'{"title_trainable": [0, 1, 2]}\' (on a CPU the serving space '
                        'leaves title fine-tuning out unless asked)')
    p.add_argument("--strategy", choices=["rl", "random", "evolution"], help="rl: LSTM controller + REINFORCE (default); random: uniform; "
                   "evolution: regularized evolution")
    p.add_argument("--trials", type=int, help=f"children to sample and evaluate (default {d.trials})")
    p.add_argument("--reward-metric", choices=["ap", "f1"], help="ap (default): average precision on the whole validation split; f1: at the tuned threshold")
    p.add_argument("--child-seeds", type=int, help=f"K: every child trains under the same K seeds, reward = their mean (default {d.child_seeds})")
    p.add_argument("--latency-budget-ms", type=float, help="hard budget per served request (1 query × 100 cached products): children over it get reward 0; 0: none (the default)")
    p.add_argument("--latency-weight", type=float, help="W > 0: reward metric·(latency/target)^(-W) (MnasNet; default 0)")
    p.add_argument("--latency-target", type=float, dest="latency_target_ms", help="target ms per request (default: the default architecture's, measured)")
    p.add_argument("--child-epochs", type=int, help=f"epochs per search child (default {d.child_epochs})")
    p.add_argument("--child-rows", type=int, help=f"training pairs per search child (default {d.child_rows}; 0: all)")
    p.add_argument("--child-valid-rows", type=int, help="validation pairs scoring a search child (default 0: the whole validation split)")
    p.add_argument("--noise-repeats", type=int, help=f"the noise floor: the default architecture under this many K-seed sets (default {d.noise_repeats}; 0: skip)")
    p.add_argument("--top-k", type=int, help=f"best architectures retrained with fresh seeds (default {d.top_k})")
    p.add_argument("--pareto-max", type=int, help=f"Pareto-front architectures retrained and saved under pareto/<n>/ (default {d.pareto_max})")
    p.add_argument("--pareto-min-ratio", type=float, metavar="R",
                   help="retrain a faster front architecture only if its search metric is at least R × train's default's under "
                        f"the same seeds (default {d.pareto_min_ratio:g}: on a slow machine the minutes go to sampling, not to "
                        "front models at half the default's AP; the most accurate is always retrained; 0: the whole front)")
    p.add_argument("--final-seeds", type=int, help=f"fresh seeds per retrain, for the paired test against train's default (default {d.final_seeds})")
    p.add_argument("--final-epochs", type=int, help="epochs of the retrains (0: the model's; default: 1 when children train on a CPU, else 0)")
    p.add_argument("--final-rows", type=int, help="training pairs of the retrains (0: all; default: 12000 when children train on a CPU, else all)")
    p.add_argument("--distill-query", type=int, metavar="K", help="after the retrains, distil best/'s query tower into K pre-trained layers "
                   "(the recipe of distill-query), measure it like the candidates and put it on the Pareto front; also saved as "
                   "distilled/ (default 2; 0: off; fewer than the space's deepest query tower, 6 by default)")
    p.add_argument("--distill-epochs", type=int, help="epochs of that distillation (default 4: ~5 min on Home Depot's sample, 2 CPU cores)")
    p.add_argument("--budget-minutes", type=float, help=f"wall time of the whole search, retrains included: sampling stops when what is left "
                   f"only covers the retrains' estimate (default {d.budget_minutes:g}; 0: no bound)")
    p.add_argument("--controller-batch", type=int, dest="batch_size", help="architectures per strategy step (default: rl max(4, workers), others workers)")
    p.add_argument("--population", type=int, help=f"evolution: population size (default {d.population})")
    p.add_argument("--sample-size", type=int, help=f"evolution: tournament size (default {d.sample_size})")
    p.add_argument("--workers", type=int, help="children trained at once in local processes (default 1); with --ray-address, "
                                             "children sent to Ray at once at the least (default: the cluster's CPUs)")
    p.add_argument("--ray-address", help="run children as Ray tasks: auto, local, or ray://host:port (needs pip install ray)")
    p.add_argument("--resume", action="store_true", help="continue the search in --out (nothing finished is lost or rerun)")
    p.add_argument("--matching", action="store_true", help="seed space: add the multi-perspective matching layer (dl-rl-ml)")
    p.add_argument("--variant", choices=["dl-gs", "dl-jl", "transfer"], help="loss of children and final models (default dl-gs)")
    p.add_argument("--config", help="JSON file of base model/training options for children and final models (e.g. d_model)")
    p.add_argument("--threads", type=_threads, help="torch CPU threads per child while training (default: the cores / --workers)")
    p.add_argument("--split-seed", type=int, dest="split_seed", help="seed of the query split (default: --seed): searches of several "
                   "--seed values on one split, e.g. to repeat a search, are scored on the same test queries")
    p.add_argument("--valid-frac", type=_valid_fraction, dest="valid_frac", help=f"share of queries held out for the children's reward "
                   f"and the retrains' model selection (default {d.valid_frac})")
    p.add_argument("--test-frac", type=_test_fraction, dest="test_frac", help=f"share of queries held out for the final models' test "
                   f"metrics and the paired test against train's default (default {d.test_frac}; 0: none, then no paired test)")
    _add_common(p, seed="the controller or strategy, the children's seeds and, unless --split-seed, the query split")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("compare", help="the results table: train and score the chosen models on one split (+ PR and F1-latency plots)")
    _add_data_options(p)
    p.add_argument("--out", required=True, help="output folder (results.csv/json/md, pr_curves.png, f1_latency.png, predictions.parquet)")
    p.add_argument("--models", help="comma-separated: dl-gs, transfer, dl-jl, dl-rl, dl-rl-ml, seed-two-tower, lstm, coattention, gbdt, "
                                    "bert, tfidf (default: all; dl-rl/dl-rl-ml only where the search module is available)")
    p.add_argument("--fast", action="store_true", help="small budgets for a first look in minutes: train/valid/test capped at 3000/2000/5000 pairs, "
                                                      "2 epochs, a 2-point grid, 4 search trials, BERT on 1000 pairs")
    p.add_argument("--repeats", type=int, default=1, help="train each model N times (seeds seed..seed+N-1, same split); report mean ± std")
    p.add_argument("--sweep", choices=["alpha", "beta"], help="instead of the table: F1 of dl-jl over a sweep of the loss weight alpha or beta "
                   "(dl-jl only: not with --models or --save-models)")
    p.add_argument("--sweep-values", help="comma-separated values for --sweep (default alpha 0.25,0.5,1,2,4; beta 0,0.1,0.25,0.5,1,2)")
    p.add_argument("--save-models", action="store_true", help="also save every trained model (the first seed's, with --repeats) under "
                   "OUT/models/NAME, tfidf included, without pickle: evaluate, predict and select read each")
    _add_model_options(p, epochs_default="the budget's: 4; --fast 2, its grid 1")  # apply to the two-tower models; --threads (default 2) is also latency_ms_per_100's (served: serve's 1 thread)
    _add_common(p, seed=TRAINING_SEED + "; --repeats N uses seed..seed+N-1")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("data", help="rows, queries, defect rate and length percentiles of a table")
    p.add_argument("path", nargs="?", help="table of query–product pairs (or give it as --data PATH)")
    p.add_argument("--no-labels", action="store_true", help="the table has no labels")
    p.add_argument("--pretrained-model", help="vocabulary whose coverage is reported: a local BERT-style checkpoint (default: the bundled MiniLM)")
    _add_data_options(p, required=False)
    _add_common(p)
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("download", help="download a public dataset (needs internet)")
    p.add_argument("name", choices=["esci", "wands"])
    p.add_argument("--out", required=True, help="folder to write the files into")
    p.add_argument("--base-url", help=argparse.SUPPRESS)
    _add_common(p)
    p.set_defaults(func=cmd_download)
    return parser


def _show_data_warnings():
    """Print each DataWarning once, as one ``warning: ...`` line on stderr (others as Python does)."""
    import warnings

    from .data._common import one_line

    shown: set[str] = set()
    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, DataWarning):
            return original(message, category, filename, lineno, file, line)
        text = one_line(str(message))
        if text not in shown:
            shown.add(text)
            print(f"warning: {text}", file=sys.stderr)

    context = warnings.catch_warnings()
    context.__enter__()
    warnings.simplefilter("always", DataWarning)
    warnings.showwarning = show
    return context


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    shown = _show_data_warnings()
    try:
        args.func(args)
    except DefectnasError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resumable = hasattr(args, "resume") and not getattr(args, "resume", False)
        print("interrupted" + ("; what finished is checkpointed in --out: rerun the same command with --resume to continue"
                               if resumable else ""), file=sys.stderr)
        return 130
    finally:
        shown.__exit__(None, None, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
