#!/usr/bin/env bash
# Writes the project's Janus configuration (conf/janus) into a folder, with a
# fresh admin key on every plugin broadcast-agent uses (AudioBridge,
# Streaming, TextRoom, VideoRoom): only holders of the key may create rooms
# and mountpoints, so a viewer of the page cannot squat the broadcast's id.
#
#   deploy/janus-conf.sh DEST [KEY_FILE]
#
# DEST      the folder Janus reads (/etc/janus on a server; any folder for
#           `janus -F DEST`). Existing *.jcfg files of the same names are
#           replaced; a key already in DEST/broadcast-agent.admin_key is kept,
#           so running it again does not lock the agent out.
# KEY_FILE  where to write the key for the agent too (default
#           DEST/broadcast-agent.admin_key): point room.admin_key_file at a
#           copy of it on the Pi (0640 root:broadcast-agent).
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -ge 1 ] && [ $# -le 2 ] || { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 64; }
dest=$1
own="$dest/broadcast-agent.admin_key"
key_file=${2:-$own}

mkdir -p "$dest"
umask 077
if [ -s "$own" ]; then
  key=$(cat "$own")
else
  # 32 hex digits: no character Janus's config syntax or JSON must escape.
  key=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  printf '%s\n' "$key" >"$own"
fi
[ "$key_file" = "$own" ] || printf '%s\n' "$key" >"$key_file"

for file in conf/janus/*.jcfg; do
  name=$(basename "$file")
  # Janus reads its configuration as its own user: the files stay readable,
  # the key in them is no secret from Janus's host's administrators.
  sed "s/@ADMIN_KEY@/$key/" "$file" >"$dest/$name.new"
  chmod 0644 "$dest/$name.new"
  mv "$dest/$name.new" "$dest/$name"
done
if grep -l '@ADMIN_KEY@' "$dest"/*.jcfg >/dev/null 2>&1; then
  echo "janus-conf: a placeholder was left in $dest" >&2
  exit 1
fi
echo "janus-conf: $dest written; the agent's key is in $key_file (room.admin_key_file)"
