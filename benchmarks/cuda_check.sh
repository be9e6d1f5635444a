#!/usr/bin/env bash
# CUDA check on a GPU machine that has torch, torch-geometric, scikit-learn and matplotlib but no
# network: the other packages travel as wheels in .whl/, the datasets in device_data/heco/.
#
#   bash benchmarks/cuda_check.sh STAGE [STAGE ...]      # logs under $OUT (or ./cuda_out)
#
# Stages: tests (unit tests, device "auto" = cuda), tune (validation-only grids on aminer and
# freebase), bench (encoder and epoch speed), notebooks (nbval), reproduce (3 seeds, 4 datasets).
# Each stage has its own time limit so one slow stage cannot eat the others' time.
set -u
OUT=${OUT:-$PWD/cuda_out}
mkdir -p "$OUT"
WHEELS=${WHEELS:-.whl}
if [ -d "$WHEELS" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export HETCRF_DATA=${HETCRF_DATA:-$PWD/device_data/heco} PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch, torch_geometric as g; print('torch', torch.__version__, 'pyg', g.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0))"

stage() {  # name, seconds, command...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name rc=$rc in $(( $(date +%s) - t0 ))s"; tail -n 4 "$OUT/$name.log"
}

for s in "$@"; do
  case $s in
    tests) stage tests "${TESTS_S:-150}" python3 -m pytest tests -x -q -p no:cacheprovider \
             --ignore=tests/test_notebooks.py -k "not distributed and not cli" ;;
    tune)
      stage tune_aminer "${TUNE_S:-110}" python3 benchmarks/tune.py --dataset aminer \
        --grid ${AMINER_GRID:-lr=0.001,0.003 tau=0.5,0.8} \
        --embed-modes concat encoder contrastive --budget-s $(( ${TUNE_S:-110} - 30 )) \
        --out "$OUT"
      stage tune_freebase "${TUNE_S:-110}" python3 benchmarks/tune.py --dataset freebase \
        --grid ${FREEBASE_GRID:-lr=0.001,0.003 tau=0.5,0.8} \
        --embed-modes concat encoder contrastive --budget-s $(( ${TUNE_S:-110} - 30 )) \
        --out "$OUT" ;;
    bench)
      stage encoder_speed "${ENCODER_S:-120}" python3 benchmarks/encoder_speed.py --device cuda \
        --skip-check --json "$OUT/encoder_speed.json"
      stage epoch_speed "${EPOCH_S:-150}" python3 benchmarks/epoch_speed.py \
        --json "$OUT/epoch_speed.json" ;;
    notebooks)
      HETCRF_FIGURES=$(mktemp -d) stage notebooks "${NOTEBOOKS_S:-200}" python3 -m pytest --nbval-lax \
        --nbval-cell-timeout=300 -p no:cacheprovider notebooks -q ;;
    reproduce)
      stage reproduce "${REPRODUCE_S:-300}" python3 benchmarks/reproduce.py --seeds 0 1 2 \
        --fresh --out /tmp/runs --md "$OUT/results_cuda.md" --json "$OUT/results_cuda.json" ;;
    *) echo "unknown stage $s"; exit 2 ;;
  esac
done
