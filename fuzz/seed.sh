#!/usr/bin/env bash
# Fills fuzz/corpus/<target>/ with seeds: the bundled recordings in
# tests/recordings (converted to each target's input format) plus the small
# hand-written seeds in fuzz/seeds/<target>/. Grown corpora are not committed.
set -euo pipefail
cd "$(dirname "$0")"
rec=../tests/recordings
max=16384 # bigger bodies (the 1 MB "large" recording) would slow every run

mkdir -p corpus/response_verdict corpus/ip_parse corpus/recording_loader
cp seeds/response_verdict/* corpus/response_verdict/
cp seeds/ip_parse/* corpus/ip_parse/
cp seeds/recording_loader/* corpus/recording_loader/

# response_verdict input: [status selector, flags, retry-after length,
# retry-after bytes, body] (see checks/response_verdict.rs, Case::decode).
selector() {
  case "$1" in
    200) echo 0 ;; 404) echo 160 ;; 400) echo 192 ;; 401) echo 193 ;; 403) echo 194 ;;
    414) echo 196 ;; 429) echo 197 ;; 500) echo 198 ;; 502) echo 199 ;; 503) echo 200 ;;
    *) echo 215 ;; # 999
  esac
}
byte() { printf "\\$(printf '%03o' "$1")"; }

for toml in "$rec"/*.toml; do
  name=$(basename "$toml" .toml)
  cp "$toml" "corpus/recording_loader/$name.toml"
  # The address in the URL, for ip_parse.
  sed -n 's#^url = "https://[^/]*/api/\(ip/\|v1/search/ip?request=\)\([^?"]*\).*#\2#p' "$toml" \
    > "corpus/ip_parse/$name.txt"
  status=$(sed -n 's/^status = \([0-9]*\)/\1/p' "$toml")
  body=$(sed -n 's/^body_file = "\(.*\)"/\1/p' "$toml")
  retry=$(sed -n 's/.*"retry-after" = "\([^"]*\)".*/\1/p' "$toml")
  [ -n "$body" ] && [ "$(wc -c < "$rec/$body")" -le "$max" ] || continue
  {
    byte "$(selector "$status")"
    if [ -n "$retry" ]; then byte 1; byte "${#retry}"; printf '%s' "$retry"; else byte 0; byte 0; fi
    cat "$rec/$body"
  } > "corpus/response_verdict/$name.bin"
done
for t in response_verdict ip_parse recording_loader; do
  echo "$t: $(ls corpus/$t | wc -l) seeds"
done
