"""Hub publishing: model cards generated from a run summary, allow-list staging, upload. Uses `medheads.models`
only; never imports the training side."""
