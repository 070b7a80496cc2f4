"""Container images of underlay, built here with podman on a Debian base made by debootstrap."""
