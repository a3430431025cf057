#!/bin/sh
# One labnet up + down (a helper for updown.sh; exec keeps the shell's cost to one fork).
"$1" up "$2" --config "$3" --no-daemons >/dev/null && exec "$1" down "$2" >/dev/null
