"""python -m devcluster COMMAND ...: the local cluster's command line.

  controlplane start|stop|kubeconfig|check|bin-dir ...   the control plane (controlplane.py)
  nodes --kubeconfig KUBECONFIG --workdir DIR ...         simulated GPU nodes (nodesim.py)
  kueue check|run --kubeconfig KUBECONFIG ...             Kueue's manager (kueue.py)
  binary-image --binary PATH --name IMAGE:TAG ...         a one-binary image (binary_image.py)

`python -m devcluster COMMAND --help` tells a command's options.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command, rest = (args[0], args[1:]) if args else ("", [])
    # Imported on demand: nodesim and kueue need the kubernetes client, the others only
    # the stdlib.
    if command == "controlplane":
        from devcluster.controlplane import main as run
    elif command == "nodes":
        from devcluster.nodesim import main as run
    elif command == "kueue":
        from devcluster.kueue import main as run
    elif command == "binary-image":
        from devcluster.binary_image import main as run
    else:
        print(__doc__, file=sys.stderr)
        return 0 if command in ("-h", "--help") else 2
    return run(rest, prog=f"python -m devcluster {command}")


if __name__ == "__main__":
    sys.exit(main())
