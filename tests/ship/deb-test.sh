#!/usr/bin/env bash
# Check the broadcast-agent .deb packages with dpkg-deb: architecture, Depends,
# conffile, files and modes, the binary inside, and the maintainer scripts.
#
#   tests/ship/deb-test.sh                 # builds both with deploy/build-deb.sh all, then checks
#   tests/ship/deb-test.sh FILE.deb...     # checks the given packages
# Last line: deb: N passed, M failed (exit status non-zero if any failed).
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/deb-test.XXXXXX")
trap 'rm -rf "$work"' EXIT

# shellcheck source=tests/ship/lib.sh
. "$repo/tests/ship/lib.sh"  # ok, bad, check, eq

debs=("$@")
if [ ${#debs[@]} -eq 0 ]; then
    if out=$("$repo/deploy/build-deb.sh" all 2>"$work/build.log"); then
        mapfile -t debs <<<"$out"
        ok "deploy/build-deb.sh all builds the packages"
    else
        bad "deploy/build-deb.sh all builds the packages" "$(tail -n 5 "$work/build.log")"
    fi
fi

# Every library the binary links must come from a package in Depends.
lib_package() {
    case "$1" in
        libc.so.6|libm.so.6|libdl.so.2|libpthread.so.0|librt.so.1|ld-linux*) echo libc6 ;;
        libgcc_s.so.1) echo libgcc-s1 ;;
        libglib-2.0.so.0|libgobject-2.0.so.0|libgio-2.0.so.0|libgmodule-2.0.so.0) echo libglib2.0-0 ;;
        libgstreamer-1.0.so.0|libgstbase-1.0.so.0|libgstnet-1.0.so.0|libgstcontroller-1.0.so.0) echo libgstreamer1.0-0 ;;
        libgstwebrtc-1.0.so.0|libgstwebrtcnice-1.0.so.0) echo libgstreamer-plugins-bad1.0-0 ;;
        libgst*-1.0.so.0) echo libgstreamer-plugins-base1.0-0 ;;
        libasound.so.2) echo libasound2 ;;
        *) echo "?" ;;
    esac
}
# Package names in a Depends/Recommends field, one a line.
field_packages() { tr ',|' '\n\n' | sed 's/([^)]*)//; s/^ *//; s/ *$//' | grep -v '^$'; }

