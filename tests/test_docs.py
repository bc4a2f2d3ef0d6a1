"""The reference tables of docs/ say what the code does, both ways: every documented entry
exists in the code, and every entry of the code is documented.

Each test reads one markdown table (a section's table as rows of {column: cell}) and
compares it with the code it describes. A cell in free text that says more than a value
(a default of "from the dataset", a limit of "a Kubernetes quantity") is not compared; the
name of every row is. A failure names the doc file and line of the row.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

import resnet50_operator
from resnet50_operator import crd, render, spec
from resnet50_operator.reconcile import progress_status
from resnet50_operator.settings import ENV_PREFIX, OperatorSettings
from resnet50_trainer import contract
from resnet50_trainer.config import PRESETS, TrainConfig, build_parser, parse_config

ROOT = Path(__file__).parent.parent

# ------------------------------------------------------------------ reading markdown


@dataclass
class Row:
    where: str  # "docs/operator.md:142", for the assertion messages
    cells: dict[str, str]

    def __getitem__(self, column: str) -> str:
        return self.cells[column]


def section(doc: str, heading: str) -> list[tuple[int, str]]:
    """The numbered lines under `heading` (e.g. "### dataset"), up to the next heading of
    the same or a higher level; lines in code blocks are never headings."""
    lines = (ROOT / doc).read_text().splitlines()
    assert heading in lines, f"{doc}: no heading {heading!r}"
    start, level = lines.index(heading), len(heading.split()[0])
    out, fenced = [], False
    for number, line in enumerate(lines[start + 1:], start + 2):
        fenced ^= line.startswith("```")
        if not fenced and re.match(rf"#{{1,{level}}} ", line):
            break
        out.append((number, line))
    return out


def _cells(line: str) -> list[str]:
    """A table line's cells: split at the pipes that are not inside `code`."""
    inner = line.strip().removeprefix("|").removesuffix("|")
    return [c.strip() for c in re.split(r"\|(?=(?:[^`]*`[^`]*`)*[^`]*$)", inner)]


def tables(doc: str, heading: str) -> list[list[Row]]:
    """Every table of a section, each as its rows."""
    found: list[list[Row]] = []
    header: list[str] | None = None
    for number, line in section(doc, heading):
        if not line.startswith("|"):
            header = None
            continue
        cells = _cells(line)
        if header is None:
            header = cells
            found.append([])
        elif not set("".join(cells)) <= set("-: "):  # not the |---|---| line
            assert len(cells) == len(header), f"{doc}:{number}: {len(cells)} cells, " \
                f"the table has {len(header)} columns"
            found[-1].append(Row(f"{doc}:{number}", dict(zip(header, cells, strict=True))))
    return found


def table(doc: str, heading: str, column: str = "") -> list[Row]:
    """The first table of a section, or the first with `column`."""
    for rows in tables(doc, heading):
        if rows and (not column or column in rows[0].cells):
            return rows
    raise AssertionError(f"{doc}: no table{f' with a column {column!r}' if column else ''} "
                         f"under {heading!r}")


def ticked(cell: str) -> list[str]:
    """The `code` spans of a cell."""
    return re.findall(r"`([^`]*)`", cell)


def names(cell: str) -> list[str]:
    """The CamelCase identifiers in `code` in a cell: reasons, condition types."""
    return [t for t in ticked(cell) if re.fullmatch(r"[A-Z][A-Za-z]+", t)]


# ------------------------------------------------------------------ reading cells

ABSENT = object()  # a cell that states no value (blank, or free text)


def value(cell: str) -> Any:
    """A documented value: `code` (read as YAML: `{}`, `false`, `nvidia.com/gpu`), a number,
    "unset"/"none" (None), "off"/"on" (False/True), numbers separated by spaces (a tuple);
    a number may be followed by a note in parentheses, "0 (off)". Else ABSENT."""
    cell = re.sub(r" \([^)]*\)$", "", cell.strip())
    if re.fullmatch(r"`[^`]*`", cell):
        return yaml.safe_load(cell[1:-1])
    if cell in ("unset", "none"):
        return None
    if cell in ("off", "on"):
        return cell == "on"
    try:
        numbers = [yaml.safe_load(n) for n in cell.split()]
    except yaml.YAMLError:
        return ABSENT
    if numbers and all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in numbers):
        return numbers[0] if len(numbers) == 1 else tuple(numbers)
    return ABSENT


# The limits of a schema node that a Limits cell must state (the lengths are not documented).
LIMIT_KEYS = ("minimum", "maximum", "exclusiveMinimum", "enum", "minLength", "pattern")


