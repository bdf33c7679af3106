"""Tests for tfcp.optimization: linear scaling, warm-up + step decay, SGD builder."""

import math

import gin
import tensorflow as tf
import tf_keras

from tfcp import optimization


class ScheduleTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        gin.clear_config()

    def test_linear_scaling_rule(self):
        self.assertAllClose(optimization.scale_learning_rate(0.32, 256, 256), 0.32)
        self.assertAllClose(optimization.scale_learning_rate(0.32, 256, 64), 0.08)
        with self.assertRaisesRegex(ValueError, "positive"):
            optimization.scale_learning_rate(0.32, 256, 0)

    def test_paper_schedule_values(self):
        lr = optimization.build_learning_rate(train_steps=10000, global_batch_size=256)
        self.assertEqual(lr.boundaries, [9000, 9500, 9750])
        expected = {
            0: 0.0032,
            500: 0.0032 + (0.32 - 0.0032) * 0.5,
            1000: 0.32,
            8999: 0.32,
            9000: 0.032,
            9499: 0.032,
            9500: 0.0032,
            9750: 0.00032,
            10000: 0.00032,
        }
        for step, value in expected.items():
            self.assertAllClose(float(lr(step)), value, rtol=1e-5, msg=f"step {step}")

    def test_batch_scaling_applies_to_warmup_and_schedule_is_monotone_after_warmup(self):
        lr = optimization.build_learning_rate(
            train_steps=100, global_batch_size=64, warmup_steps=10, warmup_learning_rate=0.0032
        )
        self.assertAllClose(float(lr(0)), 0.0008)
        self.assertAllClose(float(lr(10)), 0.08)
        values = [float(lr(s)) for s in range(10, 101)]
        self.assertTrue(all(a >= b for a, b in zip(values, values[1:], strict=False)))

    def test_warmup_longer_than_training_is_clipped(self):
        lr = optimization.build_learning_rate(train_steps=4, global_batch_size=8, warmup_steps=1000)
        self.assertEqual(lr.warmup_steps, 4)

    def test_no_warmup(self):
        lr = optimization.WarmupStepDecay(0.1, 0.0, 0, [5])
        self.assertAllClose([float(lr(s)) for s in (0, 4, 5)], [0.1, 0.1, 0.01])

    def test_cosine_schedule_values(self):
        """CP2 / MoCo v2: 0.015 per 256, lr * 0.5 * (1 + cos(pi t)), per step or per epoch."""
        lr = optimization.build_cosine_learning_rate(train_steps=100, global_batch_size=512)
        expected = [0.03 * 0.5 * (1 + math.cos(math.pi * s / 100)) for s in (0, 25, 50, 99, 100)]
        self.assertAllClose([float(lr(s)) for s in (0, 25, 50, 99, 100)], expected)
        self.assertAllClose(float(lr(50)), 0.015)
        per_epoch = optimization.build_cosine_learning_rate(
            train_steps=100, global_batch_size=256, steps_per_epoch=10
        )
        # Constant within an epoch, the reference's adjust_learning_rate at the epoch start.
        self.assertAllClose(
            [float(per_epoch(s)) for s in (20, 29)],
            [0.015 * 0.5 * (1 + math.cos(0.2 * math.pi))] * 2,
        )
        warm = optimization.WarmupCosineDecay(0.1, 110, warmup_steps=10)
        self.assertAllClose([float(warm(s)) for s in (0, 5, 10, 60, 110)], [0, 0.05, 0.1, 0.05, 0])
        with self.assertRaisesRegex(ValueError, "warmup_steps < train_steps"):
            optimization.WarmupCosineDecay(0.1, 10, warmup_steps=10)

    def test_invalid_arguments(self):
        with self.assertRaisesRegex(ValueError, "increasing"):
            optimization.WarmupStepDecay(0.1, 0.0, 0, [5, 3])
        with self.assertRaisesRegex(ValueError, "decay_fractions"):
            optimization.build_learning_rate(
                train_steps=10, global_batch_size=8, decay_fractions=(1.5,)
            )

    def test_gin_configured_optimizer(self):
        gin.parse_config(
            """
            tfcp.build_learning_rate.train_steps = 100
            tfcp.build_learning_rate.global_batch_size = 64
            tfcp.build_optimizer.learning_rate = @tfcp.build_learning_rate()
            """
        )
        opt = optimization.build_optimizer()
        self.assertIsInstance(opt, tf_keras.optimizers.SGD)
        self.assertAllClose(opt.momentum, 0.9)
        schedule = opt._learning_rate
        self.assertAllClose(float(schedule(1000)), 0.08 * 0.001)  # after all 3 decays

    def test_sgd_momentum_update(self):
        var = tf.Variable([1.0])
        opt = optimization.build_optimizer(learning_rate=0.1)
        for _ in range(2):
            opt.apply_gradients([(tf.constant([1.0]), var)])
        # v1 = -0.1, w1 = 0.9; v2 = 0.9 * -0.1 - 0.1 = -0.19, w2 = 0.71.
        self.assertAllClose(var.numpy(), [0.71])
