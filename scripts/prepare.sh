# Sourced by the entry scripts (demo, test, benchmark): install what is missing,
# start the local services (unless PREPARE_SERVICES=0), load the environment and
# move to the project root.
# shellcheck shell=bash
_prepare_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$_prepare_root/scripts/bootstrap.sh"
if [ "${PREPARE_SERVICES:-1}" != 0 ]; then
  "$_prepare_root/scripts/services.sh" up
fi
# shellcheck source=scripts/env.sh
source "$_prepare_root/scripts/env.sh"
cd "$ROOT"
