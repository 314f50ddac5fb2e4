#!/usr/bin/env bash
# Checks that two prompttune binaries compute the same numbers, bit for bit: each runs the same
# grids on the built-in Fashion-MNIST with the committed demonstration model (every method family
# through both towers' forwards and backwards, neural-collapse measures after every epoch) in fp32,
# bf16 (where the CPU has it) and fp16-reference, and every file they write that holds numbers
# (features, prompts, initial parameters, histories, records, results) must be byte-identical.
#
#   bash reference/compare_builds.sh OLD/prompttune NEW/prompttune [WORK_DIR]
#
# Used to show that a refactoring of the tensor core leaves every CPU result unchanged.
set -euo pipefail
old=$(realpath "$1"); new=$(realpath "$2")
work=$(realpath -m "${3:-$(mktemp -d)}")
mkdir -p "$work"
cd "$(dirname "$0")/.."  # the demonstration model's path is relative to the repository
cat > "$work/fp32.yaml" <<'PLAN'
protocol: few-shot
datasets: [fashion_mnist]
methods: [zeroshot, coop, coop-csc, kgcoop, dekg, cocoop, coop+npt, coop+cpt, dapt, vpt, maple, promptsrc]
shots: [2]
seeds: [1]
epochs: 2
nc_every: 1
PLAN
cat > "$work/reduced.yaml" <<'PLAN'
protocol: few-shot
datasets: [fashion_mnist]
methods: [zeroshot, coop, dapt, maple]
shots: [2]
seeds: [2]
epochs: 2
nc_every: 1
PLAN
runs=("fp32 fp32.yaml fp32" "fp16 reduced.yaml fp16-reference")
if grep -qE 'avx512_bf16|amx_bf16' /proc/cpuinfo; then runs+=("bf16 reduced.yaml bf16"); fi
status=0
for spec in "${runs[@]}"; do
    read -r name plan precision <<<"$spec"
    for side in old new; do
        bin=$old; [ "$side" = new ] && bin=$new
        rm -rf "$work/$name-$side"
        "$bin" run --plan "$work/$plan" --precision "$precision" --out "$work/$name-$side" > "$work/$name-$side.log" 2>&1 \
            || { echo "$name: $side binary failed (log: $work/$name-$side.log)"; exit 2; }
    done
    files=$(cd "$work/$name-old" && find features runs -type f | sort; echo results.csv)
    if [ "$files" != "$(cd "$work/$name-new" && find features runs -type f | sort; echo results.csv)" ]; then
        echo "$name: the two builds wrote different files"; status=1; continue
    fi
    differ=0
    while read -r f; do
        a="$work/$name-old/$f" b="$work/$name-new/$f"
        if [ "$(basename "$f")" = record.json ]; then
            # A record's clock readings (when it finished, how long each phase took) are not results.
            python3 -c 'import json,sys
strip=lambda p: {k: v for k, v in json.load(open(p)).items() if k not in ("finished_at", "started_at", "timings")}
sys.exit(0 if strip(sys.argv[1]) == strip(sys.argv[2]) else 1)' "$a" "$b" || { echo "$name: $f differs"; differ=1; }
        else
            cmp -s "$a" "$b" || { echo "$name: $f differs"; differ=1; }
        fi
    done <<<"$files"
    count=$(wc -l <<<"$files")
    if [ $differ = 0 ]; then echo "$name ($precision): $count files identical"; else status=1; fi
done
exit $status
