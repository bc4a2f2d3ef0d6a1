"""The local Kubernetes that the project's tests, `make demo` and the hack/ scripts run on.

* `controlplane`: etcd, kube-apiserver, kube-controller-manager and kube-scheduler as local
  processes (binaries built by hack/control-plane/build.sh), supervised: one that exits is
  restarted.
* `nodesim`: simulated GPU nodes whose pods run as local processes.
* `kueue`: Kueue's manager (built by hack/kueue/build.sh) as a local process against a
  control plane, with its CRDs and webhooks.
* `binary_image`: a one-binary container image (pause, CoreDNS) for hack/real-node.sh.

Development tooling, not part of the wheel: run it from the repository root (or with it on
PYTHONPATH) as `python -m devcluster ...`; `python -m devcluster --help` lists the commands.
The standard library is enough, except for `nodesim`, `kueue` and the control plane's client
helpers, which need the `kubernetes` client.
"""
