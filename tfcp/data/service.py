r"""tf.data service: run tfcp's training input pipeline on other processes or machines.

Host preprocessing for Mask R-CNN with Copy-Paste (decode, scale jitter, pasting, anchor
and mask targets) costs ~0.1 s of CPU per 1024 px image; an accelerator needs hundreds of
images per second. TensorFlow's tf.data service moves that work to any number of CPU
workers: a dispatcher hands out the work, workers run the pipeline and stream finished
batches back to the trainer.

  # one dispatcher (keeps its state in --work_dir and survives restarts):
  python -m tfcp.data.service dispatcher --port 5050 --work_dir /tmp/tfdata_service
  # as many workers as needed, on any host that can read the TFRecords:
  python -m tfcp.data.service worker --dispatcher_address dispatcher-host:5050 --port 5051
  # the trainer (single host, or every worker of a multi-worker run); every data/*.gin
  # includes data/service.gin, which defines the macro (None: local input):
  python -m tfcp.train --gin_file=experiments/... \
      --gin_bindings="DATA_SERVICE_ADDRESS='dispatcher-host:5050'" --model_dir=M

`train/build_dataset.data_service_address` (gin macro DATA_SERVICE_ADDRESS, None = local
input, gin_configs/data/service.gin) appends `distribute` to the training pipeline after
batching, so everything up to the per-replica batch runs on the workers; the trainer only
receives batches. Evaluation stays local (one ordered pass, every image exactly once).
Each input pipeline of a multi-worker run registers its own dataset (its shard of the
records, its own seeds), hence its own job, spread over all service workers.

Processing modes (`processing_mode`):

- 'distributed_epoch' (default, `ShardingPolicy.DYNAMIC`): the dispatcher splits the record
  stream's sources among the workers on demand: each worker reads whole epochs of the
  (seeded, shuffled) record order, and every stream position, hence every augmentation
  seed, is handed out once. No record is duplicated; workers may join or leave at any
  time. It costs one small dispatcher RPC per record (a position), nothing next to the
  ~0.1 s of preprocessing of a real image, and in fault-tolerant mode ~25 bytes of
  dispatcher journal per record (~100 MB for 36 COCO epochs).
- 'parallel_epochs' (`ShardingPolicy.OFF`, Model Garden's choice): every worker runs the
  whole pipeline. tfcp's stream is a pure function of (seed, position), so every worker
  produces the same batches: with one worker the trainer gets exactly the local stream
  (same batches, same order, exact resume); with N workers it gets each batch up to N
  times. Use it only with a single worker.

Determinism and resume with 'distributed_epoch': batches arrive in the order the workers
finish them, so which records are paired for Copy-Paste, which augmentation seed (stream
position) meets which record, and the batch order all depend on timing: the same seed no
longer gives the same batches, and a resumed run (`start_step`) starts its stream near,
not exactly at, the place an uninterrupted run would be (the positions after the step,
the epoch holding that position; records that were in flight are not replayed). The
pipeline logs a warning saying so when it is built.

What a worker crash costs: the trainer does not fail and does not stall visibly; it keeps
reading from the other workers (and waits, if none is left, until one registers). What
the crashed worker had prepared is lost: its buffered batches (a worker runs ~25 batches
ahead of its reader) and, with 'distributed_epoch', the rest of the epoch it was reading,
which is not visited in that epoch (at-most-once visitation; no record is read twice,
later epochs are whole). A restarted worker registers again and gets new splits. The
dispatcher, started with --work_dir, journals its state (fault-tolerant mode): killed and
restarted on the same port and work_dir, its jobs go on (readers wait meanwhile).

Bad records with `on_bad_record='skip'` are skipped and named in the workers' logs; the
trainer's `bad_records_skipped` counter (log, TensorBoard, metrics.json) does not see them.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading

import tensorflow as tf
from absl import logging

PROCESSING_MODES = ("distributed_epoch", "parallel_epochs")


def start_dispatcher(
    port: int = 0,
    work_dir: str | None = None,
    fault_tolerant_mode: bool | None = None,
    worker_timeout_ms: int | None = None,
) -> tf.data.experimental.service.DispatchServer:
    """Starts a tf.data service dispatcher in this process.

    Args:
      port: port to bind (0: any free port; read it from `dispatcher_address`).
      work_dir: directory for the dispatcher's state (datasets, jobs); created if missing.
      fault_tolerant_mode: journal the state to `work_dir` before answering each RPC, so a
        restarted dispatcher resumes its jobs. Default: on when `work_dir` is given.
      worker_timeout_ms: how long a worker may miss heartbeats before it is dropped and its
        work reassigned (None: TensorFlow's default).

    Returns:
      The started `DispatchServer`.

    Raises:
      ValueError: fault-tolerant mode without a `work_dir`.
    """
    if fault_tolerant_mode is None:
        fault_tolerant_mode = work_dir is not None
    if fault_tolerant_mode and not work_dir:
        raise ValueError("a fault-tolerant dispatcher needs a work_dir for its journal")
    if work_dir:
        tf.io.gfile.makedirs(work_dir)
    config = tf.data.experimental.service.DispatcherConfig(
        port=int(port),
        work_dir=work_dir,
        fault_tolerant_mode=bool(fault_tolerant_mode),
        worker_timeout_ms=worker_timeout_ms,
    )
    return tf.data.experimental.service.DispatchServer(config)


def dispatcher_address(server: tf.data.experimental.service.DispatchServer) -> str:
    """'host:port' of a dispatcher started in this process (its `target` without protocol)."""
    return server.target.split("://", 1)[-1]


def start_worker(
    dispatcher: str, port: int = 0, worker_address: str | None = None
) -> tf.data.experimental.service.WorkerServer:
    """Starts a tf.data service worker in this process.

    Args:
      dispatcher: the dispatcher's 'host:port' (a 'grpc://' prefix is accepted).
      port: port to bind (0: any free port).
      worker_address: the address the dispatcher gives to trainers for this worker
        ('host:port', '%port%' stands for the bound port); default 'localhost:%port%',
        which only trainers on the same host can reach: pass this host's name for others.

    Returns:
      The started `WorkerServer`.
    """
    config = tf.data.experimental.service.WorkerConfig(
        dispatcher_address=dispatcher.split("://", 1)[-1],
        worker_address=worker_address,
        port=int(port),
    )
    return tf.data.experimental.service.WorkerServer(config)


def worker_address(
    server: tf.data.experimental.service.WorkerServer, configured: str | None = None
) -> str:
    """The address trainers reach a worker started in this process at.

    Args:
      server: the worker.
      configured: its `worker_address` setting (None: 'localhost:%port%').
    """
    # TF has no public accessor for the bound port; `_address` is 'localhost:<port>'.
    port = server._address.rsplit(":", 1)[-1]  # noqa: SLF001
    return (configured or "localhost:%port%").replace("%port%", port)


def job_name(name: str | None, pipeline_id: int, start_step: int) -> str | None:
    """The job name of one input pipeline: None (anonymous jobs) or '<name>-p<id>-s<step>'.

    Input pipelines register different datasets (their own record shards and seeds), so
    they must not share a job; a resumed run (another `start_step`) registers another
    dataset, so it gets another job too. Trainers that build the same pipeline with the
    same name share its job and split its batches between them.
    """
    if name is None:
        return None
    if not name or "/" in name:
        raise ValueError(f"data service job name must be a non-empty string without '/': {name!r}")
    return f"{name}-p{int(pipeline_id)}-s{int(start_step)}"


def distribute(
    dataset: tf.data.Dataset,
    address: str,
    *,
    processing_mode: str = "distributed_epoch",
    job_name: str | None = None,
) -> tf.data.Dataset:
    """Runs `dataset` on the tf.data service at `address` (see the module doc).

    Args:
      dataset: the training pipeline up to its batches.
      address: the dispatcher, '[grpc://]host:port'.
      processing_mode: one of `PROCESSING_MODES`.
      job_name: None for an anonymous job owned by this iterator, else a shared job (see
        `job_name` above for the name of a pipeline's job).

    Returns:
      A dataset with the same element spec whose elements are produced by the workers.

    Raises:
      ValueError: an empty address or an unknown processing mode.
    """
    if not address:
        raise ValueError("data service address must be 'host:port'")
    if processing_mode not in PROCESSING_MODES:
        raise ValueError(
            f"data service processing_mode must be one of {PROCESSING_MODES}, "
            f"got {processing_mode!r}"
        )
    if "://" not in address:
        address = f"grpc://{address}"
    if processing_mode == "parallel_epochs":
        logging.warning(
            "tf.data service %s, parallel_epochs: every worker produces the same batches "
            "(tfcp's stream is seeded); with more than one worker the trainer sees each "
            "batch once per worker. Use distributed_epoch for several workers.",
            address,
        )
    else:
        logging.warning(
            "tf.data service %s, distributed_epoch: batches arrive in the order the workers "
            "finish them, so the same seed no longer gives the same batches and a resumed "
            "run does not replay the exact stream (see tfcp/data/service.py).",
            address,
        )
    return dataset.apply(
        tf.data.experimental.service.distribute(
            processing_mode=processing_mode, service=address, job_name=job_name
        )
    )


def wait_for_signal(stop_event: threading.Event | None = None) -> int:
    """Blocks until SIGTERM or SIGINT (or `stop_event` is set); returns the signal (or 0).

    The CLI then exits without `server.stop()`: stopping saves nothing (a worker keeps no
    state, the dispatcher reassigns its work when its heartbeats stop; the dispatcher
    journals its state before each reply) and TF's stop can block for ~40 s, holding the
    GIL, when a worker still has a task whose reader is gone.
    """
    stop_event = stop_event or threading.Event()
    received = []

    def handler(signum, frame):
        del frame
        received.append(signum)
        stop_event.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stop_event.wait(0.5):
            pass
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    return received[0] if received else 0


def check_port_free(port: int) -> None:
    """Raises ValueError if another process listens on `port` (0 is always free).

    gRPC binds with SO_REUSEPORT, so a second server on a taken port would start silently
    and share the port with the first; a plain bind finds the conflict.
    """
    if not port:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("", int(port)))
        except OSError as e:
            raise ValueError(f"port {port} is in use ({e.strerror})") from None


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m tfcp.data.service",
        description="Start a tf.data service dispatcher or worker (runs until SIGTERM/SIGINT).",
    )
    sub = parser.add_subparsers(dest="role", required=True)
    d = sub.add_parser("dispatcher", help="hands out the work and tracks the workers")
    d.add_argument("--port", type=int, default=5050, help="port to bind (0: any free port)")
    d.add_argument("--work_dir", default=None, help="state journal (fault-tolerant mode)")
    d.add_argument(
        "--worker_timeout_ms", type=int, default=None, help="drop a silent worker after this"
    )
    w = sub.add_parser("worker", help="runs the input pipelines")
    w.add_argument("--dispatcher_address", required=True, help="the dispatcher's host:port")
    w.add_argument("--port", type=int, default=0, help="port to bind (0: any free port)")
    w.add_argument(
        "--worker_address",
        default=None,
        help="address trainers use to reach this worker (default localhost:%%port%%)",
    )
    return parser.parse_args(argv)


def main(argv=None) -> None:
    """CLI: `python -m tfcp.data.service dispatcher|worker ...`; exits 0 after SIGTERM/SIGINT."""
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    try:
        check_port_free(args.port)
        if args.role == "dispatcher":
            server = start_dispatcher(args.port, args.work_dir, None, args.worker_timeout_ms)
            address = dispatcher_address(server)
            mode = f"work_dir {args.work_dir}, fault-tolerant" if args.work_dir else "no work_dir"
        else:
            server = start_worker(args.dispatcher_address, args.port, args.worker_address)
            address = worker_address(server, args.worker_address)
            mode = f"dispatcher {args.dispatcher_address}"
    except (tf.errors.OpError, ValueError) as e:  # e.g. the port is taken
        sys.exit(f"ERROR: tf.data service {args.role} did not start: {e}")
    print(f"tf.data service {args.role} at {address} ({mode})", flush=True)
    signum = wait_for_signal()
    print(f"tf.data service {args.role} stopped (signal {signum})", flush=True)
    sys.stderr.flush()
    # No interpreter teardown either: the server's destructor would call TF's stop.
    os._exit(0)


if __name__ == "__main__":
    main()
