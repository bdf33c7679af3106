r"""A clean console for the tfcp CLIs: TensorFlow's C++ and absl log noise stays out.

Every CLI calls `setup()` first, before TensorFlow is imported:

  if __name__ == "__main__":
      console.setup()

Sources of noise (TF 2.20 on a CPU machine) and what silences each:

* TF C++ (tsl) logging, `2026-01-02 10:00:00.0: I tensorflow/...` (cuda stubs, oneDNN and
  CPU-feature notices, tf.data notes): `TF_CPP_MIN_LOG_LEVEL=2`, set here before TensorFlow
  is imported unless the user set it. It keeps E lines; `=3` would also drop real errors
  (e.g. events_writer.cc "Failed to flush N events"), so it is not used.
* E-level lines that are not errors: `failed call to cuInit` (a CUDA build on a machine
  without an NVIDIA device) and "oneDNN supports DT_UINT8 (or DT_BOOL) only on platforms
  with AVX-512"
  (a fallback notice). No level hides them without hiding real errors: the stderr filter
  below drops exactly these messages (cuInit only when no /dev/nvidiactl exists or
  CUDA_VISIBLE_DEVICES hides every GPU, so a broken driver on a GPU machine still shows).
* absl C++ logging, `W0000 00:00:1700000000.0 123 op_level_cost_estimator.cc:699] Error in
  PredictCost() ...` with a full protobuf (grappler, once per uint8 CropAndResize in
  tf.data): TensorFlow never calls absl::InitializeLog, and TF_CPP_MIN_LOG_LEVEL does not
  reach this logger at any level. absl::SetMinLogLevel (through ctypes and a
  version-mangled symbol of libtensorflow_framework) would; the stderr filter, needed
  anyway for the E lines above, instead drops absl I/W lines below the same
  TF_CPP_MIN_LOG_LEVEL (and the "All log messages before absl::InitializeLog()" banner).
* Python absl INFO lines of other packages (Model Garden's `fpn.py:109] FPN input_specs`,
  TensorFlow's `functional_saver.py`): a filter on the absl handler drops INFO and DEBUG
  records logged from site-packages outside tfcp. tfcp's own INFO (the trainer's
  `step N/M | loss ...` lines) and every WARNING/ERROR stay.

The stderr filter is a child process reading fd 2 through a pipe (a pty when stderr is a
terminal, so progress lines keep redrawing in place) and writing every other byte to the
real stderr unchanged. A process, not a thread: output written just before an abort
(a C++ check failure) still reaches the console. Python tracebacks pass untouched.

`TFCP_VERBOSE=1` or `--verbosity=1` (absl's flag, any value >= 1) turns all of this off.
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence

VERBOSE_ENV = "TFCP_VERBOSE"
_TSL_HEAD = rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: "
# The starts of C++ log lines, one allowed byte set per position (absl, tsl, absl banner):
# a partial line that may still become one is held back until it is complete.
_DIGIT, _SEVERITY = b"0123456789", b"IWEF"
_LOG_HEADS = (
    (_SEVERITY, *[_DIGIT] * 4, b" "),
    (*[_DIGIT] * 4, b"-", _DIGIT, _DIGIT, b"-", _DIGIT, _DIGIT, b" ", _DIGIT, _DIGIT, b":")
    + (_DIGIT, _DIGIT, b":", _DIGIT, _DIGIT, b".", *[_DIGIT] * 6, b":", b" ", _SEVERITY, b" "),
    tuple(bytes([c]) for c in b"WARNING: All log messages"),
)
_ABSL_CPP = re.compile(rb"([IW])0000 00:00:\d+\.\d+ +\d+ [\w.+-]+:\d+\] ")
_ABSL_BANNER = re.compile(
    rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
)
_ONEDNN_UINT8 = re.compile(
    _TSL_HEAD + rb"E \S+\] oneDNN supports DT_\w+ only on platforms with AVX-512"
)
_CUINIT = re.compile(_TSL_HEAD + rb"E \S+\] failed call to cuInit: ")
_UNITS = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")
_state: dict = {}


def is_verbose(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None):
    """True when `TFCP_VERBOSE` is set (not 0/false/no) or argv has `--verbosity` >= 1."""
    argv = sys.argv[1:] if argv is None else argv
    environ = os.environ if environ is None else environ
    if environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no"):
        return True
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        match = re.fullmatch(r"--?(?:v|verbosity)(?:=(.*))?", arg)
        if match:
            value = match.group(1)
            if value is None and i + 1 < len(argv):
                value = argv[i + 1]
            try:
                return int(value) >= 1
            except (TypeError, ValueError):
                return False  # absl reports the bad value
    return False


def is_noise(line: bytes, min_level: int = 2, drop_cuinit: bool = True) -> bool:
    """Whether one stderr line (bytes, with or without its newline) is known noise.

    Args:
      line: the line.
      min_level: TF_CPP_MIN_LOG_LEVEL; absl C++ INFO (0) and WARNING (1) lines below it go.
      drop_cuinit: drop TensorFlow's `failed call to cuInit` error line.
    """
    absl_cpp = _ABSL_CPP.match(line)
    if absl_cpp:
        return "IW".index(absl_cpp.group(1).decode()) < min_level
    return bool(
        _ABSL_BANNER.match(line)
        or _ONEDNN_UINT8.match(line)
        or (drop_cuinit and _CUINIT.match(line))
    )


def _may_be_log_line(start: bytes) -> bool:
    """Whether a line starting with `start` may be a C++ log line (see _LOG_HEADS)."""
    heads = (zip(start, head, strict=False) for head in _LOG_HEADS)  # up to the shorter
    return any(all(c in allowed for c, allowed in pairs) for pairs in heads)


class LineFilter:
    """Drops noise lines from a byte stream; everything else passes unchanged.

    Lines end in \\n or \\r. A partial line is held only while it may be a C++ log line;
    any other partial line (a progress line redrawn with \\r) is passed on at once.
    """

    def __init__(self, drop: Callable[[bytes], bool] = is_noise):
        self._drop = drop
        self._held = b""
        self._passing = False  # the start of the current line was already passed on

    def feed(self, data: bytes) -> bytes:
        """Returns the bytes of `data` (plus held ones) to write now."""
        out = []
        data, self._held = self._held + data, b""
        for unit in _UNITS.findall(data):
            complete = unit.endswith((b"\n", b"\r"))
            if self._passing:
                out.append(unit)
                self._passing = not complete
            elif complete:
                if not self._drop(unit):
                    out.append(unit)
            elif _may_be_log_line(unit):
                self._held = unit
            else:
                out.append(unit)
                self._passing = True
        return b"".join(out)

    def close(self) -> bytes:
        """The held partial line at the end of the stream (unless it is noise)."""
        held, self._held = self._held, b""
        return b"" if not held or self._drop(held) else held


def _drop_cuinit(environ: Mapping[str, str]) -> bool:
    """No NVIDIA device, or CUDA_VISIBLE_DEVICES hides them all: cuInit's error is noise."""
    hidden = environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1")
    return hidden or not os.path.exists("/dev/nvidiactl")


