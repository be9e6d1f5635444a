run() { /usr/bin/time -f "$1 wall %e user %U sys %S" .venv/bin/hetcrf-lite train --dataset $2 --epochs $3 --threads 1 --quiet --eval-runs 1 --out /tmp/s15/run_$1 > /tmp/s15/$1.out 2>&1; tail -1 /tmp/s15/$1.out; }
st() { awk '/^cpu /{print "steal",$9}' /proc/stat; }
uptime; st
run alone dblp 12
st
run pairA dblp 12 & run pairB dblp 12 & wait
st
run mixA dblp 12 & run mixB acm 40 & wait
st
