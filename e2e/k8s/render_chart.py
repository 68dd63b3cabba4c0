"""Prints the operator chart's manifests for the given release values, with
the real Helm engine (the same one scripts/check-chart.sh uses).

    python render_chart.py NAMESPACE [KEY=JSON ...]
"""

import json
import os
import sys

import helm_python as helm

CHART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "charts", "shale-operator")


def main():
    namespace = sys.argv[1]
    values = {}
    for arg in sys.argv[2:]:
        key, _, value = arg.partition("=")
        node = values
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = json.loads(value)
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name="shale", namespace=namespace, is_install=True)
    for path, text in sorted(manifests.items()):
        if path.endswith(".yaml") and text.strip():
            print(f"---\n# {path}\n{text}")


if __name__ == "__main__":
    main()
