"""LTI 1.3 (the hub as an LTI tool): the tool's key pair, platform key sets, login state, launch validation and the
durable LMS identity → hub user name mapping.

Pure libraries (no JupyterHub import): the hub side (`hubfleet.hub.authenticators.lti`) and the fleet side (roster
sync) both use them.
"""
