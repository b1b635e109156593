#!/usr/bin/env bash
# Build the real Asterisk the real-PBX tests run (tests/realpbx, README "Running the
# real-PBX tests"): Asterisk 20 LTS with chan_sip AND chan_pjsip, func_curl, res_agi and
# app_waitforcond, into a prefix, from a git directory of the Asterisk source
# (github.com/asterisk/asterisk; a bare clone is enough). Debian has no asterisk package.
# About 12-15 minutes on 2 cores: run it in the background.
#
#   PJPROJECT_GIT=PJ_GIT_DIR tests/realpbx/build-asterisk.sh ASTERISK_GIT_DIR [PREFIX]
#
# PREFIX defaults to /opt/asterisk (where the tests look: ICM_ASTERISK). PJPROJECT_GIT is a
# git directory of github.com/pjsip/pjproject: chan_pjsip is built on Asterisk's bundled
# pjproject, whose tarball `git archive` of the tag reproduces byte for byte (Asterisk's
# checksum is checked), so nothing is downloaded. Without it, no chan_pjsip (the PJSIP
# half of the tests is then skipped). ASTERISK_TAG picks another release (default 20.19.0;
# chan_sip is gone from 21 on, and the chan_sip half is then skipped).
set -euo pipefail
git_dir=${1:?usage: build-asterisk.sh ASTERISK_GIT_DIR [PREFIX]}
prefix=${2:-/opt/asterisk}
tag=${ASTERISK_TAG:-20.19.0}
src=$(mktemp -d /tmp/asterisk-src.XXXXXX)
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# Build dependencies, and SIPp (sip-tester) for the phones and callers of the tests.
$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential libedit-dev \
    libjansson-dev libxml2-dev uuid-dev libsqlite3-dev libssl-dev libncurses-dev pkg-config \
    libcurl4-openssl-dev bzip2 sip-tester >/dev/null

# Some mirrors lack an old ChangeLog blob: everything else is enough.
git -C "$git_dir" archive "$tag" -- . ':!ChangeLogs' | tar x -C "$src" || true
test -f "$src/configure" || { echo "no Asterisk source for tag $tag in $git_dir" >&2; exit 1; }
cd "$src"
pjproject=(--without-pjproject-bundled)
if [ -n "${PJPROJECT_GIT:-}" ]; then
    version=$(sed -n 's/^PJPROJECT_VERSION=//p' third-party/versions.mak)
    mkdir -p cache
    git -C "$PJPROJECT_GIT" archive --prefix="pjproject-$version/" "$version" \
        | bzip2 >"cache/pjproject-$version.tar.bz2"
    sum=$(md5sum "cache/pjproject-$version.tar.bz2" | cut -d' ' -f1)
    grep -q "$sum" "third-party/pjproject/pjproject-$version.tar.bz2.md5" || {
        echo "pjproject $version from $PJPROJECT_GIT does not match Asterisk's checksum" >&2
        exit 1
    }
    pjproject=(--with-pjproject-bundled --with-download-cache="$src/cache")
fi
./configure --prefix="$prefix" "${pjproject[@]}" --with-jansson-bundled=no \
    --without-dahdi --without-pri --without-ss7 >configure.log 2>&1
make menuselect.makeopts >/dev/null 2>&1
menuselect/menuselect --enable chan_sip --enable func_curl --enable res_curl \
    --disable-category MENUSELECT_CORE_SOUNDS --disable-category MENUSELECT_MOH \
    --disable-category MENUSELECT_EXTRA_SOUNDS --disable BUILD_NATIVE menuselect.makeopts
make -j"$(nproc)" >make.log 2>&1 || { tail -30 make.log >&2; exit 1; }
$sudo make install >install.log 2>&1
modules="app_waitforcond func_curl res_agi app_userevent"
[ "${tag%%.*}" -ge 21 ] || modules="$modules chan_sip"
[ -z "${PJPROJECT_GIT:-}" ] || modules="$modules chan_pjsip res_pjsip"
for module in $modules; do
    test -f "$prefix/lib/asterisk/modules/$module.so" || { echo "no $module.so" >&2; exit 1; }
done
echo "Asterisk $tag installed in $prefix (source and logs in $src)"
