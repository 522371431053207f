"""What every job into a folder shares: :mod:`~filterviz.jobs.folder` (the lock, filterviz's marks, saved
progress), :mod:`~filterviz.jobs.multihost` (processes agreeing) and :mod:`~filterviz.jobs.streaming`
(a photo folder streamed through every device)."""
