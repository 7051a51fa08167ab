#!/usr/bin/env bash
# The training lab's acceptance checks, as a new user would run them: a run, the same run
# SIGKILLed after its first checkpoint and resumed (its last val_loss must be equal), --data with a
# new text file, and --data with a missing one. Usage: bash scripts/acceptance_lab.sh [WORKDIR]
set -u
W="${1:-$(mktemp -d)}"; mkdir -p "$W"; cd "$W"; echo "working in $W"
t0=$(date +%s)
sfplus train --tokens 300000 --seed 0 --checkpoint-every 20 --out A --no-progress > A.log 2>&1; echo "A rc=$?"
t1=$(date +%s); echo "A took $((t1-t0)) s"
python - <<'PY'
import json
rows=[json.loads(l) for l in open('A/metrics.jsonl')]
ev=[r for r in rows if 'val_loss' in r]
print('A eval rows', len(ev), 'first', ev[0]['val_loss'], 'last', ev[-1]['val_loss'], 'last<first', ev[-1]['val_loss']<ev[0]['val_loss'])
PY
ls A/*.png
sfplus train --tokens 300000 --seed 0 --checkpoint-every 20 --out B --no-progress > B1.log 2>&1 &
pid=$!
while [ -z "$(ls B/checkpoints 2>/dev/null | grep step_)" ]; do sleep 0.5; done
sleep 1; kill -9 $pid; wait $pid 2>/dev/null; echo "B killed with SIGKILL; checkpoints: $(ls B/checkpoints)"
sfplus train --tokens 300000 --seed 0 --checkpoint-every 20 --out B --resume --no-progress > B2.log 2>&1; echo "B resume rc=$?"
python - <<'PY'
import json
def last(p):
    rows=[json.loads(l) for l in open(p)]
    return [r for r in rows if 'val_loss' in r][-1]
a,b=last('A/metrics.jsonl'),last('B/metrics.jsonl')
print('A last', a['step'], a['val_loss']); print('B last', b['step'], b['val_loss']); print('equal', a['val_loss']==b['val_loss'])
PY
printf 'It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.\n%.0s' {1..400} > some.txt
sfplus train --data some.txt --tokens 20000 --out C --no-progress > C.log 2>&1; echo "some.txt rc=$?"; tail -2 C.log
sfplus train --data missing.txt --out D > D.log 2>&1; echo "missing rc=$?"; cat D.log
