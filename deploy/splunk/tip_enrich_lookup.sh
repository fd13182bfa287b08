#!/bin/sh
# Splunk external lookup wrapper (transforms.conf, external_cmd): Splunk runs
# this with the lookup's field names as arguments and the rows as CSV on
# stdin; tip-enrich answers the same CSV with the verdict's fields filled.
#
# TIP_ENRICH: the binary (default: tip-enrich next to this script).
# The key: $TIP_API_KEY_FILE, else ../local/tip_api_key next to this script
# (chmod 600, owned by the user Splunk runs as); with no key tip-enrich
# replays its bundled recordings (a demo).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=${TIP_ENRICH:-"$here/tip-enrich"}
key_file=${TIP_API_KEY_FILE:-"$here/../local/tip_api_key"}
if [ -r "$key_file" ]; then
    exec "$bin" --quiet --api-key-file "$key_file" splunk-lookup "$@"
fi
exec "$bin" --quiet splunk-lookup "$@"
