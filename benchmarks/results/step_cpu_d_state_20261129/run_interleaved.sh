#!/bin/bash
# interleaved before/after step benchmark; before = /work/main (f8ca7ce, format 1), after = /work/wt-zy
PY=/tmp/dev-venv/bin/python
for i in 1 2 3; do
  for which in before after; do
    if [ $which = before ]; then dir=/work/main; else dir=/work/wt-zy; fi
    ts=$(date -u +%Y%m%dT%H%M%S)
    echo "== run $i $which $ts $(uptime)" >> /tmp/zy_bench/log.txt
    (cd $dir && PYTHONPATH=$dir/src $PY benchmarks/optimizer_step.py --sizes 15m 1m --methods adamw-fused sfplus-default --repeats 20 --no-memory --out /tmp/zy_bench/${which}_${i}_${ts}.json) >> /tmp/zy_bench/log.txt 2>&1
    echo "== end $i $which $(date -u +%H:%M:%S) $(uptime)" >> /tmp/zy_bench/log.txt
  done
done
echo ALLDONE >> /tmp/zy_bench/log.txt
