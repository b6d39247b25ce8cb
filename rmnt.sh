#!/bin/bash
# usage: rmnt.sh REPO MNT TREEPATH
export RESTIC_PASSWORD=pw RESTIC_REPOSITORY=$1; M=$2
mkdir -p $M
t0=$(date +%s.%N)
restic mount $M > $M.log 2>&1 &
pid=$!
while [ ! -d $M/snapshots/latest ]; do sleep 0.05; done
t1=$(date +%s.%N)
n=$(find $M/snapshots/latest$3/ | wc -l)
t2=$(date +%s.%N)
hwm=$(grep VmHWM /proc/$pid/status)
fusermount3 -u $M; wait $pid
echo "restic entries $n mount $(echo "$t1-$t0"|bc) s, find $(echo "$t2-$t1"|bc) s, total $(echo "$t2-$t0"|bc) s, $hwm"
