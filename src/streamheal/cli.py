"""The ``streamheal`` command.

Exit codes: 0 ok, 1 runtime failure, 2 bad arguments or a missing input file (usage and
the option at fault are printed), 69 Kafka unreachable at start
(``kafka.connect_timeout_seconds``), 78 bad config (including a ``model.params`` River
refuses, and a missing topic with ``topics.create = false``).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamheal import __version__
from streamheal.config import Config, ConfigError, apply_env, load_config
from streamheal.evaluation import DEFAULT_MAX_DELAY

EXIT_UNAVAILABLE = 69  # sysexits.h EX_UNAVAILABLE: no broker answered at start
EXIT_CONFIG = 78  # sysexits.h EX_CONFIG
DEFAULT_EVENTS = 2000  # simulate's feature events when --events is not given (not csv)
# Commands that build the configured model: a bad model.params stops them at start.
_MODEL_COMMANDS = ("run", "bench", "retrain")
_DETECTOR_COMMANDS = ("run", "bench", "retrain", "replay")  # they build drift suites


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples keep their line breaks; every option that has a default shows it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = "%(default)" in text or "default:" in text
        default = action.default
        # Identity, not equality: a default of 0 or 0.0 is shown, False (a flag) is not.
        unset = default is None or default is False or default is argparse.SUPPRESS
        if shown or unset or default == [] or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _command(
    commands: Any, name: str, summary: str, examples: Sequence[str], description: str = ""
) -> argparse.ArgumentParser:
    """A sub-command whose ``--help`` shows its defaults and ends with examples."""
    command = commands.add_parser(
        name,
        help=summary,
        description=description or summary[0].upper() + summary[1:] + ".",
        epilog="examples:\n" + "".join(f"  {line}\n" for line in examples),
        formatter_class=_HelpFormatter,
    )
    # A mistake found after parsing (a drift past the stream) is reported like a parse error.
    command.set_defaults(usage_error=command.error)
    return command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamheal",
        description="A self-healing online-learning worker on Kafka.",
        epilog="exit codes: 0 ok; 1 runtime failure; 2 bad arguments or a missing input "
        "file;\n69 Kafka unreachable; 78 bad config. `streamheal COMMAND --help` shows "
        "each command's\noptions, defaults and examples.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="one of:"
    )

    run = _command(
        commands,
        "run",
        "run the worker until SIGINT/SIGTERM",
        ["streamheal run -c config/streamheal.toml", "streamheal run --workers 4"],
    )
    _config_option(run)
    run.add_argument(
        "--workers",
        type=_worker_count,
        default=1,
        metavar="N",
        help="start N worker processes in one consumer group (one core each; N <= 64)",
    )

    _simulate_parser(commands)
    _replay_parser(commands)
    _compare_parser(commands)
    _registry_parser(commands)

    bench = _command(
        commands,
        "bench",
        "measure Engine throughput against bare River",
        ["streamheal bench", "streamheal bench --events 10000 --rounds 3 --kafka-events 0 --json"],
    )
    bench.add_argument(
        "--events", type=_positive_int, default=50_000, metavar="N", help="events per round"
    )
    bench.add_argument(
        "--rounds",
        type=_positive_int,
        default=3,
        metavar="N",
        help="rounds per variant; each ratio is the median over rounds",
    )
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument(
        "--kafka-events",
        type=_non_negative_int,
        default=30_000,
        metavar="N",
        help="events for the figures through the broker (kafka_*; 0 = skip them; "
        "skipped with a note when no broker answers)",
    )

    notify = _command(
        commands,
        "notify",
        "alerts topic -> grouped Slack messages",
        [
            "streamheal notify -c config/streamheal.toml",
            "streamheal notify --interactive-port 3000",
        ],
    )
    _config_option(notify)
    notify.add_argument(
        "--interactive-port",
        type=_port,
        default=None,
        metavar="P",
        help="serve Slack button clicks on this TCP port, 0-65535, 0 = any free port "
        "(needs SLACK_SIGNING_SECRET; default: no buttons served)",
    )

    _silence_parser(commands)

    retrain = _command(
        commands,
        "retrain",
        "batch retraining gated by offline evaluation (exit 0 promoted, 3 rejected, 1 failed)",
        [
            "streamheal retrain --once",
            'streamheal retrain --schedule "0 3 * * *"',
            "streamheal retrain --once --file events.jsonl",
        ],
    )
    _config_option(retrain)
    when = retrain.add_mutually_exclusive_group()
    when.add_argument("--once", action="store_true", help="run now, once, and exit")
    when.add_argument(
        "--schedule",
        type=_cron,
        metavar="CRON",
        help='run on this cron schedule, in UTC ("0 3 * * *"; a 6th field is seconds; '
        "default: retrain.schedule)",
    )
    when.add_argument(
        "--on-drift", action="store_true", help="run after retrain.drift_alerts drift alerts"
    )
    retrain.add_argument(
        "--file",
        type=_existing_file,
        metavar="F.jsonl",
        help="train on a JSONL file (default: the events topic)",
    )

    kafka = _command(
        commands,
        "kafka",
        "a local single-node Apache Kafka for development",
        ["streamheal kafka up", "streamheal kafka status", "streamheal kafka down --purge"],
    )
    kafka.add_argument(
        "action",
        choices=["up", "down", "status"],
        help="up: start (fetching the jars once); down: stop; status: exit 0 when running",
    )
    kafka.add_argument("--purge", action="store_true", help="with down: delete the broker's data")
    _config_option(kafka)
    return parser


def _simulate_parser(commands: Any) -> None:
    simulate = _command(
        commands,
        "simulate",
        "stream a scenario with known drifts",
        [
            "streamheal simulate breast-cancer --out data/bc.jsonl --events 5000",
            "streamheal simulate sea --kafka --events 20000 --drift-at 5000,12000 --rate 500",
            "streamheal simulate csv --csv elec.csv --label class --out data/elec.jsonl",
            "streamheal simulate csv --csv elec.csv --label class --drift-at 20000 "
            "--drift-kind concept --out data/elec-drift.jsonl",
        ],
        description="Stream a seeded scenario with known drifts to Kafka or a JSONL file, "
        "and write\nits truth file (where each drift starts, how wide it is, its kind).\n\n"
        "csv drift kinds (--drift-kind, with --drift-at):\n"
        "  covariate  the numeric column --drift-feature is shifted by +N(2, 1) of its\n"
        "             standard deviations from each drift on; labels unchanged\n"
        "  concept    labels rotate to the next class in sorted order (binary: flip)\n"
        "  none       nothing injected; the indices only go to the truth file\n"
        "             (kind 'unknown': change points known to be in the data)",
    )
    simulate.add_argument("scenario", choices=[*_scenario_names(), "csv"], help="what to stream")
    target = simulate.add_mutually_exclusive_group(required=True)
    target.add_argument("--kafka", action="store_true", help="produce to the events topic")
    target.add_argument(
        "--out", type=Path, metavar="FILE.jsonl", help="write a JSONL file (parents created)"
    )
    simulate.add_argument(
        "--events",
        type=_positive_int,
        default=None,
        metavar="N",
        help=f"feature events to generate (default: {DEFAULT_EVENTS}; csv: every row)",
    )
    simulate.add_argument(
        "--seed", type=int, default=42, metavar="S", help="seed of every random choice"
    )
    simulate.add_argument(
        "--label-delay",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="send each label as its own event N feature events later (0 = in the event)",
    )
    simulate.add_argument(
        "--drift-at",
        type=_index_list,
        default=None,
        metavar="I[,I...]",
        help="0-based drift positions among feature events, below --events "
        "(default: the middle; csv: no drift)",
    )
    simulate.add_argument(
        "--width",
        type=_positive_int,
        default=None,
        metavar="N",
        help="events a drift takes, the new concept taking over linearly "
        "(1 = abrupt; default: 1, hyperplane 2000)",
    )
    simulate.add_argument(
        "--csv", type=_existing_file, default=None, metavar="FILE", help="with csv: the file"
    )
    simulate.add_argument(
        "--label", default="label", metavar="COLUMN", help="with csv: the label column"
    )
    simulate.add_argument(
        "--drift-kind",
        choices=_csv_drift_kinds(),
        default="covariate",
        help="with csv and --drift-at: what is injected (see above)",
    )
    simulate.add_argument(
        "--drift-feature",
        default=None,
        metavar="COLUMN",
        help="with csv and --drift-kind covariate: the column shifted "
        "(default: the first numeric one)",
    )
    simulate.add_argument(
        "--unlabeled",
        type=_fraction,
        default=0.0,
        metavar="F",
        help="fraction of events never labeled, 0 <= F < 1",
    )
    simulate.add_argument(
        "--rate",
        type=_positive_float,
        default=None,
        metavar="EPS",
        help="with --kafka: at most EPS events per second (default: as fast as possible)",
    )
    simulate.add_argument(
        "--truth",
        type=Path,
        default=None,
        metavar="FILE.json",
        help="where the truth goes (default: FILE.truth.json beside --out; none with --kafka)",
    )
    _config_option(simulate)


def _replay_parser(commands: Any) -> None:
    replay = _command(
        commands,
        "replay",
        "evaluate configs offline on a topic or file",
        [
            "streamheal replay --file data/bc.jsonl --truth data/bc.truth.json --out out/bc",
            "streamheal replay --file data/bc.jsonl -c a.toml -c b.toml --out out/ab",
            "streamheal replay --topic streamheal.events --from-time 2026-11-27T10:00Z "
            "-c prod.toml --out out/today",
        ],
        description="Run the production Engine, once per config, over a topic or a JSONL "
        "file, and\nwrite DIR/report.json and DIR/report.html. A topic is read with "
        "assign + seek\n(never committing) using the Kafka settings of the first -c file.",
    )
    source = replay.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--topic", metavar="T", help="read this topic (assign + seek, never commits)"
    )
    source.add_argument("--file", type=_existing_file, metavar="F.jsonl", help="read a JSONL file")
    start = replay.add_mutually_exclusive_group()
    start.add_argument(
        "--from-offset",
        type=_non_negative_int,
        default=None,
        metavar="O",
        help="with --topic: start every partition at this offset (default: the earliest)",
    )
    start.add_argument(
        "--from-time",
        default=None,
        type=_iso_time,
        metavar="ISO",
        help="with --topic: start at this record time, e.g. 2026-11-27T10:00Z",
    )
    replay.add_argument(
        "--to-time",
        default=None,
        type=_iso_time,
        metavar="ISO",
        help="with --topic: stop at this record time (default: the end at the start)",
    )
    replay.add_argument(
        "-c",
        "--config",
        type=Path,
        action="append",
        default=[],
        help="a config to evaluate (repeat for several; a [grid] table expands; "
        "default: the default config)",
    )
    replay.add_argument(
        "--truth",
        type=_existing_file,
        default=None,
        metavar="F.json",
        help='known drifts, {"drifts": [{"index": I, "width": W, ...}]} as simulate '
        "writes it (default: none, no scores)",
    )
    replay.add_argument(
        "--max-delay",
        type=_positive_int,
        default=DEFAULT_MAX_DELAY,
        metavar="N",
        help="an episode opened within N events after a true drift detects it",
    )
    replay.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="directory for report.json and report.html",
    )


def _compare_parser(commands: Any) -> None:
    compare = _command(
        commands,
        "compare",
        "one-shot reference-vs-current drift check",
        [
            "streamheal compare reference.csv current.csv --label target --out out/cmp",
            "streamheal compare ref.jsonl cur.jsonl --out out/cmp --method test --chi2 gof",
            "streamheal compare ref.csv cur.csv --categorical zip,store --out out/cmp",
        ],
        description="Compare two batches column by column: missing rate, distribution\n"
        "(KS / chi-square p-values, or Wasserstein / Jensen-Shannon effect sizes on\n"
        "large samples) and a dataset verdict. Writes DIR/compare.json and .html.\n\n"
        "exit codes: 0 compared (drift or not); 1 unreadable input or a column mixing\n"
        "numbers and text; 2 bad arguments or a missing input file",
    )
    compare.add_argument(
        "reference", type=_existing_file, metavar="REF", help="reference batch: CSV or JSONL"
    )
    compare.add_argument(
        "current", type=_existing_file, metavar="CUR", help="current batch: CSV or JSONL"
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
        help="significance level for adjusted p-values, 0 < P < 1",
    )
    compare.add_argument(
        "--correction",
        choices=["bonferroni", "bh", "none"],
        default="bonferroni",
        help="multiple-testing correction over the columns",
    )
    compare.add_argument(
        "--share",
        type=_compare_share,
        default=0.5,
        metavar="S",
        help="share of drifted feature columns at which the dataset drifts, 0 < S <= 1",
    )
    compare.add_argument(
        "--method",
        choices=["auto", "test", "effect"],
        default="auto",
        help="what decides a column's drift: p-values (test), effect sizes (effect), or "
        "auto: effect sizes for columns with more than 1000 reference values, as "
        "Evidently does",
    )
    compare.add_argument(
        "--effect-threshold",
        type=_positive_float,
        default=0.1,
        metavar="D",
        help="effect size at which a column drifts: normed Wasserstein distance or "
        "Jensen-Shannon distance, > 0 (Evidently's)",
    )
    compare.add_argument(
        "--chi2",
        choices=["contingency", "gof"],
        default="contingency",
        help="chi-square for categories: contingency (homogeneity, both batches samples) "
        "or gof (goodness of fit to the reference shares, Evidently's)",
    )
    compare.add_argument(
        "--categorical",
        type=_compare_columns,
        default=[],
        metavar="COL[,COL...]",
        help="columns to compare as categories although their values are numbers "
        "(e.g. zip codes; default: none)",
    )


def _registry_parser(commands: Any) -> None:
    registry = _command(
        commands,
        "registry",
        "model versions, aliases and tags",
        [
            "streamheal registry list",
            "streamheal registry show 3",
            'streamheal registry promote 3 --reason "beats v2 on last week"',
            "streamheal registry rollback",
            "streamheal registry tag 3 owner=fraud-team",
        ],
    )
    _config_option(registry)
    verbs = registry.add_subparsers(dest="verb", required=True, metavar="VERB", help="one of:")
    _command(verbs, "list", "every version with its aliases", ["streamheal registry list"])
    show = _command(verbs, "show", "one version's metadata", ["streamheal registry show 3"])
    promote = _command(
        verbs,
        "promote",
        "make V the champion; running workers swap",
        ['streamheal registry promote 3 --reason "better on last week" --by ana'],
    )
    rollback = _command(
        verbs,
        "rollback",
        "champion <-> previous; running workers swap",
        ['streamheal registry rollback --reason "v3 misbehaves"'],
    )
    tag = _command(
        verbs, "tag", "set a tag on a version", ["streamheal registry tag 3 owner=fraud-team"]
    )
    for verb in (show, promote, tag):
        verb.add_argument(
            "version",
            type=_positive_int,
            metavar="V",
            help="version number, as `registry list` shows it (3 for v3)",
        )
    for verb in (promote, rollback):
        verb.add_argument(
            "--reason",
            default="",
            type=_command_text("reason"),
            help="why (goes into the alert record; one line, up to 500 characters)",
        )
        verb.add_argument(
            "--by",
            default=None,
            type=_command_text("by"),
            help="who (default: the login name; one line, up to 100 characters)",
        )
    tag.add_argument("pair", type=_key_value, metavar="KEY=VALUE", help="the tag to set")


def _command_text(name: str) -> Any:
    """An argparse type for a command's ``--by`` / ``--reason``: what the workers would
    refuse is refused here (usage, exit 2), before the champion moves."""
    from streamheal.commands import text_problem

    def check(text: str) -> str:
        why = text_problem(name, text)
        if why is not None:
            raise argparse.ArgumentTypeError(why)
        return text

    check.__name__ = name  # argparse names the type in its message
    return check


def _silence_parser(commands: Any) -> None:
    silence = _command(
        commands,
        "silence",
        "hold alert notifications back for a while",
        [
            'streamheal silence add "kind=covariate,feature=mean radius" --for 2h',
            "streamheal silence list",
            "streamheal silence expire 3f2a",
        ],
    )
    _config_option(silence)
    silence_verbs = silence.add_subparsers(
        dest="verb", required=True, metavar="VERB", help="one of:"
    )
    add = _command(
        silence_verbs,
        "add",
        "silence the alerts MATCHER selects",
        ['streamheal silence add "kind=covariate,feature=~mean.*" --for 2h --comment "rollout"'],
    )
    add.add_argument("matcher", metavar="MATCHER", help='e.g. kind=covariate,feature=~"mean.*"')
    add.add_argument(
        "--for",
        dest="duration",
        required=True,
        metavar="DURATION",
        help="how long, e.g. 30m, 2h, 1d",
    )
    add.add_argument("--comment", default="", help="why (shown by silence list)")
    add.add_argument("--by", default=None, help="who (default: the login name)")
    _command(silence_verbs, "list", "silences in force or to come", ["streamheal silence list"])
    expire = _command(
        silence_verbs, "expire", "end a silence now", ["streamheal silence expire 3f2a"]
    )
    expire.add_argument("id", metavar="ID", help="the silence's id, as `silence list` shows it")


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
        if args.command in _DETECTOR_COMMANDS:
            check_reference_profile(config)
        if args.command in ("run", "notify"):
            check_silences(config)
        return handler[args.command](args, config)
    except ConfigError as err:  # at start, or found on the cluster (a missing topic)
        print(f"streamheal: config error: {err}", file=sys.stderr)
        return EXIT_CONFIG


def check_reference_profile(config: Config) -> None:
    """Load ``detectors.reference_profile`` once, at start: a missing or unreadable file is
    a ConfigError naming the key, not a traceback when the first partition starts."""
    path = config.detectors.reference_profile
    if not path:
        return
    from streamheal.detectors.reference import Reference

    expected = "a reference profile JSON (DriftSuite.profile(), README 'Drift detection')"
    try:
        Reference.from_profile(json.loads(Path(path).read_text()), config.detectors.psi_bins)
    except OSError as err:
        raise ConfigError(f"detectors.reference_profile: {path!r}: {err.strerror}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ConfigError(
            f"detectors.reference_profile: {path!r} is not {expected}: {err!r}"
        ) from None


def check_silences(config: Config) -> None:
    """Parse ``alerts.silences`` at start (matchers, regexes, times), for the worker's
    embedded notifier and ``notify`` alike: a bad one is a ConfigError naming it."""
    from streamheal.alerts.silences import SilenceError, Silences

    try:
        Silences.from_config(config.alerts.silences)
    except SilenceError as err:
        raise ConfigError(str(err)) from None


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
    # A stop asked for while the worker is still being built (imports, clients) is kept and
    # honoured, not left to the default action, which ends the process with 143.
    asked: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, _: asked.append(signum))
    # A worker that does not stop can say where it waits: kill -USR1 prints every thread's
    # stack to stderr, and the worker goes on.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
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
    if asked:
        print("streamheal: stopped before the worker started (nothing was done)", file=sys.stderr)
        return 0
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
        "seed": args.seed,
        "label_delay": args.label_delay,
        "unlabeled": args.unlabeled,
        "drift_at": args.drift_at,
    }
    if args.width is not None:
        options["width"] = args.width
    if args.scenario == "csv":
        if args.csv is None:
            args.usage_error("simulate csv needs --csv FILE (and --label COLUMN)")
        try:
            scenario = csv_scenario(
                args.csv,
                args.label,
                events=args.events,
                drift=args.drift_kind,
                feature=args.drift_feature,
                **options,
            )
        except (OSError, ValueError) as err:
            print(f"streamheal simulate: {err}", file=sys.stderr)
            return 1
        length = scenario.length
    else:
        if args.drift_kind != "covariate" or args.drift_feature or args.csv:
            args.usage_error("--csv, --drift-kind and --drift-feature go with scenario csv")
        length = args.events or DEFAULT_EVENTS
        scenario = SCENARIOS[args.scenario](events=length, **options)
    beyond = [i for i in args.drift_at or [] if i >= length]
    if beyond:
        args.usage_error(
            f"argument --drift-at: {', '.join(map(str, beyond))} lies past the stream "
            f"({length} feature events, indices 0 to {length - 1})"
        )
    truth_path = args.truth or (args.out.with_suffix(".truth.json") if args.out else None)
    count = 0
    if args.out:
        try:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with open(args.out, "wb") as out:
                for event in scenario.stream():  # streamed: a million events need no memory
                    out.write(encode(event) + b"\n")
                    count += 1
        except OSError as err:
            print(f"streamheal simulate: cannot write {args.out}: {err.strerror}", file=sys.stderr)
            return 1
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
        try:
            truth_path.write_text(json.dumps(scenario.truth, indent=2) + "\n")
        except OSError as err:
            why = f"cannot write {truth_path}: {err.strerror}"
            print(f"streamheal simulate: {why}", file=sys.stderr)
            return 1
    print(
        f"{scenario.name}: {count} records to {target}; "
        f"truth {json.dumps(scenario.truth)}" + (f" in {truth_path}" if truth_path else "")
    )
    return 0


def _replay(args: argparse.Namespace, config: Config) -> int:
    from confluent_kafka import KafkaException

    from streamheal.evaluation import build_report
    from streamheal.replay import count_file_records, expand_configs, file_records, replay
    from streamheal.report_html import render_html

    if args.file is not None and (args.from_offset is not None or args.from_time or args.to_time):
        args.usage_error("--from-offset, --from-time and --to-time go with --topic")
    try:
        configs = expand_configs(args.config)
        for name, candidate in configs:
            try:
                check_model(candidate)
            except ConfigError as err:
                raise ConfigError(f"{err} (config {name!r})") from err
        truth = _read_truth(args.truth) if args.truth else None
    except ConfigError as err:
        print(f"streamheal: config error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except (OSError, ValueError) as err:
        print(f"streamheal replay: {err}", file=sys.stderr)
        return 1
    total: Any
    if args.file is not None:
        records = file_records(args.file)
        total = count_file_records(args.file)
        described = {"kind": "file", "path": str(args.file)}
    else:
        # The topic is read with the Kafka settings of the first -c file (its cluster, its
        # security settings), environment overrides applied, as `run` would connect.
        source = apply_env(configs[0][1]) if args.config else config
        opened = _open_topic(source, args)
        if isinstance(opened, int):
            return opened
        records, total = opened
        described = {
            "kind": "topic",
            "topic": args.topic,
            "from_offset": args.from_offset,
            "from_time": args.from_time,
            "to_time": args.to_time,
        }
    try:
        runs, baseline, meta = replay(records, configs, total=total)
    except KafkaException as err:  # the cluster went away mid-replay
        print(f"streamheal replay: reading {args.topic!r} failed: {err}", file=sys.stderr)
        return 1
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


def _read_truth(path: Path) -> dict[str, Any]:
    """The truth file, checked for the shape replay scores against."""
    try:
        truth = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"--truth {path}: not JSON ({err})") from None
    drifts = truth.get("drifts") if isinstance(truth, dict) else None
    if not isinstance(drifts, list) or not all(
        isinstance(d, dict) and isinstance(d.get("index"), int) for d in drifts
    ):
        raise ValueError(
            f'--truth {path}: expected {{"drifts": [{{"index": I, "width": W, ...}}]}}, '
            "as simulate writes it"
        )
    return truth


def _open_topic(source: Config, args: argparse.Namespace) -> tuple[Any, Any] | int:
    """The topic's records and a way to learn their count, or an exit code (said why)."""
    from streamheal.kafka.connect import BrokerUnavailable, wait_for_cluster
    from streamheal.replay import topic_records

    try:
        metadata = wait_for_cluster(source)
    except BrokerUnavailable as err:
        print(f"streamheal replay: {err}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if args.topic not in metadata.topics:
        print(
            f"streamheal replay: topic {args.topic!r} does not exist on the cluster at "
            f"{source.kafka.bootstrap_servers}",
            file=sys.stderr,
        )
        return 1
    size: dict[str, int] = {}
    records = topic_records(
        source, args.topic, args.from_offset, args.from_time, args.to_time, on_size=size.update
    )
    return records, lambda: size.get("records")


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


def _compare_p_value(text: str) -> float:
    value = _number(text, "a number")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"a p-value threshold is between 0 and 1, got {text}")
    return value


