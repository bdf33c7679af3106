#!/usr/bin/env bash
# CP2 in miniature on generated PASCAL VOC data (300 train / 60 val images, 128 px): tiny CP2
# pretraining on the train images (labels unused; cp2/cp2_tiny.gin), export of its backbone as
# a feature extractor, then VOC 2012 segmentation fine-tuning (voc/segmentation_tiny.gin)
# initialized from it and, for comparison, from scratch; mIoU on the val images of each.
# Usage: bash scripts/cp2_demo.sh OUT_DIR [PRETRAIN_STEPS] [FINETUNE_STEPS] [SEEDS]
#   (a finished run is not repeated; defaults 1500, 1000, "0 1 2")
set -euo pipefail
OUT=${1:-cp2_out}
PRETRAIN_STEPS=${2:-1500}
FINETUNE_STEPS=${3:-1000}
SEEDS=${4:-0 1 2}
PY=${PY:-.venv/bin/python}
D=$OUT/data
mkdir -p "$OUT"
if [ ! -f "$D/seg_val-00000-of-00001.tfrecord" ]; then
  $PY -c "import sys; from tfcp.data import synthetic; synthetic.write_voc(sys.argv[1], \
num_train=300, num_val=60, num_test=1, image_size=128, seed=0, years=(2012,), \
segmented_fraction=1.0)" "$D"
  for split in train val; do
    $PY -m tfcp.data.create_voc_tfrecord --voc_root "$D/VOCdevkit" --year 2012 --split $split \
      --task segmentation --output_prefix "$D/seg_$split" --num_shards 1
  done
fi
run() {
  local name=$1; shift
  [ -f "$OUT/$name/metrics.json" ] && return 0
  local s; s=$(date +%s)
  $PY -m tfcp.train --model_dir="$OUT/$name" --mode=train_and_eval "$@" > "$OUT/$name.log" 2>&1
  echo "$name: $(( $(date +%s) - s )) s, load $(cut -d' ' -f1-3 /proc/loadavg)"
}
run cp2 --gin_file=cp2/cp2_tiny.gin --gin_bindings="TRAIN_FILES='$D/seg_train-*'" \
  --gin_bindings="EVAL_FILES='$D/seg_val-*'" --gin_bindings="TRAIN_STEPS=$PRETRAIN_STEPS" \
  --gin_bindings="tfcp.Trainer.eval_interval=$(( PRETRAIN_STEPS / 3 ))"
[ -d "$OUT/cp2_export" ] || $PY export/export_saved_model.py --model_dir="$OUT/cp2" \
  --export_dir="$OUT/cp2_export" --feature_extractor > /dev/null
SEG=(--gin_file=voc/segmentation_tiny.gin --gin_bindings="TRAIN_FILES='$D/seg_train-*'"
  --gin_bindings="EVAL_FILES='$D/seg_val-*'" --gin_bindings="TRAIN_STEPS=$FINETUNE_STEPS"
  --gin_bindings="SegmentationTask.init_checkpoint_modules=('backbone',)")
for seed in $SEEDS; do
  S=(--gin_bindings="tfcp.Trainer.seed=$seed" --gin_bindings="train/build_segmentation_dataset.seed=$seed")
  run "voc_cp2_init_s$seed" "${SEG[@]}" "${S[@]}" --gin_bindings="INIT_CHECKPOINT='$OUT/cp2_export'"
  run "voc_scratch_s$seed" "${SEG[@]}" "${S[@]}" --gin_bindings="INIT_CHECKPOINT=''"
done
$PY - "$OUT" $SEEDS <<'PY'
import json, os, sys
out, seeds = sys.argv[1], sys.argv[2:]
def last(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()][-1]
m = last(os.path.join(out, "cp2", "metrics.json"))
print("CP2 pretraining, held-out composites at step %d: instance loss %.3f (acc %.1f %%), "
      "dense loss %.3f (acc %.1f %%)" % (m["step"], m["instance_loss"], m["instance_accuracy"],
                                         m["dense_loss"], m["dense_accuracy"]))
print("| VOC segmentation fine-tuning | " + " | ".join(f"seed {s}" for s in seeds) + " |")
print("|---" * (len(seeds) + 1) + "|")
for init in ("cp2_init", "scratch"):
    values = [100 * last(os.path.join(out, f"voc_{init}_s{s}", "metrics.json"))["mIoU"] for s in seeds]
    print(f"| {init} mIoU | " + " | ".join(f"{v:.1f}" for v in values) + " |")
PY