def limits(cell: str) -> dict[str, Any]:
    """The limits a cell states, clause by clause (";"): `1..1024`, `>= 1`, `> 0`, `not
    empty`, starts with `/`, or a list of values in `code`. Other clauses are free text."""
    out: dict[str, Any] = {}
    for clause in (c.strip() for c in cell.split(";")):
        if m := re.fullmatch(r"(-?\d+)\.\.(-?\d+)", clause):
            out.update(minimum=int(m[1]), maximum=int(m[2]))
        elif m := re.fullmatch(r"(>=?) (-?[\d.]+)", clause):
            out["minimum"] = yaml.safe_load(m[2])
            if m[1] == ">":
                out["exclusiveMinimum"] = True
        elif clause == "not empty":
            out["minLength"] = 1
        elif clause == "starts with `/`":
            out["pattern"] = "^/"
        elif re.fullmatch(r"`[^`]+`(, `[^`]+`)*", clause):
            out["enum"] = sorted(ticked(clause))
    return out


def stated_limits(node: dict[str, Any]) -> dict[str, Any]:
    return {k: sorted(node[k]) if k == "enum" else node[k] for k in LIMIT_KEYS if k in node}


# ------------------------------------------------------------------ docs/operator.md: the spec

OPERATOR = "docs/operator.md"
CRD_SPEC = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
    "spec"]
# What the operator applies to a spec that sets only what must be set: every default,
# including the empty ones ("", [], {}) that the CRD leaves out.
APPLIED = spec.ResNet50TrainingSpec.model_validate({
    "dataset": {"hostPath": {"path": "/data"}},
    "checkpoint": {"hostPath": {"path": "/checkpoints"}},
}).model_dump(by_alias=True)
SECTIONS = sorted(k for k, v in CRD_SPEC["properties"].items() if "properties" in v)


