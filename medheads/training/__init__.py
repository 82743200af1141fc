"""The training side: shared arguments, the `medheads` command, feature caching and one module per task."""
