"""End to end on generated LVIS data (issue 13): stage 1 with Balanced Mosaic + Copy-Paste +
repeat factor sampling, then double classifier retraining from it, both through
`python -m tfcp.train` with the tiny gin configs (2 steps each)."""

import json
import os
import re

import tensorflow as tf

from tests import cli_utils, events
from tfcp.data import synthetic
from tfcp.data.converters import coco as coco_converter


class BalancedMosaicEndToEndTest(tf.test.TestCase):
    def test_stage1_with_mosaic_then_double_classifier_retraining(self):
        tmp = self.get_temp_dir()
        paths = synthetic.write_lvis(os.path.join(tmp, "lvis"), num_train=40, num_val=4)
        for split in ("train", "val"):
            coco_converter.convert_coco(
                paths["image_dir"],
                paths[f"{split}_annotations"],
                os.path.join(tmp, split),
                num_shards=1,
            )
        with open(paths["train_annotations"]) as f:
            num_classes = max(c["id"] for c in json.load(f)["categories"]) + 1
        data = [
            f"TRAIN_FILES = '{tmp}/train-*'",
            f"EVAL_FILES = '{tmp}/val-*'",
            f"EVAL_ANNOTATIONS = '{paths['val_annotations']}'",
            f"NUM_CLASSES = {num_classes}",
            "TRAIN_STEPS = 2",
            "tfcp.Trainer.log_interval = 1",
            "tfcp.Trainer.steps_per_loop = 1",
        ]
        stage1 = os.path.join(tmp, "stage1")
        result = cli_utils.run_train(
            stage1, ["lvis/maskrcnn_tiny_balanced_mosaic_copy_paste.gin"], data, timeout=600
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertTrue(os.path.exists(os.path.join(stage1, "ckpt-2.index")))
        scalars = events.read_scalars(os.path.join(stage1, "train"))
        self.assertGreater(max(scalars["mosaic_images"].values()), 0)  # mosaic_prob 0.5
        self.assertIn("mosaic_objects_dropped", scalars)

        stage2 = os.path.join(tmp, "stage2")
        result = cli_utils.run_train(
            stage2,
            ["lvis/maskrcnn_tiny_double_classifier.gin"],
            [*data, f"INIT_CHECKPOINT = '{stage1}'"],
            timeout=600,
        )
        log = result.stderr
        self.assertEqual(result.returncode, 0, log[-3000:])
        self.assertIn("Class-aware sampling:", log)
        self.assertRegex(log, r"Training 4 of \d+ trainable variables")
        self.assertIn("detection-scores-b", log)  # head b, initialized from head a (logged)
        losses = re.findall(r"frcnn_cls_loss_a ([0-9.]+) \| frcnn_cls_loss_b ([0-9.]+)", log)
        self.assertNotEmpty(losses)
        self.assertTrue(os.path.exists(os.path.join(stage2, "ckpt-2.index")))


if __name__ == "__main__":
    tf.test.main()
