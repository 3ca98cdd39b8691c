#!/usr/bin/env bash
# The measurements that need a GPU, in one command with a deadline:
#
#   bash benchmarks/gpu_suite.sh OUT [SECONDS]
#
# On one release-size generated family (FAMILY, default realistic: 7,147 training / 5,398 test images, 2% wrong
# training labels, clean test labels) it runs, most important first, each step within what is left of SECONDS
# (default 540), a failed or timed-out step not stopping the next:
#   1. the full recipe (RECIPE, default "experiment=fast trainer=gpu": 10 folds x 100 epochs, stacked) through
#      benchmarks/throughput.py --only-full: wall, CodeCarbon energy, GPU utilisation and power, seconds per phase
#      (full.json, full_cv_summary.json), and its test predictions (predict.py: the fold ensemble, 8 views, filter)
#      scored on the clean labels (full_test.json, benchmarks/score_run.py)
#   2. the same recipe without the filter (filter=none, as experiment=no_filter): no_filter*.json
#   3. the same recipe with the default network and its settings in place of mm_fpn: fusion*.json
#   4. the statistics + XGBoost baseline on the same family (benchmarks/accuracy.py): stats.json
#   5. the training loops (benchmarks/throughput.py --bounds --stacked 10): loops.json
# Everything printed goes to OUT/suite.log; the figures to OUT/figures.tar.gz (rewritten after each step, so a
# run stopped at its deadline keeps what it measured). N_TRAIN, N_TEST, EXTRA (overrides for every train.py run) and WORK (the
# data and runs; a temporary folder by default) size it down for a try on a CPU, e.g.
#   N_TRAIN=240 N_TEST=80 RECIPE="experiment=fast trainer=cpu" EXTRA="data.num_folds=2 trainer.max_epochs=1" \
#     bash benchmarks/gpu_suite.sh /tmp/suite 600
set -u
out=$(realpath -m "${1:-logs/gpu_suite}")
seconds=${2:-540}
family=${FAMILY:-realistic}
recipe=${RECIPE:-experiment=fast trainer=gpu}
extra=${EXTRA:-}
work=${WORK:-$(mktemp -d /tmp/landslide-suite-XXXXXX)}
sizes=()
[ -n "${N_TRAIN:-}" ] && sizes+=(--n-train "$N_TRAIN")
[ -n "${N_TEST:-}" ] && sizes+=(--n-test "$N_TEST")
cd "$(dirname "$0")/.."
figs=$work/figures
mkdir -p "$out" "$work" "$figs"
deadline=$(( $(date +%s) + seconds ))
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore WANDB_MODE=offline
exec > >(tee -a "$out/suite.log") 2>&1

step() {  # step NAME COMMAND...: run it within what is left of the deadline, report its status and seconds
    local name=$1 left=$(( deadline - $(date +%s) )) started=$(date +%s) rc
    shift
    if (( left < 10 )); then echo "== $name: skipped (the deadline has passed)"; return 1; fi
    echo "== $name ($(date -u +%H:%M:%S), ${left} s left): $*"
    timeout --kill-after=5 "$left" "$@"
    rc=$?
    echo "== $name: exit $rc after $(( $(date +%s) - started )) s"
    tar -czf "$out/figures.tar.gz" -C "$figs" .
    return $rc
}

echo "== machine: $(nvidia-smi -L 2>/dev/null || echo no GPU), $(nproc) cores; work in $work"
python -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"
root=$work/$family
# 0. the family's release, generated as the accuracy benchmark does (reused if WORK already holds it)
step generate python benchmarks/accuracy.py --size gpu --families "$family" --models none --baselines none \
    --keep "$work" "${sizes[@]}"

recipe_run() {  # recipe_run NAME OVERRIDES...: a recipe through throughput.py --only-full -> NAME.json,
    # NAME_cv_summary.json; then its test set on the clean labels -> NAME_test.json
    local name=$1 run=$work/$1/full_recipe
    shift
    # shellcheck disable=SC2086
    step "$name" python benchmarks/throughput.py --only-full --data-root "$root" --out "$work/$name" \
        --full-overrides "$@" $extra
    cp "$work/$name/bench.json" "$figs/$name.json" 2>/dev/null
    cp "$run/cv_summary.json" "$figs/${name}_cv_summary.json" 2>/dev/null || return 1
    [ "${SCORE:-1}" = 1 ] || return 0
    step "${name}_predict" python predict.py "run_dir=$run" "out=$work/${name}_pred" || return 1
    step "${name}_score" python benchmarks/score_run.py "$run" "$root" "$work/${name}_pred" "$figs/${name}_test.json"
}

# 1. the full recipe, with its phases, energy and GPU load, and its test set
# shellcheck disable=SC2086
recipe_run full $recipe
# 2. the same recipe without the filter (its energy against the filtered run's)
# shellcheck disable=SC2086
SCORE=0 recipe_run no_filter $recipe filter=none
# 3. the same recipe with the default network and its recipe (early fusion; lr 1e-3, no weight decay, pos_weight 1,
#    no erasing) in place of mm_fpn
# shellcheck disable=SC2086
recipe_run fusion $recipe model=fusion_cnn model.optimizer.lr=0.001 model.optimizer.weight_decay=0.0 \
    model.pos_weight=1.0 data.augment.erase_p=0.0

# 4. the statistics baseline on the same family
step stats python benchmarks/accuracy.py --size gpu --families "$family" --models none --baselines stats \
    --keep "$work" "${sizes[@]}" --json "$figs/stats.json"

# 5. the training loops: reference, framework path, bare step, 10 folds stacked
step loops python benchmarks/throughput.py --bounds --stacked 10 --data-root "$root" --out "$work/loops" \
    --seconds 6 --epochs 3
cp "$work/loops/bench.json" "$figs/loops.json" 2>/dev/null
tar -czf "$out/figures.tar.gz" -C "$figs" .
echo "== done ($(date -u +%H:%M:%S)); figures in $out"
