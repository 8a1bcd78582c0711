"""The assignment exchange: a JupyterHub service per hub (releases, submissions, grading, feedback, passback)."""
