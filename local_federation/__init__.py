"""Run a whole federation on one machine.

A coordinator, several data owners and a model creator run as separate processes on free
loopback ports. Used by the demo command and by the end-to-end tests, which exercise the
services exactly as a user starts them.
"""
