#!/usr/bin/python3
"""The monitoring test's helpers, against a real Prometheus that scrapes a
real agent's textfile through node exporter (tests/monitoring/run.sh):

  wait URL QUERY SECONDS        until QUERY returns a series (or exit 1)
  capture URL NAME DIR QUERY SECONDS
                                every broadcast-agent, node_textfile and up
                                series, at the first moment QUERY returns a
                                series, into DIR/NAME.json
  tests TEMPLATE DIR RULES OUT  the promtool test file: TEMPLATE's tests with
                                their input series built from the captures
                                (see `build_series`)
  dashboard URL JSON CAPTURE    evaluates every query of the Grafana
                                dashboard JSON at the moment of a capture;
                                fails on an error or a query that returns no
                                series

Only the standard library and python3-yaml (Debian).
"""

import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

# What a capture holds: the agent's series, node exporter's textfile
# collector's and the scrape's `up`.
CAPTURED = '{__name__=~"broadcast_agent_.+|node_textfile_.+|up"}'
# The file's age in the rules comes from this series: in a promtool test it
# follows the evaluation time while the agent runs.
MTIME = "node_textfile_mtime_seconds"
# Timeline stretches that are no capture: the agent stopped (node exporter
# keeps serving its last file, whose mtime stands still) and the host gone
# (`up` is 0, every other series ends).
STOPPED = "stopped"
UNREACHABLE = "unreachable"


class Failure(Exception):
    """What the test found wrong, in one line."""


def query(url, expr, at=None):
    """The instant vector `expr` evaluates to at `at` (Unix time; None:
    now), as Prometheus's API gives it."""
    params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
    address = f"{url}/api/v1/query?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(address, timeout=10) as reply:
            body = json.load(reply)
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")
        raise Failure(f"{expr!r}: HTTP {e.code}: {detail}") from e
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise Failure(f"{expr!r}: {e}") from e
    if body.get("status") != "success":
        raise Failure(f"{expr!r}: {body.get('errorType')}: {body.get('error')}")
    return body["data"]["result"]


def wait(url, expr, seconds):
    """Polls until `expr` returns a series."""
    deadline = time.monotonic() + float(seconds)
    while True:
        try:
            if query(url, expr):
                return
        except Failure:
            pass  # Prometheus still starting
        if time.monotonic() > deadline:
            raise Failure(f"no series for {expr} within {seconds} s")
        time.sleep(0.25)


def capture(url, name, directory, condition, seconds):
    """Saves every captured series with its value, as they were at a moment
    `condition` held: both are evaluated at the same time, one scrape
    interval back, so that no scrape lands between them."""
    deadline = time.monotonic() + float(seconds)
    while True:
        at = time.time() - 2
        try:
            if query(url, condition, at):
                break
        except Failure:
            pass  # Prometheus still starting
        if time.monotonic() > deadline:
            raise Failure(f"capture {name}: no series for {condition} within {seconds} s")
        time.sleep(0.25)
    series = [{"metric": s["metric"], "value": s["value"][1]} for s in query(url, CAPTURED, at)]
    with open(f"{directory}/{name}.json", "w") as out:
        json.dump({"at": at, "series": series}, out, indent=1)
    print(f"captured {name}: {len(series)} series")


# ---------------------------------------------------------------- promtool


def key(metric):
    """A series' identity: its name and labels, sorted."""
    return tuple(sorted(metric.items()))


def selector(metric):
    """`name{label="value",...}` as promtool's input_series takes it."""
    labels = ",".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    return f"{metric['__name__']}{{{labels}}}"


def parse_selector(text):
    """`name{a="b",...}` into a label dict (with __name__)."""
    match = re.fullmatch(r'\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*(?:\{(.*)\})?\s*', text)
    if not match:
        raise Failure(f"input series {text!r}: not name{{labels}}")
    metric = {"__name__": match.group(1)}
    for label, value in re.findall(r'([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"([^"]*)"', match.group(2) or ""):
        metric[label] = value
    return metric


def load_captures(directory, timeline):
    """The captures a timeline names, by name: {series key: value}."""
    captures = {}
    for name, _ in timeline:
        if name in (STOPPED, UNREACHABLE) or name in captures:
            continue
        try:
            with open(f"{directory}/{name}.json") as f:
                captures[name] = {key(s["metric"]): s["value"] for s in json.load(f)["series"]}
        except OSError as e:
            raise Failure(f"timeline names capture {name!r}, which the run did not take: {e}") from e
    return captures


def build_series(timeline, captures, step_s):
    """Each series' values along the timeline, one per step: `[capture,
    steps]` stretches take the capture's values (a series it lacks ends:
    `stale`), `stopped` holds the values before it, `unreachable` ends
    every series but `up`, which is 0. The textfile's mtime follows the
    time while a capture runs."""
    every = set()
    for values in captures.values():
        every.update(values)
    series = {k: [] for k in every}
    t = 0
    for name, steps in timeline:
        for _ in range(int(steps)):
            for k, values in series.items():
                values.append(value_at(k, name, captures, values, t))
            t += step_s
    return series


def value_at(k, stretch, captures, before, t):
    """One series' value at time `t` (s) in a timeline stretch."""
    last = before[-1] if before else "stale"
    if stretch == STOPPED:
        return last
    if stretch == UNREACHABLE:
        return "0" if dict(k)["__name__"] == "up" else "stale"
    value = captures[stretch].get(k)
    if value is None:
        return "stale"
    if dict(k)["__name__"] == MTIME:
        return str(t)
    return value


