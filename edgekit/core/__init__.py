"""What every stage uses: the user-facing error (errors), safe outputs (fileio), Ctrl-C and SIGTERM (interrupts),
where the repository's data lives (paths) and progress on stderr (progress)."""
