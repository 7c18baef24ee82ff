#!/usr/bin/env bash
# The nightly job on the embedded default, end to end through real Airflow:
# generate the synthetic world, build feature history, then run the features, training and nightly
# DAGs for RUN_DATE with `airflow dags test`, and print where the outputs are.
set -euo pipefail
ds=${1:?usage: run_nightly.sh RUN_DATE [SCALE]}
scale=${2:-default}

echo "== Airflow home: $AIRFLOW_HOME (SQLite metadata, no examples)"
mkdir -p "$AIRFLOW_HOME"
airflow db migrate > "$AIRFLOW_HOME/db-migrate.log" 2>&1 || { cat "$AIRFLOW_HOME/db-migrate.log"; exit 1; }
airflow pools set nightfeed_training 1 "Nightfeed model training: one at a time" > /dev/null

echo "== Synthetic world ($scale) ending on $ds"
python -m pipelines world --scale "$scale" --end-date "$ds"

echo "== Feature history before $ds"
python -m pipelines features --end "$(date -u -d "$ds - 1 day" +%F)"

for dag in nightfeed_features nightfeed_training nightfeed_nightly; do
  echo "== airflow dags test $dag $ds"
  log="$AIRFLOW_HOME/$dag-$ds.log"
  if ! airflow dags test "$dag" "$ds" > "$log" 2>&1; then
    tail -n 60 "$log"
    echo "!! $dag failed for $ds; full log: $log" >&2
    exit 1
  fi
  grep -E "Marking run .* (successful|failed)|state=" "$log" | tail -n 1 || true
done

echo "== Outputs for $ds"
python -m pipelines outputs --ds "$ds"
