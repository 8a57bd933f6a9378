#!/bin/sh
# Regenerate metadata/md5-cache (and profiles/use.local.desc) of this
# repository with Portage's egencache.  Needs Portage (e.g. the venv in
# .cache/portage-venv: PATH=$PWD/.cache/portage-venv/bin:$PATH).
set -eu
repo=$(cd "$(dirname "$0")" && pwd)
cfg=$(mktemp -d)
trap 'rm -rf "$cfg"' EXIT
mkdir -p "$cfg/etc/portage"
cp -r "$repo/../portage/etc-portage/make.profile" "$cfg/etc/portage/"
export PORTAGE_CONFIGROOT="$cfg" EPREFIX= PORTAGE_USERNAME=root PORTAGE_GRPNAME=root
export PORTAGE_REPOSITORIES="[DEFAULT]
main-repo = gah-hostile
[gah-hostile]
location = $repo"
egencache --repositories-configuration "$PORTAGE_REPOSITORIES" --update --update-use-local-desc --repo gah-hostile --jobs 2
