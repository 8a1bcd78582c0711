"""Where hubs run, behind the fleet's one small interface (`hubfleet.fleet.backend`): `local` (this machine), `slurm`
(users' servers as Slurm jobs). Each backend registers itself as an entry point; nothing imports this package but
the entry points and the CLI."""
