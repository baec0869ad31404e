"""A private PulseAudio server with a virtual microphone, for the voice tests and bench/speech.py.

A null sink 'virtmic' takes what is played into it; its monitor, remapped as the source 'virtmic_src'
and made the default input, is what the app hears. Start it before anything uses QtMultimedia: Qt
connects to the sound server once, on first use, through PULSE_SERVER.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

SINK = "virtmic"
SOURCE = "virtmic_src"


class VirtualMicrophone:
    """What play() sends into the sink is heard on the default input."""

    description = "Remapped Monitor of Null Output"  # how Qt names the source

    def __init__(self, process: subprocess.Popen, server: str, folder: Path) -> None:
        self.process, self.server, self.folder = process, server, folder

    def play(self, wav: Path) -> subprocess.Popen:
        return subprocess.Popen(["paplay", "--server", self.server, "-d", SINK, str(wav)])

    def unplug(self) -> None:
        for line in self._pactl("list", "short", "modules").stdout.splitlines():
            if "module-remap-source" in line:
                self._pactl("unload-module", line.split()[0])

    def plug_in(self) -> None:
        if SOURCE not in self._pactl("list", "short", "sources").stdout:
            self._pactl("load-module", "module-remap-source", f"master={SINK}.monitor", f"source_name={SOURCE}")
            self._pactl("set-default-source", SOURCE)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _pactl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["pactl", "--server", self.server, *args], capture_output=True, text=True, timeout=10)


def start() -> VirtualMicrophone:
    """Start the server and point this process's PULSE_SERVER at it; RuntimeError saying why when it cannot."""
    binary = shutil.which("pulseaudio")
    if binary is None or shutil.which("pactl") is None:
        raise RuntimeError("pulseaudio and pulseaudio-utils are not installed (packaging/system_packages.sh installs them)")
    folder = Path(tempfile.mkdtemp(prefix="assistant-pulse-"))
    socket = folder / "native"
    env = dict(os.environ, HOME=str(folder), XDG_RUNTIME_DIR=str(folder), PULSE_RUNTIME_PATH=str(folder))
    process = subprocess.Popen(
        [binary, "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no",
         f"--load=module-native-protocol-unix socket={socket} auth-anonymous=1",
         f"--load=module-null-sink sink_name={SINK} format=s16le rate=16000 channels=1",
         f"--load=module-remap-source master={SINK}.monitor source_name={SOURCE}",
         "--load=module-always-sink"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mic = VirtualMicrophone(process, f"unix:{socket}", folder)
    for _ in range(200):
        if process.poll() is not None:
            break
        if socket.exists() and mic._pactl("set-default-source", SOURCE).returncode == 0:
            os.environ["PULSE_SERVER"] = mic.server
            return mic
        time.sleep(0.05)
    mic.stop()
    raise RuntimeError("the PulseAudio server did not start")
