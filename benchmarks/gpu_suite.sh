#!/usr/bin/env bash
# The measurements that need a GPU, in one command with a deadline:
#
#   bash benchmarks/gpu_suite.sh OUT [SECONDS]
#
# On one release-size generated family (FAMILY, default realistic: 7,147 training / 5,398 test images, 2% wrong
# training labels, clean test labels) it runs, most important first, each step within what is left of SECONDS
# (default 540; a step that needs more than is left is skipped), a failed or timed-out step not stopping the next:
#   1. the statistics + XGBoost baseline on the family (benchmarks/accuracy.py): stats.json
#   2. the full recipe (RECIPE, default "experiment=fast trainer=gpu": 10 folds x 100 epochs, stacked) through
#      benchmarks/throughput.py --only-full: wall, CodeCarbon energy, GPU utilisation and power, seconds per phase,
#      the training steps' images/s (full.json, full_cv_summary.json), and its test predictions (predict.py: the
#      fold ensemble, 8 views, filter) scored on the clean labels (full_test.json, benchmarks/score_run.py)
#   3. the same recipe without the filter (filter=none, as experiment=no_filter): no_filter*.json
#   4. the seed's network and recipe with the same speed settings (experiment=reference_fast, mm_fpn): reference*.json
#   5. the training loops (benchmarks/throughput.py --bounds --stacked 10): loops.json
# The recipe runs come one after another on one machine, so the first pays the cold caches (data, features,
# Inductor's compiled graphs) and the later ones do not: compare energy between runs with that in mind.
# Everything printed goes to OUT/suite.log; the figures to OUT/figures.tar.gz (replaced whole after each step, so a
# run stopped from outside keeps what it measured). It exits 0 only if every step ran and succeeded.
# RUNS replaces steps 2-4 with recipe runs of your own, one a line: NAME SCORE OVERRIDES... (NAME: letters, digits,
# _ and -, not the family's name or a name ending in _pred, _test or _cv_summary; SCORE 1: its test set is predicted and scored, 0: not; lines starting with # are skipped), e.g.
#   RUNS=$'e100 1 experiment=fast trainer=gpu\ne40 1 experiment=fast trainer=gpu trainer.max_epochs=40'
# STATS=0 and LOOPS=0 leave steps 1 and 5 out.
# N_TRAIN, N_TEST, EXTRA (overrides for every train.py run), RECIPE_MIN (seconds a recipe step needs, default 150)
# and WORK (data, caches and runs; a new temporary folder by default) size it down for a try on a CPU, e.g.
#   N_TRAIN=240 N_TEST=80 RECIPE="experiment=fast trainer=cpu" EXTRA="data.num_folds=2 trainer.max_epochs=1" \
#     RECIPE_MIN=10 bash benchmarks/gpu_suite.sh /tmp/suite 600
set -u
seconds=${2:-540}
if ! [[ $seconds =~ ^[0-9]+$ ]]; then echo "gpu_suite.sh: SECONDS must be a whole number, got '$seconds'" >&2; exit 2; fi
family=${FAMILY:-realistic}
runs_names=" "
while read -r name score rest; do  # RUNS checked whole before anything runs
    [[ -z $name || $name == \#* ]] && continue
    if ! [[ $name =~ ^[A-Za-z0-9][A-Za-z0-9_-]*$ && $score =~ ^[01]$ ]] || [[ -z $rest ]]; then
        echo "gpu_suite.sh: RUNS line '$name $score $rest': want NAME SCORE OVERRIDES... (NAME of letters, digits," \
            "_ and -; SCORE 0 or 1)" >&2
        exit 2
    fi
    # the suite's own folders and files (the release, its truth, figures, caches, each run's predictions and JSON)
    case " figures cache loops stats generate $runs_names " in
        *" $name "*) echo "gpu_suite.sh: RUNS name '$name' is taken (by the suite or another line)" >&2; exit 2 ;;
    esac
    if [[ $name == "$family"* || $name == *_pred || $name == *_test || $name == *_cv_summary ]]; then
        echo "gpu_suite.sh: RUNS name '$name' is taken (by the suite or another line)" >&2
        exit 2
    fi
    runs_names+="$name "
done <<< "${RUNS:-}"
out=$(realpath -m "${1:-logs/gpu_suite}")
work=$(realpath -m "${WORK:-$(mktemp -d /tmp/landslide-suite-XXXXXX)}")
recipe_min=${RECIPE_MIN:-150}
read -ra recipe <<< "${RECIPE:-experiment=fast trainer=gpu}"  # split on spaces, never globbed
read -ra extra <<< "${EXTRA:-}"
sizes=()
[ -n "${N_TRAIN:-}" ] && sizes+=(--n-train "$N_TRAIN")
[ -n "${N_TEST:-}" ] && sizes+=(--n-test "$N_TEST")
cd "$(dirname "$0")/.." || exit 2
figs=$work/figures
rm -rf "$figs"  # figures of an earlier suite in the same WORK are not this one's
mkdir -p "$out" "$work" "$figs"
deadline=$(( $(date +%s) + seconds ))
failed=0
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore WANDB_MODE=offline
exec > >(tee -a "$out/suite.log") 2>&1
tee_pid=$!

save_figures() {  # the figures so far, replacing the archive whole
    tar -czf "$out/figures.tar.gz.tmp" -C "$figs" . && mv "$out/figures.tar.gz.tmp" "$out/figures.tar.gz"
}

step() {  # step NAME MIN_SECONDS COMMAND...: run it within what is left of the deadline (skipped with less than
    # MIN_SECONDS left); report its status and seconds
    local name=$1 need=$2 left=$(( deadline - $(date +%s) )) started=$(date +%s) rc
    shift 2
    if (( left < need || left < 10 )); then
        echo "== $name: skipped (${left} s left, it needs ${need})"
        failed=1
        return 1
    fi
    echo "== $name ($(date -u +%H:%M:%S), ${left} s left): $*"
    timeout --kill-after=5 "$left" "$@"
    rc=$?
    echo "== $name: exit $rc after $(( $(date +%s) - started )) s"
    (( rc == 0 )) || failed=1
    return $rc
}

recipe_run() {  # recipe_run NAME OVERRIDES...: a recipe through throughput.py --only-full -> NAME.json,
    # NAME_cv_summary.json; then (SCORE=1, the default) its test set on the clean labels -> NAME_test.json
    local name=$1 run=$work/$1/full_recipe
    shift
    rm -rf "${work:?}/$name" "${work:?}/${name}_pred"  # an earlier suite's run is not this one's
    step "$name" "$recipe_min" python benchmarks/throughput.py --only-full --data-root "$root" --out "$work/$name" \
        --full-overrides "$@" "data.cache_dir=$work/cache" ${extra[@]+"${extra[@]}"}
    cp "$work/$name/bench.json" "$figs/$name.json" 2>/dev/null
    cp "$run/cv_summary.json" "$figs/${name}_cv_summary.json" 2>/dev/null
    save_figures
    [ -f "$run/cv_summary.json" ] || return 1
    [ "${SCORE:-1}" = 1 ] || return 0
    step "${name}_predict" 10 python predict.py "run_dir=$run" "out=$work/${name}_pred" "data.cache_dir=$work/cache" \
        || return 1
    step "${name}_score" 10 python benchmarks/score_run.py "$run" "$root" "$work/${name}_pred" \
        "$figs/${name}_test.json"
    save_figures
}

echo "== machine: $(nvidia-smi -L 2>/dev/null || echo no GPU), $(nproc) cores; work in $work"
python -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"
root=$work/$family
# 0. the family's release, generated as the accuracy benchmark does (reused if WORK already holds one, whatever its
#    size: give a fresh WORK after a change of N_TRAIN / N_TEST or an interrupted generation)
step generate 10 python benchmarks/accuracy.py --size gpu --families "$family" --models none --baselines none \
    --keep "$work" ${sizes[@]+"${sizes[@]}"}
# 1. the statistics baseline on the same family, beside every score below
[ "${STATS:-1}" = 0 ] || step stats 10 python benchmarks/accuracy.py --size gpu --families "$family" --models none --baselines stats \
    --keep "$work" ${sizes[@]+"${sizes[@]}"} --json "$figs/stats.json"
save_figures
if [ -n "${RUNS:-}" ]; then  # the user's recipe runs instead of steps 2-4, read from descriptor 3 (not stdin)
    while read -r -u 3 name score rest; do
        [[ -z $name || $name == \#* ]] && continue
        read -ra overrides <<< "$rest"
        SCORE=$score recipe_run "$name" ${overrides[@]+"${overrides[@]}"}
    done 3<<< "$RUNS"
else
    # 2. the full recipe, with its phases, energy and GPU load, and its test set
    recipe_run full "${recipe[@]}"
    # 3. the same recipe without the filter (its energy against the filtered run's)
    SCORE=0 recipe_run no_filter "${recipe[@]}" filter=none
    # 4. the seed's network and recipe with the same speed settings (one experiment= a run: the recipe's others kept)
    reference=()
    for option in "${recipe[@]}"; do
        [ "$option" = experiment=fast ] && option=experiment=reference_fast
        reference+=("$option")
    done
    recipe_run reference "${reference[@]}"
fi
# 5. the training loops: reference, framework path, bare step, 10 folds stacked
rm -rf "${work:?}/loops"
[ "${LOOPS:-1}" = 0 ] || step loops 60 python benchmarks/throughput.py --bounds --stacked 10 --data-root "$root" --out "$work/loops" \
    --seconds 6 --epochs 3
cp "$work/loops/bench.json" "$figs/loops.json" 2>/dev/null
save_figures
echo "== done ($(date -u +%H:%M:%S)), $( ((failed)) && echo "not every step succeeded" || echo "every step succeeded");" \
    "figures in $out"
exec >&- 2>&-  # let tee write the last lines before the script ends
wait "$tee_pid" 2>/dev/null
exit $failed
