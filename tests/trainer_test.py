"""In-process tests of tfcp.trainer with the toy task (one device)."""

import json
import os
import shutil
import tempfile

import gin
import numpy as np
import tensorflow as tf
import tf_keras
import toy_task
from events import read_scalars

from tfcp import checkpointing, optimization, summaries, train_loop, trainer


def _make_trainer(model_dir, lr=0.1, **kwargs):
    task_kwargs = {k: kwargs.pop(k) for k in ("nan_at_step", "hidden_units") if k in kwargs}
    defaults = dict(
        model_dir=model_dir,
        task=kwargs.pop("task", None) or toy_task.ToyTask(**task_kwargs),
        train_steps=10,
        steps_per_loop=5,
        log_interval=5,
        checkpoint_interval=5,
        optimizer_fn=lambda: optimization.build_optimizer(learning_rate=lr),
        image_summaries=False,
    )
    defaults.update(kwargs)
    return trainer.Trainer(**defaults)


@gin.configurable
def eval_only_setting(value=0):
    return value


class _EvalConfiguredTask(toy_task.ToyTask):
    """Uses a gin configurable only when evaluating (like the eval pipeline does)."""

    def evaluator_begin(self):
        eval_only_setting()
        super().evaluator_begin()


def _fixed_batch_loss(tr):
    features, labels = next(iter(tr.task.build_inputs(True, None)))
    return float(tr.task.build_losses(tr.model, features, labels, training=False)["total_loss"])


class WeightDecayTest(tf.test.TestCase):
    def test_only_kernels_are_decayed(self):
        inputs = tf_keras.Input([2])
        h = tf_keras.layers.Dense(2, name="d")(inputs)
        h = tf_keras.layers.BatchNormalization(name="bn")(h)
        model = tf_keras.Model(inputs, h)
        model.get_layer("d").set_weights([np.full([2, 2], 2.0), np.full([2], 5.0)])
        # 0.5 * wd * sum(kernel^2) = 0.5 * 0.1 * 4 * 4; biases/BN gamma/beta excluded.
        self.assertAllClose(train_loop.weight_decay_loss(model, 0.1), 0.8)
        self.assertAllClose(train_loop.weight_decay_loss(model, 0.0), 0.0)


class TrainerTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        gin.clear_config()
        self.model_dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.model_dir, ignore_errors=True)

    def test_training_lowers_the_loss_and_writes_outputs(self):
        tr = _make_trainer(self.model_dir, train_steps=20)
        before = _fixed_batch_loss(tr)
        self.assertEqual(tr.train(), trainer.COMPLETED)
        self.assertLess(_fixed_batch_loss(tr), 0.5 * before)
        self.assertEqual(int(tr.global_step.numpy()), 20)
        self.assertEqual(
            checkpointing.latest_checkpoint(self.model_dir), f"{self.model_dir}/ckpt-20"
        )
        self.assertTrue(os.path.exists(os.path.join(self.model_dir, "config.gin")))
        scalars = read_scalars(os.path.join(self.model_dir, "train"))
        self.assertEqual(sorted(scalars["total_loss"]), [5, 10, 15, 20])
        for tag in ("learning_rate", "steps_per_sec", "images_per_sec", "first_index"):
            self.assertIn(tag, scalars)
        # first_index is the mean over steps 0..4 of 8 * step.
        self.assertAllClose(scalars["first_index"][5], 16.0)
        self.assertAllClose(scalars["learning_rate"][5], 0.1)

    def test_resume_continues_step_and_data_position(self):
        self.assertEqual(_make_trainer(self.model_dir, train_steps=10).train(), "completed")
        tr = _make_trainer(self.model_dir, train_steps=15, log_interval=1)
        self.assertEqual(int(tr.global_step.numpy()), 0)
        tr.train()
        self.assertEqual(int(tr.global_step.numpy()), 15)
        scalars = read_scalars(os.path.join(self.model_dir, "train"))
        # Step 11 (the first after resume) consumed examples 80..87.
        self.assertAllClose(scalars["first_index"][11], 80.0)
        self.assertAllClose(scalars["first_index"][15], 112.0)
        self.assertNotIn(1, scalars["first_index"])  # no step restarted from 0

    def test_resume_restart_policy_starts_input_over(self):
        _make_trainer(self.model_dir, train_steps=5).train()
        tr = _make_trainer(
            self.model_dir, train_steps=6, log_interval=1, resume_data_position="restart"
        )
        tr.train()
        self.assertAllClose(
            read_scalars(os.path.join(self.model_dir, "train"))["first_index"][6], 0
        )

    def test_init_checkpoint_only_on_fresh_start(self):
        calls = []
        tr = _make_trainer(self.model_dir, train_steps=5, init_checkpoint="/pretrained/ckpt")
        tr.task.initialize = lambda model, path: calls.append(path)
        tr.train()
        self.assertEqual(calls, ["/pretrained/ckpt"])
        tr = _make_trainer(self.model_dir, train_steps=10, init_checkpoint="/pretrained/ckpt")
        tr.task.initialize = lambda model, path: calls.append(path)
        tr.train()
        self.assertEqual(calls, ["/pretrained/ckpt"])  # resumed: not called again

    def test_nan_loss_stops_and_keeps_last_good_checkpoint(self):
        tr = _make_trainer(self.model_dir, train_steps=20, nan_at_step=7, steps_per_loop=2)
        with self.assertRaisesRegex(trainer.NonFiniteLossError, r"at step 7\b.*ckpt-5"):
            tr.train()
        self.assertEqual(
            checkpointing.latest_checkpoint(self.model_dir), f"{self.model_dir}/ckpt-5"
        )
        reader = tf.train.load_checkpoint(f"{self.model_dir}/ckpt-5")
        for name in reader.get_variable_to_shape_map():
            value = reader.get_tensor(name)
            if np.issubdtype(np.asarray(value).dtype, np.floating):
                self.assertTrue(np.all(np.isfinite(value)), name)

    def test_train_and_eval_writes_metrics(self):
        tr = _make_trainer(self.model_dir, train_steps=10, eval_interval=5)
        tr.train(evaluate=True)
        with open(os.path.join(self.model_dir, summaries.METRICS_FILE)) as f:
            record = json.load(f)
        self.assertEqual(record["step"], 10)
        # 10 eval examples in batches of 8: the last partial batch is included.
        self.assertEqual(record["num_examples"], 10)
        self.assertEqual(record["num_unique_examples"], 10)
        with open(os.path.join(self.model_dir, summaries.METRICS_HISTORY_FILE)) as f:
            steps = [json.loads(line)["step"] for line in f]
        self.assertEqual(steps, [5, 10])
        self.assertIn("mse", read_scalars(os.path.join(self.model_dir, "eval")))

    def test_eval_restores_latest_checkpoint(self):
        tr = _make_trainer(self.model_dir, train_steps=10)
        tr.train()
        expected = tr.evaluate_model(10)["mse"]
        record = _make_trainer(self.model_dir).evaluate()
        self.assertEqual(record["step"], 10)
        self.assertAllClose(record["mse"], expected)

    def test_eval_without_checkpoint_fails_clearly(self):
        with self.assertRaisesRegex(FileNotFoundError, "no checkpoint found"):
            _make_trainer(self.model_dir).evaluate()

    def test_mixed_precision_policies_train(self):
        for policy in ("mixed_bfloat16", "mixed_float16"):
            model_dir = os.path.join(self.model_dir, policy)
            tr = _make_trainer(model_dir, train_steps=5, mixed_precision=policy, hidden_units=4)
            self.assertEqual(tr.model.get_layer("hidden").compute_dtype, policy[6:])
            tr.train()
            self.assertTrue(
                np.isfinite(read_scalars(os.path.join(model_dir, "train"))["total_loss"][5])
            )
        self.assertIsInstance(tr.optimizer, tf_keras.mixed_precision.LossScaleOptimizer)
        tf_keras.mixed_precision.set_global_policy("float32")

    def test_auto_mixed_precision_is_float32_on_cpu(self):
        tr = _make_trainer(self.model_dir, mixed_precision="auto", hidden_units=4)
        self.assertEqual(tr.model.get_layer("hidden").compute_dtype, "float32")
        self.assertNotIsInstance(tr.optimizer, tf_keras.mixed_precision.LossScaleOptimizer)

    def test_rerun_of_a_run_killed_during_its_final_eval_evaluates(self):
        _make_trainer(self.model_dir, train_steps=10, eval_interval=5).train(evaluate=True)
        metrics = os.path.join(self.model_dir, summaries.METRICS_FILE)
        # A kill during the final evaluation leaves ckpt-10 but metrics.json of step 5.
        summaries.write_metrics(self.model_dir, 5, {"mse": 1.0})
        tr = _make_trainer(self.model_dir, train_steps=10, eval_interval=5)
        self.assertEqual(tr.train(evaluate=True), trainer.COMPLETED)
        with open(metrics) as f:
            self.assertEqual(json.load(f)["step"], 10)
        # Killed during the step-5 evaluation: the rerun evaluates step 5, then trains on.
        shutil.rmtree(self.model_dir)
        _make_trainer(self.model_dir, train_steps=5).train()
        tr = _make_trainer(self.model_dir, train_steps=10, eval_interval=5)
        tr.train(evaluate=True)
        with open(os.path.join(self.model_dir, summaries.METRICS_HISTORY_FILE)) as f:
            self.assertEqual([json.loads(line)["step"] for line in f], [5, 10])
        # A finished and evaluated run is not evaluated again.
        tr = _make_trainer(self.model_dir, train_steps=10, eval_interval=5)
        tr.evaluate_model = lambda step: self.fail(f"evaluated step {step} again")
        tr.train(evaluate=True)

    def test_config_gin_is_rewritten_after_eval_with_eval_bindings(self):
        gin.parse_config("eval_only_setting.value = 3")
        task = _EvalConfiguredTask()
        tr = _make_trainer(self.model_dir, train_steps=5, task=task)
        tr.train(evaluate=True)
        with open(os.path.join(self.model_dir, summaries.CONFIG_FILE)) as f:
            self.assertIn("eval_only_setting.value = 3", f.read())

    def test_input_images_come_from_a_per_replica_batch(self):
        calls = []
        task = toy_task.ToyTask()
        build = task.build_inputs

        def recording_build(is_training, input_context=None, start_step=0):
            calls.append((is_training, input_context, start_step))
            return build(is_training, input_context, start_step)

        task.build_inputs = recording_build
        tr = _make_trainer(self.model_dir, train_steps=5, task=task, image_summaries=True)
        tr.train()
        self.assertTrue(calls)
        for _, context, _ in calls:
            # Never the global batch (input_context=None): 256 images with the paper configs.
            self.assertIsNotNone(context, "a dataset was built without an input context")
        tr = _make_trainer(self.model_dir, train_steps=8, task=task, image_summaries=True)
        calls.clear()
        tr.train()
        self.assertEqual({c[2] for c in calls if c[0]}, {5})  # resumed stream, images too

    def test_task_chooses_the_trained_variables(self):
        task = toy_task.ToyTask(hidden_units=4)
        task.trainable_variables = lambda model: model.get_layer("out").trainable_variables
        tr = _make_trainer(self.model_dir, train_steps=5, task=task, weight_decay=0.1)
        hidden = [w.copy() for w in tr.model.get_layer("hidden").get_weights()]
        out = [w.copy() for w in tr.model.get_layer("out").get_weights()]
        tr.train()
        for before, after in zip(hidden, tr.model.get_layer("hidden").get_weights(), strict=True):
            self.assertAllEqual(before, after)  # frozen: no gradient, no weight decay
        self.assertNotAllClose(out[0], tr.model.get_layer("out").get_weights()[0])

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "mixed_precision"):
            _make_trainer(self.model_dir, mixed_precision="fp8")
        with self.assertRaisesRegex(ValueError, "'exact'"):
            _make_trainer(self.model_dir, resume_data_position="skip")
        with self.assertRaisesRegex(ValueError, "train_steps"):
            _make_trainer(self.model_dir, train_steps=0)


if __name__ == "__main__":
    tf.test.main()
