#!/usr/bin/env bash
# Debian/Ubuntu libraries Qt needs for a real window and audio, plus what the tests use.
# As root it installs what is missing; otherwise it prints the one line to run.
set -euo pipefail
command -v dpkg-query >/dev/null 2>&1 || exit 0  # not Debian-like: nothing we know how to do
packages="libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-xkb1 libxcb-cursor0
libxkbcommon-x11-0 libegl1 libgl1 libfontconfig1 libdbus-1-3 libpulse0 fonts-dejavu-core xvfb"
missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "Installing system packages:$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends $missing >&2
else
  echo "Some system libraries are missing. Run this once, then try again:" >&2
  echo "  sudo apt-get install -y$missing" >&2
  exit 1
fi
