# The fleet's one-time set-up, run as uid 10001 in the flotilla image
# (no shell tools but sh, mv and flotilla itself).
#
#   setup.sh                 (service `setup`) every secret into /data, the
#                            `secrets` volume, which no running service mounts
#   setup.sh share FILE...   (services `share-*`) copies FILE (relative to
#                            /all, the `secrets` volume read-only) into /data,
#                            one role's own volume
#   setup.sh print FILE      shows a stored secret: `docker-compose run --rm
#                            -T setup print admin.token`
#
# Running it again changes nothing: nats-config keeps existing seeds and the
# route password, the signing key and tokens are made once.
set -eu
umask 077

# The secrets are one-line or small text files: sh's read and printf copy
# them (there is no cat or cp in a FROM-scratch image).
copy() {
  while IFS= read -r line || [ -n "$line" ]; do printf '%s\n' "$line"; done < "$1"
}

# Only names inside the secrets volume.
checked() {
  case $1 in
    /* | *..*) echo "setup.sh: $1: name a file of the secrets volume" >&2; exit 2 ;;
  esac
  printf '%s' "$1"
}

case ${1:-} in
  print)
    copy "/data/$(checked "$2")"
    exit 0
    ;;
  share)
    shift
    for file in "$@"; do
      copy "/all/$(checked "$file")" > "/data/${file##*/}.tmp"
      mv "/data/${file##*/}.tmp" "/data/${file##*/}"
    done
    exit 0
    ;;
esac

cd /data
agents=""
for node in $FLOTILLA_AGENTS; do agents="$agents --agent $node"; done
workers=""
for worker in $FLOTILLA_WORKERS; do workers="$workers --worker $worker"; done
# One nkey user per principal, each with only its role's subjects; the
# three servers' routes need a password only the servers know.
# shellcheck disable=SC2086
flotilla nats-config --out /data/nats $agents $workers \
  --operator ops --auditor audit --inference-client driver \
  --route nats://nats-1:6222 --route nats://nats-2:6222 --route nats://nats-3:6222

# The control plane's Ed25519 key: both replicas sign with it, workers and
# auditors check with its public half.
flotilla signing-key /data/signing.key > /dev/null

# Bearer tokens of the HTTP servers (the gateways and workers bind 0.0.0.0,
# so they need them): an admin for operators, an inference token for the
# workers' clients. Only their hashes are in tokens.json.
for pair in admin:admin inference:inference; do
  name=${pair%%:*} role=${pair#*:}
  if [ ! -s "$name.token" ]; then
    flotilla token create --tokens /data/tokens.json --name "$name" --role "$role" > "$name.token"
  fi
done
echo "secrets ready (docker-compose run --rm -T setup print admin.token)"
