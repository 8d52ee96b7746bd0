"""Running a test's subprocess, torchrun and its workers included, so that a hang cannot outlive the test."""

import os
import signal
import subprocess


def run_group(command: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)`, in a session of
    its own: on a timeout the whole process group is killed (torchrun's workers too, which a plain kill of
    torchrun leaves running), then subprocess.TimeoutExpired is raised with the output so far."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, **kwargs)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise subprocess.TimeoutExpired(command, timeout, output=stdout, stderr=stderr) from None
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
