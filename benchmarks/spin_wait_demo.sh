#!/usr/bin/env bash
# The demo's training speed (steps/s over its first 70 s, from its own progress lines) on a quiet and a loaded
# machine (two busy loops on the two cores), with OpenMP's default wait ("", as before vledge set one) and PASSIVE.
cd "$(dirname "$0")/.."
burn() { for i in 1 2; do (timeout $1 sh -c 'while :; do :; done' &) ; done; }
one() {  # $1 label, $2 OMP_WAIT_POLICY value ("" = the OpenMP default, as before), $3 load (0/1)
  [ "$3" = 1 ] && burn 95
  sleep 1
  OMP_WAIT_POLICY="$2" timeout -s INT 85 .venv/bin/vledge train --data fashion-mnist --out /tmp/spin-$1 --overwrite > /tmp/spin-$1.log 2>&1
  echo "$1: $(grep 'steps/s' /tmp/spin-$1.log | tail -1)"
  sleep 12
}
one quiet-default "" 0
one quiet-passive PASSIVE 0
one loaded-default "" 1
one loaded-passive PASSIVE 1
