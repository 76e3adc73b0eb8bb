# Sourced by the other scripts: one build directory that survives between runs, so gRPC's
# C core (a ~10 minute build) is compiled once per machine.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/ctrd-target}
