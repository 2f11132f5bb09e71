"""Fixtures shared by the test modules."""

import json
import os
import queue
import subprocess
import sys
import threading

import pytest

# Runs each request (a script and its arguments, one JSON line on stdin) as `python -c
# SCRIPT ARGS...` would, and answers with one JSON line. Nothing but the scripts is imported.
_SERVER = r"""
import contextlib, io, json, sys, traceback
answer = sys.stdout
for line in sys.stdin:
    request = json.loads(line)
    out, err = io.StringIO(), io.StringIO()
    sys.argv = ["-c", *request["args"]]
    status = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            exec(compile(request["script"], "<string>", "exec"), {"__name__": "__main__"})
        except SystemExit as stop:
            status = stop.code if isinstance(stop.code, int) else 1
        except BaseException:
            status = 1
            traceback.print_exc()
    answer.write(json.dumps({"returncode": status, "stdout": out.getvalue(),
                             "stderr": err.getvalue()}) + "\n")
    answer.flush()
"""


class PythonWithoutTfpFlows:
    """One Python process, started once, in which scripts run as with `python -c`.

    Loading a SavedModel "without tfp_flows" needs a process that never imported it; this
    one pays TensorFlow's start-up once for every such check. Its environment has no
    PYTHONPATH and its working directory is empty, so only an installed tfp_flows could be
    imported at all, and the scripts check that it was not.
    """

    def __init__(self, directory):
        self._log = os.path.join(directory, "stderr.txt")
        with open(self._log, "w") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _SERVER], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=log, text=True, cwd=directory,
                env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
        self._answers = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self._process.stdout:
            self._answers.put(line)
        self._answers.put(None)  # the process ended

    def run(self, script, *args, timeout=300):
        """Runs `script` with `sys.argv[1:] == args` -> a `subprocess.CompletedProcess`."""
        self._process.stdin.write(json.dumps({"script": script, "args": list(args)}) + "\n")
        self._process.stdin.flush()
        try:
            line = self._answers.get(timeout=timeout)
        except queue.Empty:
            self.close()
            pytest.fail(f"the script did not finish in {timeout} s")
        if line is None:
            with open(self._log) as log:
                pytest.fail(f"the Python process ended: {log.read()[-3000:]}")
        answer = json.loads(line)
        return subprocess.CompletedProcess(["python", "-c", script, *args],
                                           answer["returncode"], answer["stdout"],
                                           answer["stderr"])

    def close(self):
        if self._process.poll() is None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


@pytest.fixture(scope="session")
def python_without_tfp_flows(tmp_path_factory):
    """A `PythonWithoutTfpFlows` shared by the session's tests."""
    runner = PythonWithoutTfpFlows(str(tmp_path_factory.mktemp("python_without_tfp_flows")))
    yield runner
    runner.close()
