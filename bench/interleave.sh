#!/bin/bash
# Two (or more) lazycfs binaries on the same warm walk, alternating run by run so that drift
# in the machine's state (page cache, other load) falls on all of them alike. Prints the wall
# time of each walk and the server's CPU time (user, system) it took. Needs root and an image
# and basedir the benchmark prepared, e.g.:
#   bench/interleave.sh xattr /var/tmp/lazycfs-bench/images/cs9-developer-*.cfs OLD_BIN NEW_BIN
# WALK is `walk` (find -printf of the stat fields) or `xattr` (getfattr -R -d -m -).
set -eu
walk=$1 image=$2; shift 2
basedir=${BASEDIR:-/var/tmp/lazycfs-bench/objects}
rounds=${ROUNDS:-5}
mnt=$(mktemp -d)
trap 'umount "$mnt" 2>/dev/null; rmdir "$mnt"' EXIT
run_walk() {
    case $walk in
        walk) find "$mnt" -printf '%p %m %s %n %U %G %T@\n' >/dev/null ;;
        xattr) getfattr -R -d -m - "$mnt" >/dev/null 2>&1 || true ;;
    esac
}
ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
for round in $(seq "$rounds"); do
    for bin in "$@"; do
        "$bin" mount --mode direct "$image" "$mnt" --basedir "$basedir"
        pid=$(pgrep -n -f "lazycfs.* $mnt")
        run_walk # warm the kernel's caches
        read -r u0 s0 < <(ticks "$pid")
        t0=$(date +%s%N); run_walk; t1=$(date +%s%N)
        read -r u1 s1 < <(ticks "$pid")
        hz=$(getconf CLK_TCK)
        echo "round $round $bin wall_ms=$(( (t1 - t0) / 1000000 )) server_user_ms=$(( (u1 - u0) * 1000 / hz )) server_sys_ms=$(( (s1 - s0) * 1000 / hz ))"
        umount "$mnt"
        sleep 0.5
    done
done
