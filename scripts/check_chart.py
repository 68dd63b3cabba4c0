"""Checks the operator's Helm chart (run through scripts/check-chart.sh).

- lints the chart with Helm's own linter (strict: warnings fail),
- renders it with its defaults and with other values sets,
- validates every rendered object and the CRD against the Kubernetes 1.37
  OpenAPI schemas (strict: unknown fields fail),
- validates the example TiKVClusters against the CRD's own schema,
- checks that values.schema.json rejects bad values.

Exits non-zero with every problem listed.
"""

import glob
import os
import sys

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHART = os.path.join(ROOT, "charts", "shale-operator")
K8S_VERSION = "1.37.0"

VALUE_SETS = {
    "defaults": {},
    "one namespace": {"watchNamespace": "shale-db"},
    "no leader election": {"leaderElection": {"enabled": False}, "replicaCount": 3},
    "existing service account": {
        "serviceAccount": {"create": False, "name": "ops"},
        "metrics": {"service": {"enabled": False}},
        "clusterImage": {"repository": "registry.example/shale"},
        "image": {"repository": "registry.example/shale", "tag": "v9", "pullPolicy": "Always"},
    },
}

BAD_VALUES = {
    "replicaCount 0": {"replicaCount": 0},
    "unknown key": {"replicas": 2},
    "pull policy": {"image": {"repository": "shale", "pullPolicy": "Sometimes"}},
}

problems = []


def fail(message):
    problems.append(message)
    print(f"FAIL: {message}")


def documents(text):
    return [d for d in yaml.safe_load_all(text) if d]


def validate_k8s(obj, where):
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        fail(f"{where}: {name}: {e.message} at {'.'.join(str(p) for p in e.path)}")
    except Exception as e:  # noqa: BLE001 - any other failure is a problem too
        fail(f"{where}: {name}: {e}")


def lint():
    report = helm.lint(CHART, strict=True, kube_version="v1.37.0")
    for message in report.get("messages", []):
        severity = message.get("severity", 0)
        print(f"  lint [{severity}] {message.get('path')}: {message.get('error')}")
        if severity >= 2:
            fail(f"helm lint: {message.get('path')}: {message.get('error')}")
    for error in report.get("errors") or []:
        fail(f"helm lint: {error}")
    print(f"helm lint: {report.get('total_charts_linted')} chart(s) linted")


def render_all(chart):
    kinds_by_set = {}
    for label, values in VALUE_SETS.items():
        try:
            manifests = chart.render(values, name="shale", namespace="shale-system", is_install=True)
        except Exception as e:  # noqa: BLE001
            fail(f"render ({label}): {e}")
            continue
        kinds = []
        for path, text in sorted(manifests.items()):
            if path.endswith("NOTES.txt"):
                if "kubectl apply -f examples/basic.yaml" not in text:
                    fail(f"{label}: NOTES.txt does not say how to create a cluster")
                continue
            for obj in documents(text):
                kinds.append(obj["kind"])
                validate_k8s(obj, f"{label}: {path}")
        kinds_by_set[label] = sorted(kinds)
        print(f"rendered ({label}): {', '.join(sorted(kinds))}")
    return kinds_by_set


def check_rendered_shape(kinds_by_set):
    defaults = kinds_by_set.get("defaults", [])
    for kind in ["ClusterRole", "ClusterRoleBinding", "Deployment", "Role", "RoleBinding",
                 "Service", "ServiceAccount"]:
        if kind not in defaults:
            fail(f"defaults: no {kind} rendered")
    one_ns = kinds_by_set.get("one namespace", [])
    if "ClusterRole" in one_ns or one_ns.count("Role") != 2:
        fail(f"one namespace: expected two Roles and no ClusterRole, got {one_ns}")
    if "Role" in kinds_by_set.get("no leader election", []):
        fail("no leader election: the Lease Role is still rendered")


def crds(chart):
    found = chart.crds
    if not found:
        fail("the chart ships no CRD")
    schemas = {}
    for crd in found:
        for obj in documents(crd["data"]):
            validate_k8s(obj, f"crd {crd['filename']}")
            for version in obj["spec"]["versions"]:
                schemas[(obj["spec"]["group"], version["name"], obj["spec"]["names"]["kind"])] = (
                    version["schema"]["openAPIV3Schema"]
                )
    print(f"CRDs: {', '.join(f'{k[2]}.{k[0]}/{k[1]}' for k in schemas)}")
    return schemas


def examples(schemas):
    paths = sorted(glob.glob(os.path.join(ROOT, "examples", "*.yaml")))
    if not paths:
        fail("no example manifests under examples/")
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for obj in documents(f.read()):
                group, version = obj["apiVersion"].split("/")
                schema = schemas.get((group, version, obj["kind"]))
                if schema is None:
                    fail(f"{path}: no CRD for {obj['apiVersion']} {obj['kind']}")
                    continue
                errors = list(jsonschema.Draft7Validator(schema).iter_errors(obj))
                for error in errors:
                    fail(f"{path}: {error.message} at {'.'.join(str(p) for p in error.path)}")
                if not errors:
                    print(f"example {os.path.relpath(path, ROOT)}: valid {obj['kind']}")


def values_schema(chart):
    chart.validate_schema({})
    for label, values in BAD_VALUES.items():
        try:
            chart.validate_schema(values)
        except Exception:  # noqa: BLE001 - rejection is what we want
            continue
        fail(f"values.schema.json accepts bad values ({label})")
    print("values.schema.json rejects bad values")


def main():
    lint()
    with helm.Chart.load(CHART) as chart:
        check_rendered_shape(render_all(chart))
        schemas = crds(chart)
        examples(schemas)
        values_schema(chart)
    if problems:
        print(f"\nchart check: {len(problems)} problem(s)")
        return 1
    print("\nchart check: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
