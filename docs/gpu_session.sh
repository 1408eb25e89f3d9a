#!/usr/bin/env bash
# One call on a lent GPU (docs/training.md, "Next GPU session"): train for the time the call has, bring
# back the float16 weights, export them there, check them across devices and time them. Run from the
# repository root on the device, with runs/pack and .whl (the constriction and safetensors wheels for
# the device's Python) carried:
#
#     VAECODEC_COMMIT=<commit sent> bash docs/gpu_session.sh TOTAL_S BENCH_S [RUN_DIR]
#
# TOTAL_S is the whole script's budget (keep it under the 600 s a command may run, with margin), BENCH_S
# the part kept after training for the float16 copy, the export and the benches. Training runs in one
# process with --budget: it measures its own step time at step --calib (compilation excluded) and sets
# --steps so that the cosine schedule ends when the time does. By default it trains the next model:
# the shipped one grown to M=320 (--grow-m), its levels moved up to lambda 0.18 (--lambdas), the step
# compiled (--compile). INIT replaces those flags (a second call on the still-warm machine:
# INIT="--init runs/gpu/last.pt"), EXTRA is appended to the flags (so it wins: --batch, --lr, a CPU dry
# run's --device cpu). If the compiled step fails before a checkpoint, training retries eager, then in
# float32. Everything worth keeping goes to $OUT: the float16 slim copy (in parts of 15 MiB, since a
# returned file may hold 16 MiB; cat slim.pt.part* > slim.pt), and results.tar with the logs, the
# cross-device check and the speed table (at most 8 files come back from a call).
set -uo pipefail
total=${1:?TOTAL_S}; bench=${2:?BENCH_S}; run=${3:-runs/gpu}
start=$(date +%s)
left() { echo $((total - ($(date +%s) - start))); }
out=${OUT:?set OUT to a folder for the results}
bundle() { (cd "$out" && find . -type f ! -name 'slim.pt*' ! -name results.tar -printf '%P\n' \
    | tar -cf results.tar --remove-files -T - && find . -mindepth 1 -type d -empty -delete); }
trap bundle EXIT

# the wheels only where their packages are missing (a CPU dry run here has them, for another Python)
if compgen -G ".whl/*.whl" >/dev/null && ! python3 -c "import constriction, safetensors" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "import torch; print(torch.__version__)"
  echo "commit ${VAECODEC_COMMIT:-unknown}"; } > "$out/machine.txt" 2>&1

# the next model (docs/training.md): levels 0-4 keep the shipped lambdas (quality 7, the default, stays
# where it was), levels 5-7 climb geometrically to 0.18
lambdas=0.0018,0.0032,0.00567,0.01007,0.01788,0.03861,0.08336,0.18
read -ra init <<< "${INIT:---init weights/hp128cbpf-v5.safetensors --grow-m 320 --lambdas $lambdas}"
flags=(--run-dir "$run" --data runs/pack --crop 256 --batch 64 --lr 1.5e-4 --warmup 400 --calib 300
       --ema 0.999 --compile default --val-every 1000000000 --log-every 100 --ckpt-every 1000 "${init[@]}")
train() {  # the time left now, less the benches' share, is the training budget
    rm -rf "$run"
    python3 -m training "${flags[@]}" "$@" ${EXTRA:-} --budget $(($(left) - bench)) 2>&1 | tee -a "$out/train.log"
}
if ! train && [ ! -f "$run/last.pt" ]; then
    echo "training failed compiled; retrying eager" | tee -a "$out/train.log"
    if ! train --compile none && [ ! -f "$run/last.pt" ]; then
        echo "training failed in bf16; retrying in float32" | tee -a "$out/train.log"
        train --compile none --no-bf16 || [ -f "$run/last.pt" ] || exit 1
    fi
fi
cp "$run"/*.csv "$out/" 2>/dev/null
python3 -m training --run-dir "$run" --slim "$out/slim.pt" || exit 1
mkdir -p runs/slim && cp "$out/slim.pt" runs/slim/last.pt
if [ "$(stat -c %s "$out/slim.pt")" -gt $((15 * 2**20)) ]; then
    split -b 15M -d "$out/slim.pt" "$out/slim.pt.part" && rm "$out/slim.pt"
fi

# Export from the float16 copy, the same bytes the weights shipped from it are exported from here.
if ! python3 -m training --run-dir runs/slim --export runs/gpu.safetensors 2>&1 | tee "$out/export.log"; then
    echo "not exportable here: no GPU benches; done with $(left) s of $total left"; exit 0
fi
timeout 60 python3 -m bench.cross_device --data runs/pack/kodak --limit 2 --qualities 1,5,10 \
    --model runs/gpu.safetensors --out "$out/cross_device.md" 2>&1 | tail -3
timeout $(($(left) > 20 ? $(left) - 5 : 15)) python3 -m bench.speed --data runs/pack/kodak --limit 2 --repeat 2 \
    --threads 16 --batches 1,8 --model runs/gpu.safetensors --out "$out/speed_cuda.md" 2>&1 | tail -20
echo "done with $(left) s of $total left"
