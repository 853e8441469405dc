#!/usr/bin/env python3
"""Static checks of the fleetpulse chart, for machines without a helm binary.

It renders nothing. It checks that:
  * every template has balanced `{{` / `}}` pairs and balanced block actions
    (if/with/range/define ... end);
  * every `include "name"` / `template "name"` names a `define` in templates/;
  * every `.Values.a.b` path used in a template exists in values.yaml
    (also `$.Values...` and paths through `$p := .Values.x` style variables);
  * Chart.yaml has the required fields.
When the `helm_sdkpy` package is importable (Python >= 3.12), it also runs its
lint on the chart with example values.

Exit status 0 when everything passes; failures are printed one per line.
Usage: python3 helm/fleetpulse/tests/render_check.py [chart_dir]
"""

import os
import re
import sys

try:
    import yaml  # PyYAML; comes with yamllint
except ImportError:  # pragma: no cover
    print("render_check: PyYAML is required (pip install pyyaml)", file=sys.stderr)
    sys.exit(2)

CHART = os.path.abspath(
    sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
)

ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)
OPENERS = ("if", "with", "range", "define", "block")
VALUES_PATH = re.compile(r"(?<![\w$])\$?\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
VAR_ASSIGN = re.compile(r"(\$[A-Za-z_]\w*)\s*:?=\s*\$?\.Values((?:\.[A-Za-z_]\w*)+)\s*$")
VAR_USE = re.compile(r"(\$[A-Za-z_]\w*)((?:\.[A-Za-z_]\w*)+)")
INCLUDE = re.compile(r"\b(?:include|template)\s+\"([^\"]+)\"")
DEFINE = re.compile(r"^define\s+\"([^\"]+)\"")


def strip_comments(text):
    return re.sub(r"\{\{-?\s*/\*.*?\*/\s*-?\}\}", "", text, flags=re.S)


def check_balance(name, text, errors):
    if text.count("{{") != text.count("}}"):
        errors.append(f"{name}: {text.count('{{')} '{{{{' but {text.count('}}')} '}}}}'")
    stack = []
    for m in ACTION.finditer(text):
        body = m.group(1)
        word = body.split(None, 1)[0] if body.split() else ""
        line = text.count("\n", 0, m.start()) + 1
        if word in OPENERS:
            stack.append((word, line))
        elif word == "end":
            if not stack:
                errors.append(f"{name}:{line}: `end` without an open block")
            else:
                stack.pop()
        elif word == "else" and not stack:
            errors.append(f"{name}:{line}: `else` outside a block")
    for word, line in stack:
        errors.append(f"{name}:{line}: `{word}` is never closed with `end`")


def path_exists(values, path):
    node = values
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def main():
    errors = []
    tpl_dir = os.path.join(CHART, "templates")
    with open(os.path.join(CHART, "values.yaml")) as f:
        values = yaml.safe_load(f) or {}
    with open(os.path.join(CHART, "Chart.yaml")) as f:
        chart = yaml.safe_load(f) or {}
    for key in ("apiVersion", "name", "version", "appVersion"):
        if key not in chart:
            errors.append(f"Chart.yaml: missing {key}")
    if chart.get("apiVersion") != "v2":
        errors.append("Chart.yaml: apiVersion must be v2")

    sources = {}
    for fname in sorted(os.listdir(tpl_dir)):
        if fname.endswith((".yaml", ".tpl", ".txt")):
            with open(os.path.join(tpl_dir, fname)) as f:
                sources[fname] = f.read()

    defines = set()
    for fname, text in sources.items():
        for m in ACTION.finditer(strip_comments(text)):
            d = DEFINE.match(m.group(1))
            if d:
                defines.add(d.group(1))

    used_paths = 0
    for fname, text in sources.items():
        text = strip_comments(text)
        check_balance(fname, text, errors)
        variables = {}
        for m in ACTION.finditer(text):
            body = m.group(1)
            line = text.count("\n", 0, m.start()) + 1
            for inc in INCLUDE.findall(body):
                if inc not in defines:
                    errors.append(f"{fname}:{line}: include of undefined template {inc!r}")
            for p in VALUES_PATH.findall(body):
                used_paths += 1
                path = p.strip(".").split(".")
                if not path_exists(values, path):
                    errors.append(f"{fname}:{line}: .Values.{'.'.join(path)} is not in values.yaml")
            a = VAR_ASSIGN.match(body)
            if a:
                variables[a.group(1)] = a.group(2).strip(".").split(".")
            for var, rest in VAR_USE.findall(body):
                if var in variables and not body.lstrip().startswith(var):
                    path = variables[var] + rest.strip(".").split(".")
                    used_paths += 1
                    if not path_exists(values, path):
                        errors.append(f"{fname}:{line}: {var}{rest} (.Values.{'.'.join(path)}) is not in values.yaml")

    lint = run_sdk_lint(errors)
    for e in errors:
        print(f"FAIL {e}")
    print(
        f"render_check: {len(sources)} templates, {len(defines)} defines, "
        f"{used_paths} values paths checked; helm lint: {lint}"
    )
    print(f"{0 if errors else 1} passed, {1 if errors else 0} failed")
    return 1 if errors else 0


def deep_merge(base, over):
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_merge(base[k], v)
        else:
            base[k] = v
    return base


def run_sdk_lint(errors):
    """Lint with helm-sdkpy (Helm's Go library) when it is installed.

    Its Lint takes no values, so the chart is linted twice: as shipped
    (required values missing: Helm's lint mode reports those as warnings)
    and as a copy whose values.yaml has tests/example-values.yaml merged in.
    Helm lint renders every template and parses the output as YAML; any
    message of severity error fails the check.
    """
    try:
        from helm_sdkpy import Configuration, Lint
    except ImportError:
        return "skipped (helm_sdkpy not installed; needs Python >= 3.12)"
    import asyncio
    import shutil
    import tempfile

    def lint(path, label):
        try:
            result = asyncio.run(Lint(Configuration()).run(path))
        except Exception as e:  # the library raises its own error types
            errors.append(f"helm lint ({label}): {e}")
            return
        for msg in result.get("Messages") or []:
            if msg.get("Severity", 0) >= 3:
                errors.append(f"helm lint ({label}): {msg.get('Path')}: {msg.get('Err')}")
        for err in result.get("Errors") or []:
            errors.append(f"helm lint ({label}): {err}")

    lint(CHART, "default values")
    example = os.path.join(os.path.dirname(__file__), "example-values.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "fleetpulse")
        shutil.copytree(CHART, copy, ignore=shutil.ignore_patterns("tests"))
        with open(os.path.join(copy, "values.yaml")) as f:
            values = yaml.safe_load(f)
        with open(example) as f:
            deep_merge(values, yaml.safe_load(f))
        with open(os.path.join(copy, "values.yaml"), "w") as f:
            yaml.safe_dump(values, f)
        lint(copy, "example values")
    return "ran (default and example values)"


if __name__ == "__main__":
    sys.exit(main())