def compact(values):
    """promtool's expanding notation for a list of values: runs as `vxN`;
    a run of `stale` as one stale marker and then no samples (`_`), as a
    series that ends in a real Prometheus."""
    out = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        if values[i] == "stale":
            out.append("stale" + (f" _x{j - i}" if j > i else ""))
        else:
            out.append(values[i] if j == i else f"{values[i]}x{j - i}")
        i = j + 1
    return " ".join(out)


def apply_overrides(series, overrides):
    """Each override names one captured series by name and some of its
    labels, and replaces its values; one that matches none (a renamed
    metric or label) or several is an error."""
    for override in overrides or []:
        wanted = parse_selector(override["series"])
        matches = [k for k in series if wanted.items() <= dict(k).items()]
        if len(matches) != 1:
            found = "none" if not matches else ", ".join(selector(dict(k)) for k in matches)
            raise Failure(f"input series {override['series']}: must match one captured series, matches {found}")
        series[matches[0]] = override["values"]


def promtool_tests(template, directory, rules, out):
    """Writes the promtool test file (JSON, which YAML reads)."""
    with open(template) as f:
        spec = yaml.safe_load(f)
    spec["rule_files"] = [rules]
    for test in spec["tests"]:
        timeline = test.pop("timeline")
        step_s = duration_s(test.get("interval", "1m"))
        series = build_series(timeline, load_captures(directory, timeline), step_s)
        series = {k: compact(v) for k, v in series.items()}
        try:
            apply_overrides(series, test.get("input_series"))
        except Failure as e:
            raise Failure(f"test {test['name']!r}: {e}") from e
        test["input_series"] = [{"series": selector(dict(k)), "values": v} for k, v in sorted(series.items())]
    with open(out, "w") as f:
        json.dump(spec, f, indent=1)
    print(f"wrote {out}: {len(spec['tests'])} tests")


def duration_s(text):
    """A Prometheus duration of one unit (`30s`, `1m`, `2h`) in seconds."""
    match = re.fullmatch(r"(\d+)([smh])", str(text))
    if not match:
        raise Failure(f"duration {text!r}: expected e.g. 30s, 1m")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]


# ---------------------------------------------------------------- dashboard

# What Grafana puts for its own variables, for the evaluation.
BUILTIN = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m", "__range_s": "300"}
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def substitute(expr, variables):
    """`expr` with every $variable replaced; an unknown one is an error."""

    def one(match):
        name = next(g for g in match.groups() if g)
        if name not in variables:
            raise Failure(f"{expr!r}: unknown variable ${name}")
        return variables[name]

    return VARIABLE.sub(one, expr)


def dashboard_queries(board):
    """(where, expr, label) of every panel target, rows' panels included,
    once per label its legend shows (`{{label}}`), and of every query
    variable (label_values(expr, label) is Grafana's): the series the expr
    returns must carry that label."""
    panels = list(board.get("panels", []))
    for panel in list(panels):
        panels.extend(panel.get("panels", []))
    for panel in panels:
        for target in panel.get("targets", []):
            if "expr" in target:
                where = f"panel {panel.get('title')!r} ({target.get('refId')})"
                for label in LEGEND_LABEL.findall(target.get("legendFormat", "")) or [None]:
                    yield where, target["expr"], label
    for var in board.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            text = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            match = re.fullmatch(r"\s*label_values\((.+),\s*(\w+)\)\s*", text)
            expr, label = (match.group(1), match.group(2)) if match else (text, None)
            yield f"variable ${var['name']}", expr, label


def check_dashboard(url, path, capture_file):
    """Evaluates every query at the moment of a capture; prints each and
    fails at the end if any is wrong."""
    with open(path) as f:
        board = json.load(f)
    with open(capture_file) as f:
        at = json.load(f)["at"]
    variables = dict(BUILTIN)
    for var in board.get("templating", {}).get("list", []):
        # The test's Prometheus holds one agent: `.+` selects it whatever
        # the variable (a datasource variable does not reach the query).
        variables[var["name"]] = ".+"
    wrong = 0
    count = 0
    for where, expr, label in dashboard_queries(board):
        count += 1
        try:
            result = query(url, substitute(expr, variables), at)
            if not result:
                raise Failure("no series")
            if label and not all(label in s["metric"] for s in result):
                raise Failure(f"series without label {label}")
            shown = f" {{{{{label}}}}}" if label else ""
            print(f"ok   {where}{shown}: {len(result)} series")
        except Failure as e:
            wrong += 1
            print(f"FAIL {where}: {expr}: {e}")
    if count == 0:
        raise Failure(f"{path}: no queries found")
    if wrong:
        raise Failure(f"{wrong} of {count} dashboard queries failed")
    print(f"dashboard: all {count} queries return series")


def main(argv):
    commands = {
        "wait": (wait, 3),
        "capture": (capture, 5),
        "tests": (promtool_tests, 4),
        "dashboard": (check_dashboard, 3),
    }
    if len(argv) < 2 or argv[1] not in commands or len(argv) - 2 != commands[argv[1]][1]:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        commands[argv[1]][0](*argv[2:])
    except Failure as e:
        print(f"monitoring.py {argv[1]}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
