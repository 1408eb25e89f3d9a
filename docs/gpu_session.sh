#!/usr/bin/env bash
# One call on a lent GPU (see docs/training.md): train for the time the call has, then run the GPU
# benches on the result. Run from the repository root on the device, with runs/pack and .whl (the
# constriction and safetensors wheels for the device's Python) carried:
#
#     VAECODEC_COMMIT=<commit sent> bash docs/gpu_session.sh TOTAL_S BENCH_S [RUN_DIR]
#
# (the device's copy of .git can be stale, so the bench headers take the commit from there).
# TOTAL_S is the whole script's budget, BENCH_S the part kept for the benches. Training is calibrated
# first (CALIB steps, inside the learning-rate warm-up, where the schedule's total does not matter
# yet), then resumed with --steps set so that the cosine decay ends when the time does. Everything
# worth keeping goes to $OUT: the float16 slim copy of the weights, and results.tar with the logs and
# the bench results.
# EXTRA (appended to the training flags, so it wins) and CALIB exist for a dry run on a CPU.
set -uo pipefail
total=${1:?TOTAL_S}; bench=${2:?BENCH_S}; run=${3:-runs/gpu}; calib=${CALIB:-300}
start=$(date +%s)
left() { echo $((total - ($(date +%s) - start))); }
out=${OUT:?set OUT to a folder for the results}
# At most 8 files come back from $OUT (2026-11-26: the CSV logs and the effort bench were left out),
# so on exit everything but the slim copy's parts goes into one results.tar.
bundle() { (cd "$out" && find . -type f ! -name 'slim.pt*' ! -name results.tar -printf '%P\n' \
    | tar -cf results.tar --remove-files -T - && find . -mindepth 1 -type d -empty -delete); }
trap bundle EXIT

if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "import torch; print(torch.__version__)"; } \
    > "$out/machine.txt" 2>&1

flags=(--run-dir "$run" --data runs/pack --crop 256 --batch 16 --N 128 --M 192 --lr 4e-4 --warmup 500 --ema 0.999
       --val-every 1000000000 --log-every 50 --ckpt-every 500 ${EXTRA:-})
calibrate() { python3 -m training "${flags[@]}" --steps 1000000000 --stop-at "$calib" 2>&1 | tee -a "$out/train.log"; }
if ! calibrate; then  # bfloat16 is the one CUDA-only path the CPU tests cannot reach: fall back to float32
    echo "training failed with bf16; retrying in float32" | tee -a "$out/train.log"
    rm -rf "$run"; flags+=(--no-bf16); calibrate || exit 1
fi
s_per_step=$(tail -1 "$run/train_log.csv" | cut -d, -f6)
train_s=$(($(left) - bench))
steps=$(python3 -c "print($calib + int($train_s / $s_per_step * 0.93))")
echo "calibrated: $s_per_step s/step; $train_s s left for training: --steps $steps" | tee -a "$out/train.log"
python3 -m training "${flags[@]}" --steps "$steps" --time-limit "$train_s" 2>&1 | tee -a "$out/train.log"
python3 -m training --run-dir "$run" --slim "$out/slim.pt" || exit 1
cp "$run"/*.csv "$out/"
mkdir -p runs/slim && cp "$out/slim.pt" runs/slim/last.pt
# files come back only up to 16 MiB each: a larger slim copy comes back in parts (cat them together)
if [ "$(stat -c %s "$out/slim.pt")" -gt $((15 * 2**20)) ]; then
    split -b 15M -d "$out/slim.pt" "$out/slim.pt.part" && rm "$out/slim.pt"
fi

# Export from the float16 copy, the same bytes the weights shipped from it are exported from here.
if ! python3 -m training --run-dir runs/slim --export runs/gpu.safetensors 2>&1 | tee "$out/export.log"; then
    echo "not exportable here: no GPU benches; done with $(left) s of $total left"; exit 0
fi
for model in runs/gpu.safetensors ${CROSS_MODELS:-}; do  # the new weights, then any shipped ones named
    timeout 60 python3 -m bench.cross_device --data runs/pack/kodak --limit 2 --qualities 1,5,10 \
        --model "$model" --out "$out/cross_device_$(basename "$model" .safetensors).md" 2>&1 | tail -3
done
# encoder effort on the GPU with the new weights: encode times per effort, 2 images
timeout 90 python3 -m bench.rd --device cuda --data runs/pack/kodak --limit 2 --qualities 3,7,10 --peers "" \
    --effort 0,1,2 --model runs/gpu.safetensors --out "$out/rd_effort_cuda" 2>&1 | grep -A8 "^### vaecodec"
timeout $(($(left) > 20 ? $(left) - 5 : 15)) python3 -m bench.speed --data runs/pack/kodak --limit 4 --repeat 2 \
    --threads 16 --batches 1,8,64 --model runs/gpu.safetensors --out "$out/speed_cuda.md" 2>&1 | tail -20
echo "done with $(left) s of $total left"
