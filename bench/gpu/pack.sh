#!/usr/bin/env bash
# pack.sh STAGE OUT NAME PART_SIZE ZSTD_LEVEL
#
# Packs the folder STAGE as OUT/NAME.tar.zst split into parts of PART_SIZE
# (split's sizes: 56M), so that each part travels on its own, and writes
# OUT/NAME.parts.sha256 (the parts) and OUT/NAME.sha256 (the whole archive)
# for run.sh to check before it unpacks. `make gpu-bundle` runs it; so does
# the dry run's test, on the CPU library.
set -euo pipefail
if [ $# -ne 5 ]; then
	echo "usage: $0 STAGE OUT NAME PART_SIZE ZSTD_LEVEL" >&2
	exit 2
fi
stage=$1 out=$2 name=$3 size=$4 level=$5
command -v zstd >/dev/null || { echo "pack.sh: zstd is needed (apt-get install zstd)" >&2; exit 1; }
mkdir -p "$out"
rm -f "$out/$name".tar.zst* "$out/$name".sha256 "$out/$name".parts.sha256
tar -C "$stage" -cf - . | zstd -q -T0 "-$level" -o "$out/$name.tar.zst"
(cd "$out" && sha256sum "$name.tar.zst" >"$name.sha256")
split -b "$size" -d -a 2 "$out/$name.tar.zst" "$out/$name.tar.zst.part-"
rm "$out/$name.tar.zst"
(cd "$out" && sha256sum "$name".tar.zst.part-* >"$name.parts.sha256")
ls -l "$out/$name".tar.zst.part-*
