"""Scheduled rebuilds: a systemd timer and service pair that run `imagebuilder build RECIPE --if-changed`.

`spec` builds the unit text, every value escaped for systemd: `%` is doubled wherever specifiers are
expanded, and each ExecStart argument that needs it is double-quoted with C escapes and `$` doubled,
so a recipe path with spaces, quotes, `%` or `$` reaches the build intact. Every file this package
writes starts with MARKER and one JSON line of metadata; `list` and `remove` only ever look at or
delete files that carry that marker, never a unit somebody else wrote.

The service holds a lock per recipe (`flock` on `%t/imagebuilder-HASH.lock`, %t being /run or the
user's runtime directory) while it builds, so two schedules of one recipe never build at once; a run
that finds the lock taken waits for it, then usually finds nothing changed. systemd itself never
starts a service that is still running, so one timer cannot overlap with itself.

`plan` checks what a schedule is made of (name, calendar, delay, the command); `unitfiles` writes,
lists and removes the unit files.
"""
