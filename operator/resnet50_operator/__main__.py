"""`resnet50-operator` (or `python -m resnet50_operator`): run the operator."""

from __future__ import annotations

import argparse
import logging


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="resnet50-operator",
                                     description="Run the ResNet50Training operator.")
    parser.add_argument("--namespace", action="append", default=[],
                        help="watch only this namespace (repeatable); default: all namespaces")
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz",
                        help="liveness endpoint for the Deployment's probe ('' to disable)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    import kopf

    from resnet50_operator import handlers  # noqa: F401  (registers the handlers)
    from resnet50_operator.settings import OperatorSettings

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    namespaces = args.namespace or ([OperatorSettings.from_env().namespace]
                                    if OperatorSettings.from_env().namespace else [])
    # Standalone: one replica, no peering objects to grant RBAC for.
    kopf.run(standalone=True, clusterwide=not namespaces, namespaces=namespaces,
             liveness_endpoint=args.liveness or None)


if __name__ == "__main__":
    main()
