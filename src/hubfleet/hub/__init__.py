"""Hub-side code: what runs inside each JupyterHub process (authenticators, spawners, configuration).

Nothing here imports the fleet side; the two meet through `HubSettings` and JupyterHub's REST API.
"""
