"""Stream the breast-cancer scenario into Kafka: an example for producer teams.

    python producers/breast_cancer.py --bootstrap 127.0.0.1:19092 --events 4000 --label-delay 50

Same as ``streamheal simulate breast-cancer --kafka``, written out with the
``EventProducer`` helper so the three calls a producer needs are visible.
"""

from __future__ import annotations

import argparse

from streamheal.producer import EventProducer
from streamheal.scenarios import breast_cancer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--topic", default="streamheal.events")
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--label-delay", type=int, default=50)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    scenario = breast_cancer(events=args.events, label_delay=args.label_delay, seed=args.seed)
    with EventProducer(args.bootstrap, args.topic) as producer:  # flushes on exit
        for event in scenario.events:
            # A feature event: send(id, features=...); its label, later: send(id, label=...).
            producer.send(event["id"], event.get("features"), event.get("label"), event["ts"])
    print(f"sent {len(scenario.events)} records; truth: {scenario.truth}")


if __name__ == "__main__":
    main()
