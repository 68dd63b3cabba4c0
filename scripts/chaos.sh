#!/usr/bin/env bash
# Longer chaos soaks: the chaos end-to-end test (3 placement members, 5
# storage nodes, tiny Regions, `shale check` under kill -9, pauses,
# partitions, leader moves and splits) for N minutes per seed, for one seed
# or several in a row. Logs and data of a failed run are kept.
#
#   scripts/chaos.sh --minutes 5 --seed 7            # one 5-minute run
#   scripts/chaos.sh --minutes 5 --seed 1 --seeds 20 # seeds 1..20
#   scripts/chaos.sh --minutes 2 --seed 3 --api 1    # on an API V1 cluster
#   scripts/chaos.sh --placement leader              # hit the placement leader too
#
# By default faults spare the placement leader (a follower is killed
# instead, and pauses and partitions hit followers); `--placement leader`
# aims at it too, and e2e/tests/chaos.rs says what tikv-client 0.4 does
# then. `./scripts/test.sh` runs the same test once, for 100 s.
#
# Network partitions need root and nftables (the script installs nftables);
# otherwise only Raft traffic is cut.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=5
seed=1
seeds=1
api=2
placement=followers
keep="${SHALE_E2E_KEEP_LOGS:-$PWD/chaos-runs}"
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --seeds) seeds="$2"; shift 2 ;;
    --api) api="$2"; shift 2 ;;
    --placement) placement="$2"; shift 2 ;;
    --keep) keep="$2"; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

. scripts/setup.sh
say "Building the servers and the test (debug)"
cargo build --workspace --bins --tests
cargo test --workspace --test chaos --no-run

mkdir -p "$keep"
failed=()
for ((i = 0; i < seeds; i++)); do
  s=$((seed + i))
  say "Chaos seed $s: $minutes minutes, API V$api, placement faults on $placement (logs of a failure under $keep)"
  log="$keep/chaos-seed-$s.log"
  if SHALE_CHAOS_SECONDS=$((minutes * 60)) SHALE_CHAOS_SEED="$s" SHALE_CHAOS_API="$api" \
    SHALE_CHAOS_PLACEMENT="$placement" \
    SHALE_E2E_KEEP_LOGS="$keep" \
    cargo test --workspace --test chaos -- --nocapture >"$log" 2>&1; then
    grep -a -E '^chaos: faults|^chaos: no write|longest time without|^shale check: no anomalies|kept in' "$log" || true
    rm -f "$log"
  else
    grep -a -E '^chaos: faults|^ANOMALY|longest time without|kept in' "$log" || true
    failed+=("$s")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  say "Seeds that failed: ${failed[*]} (output in $keep/chaos-seed-<seed>.log)"
  exit 1
fi
say "All $seeds seeds passed"
