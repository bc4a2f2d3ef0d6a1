"""`resnet50-operator` (or `python -m resnet50_operator`): run the operator."""

from __future__ import annotations

import argparse
import logging
import os

from resnet50_operator.settings import ENV_PREFIX, OperatorSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="resnet50-operator",
                                     description="Run the ResNet50Training operator.")
    parser.add_argument("--namespace", help="watch only this namespace; default: all "
                        "(or RESNET50_OPERATOR_NAMESPACE)")
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz",
                        help="liveness endpoint for the Deployment's probe ('' to disable)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    if args.namespace:  # one source for the handlers and for kopf: the settings
        os.environ[ENV_PREFIX + "NAMESPACE"] = args.namespace
    namespace = OperatorSettings.from_env().namespace

    import kopf

    from resnet50_operator import handlers  # noqa: F401  (registers the handlers)

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Standalone: one replica, no peering objects to grant RBAC for.
    kopf.run(standalone=True, clusterwide=namespace is None,
             namespaces=[namespace] if namespace else [],
             liveness_endpoint=args.liveness or None)


if __name__ == "__main__":
    main()
