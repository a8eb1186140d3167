"""The `keras-msam` command line."""
