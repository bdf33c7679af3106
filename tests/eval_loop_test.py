"""In-process tests of tfcp.eval_loop (one device; the multi-worker run is in distributed_test)."""

import numpy as np
import tensorflow as tf
import toy_task

from tfcp import eval_loop


class _RecordingTask(toy_task.ToyTask):
    """Toy task whose outputs also hold a string, a 2-D array and a scalar, and which
    records every batch given to `evaluator_update`; eval batches are 4, 4, 3 and 0 examples.
    """

    def __init__(self, fail_at_update=-1):
        super().__init__(global_batch_size=4, num_eval_examples=11)
        self.fail_at_update = fail_at_update
        self.updates = []
        self.steps = tf.Variable(0, dtype=tf.int64)

    def build_inputs(self, is_training, input_context=None, start_step=0):
        ds = super().build_inputs(is_training, input_context, start_step=start_step)
        empty = ds.take(1).map(lambda f, y: tf.nest.map_structure(lambda t: t[:0], (f, y)))
        return ds.concatenate(empty)

    def validation_step(self, model, features, labels):
        self.steps.assign_add(1)
        outputs = super().validation_step(model, features, labels)
        outputs["source_id"] = tf.strings.as_string(features["index"])
        outputs["pair"] = tf.stack([features["x"][:, 0], labels["y"]], axis=1)
        outputs["scalar"] = tf.constant(7, tf.int32)
        return outputs

    def evaluator_update(self, step_outputs):
        if len(self.updates) == self.fail_at_update:
            raise ValueError("bad batch")
        self.updates.append(step_outputs)
        super().evaluator_update(step_outputs)


def _evaluate(task, **kwargs):
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        model = task.build_model()
    model.set_weights([np.full(w.shape, 0.5, np.float32) for w in model.get_weights()])
    dataset = strategy.distribute_datasets_from_function(lambda ctx: task.build_inputs(False, ctx))
    return eval_loop.evaluate(strategy, task, model, dataset, step=3, **kwargs)


class EvaluateTest(tf.test.TestCase):
    def test_gathered_outputs_equal_local_outputs_exactly(self):
        local_task, gathered_task = _RecordingTask(), _RecordingTask()
        local, _ = _evaluate(local_task, chief=True, gather=False)
        gathered, _ = _evaluate(gathered_task, chief=True, gather=True)
        self.assertEqual(gathered, local)
        self.assertEqual((local["num_examples"], local["num_unique_examples"]), (11, 11))
        self.assertEqual([len(u["index"]) for u in gathered_task.updates], [4, 4, 3, 0])
        for want, got in zip(local_task.updates, gathered_task.updates, strict=True):
            self.assertEqual(sorted(got), sorted(want))
            for key in want:
                self.assertEqual(got[key].dtype, want[key].dtype, key)
                self.assertEqual(got[key].shape, want[key].shape, key)
                np.testing.assert_array_equal(got[key], want[key], err_msg=key)
        self.assertEqual(gathered_task.updates[0]["source_id"].tolist(), [b"0", b"1", b"2", b"3"])
        self.assertEqual(gathered_task.updates[3]["pair"].shape, (0, 2))

    def test_images_from_the_first_batch_on_the_chief_only(self):
        _, images = _evaluate(_RecordingTask(), chief=True, gather=True, image_summaries=True)
        self.assertEqual(images.shape, (2, 8, 8, 3))
        _, images = _evaluate(_RecordingTask(), chief=True, gather=True, image_summaries=False)
        self.assertIsNone(images)

    def test_one_worker_raises_an_evaluator_error_at_once(self):
        task = _RecordingTask(fail_at_update=0)
        with self.assertRaisesRegex(ValueError, "bad batch"):
            _evaluate(task, chief=True, gather=False)
        self.assertEqual(int(task.steps.numpy()), 1)

    def test_gathering_chief_raises_its_evaluator_error_after_the_last_step(self):
        # The other workers keep stepping through collectives: the chief must too.
        task = _RecordingTask(fail_at_update=1)
        with self.assertRaisesRegex(ValueError, "bad batch"):
            _evaluate(task, chief=True, gather=True)
        self.assertEqual(int(task.steps.numpy()), 4)
        self.assertLen(task.updates, 1)

    def test_a_non_chief_never_feeds_and_needs_the_chief_metrics(self):
        task = _RecordingTask()
        with self.assertRaisesRegex(RuntimeError, "no worker sent metrics"):
            _evaluate(task, chief=False, gather=True)
        self.assertEqual(task.updates, [])
        self.assertEqual(int(task.steps.numpy()), 4)


class SplitBlobsTest(tf.test.TestCase):
    def test_uneven_and_empty_blobs_come_back_in_order(self):
        blobs = [b"abcde", b"", b"\x00\x01\x02\x03", b"xy"]
        words = [np.frombuffer(b + b"\0" * (-len(b) % 4), "<i4") for b in blobs]
        sizes = np.array([[len(w), len(b)] for w, b in zip(words, blobs, strict=True)], np.int32)
        self.assertEqual(eval_loop._split_blobs(sizes, np.concatenate(words)), blobs)

    def test_inconsistent_sizes_are_an_error(self):
        with self.assertRaisesRegex(ValueError, "gathered 3 words"):
            eval_loop._split_blobs(np.array([[2, 8]], np.int32), np.zeros([3], np.int32))


if __name__ == "__main__":
    tf.test.main()