def setup(argv: Sequence[str] | None = None) -> bool:
    """Quiets TF's C++/absl noise for this process and its children (see module doc).

    Call before TensorFlow is imported. Does nothing when verbose (`is_verbose`) or when
    already set up.

    Returns:
      True if the console is being filtered.
    """
    if "filter" in _state:
        return _state["filter"]
    _state["filter"] = False
    if is_verbose(argv):
        return False
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        min_level = int(os.environ["TF_CPP_MIN_LOG_LEVEL"])
    except ValueError:
        min_level = 2
    _quiet_third_party_info()
    _state["filter"] = _filter_stderr(min_level, _drop_cuinit(os.environ))
    return _state["filter"]


def _quiet_third_party_info() -> None:
    import logging
    import sysconfig

    from absl import logging as absl_logging

    own = os.path.dirname(os.path.realpath(__file__)) + os.sep
    roots = tuple(
        os.path.realpath(p) + os.sep
        for p in {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    )

    @functools.cache
    def third_party(pathname: str) -> bool:
        path = os.path.realpath(pathname)
        return path.startswith(roots) and not path.startswith(own)

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not third_party(record.pathname)

    absl_logging.get_absl_handler().addFilter(keep)


def _terminal() -> tuple[int, int]:
    """A pty (master, slave) passing bytes as written, so the CLI still sees a terminal."""
    try:
        import pty
        import termios

        master, slave = pty.openpty()
        attrs = termios.tcgetattr(slave)
        attrs[1] &= ~termios.OPOST  # no \n -> \r\n: bytes reach the terminal as written
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        return master, slave
    except (ImportError, OSError):
        return os.pipe()


def _filter_stderr(min_level: int, drop_cuinit: bool) -> bool:
    """Routes fd 2 through the filter process; restores it (and drains) at exit."""
    script = os.path.abspath(__file__)
    if not sys.executable or not os.path.isfile(script):
        return False  # e.g. a zipped install: no filter rather than a broken stderr
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except OSError:
        return False
    read_end, write_end = _terminal() if os.isatty(saved) else os.pipe()
    try:
        child = subprocess.Popen(
            [sys.executable, "-I", "-S", script, str(min_level), str(drop_cuinit)],
            stdin=read_end,
            stdout=saved,
            stderr=saved,
            start_new_session=True,  # Ctrl-C goes to the CLI, not to its console
        )
    except OSError:
        for fd in (read_end, write_end, saved):
            os.close(fd)
        return False
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)

    def restore() -> None:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)  # closes our end of the pipe: the filter drains and exits
        try:
            child.wait(timeout=2)  # longer only if a child process still holds the pipe
        except subprocess.TimeoutExpired:
            pass

    atexit.register(restore)
    return True


def _filter_main(argv: Sequence[str]) -> int:
    """The filter process: stdin -> stdout minus noise lines."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # ends at EOF, when every writer is gone
    line_filter = LineFilter(
        functools.partial(is_noise, min_level=int(argv[0]), drop_cuinit=argv[1] == "True")
    )
    writable = True
    while True:
        try:
            data = os.read(0, 1 << 16)
        except OSError:  # EIO: the pty's other side is closed
            data = b""
        try:
            out = line_filter.feed(data) if data else line_filter.close()
        except Exception:  # never lose output to a bug here
            out = data
        while out and writable:
            try:
                out = out[os.write(1, out) :]
            except OSError:
                writable = False  # the console is gone; keep draining the writers
        if not data:
            return 0


if __name__ == "__main__":
    sys.exit(_filter_main(sys.argv[1:]))
