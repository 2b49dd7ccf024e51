# Sourced by the other scripts: apt_install installs Debian packages for them.
# Scripts (and tests, which call scripts) may install at the same time, so
# installs take turns on a lock of their own and wait for dpkg's rather than
# fail on it; a first refusal (a stale package list) is retried after an update.
#
#   source "$(dirname "$0")/apt.sh"; apt_install PACKAGE...

apt_install() {
	# One lock for the machine, whatever state directory a caller uses.
	local lock=/tmp/coderun-apt.lock
	(
		flock -w 900 9 || { echo "apt.sh: another install held $lock for 15 minutes" >&2; exit 1; }
		export DEBIAN_FRONTEND=noninteractive
		local apt=(apt-get -o DPkg::Lock::Timeout=600)
		"${apt[@]}" install -y --no-install-recommends "$@" >&2 ||
			{ "${apt[@]}" update >&2 && "${apt[@]}" install -y --no-install-recommends "$@" >&2; }
	) 9>"$lock"
}
