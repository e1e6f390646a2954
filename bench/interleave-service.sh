#!/bin/bash
# The rootful kernel composefs mount against the mount service's mount of the same image, on
# the python start of the benchmark's container image, alternating run by run so that drift in
# the machine's state falls on both alike: the headline's python rows take one sample per run,
# too few to tell the two apart. Prints each side's times (ms), warm then cold, sorted. Needs
# root and the image and basedir the benchmark prepared, e.g.:
#   bench/interleave-service.sh /var/tmp/lazycfs-bench/images/host-usr-*.cfs target/release/lazycfs
set -eu
image=$1 lazycfs=$2
basedir=${BASEDIR:-/var/tmp/lazycfs-bench/objects}
rounds=${ROUNDS:-8}
dir=$(mktemp -d)
mkdir "$dir/erofs" "$dir/kernel" "$dir/service"
cleanup() {
    umount "$dir/service" "$dir/kernel" "$dir/erofs" 2>/dev/null || true
    [ -n "${service:-}" ] && kill "$service" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT
mount -t erofs -o ro "$image" "$dir/erofs"
mount -t overlay overlay -o "ro,metacopy=on,redirect_dir=on,lowerdir=$dir/erofs::$basedir" "$dir/kernel"
"$lazycfs" service --listen "$dir/sock" 2>"$dir/service.log" &
service=$!
for _ in $(seq 100); do [ -S "$dir/sock" ] && break; sleep 0.05; done
"$lazycfs" mount --mode service --service-socket "$dir/sock" "$image" "$dir/service" --basedir "$basedir"
imports='import json, email, http.client, decimal, asyncio, xml.etree.ElementTree, sqlite3, argparse, logging, subprocess, csv, unittest'
python() { chroot "$dir/$1" /usr/bin/python3 -I -B -c "$imports"; }
ms() { local t0 t1; t0=$(date +%s%N); "$@"; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000000 )); }
cold() { sync; echo 3 > /proc/sys/vm/drop_caches; python "$1"; }
python kernel; python service
for how in python cold; do
    for round in $(seq "$rounds"); do
        for side in kernel service; do echo "$how $side $(ms "$how" "$side")"; done
    done
done | sort -k1,1 -k2,2 -k3n | awk '{ k = ($1 == "python" ? "warm" : "cold") " " $2; a[k] = a[k] " " $3 }
    END { for (k in a) print k ":" a[k] }' | sort
