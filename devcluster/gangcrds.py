"""The PodGroup CRDs of the gang schedulers, coscheduling (scheduler-plugins) and Volcano, as
`hack/gang-crds.sh` fetches them from the Go module proxy into a cache outside the
repository: for tests that create PodGroups on the test control plane (server-side dry runs
or stored objects; neither scheduler runs there).

    from devcluster.gangcrds import crd_files, crds_available

    reason = crds_available()           # None, or why not (then skip, or fail in CI)
    with ControlPlane(crds=list(crd_files().values())) as cp:
        ...

The versions are the script's (SCHEDULER_PLUGINS_VERSION, VOLCANO_APIS_VERSION); the cache
is $RESNET50_GANG_CRDS_DIR or ${XDG_CACHE_HOME:-$HOME/.cache}/resnet50-operator/gang-crds.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "hack" / "gang-crds.sh"
FETCH_HINT = "fetch them with `hack/gang-crds.sh` (about 2 minutes, once per machine)"


def pinned(name: str) -> str:
    """A NAME=value line of hack/gang-crds.sh: the script is where the versions are pinned."""
    match = re.search(rf"^{name}=(\S+)$", SCRIPT.read_text(), re.MULTILINE)
    if match is None:
        raise LookupError(f"no {name}= line in {SCRIPT}")
    return match.group(1)


def cache_dir() -> Path:
    if os.environ.get("RESNET50_GANG_CRDS_DIR"):
        return Path(os.environ["RESNET50_GANG_CRDS_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "resnet50-operator" / "gang-crds"


def crd_files() -> dict[str, Path]:
    """{"coscheduling": scheduling.x-k8s.io/v1alpha1 PodGroup, "volcano":
    scheduling.volcano.sh/v1beta1 PodGroup}: where the script puts them."""
    d = cache_dir()
    return {
        "coscheduling": d / "scheduler-plugins" / pinned("SCHEDULER_PLUGINS_VERSION")
        / "scheduling.x-k8s.io_podgroups.yaml",
        "volcano": d / "volcano" / pinned("VOLCANO_APIS_VERSION")
        / "scheduling.volcano.sh_podgroups.yaml",
    }


def crds_available() -> str | None:
    """None if both CRD files are there, else the reason why not."""
    missing = [str(p) for p in crd_files().values() if not p.is_file()]
    if missing:
        return f"gang scheduler CRDs not found: {', '.join(missing)}; {FETCH_HINT}"
    return None
