#!/usr/bin/env bash
# Prove the built bundle works on its own: window + chat, CLI, document search, voice, Python sandbox.
#
#   packaging/check_package.sh [BUNDLE_DIR]        (default dist/assistant; `make package` runs it)
#
# Every run gets an empty environment (env -i: no venv on PATH, no PYTHONPATH, no VIRTUAL_ENV), a fresh
# temporary HOME and ASSISTANT_HOME (no user data read or written) and Qt's offscreen platform.
# Prints each step's result and time, the `gui --check` JSON and the bundle's size; exits non-zero when
# any step fails. SHARED_DATA (default ../shared/data) holds speech/jfk.wav for the voice step.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bundle=$(cd "${1:-$root/dist/assistant}" 2>/dev/null && pwd) || { echo "check_package: no bundle at ${1:-dist/assistant}; run make package" >&2; exit 1; }
exe="$bundle/assistant"
[ -x "$exe" ] || { echo "check_package: $exe is missing or not executable" >&2; exit 1; }
shared=${SHARED_DATA:-$root/../shared/data}
timeout_s=${CHECK_TIMEOUT:-600}

work=$(mktemp -d "${TMPDIR:-/tmp}/assistant-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/home" "$work/data" "$work/docs"

# Run the bundle as a user would: nothing from this shell's environment but the basics.
app() {
  (cd "$work" && env -i HOME="$work/home" ASSISTANT_HOME="$work/data" PATH=/usr/bin:/bin LANG=C.UTF-8 \
    QT_QPA_PLATFORM=offscreen TMPDIR="${TMPDIR:-/tmp}" timeout "$timeout_s" "$exe" "$@")
}

failures=0
out="$work/out" err="$work/err"
step() {  # step NAME EXPECT(regex, case-insensitive) -- ARGS...
  local name=$1 expect=$2; shift 3
  local start end rc
  start=$(date +%s.%N)
  app "$@" >"$out" 2>"$err"
  rc=$?
  end=$(date +%s.%N)
  local secs
  secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  if [ "$rc" = 0 ] && grep -Eqi -- "$expect" "$out"; then
    printf 'ok    %-10s %6ss  %s\n' "$name" "$secs" "$(tr '\n' ' ' <"$out" | cut -c1-150)"
  else
    failures=$((failures + 1))
    printf 'FAIL  %-10s %6ss  exit %s; expected /%s/ in its output\n' "$name" "$secs" "$rc" "$expect"
    sed 's/^/      out: /' "$out" | tail -n 20
    sed 's/^/      err: /' "$err" | tail -n 30
  fi
}

echo "Checking $bundle"
step version 'assistant [0-9]' -- --version

# 1. The window: opens offscreen, loads the bundled SmolLM2, answers, prints timings as JSON, exits 0.
start=$(date +%s.%N)
app gui --check "What is the capital of France?" >"$out" 2>"$err"
rc=$?
json=$(grep '^{' "$out" | tail -n 1)
if [ "$rc" = 0 ] && [ -n "$json" ] && printf '%s' "$json" | python3 -c '
import json, sys
r = json.load(sys.stdin)
ok = isinstance(r.get("window_s"), (int, float)) and isinstance(r.get("answer"), str) and r["answer"].strip() and not r.get("errors")
sys.exit(0 if ok else 1)'; then
  printf 'ok    %-10s %6ss  %s\n' gui "$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')" "$json"
else
  failures=$((failures + 1))
  echo "FAIL  gui        exit $rc; JSON: ${json:-none}"
  sed 's/^/      out: /' "$out" | tail -n 20
  sed 's/^/      err: /' "$err" | tail -n 30
fi

# 2. The CLI and the chat model.
step ask '[[:alnum:]]' -- ask "Say hi" --max-tokens 16

# 3. Documents: the embedder (sentence-transformers, torch), FAISS and the keyword index.
cat >"$work/docs/harbour.txt" <<'EOF'
The lighthouse keeper of Port Kestrel logs every ship that enters the harbour.
Kestrel harbour freezes in January, so the ferries stop until the ice breaks.
The annual regatta is held on the first Sunday of August.
EOF
step index '1 files indexed' -- index "$work/docs/harbour.txt"
step search 'harbour\.txt' -- search "When does the harbour freeze?" --mode dense
step keyword 'harbour\.txt' -- search regatta --mode keyword

# 4. Voice: Whisper tiny.en on CTranslate2, PyAV decoding.
if [ -f "$shared/speech/jfk.wav" ]; then
  step transcribe 'your country' -- transcribe "$shared/speech/jfk.wav"
else
  echo "skip  transcribe (no $shared/speech/jfk.wav)"
fi

# 5. The agent's Python sandbox: the bundle's executable stands in for `python -I -B script`.
printf 'import math\nprint("sandbox", sum(range(10)), math.factorial(5))\n' >"$work/program.py"
step sandbox 'sandbox 45 120' -- sandbox run "$work/program.py"

# 6. The OpenAI-compatible API (`assistant serve`), on a free loopback port: models, a chat answer, embeddings.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start=$(date +%s.%N)
(cd "$work" && exec env -i HOME="$work/home" ASSISTANT_HOME="$work/data" PATH=/usr/bin:/bin LANG=C.UTF-8 \
  TMPDIR="${TMPDIR:-/tmp}" "$exe" serve --port "$port") >"$work/serve.out" 2>"$work/serve.err" &
server=$!
if python3 - "$port" >"$out" 2>"$err" <<'PY'
import json, sys, time, urllib.request

base = f"http://127.0.0.1:{sys.argv[1]}/v1"

def call(path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as reply:
        return json.load(reply)

for _ in range(600):  # up to a minute for the model to load
    try:
        models = call("/models")
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("the server never answered")
chat = call("/chat/completions", {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8})
text = chat["choices"][0]["message"]["content"]
vectors = call("/embeddings", {"input": ["lighthouse"]})["data"]
assert text.strip() and len(vectors[0]["embedding"]) == 384, (text, len(vectors[0]["embedding"]))
print(f"serve ok: {len(models['data'])} model(s), answer {text.strip()!r}, embedding of {len(vectors[0]['embedding'])}")
PY
then
  printf 'ok    %-10s %6ss  %s\n' serve "$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')" "$(cat "$out")"
else
  failures=$((failures + 1))
  echo "FAIL  serve"
  sed 's/^/      client: /' "$err" | tail -n 10
  sed 's/^/      server: /' "$work/serve.out" "$work/serve.err" | tail -n 30
fi
kill "$server" 2>/dev/null
wait "$server" 2>/dev/null

# 7. Libraries no step above touches, checked inside the bundle by a script that the bundle's executable runs
#    (as `python -I script.py` would): code highlighting (pygments' lazily loaded formatters), .docx
#    (python-docx's template) and .pdf loading, Qt's SVG icon engine and QtMultimedia's FFmpeg backend.
cat >"$work/modules.py" <<'PY'
import sys
import zlib
from pathlib import Path

work = Path(sys.argv[1])
import os

# Programs the app starts (PDF viewer, xdg-open, bubblewrap) must not get the bundle's libraries.
assert "_internal" not in os.environ.get("LD_LIBRARY_PATH", ""), os.environ["LD_LIBRARY_PATH"]
from assistant.markdown import render

assert "<span" in render("```python\nprint('hi')\n```"), "no syntax highlighting"

import docx
from assistant.rag.loaders import load_document

document = docx.Document()
document.add_paragraph("Kestrel lighthouse in a Word file")
document.save(work / "note.docx")
assert "Kestrel lighthouse" in load_document(work / "note.docx").text, "docx text not found"

stream = zlib.compress(b"BT /F1 18 Tf 40 100 Td (Kestrel lighthouse in a PDF) Tj ET")
objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
           b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 400 200] /Contents 4 0 R"
           b" /Resources << /Font << /F1 5 0 R >> >> >>",
           b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
           b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
pdf, offsets = bytearray(b"%PDF-1.4\n"), []
for n, body in enumerate(objects, 1):
    offsets.append(len(pdf))
    pdf += b"%d 0 obj\n" % n + body + b"\nendobj\n"
xref = len(pdf)
pdf += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
pdf += b"".join(b"%010d 00000 n \n" % o for o in offsets)
pdf += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
(work / "note.pdf").write_bytes(bytes(pdf))
assert "Kestrel lighthouse" in load_document(work / "note.pdf").text, "pdf text not found"

from PySide6.QtGui import QGuiApplication, QIcon, QImageReader
from PySide6.QtMultimedia import QMediaDevices, QMediaFormat

app = QGuiApplication([sys.argv[0]])
from assistant.ui.app import resource

assert not QIcon(str(resource("assistant.svg"))).pixmap(64, 64).isNull(), "the SVG icon does not render"
assert b"svg" in [bytes(f) for f in QImageReader.supportedImageFormats()], "no svg image format"
decoders = QMediaFormat().supportedFileFormats(QMediaFormat.ConversionMode.Decode)
assert decoders, "QtMultimedia has no backend (the FFmpeg plugin did not load)"
QMediaDevices.audioInputs()
print("modules ok: highlight, docx, pdf, svg icon, QtMultimedia (%d decodable formats)" % len(decoders))
PY
step modules 'modules ok' -- -I -B "$work/modules.py" "$work"

echo "Bundle size: $(du -sh "$bundle" | cut -f1) ($bundle)"
if [ "$failures" -gt 0 ]; then
  echo "check_package: $failures step(s) failed" >&2
  exit 1
fi
echo "check_package: all steps passed"
