"""The credit explorer: recorded RL steps (`record`) and the self-contained HTML page that shows them (`page`)."""
