# The fleet's one-time set-up, run by the `setup` service as uid 10001 in
# the flotilla image (no shell tools but sh and flotilla itself) into the
# `secrets` volume, mounted at /data. Running it again changes nothing:
# nats-config keeps existing seeds, tokens are made once.
#
#   docker-compose run --rm setup print admin.token   # show a stored token
set -eu
umask 077
cd /data

if [ "${1:-}" = print ]; then
  # No cat in a FROM-scratch image: sh's read and echo do.
  while IFS= read -r line; do echo "$line"; done < "/data/$2"
  exit 0
fi

agents=""
for node in $FLOTILLA_AGENTS; do agents="$agents --agent $node"; done
workers=""
for worker in $FLOTILLA_WORKERS; do workers="$workers --worker $worker"; done
# One nkey user per principal, each with only its role's subjects; the
# three servers' routes need a password only the servers know.
# shellcheck disable=SC2086
flotilla nats-config --out /data/nats $agents $workers --operator ops --auditor audit \
  --route nats://nats-1:6222 --route nats://nats-2:6222 --route nats://nats-3:6222

# Bearer tokens of the HTTP servers (the gateways bind 0.0.0.0, so they
# need them): an admin for operators, an inference token for clients of
# the workers. Only their hashes are in tokens.json.
for pair in admin:admin inference:inference; do
  name=${pair%%:*} role=${pair#*:}
  if [ ! -s "$name.token" ]; then
    flotilla token create --tokens /data/tokens.json --name "$name" --role "$role" > "$name.token"
  fi
done
echo "secrets ready in the volume (docker-compose run --rm setup print admin.token)"
