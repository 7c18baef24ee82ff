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

# One line per task as it starts and ends, with the seconds since the DAG run began.
progress() {
  local started=$SECONDS
  grep --line-buffered -oE '\[DAG TEST\] (starting|end task) task_id=[^ ]+ map_index=-?[0-9]+' |
    while read -r _ _ what rest; do
      [[ $what == end ]] && rest=${rest#task }
      task=${rest%% *} index=${rest##*=}
      task=${task#task_id=}
      [[ $index == -1 ]] || task="$task[$index]"
      printf '   %4ds  %-28s %s\n' $((SECONDS - started)) "$task" "$([[ $what == end ]] && echo done || echo started)"
    done
}

for dag in nightfeed_features nightfeed_training nightfeed_nightly; do
  echo "== airflow dags test $dag $ds"
  log="$AIRFLOW_HOME/$dag-$ds.log"
  : > "$log" # tail fails when its file does not exist yet
  airflow dags test "$dag" "$ds" > "$log" 2>&1 &
  pid=$!
  tail -n +1 -f --pid="$pid" "$log" | progress
  if ! wait "$pid"; then
    tail -n 60 "$log"
    echo "!! $dag failed for $ds; full log: $log" >&2
    exit 1
  fi
  echo "   run succeeded; full log: $log"
done

echo "== Outputs for $ds"
python -m pipelines outputs --ds "$ds"
