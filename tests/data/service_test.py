"""tf.data service (tfcp/data/service.py): the processing modes on in-process servers, and
end to end on localhost: a dispatcher and two workers started by the CLI, `python -m
tfcp.train` reading through them, the workers doing the preprocessing, one of them killed
mid-run without the trainer failing."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from collections import Counter

import tensorflow as tf

from tests import bad_records
from tests.cli_utils import REPO, env, train_cmd, wait_for_log
from tfcp.data import pipeline, records, service


def _write_raw_records(directory, num_files=2, per_file=5):
    """Files of opaque records (the record reader never decodes them)."""
    paths = []
    for f in range(num_files):
        path = os.path.join(directory, f"raw-{f}.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for i in range(per_file):
                writer.write(f"{f}:{i}".encode())
        paths.append(path)
    return paths


def _positions_and_records(dataset, count):
    return [(int(p), r.numpy().decode()) for p, r in dataset.take(count)]


class ServiceLibraryTest(unittest.TestCase):
    def test_job_name_per_pipeline_and_start_step(self):
        self.assertIsNone(service.job_name(None, 3, 100))
        self.assertEqual(service.job_name("coco", 3, 100), "coco-p3-s100")
        self.assertNotEqual(service.job_name("coco", 0, 0), service.job_name("coco", 1, 0))
        for bad in ("", "a/b"):
            with self.assertRaisesRegex(ValueError, "job name"):
                service.job_name(bad, 0, 0)

    def test_taken_port_is_refused(self):
        with socket.socket() as taken:
            taken.bind(("localhost", 0))
            taken.listen()
            with self.assertRaisesRegex(ValueError, "is in use"):
                service.check_port_free(taken.getsockname()[1])
        service.check_port_free(0)

    def test_bad_settings_fail_clearly(self):
        dataset = tf.data.Dataset.range(4)
        with self.assertRaisesRegex(ValueError, "processing_mode must be one of"):
            service.distribute(dataset, "localhost:1", processing_mode="dynamic")
        with self.assertRaisesRegex(ValueError, "host:port"):
            service.distribute(dataset, "")
        with self.assertRaisesRegex(ValueError, "needs a work_dir"):
            service.start_dispatcher(0, None, fault_tolerant_mode=True)
        with self.assertRaisesRegex(ValueError, "evaluation reads its records locally"):
            pipeline.build_dataset("/nonexistent/*", is_training=False, data_service_address="h:1")


class ProcessingModeTest(unittest.TestCase):
    """What each mode does to tfcp's seeded record stream, on in-process servers."""

    def setUp(self):
        tmp = tempfile.mkdtemp()
        self.files = _write_raw_records(tmp)
        dispatcher = service.start_dispatcher(0, os.path.join(tmp, "work"))  # fault-tolerant
        self.addCleanup(dispatcher.stop)
        self.address = service.dispatcher_address(dispatcher)

    def _stream(self):
        dataset, _ = records.read(
            self.files, is_training=True, seed=3, shuffle_buffer=4, input_context=None,
            batch_size=1,
        )  # fmt: skip
        return dataset.map(lambda position, name, serialized: (position, serialized))

    def _wait_for_tasks(self, workers, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline and not all(w._num_tasks() for w in workers):
            time.sleep(0.1)

    def test_distributed_epoch_shares_the_stream_without_duplicates(self):
        workers = [service.start_worker(self.address) for _ in range(2)]
        self.addCleanup(lambda: [w.stop() for w in workers])
        dataset = service.distribute(self._stream(), self.address)
        iterator = iter(dataset)
        self._wait_for_tasks(workers)
        got = [(int(p), r.numpy().decode()) for p, r in (next(iterator) for _ in range(200))]
        self.assertTrue(all(w._num_tasks() == 1 for w in workers))
        positions = Counter(p for p, _ in got)
        self.assertEqual(max(positions.values()), 1)  # every augmentation seed used once
        # Whole epochs (10 records) go to one worker each: every record about equally often.
        by_record = Counter(r for _, r in got)
        self.assertEqual(len(by_record), 10)
        self.assertLessEqual(max(by_record.values()) - min(by_record.values()), 4)

    def test_parallel_epochs_with_one_worker_is_the_local_stream(self):
        worker = service.start_worker(self.address)
        self.addCleanup(worker.stop)
        local = _positions_and_records(self._stream(), 25)
        remote = service.distribute(self._stream(), self.address, processing_mode="parallel_epochs")
        self.assertEqual(_positions_and_records(remote, 25), local)


def _start(cmd, log_path):
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, env=env(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return proc


def _read(path):
    with open(path) as f:
        return f.read()


class ServiceEndToEndTest(unittest.TestCase):
    def test_train_through_two_workers_and_survive_a_worker_crash(self):
        tmp = tempfile.mkdtemp()
        logs = {name: os.path.join(tmp, f"{name}.log") for name in ("d", "w0", "w1", "train")}
        procs = {}

        def start(name, cmd):
            procs[name] = _start(cmd, logs[name])
            self.addCleanup(lambda p=procs[name]: p.poll() is None and p.kill())

        cli = [sys.executable, "-m", "tfcp.data.service"]
        start("d", cli + ["dispatcher", "--port", "0", "--work_dir", os.path.join(tmp, "work")])
        address = wait_for_log(procs["d"], logs["d"], r"dispatcher at (\S+) \(")[1]
        for name in ("w0", "w1"):
            start(name, cli + ["worker", "--dispatcher_address", address, "--port", "0"])
        # Training data: good records and one bad one (named when skipped, see below).
        data = bad_records.write_records(
            os.path.join(tmp, "train.tfrecord"), ["good"] * 5 + ["nan_box"], image_size=128
        )
        bad_name = f"bad record {data.path}:5 (source_id 5-nan_box)"
        for name in ("w0", "w1"):
            wait_for_log(procs[name], logs[name], r"worker at \S+")
        # A worker runs ~25 batches ahead of its reader: most steps come after the crash, more
        # than the survivor's and the trainer's buffers hold.
        steps = 80
        bindings = [
            f"TRAIN_FILES='{data.path}'",
            "EVAL_FILES='/nonexistent/val*'",  # train mode: never read
            "EVAL_ANNOTATIONS='/nonexistent/val.json'",
            "NUM_CLASSES=4",
            f"TRAIN_STEPS={steps}",
            f"DATA_SERVICE_ADDRESS='{address}'",
            "train/build_dataset.on_bad_record='skip'",
            "tfcp.Trainer.steps_per_loop=1",
            "tfcp.Trainer.log_interval=1",
        ]
        model_dir = os.path.join(tmp, "model")
        start("train", train_cmd(model_dir, ["demo/maskrcnn_tiny_copy_paste.gin"], bindings))
        wait_for_log(procs["train"], logs["train"], rf"step 2/{steps} \|", timeout=600)
        procs["w0"].kill()  # SIGKILL: no goodbye to the dispatcher
        procs["w0"].wait(30)
        survivor_epochs_at_crash = _read(logs["w1"]).count(bad_name)
        wait_for_log(procs["train"], logs["train"], rf"step {steps}/{steps} \|", timeout=600)
        self.assertEqual(procs["train"].wait(120), 0, _read(logs["train"])[-3000:])
        trainer_log = _read(logs["train"])
        self.assertIn("distributed_epoch: batches arrive in the order", trainer_log)
        self.assertEqual(tf.train.latest_checkpoint(model_dir), f"{model_dir}/ckpt-{steps}")
        # The workers decoded and validated the records: the skipped bad record is named in
        # their logs; the trainer decoded nothing, so it never met it.
        # Each epoch (6 records) has one bad record: a skip line per epoch a worker read.
        for name in ("w0", "w1"):
            self.assertIn(f'WARNING: skipping "{bad_name}: box 1 is NaN"', _read(logs[name]))
        self.assertNotIn("skipping", trainer_log)
        self.assertNotIn("bad training record(s) skipped", trainer_log)
        # After the crash the survivor kept reading epochs for the trainer.
        survivor_epochs = _read(logs["w1"]).count(bad_name)
        self.assertGreater(survivor_epochs, survivor_epochs_at_crash, "no epoch after the crash")
        # The survivors stop cleanly on SIGTERM.
        for name in ("w1", "d"):
            procs[name].send_signal(signal.SIGTERM)
            self.assertEqual(procs[name].wait(60), 0)
            self.assertIn(f"stopped (signal {int(signal.SIGTERM)})", _read(logs[name]))


if __name__ == "__main__":
    unittest.main()
