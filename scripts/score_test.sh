# Sourced by the whole-test-split scripts (imdb_full_test.sh, imdb_more_data_cpu.sh): one model
# scored by `ltprune eval` into $OUT/NAME, reused when done. Needs PY, OUT and the EVAL array.
score() {  # NAME MODEL [eval options]
  local name=$1 model=$2
  shift 2
  if [ ! -d "$model" ]; then echo "skip $name: no $model" >&2; return; fi
  [ -f "$OUT/$name/metrics.json" ] || $PY -m ltprune.cli eval --model "$model" "${EVAL[@]}" "$@" --output-dir "$OUT/$name"
}
