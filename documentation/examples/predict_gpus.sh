#!/bin/bash
# Predict a folder of scans with every GPU of one machine: one `autosr predict` process per GPU, each
# predicting one part (`--num-parts N --part-id K`) into the same output folder; logs in OUT/logs/.
#
#   bash predict_gpus.sh model.zip /data/scans_3T /data/predictions [--uncertainty ...]
#
# GPUS lists the devices (default: every GPU nvidia-smi lists, e.g. GPUS="0 1 2 3"); WORKERS_PER_GPU the
# worker processes of each (default: the CPUs divided among the GPUs, minus the one feeding the GPU).
# Options after the three folders go to `autosr predict` unchanged; AUTOSR runs another autosr. The exit
# code is 0 when every part succeeded. Tested by tests/test_many_machines.py.
set -euo pipefail
MODEL=$1 IN=$2 OUT=$3
shift 3
AUTOSR=${AUTOSR:-autosr}
GPUS=${GPUS:-$(nvidia-smi --query-gpu=index --format=csv,noheader | paste -sd' ')}
read -ra GPU_LIST <<< "$GPUS"
PARTS=${#GPU_LIST[@]}
PER_GPU=$(($(nproc) / PARTS))
WORKERS=${WORKERS_PER_GPU:-$((PER_GPU > 1 ? PER_GPU - 1 : 1))}
mkdir -p "$OUT/logs"
pids=()
for part in "${!GPU_LIST[@]}"; do
    CUDA_VISIBLE_DEVICES=${GPU_LIST[$part]} $AUTOSR predict --model "$MODEL" -i "$IN" -o "$OUT" \
        --num-parts "$PARTS" --part-id "$part" --num-workers "$WORKERS" "$@" > "$OUT/logs/part$part.log" 2>&1 &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
    wait "$pid" || status=1
done
exit $status
