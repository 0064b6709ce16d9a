#!/bin/sh
# Assembles the root filesystem of a FROM-scratch image: the programs
# named, the shared libraries each links (as `ldd` resolves them on this
# machine), CA certificates, and a passwd/group entry for uid 10001.
#
#   rootfs.sh OUT flotilla    BINARY   # /usr/local/bin/flotilla, plus /bin/sh and /bin/mv
#   rootfs.sh OUT nats-server BINARY   # /usr/local/bin/nats-server (static)
#
# The flotilla image carries /bin/sh and /bin/mv because the scheduler's
# local executor runs each attempt under a tiny sh wrapper that records its
# exit status with an atomic mv (actors/scheduler/src/local.rs); nothing
# else from a distribution is in it.
#
# Both deploy/image/build.sh (no registry needed) and the multi-stage
# deploy/Dockerfile (for users with one) build their image from this one
# script, so the two images have the same files. Owners are not set here
# (a non-root builder could not): build.sh's tar and the Dockerfile's COPY
# make every file root's and /data uid 10001's.
set -eu
# Modes must not depend on the builder's umask either.
umask 022

out=$1 kind=$2 binary=$3
[ -x "$binary" ] || { echo "rootfs.sh: $binary is not an executable" >&2; exit 2; }
rm -rf "$out"
mkdir -p "$out/usr/local/bin" "$out/etc/ssl/certs" "$out/data" "$out/tmp"
chmod 1777 "$out/tmp"

# Copies a program to PATH_IN_IMAGE with every library ldd resolves for
# it, at the library's own path (the dynamic loader included). Static
# programs have none.
copy_program() {
  src=$1 dest=$2
  mkdir -p "$out$(dirname "$dest")"
  cp "$src" "$out$dest"
  # Symbols and debug info are a quarter of the release binary and not
  # needed to run it (panics still name their file and line).
  strip "$out$dest" 2>/dev/null || true
  # ldd fails on a static program ("not a dynamic executable").
  linked=$(ldd "$src" 2>/dev/null) || linked=
  # A library ldd cannot find would only fail when the container starts.
  missing=$(printf '%s\n' "$linked" | awk '/=> not found/{printf "%s%s", sep, $1; sep=", "}')
  if [ -n "$missing" ]; then
    echo "rootfs.sh: $src needs $missing, not found on this machine (see: ldd $src)" >&2
    exit 1
  fi
  printf '%s\n' "$linked" | awk '/=> \//{print $3} /^\t\//{print $1}' | while read -r lib; do
    copy_lib "$lib"
  done
}

copy_lib() {
  mkdir -p "$out$(dirname "$1")"
  cp -L "$1" "$out$1"
}

case $kind in
  flotilla)
    copy_program "$binary" /usr/local/bin/flotilla
    copy_program "$(command -v dash || command -v sh)" /bin/sh
    copy_program "$(command -v mv)" /bin/mv
    # glibc before 2.34 loads these at run time to resolve names (through
    # nsswitch.conf) and ldd never lists them; from 2.34 they are stubs or
    # absent. Copied beside the libc the binary links, when there.
    libc=$(ldd "$binary" | awk '/libc\.so/{print $3}')
    for lib in libnss_files.so.2 libnss_dns.so.2 libresolv.so.2; do
      if [ -n "$libc" ] && [ -e "$(dirname "$libc")/$lib" ]; then
        copy_lib "$(dirname "$libc")/$lib"
      fi
    done
    user=flotilla
    ;;
  nats-server)
    copy_program "$binary" /usr/local/bin/nats-server
    user=nats
    ;;
  *) echo "rootfs.sh: unknown image kind $kind (flotilla | nats-server)" >&2; exit 2 ;;
esac

cp -L /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\n%s:x:10001:10001:%s:/data:/sbin/nologin\n' "$user" "$user" > "$out/etc/passwd"
printf 'root:x:0:\n%s:x:10001:\n' "$user" > "$out/etc/group"
# Names resolve from /etc/hosts first, then DNS (compose and Kubernetes
# inject both).
printf 'hosts: files dns\n' > "$out/etc/nsswitch.conf"
