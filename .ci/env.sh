# Sourced by .ci/run and .ci/setup (and by developers who want CI's cache): one place for the
# build environment, so a developer's build and CI's share compiled dependencies.
#
# The cargo target directory lives outside the clone so it survives between CI runs on one
# machine (each CI run is a fresh clone). RocksDB's C++ is compiled through ccache: cargo builds
# librocksdb-sys twice per run (once for test binaries, once more for `cargo clippy`, which uses
# its own unit hashes), and the second compile then hits the cache.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/ratify/target}"
export CCACHE_DIR="${CCACHE_DIR:-/var/cache/ratify/ccache}"
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-5G}"
# ccache hashes the compiler command; build-dir paths differ between the two compiles.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-/}"
export CCACHE_NOHASHDIR=1
if command -v ccache >/dev/null 2>&1; then
  export CC="ccache cc" CXX="ccache c++"
fi
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
