#!/usr/bin/env bash
# Debian/Ubuntu packages the app needs: Qt's window libraries, a C++ compiler for llama.cpp, and
# venv support; plus audio and a virtual screen, which only voice input and tests use.
# As root it installs what is missing; otherwise it prints the one line to run.
set -euo pipefail
command -v dpkg-query >/dev/null 2>&1 || exit 0  # not Debian-like: nothing we know how to do
needed="libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-xkb1 libxcb-cursor0
libxkbcommon-x11-0 libegl1 libgl1 libfontconfig1 libdbus-1-3 fonts-dejavu-core"
# r-doc-pdf: real PDFs (the R manuals) for the document tests; pulseaudio: a virtual microphone for the
# voice tests; espeak-ng: spoken questions for them; bubblewrap: the Python sandbox's OS boundary.
optional="libpulse0 xvfb r-doc-pdf pulseaudio pulseaudio-utils espeak-ng bubblewrap"
command -v c++ >/dev/null 2>&1 || needed="$needed g++"
command -v make >/dev/null 2>&1 || needed="$needed make"

missing() {
  local out=""
  for p in $1; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || out="$out $p"
  done
  echo "$out"
}
need=$(missing "$needed")
want=$(missing "$optional")
[ -z "$need$want" ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "Installing system packages:$need$want" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends $need $want >&2
elif [ -n "$need" ]; then
  echo "Some system libraries the app needs are missing. Run this once, then try again:" >&2
  echo "  sudo apt-get install -y$need$want" >&2
  exit 1
else
  echo "Optional (voice input, screenshots in tests): sudo apt-get install -y$want" >&2
fi
