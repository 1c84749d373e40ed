"""`sainet` command line. Subcommands import their heavy dependencies lazily, so that serving
commands never pull in torch."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default="synthetic",
                       help="synthetic (default), amazon-cdsr, movielens-1m or logs (your own log)")
    group.add_argument("--data-dir", help="folder (or file, for `logs`) holding the dataset")
    group.add_argument("--history-length", type=int, default=50, help="behaviours per history (N)")
    group.add_argument("--split", choices=["time", "random", "leave-last-out", "given"],
                       help="split method; default depends on the dataset")
    group.add_argument("--split-seed", type=int, default=1234, help="seed of the random split")
    group.add_argument("--numeric", action="append", default=[], metavar="COL",
                       help="logs: read column COL as a number (a dense feature; repeatable); fractional "
                            "float columns are numeric without it")
    group.add_argument("--negatives", type=int, default=4,
                       help="amazon-cdsr: sampled negatives per positive")
    group.add_argument("--negative-seed", type=int, default=2024, help="amazon-cdsr: negative sampling seed")
    # Defaults None: the synthetic world's own defaults (SyntheticConfig) apply, written there alone.
    group.add_argument("--synthetic-users", type=int)
    group.add_argument("--synthetic-items", type=int)
    group.add_argument("--synthetic-scenarios", type=int)
    group.add_argument("--synthetic-events", type=int, help="events per user")
    group.add_argument("--synthetic-topics", type=int, help="item topics users have tastes for")
    group.add_argument("--synthetic-divergence", type=float,
                       help="probability that a user's taste in a scenario is its own (0 = one taste in "
                            "every scenario, 1 = unrelated ones)")
    group.add_argument("--synthetic-seed", type=int)


def _data_options(args: argparse.Namespace):
    from model.data.datasets import DataOptions
    from model.data.synthetic import SyntheticConfig

    synthetic = {"users": args.synthetic_users, "items": args.synthetic_items,
                 "scenarios": args.synthetic_scenarios, "events_per_user": args.synthetic_events,
                 "topics": args.synthetic_topics, "divergence": args.synthetic_divergence,
                 "seed": args.synthetic_seed}
    return DataOptions(
        dataset=args.dataset, data_dir=args.data_dir, history_length=args.history_length,
        split=args.split, split_seed=args.split_seed, negatives_per_positive=args.negatives,
        negative_seed=args.negative_seed, numeric=tuple(args.numeric),
        synthetic=SyntheticConfig(**{field: value for field, value in synthetic.items() if value is not None}),
    )


def _parse_model_options(model_name: str, pairs: list[str]) -> dict:
    """`key=value` pairs typed by the model's config dataclass (ints, floats, bools, tuples)."""
    from model.models import model_config

    defaults = model_config(model_name)
    fields = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(defaults)}
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.replace("-", "_")
        if not sep or key not in fields:
            raise SystemExit(f"--model-opt {pair!r}: expected key=value with key in {sorted(fields)}")
        default = fields[key]
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise SystemExit(f"--model-opt {key} takes true or false")
            overrides[key] = value.lower() in ("true", "1")
        elif isinstance(default, tuple):
            overrides[key] = tuple(int(v) for v in value.split(","))
        else:
            overrides[key] = type(default)(value)
    return overrides


def cmd_data_prepare(args: argparse.Namespace) -> int:
    import time

    started = time.perf_counter()
    if args.engine == "memory":
        from model.data.datasets import prepare_dataset

        data = prepare_dataset(_data_options(args))
        data.save(Path(args.out))
        summary = {"examples": {name: len(split) for name, split in data.splits.items()},
                   "scenarios": data.schema.scenarios, "vocab_sizes": data.schema.vocab_sizes}
    else:
        from model.data.engines import EngineOptions, prepare_to_directory

        engine = EngineOptions(engine=args.engine, memory_limit=args.memory_limit, temp_dir=args.temp_dir,
                               threads=args.engine_threads, spark_master=args.spark_master,
                               shard_rows=args.shard_rows)
        summary = prepare_to_directory(_data_options(args), Path(args.out), engine)
        summary = {key: summary[key] for key in ("engine", "examples", "scenarios", "vocab_sizes")}
    print(json.dumps({"out": args.out, **summary, "seconds": round(time.perf_counter() - started, 2)},
                     indent=2))
    return 0


