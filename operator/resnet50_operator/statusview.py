"""`resnet50-operator status NAME`: one training, its progress and its pods, for people.

render() is pure: (the training as the API returns it, its pods as dicts, now) -> text.
Every status field may be missing (a training the operator has not seen yet, an older
operator), so it reads the dicts with defaults instead of validating them. The rest of
the module reads the two objects from the cluster and prints, once or every few seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from resnet50_operator.reconcile import now_utc, parse_time
from resnet50_operator.render import ATTEMPT_LABEL, NODE_INDEX_LABEL, TRAINING_LABEL
from resnet50_operator.spec import GROUP, KIND, PLURAL, VERSION, RestartPolicySpec
from resnet50_trainer.contract import format_duration

PROG = "resnet50-operator"
CLEAR = "\033[H\033[2J"
FAILURE_LINES = 5  # of lastFailure.message, the end of the container's log
MESSAGE_WIDTH = 100  # a table's last column is cut here; the full text is in the object
REQUEST_TIMEOUT = 10  # seconds, per API call


class StatusError(Exception):
    """What stops the command, said in one line."""


# ------------------------------------------------------------------ rendering


def render(training: dict[str, Any], pods: list[dict[str, Any]], now: dt.datetime) -> str:
    """The whole view; a training without a status (just created) renders too."""
    status = training.get("status") or {}
    sections = [
        _summary(training, status, now),
        _progress(status.get("training") or {}, now),
        _conditions(status.get("conditions") or [], now),
        _pods(pods, status.get("attempt", 0), now),
    ]
    if status.get("restartHistory"):
        sections.append(_history(status["restartHistory"], now))
    if status.get("lastFailure"):
        sections.append(_failure(status["lastFailure"]))
    return "\n\n".join(sections) + "\n"


def _summary(training: dict[str, Any], status: dict[str, Any], now: dt.datetime) -> str:
    meta, spec = training.get("metadata") or {}, training.get("spec") or {}
    nodes = spec.get("nodes", 1)
    restart_policy = spec.get("restartPolicy") or {}
    max_restarts = restart_policy.get("maxRestarts", RestartPolicySpec().max_restarts)
    max_disruptions = restart_policy.get("maxDisruptions")
    if status.get("phase"):
        phase = status["phase"]
    else:
        phase = "Pending (no status yet: the operator has not seen the training)"
    if status.get("phase") == "Restarting" and status.get("restartAt"):
        phase += f" (next attempt {_in(status['restartAt'], now)})"
    node_count = status.get("nodes") or {}
    ready = f"{node_count.get('ready', 0)}/{node_count.get('total', nodes)}"
    gpus = status.get("gpus", nodes * spec.get("gpusPerNode", 8))
    rows = [
        ("Phase:", phase),
        ("Ready:", f"{ready} nodes"),
        ("GPUs:", str(gpus)),
        ("Attempt:", str(status.get("attempt", 0))),
        ("Restarts:", f"{status.get('restarts', 0)} of {max_restarts}"),
        ("Disruptions:", f"{status.get('disruptions', 0)} " + (
            "(no limit)" if max_disruptions is None else f"of {max_disruptions}")),
        ("Created:", _when(meta.get("creationTimestamp"), now)),
    ]
    if status.get("startTime"):
        rows.append(("Started:", _when(status["startTime"], now)))
    if status.get("attemptStartTime"):
        rows.append(("Attempt started:", _when(status["attemptStartTime"], now)))
    if status.get("completionTime"):
        rows.append(("Completed:", _when(status["completionTime"], now)))
    return f"{KIND} {meta.get('namespace', '?')}/{meta.get('name', '?')}\n" + _fields(rows)


def _progress(progress: dict[str, Any], now: dt.datetime) -> str:
    if not progress:
        return "Progress\n  (nothing reported by the trainer yet)"
    rows: list[tuple[str, str]] = []

    def add(label: str, key: str, fmt: str = "{}") -> None:
        if progress.get(key) is not None:
            rows.append((label, fmt.format(progress[key])))

    add("Epoch:", "epoch")
    add("Step:", "step")
    add("Global step:", "globalStep")
    add("Loss:", "loss", "{:.4f}")
    add("LR:", "lr", "{:.4g}")
    add("Images/s:", "imagesPerSecond", "{:.0f}")
    add("Acc@1:", "top1", "{:.2f}%")
    add("Acc@5:", "top5", "{:.2f}%")
    add("ETA:", "eta")
    checkpoint = progress.get("lastCheckpoint") or {}
    if checkpoint:
        rows.append(("Last checkpoint:",
                     f"epoch {checkpoint.get('epoch', '?')}, {_when(checkpoint.get('time'), now)}"))
    if progress.get("lastProgressTime"):
        rows.append(("Last progress:", _when(progress["lastProgressTime"], now)))
    return "Progress\n" + _fields(rows)


def _conditions(conditions: list[dict[str, Any]], now: dt.datetime) -> str:
    rows = [[c.get("type", "?"), c.get("status", "?"), c.get("reason", ""),
             _age(c.get("lastTransitionTime"), now), _one_line(c.get("message", ""))]
            for c in conditions]
    return "Conditions\n" + _table(["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"], rows)


def _pods(pods: list[dict[str, Any]], attempt: int, now: dt.datetime) -> str:
    current, older = [], 0
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if labels.get(ATTEMPT_LABEL) == str(attempt):
            current.append(pod)
        else:
            older += 1
    current.sort(key=_node_index)
    rows = []
    for pod in current:
        meta, pod_status = pod.get("metadata") or {}, pod.get("status") or {}
        phase = "Terminating" if meta.get("deletionTimestamp") else pod_status.get("phase", "?")
        rows.append([meta.get("name", "?"), str(_node_index(pod)),
                     (pod.get("spec") or {}).get("nodeName") or "-", phase,
                     _container_state(pod_status), _age(meta.get("creationTimestamp"), now)])
    text = f"Pods (attempt {attempt})\n" + _table(
        ["NAME", "INDEX", "NODE", "PHASE", "CONTAINER", "AGE"], rows)
    if older:
        text += f"\n  ({older} pod(s) of earlier attempts still present)"
    return text


def _history(history: list[dict[str, Any]], now: dt.datetime) -> str:
    """KIND: what the restart counted against, restarts or disruptions."""
    rows = [[str(r.get("attempt", "?")), r.get("time", "?"), _age(r.get("time"), now),
             "disruption" if r.get("disruption") else "restart", r.get("reason", ""),
             _one_line(r.get("message", ""))] for r in history]
    return "Restart history\n" + _table(["ATTEMPT", "TIME", "AGE", "KIND", "REASON", "MESSAGE"],
                                         rows)


def _failure(failure: dict[str, Any]) -> str:
    exit_code = failure.get("exitCode")
    rows = [("Pod:", failure.get("pod", "?")),
            ("Exit code:", "-" if exit_code is None else str(exit_code)),
            ("Reason:", failure.get("reason") or "-")]
    lines = [line for line in (failure.get("message") or "").splitlines() if line.strip()]
    if not lines:
        return "Last failure\n" + _fields(rows)
    shown = lines[-FAILURE_LINES:]
    label = "Message:" if len(shown) == len(lines) else \
        f"Message (last {len(shown)} of {len(lines)} lines):"
    return ("Last failure\n" + _fields(rows) + f"\n  {label}\n"
            + "\n".join(f"    {line.rstrip()}" for line in shown))


def _container_state(pod_status: dict[str, Any]) -> str:
    statuses = pod_status.get("containerStatuses") or []
    if not statuses:  # not scheduled, or not started
        for cond in pod_status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                return f"unscheduled ({cond.get('reason') or 'Unschedulable'})"
        return pod_status.get("reason") or "-"
    trainer = next((c for c in statuses if c.get("name") == "trainer"), statuses[0])
    state = trainer.get("state") or {}
    # Which key is set says the state; its details may be empty ({"running": {}}).
    if state.get("running") is not None:
        return "running"
    if state.get("terminated") is not None:
        term = state["terminated"]
        text = f"terminated, exit code {term.get('exitCode', '?')}"
        return f"{text} ({term['reason']})" if term.get("reason") else text
    if state.get("waiting") is not None:
        return f"waiting ({state['waiting'].get('reason') or 'unknown'})"
    return "-"


def _node_index(pod: dict[str, Any]) -> int:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    try:
        return int(labels.get(NODE_INDEX_LABEL, ""))
    except ValueError:
        return -1


def _age(timestamp: str | None, now: dt.datetime) -> str:
    try:
        then = parse_time(timestamp)
    except ValueError:
        return "?"
    if then is None:
        return "-"
    return format_duration(max(0.0, (now - then).total_seconds()))


def _when(timestamp: str | None, now: dt.datetime) -> str:
    age = _age(timestamp, now)
    return "-" if age == "-" else f"{timestamp} ({age} ago)"


def _in(timestamp: str, now: dt.datetime) -> str:
    try:
        then = parse_time(timestamp)
    except ValueError:
        return f"at {timestamp}"
    if then is None or then <= now:
        return "now"
    return f"in {format_duration((then - now).total_seconds())}"


def _one_line(text: str) -> str:
    """A table cell, cut at MESSAGE_WIDTH. Of a message with a log in it ("pod P exit code
    C (REASON): <the end of its log>"), the head and the log's last line, the telling one."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > 1:
        text = f"{lines[0].split(': ', 1)[0]}: ... {lines[-1]}"
    flat = " ".join(text.split())
    return flat if len(flat) <= MESSAGE_WIDTH else flat[:MESSAGE_WIDTH - 3] + "..."


def _fields(rows: Sequence[tuple[str, str]]) -> str:
    width = max((len(label) for label, _ in rows), default=0)
    return "\n".join(f"  {label:<{width}}  {value}" for label, value in rows)


def _table(header: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "  (none)"
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


# ------------------------------------------------------------------ the cluster


def connect() -> tuple[Any, Any, str]:
    """CustomObjectsApi, CoreV1Api and the default namespace: the kubeconfig's context's
    namespace, or the pod's own in the cluster, or "default"."""
    from kubernetes import client, config

    namespace = None
    try:
        config.load_kube_config()
        _, context = config.list_kube_config_contexts()
        namespace = (context or {}).get("context", {}).get("namespace")
    except config.ConfigException as kube_config_error:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            raise StatusError(f"no Kubernetes configuration: {kube_config_error}") from None
        try:
            token = config.incluster_config.SERVICE_TOKEN_FILENAME
            with open(os.path.join(os.path.dirname(token), "namespace"), encoding="utf-8") as f:
                namespace = f.read().strip()
        except OSError:
            pass
    return client.CustomObjectsApi(), client.CoreV1Api(), namespace or "default"


def fetch(custom: Any, core: Any, namespace: str,
          name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The training and its pods (as dicts), or a StatusError that says why not."""
    from kubernetes.client import ApiClient
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        training = custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT)
        pod_list = core.list_namespaced_pod(
            namespace, label_selector=f"{TRAINING_LABEL}={name}",
            _request_timeout=REQUEST_TIMEOUT)
    except ApiException as exc:
        if exc.status == 404:
            raise StatusError(f"{KIND} {namespace}/{name} not found") from None
        raise StatusError(f"cannot read {KIND} {namespace}/{name}: {exc.status} "
                          f"{exc.reason}") from None
    except (HTTPError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc  # MaxRetryError: the last error
        if isinstance(reason, HTTPError) and ": " in str(reason):  # "<conn object>: why"
            reason = str(reason).split(": ", 1)[1]
        host = getattr(getattr(custom, "api_client", None), "configuration", None)
        where = f" at {host.host}" if host is not None else ""
        raise StatusError(f"cannot reach the cluster{where}: {reason}") from None
    sanitize = ApiClient().sanitize_for_serialization
    return training, [sanitize(pod) for pod in pod_list.items]


def error_line(exc: StatusError) -> str:
    return f"{PROG}: error: {exc}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="name of the ResNet50Training")
    parser.add_argument("-n", "--namespace", help="its namespace; default: the kubeconfig "
                        "context's namespace, or default")
    parser.add_argument("--watch", "-w", action="store_true",
                        help="refresh until Ctrl-C")
    parser.add_argument("--interval", type=_positive_float, default=2.0,
                        help="seconds between refreshes with --watch (default: 2)")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run `status` with parsed arguments; the exit code. Errors are one line on stderr."""
    out = out or sys.stdout
    try:
        custom, core, default_namespace = connect()
        namespace = args.namespace or default_namespace
        if not args.watch:
            out.write(render(*fetch(custom, core, namespace, args.name), now_utc()))
            return 0
        return _watch(custom, core, namespace, args.name, args.interval, out)
    except StatusError as exc:
        print(error_line(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `| head`: the reader has seen enough
        if out is sys.stdout:  # and Python must not complain when it flushes at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _watch(custom: Any, core: Any, namespace: str, name: str, interval: float,
           out: TextIO) -> int:
    """Refresh every `interval` seconds until Ctrl-C. A failure of the first read ends
    the command; later ones (a blip of the API server) are shown and retried."""
    first = True
    while True:
        try:
            body = render(*fetch(custom, core, namespace, name), now_utc())
        except StatusError as exc:
            if first:
                raise
            body = f"{error_line(exc)} (retrying)\n"
        is_tty = out.isatty()
        if is_tty:
            out.write(CLEAR)
        elif not first:
            out.write("-" * 72 + "\n")
        header = f"Every {interval:g}s: {PROG} status {name} -n {namespace}"
        out.write(f"{header}    {now_utc().strftime('%Y-%m-%d %H:%M:%S')}\n\n{body}")
        out.flush()
        first = False
        time.sleep(interval)