def fields(node: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """The documented fields of an object node: its properties, with those of an object
    property with properties of its own as dotted names (persistentVolumeClaim.claimName)."""
    out = {}
    for name, child in node.get("properties", {}).items():
        if "properties" in child:
            out.update(fields(child, f"{prefix}{name}."))
        else:
            out[prefix + name] = child
    return out


def spec_table(name: str) -> tuple[list[Row], dict[str, dict[str, Any]]]:
    """The rows of a section's table ("" for Top level), and the schema of its fields."""
    if not name:
        return table(OPERATOR, "### Top level"), CRD_SPEC["properties"]
    return table(OPERATOR, f"### {name}"), fields(CRD_SPEC["properties"][name])


def applied(path: str) -> Any:
    node: Any = APPLIED
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def required(path: str) -> bool:
    *parents, name = path.split(".")
    node = CRD_SPEC
    for part in parents:
        node = node["properties"][part]
    return name in node.get("required", [])


TYPES = {"integer": "integer", "number": "number", "boolean": "boolean", "string": "string",
         "object": "object", "list": "array", "map": "object", "core/v1": "object"}


ALL_SECTIONS = pytest.mark.parametrize("name", ["", *SECTIONS], ids=lambda n: n or "top-level")


@ALL_SECTIONS
def test_each_spec_table_lists_the_fields_of_the_schema(name):
    rows, nodes = spec_table(name)
    documented = [ticked(row["Field"])[0] for row in rows]
    prefix = f"spec.{name}." if name else "spec."
    for row, field in zip(rows, documented, strict=True):
        assert field in nodes, f"{row.where}: `{field}` is not a field of {prefix[:-1]} " \
            "in the CRD (operator/resnet50_operator/spec.py)"
    missing = sorted(set(nodes) - set(documented))
    assert not missing, f"{OPERATOR}: the table under '### {name or 'Top level'}' lacks " \
        f"{', '.join(prefix + m for m in missing)}"


def test_each_object_of_the_spec_has_its_own_table():
    headings = {line for _, line in section(OPERATOR, "## The spec") if line.startswith("### ")}
    assert {h[4:] for h in headings} == {"Top level", *SECTIONS}, \
        f"{OPERATOR}: the spec's sections should be Top level and {', '.join(SECTIONS)}"


@ALL_SECTIONS
def test_each_spec_table_gives_the_types_defaults_and_limits_of_the_schema(name):
    rows, nodes = spec_table(name)
    for row in rows:
        field = ticked(row["Field"])[0]
        if field not in nodes:
            continue  # the test above says so
        node, path = nodes[field], f"{name}.{field}" if name else field
        kind = TYPES.get(row["Type"].split()[0])
        assert kind == node["type"], f"{row.where}: spec.{path} is of type " \
            f"{node['type']}, the table says {row['Type']!r}"

        cell = row["Default"]
        # A section's default is the CRD's ({} or none): its fields' are in its own table.
        default = node.get("default") if "properties" in node else applied(path)
        if cell == "required":
            assert required(path), f"{row.where}: spec.{path} is not required"
        elif (documented := value(cell)) is not ABSENT:
            assert not required(path), f"{row.where}: spec.{path} is required, the table " \
                f"gives a default, {cell}"
            assert documented == default, f"{row.where}: spec.{path} defaults to " \
                f"{default!r}, the table says {cell}"
            assert node.get("default", documented) == documented, f"{row.where}: the " \
                f"CRD's default of spec.{path} is {node.get('default')!r}, not {cell}"

        stated = limits(row.cells.get("Limits", ""))
        actual = stated_limits(node)
        if actual.get("maximum") == spec.MAX_SECONDS and "maximum" not in stated:
            del actual["maximum"]  # every duration: see the test below
        assert stated == actual, f"{row.where}: the limits of spec.{path} are " \
            f"{actual or 'none'}; the table says {row.cells.get('Limits') or 'none'}"


def test_the_upper_bound_of_every_duration_is_documented_once():
    text = " ".join(line for _, line in section(OPERATOR, "## The spec"))
    assert f"at most ten years ({spec.MAX_SECONDS} s)" in text, \
        f"{OPERATOR}: '## The spec' should say every duration is at most ten years " \
        f"({spec.MAX_SECONDS} s), spec.MAX_SECONDS"


def test_the_reserved_env_names_are_those_the_schema_rejects():
    row = next(r for r in table(OPERATOR, "## Invalid specs") if r["Where"] == "`env`")
    reserved = [t for t in ticked(row["Rule"]) if t.isupper()]
    assert sorted(reserved) == sorted(spec.OPERATOR_ENV), f"{row.where}: spec.env may not " \
        f"name {', '.join(spec.OPERATOR_ENV)} (spec.OPERATOR_ENV); the row lists {reserved}"


def test_the_environment_table_is_what_the_operator_sets():
    t = render.parse_training({"metadata": {"name": "r50", "namespace": "ns"},
                               "spec": {"dataset": {"synthetic": True}}})
    rendered = [e["name"] for e in render.environment(t, 0, OperatorSettings())]
    rows = table(OPERATOR, "#### Environment")
    documented = [ticked(r["Variable"])[0] for r in rows]
    assert documented == rendered, f"{rows[0].where}: the pods' environment is, in order, " \
        f"{', '.join(rendered)} (render.environment)"
    assert documented[:len(spec.OPERATOR_ENV)] == list(spec.OPERATOR_ENV), \
        f"{rows[0].where}: the rendezvous variables (spec.OPERATOR_ENV) should come first"


# ------------------------------------------------------------------ the status


def test_the_status_fields_table_is_the_status():
    properties = crd.openapi_schema(spec.ResNet50TrainingStatus)["properties"]
    rows = table(OPERATOR, "### Fields")
    documented = {name: r for r in rows for name in ticked(r["Field"])}
    for name, row in documented.items():
        node: dict[str, Any] = {"properties": properties}
        for part in name.split("."):
            assert part in node.get("properties", {}), f"{row.where}: `{name}` is not a " \
                "field of the status (spec.ResNet50TrainingStatus)"
            node = node["properties"][part]
    missing = sorted(set(properties) - {n.split(".")[0] for n in documented})
    assert not missing, f"{OPERATOR}: '### Fields' of the status lacks {missing}"


@pytest.mark.parametrize(("doc", "heading"), [(OPERATOR, "### kubectl get"),
                                              ("docs/status.md", "## kubectl get")])
def test_the_columns_tables_are_the_printer_columns(doc, heading):
    rows = table(doc, heading, "Column")
    documented = [ticked(r["Column"])[0] for r in rows]
    columns = [c["name"].upper() for c in crd.PRINTER_COLUMNS]
    assert documented == columns, f"{rows[0].where}: kubectl get shows, in order, " \
        f"{', '.join(columns)} (crd.PRINTER_COLUMNS)"
    for row, column in zip(rows, crd.PRINTER_COLUMNS, strict=True):
        path, _, text = row["From"].partition(": ")
        assert ticked(path) == [column["jsonPath"]], f"{row.where}: {column['name']} " \
            f"shows {column['jsonPath']}"
        description = column.get("description", "")
        assert text.lower() == description.lower(), f"{row.where}: the text after the " \
            f"path should be the column's description, {description!r}"


def test_every_captured_kubectl_get_has_the_printer_columns():
    header = ["NAME", *(c["name"].upper() for c in crd.PRINTER_COLUMNS)]
    for doc in sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")]):
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            if line.startswith("NAME ") and " RESTARTS " in line and " PHASE " in line:
                assert line.split() == header, f"{doc.relative_to(ROOT)}:{number}: " \
                    f"kubectl get r50t prints {' '.join(header)}"


# ------------------------------------------------------------------ operator settings


def test_the_operator_settings_table_is_operator_settings():
    schema = crd.openapi_schema(OperatorSettings)["properties"]
    rows = table(OPERATOR, "## Operator settings")
    documented = {}
    for row in rows:
        variable = ticked(row["Variable"])[0]
        name = variable.removeprefix(ENV_PREFIX).lower()
        assert name in schema, f"{row.where}: {variable} is not a field of OperatorSettings " \
            "(operator/resnet50_operator/settings.py)"
        documented[name] = row
        m = re.fullmatch(r"(`[^`]*`)(?: \((.*)\))?|unset: .*", row["Default"])
        assert m, f"{row.where}: the default should read `VALUE`, `VALUE` (LIMITS) or " \
            f"'unset: ...', not {row['Default']!r}"
        default = OperatorSettings.model_fields[name].default
        assert (value(m[1]) if m[1] else None) == default, f"{row.where}: {variable} " \
            f"defaults to {default!r}, the table says {row['Default']}"
        assert limits(m[2] or "") == stated_limits(schema[name]), f"{row.where}: the " \
            f"limits of {variable} are {stated_limits(schema[name]) or 'none'}"
    missing = sorted(ENV_PREFIX + n.upper() for n in set(schema) - set(documented))
    assert not missing, f"{OPERATOR}: '## Operator settings' lacks {', '.join(missing)}"


def test_every_operator_variable_the_docs_name_is_a_setting():
    known = {ENV_PREFIX + n.upper() for n in OperatorSettings.model_fields}
    for doc in sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")]):
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            for variable in re.findall(rf"{ENV_PREFIX}[A-Z_]+", line):
                assert variable in known, f"{doc.relative_to(ROOT)}:{number}: {variable} " \
                    "is not an operator setting"


# ------------------------------------------------------------------ exit codes

TRAINER = "docs/trainer.md"


def exit_code(cell: str) -> int | str:
    """0, 1, ... or the signal row, "128+N" (checked against SIGNAL_EXIT_BASE)."""
    return int(cell) if cell.isdigit() else cell


EXIT_CODES = {0, contract.EXIT_CRASH, *contract.EXIT_CLASSES, f"{contract.SIGNAL_EXIT_BASE}+N"}


@pytest.mark.parametrize(("doc", "heading", "meaning", "operator"), [
    (TRAINER, "## Exit codes", "Meaning", "Does the operator restart the group?"),
    ("docs/architecture.md", "## The trainer/operator contract", "Trainer meaning", "Operator"),
])
def test_the_exit_code_tables_are_the_contract(doc, heading, meaning, operator):
    rows = table(doc, heading, meaning)
    first = next(iter(rows[0].cells))
    codes = {exit_code(r[first]): r for r in rows}
    assert set(codes) == EXIT_CODES, f"{doc}: the exit codes under {heading!r} are " \
        f"{sorted(map(str, codes))}, the contract's {sorted(map(str, EXIT_CODES))} " \
        "(resnet50_trainer/contract.py)"
    crash = codes[contract.EXIT_CRASH]
    assert crash[meaning].startswith("crash"), f"{crash.where}: {contract.EXIT_CRASH} is " \
        "EXIT_CRASH, a crash"
    for code, c in contract.EXIT_CLASSES.items():
        row = codes[code]
        if doc == TRAINER:  # the restart column: retried or not
            assert row[operator].startswith("no"), f"{row.where}: exit code {code} is not " \
                "retried (contract.retried)"
        else:
            assert ticked(row[operator]) == [c.reason], f"{row.where}: the operator " \
                f"reports exit code {code} as `{c.reason}` (contract.EXIT_CLASSES)"
    signal = codes[f"{contract.SIGNAL_EXIT_BASE}+N"]
    assert contract.retried(contract.SIGNAL_EXIT_BASE)
    assert signal[operator].startswith(("yes", "whole-group restart")), \
        f"{signal.where}: an exit by a signal is retried (contract.retried)"


def test_which_failures_are_retried_gives_the_contracts_exit_codes():
    rows = table(OPERATOR, "### Which failures are retried")
    by_code = {int(m[1]): r for r in rows if (m := re.search(r"exit code (\d+) \(", r["Pod"]))}
    assert set(by_code) == set(contract.EXIT_CLASSES), f"{OPERATOR}: 'Which failures are " \
        f"retried' has rows for exit codes {sorted(by_code)}, the trainer's own codes are " \
        f"{sorted(contract.EXIT_CLASSES)} (contract.EXIT_CLASSES)"
    for code, row in by_code.items():
        reason = contract.EXIT_CLASSES[code].reason
        assert ticked(row["Reason"]) == [reason], f"{row.where}: exit code {code} is " \
            f"reported as `{reason}`"
        assert row["Retried"] == ("yes" if contract.retried(code) else "no"), \
            f"{row.where}: exit code {code} is {'' if contract.retried(code) else 'not '}retried"
    bounds = 0
    for row in rows:  # "exit code 128 or above" is retried, "exit code below 128" is not
        for bound, retried in [*((b, "yes") for b in re.findall(r"exit code (\d+) or above",
                                                                row["Pod"])),
                               *((b, "no") for b in re.findall(r"exit code below (\d+)",
                                                               row["Pod"]))]:
            assert int(bound) == contract.SIGNAL_EXIT_BASE, f"{row.where}: signals start " \
                f"at {contract.SIGNAL_EXIT_BASE} (contract.SIGNAL_EXIT_BASE)"
            assert row["Retried"] == retried, f"{row.where}: only an exit by a signal is " \
                "retried"
            bounds += 1
    assert bounds == 2, f"{OPERATOR}: 'Which failures are retried' should have a row for " \
        f"'exit code {contract.SIGNAL_EXIT_BASE} or above' and one for 'exit code below " \
        f"{contract.SIGNAL_EXIT_BASE}'"


# ------------------------------------------------------------------ conditions and reasons

RECONCILE = Path(resnet50_operator.__file__).parent / "reconcile"
SOURCES = RECONCILE.parents[2]  # the repository the operator's code is in, for the messages
EMITTING = [*sorted(RECONCILE.glob("*.py")), RECONCILE.parent / "handlers.py",
            RECONCILE.parent / "refusals.py"]
# Reasons the docs name that come from Kubernetes, not from the operator's code: it passes
# on a pod's status.reason, a container's terminated or waiting reason, the reason of a
# pod's Warning Event and of its DisruptionTarget condition as they are.
KUBERNETES_REASONS = {
    "OOMKilled", "Error",  # a terminated container's reason
    "ErrImagePull", "ImagePullBackOff",  # a waiting container's reason
    "FailedMount",  # a pod's Warning Event
    # a pod's DisruptionTarget condition (Kueue's too)
    "EvictionByEvictionAPI", "PreemptionByScheduler", "DeletionByTaintManager",
    "DeletionByPodGC", "TerminationByKubelet", "WorkloadEvictedDueToPreempted",
    "NotEnoughResources",  # a Volcano PodGroup's Unschedulable condition
}


@dataclass(frozen=True)
class Literal:
    text: str
    where: str


def _parameter_index(tree: ast.Module, parameter: str) -> dict[str, int]:
    """Functions and dataclasses with `parameter`, and its position (self not counted)."""
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            args = [a.arg for a in node.args.args if a.arg != "self"]
        elif isinstance(node, ast.ClassDef):
            args = [s.target.id for s in node.body
                    if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]
        else:
            continue
        if parameter in args:
            found[node.name] = args.index(parameter)
    return found


def _callee(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _strings(e: ast.expr, assigned: dict[str, list[ast.expr]],
             seen: frozenset[str] = frozenset()) -> list[ast.Constant]:
    """The string literals an expression may evaluate to, as far as they can be told."""
    if isinstance(e, ast.Constant) and isinstance(e.value, str):
        return [e]
    if isinstance(e, ast.BoolOp):
        return [s for v in e.values for s in _strings(v, assigned, seen)]
    if isinstance(e, ast.IfExp):
        return _strings(e.body, assigned, seen) + _strings(e.orelse, assigned, seen)
    if isinstance(e, ast.Name) and e.id not in seen:
        return [s for v in assigned.get(e.id, [])
                for s in _strings(v, assigned, seen | {e.id})]
    if isinstance(e, ast.Call) and f"{_callee(e)}()" not in seen:  # what the function returns
        key = f"{_callee(e)}()"
        return [s for v in assigned.get(key, []) for s in _strings(v, assigned, seen | {key})]
    return []


def literals_passed_as(parameter: str) -> list[Literal]:
    """The string literals the operator passes as `parameter` (reason, type_) to its own
    functions and dataclasses: directly, as `x or "Default"` or `a if c else b`, through a
    variable assigned before, as what a function of its own returns (_signal_reason), or as
    the element of a tuple that a function returns and the caller unpacks (_why_waiting).
    Reasons relayed from a pod, an Event or the contract are not literals and are not
    found."""
    trees = {path: ast.parse(path.read_text()) for path in EMITTING}
    index: dict[str, int] = {}
    returns: dict[str, list[ast.Tuple]] = {}  # function -> the tuples it returns
    results: dict[str, list[ast.expr]] = {}  # "function()" -> whatever else it returns
    for tree in trees.values():
        index.update(_parameter_index(tree, parameter))
        for f in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
            values = [r.value for r in ast.walk(f) if isinstance(r, ast.Return) and r.value]
            returns[f.name] = [v for v in values if isinstance(v, ast.Tuple)]
            results[f"{f.name}()"] = [v for v in values if not isinstance(v, ast.Tuple)]
    found: list[Literal] = []
    for path, tree in trees.items():
        # variable -> what it may be assigned; "function()" -> what it may return
        assigned: dict[str, list[ast.expr]] = {k: list(v) for k, v in results.items()}
        for a in (n for n in ast.walk(tree) if isinstance(n, ast.Assign)):
            target = a.targets[0]
            if isinstance(target, ast.Name):
                assigned.setdefault(target.id, []).append(a.value)
            elif isinstance(target, ast.Tuple) and isinstance(a.value, ast.Call):
                for i, e in enumerate(target.elts):
                    if isinstance(e, ast.Name):
                        assigned.setdefault(e.id, []).extend(
                            t.elts[i] for t in returns.get(_callee(a.value), [])
                            if i < len(t.elts))
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            position = index.get(_callee(call))
            if position is None:
                continue
            given = [k.value for k in call.keywords if k.arg == parameter]
            if len(call.args) > position:
                given.append(call.args[position])
            for e in given:
                found += [Literal(s.value, f"{path.relative_to(SOURCES)}:{s.lineno}")
                          for s in _strings(e, assigned)]
    return found


def documented_reasons() -> dict[str, str]:
    """Reason -> the row that names it first: the Conditions table (its second column), and
    the Reason columns of the Events table and of 'Which failures are retried'."""
    cells = [(r, r["Status and reason"]) for r in table(OPERATOR, "### Conditions")]
    cells += [(r, r["Reason"]) for r in table(OPERATOR, "### Events")]
    cells += [(r, r["Reason"]) for r in table(OPERATOR, "### Which failures are retried")]
    out: dict[str, str] = {}
    for row, cell in cells:
        for name in names(cell):
            if name not in ("True", "False"):
                out.setdefault(name, row.where)
    return out


def test_every_reason_the_operator_emits_is_documented():
    documented = documented_reasons()
    emitted = literals_passed_as("reason")
    emitted += [Literal(c.reason, "resnet50_trainer/contract.py (EXIT_CLASSES)")
                for c in contract.EXIT_CLASSES.values()]
    for reason in emitted:
        assert reason.text in documented, f"{reason.where}: the reason `{reason.text}` is " \
            f"not documented in {OPERATOR} (Conditions, Events or 'Which failures are retried')"


def test_every_documented_reason_is_one_the_operator_emits():
    emitted = {r.text for r in literals_passed_as("reason")}
    emitted |= {c.reason for c in contract.EXIT_CLASSES.values()}
    for reason, where in documented_reasons().items():
        assert reason in emitted | KUBERNETES_REASONS, f"{where}: the operator never emits " \
            f"the reason `{reason}` (reconcile/, handlers.py, contract.EXIT_CLASSES), and it " \
            "is not one of Kubernetes' (KUBERNETES_REASONS in this test)"


def test_the_condition_types_are_those_the_operator_sets():
    rows = table(OPERATOR, "### Conditions")
    documented = {ticked(r["Type"])[0]: r.where for r in rows}
    emitted = {lit.text: lit.where for lit in literals_passed_as("type_")}
    assert emitted, "no condition type found: has set_condition's parameter type_ been renamed?"
    for name, where in emitted.items():
        assert name in documented, f"{where}: the condition `{name}` is not in {OPERATOR}'s " \
            "Conditions table"
    for name, where in documented.items():
        assert name in emitted, f"{where}: the operator sets no condition `{name}`"


# ------------------------------------------------------------------ docs/status.md

STATUS = "docs/status.md"


def test_the_gauges_table_is_the_contracts_gauges():
    rows = table(STATUS, "### The gauges")
    documented = {ticked(r["Name"])[0]: r for r in rows}
    for name, row in documented.items():
        gauge = name.removeprefix(contract.METRIC_PREFIX)
        assert gauge in contract.GAUGES, f"{row.where}: {name} is not a gauge of " \
            "contract.GAUGES"
        assert row["Meaning"].startswith(contract.GAUGES[gauge]), f"{row.where}: the " \
            f"meaning of {name} should start with its help text, " \
            f"{contract.GAUGES[gauge]!r}"
    missing = sorted(set(contract.GAUGES) - {n.removeprefix(contract.METRIC_PREFIX)
                                             for n in documented})
    assert not missing, f"{STATUS}: '### The gauges' lacks {missing}"


def test_the_captured_endpoint_is_what_the_trainer_serves():
    lines = [line for _, line in section(STATUS, "### The endpoint")]
    start = lines.index("$ curl -s localhost:9402/metrics") + 1
    captured = "\n".join(lines[start:lines.index("```", start)]) + "\n"
    values = contract.parse_gauges(captured)
    # Captured during a run: resnet50_finished appears only at its end.
    assert set(values) == set(contract.GAUGES) - {"finished"}, f"{STATUS}: the captured " \
        "endpoint should hold every gauge of contract.GAUGES but resnet50_finished"
    assert captured == contract.render_gauges(values), f"{STATUS}: the captured endpoint " \
        "differs from what contract.render_gauges writes for its values (names, help texts, " \
        "order or number format)"


def test_the_status_training_table_is_training_progress():
    rows = table(STATUS, "## Where the figures come from", "From the gauges")
    nodes = fields(crd.openapi_schema(spec.TrainingProgress))
    documented = {name: r for r in rows for name in ticked(r["Field"])}
    for name, row in documented.items():
        assert name in nodes, f"{row.where}: `{name}` is not a field of status.training " \
            "(spec.TrainingProgress)"
        for gauge in ticked(row["From the gauges"]):
            for part in gauge.split("/"):
                assert part in contract.GAUGES, f"{row.where}: `{part}` is not a gauge"
    missing = sorted(set(nodes) - set(documented))
    assert not missing, f"{STATUS}: the table of status.training lacks {missing}"


def test_the_gauge_moments_table_names_every_gauge():
    rows = table(STATUS, "## Where the figures come from", "Gauges")
    documented = {name: r for r in rows for name in ticked(r["Gauges"])}
    for name, row in documented.items():
        assert name in contract.GAUGES, f"{row.where}: `{name}` is not a gauge"
    missing = sorted(set(contract.GAUGES) - set(documented))
    assert not missing, f"{STATUS}: the table of when the gauges change lacks {missing}"


def test_the_figures_are_rounded_as_documented():
    rows = table(STATUS, "## Where the figures come from", "From the gauges")
    now = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
    raw = 12.987654321
    checked = 0
    for row in rows:
        digits = re.search(r"rounded to (\d+) decimals", row["Meaning"])
        whole = "a whole number" in row["Meaning"]
        if not digits and not whole:
            continue
        for field, gauge in zip(ticked(row["Field"]), ticked(row["From the gauges"]),
                                strict=True):
            got = progress_status(None, {gauge: raw}, now).model_dump(by_alias=True)[field]
            expected = int(raw) if whole else round(raw, int(digits[1]))
            assert got == expected, f"{row.where}: {gauge} {raw} becomes {field} {got}, " \
                f"not {expected} (reconcile/progress.py progress_status)"
            checked += 1
    assert checked >= 5, f"{STATUS}: the rounding of loss, lr, imagesPerSecond, top1 and top5 " \
        "should be documented as 'rounded to N decimals' or 'a whole number'"


# ------------------------------------------------------------------ docs/trainer.md options


def option_rows() -> list[Row]:
    """The rows that document options: with their default, or the value accepted from
    torchvision (the table of differences only compares defaults, see
    trainer/test_torchvision_parity.py)."""
    return [r for rows in tables(TRAINER, "## Command-line options") for r in rows
            if "Option" in r.cells and r.cells.keys() & {"Default", "Accepted"}]


def test_every_option_of_the_trainer_is_documented_and_no_other():
    actions = {flag: a for a in build_parser()._actions for flag in a.option_strings}
    documented = set()
    for row in option_rows():
        flags = [span.split()[0] for span in ticked(row["Option"])]
        for flag in flags:
            assert flag in actions, f"{row.where}: resnet50-train has no option {flag}"
        action = actions[flags[0]]
        own = [f for f in action.option_strings if not f.startswith("--no-")]
        assert sorted(flags) == sorted(own), f"{row.where}: the row should name " \
            f"{', '.join(own)}"
        for span in ticked(row["Option"]):
            choices = re.search(r"\{(.*)\}", span)
            if choices and action.choices is not None:
                assert choices[1].split(",") == list(action.choices), f"{row.where}: " \
                    f"{flags[0]} takes {{{','.join(action.choices)}}}"
        documented.update(flags)
    # --no-X: "Boolean options also have a --no- form"; -h/--help: argparse's own.
    known = {f for f in actions if not f.startswith("--no-")} - {"-h", "--help"}
    missing = sorted(known - documented)
    assert not missing, f"{TRAINER}: '## Command-line options' lacks {', '.join(missing)}"


def test_the_documented_defaults_are_train_configs():
    actions = {flag: a for a in build_parser()._actions for flag in a.option_strings}
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for row in option_rows():
        action = actions[ticked(row["Option"])[0].split()[0]]
        if not row.cells.get("Default") or isinstance(action.const, str):  # --synthetic, --amp
            continue
        default = defaults[action.dest]
        documented = value(row["Default"])
        if documented is ABSENT or (isinstance(documented, str) and
                                    documented.startswith("--")):
            # Free text ("from the dataset", "`--wd`") explains what an unset option means.
            assert default is None, f"{row.where}: {action.dest} defaults to {default!r}; " \
                f"the table says {row['Default']!r}"
        else:
            assert documented == default, f"{row.where}: {action.dest} defaults to " \
                f"{default!r} (TrainConfig), the table says {row['Default']}"


# ------------------------------------------------------------------ architecture.md


def test_every_file_the_where_to_change_table_names_exists():
    """Paths may be given from the root or, after the first, from their package."""
    files = {p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*")
             if ".git" not in p.parts and ".venv" not in p.parts}
    for row in table("docs/architecture.md", "## Where do I change X"):
        for path in [t for t in ticked(row["Edit"]) + ticked(row["Tests that pin it down"])
                     if re.fullmatch(r"[\w./-]+(\.py|/)", t)]:
            path = path.rstrip("/")
            assert any(f == path or f.endswith("/" + path) for f in files), \
                f"{row.where}: `{path}` names no file or folder of the repository"


def test_the_presets_table_is_the_presets():
    rows = table(TRAINER, "## Presets", column="Preset")
    assert sorted(ticked(r["Preset"])[0] for r in rows) == sorted(PRESETS)
    for row in rows:
        name = ticked(row["Preset"])[0]
        cfg = parse_config(["--preset", name, "--synthetic", "--master-addr", "node0",
                            "--node-rank", "1" if PRESETS[name].get("nnodes", 1) > 1 else "0"])
        world = cfg.nnodes * (cfg.nproc_per_node or 1)
        batch = cfg.per_process_batch(world)
        nodes, procs = re.match(r"(\d+) x (\d+)", row["Nodes x processes"]).groups()
        peak = cfg.peak_lr(world)
        expected = {
            "Nodes x processes": (int(nodes), int(procs)) == (cfg.nnodes, cfg.nproc_per_node or 1),
            "Per-process batch": value(row["Per-process batch"]) == batch,
            "Global batch": value(row["Global batch"]) == batch * world,
            "Precision": row["Precision"] == cfg.precision,
            "channels_last": row["channels_last"] == ("yes" if cfg.channels_last else "no"),
            "Epochs": value(row["Epochs"]) == cfg.epochs,
            "Schedule": row["Schedule"] == cfg.lr_scheduler,
            "Warm-up (epochs)": value(row["Warm-up (epochs)"]) == cfg.warmup_epochs(world),
            "Peak LR": round(peak, len((row["Peak LR"] + ".").split(".")[1])) == value(
                row["Peak LR"]),  # to the decimals shown
        }
        wrong = [column for column, ok in expected.items() if not ok]
        assert not wrong, f"{row.where}: {name}'s {', '.join(wrong)} differ from PRESETS"
