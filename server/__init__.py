"""HTTP apps and the command line."""
