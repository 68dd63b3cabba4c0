#!/usr/bin/env bash
# Renders and lints the operator's Helm chart with the real Helm engine and
# validates every rendered object, the CRD and the example TiKVCluster
# against the Kubernetes schemas. Needs python3 with venv; installs the
# pinned tools into a virtualenv under ~/.cache on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${SHALE_CHART_VENV:-$HOME/.cache/shale-chart-venv}"
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ] || ! cmp -s scripts/chart-requirements.txt "$stamp"; then
  echo "==> Installing chart tools into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/chart-requirements.txt
  cp scripts/chart-requirements.txt "$stamp"
fi
exec "$venv/bin/python" scripts/check_chart.py "$@"
