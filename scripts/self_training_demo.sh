#!/usr/bin/env bash
# Self-training Copy-Paste end to end on generated data (paper Sec. 4.4, in miniature):
#   1. train a teacher (tiny Mask R-CNN, LSJ + Copy-Paste) on the labeled images, export it;
#   2. pseudo-label a second set of images with it (their generated annotations are hidden
#      from training and only used to grade the pseudo labels);
#   3. train a student on batches of 2 labeled + 2 pseudo-labeled images, pasting labeled
#      objects into both, and evaluate teacher and student on the same val set;
#   4. the control: the student's batch (4), learning rate and steps with labeled images
#      only, so that student vs control isolates what the pseudo-labeled half brings.
# Teacher vs student is the paper's comparison: the same labeled images per step and the same
# learning rate, plus as many pseudo-labeled images.
# Usage: bash scripts/self_training_demo.sh OUT_DIR   (make self-training-demo)
# STEPS (default 1500) is each model's number of training steps: the student sees the
# labeled images as often as the teacher did, plus as many pseudo-labeled ones.
set -euo pipefail
OUT=${1:-self_training_out}
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-1500}
mkdir -p "$OUT"
start=$(date +%s)
stamp() { echo "[self-training $(( $(date +%s) - start ))s] $*"; }

stamp "1/8 generating labeled (COCO format) and unlabeled images in $OUT"
$PY -m tfcp.data.synthetic --output_dir "$OUT/labeled" --format coco \
  --num_train 200 --num_val 64 --image_size 128 --seed 0
$PY -m tfcp.data.synthetic --output_dir "$OUT/unlabeled" --format coco \
  --num_train 400 --num_val 0 --image_size 128 --seed 1

stamp "2/8 converting the labeled data to TFRecords"
for split in train val; do
  $PY -m tfcp.data.create_coco_tfrecord --image_dir "$OUT/labeled/${split}2017" \
    --annotations_json "$OUT/labeled/annotations/instances_${split}2017.json" \
    --output_prefix "$OUT/records/${split}" --num_shards 2
done
NUM_CLASSES=$($PY -c "import json,sys; c=json.load(open(sys.argv[1]))['categories']; print(max(x['id'] for x in c)+1)" "$OUT/labeled/annotations/instances_train2017.json")
BINDINGS=(
  --gin_bindings="TRAIN_FILES='$OUT/records/train-*'"
  --gin_bindings="EVAL_FILES='$OUT/records/val-*'"
  --gin_bindings="EVAL_ANNOTATIONS='$OUT/labeled/annotations/instances_val2017.json'"
  --gin_bindings="NUM_CLASSES=$NUM_CLASSES"
  --gin_bindings="TRAIN_STEPS=$STEPS"
  --gin_bindings="tfcp.Trainer.checkpoint_interval=500"
  --gin_bindings="tfcp.Trainer.steps_per_loop=50"
  --gin_bindings="tfcp.Trainer.log_interval=250"
)

stamp "3/8 training the teacher ($STEPS steps, batch 2, LSJ + Copy-Paste), COCO evaluation"
$PY -m tfcp.train --gin_file=demo/maskrcnn_tiny_copy_paste.gin "${BINDINGS[@]}" \
  --model_dir "$OUT/teacher" --mode train_and_eval

stamp "4/8 exporting the teacher -> $OUT/teacher_export"
$PY export/export_saved_model.py --model_dir "$OUT/teacher" --export_dir "$OUT/teacher_export" \
  --input_type image_tensor --overwrite

stamp "5/8 pseudo-labeling $OUT/unlabeled/train2017 (score >= 0.5), converting to TFRecords"
$PY -m tfcp.pseudo_label --saved_model "$OUT/teacher_export" \
  --image_dir "$OUT/unlabeled/train2017" --output_json "$OUT/pseudo/pseudo.json" \
  --score_threshold 0.5 --overwrite
$PY -m tfcp.data.create_coco_tfrecord --image_dir "$OUT/unlabeled/train2017" \
  --annotations_json "$OUT/pseudo/pseudo.json" --output_prefix "$OUT/pseudo/pseudo" --num_shards 2

stamp "6/8 grading the pseudo labels against the hidden generated annotations"
$PY - "$OUT/unlabeled/annotations/instances_train2017.json" "$OUT/pseudo/pseudo.json" <<'EOF'
import contextlib, io, json, sys
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
truth_path, pseudo_path = sys.argv[1:3]
with contextlib.redirect_stdout(io.StringIO()):
    truth = COCO(truth_path)
    labels = json.load(open(pseudo_path))["annotations"]
    result = {"pseudo_objects": len(labels), "true_objects": len(truth.getAnnIds())}
    for iou_type in ("bbox", "segm"):
        run = COCOeval(truth, truth.loadRes(labels), iou_type)
        run.evaluate(); run.accumulate(); run.summarize()
        result[f"{iou_type}_AP"] = round(float(run.stats[0]), 4)
        result[f"{iou_type}_AR100"] = round(float(run.stats[8]), 4)
print("pseudo labels vs hidden annotations:", json.dumps(result))
EOF

stamp "7/8 training the student ($STEPS steps, batch 2 labeled + 2 pseudo-labeled, labeled objects pasted into both)"
$PY -m tfcp.train --gin_file=self_training/maskrcnn_tiny_student.gin "${BINDINGS[@]}" \
  --gin_bindings="PSEUDO_FILES='$OUT/pseudo/pseudo-*'" \
  --model_dir "$OUT/student" --mode train_and_eval

stamp "8/8 control: labeled images only, the student's batch (4), learning rate and steps"
$PY -m tfcp.train --gin_file=demo/maskrcnn_tiny_copy_paste.gin "${BINDINGS[@]}" \
  --gin_bindings="GLOBAL_BATCH_SIZE=4" --gin_bindings="tfcp.build_learning_rate.base_batch_size=4" \
  --model_dir "$OUT/control" --mode train_and_eval

stamp "done; on the same $OUT/labeled val set:"
$PY - "$OUT/teacher/metrics.json" "$OUT/student/metrics.json" "$OUT/control/metrics.json" <<'EOF'
import json, sys
names = ("teacher (batch 2)", "student (2 labeled + 2 pseudo)", "control (4 labeled)")
for name, path in zip(names, sys.argv[1:4]):
    m = json.load(open(path))
    keys = ("step", "box_AP", "box_AP50", "mask_AP", "mask_AP50")
    print(f"  {name}: " + ", ".join(f"{k}={m[k]:g}" for k in keys))
EOF
