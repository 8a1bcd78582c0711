"""Education: courses on a hub (groups, roles, folders), LTI 1.3 launches and LMS roster sync.

Libraries here are imported by both the fleet side and the hub side; they never import JupyterHub.
"""
