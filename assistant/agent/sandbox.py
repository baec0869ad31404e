"""Run untrusted Python (what the model writes) in a separate, locked-down, short-lived process.

The boundary is the operating system's, never the app's interpreter: every in-process "safe Python"
has published escapes. On Linux with bubblewrap (Debian package `bubblewrap`) the program gets new
user, PID, network, IPC, UTS and cgroup namespaces, so it sees no network at all, no processes but
its own, and a file system made of: the Python installation (read-only), /usr (read-only), an empty
/tmp, a fresh scratch directory (the only writable place, its working directory) and nothing else:
not the user's home, not the app's data folder. Without bubblewrap, isolation is "rlimits only"
(and the UI asks before running anything).

Always, whatever the isolation: `python -I` (no user site, no PYTHON* variables), an empty
environment, stdin closed, rlimits on CPU time, address space, file size, open files and processes
(set in the child before it starts), a wall-clock timeout that kills the whole process group,
and output capped. Inside, an audit hook refuses subprocesses, ctypes, sockets and new audit
hooks: a second layer that makes refusals readable, never the only one.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

BWRAP = "bwrap"
SCRATCH = "/scratch"  # inside bubblewrap: the working directory, a tmpfs of Limits.disk_mb
PROGRAM_DIR = "/sandbox"  # inside bubblewrap: the program and the boot script, read-only
KILL_GRACE_S = 0.5


@dataclass
class Limits:
    wall_s: float = 10.0
    cpu_s: int = 5
    memory_mb: int = 512
    file_mb: int = 10
    output_kb: int = 64
    processes: int = 32
    open_files: int = 64
    disk_mb: int = 64  # all files written together (scratch and /tmp), with bubblewrap


@dataclass
class RunResult:
    stdout: str
    stderr: str
    exit_code: int | None  # None when it was killed (see limit_hit / timed_out)
    timed_out: bool
    limit_hit: str | None  # "wall time 10 s", "CPU time 5 s", "memory 512 MB", "output 64 KB", "file size 10 MB", "disk 64 MB"
    seconds: float
    isolation: str
    cancelled: bool = False  # stopped by the user

    def as_dict(self) -> dict:
        return asdict(self)

    def observation(self) -> str:
        """What the agent is told: the output, and plainly why it stopped when it did not finish."""
        parts = []
        if self.stdout:
            parts.append(self.stdout.rstrip("\n"))
        if self.stderr:
            parts.append("stderr:\n" + self.stderr.rstrip("\n"))
        if self.cancelled:
            parts.append("stopped by the user")
        elif self.limit_hit:
            parts.append(f"killed: {self.limit_hit} limit")
        elif self.exit_code not in (0, None):
            parts.append(f"exit code {self.exit_code}")
        return "\n".join(parts) or "(no output)"


# The audit-hook layer. Runs first in the sandboxed interpreter, then the program as __main__.
_BOOT = r'''
import sys
_REFUSED = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
            "ctypes.dlsym", "ctypes.cdata", "ctypes.call_function", "socket.connect",
            "socket.bind", "socket.sendto", "sys.addaudithook", "os.kill", "os.killpg", "signal.pthread_kill",
            "_posixsubprocess", "pty.spawn", "sys.remote_exec")
def _hook(event, args):
    if event.startswith(_REFUSED):
        raise PermissionError(f"the sandbox does not allow {event}")
sys.addaudithook(_hook)
del _hook
import runpy
_program = sys.argv[1]
sys.argv = ["program.py"]
runpy.run_path(_program, run_name="__main__")
'''


def isolation() -> str:
    """What the boundary is on this machine: 'bubblewrap' or 'rlimits only'."""
    return "bubblewrap" if _bwrap_works() else "rlimits only"


_bwrap_checked: bool | None = None


def _bwrap_works() -> bool:
    # bwrap can be installed yet unusable (unprivileged user namespaces switched off): try it once.
    global _bwrap_checked
    if _bwrap_checked is None:
        path = shutil.which(BWRAP)
        _bwrap_checked = False
        if path and sys.platform.startswith("linux"):
            try:
                probe = subprocess.run([path, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "true"],
                                       capture_output=True, timeout=10)
                _bwrap_checked = probe.returncode == 0
            except (OSError, subprocess.SubprocessError):
                _bwrap_checked = False
    return _bwrap_checked


def run_python(code: str, limits: Limits | None = None, cancel: threading.Event | None = None,
               audit: bool = True) -> RunResult:
    """Run code as a program in the sandbox and return what it printed and how it ended.

    audit=False leaves out the in-process audit hook (tests use it to check the OS boundary alone).
    """
    limits = limits or Limits()
    folder = Path(tempfile.mkdtemp(prefix="assistant-sandbox-"))
    try:
        (folder / "program.py").write_text(code, encoding="utf-8")
        (folder / "boot.py").write_text(_BOOT, encoding="utf-8")
        kind = isolation()
        where = Path(PROGRAM_DIR) if kind == "bubblewrap" else folder
        entry = [str(where / "boot.py"), str(where / "program.py")] if audit else [str(where / "program.py")]
        if kind == "bubblewrap":
            argv = _bwrap_argv(folder, limits) + [sys.executable, "-I", "-B", *entry]
            cwd = None
        else:
            cwd = folder / "scratch"
            cwd.mkdir()
            argv = [sys.executable, "-I", "-B", *entry]
        return _run(argv, cwd, limits, cancel, kind)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _bwrap_argv(folder: Path, limits: Limits) -> list[str]:
    size = str(limits.disk_mb << 20)
    argv = [shutil.which(BWRAP), "--unshare-all", "--die-with-parent", "--new-session", "--clearenv",
            "--uid", "65534", "--gid", "65534", "--hostname", "sandbox",
            "--ro-bind", "/usr", "/usr", "--proc", "/proc", "--dev", "/dev",
            "--size", size, "--tmpfs", "/tmp", "--size", size, "--tmpfs", SCRATCH,
            "--ro-bind", str(folder), PROGRAM_DIR, "--chdir", SCRATCH,
            "--setenv", "HOME", SCRATCH, "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8"]
    for name in ("bin", "lib", "lib64", "sbin"):  # merged-/usr systems: links; others: the real folders
        path = Path("/") / name
        if path.is_symlink():
            argv += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            argv += ["--ro-bind", str(path), str(path)]
    if Path("/etc/ld.so.cache").exists():
        argv += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    # The interpreter and its packages (numpy, sympy when installed), read-only at their own paths;
    # nothing else of the folder they are in (which may be the user's home).
    for prefix in dict.fromkeys((sys.base_prefix, sys.prefix)):
        if not prefix.startswith("/usr/"):
            argv += ["--ro-bind", prefix, prefix]
    executable = Path(sys.executable)
    if not str(executable).startswith(("/usr/", sys.prefix, sys.base_prefix)):
        argv += ["--ro-bind", str(executable.parent), str(executable.parent)]
    return argv


def _pids_cgroup(limit: int) -> Path | None:
    """As root, a pids cgroup capping the sandbox's processes and threads; None where none can be made.

    RLIMIT_NPROC does not bind root: the kernel exempts uid 0, and inside bubblewrap's user namespace the
    program is still uid 0 outside. A fork bomb started by an app running as root would take the machine.
    """
    if os.geteuid() != 0 or not sys.platform.startswith("linux"):
        return None  # RLIMIT_NPROC applies
    name = f"assistant-sandbox-{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}"
    # cgroup v2 (the whole tree, or the "unified" part of a hybrid set-up) where its pids controller is
    # enabled; else the v1 pids hierarchy.
    for base in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup/pids")):
        try:
            if base.name != "pids" and "pids" not in (base / "cgroup.subtree_control").read_text().split():
                continue
            group = base / name
            group.mkdir()
            try:
                (group / "pids.max").write_text(str(limit))
            except OSError:
                group.rmdir()
                continue
            return group / "cgroup.procs"
        except OSError:
            continue
    return None


def _remove_cgroup(procs: Path | None) -> None:
    if procs is None:
        return
    for _ in range(200):  # the group can be removed once its last process has been reaped
        try:
            procs.parent.rmdir()
            return
        except OSError:
            time.sleep(0.01)


def _limits_in_child(limits: Limits, cgroup: Path | None = None):
    def apply() -> None:
        import resource

        if cgroup is not None:
            with open(cgroup, "w") as procs:
                procs.write(str(os.getpid()))

        mb = 1 << 20
        # CPU: SIGXCPU at the soft limit (reported as such), SIGKILL a second later if it is caught.
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        for which, value in ((resource.RLIMIT_AS, limits.memory_mb * mb), (resource.RLIMIT_FSIZE, limits.file_mb * mb),
                             (resource.RLIMIT_NOFILE, limits.open_files), (resource.RLIMIT_NPROC, limits.processes),
                             (resource.RLIMIT_CORE, 0)):
            resource.setrlimit(which, (value, value))
    return apply


def _run(argv: list[str], cwd: Path | None, limits: Limits, cancel: threading.Event | None, kind: str) -> RunResult:
    cgroup = _pids_cgroup(limits.processes)
    try:
        return _supervise(argv, cwd, limits, cancel, kind, cgroup)
    finally:
        _remove_cgroup(cgroup)


def _supervise(argv: list[str], cwd: Path | None, limits: Limits, cancel: threading.Event | None, kind: str,
               cgroup: Path | None) -> RunResult:
    cap = limits.output_kb * 1024
    start = time.perf_counter()
    process = subprocess.Popen(argv, cwd=cwd, env={}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True,
                               preexec_fn=_limits_in_child(limits, cgroup))
    outputs: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
    over = threading.Event()

    def drain(name: str, stream) -> None:
        buffer = outputs[name]
        for block in iter(lambda: stream.read1(65536), b""):
            room = cap - len(buffer)
            buffer += block[: max(0, room)]
            if len(block) > room:
                over.set()
                _kill(process)
        stream.close()

    readers = [threading.Thread(target=drain, args=(n, s), daemon=True)
               for n, s in (("stdout", process.stdout), ("stderr", process.stderr))]
    for reader in readers:
        reader.start()
    timed_out = cancelled = False
    while process.poll() is None:
        if time.perf_counter() - start > limits.wall_s:
            timed_out = True
            _kill(process)
        elif cancel is not None and cancel.is_set():
            cancelled = True
            _kill(process)
        elif over.is_set():
            _kill(process)
        time.sleep(0.005)
    if cgroup is not None:
        _kill_cgroup(cgroup)  # anything still alive in it (bubblewrap's --new-session children)
    deadline = time.perf_counter() + 2
    for reader in readers:
        reader.join(max(0.0, deadline - time.perf_counter()))
    seconds = time.perf_counter() - start
    stdout = outputs["stdout"].decode("utf-8", "replace")
    stderr = outputs["stderr"].decode("utf-8", "replace")
    code = process.returncode
    limit = _which_limit(code, stderr, limits, timed_out, over.is_set(), kind, seconds)
    exit_code = None if (timed_out or cancelled or over.is_set() or (code is not None and code < 0)) else code
    return RunResult(stdout=stdout, stderr=stderr, exit_code=exit_code, timed_out=timed_out, limit_hit=limit,
                     seconds=seconds, isolation=kind, cancelled=cancelled)


def _which_limit(code: int | None, stderr: str, limits: Limits, timed_out: bool, over: bool, kind: str,
                 seconds: float) -> str | None:
    if timed_out:
        return f"wall time {limits.wall_s:g} s"
    if over:
        return f"output {limits.output_kb} KB"
    # bwrap reports its child's signal as exit code 128 + n; without bwrap it is a negative return code.
    signum = -code if code is not None and code < 0 else (code - 128 if kind == "bubblewrap" and code and code > 128 else 0)
    # SIGKILL after at least the CPU allowance: the hard CPU limit (the program ignored SIGXCPU).
    if signum == signal.SIGXCPU or (signum == signal.SIGKILL and seconds >= limits.cpu_s):
        return f"CPU time {limits.cpu_s} s"
    if signum == signal.SIGXFSZ or "File too large" in stderr:
        return f"file size {limits.file_mb} MB"
    if "No space left on device" in stderr:
        return f"disk {limits.disk_mb} MB"
    if "MemoryError" in stderr or "Cannot allocate memory" in stderr:
        return f"memory {limits.memory_mb} MB"
    return None


def _kill_cgroup(procs: Path) -> None:
    for _ in range(100):
        try:
            pids = [int(p) for p in procs.read_text().split()]
        except OSError:
            return
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.01)


def _kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the whole group: bwrap, Python and anything they started
    except (ProcessLookupError, PermissionError):
        pass
