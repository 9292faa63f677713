"""Service supervision: the builtin supervisor and the s6 and systemd backends.

Every backend learns about state changes from notifications (pidfds, the
sd_notify socket, s6 fifodirs, D-Bus signals) and never polls.
"""