def _compare_share(text: str) -> float:
    value = _number(text, "a number")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a share with 0 < S <= 1, got {text}")
    return value


def _compare_columns(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _registry(args: argparse.Namespace, config: Config) -> int:
    from streamheal import models
    from streamheal.kafka.control import publish
    from streamheal.registry import CHAMPION, RegistryError, describe_online, open_registry
    from streamheal.signing import CONTROL_KEY_ENV, Signer

    try:
        registry = open_registry(config.registry)
        if args.verb == "list":
            entries = registry.versions()
            if not entries:
                where = config.registry.tracking_uri or config.registry.path
                print(
                    f"model {config.registry.model_name!r} has no versions yet in the "
                    f"{config.registry.backend} registry at {where}"
                )
            for entry in entries:
                meta = entry.meta
                aliases = f" [{', '.join(entry.aliases)}]" if entry.aliases else ""
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(meta["created_at"]))
                print(f"v{entry.version}{aliases}  {when}Z  {meta['cause']}")
        elif args.verb == "show":
            entry = registry.lineage(args.version)
            if entry is None:
                print(json.dumps(registry.meta(args.version), indent=2))
            else:  # a number issued for a model made online: its lineage is all there is
                print(describe_online(registry.name, entry))
                print(json.dumps(entry, indent=2))
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
    from streamheal.dev.bench import run_bench

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
    from streamheal.dev.bench_kafka import run_kafka_bench
    from streamheal.kafka.connect import BrokerUnavailable, wait_for_cluster

    try:
        wait_for_cluster(config.replace(kafka={"connect_timeout_seconds": 5}))
    except BrokerUnavailable as err:
        return {"kafka": f"skipped: {err}"}
    figures = run_kafka_bench(config, events=events, rounds=engine["rounds"])
    figures["kafka_over_engine"] = round(figures["kafka_eps_median"] / engine["engine_eps"], 3)
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
    from streamheal.dev.local_broker import LocalKafka, LocalKafkaError

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
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        help="TOML config file (default: config/streamheal.toml when present; "
        "STREAMHEAL_<SECTION>__<KEY> variables override either)",
    )


