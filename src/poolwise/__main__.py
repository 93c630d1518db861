"""``python -m poolwise``: the ``poolwise`` command (see :mod:`poolwise.cli`)."""

if __name__ == "__main__":
    from poolwise.cli import _program

    _program()
