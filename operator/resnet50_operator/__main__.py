"""`resnet50-operator` (or `python -m resnet50_operator`): run the operator.

`resnet50-operator status NAME` shows one training instead (statusview.py).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from resnet50_operator import leader, statusview
from resnet50_operator.settings import OperatorSettings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resnet50-operator",
                                     description="Run the ResNet50Training operator.")
    parser.add_argument("--namespace", help="watch only this namespace; default: all "
                        "(or RESNET50_OPERATOR_NAMESPACE)")
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz",
                        help="liveness endpoint for the Deployment's probe ('' to disable)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", metavar="{status}",
                                     help="without one: run the operator")
    status = commands.add_parser(
        "status", help="show a training: progress, conditions, pods, restarts",
        description="Show a ResNet50Training: its phase and progress, its conditions, the "
        "pods of its current attempt, its restarts and last failure.")
    statusview.add_arguments(status)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "status":
        sys.exit(statusview.command(args))
    run_operator(args)


def run_operator(args: argparse.Namespace) -> None:
    settings = OperatorSettings.from_env()
    if args.namespace:
        settings = settings.model_copy(update={"namespace": args.namespace})
    namespace = settings.namespace

    import kopf

    from resnet50_operator import handlers  # noqa: F401  (registers the handlers)

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Of several replicas only the holder of the Lease runs kopf (leader.py); the others
    # wait, answering the probes meanwhile. SIGTERM ends the wait, or kopf, cleanly: a
    # leader then releases the Lease, and a standby takes over at once.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # kopf installs its own while it runs
    elector = leader.Elector(leader.coordination_api(), leader.lease_namespace(namespace),
                             leader.identity())
    health = leader.serve_health(args.liveness) if args.liveness else None
    try:
        elector.wait_until_leader()
        if health:
            health.shutdown()
            health.server_close()
        # A leader that cannot renew in time exits (elector.lost): the Deployment restarts it
        # as a standby. Stopping kopf from the inside would keep it acting for a while.
        elector.keep_renewing()
        # Standalone: the Lease, not kopf's peering, keeps the replicas from acting at once.
        kopf.run(standalone=True, clusterwide=namespace is None,
                 namespaces=[namespace] if namespace else [],
                 liveness_endpoint=args.liveness or None, memo=kopf.Memo(settings=settings))
    finally:
        elector.release()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    main()