for deb in "${debs[@]}"; do
    [ -n "$deb" ] || continue
    name=$(basename "$deb")
    if [ ! -f "$deb" ]; then bad "$name exists"; continue; fi
    arch=$(dpkg-deb --field "$deb" Architecture)
    case "$arch" in
        arm64) want_file='ELF 64-bit LSB .*ARM aarch64' ;;
        armhf) want_file='ELF 32-bit LSB .*ARM, EABI5' ;;
        *) bad "$name: architecture is arm64 or armhf" "got: $arch"; continue ;;
    esac
    t="$name"
    eq "$t: Package is broadcast-agent" "$(dpkg-deb --field "$deb" Package)" broadcast-agent
    case "$name" in *_"$arch".deb) ok "$t: file name matches Architecture $arch" ;;
                    *) bad "$t: file name matches Architecture $arch" ;; esac

    depends=$(dpkg-deb --field "$deb" Depends)
    for want in "libc6 (>= 2.36)" "libgstreamer1.0-0 (>= 1.22)" "libgstreamer-plugins-base1.0-0" \
                "gstreamer1.0-plugins-base" "gstreamer1.0-plugins-good" "gstreamer1.0-plugins-bad" \
                "libgstreamer-plugins-bad1.0-0" "gstreamer1.0-nice" "gstreamer1.0-alsa" "libasound2" "adduser"; do
        case ", $depends," in *", $want"[,\ ]*) ok "$t: Depends $want" ;;
                              *) bad "$t: Depends $want" "Depends: $depends" ;; esac
    done
    recommends=$(dpkg-deb --field "$deb" Recommends)
    check "$t: Recommends gstreamer1.0-plugins-ugly (x264enc)" grep -qx gstreamer1.0-plugins-ugly <(field_packages <<<"$recommends")
    check "$t: Recommends rpicam-apps (rpicam-vid, source = libcamera)" grep -qx rpicam-apps <(field_packages <<<"$recommends")
    # Raspberry Pi OS Lite ships rpicam-apps-lite: dpkg itself must find the
    # camera recommendation satisfied by it alone.
    camera_group=$(tr ',' '\n' <<<"$recommends" | grep -w rpicam-apps | sed 's/^ *//')
    lite=$work/$arch-lite
    mkdir -p "$lite/admin"
    printf 'Package: rpicam-apps-lite\nStatus: install ok installed\nPriority: optional\nSection: graphics\nArchitecture: %s\nVersion: 1.5.3-1\nDescription: as on Raspberry Pi OS Lite\n' \
        "$arch" >"$lite/admin/status"
    printf 'Source: lite\n\nPackage: lite\nArchitecture: any\n' >"$lite/control"
    check "$t: a Raspberry Pi OS Lite install (rpicam-apps-lite) satisfies '$camera_group'" \
        dpkg-checkbuilddeps --admindir="$lite/admin" -a "$arch" -d "$camera_group" "$lite/control"

    dpkg-deb --contents "$deb" >"$work/contents"
    mode_owner() { awk -v p="./$1" '$6 == p { o = $2; if (o == "0/0") o = "root/root"; print $1, o }' "$work/contents"; }
    eq "$t: /usr/bin/broadcast-agent 0755 root" "$(mode_owner usr/bin/broadcast-agent)" "-rwxr-xr-x root/root"
    eq "$t: /lib/systemd/system/broadcast-agent.service 0644 root" \
        "$(mode_owner lib/systemd/system/broadcast-agent.service)" "-rw-r--r-- root/root"
    eq "$t: /etc/broadcast-agent/agent.toml 0640 root" "$(mode_owner etc/broadcast-agent/agent.toml)" "-rw-r----- root/root"
    check "$t: no unit under /usr/lib/systemd (one unit, one place)" \
        bash -c "! grep -q 'usr/lib/systemd/system/' '$work/contents'"
    check "$t: copyright file" grep -q ' ./usr/share/doc/broadcast-agent/copyright$' "$work/contents"
    check "$t: the README's docs beside it" grep -q ' ./usr/share/doc/broadcast-agent/docs/security.md$' "$work/contents"

    ctl=$work/$arch-control data=$work/$arch-data
    mkdir -p "$ctl" "$data"
    dpkg-deb --control "$deb" "$ctl"
    dpkg-deb --extract "$deb" "$data"
    eq "$t: conffiles is exactly /etc/broadcast-agent/agent.toml" "$(cat "$ctl/conffiles" 2>/dev/null)" /etc/broadcast-agent/agent.toml
    check "$t: shipped config is conf/agent.toml" cmp -s "$repo/conf/agent.toml" "$data/etc/broadcast-agent/agent.toml"
    check "$t: shipped unit is systemd/broadcast-agent.service" \
        cmp -s "$repo/systemd/broadcast-agent.service" "$data/lib/systemd/system/broadcast-agent.service"
    check "$t: unit starts /usr/bin/broadcast-agent with /etc/broadcast-agent/agent.toml" \
        grep -Eq '^ExecStart=/usr/bin/broadcast-agent .*--config /etc/broadcast-agent/agent.toml' \
        "$data/lib/systemd/system/broadcast-agent.service"

    # The manual pages and completions the binary made of its own command line.
    man1=usr/share/man/man1
    bash_c=usr/share/bash-completion/completions/broadcast-agent
    zsh_c=usr/share/zsh/vendor-completions/_broadcast-agent
    fish_c=usr/share/fish/vendor_completions.d/broadcast-agent.fish
    for f in "$man1/broadcast-agent.1.gz" "$bash_c" "$zsh_c" "$fish_c"; do
        eq "$t: /$f 0644 root" "$(mode_owner "$f")" "-rw-r--r-- root/root"
    done
    man_warnings=$(zcat "$data/$man1/broadcast-agent.1.gz" | groff -man -Tutf8 -ww -z 2>&1 >/dev/null) ||
        man_warnings="groff failed: $man_warnings"
    eq "$t: man broadcast-agent formats without warnings" "$man_warnings" ""
    for sub in $(zcat "$data/$man1/broadcast-agent.1.gz" | sed -n 's/^broadcast\\-agent\\-\([a-z]*\)(1)$/\1/p'); do
        check "$t: man broadcast-agent-$sub (named by man broadcast-agent)" test -f "$data/$man1/broadcast-agent-$sub.1.gz"
    done
    check "$t: the bash completion registers broadcast-agent" \
        bash --norc -c "source '$data/$bash_c' && complete -p broadcast-agent"
    eq "$t: the zsh completion is for broadcast-agent" "$(head -n1 "$data/$zsh_c")" "#compdef broadcast-agent"
    check "$t: the fish completion is for broadcast-agent" grep -q '^complete -c broadcast-agent ' "$data/$fish_c"

    bin=$data/usr/bin/broadcast-agent
    check "$t: binary is $arch ($want_file)" grep -Eq "$want_file" <(file -b "$bin")
    check "$t: binary is stripped" bash -c "file -b '$bin' | grep -q ', stripped'"
    glibc=$(readelf --dyn-syms -W "$bin" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1)
    check "$t: needs glibc ${glibc:-?} <= 2.36 (Depends libc6 >= 2.36, Bookworm)" \
        bash -c "[ -n '$glibc' ] && [ \"\$(printf '%s\n' '$glibc' 2.36 | sort -V | tail -n1)\" = 2.36 ]"
    deps_pkgs=$(field_packages <<<"$depends")
    for lib in $(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
        pkg=$(lib_package "$lib")
        check "$t: linked $lib comes from Depends ($pkg)" grep -qx -- "$pkg" <<<"$deps_pkgs"
    done

    for s in postinst prerm postrm; do
        check "$t: $s present and executable" test -x "$ctl/$s"
        check "$t: $s parses (sh -n)" sh -n "$ctl/$s"
        check "$t: $s has no unreplaced debhelper token" bash -c "! grep -q '#DEBHELPER#' '$ctl/$s'"
    done

    # Run postinst configure with fake system tools: gpio absent, user absent.
    fk=$work/$arch-fake log=$work/$arch-postinst.log
    mkdir -p "$fk"; : >"$log"
    for tool in adduser addgroup chown chmod deb-systemd-helper deb-systemd-invoke systemctl; do
        printf '#!/bin/sh\necho "%s $*" >>"%s"\n' "$tool" "$log" >"$fk/$tool"
    done
    printf '#!/bin/sh\nexit 1\n' >"$fk/dpkg-statoverride"
    cat >"$fk/getent" <<'EOF'
#!/bin/sh
[ "$1" = group ] && case "$2" in audio|video) echo "$2:x:1:"; exit 0 ;; esac
exit 2
EOF
    chmod +x "$fk"/*
    if PATH="$fk:$PATH" sh "$ctl/postinst" configure "" >"$work/postinst.out" 2>&1; then
        ok "$t: postinst configure (fresh install) exits 0"
    else
        bad "$t: postinst configure (fresh install) exits 0" "$(cat "$work/postinst.out")"
    fi
    check "$t: postinst creates the system user" \
        grep -Eq '^adduser --system --group .*broadcast-agent$' "$log"
    check "$t: postinst adds it to audio" grep -qx 'adduser --quiet broadcast-agent audio' "$log"
    check "$t: postinst adds it to video" grep -qx 'adduser --quiet broadcast-agent video' "$log"
    check "$t: postinst creates the absent gpio group" grep -qx 'addgroup --system --quiet gpio' "$log"
    check "$t: postinst adds the user to gpio" grep -qx 'adduser --quiet broadcast-agent gpio' "$log"
    check "$t: postinst enables the unit" grep -qx 'deb-systemd-helper enable broadcast-agent.service' "$log"
    check "$t: postinst gives the config to root:broadcast-agent 0640" \
        bash -c "grep -q 'chown \"root:\$user\" \"\$conf\"' '$ctl/postinst' && grep -q 'chmod 0640 \"\$conf\"' '$ctl/postinst'"
    check "$t: prerm stops the service on remove" grep -q 'deb-systemd-invoke stop broadcast-agent.service' "$ctl/prerm"

    # Install, remove and purge with the real dpkg into an empty root ($DPKG_ROOT,
    # scripts run here with the fake tools above), after the service had run:
    # remove keeps its files, purge leaves nothing of the package behind.
    dr=$work/$arch-root
    mkdir -p "$dr/var/lib/dpkg/info" "$dr/var/lib/dpkg/updates"
    : >"$dr/var/lib/dpkg/status"
    dpkg_root() { PATH="$fk:$PATH" dpkg --root="$dr" --force-script-chrootless --force-not-root "$@" >"$work/dpkg.out" 2>&1; }
    if dpkg_root --force-architecture --force-depends -i "$deb"; then
        ok "$t: dpkg installs it into an empty root"
    else
        bad "$t: dpkg installs it into an empty root" "$(tail -n 3 "$work/dpkg.out")"
    fi
    # What the service and an admin leave: the owner's last choice (closed), a
    # recording, GStreamer's registry, the metrics textfile and a temporary one
    # beside it (root's apt.prom is not the package's), a .dist copy.
    mkdir -p "$dr/var/lib/broadcast-agent/recordings" "$dr/var/cache/broadcast-agent/gstreamer-1.0" \
        "$dr/var/lib/prometheus/node-exporter"
    echo '{"room":"closed","closed_by":"owner"}' >"$dr/var/lib/broadcast-agent/room.json"
    touch "$dr/var/lib/broadcast-agent/recordings/20261201-120000.mkv" \
        "$dr/var/cache/broadcast-agent/gstreamer-1.0/registry.aarch64.bin" \
        "$dr/etc/broadcast-agent/agent.toml.dist" \
        "$dr/var/lib/prometheus/node-exporter/"{broadcast_agent.prom,.broadcast_agent.prom.0123456789abcdef.tmp,apt.prom}
    dpkg_root -r broadcast-agent || bad "$t: dpkg -r" "$(tail -n 3 "$work/dpkg.out")"
    check "$t: remove keeps the state (room.json) and the config" \
        test -f "$dr/var/lib/broadcast-agent/room.json" -a -f "$dr/etc/broadcast-agent/agent.toml"
    dpkg_root --purge broadcast-agent || bad "$t: dpkg --purge" "$(tail -n 3 "$work/dpkg.out")"
    left=$(cd "$dr" && find . -path '*broadcast*' | sort | paste -sd ' ')
    eq "$t: purge leaves nothing of the package (state, cache, config, textfile)" "$left" ""
    check "$t: purge keeps root's apt.prom beside the textfile" test -f "$dr/var/lib/prometheus/node-exporter/apt.prom"
done

[ ${#debs[@]} -gt 0 ] || bad "no packages to check"
echo "deb: $pass passed, $fail failed"
[ "$fail" = 0 ]
