"""``python -m keras_msam``: the ``keras-msam`` command line."""

from keras_msam.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
