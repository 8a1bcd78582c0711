"""The fleet side: the supervisor, the front door, the plan of changes, ports, the control socket, the backend port."""
