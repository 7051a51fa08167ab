#!/bin/bash
# Five rounds on a quiet machine, each a run of the code before the compiled schedule (6080282, a worktree at
# $BEFORE) then one of main after the merge ($AFTER), so both see the same load. Usage: run_quiet.sh FOLDER
BEFORE=${BEFORE:-/work/wt-before}; AFTER=${AFTER:-/work/main}
R=$AFTER/benchmarks/results/step_cpu_scalar_20261129/$1
mkdir -p $R
for i in 1 2 3 4 5; do
  for which in before after; do
    if [ $which = before ]; then dir=$BEFORE; else dir=$AFTER; fi
    { echo "# $(date -u +%H:%M:%S) $(uptime)"; cd $dir && OMP_NUM_THREADS=1 PYTHONPATH=$dir/src /tmp/dev-venv/bin/python benchmarks/optimizer_step.py --sizes 15m 1m --methods adamw-fused sf-adamw sfplus-default --repeats 20 --no-memory --out $R/${which}_run$i.json 2>&1 | grep -v "^W1129\|^USDT"; echo "# end $(date -u +%H:%M:%S) $(uptime)"; } > $R/${which}_run$i.txt
  done
done
echo done > $R/.done
