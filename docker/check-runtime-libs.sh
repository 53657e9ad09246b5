#!/bin/sh
# Fails when a binary links a shared library the runtime image (gcr.io/distroless/cc-debian12)
# does not have. That image has glibc, libgcc_s, libstdc++ and OpenSSL 3 (libssl, libcrypto),
# nothing else: zlib, for one, must be linked statically (LIBZ_SYS_STATIC=1).
#
#   docker/check-runtime-libs.sh BINARY...
set -eu
status=0
for binary in "$@"; do
  [ -f "$binary" ] || { echo "check-runtime-libs: no file $binary" >&2; exit 1; }
  if ! libs="$(ldd "$binary" 2>&1)"; then
    case "$libs" in
      *"not a dynamic executable"*) echo "check-runtime-libs: $binary is static"; continue ;;
      *) echo "check-runtime-libs: ldd $binary failed: $libs" >&2; exit 1 ;;
    esac
  fi
  unexpected="$(printf '%s\n' "$libs" | awk '{print $1}' \
    | grep -Ev '^(linux-vdso\.so\.1|linux-gate\.so\.1|/lib[^ ]*/ld-linux[^ ]*|ld-linux[^ ]*|lib(c|m|dl|rt|pthread|util|gcc_s|stdc\+\+|ssl|crypto)\.so(\.[0-9]+)*)$' \
    || true)"
  if [ -n "$unexpected" ]; then
    echo "check-runtime-libs: $binary links libraries the distroless cc image lacks:" >&2
    # shellcheck disable=SC2086 # one library a line
    printf '  %s\n' $unexpected >&2
    status=1
  else
    echo "check-runtime-libs: $binary links only libraries of the runtime image"
  fi
done
exit "$status"
