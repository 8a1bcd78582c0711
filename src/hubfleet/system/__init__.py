"""Operating-system facilities shared by the fleet side and the hub side (Unix accounts, cgroups)."""
