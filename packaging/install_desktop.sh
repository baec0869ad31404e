#!/usr/bin/env bash
# Put the built app (dist/assistant/, from `make package`) in this user's application menu.
#
#   packaging/install_desktop.sh [--desktop] [BUNDLE_DIR]     install (BUNDLE_DIR: default dist/assistant)
#   packaging/install_desktop.sh --uninstall                   remove what it installed
#
# Writes, for the current user only (no root):
#   ${XDG_DATA_HOME:-~/.local/share}/applications/assistant.desktop   Exec= the bundle's executable (absolute)
#   ${XDG_DATA_HOME:-~/.local/share}/icons/hicolor/NxN/apps/assistant.png, scalable/apps/assistant.svg
# --desktop also puts a launcher on the desktop folder (marked trusted where GNOME's gio is present),
# so the file manager starts it with a double-click.
# The bundle is not copied: move dist/assistant where it should live first (e.g. ~/Applications/assistant),
# then run this with that folder.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=${XDG_DATA_HOME:-$HOME/.local/share}
apps="$data/applications"
icons="$data/icons/hicolor"
sizes="16 32 48 64 128 256 512"

desktop_dir() {
  local d=""
  command -v xdg-user-dir >/dev/null 2>&1 && d=$(xdg-user-dir DESKTOP 2>/dev/null || true)
  [ -n "$d" ] && [ "$d" != "$HOME" ] || d="$HOME/Desktop"
  echo "$d"
}

refresh() {
  command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q "$apps" 2>/dev/null || true
  # Only an icon cache that is already there is rebuilt: a new one would go stale when another app adds
  # icons without rebuilding it. Without one, the changed folder time is what icon loaders look at.
  touch "$icons" 2>/dev/null || true
  if [ -f "$icons/icon-theme.cache" ] && command -v gtk-update-icon-cache >/dev/null 2>&1; then
    gtk-update-icon-cache -q -f -t "$icons" 2>/dev/null || true
  fi
  return 0
}

on_desktop=0
bundle=""
for arg in "$@"; do
  case "$arg" in
    --uninstall)
      rm -f "$apps/assistant.desktop" "$icons/scalable/apps/assistant.svg" "$(desktop_dir)/assistant.desktop"
      for n in $sizes; do rm -f "$icons/${n}x${n}/apps/assistant.png"; done
      refresh
      echo "Removed Assistant from the application menu."
      exit 0 ;;
    --desktop) on_desktop=1 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    -*) echo "install_desktop.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
    *) bundle=$arg ;;
  esac
done
bundle=${bundle:-$root/dist/assistant}
exe="$(cd "$bundle" 2>/dev/null && pwd || true)/assistant"
if [ ! -f "$exe" ] || [ ! -x "$exe" ]; then
  echo "install_desktop.sh: no executable at $bundle/assistant. Build it first: make package" >&2
  exit 1
fi

# The Desktop Entry spec: an argument with spaces is double-quoted, and inside quotes \ " ` $ are escaped.
quoted=$exe
case "$exe" in
  *[[:space:]\"\`\$\\]*) quoted="\"$(printf '%s' "$exe" | sed -e 's/[\\"`$]/\\&/g')\"" ;;
esac
# In the key file itself a backslash is written twice.
quoted=$(printf '%s' "$quoted" | sed -e 's/\\/\\\\/g')

sed_text() { printf '%s' "$1" | sed -e 's/[\\&|]/\\&/g'; }  # safe as a sed replacement

mkdir -p "$apps"
sed -e '/^#/d' -e "s|^Exec=.*|Exec=$(sed_text "$quoted")|" -e "s|^TryExec=.*|TryExec=$(sed_text "$exe")|" \
  "$root/packaging/assistant.desktop" > "$apps/assistant.desktop.tmp"
mv "$apps/assistant.desktop.tmp" "$apps/assistant.desktop"
chmod 644 "$apps/assistant.desktop"
if command -v desktop-file-validate >/dev/null 2>&1; then
  desktop-file-validate "$apps/assistant.desktop"
fi

for n in $sizes; do
  install -D -m 644 "$root/resources/icons/assistant-$n.png" "$icons/${n}x${n}/apps/assistant.png"
done
install -D -m 644 "$root/resources/assistant.svg" "$icons/scalable/apps/assistant.svg"
refresh

echo "Installed: $apps/assistant.desktop -> $exe"
if [ "$on_desktop" = 1 ]; then
  target="$(desktop_dir)/assistant.desktop"
  mkdir -p "$(dirname "$target")"
  install -m 755 "$apps/assistant.desktop" "$target"
  command -v gio >/dev/null 2>&1 && gio set "$target" metadata::trusted true 2>/dev/null || true
  echo "Installed: $target"
fi
