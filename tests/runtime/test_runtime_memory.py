"""The allocator setting for actor processes."""

import subprocess
import sys


def test_keep_freed_memory_applies_on_linux_glibc() -> None:
    # in a child process: the setting is process-wide and must not leak into the test run
    code = "from fedsim.runtime.memory import keep_freed_memory; print(keep_freed_memory())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    expected = "True" if sys.platform.startswith("linux") else "False"
    assert out.stdout.strip() == expected
