"""The ``streamheal`` command.

Exit codes: 0 ok, 1 runtime failure, 2 bad arguments, 69 Kafka unreachable at start
(``kafka.connect_timeout_seconds``), 78 bad config (including a ``model.params`` River
refuses, and a missing topic with ``topics.create = false``).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from streamheal import __version__
from streamheal.config import Config, ConfigError, load_config
from streamheal.evaluation import DEFAULT_MAX_DELAY

EXIT_UNAVAILABLE = 69  # sysexits.h EX_UNAVAILABLE: no broker answered at start
EXIT_CONFIG = 78  # sysexits.h EX_CONFIG
# Commands that build the configured model: a bad model.params stops them at start.
_MODEL_COMMANDS = ("run", "bench", "retrain")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamheal", description="A self-healing online-learning worker on Kafka."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the worker until SIGINT/SIGTERM")
    _config_option(run)
    run.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="start N worker processes in one consumer group (one core each; default 1)",
    )

    simulate = commands.add_parser("simulate", help="stream a scenario with known drifts")
    simulate.add_argument("scenario", choices=[*_scenario_names(), "csv"])
    target = simulate.add_mutually_exclusive_group(required=True)
    target.add_argument("--kafka", action="store_true", help="produce to the events topic")
    target.add_argument("--out", type=Path, metavar="FILE.jsonl", help="write a JSONL file")
    simulate.add_argument("--events", type=_positive_int, default=2000)
    simulate.add_argument("--seed", type=int, default=42)
    simulate.add_argument("--label-delay", type=_non_negative_int, default=0)
    simulate.add_argument(
        "--drift-at",
        type=_index_list,
        default=None,
        metavar="I[,I...]",
        help="drift positions among feature events (default: the middle)",
    )
    simulate.add_argument(
        "--width", type=_positive_int, default=None, help="events a drift takes (1 = abrupt)"
    )
    simulate.add_argument("--csv", type=Path, default=None, help="with scenario csv: the file")
    simulate.add_argument("--label", default="label", help="with scenario csv: label column")
    simulate.add_argument("--unlabeled", type=float, default=0.0, help="fraction never labeled")
    simulate.add_argument("--rate", type=float, default=None, metavar="EPS", help="events/s cap")
    simulate.add_argument(
        "--truth", type=Path, default=None, help="truth file (default: FILE.truth.json with --out)"
    )
    _config_option(simulate)

    replay = commands.add_parser("replay", help="evaluate configs offline on a topic or file")
    source = replay.add_mutually_exclusive_group(required=True)
    source.add_argument("--topic", help="read this topic (assign + seek, never commits)")
    source.add_argument("--file", type=Path, metavar="F.jsonl", help="read a JSONL file")
    start = replay.add_mutually_exclusive_group()
    start.add_argument("--from-offset", type=_non_negative_int, default=None)
    start.add_argument("--from-time", default=None, metavar="ISO", help="e.g. 2026-11-27T10:00Z")
    replay.add_argument("--to-time", default=None, metavar="ISO")
    replay.add_argument(
        "-c",
        "--config",
        type=Path,
        action="append",
        default=[],
        help="a config to evaluate (repeat for several; a [grid] table expands)",
    )
    replay.add_argument("--truth", type=Path, default=None, help="truth file of known drifts")
    replay.add_argument(
        "--max-delay",
        type=_positive_int,
        default=DEFAULT_MAX_DELAY,
        metavar="N",
        help="an episode opened within N events after a true drift detects it "
        "(default %(default)s)",
    )
    replay.add_argument("--out", type=Path, required=True, metavar="DIR")

    compare = commands.add_parser(
        "compare",
        help="one-shot reference-vs-current drift check",
        description="Compare two batches column by column: missing rate, distribution\n"
        "(KS / chi-square p-values, or Wasserstein / Jensen-Shannon effect sizes on\n"
        "large samples) and a dataset verdict. Writes DIR/compare.json and .html.",
        epilog="examples:\n"
        "  streamheal compare reference.csv current.csv --label target --out out/cmp\n"
        "  streamheal compare ref.jsonl cur.jsonl --out out/cmp --method test --chi2 gof\n"
        "  streamheal compare ref.csv cur.csv --categorical zip,store --out out/cmp\n\n"
        "exit codes: 0 compared (drift or not); 1 unreadable input or a column mixing\n"
        "numbers and text; 2 bad arguments or a missing input file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_argument(
        "reference", type=_compare_input, metavar="REF", help="reference batch: CSV or JSONL"
    )
    compare.add_argument(
        "current", type=_compare_input, metavar="CUR", help="current batch: CSV or JSONL"
    )
    compare.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="directory for the reports"
    )
    compare.add_argument(
        "--label",
        default=None,
        metavar="COLUMN",
        help="label column: tested, reported apart, not counted in the dataset share "
        "(default: none for CSV, 'label' for JSONL when the events carry labels)",
    )
    compare.add_argument(
        "--threshold",
        type=_compare_p_value,
        default=0.05,
        metavar="P",
        help="significance level for adjusted p-values, 0 < P < 1 (default: %(default)s)",
    )
    compare.add_argument(
        "--correction",
        choices=["bonferroni", "bh", "none"],
        default="bonferroni",
        help="multiple-testing correction over the columns (default: %(default)s)",
    )
    compare.add_argument(
        "--share",
        type=_compare_share,
        default=0.5,
        metavar="S",
        help="share of drifted feature columns at which the dataset drifts, 0 < S <= 1 "
        "(default: %(default)s)",
    )
    compare.add_argument(
        "--method",
        choices=["auto", "test", "effect"],
        default="auto",
        help="what decides a column's drift: p-values (test), effect sizes (effect), or "
        "auto: effect sizes for columns with more than 1000 reference values, as "
        "Evidently does (default: %(default)s)",
    )
    compare.add_argument(
        "--effect-threshold",
        type=_compare_positive,
        default=0.1,
        metavar="D",
        help="effect size at which a column drifts: normed Wasserstein distance or "
        "Jensen-Shannon distance, > 0 (default: %(default)s, Evidently's)",
    )
    compare.add_argument(
        "--chi2",
        choices=["contingency", "gof"],
        default="contingency",
        help="chi-square for categories: contingency (homogeneity, both batches samples) "
        "or gof (goodness of fit to the reference shares, Evidently's) "
        "(default: %(default)s)",
    )
    compare.add_argument(
        "--categorical",
        type=_compare_columns,
        default=[],
        metavar="COL[,COL...]",
        help="columns to compare as categories although their values are numbers "
        "(e.g. zip codes; default: none)",
    )

    registry = commands.add_parser("registry", help="model versions, aliases and tags")
    _config_option(registry)
    verbs = registry.add_subparsers(dest="verb", required=True, metavar="VERB")
    verbs.add_parser("list", help="every version with its aliases")
    show = verbs.add_parser("show", help="one version's metadata")
    show.add_argument("version", type=_positive_int)
    promote = verbs.add_parser("promote", help="make V the champion; running workers swap")
    promote.add_argument("version", type=_positive_int)
    rollback = verbs.add_parser("rollback", help="champion <-> previous; running workers swap")
    for verb in (promote, rollback):
        verb.add_argument("--reason", default="", help="why (goes into the alert record)")
        verb.add_argument("--by", default=None, help="who (default: the login name)")
    tag = verbs.add_parser("tag", help="set a tag on a version")
    tag.add_argument("version", type=_positive_int)
    tag.add_argument("pair", type=_key_value, metavar="KEY=VALUE")

    bench = commands.add_parser("bench", help="measure Engine throughput against bare River")
    bench.add_argument("--events", type=_positive_int, default=50_000)
    bench.add_argument("--rounds", type=_positive_int, default=5)
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument(
        "--kafka-events",
        type=_non_negative_int,
        default=30_000,
        metavar="N",
        help="events for the figures through the broker (kafka_*; 0 = skip them; "
        "skipped with a note when no broker answers; default 30000)",
    )

    notify = commands.add_parser("notify", help="alerts topic -> grouped Slack messages")
    _config_option(notify)
    notify.add_argument(
        "--interactive-port",
        type=int,
        default=None,
        metavar="P",
        help="serve Slack button clicks on this port (needs SLACK_SIGNING_SECRET)",
    )

    silence = commands.add_parser("silence", help="hold alert notifications back for a while")
    _config_option(silence)
    silence_verbs = silence.add_subparsers(dest="verb", required=True, metavar="VERB")
    add = silence_verbs.add_parser("add", help="silence the alerts MATCHER selects")
    add.add_argument("matcher", metavar="MATCHER", help='e.g. kind=covariate,feature=~"mean.*"')
    add.add_argument("--for", dest="duration", required=True, metavar="DURATION", help="e.g. 2h")
    add.add_argument("--comment", default="", help="why (shown by silence list)")
    add.add_argument("--by", default=None, help="who (default: the login name)")
    silence_verbs.add_parser("list", help="silences in force or to come")
    expire = silence_verbs.add_parser("expire", help="end a silence now")
    expire.add_argument("id", metavar="ID")

    retrain = commands.add_parser(
        "retrain",
        help="batch retraining gated by offline evaluation (exit 0 promoted, 3 rejected, 1 failed)",
    )
    _config_option(retrain)
    when = retrain.add_mutually_exclusive_group()
    when.add_argument("--once", action="store_true", help="run now, once, and exit")
    when.add_argument(
        "--schedule",
        type=_cron,
        metavar="CRON",
        help='run on this cron schedule, in UTC ("0 3 * * *"; a 6th field is seconds)',
    )
    when.add_argument(
        "--on-drift", action="store_true", help="run after retrain.drift_alerts drift alerts"
    )
    retrain.add_argument(
        "--file", type=Path, metavar="F.jsonl", help="train on a JSONL file, not the events topic"
    )

    kafka = commands.add_parser("kafka", help="a local single-node Apache Kafka for development")
    kafka.add_argument("action", choices=["up", "down", "status"])
    kafka.add_argument("--purge", action="store_true", help="with down: delete the broker's data")
    _config_option(kafka)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    handler = {
        "run": _run,
        "simulate": _simulate,
        "replay": _replay,
        "compare": _compare,
        "registry": _registry,
        "bench": _bench,
        "kafka": _kafka,
        "notify": _notify,
        "silence": _silence,
        "retrain": _retrain,
    }
    try:
        config_option = getattr(args, "config", None)
        config = load_config(config_option if not isinstance(config_option, list) else None)
        if args.command in _MODEL_COMMANDS:
            check_model(config)
        return handler[args.command](args, config)
    except ConfigError as err:  # at start, or found on the cluster (a missing topic)
        print(f"streamheal: config error: {err}", file=sys.stderr)
        return EXIT_CONFIG


def check_model(config: Config) -> None:
    """Build the configured model once: River's refusal of ``model.params`` is a ConfigError.

    >>> check_model(Config().replace(model={"params": {"l2": 0.1}}))
    >>> check_model(Config().replace(model={"params": {"depth": 3}}))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    streamheal.config.ConfigError: model.params: ...unexpected keyword argument 'depth'
    """
    from streamheal.models import build_model

    try:
        model = build_model(config.model, seed=config.engine.seed)
        # A parameter of the wrong type (l2="abc", optimizer=5) only fails when the model
        # first learns or scores: do both once on a throwaway copy, here, not on event 1.
        for label in (True, False) if not config.model.params.get("multiclass") else (0, 1):
            model.learn_one({"x": 1.0, "colour": "red"}, label)
        model.predict_proba_one({"x": 1.0, "colour": "red"})
    except Exception as err:  # whatever River raises for a parameter it does not take
        raise ConfigError(f"model.params: {err}") from err


# ---------------------------------------------------------------------- commands
def _run(args: argparse.Namespace, config: Config) -> int:
    if args.workers > 1:
        from streamheal.workers import run_workers

        return run_workers(args.workers, config, ["-c", str(args.config)] if args.config else [])
    from confluent_kafka import KafkaException

    from streamheal.kafka.connect import BrokerUnavailable, refused_settings
    from streamheal.kafka.worker import Worker, WorkerError
    from streamheal.registry import RegistryError

    try:
        worker = Worker(config)
    except KafkaException as err:  # librdkafka refused a property in kafka.common & co.
        raise refused_settings(config, err) from None
    except RegistryError as err:  # e.g. registry.path is a file, or not writable
        raise ConfigError(f"registry.path: {err}") from None
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: worker.stop())
    try:
        worker.run()
    except BrokerUnavailable as err:
        print(f"streamheal: {err}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except WorkerError as err:  # it could not go on without risking loss; nothing committed
        print(f"streamheal: worker stopped: {err}", file=sys.stderr)
        return err.exit_code
    return 0


def _simulate(args: argparse.Namespace, config: Config) -> int:
    from streamheal.events import encode
    from streamheal.scenarios import SCENARIOS, csv_scenario

    options = {
        "events": args.events,
        "seed": args.seed,
        "label_delay": args.label_delay,
        "unlabeled": args.unlabeled,
        "drift_at": args.drift_at,
    }
    if args.scenario == "csv":
        if args.csv is None:
            build_parser().error("simulate csv needs --csv FILE (and --label COLUMN)")
        try:
            scenario = csv_scenario(args.csv, args.label, **options)
        except (OSError, ValueError) as err:
            print(f"streamheal simulate: {err}", file=sys.stderr)
            return 1
    else:
        if args.width is not None:
            options["width"] = args.width
        scenario = SCENARIOS[args.scenario](**options)
    truth_path = args.truth or (args.out.with_suffix(".truth.json") if args.out else None)
    count = 0
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "wb") as out:
            for event in scenario.stream():  # streamed: a million events need no memory
                out.write(encode(event) + b"\n")
                count += 1
        target = str(args.out)
    else:
        from streamheal.kafka.admin import ensure_topics
        from streamheal.kafka.connect import BrokerUnavailable, require_topics, wait_for_cluster
        from streamheal.producer import EventProducer

        try:
            metadata = wait_for_cluster(config)
        except BrokerUnavailable as err:
            print(f"streamheal: {err}", file=sys.stderr)
            return EXIT_UNAVAILABLE
        if config.topics.create:
            ensure_topics(config)
        else:
            require_topics(config, metadata, keys=["events"])
        pause = 1.0 / args.rate if args.rate else 0.0
        with EventProducer(
            config.kafka.bootstrap_servers, config.topics.events, config.kafka.common
        ) as producer:
            for event in scenario.stream():
                producer.send_event(event)
                count += 1
                if pause:
                    time.sleep(pause)
        target = f"topic {config.topics.events}"
    if truth_path:
        truth_path.write_text(json.dumps(scenario.truth, indent=2) + "\n")
    print(
        f"{scenario.name}: {count} records to {target}; "
        f"truth {json.dumps(scenario.truth)}" + (f" in {truth_path}" if truth_path else "")
    )
    return 0


def _replay(args: argparse.Namespace, config: Config) -> int:
    from streamheal.evaluation import build_report
    from streamheal.replay import expand_configs, file_records, replay, topic_records
    from streamheal.report_html import render_html

    try:
        configs = expand_configs(args.config)
        for name, candidate in configs:
            try:
                check_model(candidate)
            except ConfigError as err:
                raise ConfigError(f"{err} (config {name!r})") from err
        truth = json.loads(args.truth.read_text()) if args.truth else None
    except ConfigError as err:
        print(f"streamheal: config error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except (OSError, ValueError) as err:
        print(f"streamheal replay: {err}", file=sys.stderr)
        return 1
    if args.file is not None:
        if not args.file.is_file():
            print(f"streamheal replay: no such file {args.file}", file=sys.stderr)
            return 1
        records = file_records(args.file)
        described = {"kind": "file", "path": str(args.file)}
    else:
        records = topic_records(config, args.topic, args.from_offset, args.from_time, args.to_time)
        described = {
            "kind": "topic",
            "topic": args.topic,
            "from_offset": args.from_offset,
            "from_time": args.from_time,
            "to_time": args.to_time,
        }
    runs, baseline, meta = replay(records, configs)
    report = build_report(runs, baseline, meta, described, truth, args.max_delay)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "report.html").write_text(render_html(report))
    for section in report["configs"]:
        evaluation = section["evaluation"] or {}
        print(
            f"{section['name']}: {section['events']} events, accuracy {section['accuracy']}, "
            f"{len(section['detections'])} declarations in {len(section['episodes'])} episodes"
            + (
                f", TP {evaluation['true_positives']} FA {evaluation['false_alarms']} "
                f"missed {evaluation['missed']} median delay {evaluation['median_delay']}"
                if evaluation
                else ""
            )
        )
    print(
        f"report: {args.out / 'report.json'} and {args.out / 'report.html'} "
        f"({report['events_per_second']:,} events/s)"
    )
    return 0


def _compare(args: argparse.Namespace, config: Config) -> int:
    from streamheal.compare import compare, read_table, render_html

    try:
        reference = read_table(args.reference, args.label)
        current = read_table(args.current, args.label)
        label = args.label
        if label is None and args.reference.suffix.lower() != ".csv":
            label = "label" if any("label" in row for row in reference) else None
        result = compare(
            reference,
            current,
            args.threshold,
            args.correction,
            args.share,
            label=label,
            method=args.method,
            effect_threshold=args.effect_threshold,
            chi2=args.chi2,
            categorical=args.categorical,
        )
    except OSError as err:
        print(f"streamheal compare: cannot read {err.filename}: {err.strerror}", file=sys.stderr)
        return 1
    except ValueError as err:
        print(f"streamheal compare: {err}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "compare.html").write_text(render_html(result, reference, current))
    dataset = result["dataset"]
    missing = ", ".join(dataset["missing_changed"]) or "none"
    label_drift = (
        "" if label is None else f"; label {label!r} drifted: {result['label']['drifted']}"
    )
    print(
        f"{dataset['drifted_columns']}/{dataset['columns']} feature columns drifted "
        f"(share {dataset['share']:.2f}); dataset drift: {dataset['drift']}{label_drift}; "
        f"missing rate changed: {missing}. "
        f"Report: {args.out / 'compare.json'}, {args.out / 'compare.html'}"
    )
    return 0


def _compare_input(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(
            f"no such file: {text}" if not path.exists() else f"not a file: {text}"
        )
    return path


def _compare_p_value(text: str) -> float:
    value = _compare_float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"a p-value threshold is between 0 and 1, got {text}")
    return value


def _compare_share(text: str) -> float:
    value = _compare_float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a share with 0 < S <= 1, got {text}")
    return value


def _compare_positive(text: str) -> float:
    value = _compare_float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def _compare_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _compare_columns(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _registry(args: argparse.Namespace, config: Config) -> int:
    from streamheal import models
    from streamheal.kafka.control import publish
    from streamheal.registry import CHAMPION, RegistryError, open_registry
    from streamheal.signing import CONTROL_KEY_ENV, Signer

    registry = open_registry(config.registry)
    try:
        if args.verb == "list":
            for entry in registry.versions():
                meta = entry.meta
                aliases = f" [{', '.join(entry.aliases)}]" if entry.aliases else ""
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(meta["created_at"]))
                print(f"v{entry.version}{aliases}  {when}Z  {meta['cause']}")
        elif args.verb == "show":
            print(json.dumps(registry.meta(args.version), indent=2))
        elif args.verb == "tag":
            registry.tag(args.version, *args.pair)
            print(f"v{args.version}: {args.pair[0]}={args.pair[1]}")
        else:
            if args.verb == "promote":
                # Refuse a corrupt model, or bytes that are no classifier, before announcing.
                try:
                    models.loads(registry.load_bytes(args.version))
                except TypeError as err:
                    raise RegistryError(f"v{args.version} cannot serve: {err}") from None
                state = registry.promote(args.version)
            else:
                state = registry.rollback()
            version = state.aliases[CHAMPION]
            print(f"champion is now v{version} ({state.aliases})")
            if Signer.from_env(CONTROL_KEY_ENV) is None:
                print(
                    f"note: {CONTROL_KEY_ENV} is not set here, so the command goes unsigned; "
                    "workers that have the key refuse it (they serve the new champion only "
                    "after a restart)",
                    file=sys.stderr,
                )
            try:
                publish(config, args.verb, version, args.reason, args.by)
            except RuntimeError as err:
                print(
                    f"streamheal registry: {err}; workers will serve v{version} after a restart",
                    file=sys.stderr,
                )
                return 1
            print(f"told running workers on {config.topics.control}")
    except RegistryError as err:
        print(f"streamheal registry: {err}", file=sys.stderr)
        return 1
    return 0


def _bench(args: argparse.Namespace, config: Config) -> int:
    from streamheal.bench import run_bench

    figures = run_bench(config, events=args.events, rounds=args.rounds)
    if args.kafka_events:
        figures.update(_kafka_figures(config, args.kafka_events, figures))
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:>24}: {value}")
    return 0


def _kafka_figures(config: Config, events: int, engine: dict) -> dict:
    """The broker-side figures and their ratios, or a note saying why they are missing."""
    from streamheal.bench_kafka import run_kafka_bench
    from streamheal.kafka.connect import BrokerUnavailable, wait_for_cluster

    try:
        wait_for_cluster(config.replace(kafka={"connect_timeout_seconds": 5}))
    except BrokerUnavailable as err:
        return {"kafka": f"skipped: {err}"}
    figures = run_kafka_bench(config, events=events)
    figures.update(
        kafka_over_engine=round(figures["kafka_eps"] / engine["engine_eps"], 3),
        kafka_core_over_bare=round(figures["kafka_core_eps"] / figures["kafka_bare_eps"], 3),
        kafka_over_bare=round(figures["kafka_eps"] / figures["kafka_bare_eps"], 3),
    )
    return figures


def _notify(args: argparse.Namespace, config: Config) -> int:
    from streamheal.notify import run_notify

    return run_notify(config, args.interactive_port)


def _silence(args: argparse.Namespace, config: Config) -> int:
    from streamheal.notify import silence_command

    options = {k: getattr(args, k, None) for k in ("matcher", "duration", "comment", "by", "id")}
    return silence_command(config, args.verb, **options)


def _retrain(args: argparse.Namespace, config: Config) -> int:
    from streamheal.retrain import retrain_command

    return retrain_command(config, args.once, args.schedule, args.on_drift, args.file)


def _kafka(args: argparse.Namespace, config: Config) -> int:
    from streamheal.kafka.local_broker import LocalKafka, LocalKafkaError

    broker = LocalKafka(config.local_kafka)
    try:
        if args.action == "up":
            status = broker.up()
            from streamheal.kafka.admin import ensure_topics

            ensure_topics(config.replace(kafka={"bootstrap_servers": broker.bootstrap}))
            print(f"kafka up: {status.bootstrap} (pid {status.pid}, log {status.log_file})")
        elif args.action == "down":
            broker.down(purge=args.purge)
            print("kafka down" + (" (data purged)" if args.purge else ""))
        else:
            status = broker.status()
            state = f"running (pid {status.pid})" if status.running else "stopped"
            print(f"kafka {state} at {status.bootstrap}; log {status.log_file}")
            return 0 if status.running else 1
    except LocalKafkaError as err:
        print(f"streamheal kafka {args.action}: {err}", file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------- helpers
def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", type=Path, default=None, help="TOML config file")


def _scenario_names() -> list[str]:
    from streamheal.scenarios import SCENARIOS

    return sorted(SCENARIOS)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _cron(text: str) -> str:
    from streamheal.retrain.schedule import CronSchedule, ScheduleError

    try:
        return CronSchedule(text).expression
    except ScheduleError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _index_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected integers like 5000 or 3000,7000: {text}"
        ) from err
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected integers >= 0: {text}")
    return values


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


if __name__ == "__main__":
    sys.exit(main())
