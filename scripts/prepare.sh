# Sourced by the entry scripts (demo, test, benchmark): install what is missing,
# start the local services, load the environment and move to the project root.
# shellcheck shell=bash
_prepare_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$_prepare_root/scripts/bootstrap.sh"
"$_prepare_root/scripts/services.sh" up
# shellcheck source=scripts/env.sh
source "$_prepare_root/scripts/env.sh"
cd "$ROOT"
