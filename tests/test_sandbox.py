"""The Python sandbox against real escape attempts. Each runs twice where it matters: as shipped (OS boundary
plus the audit hook) and with the OS boundary alone (audit=False), because the hook is never the only layer."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from assistant.agent.sandbox import Limits, isolation, run_python

ROOT = Path(__file__).resolve().parent.parent
BOTH = pytest.mark.parametrize("audit", [True, False], ids=["as-shipped", "os-boundary-alone"])
needs_bwrap = pytest.mark.skipif(isolation() != "bubblewrap",
                                 reason="bubblewrap is not usable here (make test installs it: packaging/system_packages.sh)")


@pytest.fixture
def secret(tmp_path: Path, isolated_home: Path) -> Path:
    """A file the program must never read: in the app's data folder, which is in the test's temp dir."""
    isolated_home.mkdir(parents=True, exist_ok=True)
    path = isolated_home / "secret.txt"
    path.write_text("TOP-SECRET-7731")
    return path


def test_benign_programs_work() -> None:
    result = run_python("import math, statistics\nprint(math.factorial(20), statistics.mean([1, 2, 3, 4]))")
    assert result.exit_code == 0 and result.stdout.split() == ["2432902008176640000", "2.5"]
    assert not result.timed_out and result.limit_hit is None
    result = run_python("from pathlib import Path\nPath('notes.txt').write_text('kept')\nprint(Path('notes.txt').read_text())")
    assert result.stdout.strip() == "kept" and result.exit_code == 0
    result = run_python("import numpy as np\nprint(int(np.arange(10).sum()))")
    assert result.stdout.strip() == "45", result.stderr


def test_errors_come_back_as_an_observation() -> None:
    result = run_python("print('before')\n1 / 0")
    assert result.exit_code == 1 and "ZeroDivisionError" in result.stderr
    assert result.observation().startswith("before\nstderr:") and result.observation().endswith("exit code 1")


@needs_bwrap
@BOTH
def test_files_outside_the_scratch_directory_cannot_be_read(secret: Path, audit: bool) -> None:
    code = f"""
import os
for attempt in ({str(secret)!r}, {str(Path.home() / '.bashrc')!r}, '/etc/passwd', '/etc/shadow', {str(ROOT / 'README.md')!r}):
    try:
        print(open(attempt).read()[:50])
    except OSError as exc:
        print('refused', type(exc).__name__)
os.symlink({str(secret)!r}, 'link')
try:
    print(open('link').read())
except OSError as exc:
    print('refused', type(exc).__name__)
"""
    result = run_python(code, audit=audit)
    assert "TOP-SECRET" not in result.stdout + result.stderr
    assert result.stdout.count("refused") == 6, result.stdout + result.stderr


@needs_bwrap
@BOTH
def test_the_parent_process_is_invisible_and_cannot_be_killed(audit: bool) -> None:
    me = os.getpid()
    code = f"""
import os
print('ppid', os.getppid())
for path in ('/proc/{me}/environ', '/proc/{me}/cmdline', '/proc/{me}/root/etc/hostname'):
    try:
        print(open(path, 'rb').read()[:40])
    except OSError as exc:
        print('refused', type(exc).__name__)
try:
    os.kill({me}, 9)
    print('sent')
except (OSError, PermissionError) as exc:
    print('refused', type(exc).__name__)
"""
    result = run_python(code, audit=audit)
    assert result.stdout.count("refused") == 4, result.stdout + result.stderr
    assert "sent" not in result.stdout
    assert int(result.stdout.split()[1]) != me  # its own PID namespace


@BOTH
def test_the_environment_is_empty(monkeypatch: pytest.MonkeyPatch, audit: bool) -> None:
    monkeypatch.setenv("ASSISTANT_API_TOKEN", "sk-should-not-leak")
    result = run_python("import os\nprint(sorted(os.environ.items()))", audit=audit)
    assert "sk-should-not-leak" not in result.stdout
    assert "ASSISTANT_HOME" not in result.stdout and "HOME', '/root" not in result.stdout


@needs_bwrap
@BOTH
def test_nothing_outside_the_scratch_directory_can_be_written(tmp_path: Path, audit: bool) -> None:
    target = tmp_path / "planted.txt"
    code = f"""
for path in ({str(target)!r}, '/usr/planted', '/sandbox/program.py', {str(Path(sys.executable))!r}):
    try:
        open(path, 'w').write('x')
        print('wrote', path)
    except OSError as exc:
        print('refused', type(exc).__name__)
"""
    result = run_python(code, audit=audit)
    assert not target.exists()
    assert result.stdout.count("refused") == 4, result.stdout + result.stderr


@needs_bwrap
@BOTH
def test_no_network_not_even_to_a_server_on_localhost(audit: bool) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(3)
    port = server.getsockname()[1]
    accepted: list = []

    def accept() -> None:
        try:
            accepted.append(server.accept())
        except OSError:
            pass

    waiter = threading.Thread(target=accept)
    waiter.start()
    code = f"""
import socket
try:
    socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'leak')
    print('connected')
except OSError as exc:
    print('refused', type(exc).__name__)
try:
    socket.getaddrinfo('example.com', 80)
    print('resolved')
except OSError as exc:
    print('refused', type(exc).__name__)
