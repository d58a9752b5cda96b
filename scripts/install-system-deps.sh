#!/usr/bin/env bash
# Install the system tools mpwatch's tests need beyond the virtualenv:
# - the Prometheus server (`prometheus`) and its checker (`promtool`), for the metrics tests;
# - headless Chromium (`chromium`) and its WebDriver (`chromedriver`), for the review
#   console's browser test (tests/test_console.py drives them through selenium).
#
# - Idempotent: when every tool is already on PATH it does nothing, and it installs only
#   the packages whose tools are missing.
# - As root on a Debian/Ubuntu machine it installs the distribution's packages
#   (`prometheus`; `chromium` and `chromium-driver`). The prometheus package's maintainer
#   script would start a system Prometheus on :9090; a temporary policy-rc.d forbids that
#   (the tests start their own Prometheus on a free port with their own storage, so a
#   system one is never needed), and where systemd is running the unit is disabled and
#   stopped if it was started anyway.
# - Otherwise it says what is missing and how to get it. The exit status is 0 then,
#   except under CI (the CI environment variable set), where a missing tool is an error,
#   as it is for the tests.
set -euo pipefail

log() { printf 'install-system-deps: %s\n' "$*" >&2; }

missing=()
packages=()
for tool in prometheus promtool; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    packages+=(prometheus)
fi
browser_missing=0
for tool in chromium chromedriver; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        missing+=("$tool")
        browser_missing=1
    fi
done
if [ "$browser_missing" -eq 1 ]; then
    packages+=(chromium chromium-driver)
fi
if [ "${#missing[@]}" -eq 0 ]; then
    log "prometheus and promtool are already installed ($(command -v prometheus), $(command -v promtool))"
    log "chromium and chromedriver are already installed ($(command -v chromium), $(command -v chromedriver))"
    exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    policy=/usr/sbin/policy-rc.d
    created_policy=0
    if [ ! -e "$policy" ]; then
        # 101: "action forbidden"; invoke-rc.d and deb-systemd-invoke then start nothing.
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        created_policy=1
    fi
    cleanup() { if [ "$created_policy" -eq 1 ]; then rm -f "$policy"; fi; }
    trap cleanup EXIT

    log "installing the Debian packages: ${packages[*]} (missing: ${missing[*]})"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"

    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    fi
    for tool in "${missing[@]}"; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            log "the packages installed, but '$tool' is still not on PATH"
            exit 1
        fi
    done
    log "installed: $(prometheus --version 2>&1 | head -n 1)"
    log "installed: $(chromium --version 2>&1 | head -n 1); $(chromedriver --version 2>&1 | head -n 1)"
    exit 0
fi

log "missing: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    log "run this script as root (sudo $0) to install the packages (${packages[*]}) with apt-get,"
else
    log "no apt-get on this machine;"
fi
log "or install Prometheus from https://prometheus.io/download/ and put 'prometheus' and"
log "'promtool' on PATH, and Chromium with a matching chromedriver as 'chromium' and"
log "'chromedriver'. Until then the tests that need them are skipped (and fail under CI)."
if [ -n "${CI:-}" ]; then
    exit 1
fi
exit 0