def _csv_drift_kinds() -> tuple[str, ...]:
    from streamheal.scenarios import CSV_DRIFT_KINDS

    return CSV_DRIFT_KINDS


def _scenario_names() -> list[str]:
    from streamheal.scenarios import SCENARIOS

    return sorted(SCENARIOS)


def _worker_count(text: str) -> int:
    from streamheal.workers import MAX_WORKERS

    value = _positive_int(text)
    if value > MAX_WORKERS:
        raise argparse.ArgumentTypeError(
            f"expected an integer between 1 and {MAX_WORKERS}, got {text} (one process per "
            "core: more partitions want more machines)"
        )
    return value


def _positive_int(text: str) -> int:
    value = _integer(text, "an integer >= 1")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _integer(text: str, expect: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expect}, got {text!r}") from None


def _number(text: str, expect: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expect}, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected {expect}, got {text!r}")
    return value


def _fraction(text: str) -> float:
    value = _number(text, "a fraction 0 <= F < 1")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction 0 <= F < 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _number(text, "a number > 0")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def _port(text: str) -> int:
    # 0 asks the system for any free port (the address served is logged): tests rely on it.
    value = _integer(text, "a TCP port 0-65535")
    if not 0 <= value < 65536:
        raise argparse.ArgumentTypeError(f"expected a TCP port 0-65535, got {text}")
    return value


def _existing_file(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"not a file: {text}")
    return path


def _iso_time(text: str) -> str:
    from streamheal.replay import parse_time

    try:
        parse_time(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected an ISO-8601 time with a zone, e.g. 2026-11-27T10:00Z, got {text!r}"
            if "time zone" not in str(err)
            else str(err)
        ) from None
    return text


def _cron(text: str) -> str:
    from streamheal.cron import CronSchedule, ScheduleError

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
    value = _integer(text, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


if __name__ == "__main__":
    sys.exit(main())