"""
    result = run_python(code, audit=audit)
    waiter.join()
    server.close()
    assert accepted == []
    assert result.stdout.count("refused") == 2, result.stdout + result.stderr


@BOTH
def test_subprocesses_ctypes_and_the_os_module_through_subclasses(audit: bool, secret: Path) -> None:
    code = f"""
attempts = {{
    'subprocess': "import subprocess; print(subprocess.run(['cat', {str(secret)!r}], capture_output=True).stdout)",
    'os.system': "import os; os.system('cat {secret} > /dev/stderr')",
    'ctypes': "import ctypes; libc = ctypes.CDLL(None); libc.system(b'cat {secret}')",
    'subclasses': "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]"
                  ".__init__.__globals__['system']('cat {secret}')",
}}
for name, attempt in attempts.items():
    try:
        exec(attempt)
        print('ran', name)
    except Exception as exc:
        print('refused', name, type(exc).__name__)
"""
    result = run_python(code, audit=audit)
    assert "TOP-SECRET" not in result.stdout + result.stderr
    if audit:  # the hook names each refusal
        assert result.stdout.count("refused") == 4, result.stdout + result.stderr
        assert "PermissionError" in result.stdout


@BOTH
def test_bombs_and_loops_are_stopped_and_the_app_stays_responsive(audit: bool) -> None:
    limits = Limits(wall_s=8, cpu_s=2, memory_mb=256, processes=16)
    ticks: list[float] = []
    stop = threading.Event()

    def heartbeat() -> None:  # stands for the UI thread: it must keep running while the bombs go off
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.05)

    beat = threading.Thread(target=heartbeat)
    beat.start()
    try:
        fork = run_python("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
                          limits, audit=audit)
        assert fork.timed_out or fork.limit_hit or fork.exit_code != 0
        assert fork.seconds < 12
        threads = run_python("import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(60,)).start()",
                             limits, audit=audit)
        assert threads.exit_code != 0 and "can't start new thread" in threads.stderr, threads.stderr[-300:]
        memory = run_python("blocks = []\nwhile True:\n    blocks.append(bytearray(50 << 20))", limits, audit=audit)
        assert memory.limit_hit == "memory 256 MB" and "killed: memory 256 MB limit" in memory.observation()
        loop = run_python("while True:\n    pass", limits, audit=audit)
        assert loop.limit_hit == "CPU time 2 s" and loop.seconds < 5
        sleeper = run_python("import time\ntime.sleep(60)", Limits(wall_s=1), audit=audit)
        assert sleeper.timed_out and sleeper.limit_hit == "wall time 1 s" and sleeper.seconds < 3
    finally:
        stop.set()
        beat.join()
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    assert max(gaps) < 1.0  # never frozen
    assert subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True).returncode == 0  # can still spawn


@BOTH
def test_output_and_disk_floods_are_capped(audit: bool) -> None:
    flood = run_python("import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(4096):\n    sys.stdout.write(chunk)",
                       audit=audit)
    assert flood.limit_hit == "output 64 KB" and len(flood.stdout) == 64 * 1024 and flood.seconds < 5
    big = run_python("open('big', 'wb').write(b'x' * (20 << 20))", audit=audit)
    assert big.limit_hit == "file size 10 MB", big.stderr[-300:]
    if isolation() == "bubblewrap":
        many = run_python("i = 0\nwhile True:\n    open(f'f{i}', 'wb').write(b'x' * (8 << 20))\n    i += 1", audit=audit)
        assert many.limit_hit == "disk 64 MB", many.stderr[-300:]


def test_audit_hooks_cannot_be_tampered_with() -> None:
    code = """
import sys
for attempt in ("sys.addaudithook(lambda *a: None)",  # silently not added; ours stays either way
                "import ctypes; ctypes.pythonapi.PySys_ClearAuditHooks()"):
    try:
        exec(attempt)
        print('ran')
    except Exception as exc:
        print('refused', type(exc).__name__)
try:
    import subprocess
    subprocess.run(['true'])
    print('still ran a subprocess')
except PermissionError:
    print('still refused')
"""
    result = run_python(code)
    assert result.stdout.splitlines()[1:] == ["refused PermissionError", "still refused"], result.stdout + result.stderr


def test_stop_kills_a_running_program() -> None:
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    result = run_python("import time\nwhile True:\n    time.sleep(0.01)", cancel=cancel)
    assert result.cancelled and result.seconds < 3 and "stopped by the user" in result.observation()


def test_cli_sandbox_run(tmp_path: Path) -> None:
    program = tmp_path / "hello.py"
    program.write_text("print(sum(range(101)))\n1/0\n")
    out = subprocess.run([sys.executable, "-m", "assistant", "sandbox", "run", str(program), "--json"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr  # the sandbox worked; the program's own failure is in the JSON
    result = json.loads(out.stdout)
    assert set(result) >= {"stdout", "stderr", "exit_code", "timed_out", "limit_hit", "seconds", "isolation"}
    assert result["stdout"] == "5050\n" and result["exit_code"] == 1 and "ZeroDivisionError" in result["stderr"]
    assert result["isolation"] == isolation()
    out = subprocess.run([sys.executable, "-m", "assistant", "sandbox", "run", str(tmp_path / "missing.py")],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 1 and "missing.py" in out.stderr and "Traceback" not in out.stderr