def cmd_data_generate(args: argparse.Namespace) -> int:
    import time

    from model.data.synthetic import write_synthetic_log

    if args.dataset != "synthetic":
        raise ValueError(f"`data generate` generates the synthetic dataset only, not {args.dataset!r}")
    started = time.perf_counter()
    config = _data_options(args).synthetic
    shards = write_synthetic_log(config, Path(args.out), chunk_users=args.chunk_users)
    print(json.dumps({"out": args.out, "shards": len(shards), "users": config.users,
                      "events": config.users * config.events_per_user,
                      "seconds": round(time.perf_counter() - started, 2)}, indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    if args.nproc and args.nproc > 1:
        return _relaunch_with_torchrun(args)
    from model.data.datasets import prepare_dataset
    from model.data.stream import StreamedData
    from model.distributed import process_group
    from model.train import TrainConfig, data_options_from_dict, train_model

    overrides = _parse_model_options(args.model, args.model_opt)
    for key in ("embed_dim", "blocks", "heads", "gamma"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.prepared:       # streamed from the shards: memory does not grow with the data
        data = StreamedData.open(Path(args.prepared))
        options = data_options_from_dict(data.data_options)
    else:
        options = _data_options(args)
        data = prepare_dataset(options)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                         weight_decay=args.weight_decay, patience=args.patience, seed=args.seed,
                         threads=args.threads, max_train_examples=args.max_train_examples,
                         eval_every_steps=args.eval_every_steps, max_steps=args.max_steps,
                         checkpoint_every_steps=args.checkpoint_every_steps,
                         **({} if args.shuffle_buffer is None else {"shuffle_buffer": args.shuffle_buffer}))
    with process_group() as processes:
        metrics = train_model(data, args.model, overrides, config, Path(args.out), options, resume=args.resume)
    if processes.is_main:
        print(json.dumps(metrics, indent=2))
    return 0


def _relaunch_with_torchrun(args: argparse.Namespace) -> int:
    """`sainet train --nproc P ...` is `torchrun --standalone --nproc-per-node P -m sainet.cli train ...`."""
    import os

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("--nproc launches torchrun itself; under torchrun, leave it out")
    rest, skip = [], False
    for arg in args.argv:           # the same command without --nproc
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            rest.append(arg)
    try:
        torchrun(["--standalone", f"--nproc-per-node={args.nproc}", "-m", "sainet.cli", *rest])
    except ChildFailedError as error:
        print(f"sainet: error: a training process failed: {error}", file=sys.stderr)
        return 1
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from model.train import evaluate_run

    metrics = evaluate_run(Path(args.run), data_dir=args.data_dir)
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from export.onnx_export import ExportError, export_run

    try:
        artifact = export_run(Path(args.run), Path(args.out), name=args.name, version=args.version,
                              opset=args.opset, tolerance=args.tolerance, real_inputs=not args.no_real_inputs,
                              quantize=None if args.quantize == "none" else args.quantize)
    except ExportError as error:
        print(f"sainet: export refused: {error}", file=sys.stderr)
        return 1
    meta = json.loads((artifact / "meta.json").read_text())
    summary = {"artifact": str(artifact), "name": meta["name"], "version": meta["version"],
               "parity_max_abs_diff": meta["parity"]["max_abs_diff"]}
    int8 = meta["precisions"].get("int8")
    if int8:
        summary["int8"] = {key: int8[key] for key in ("passed", "why_not", "auc_change", "max_abs_diff")}
    print(json.dumps(summary, indent=2))
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    import shlex

    from model.study import PROTOCOL_DEFAULTS, PROTOCOL_SETTINGS, StudyConfig, resolve_models, run_study
    from model.train import TrainConfig

    # A protocol fixes its setting; options it fixes may be repeated but not changed.
    fixed = PROTOCOL_SETTINGS.get(args.protocol, {})
    for option, value in fixed.items():
        given = getattr(args, option)
        if given is not None and given != value:
            raise ValueError(f"--protocol {args.protocol} fixes --{option.replace('_', '-')} {value}; "
                             f"got {given}")
        setattr(args, option, value)
    for option, default in {**STUDY_DEFAULTS, **PROTOCOL_DEFAULTS.get(args.protocol, {})}.items():
        if getattr(args, option) is None:
            setattr(args, option, default)
    overrides = _parse_model_options("sainet", args.model_opt)
    if args.embed_dim is not None:
        overrides["embed_dim"] = args.embed_dim
    config = StudyConfig(
        models=resolve_models(args.models), seeds=args.seeds, curve_seeds=args.curve_seeds,
        curves=not args.no_curves,
        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                          weight_decay=args.weight_decay, patience=args.patience, threads=args.threads,
                          max_train_examples=args.max_train_examples, progress=False,
                          eval_every_steps=args.eval_every_steps, max_steps=args.max_steps,
                          checkpoint_every_steps=args.checkpoint_every_steps),
        model_overrides=tuple(overrides.items()), lr_grid=args.lr_grid, cells_dir=args.cells_dir,
        reading_seeds=args.reading_seeds, protocol=args.protocol, first_seed=args.first_seed,
    )
    options = dataclasses.replace(_data_options(args), protocol=args.protocol)
    summary = run_study(options, config, Path(args.out), command="sainet " + shlex.join(args.argv),
                        train=not args.report_only)
    print(json.dumps({k: summary[k] for k in ("cells", "wall_seconds_this_invocation", "t_tests")}, indent=2))
    return 0


# `sainet study` defaults for options a protocol may fix (argparse defaults are None to tell them apart).
# The converging regime, as `sainet train`'s: batch 512, validation every 200 steps, patience 3
# evaluations, a budget of 20 epochs, each model's lr chosen on validation from LR_GRID.
LR_GRID = (3e-4, 1e-3, 3e-3)
STUDY_DEFAULTS = {"models": "all", "seeds": 5, "epochs": 20, "patience": 3, "batch_size": 512, "lr": 1e-3,
                  "weight_decay": 0.0, "no_curves": False, "split": None, "embed_dim": None,
                  "eval_every_steps": 200, "lr_grid": LR_GRID, "first_seed": 0}


def _lr_grid(text: str) -> tuple[float, ...]:
    """`3e-4,1e-3,3e-3`, or `none` for no grid (every model at --lr)."""
    if text.strip().lower() in ("none", ""):
        return ()
    return tuple(float(v) for v in text.split(","))


def cmd_bench(args: argparse.Namespace) -> int:
    from sainet.bench.runner import TARGETS, BenchConfig, run_bench

    overrides = {"candidates": args.candidates, "history": args.history, "concurrency": args.concurrency}
    if args.seconds is not None:
        overrides.update(closed_seconds=args.seconds, open_seconds=args.seconds, probe_seconds=args.seconds)
    config = BenchConfig.quick(**overrides) if args.quick else dataclasses.replace(BenchConfig(), **overrides)
    results = run_bench(Path(args.model_dir), Path(args.out), config)
    print((Path(args.out) / "bench.md").read_text())
    print(json.dumps({key: results[key] for key, _, _ in TARGETS.values()}, indent=2))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    if args.model_dir:
        os.environ["SAINET_MODEL_DIR"] = args.model_dir
    from service.app import create_app
    from service.server import server_config, warn_if_exposed
    from service.settings import Settings

    settings = Settings()
    warn_if_exposed(args.host, settings)
    uvicorn.Server(server_config(create_app(settings), settings, args.host, args.port)).run()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sainet", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="dataset commands").add_subparsers(dest="data_command", required=True)
    prepare = data.add_parser("prepare", help="write processed splits, feature schema and vocabularies")
    _add_data_arguments(prepare)
    prepare.add_argument("--out", required=True, help="output folder")
    prepare.add_argument("--engine", choices=["duckdb", "spark", "memory"], default="duckdb",
                         help="duckdb (default: embedded, out-of-core), spark (a cluster, or local[N]) or "
                              "memory (pandas, the whole log in memory)")
    prepare.add_argument("--memory-limit", help="duckdb: memory limit, e.g. 4GB (it spills to disk beyond it)")
    prepare.add_argument("--temp-dir", help="where the engine spills and keeps its working tables")
    prepare.add_argument("--engine-threads", type=int, help="duckdb: threads (default: all cores)")
    prepare.add_argument("--spark-master", help="spark: master URL, e.g. local[2] (default: spark-submit's)")
    prepare.add_argument("--shard-rows", type=int, default=1_000_000, help="duckdb: examples per output shard")
    prepare.set_defaults(handler=cmd_data_prepare)

    generate = data.add_parser("generate", help="write the synthetic canonical log as parquet shards, chunk by chunk")
    _add_data_arguments(generate)
    generate.add_argument("--chunk-users", type=int, default=20_000,
                          help="users per chunk and shard (a log of at most this many users is exactly "
                               "`--dataset synthetic`'s)")
    generate.add_argument("--out", required=True, help="output folder (DIR/part-*.parquet)")
    generate.set_defaults(handler=cmd_data_generate)

    train = commands.add_parser("train", help="train a model with early stopping on validation AUC")
    _add_data_arguments(train)
    # Checked against the model registry when the command runs (importing it here would pull torch
    # into every subcommand, `serve` included).
    train.add_argument("--model", default="sainet", help="a registered model name, e.g. sainet, sainet-no-sie")
    train.add_argument("--epochs", type=int, default=20, help="step budget in epochs (default 20)")
    train.add_argument("--max-steps", type=int, help="step budget in optimizer steps (default: none)")
    train.add_argument("--batch-size", type=int, default=512)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--weight-decay", type=float, default=0.0)
    train.add_argument("--eval-every-steps", type=int, default=200,
                       help="validation AUC every this many steps and at each epoch's end (0: epoch ends only)")
    train.add_argument("--patience", type=int, default=3,
                       help="early stop after this many evaluations without a better validation AUC")
    train.add_argument("--seed", type=int, default=42, help="model seed (init and shuffling)")
    train.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    train.add_argument("--max-train-examples", type=int, help="train on a seeded subsample")
    train.add_argument("--embed-dim", type=int)
    train.add_argument("--blocks", type=int, help="scenario-adaptive blocks L")
    train.add_argument("--heads", type=int, help="attention heads h")
    train.add_argument("--gamma", type=float, help="STM scaling factor")
    train.add_argument("--model-opt", action="append", default=[], metavar="KEY=VALUE",
                       help="any other model config field, e.g. sie_residual=true")
    train.add_argument("--prepared", help="train on a prepared folder (`sainet data prepare`), streamed from its "
                                          "shards, instead of the data options")
    train.add_argument("--shuffle-buffer", type=int,
                       help="with --prepared: examples held in the shuffle buffer (0: row-group order only; "
                            "default: model.data.stream.DEFAULT_SHUFFLE_BUFFER, 100,000)")
    train.add_argument("--checkpoint-every-steps", type=int,
                       help="write a training checkpoint (RUN/training_state.pt) every this many steps")
    train.add_argument("--resume", action="store_true",
                       help="continue from the run directory's last training checkpoint")
    train.add_argument("--nproc", type=int,
                       help="train with this many processes (DDP), relaunching through torchrun --standalone")
    train.add_argument("--out", required=True, help="run directory")
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser("evaluate", help="recompute a run's test metrics from its checkpoint")
    evaluate.add_argument("--run", required=True, help="run directory written by `sainet train`")
    evaluate.add_argument("--data-dir", help="where the run's dataset lives now, if it moved")
    evaluate.set_defaults(handler=cmd_evaluate)

    export = commands.add_parser("export", help="export a run to a versioned ONNX artifact (parity-checked)")
    export.add_argument("--run", required=True, help="run directory written by `sainet train`")
    export.add_argument("--out", required=True, help="model root; writes <out>/<name>/<version>/")
    export.add_argument("--name", help="model name (default: the run's model name)")
    export.add_argument("--version", help="version (default: the next integer)")
    export.add_argument("--opset", type=int, default=18)
    export.add_argument("--tolerance", type=float, default=1e-5, help="max abs difference ONNX vs PyTorch")
    export.add_argument("--quantize", choices=["int8", "none"], default="int8",
                        help="also write a dynamically int8-quantised graph (about 2x cheaper on CPU), which "
                             "the service serves by default on CPU when its parity and test AUC hold "
                             "(default: int8)")
    export.add_argument("--no-real-inputs", action="store_true",
                        help="skip the parity check on the run's real test examples")
    export.set_defaults(handler=cmd_export)

    study = commands.add_parser("study", help="every model x seed on the same splits: AUC tables, t-tests, "
                                              "ablations, hyper-parameter curves (resumable)")
    _add_data_arguments(study)
    study.add_argument("--protocol", default="default", choices=["default", "scenario-wise-rec"],
                       help="scenario-wise-rec: movielens-1m in that benchmark's exact setting (no history, its "
                            "features with age dense and min-max scaled, embedding 16, one epoch, batch 4096, "
                            "lr 1e-3, weight decay 1e-5, random split; its five models with its own sizes, "
                            "batch norm and N(0, 1e-4) embeddings (model/study.py PROTOCOL_MODEL_OVERRIDES); "
                            "seeds 2022 and 2023)")
    study.add_argument("--models", help="'all' (default), 'baselines' or a comma list of registered model names")
    study.add_argument("--seeds", type=int, help="seeds per model for the main and ablation tables (default 5)")
    study.add_argument("--first-seed", type=int,
                       help="the main tables' seeds are FIRST .. FIRST + seeds - 1 (default 0; "
                            "scenario-wise-rec: 2022, the benchmark's own seeds 2022 and 2023)")
    study.add_argument("--curve-seeds", type=int, default=3, help="seeds per hyper-parameter point")
    study.add_argument("--no-curves", action="store_const", const=True, help="skip the hyper-parameter curves")
    study.add_argument("--epochs", type=int, help="step budget in epochs (default 20)")
    study.add_argument("--max-steps", type=int, help="step budget in optimizer steps (default: none)")
    study.add_argument("--patience", type=int, help="evaluations without a better validation AUC (default 3)")
    study.add_argument("--eval-every-steps", type=int, help="validation every this many steps (default 200; "
                                                            "0: epoch ends only)")
    study.add_argument("--batch-size", type=int, help="default 512")
    study.add_argument("--lr", type=float, help="the lr without a grid (default 1e-3)")
    study.add_argument("--lr-grid", type=_lr_grid, help="per-model learning rates tried on seed 0, chosen on "
                                                        "validation AUC (default 3e-4,1e-3,3e-3; none: --lr)")
    study.add_argument("--reading-seeds", type=int, default=0,
                       help="also train each of SAINet's documented readings (model.study.READINGS) on this many "
                            "seeds and compare them on validation AUC (readings.md); default 0: none")
    study.add_argument("--checkpoint-every-steps", type=int,
                       help="a cell in training writes a checkpoint every this many steps (default "
                            "model.study.CELL_CHECKPOINT_STEPS, 200); a worker stopped mid-cell loses only the "
                            "steps since, and the next one to claim the cell continues from there")
    study.add_argument("--cells-dir", help="folder of the per-cell JSON files (default: <out>/cells)")
    study.add_argument("--weight-decay", type=float, help="default 0")
    study.add_argument("--embed-dim", type=int, help="embedding size of every model (default: each model's)")
    study.add_argument("--threads", type=int)
    study.add_argument("--max-train-examples", type=int)
    study.add_argument("--model-opt", action="append", default=[], metavar="KEY=VALUE",
                       help="applied to every model, e.g. embed_dim=16")
    study.add_argument("--out", required=True, help="report folder (finished cells are kept and skipped; several "
                                                    "workers may run the same command on it at once)")
    study.add_argument("--report-only", action="store_true",
                       help="rebuild the tables from the finished cells and train nothing (e.g. while workers run)")
    study.set_defaults(handler=cmd_study)

    from sainet.seed import add_seed_parser

    add_seed_parser(commands, _add_data_arguments, _data_options)

    bench = commands.add_parser("bench", help="measure the service against its compute limit, the framework "
                                              "floor and a naive PyTorch server (bench.json, bench.md, PNG)")
    bench.add_argument("--model-dir", required=True, help="model root, model folder or version folder")
    bench.add_argument("--out", required=True, help="folder for bench.json, bench.md and latency_vs_load.png")
    bench.add_argument("--candidates", type=int, default=100, help="candidates per request (C)")
    bench.add_argument("--history", type=int, default=50, help="behaviours per user history (N)")
    bench.add_argument("--concurrency", type=int, default=32, help="closed-loop connections")
    bench.add_argument("--quick", action="store_true", help="short phases: about two minutes in all")
    bench.add_argument("--seconds", type=float, help="seconds per load phase (overrides the default)")
    bench.set_defaults(handler=cmd_bench)

    serve = commands.add_parser("serve", help="serve /score over HTTP (settings: SAINET_* variables)")
    serve.add_argument("--model-dir", help="model root (SAINET_MODEL_DIR)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(handler=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"sainet: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
